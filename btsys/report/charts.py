"""Charts of one backtest (matplotlib, Agg, no pyplot state): PNG bytes per chart.

:func:`render_charts` draws the per-run charts — price with the trades (when the prices are
given), equity against buy-and-hold with the drawdown, monthly returns heatmap, returns
distribution, rolling Sharpe and trade PnL scatter — from anything shaped like
``btsys.backtest.engine.BacktestResult`` (``ts``, ``equity``, ``trades``, optionally
``benchmark_equity``). :func:`sweep_heatmap_png` draws the objective over a two-parameter grid.

Returns, drawdowns and Sharpe ratios are the backtest's own definitions
(:mod:`btsys.backtest.metrics`; the first return is measured against the initial cash). Short runs
stay meaningful: returns are sampled per day when the run spans at least
``MIN_PERIODS`` days, else per hour (or per 5 minutes), so a 10-day run gets a rolling Sharpe over
about 60 hourly returns instead of a 3-day window, and the histogram leaves out the returns that
are exactly zero (bars out of the market) and says how many it left out.

Figures are built on :class:`matplotlib.figure.Figure` directly (thread- and process-safe, no
global figure registry) and long curves are bucketed to at most ``MAX_POINTS`` points (last
equity and lowest drawdown per bucket), so a chart costs tens of milliseconds whatever the bar count.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from btsys.backtest.enums import DAY_US
from btsys.backtest.metrics import drawdown, period_returns, rolling_sharpe

MAX_POINTS = 2000
DPI = 80
CHART_NAMES = (
    "price_trades",
    "equity_drawdown",
    "monthly_returns",
    "returns_distribution",
    "rolling_sharpe",
    "trade_pnl",
)
CHART_TITLES = {
    "price_trades": "Price and trades",
    "equity_drawdown": "Equity against buy and hold, drawdown",
    "monthly_returns": "Monthly returns",
    "returns_distribution": "Returns distribution",
    "rolling_sharpe": "Rolling Sharpe",
    "trade_pnl": "Trade PnL",
}
#: Sampling periods of returns, coarsest first: the first one giving ``MIN_PERIODS`` returns is used.
PERIODS = ((DAY_US, "daily"), (DAY_US // 24, "hourly"), (DAY_US // 288, "5-minute"))
MIN_PERIODS = 60
MAX_PRICE_PANELS = 4
LONG, SHORT, EXIT = "#1a7f37", "#cf222e", "#444444"


def _figure(w: float = 10.0, h: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _dates(ts_us: np.ndarray) -> np.ndarray:
    """µs timestamps as matplotlib date numbers (float days since the epoch): plotting plain floats
    and formatting the axis once is about a third cheaper than matplotlib's datetime64 units."""
    return np.asarray(ts_us, dtype=np.int64) / float(DAY_US)


def _date_axis(ax) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    loc = AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))


def _bucket(ts: np.ndarray, eq: np.ndarray, dd: np.ndarray):
    n = len(eq)
    if n <= MAX_POINTS:
        return ts, eq, dd
    edges = np.linspace(0, n, MAX_POINTS + 1).astype(np.int64)
    last = edges[1:] - 1
    return ts[last], eq[last], np.minimum.reduceat(dd, edges[:-1])


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def equity_drawdown_png(
    ts: np.ndarray,
    equity: np.ndarray,
    start_value: float,
    title: str = "Equity",
    benchmark: Optional[np.ndarray] = None,
) -> bytes:
    """Equity curve against buy-and-hold (``benchmark``, same start value) on top, drawdown from the
    running peak (``start_value`` included; percent) below."""
    eq = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.int64)
    dd = drawdown(eq, start_value)
    t, e, d = _bucket(ts, eq, dd)
    fig = _figure(10, 5)
    ax1 = fig.add_axes((0.08, 0.38, 0.9, 0.55))
    ax2 = fig.add_axes((0.08, 0.08, 0.9, 0.25), sharex=ax1)
    if len(eq) == 0:
        _empty(ax1, "no bars")
        return _png(fig)
    x = _dates(t)
    ax1.plot(x, e, lw=1.2, color="#1f77b4", label="strategy")
    if benchmark is not None and len(benchmark) == len(eq):
        bt, be, _ = _bucket(ts, np.asarray(benchmark, dtype=np.float64), dd)
        ax1.plot(_dates(bt), be, lw=1.0, color="#7f7f7f", ls="--", label="buy and hold")
        ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title(title)
    ax1.set_ylabel("equity")
    ax1.grid(alpha=0.3)
    ax1.tick_params(labelbottom=False)
    ax2.fill_between(x, d * 100.0, 0.0, color="#d62728", alpha=0.4, lw=0)
    _date_axis(ax2)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)
    return _png(fig)


def price_decimals(prices: np.ndarray, max_decimals: int = 8) -> int:
    """Decimals of an instrument's price grid: the fewest that write every price exactly (at most
    ``max_decimals``; from up to 2,000 sampled prices)."""
    p = np.asarray(prices, dtype=np.float64)
    p = p[np.isfinite(p)]
    if len(p) > 2000:
        p = p[np.linspace(0, len(p) - 1, 2000).astype(np.int64)]
    for d in range(max_decimals + 1):
        x = p * 10.0**d
        if np.all(np.abs(x - np.round(x)) <= np.maximum(1e-6, 4 * np.finfo(np.float64).eps * np.abs(x))):
            return d
    return max_decimals


def _trade_markers(ax, trades: pd.DataFrame, x_entry, x_exit) -> None:
    direction = _direction_sign(trades)
    is_open = (
        np.asarray(trades["is_open"], dtype=bool) if "is_open" in trades else np.zeros(len(trades), bool)
    )
    for sign, color, marker, name in ((1, LONG, "^", "long entry"), (-1, SHORT, "v", "short entry")):
        sel = direction == sign
        if sel.any():
            ax.scatter(
                x_entry[sel],
                trades["entry_price"].to_numpy()[sel],
                marker=marker,
                s=50,
                color=color,
                edgecolors="white",
                linewidths=0.5,
                zorder=3,
                label=name,
            )
    closed = ~is_open
    if closed.any():
        ax.scatter(
            x_exit[closed],
            trades["exit_price"].to_numpy()[closed],
            marker="x",
            s=28,
            color=EXIT,
            zorder=3,
            label="exit",
        )
    if is_open.any():
        ax.scatter(
            x_exit[is_open],
            trades["exit_price"].to_numpy()[is_open],
            marker="o",
            s=30,
            facecolors="none",
            edgecolors=EXIT,
            zorder=3,
            label="open (marked)",
        )


def price_trades_png(prices: Mapping[str, tuple], trades: Optional[pd.DataFrame] = None) -> bytes:
    """Close price of each symbol (up to ``MAX_PRICE_PANELS``) with the trades' entries (triangles:
    up long, down short) and exits (crosses; an open position's mark: a circle)."""
    syms = list(prices)[:MAX_PRICE_PANELS]
    top, panel, gap, bottom = 0.35, 2.2, 0.55, 0.55  # inches
    height = top + max(len(syms), 1) * panel + max(len(syms) - 1, 0) * gap + bottom
    fig = _figure(10, height)
    if not syms:
        _empty(fig.add_axes((0.08, 0.1, 0.9, 0.8)), "no prices")
        return _png(fig)
    for k, sym in enumerate(syms):
        y0 = height - top - (k + 1) * panel - k * gap
        ax = fig.add_axes((0.08, y0 / height, 0.9, panel / height))
        ts, close = (np.asarray(a) for a in prices[sym])
        t, c, _ = _bucket(ts.astype(np.int64), close.astype(np.float64), close.astype(np.float64))
        ax.plot(_dates(t), c, lw=0.9, color="#1f77b4", label=f"{sym} close")
        tr = _symbol_trades(trades, sym, len(prices) > 1)
        if tr is not None and len(tr):
            _trade_markers(ax, tr, _dates(_times_us(tr["entry_time"])), _dates(_times_us(tr["exit_time"])))
        ax.set_ylabel(sym)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7, ncol=5)
        _date_axis(ax)
        if k == 0:
            more = f" (first {MAX_PRICE_PANELS} of {len(prices)} symbols)" if len(prices) > len(syms) else ""
            ax.set_title(f"Price and trades{more}")
    return _png(fig)


def _symbol_trades(trades: Optional[pd.DataFrame], sym: str, portfolio: bool) -> Optional[pd.DataFrame]:
    if trades is None or len(trades) == 0:
        return None
    if portfolio and "symbol" in trades:
        return trades[trades["symbol"].astype(str) == sym]
    return trades


def _times_us(col) -> np.ndarray:
    """A time column as int64 µs since the epoch (from µs integers or datetimes, naive = UTC)."""
    s = pd.Series(col)
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(np.int64)
    return pd.to_datetime(s, utc=True).dt.as_unit("us").astype("int64").to_numpy()


def _direction_sign(trades: pd.DataFrame) -> np.ndarray:
    """+1 long / -1 short per trade, from integer codes or names."""
    if "direction" not in trades:
        return np.ones(len(trades), np.int64)
    d = trades["direction"]
    if d.dtype == object or str(d.dtype) in ("string", "category"):
        return np.where(d.astype(str).str.lower().str.startswith("s"), -1, 1)
    return np.where(np.asarray(d, dtype=np.float64) < 0, -1, 1)


def monthly_returns_table(ts: np.ndarray, equity: np.ndarray, start_value: float) -> pd.DataFrame:
    """Compounded return per calendar month of the daily returns (rows: year, columns: month
    1..12; NaN where absent)."""
    days, r = period_returns(ts, equity, start_value)
    if len(days) == 0:
        return pd.DataFrame(columns=range(1, 13), dtype=float)
    idx = pd.to_datetime(days, unit="us", utc=True)
    s = pd.Series(r, index=idx)
    monthly = (1.0 + s).groupby([idx.year, idx.month]).prod() - 1.0
    tab = monthly.unstack(level=1)
    tab = tab.reindex(columns=range(1, 13))
    tab.index.name, tab.columns.name = "year", "month"
    return tab


def text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba`` (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _cell_labels(ax, im, vals: np.ndarray, fmt: str, fontsize: int) -> None:
    """Write each finite cell's value in a colour that contrasts with the cell."""
    for (i, j), v in np.ndenumerate(vals):
        if math.isfinite(v):
            colour = text_colour(im.cmap(im.norm(v)))
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize, color=colour)


def monthly_returns_png(ts: np.ndarray, equity: np.ndarray, start_value: float) -> bytes:
    """Heatmap of monthly returns (percent), one row per year."""
    tab = monthly_returns_table(ts, equity, start_value)
    fig = _figure(10, 1.2 + 0.5 * max(len(tab), 1))
    ax = fig.add_axes((0.08, 0.25 if len(tab) <= 2 else 0.12, 0.9, 0.6 if len(tab) <= 2 else 0.78))
    if tab.empty:
        _empty(ax, "no bars")
        return _png(fig)
    vals = tab.to_numpy(dtype=np.float64) * 100.0
    lim = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
    lim = lim if lim > 0 else 1.0
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    _cell_labels(ax, im, vals, "{:+.1f}", fontsize=8)
    ax.set_xticks(range(12))
    ax.set_xticklabels(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(tab)))
    ax.set_yticklabels([str(y) for y in tab.index])
    ax.set_title("Monthly returns (%)")
    return _png(fig)


def return_period(ts: np.ndarray) -> tuple[int, str]:
    """(period in µs, its name): the coarsest of ``PERIODS`` giving ``MIN_PERIODS`` returns."""
    ts = np.asarray(ts, dtype=np.int64)
    span = int(ts[-1] - ts[0]) if len(ts) else 0
    for period, name in PERIODS:
        if span >= MIN_PERIODS * period:
            return period, name
    return PERIODS[-1]


def histogram_returns(ts: np.ndarray, equity: np.ndarray, start_value: float) -> tuple[np.ndarray, int, str]:
    """(returns per :func:`return_period` that are not exactly zero, how many were zero: periods
    out of the market, the period's name)."""
    period, name = return_period(ts)
    _, r = period_returns(ts, equity, start_value, period)
    r = r[np.isfinite(r)]
    return r[r != 0.0], int(np.sum(r == 0.0)), name


def returns_distribution_png(ts: np.ndarray, equity: np.ndarray, start_value: float) -> bytes:
    """Histogram of :func:`histogram_returns`; the flat periods left out are counted in the title."""
    r, flat, name = histogram_returns(ts, equity, start_value)
    r = r * 100.0
    fig = _figure(10, 4)
    ax = fig.add_axes((0.08, 0.14, 0.9, 0.76))
    if len(r) == 0:
        _empty(ax, "no non-zero returns")
        return _png(fig)
    ax.hist(r, bins=min(60, max(10, int(math.sqrt(len(r))))), color="#1f77b4", alpha=0.8)
    ax.axvline(float(np.mean(r)), color="k", lw=1, ls="--", label=f"mean {np.mean(r):.3f}%")
    ax.axvline(0.0, color="#999999", lw=0.8)
    ax.set_xlabel(f"{name} return (%)")
    left_out = f"; {flat} flat {name} returns (out of the market) left out" if flat else ""
    ax.set_title(f"Distribution of {name} returns (n={len(r)}{left_out})")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return _png(fig)


def rolling_sharpe_series(
    ts: np.ndarray, equity: np.ndarray, start_value: float, window: int = 30, period_us: int = DAY_US
) -> pd.Series:
    """Annualised (365-day years) Sharpe of the trailing ``window`` returns per ``period_us``
    (:func:`btsys.backtest.metrics.rolling_sharpe`): returns up to and including each period only;
    NaN until the window is full."""
    starts, r = period_returns(ts, equity, start_value, period_us)
    values = rolling_sharpe(r, window, 365.0 * DAY_US / period_us)
    return pd.Series(values, index=pd.to_datetime(starts, unit="us", utc=True))


def rolling_window(n_returns: int, period_us: int) -> int:
    """Window of the rolling Sharpe: 30 days of daily returns; finer returns: a quarter of the run
    in whole days (at least 24 returns)."""
    if period_us >= DAY_US:
        return 30
    per_day = DAY_US // period_us
    return max(24, (n_returns // 4) // per_day * per_day)


def rolling_sharpe_png(ts: np.ndarray, equity: np.ndarray, start_value: float) -> bytes:
    period, name = return_period(ts)
    n = len(period_returns(ts, equity, start_value, period)[1])
    w = rolling_window(n, period)
    rs = rolling_sharpe_series(ts, equity, start_value, w, period)
    fig = _figure(10, 3.5)
    ax = fig.add_axes((0.08, 0.14, 0.9, 0.74))
    span = _span_text(w * period)
    if rs.notna().sum() == 0:
        _empty(ax, f"fewer than {w} {name} returns: no rolling Sharpe")
        ax.set_title("Rolling Sharpe")
        return _png(fig)
    ax.plot(_dates(rs.index.as_unit("us").asi8), rs.to_numpy(), lw=1.0, color="#2ca02c")
    _date_axis(ax)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title(f"Rolling Sharpe ({w} {name} returns = {span}, annualised)")
    ax.grid(alpha=0.3)
    return _png(fig)


def _span_text(us: int) -> str:
    days = us / DAY_US
    return f"{days:.3g} days" if days >= 1 else f"{us / (DAY_US / 24):.3g} hours"


def trade_pnl_png(trades: Optional[pd.DataFrame]) -> bytes:
    """PnL of each round trip against its exit time; longs green, shorts red, open trades hollow."""
    fig = _figure(10, 3.5)
    ax = fig.add_axes((0.08, 0.14, 0.9, 0.74))
    if trades is None or len(trades) == 0:
        _empty(ax, "no trades")
        ax.set_title("Trade PnL")
        return _png(fig)
    t = trades
    dated = "exit_time" in t
    x = _dates(_times_us(t["exit_time"])) if dated else np.arange(len(t))
    pnl = np.asarray(t["pnl"], dtype=np.float64)
    direction = _direction_sign(t)
    is_open = np.asarray(t["is_open"], dtype=bool) if "is_open" in t else np.zeros(len(t), bool)
    for sign, color, name in ((1, LONG, "long"), (-1, SHORT, "short")):
        sel = (direction == sign) & ~is_open
        if sel.any():
            ax.scatter(x[sel], pnl[sel], s=14, color=color, alpha=0.7, label=name)
        sel_o = (direction == name) & is_open
        if sel_o.any():
            ax.scatter(
                x[sel_o], pnl[sel_o], s=30, facecolors="none", edgecolors=color, label=f"{name} (open)"
            )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title(f"Trade PnL ({len(t)} trades)")
    ax.set_ylabel("pnl (quote)")
    ax.legend(loc="upper left", fontsize=8)
    if dated:
        _date_axis(ax)
    ax.grid(alpha=0.3)
    return _png(fig)


def render_charts(
    result: Any, title: str = "Equity", prices: Optional[Mapping[str, tuple]] = None
) -> dict[str, bytes]:
    """Every chart of a backtest: ``{name: png bytes}`` in ``CHART_NAMES`` order.

    ``prices`` (``{symbol: (ts µs, close)}``) adds ``price_trades``; a ``benchmark_equity`` on the
    result adds the buy-and-hold line to ``equity_drawdown``.
    """
    eq = np.asarray(result.equity, dtype=np.float64)
    ts = getattr(result, "ts", None)
    ts = np.arange(len(eq), dtype=np.int64) * DAY_US if ts is None else np.asarray(ts, dtype=np.int64)
    trades = getattr(result, "trades", None)
    out = {}
    if prices:
        out["price_trades"] = price_trades_png(prices, trades)
    start = float(result.init_cash)
    out["equity_drawdown"] = equity_drawdown_png(
        ts, eq, start, title, getattr(result, "benchmark_equity", None)
    )
    out["monthly_returns"] = monthly_returns_png(ts, eq, start)
    out["returns_distribution"] = returns_distribution_png(ts, eq, start)
    out["rolling_sharpe"] = rolling_sharpe_png(ts, eq, start)
    out["trade_pnl"] = trade_pnl_png(trades)
    return out


def sweep_heatmap_png(table: pd.DataFrame, x: str, y: str, value: str) -> bytes:
    """Heatmap of ``value`` over a two-parameter grid (mean where a cell has several trials)."""
    piv = table.pivot_table(index=y, columns=x, values=value, aggfunc="mean")
    piv = piv.sort_index().sort_index(axis=1)
    nx, ny = piv.shape[1], piv.shape[0]
    fig = _figure(min(4 + 0.5 * nx, 16), min(3 + 0.4 * ny, 14))
    ax = fig.add_axes((0.12, 0.12, 0.72, 0.78))
    cax = fig.add_axes((0.87, 0.12, 0.03, 0.78))
    vals = piv.to_numpy(dtype=np.float64)
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(im, cax=cax)
    if nx * ny <= 400:
        _cell_labels(ax, im, vals, "{:.2f}", fontsize=7)
    step_x, step_y = max(1, nx // 20), max(1, ny // 20)
    ax.set_xticks(range(0, nx, step_x))
    ax.set_xticklabels([str(v) for v in piv.columns[::step_x]], rotation=45, fontsize=8)
    ax.set_yticks(range(0, ny, step_y))
    ax.set_yticklabels([str(v) for v in piv.index[::step_y]], fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{value} by {x} x {y}")
    return _png(fig)
