"""Charts of one backtest (matplotlib, Agg, no pyplot state): PNG bytes per chart.

:func:`render_charts` draws the five per-run charts — equity with drawdown, monthly returns heatmap,
returns distribution, rolling Sharpe and trade PnL scatter — from anything shaped like
``btsys.backtest.engine.BacktestResult`` (``ts``, ``equity``, ``trades``). :func:`sweep_heatmap`
draws the objective over a two-parameter grid.

Figures are built on :class:`matplotlib.figure.Figure` directly (thread- and process-safe, no
global figure registry) and long curves are bucketed to at most ``MAX_POINTS`` points (last
equity and lowest drawdown per bucket), so a chart costs tens of milliseconds whatever the bar count.
"""

from __future__ import annotations

import io
import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from btsys.report.stats import DAY_US, daily_equity, daily_returns, drawdown_series

MAX_POINTS = 2000
DPI = 80
CHART_NAMES = ("equity_drawdown", "monthly_returns", "returns_distribution", "rolling_sharpe", "trade_pnl")


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


def equity_drawdown_png(ts: np.ndarray, equity: np.ndarray, title: str = "Equity") -> bytes:
    """Equity curve (top) and drawdown from the running peak (bottom, percent)."""
    eq = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.int64)
    dd = drawdown_series(eq)
    t, e, d = _bucket(ts, eq, dd)
    fig = _figure(10, 5)
    ax1 = fig.add_axes((0.08, 0.38, 0.9, 0.55))
    ax2 = fig.add_axes((0.08, 0.08, 0.9, 0.25), sharex=ax1)
    if len(eq) == 0:
        _empty(ax1, "no bars")
        return _png(fig)
    x = _dates(t)
    ax1.plot(x, e, lw=1.0, color="#1f77b4")
    ax1.set_title(title)
    ax1.set_ylabel("equity")
    ax1.grid(alpha=0.3)
    ax1.tick_params(labelbottom=False)
    ax2.fill_between(x, d * 100.0, 0.0, color="#d62728", alpha=0.4, lw=0)
    _date_axis(ax2)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)
    return _png(fig)


def monthly_returns_table(ts: np.ndarray, equity: np.ndarray) -> pd.DataFrame:
    """Compounded return per calendar month (rows: year, columns: month 1..12; NaN where absent)."""
    days, last = daily_equity(ts, equity)
    if len(days) == 0:
        return pd.DataFrame(columns=range(1, 13), dtype=float)
    _, r = daily_returns(ts, equity)
    idx = pd.to_datetime(days, unit="us", utc=True)
    s = pd.Series(r, index=idx)
    monthly = (1.0 + s).groupby([idx.year, idx.month]).prod() - 1.0
    tab = monthly.unstack(level=1)
    tab = tab.reindex(columns=range(1, 13))
    tab.index.name, tab.columns.name = "year", "month"
    return tab


def monthly_returns_png(ts: np.ndarray, equity: np.ndarray) -> bytes:
    """Heatmap of monthly returns (percent), one row per year."""
    tab = monthly_returns_table(ts, equity)
    fig = _figure(10, 1.2 + 0.5 * max(len(tab), 1))
    ax = fig.add_axes((0.08, 0.25 if len(tab) <= 2 else 0.12, 0.9, 0.6 if len(tab) <= 2 else 0.78))
    if tab.empty:
        _empty(ax, "no bars")
        return _png(fig)
    vals = tab.to_numpy(dtype=np.float64) * 100.0
    lim = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
    lim = lim if lim > 0 else 1.0
    ax.imshow(np.ma.masked_invalid(vals), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(vals):
        if math.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(12))
    ax.set_xticklabels(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(tab)))
    ax.set_yticklabels([str(y) for y in tab.index])
    ax.set_title("Monthly returns (%)")
    return _png(fig)


def returns_distribution_png(ts: np.ndarray, equity: np.ndarray) -> bytes:
    """Histogram of daily returns (per-bar returns when there are fewer than 20 days)."""
    _, r = daily_returns(ts, equity)
    label = "daily"
    if len(r) < 20:
        eq = np.asarray(equity, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = eq[1:] / eq[:-1] - 1.0 if len(eq) > 1 else np.zeros(0)
        label = "per-bar"
    r = r[np.isfinite(r)] * 100.0
    fig = _figure(10, 4)
    ax = fig.add_axes((0.08, 0.14, 0.9, 0.76))
    if len(r) == 0:
        _empty(ax, "no returns")
        return _png(fig)
    ax.hist(r, bins=min(60, max(10, int(math.sqrt(len(r))))), color="#1f77b4", alpha=0.8)
    ax.axvline(float(np.mean(r)), color="k", lw=1, ls="--", label=f"mean {np.mean(r):.3f}%")
    ax.set_xlabel(f"{label} return (%)")
    ax.set_title(f"Distribution of {label} returns (n={len(r)})")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return _png(fig)


def rolling_sharpe_series(ts: np.ndarray, equity: np.ndarray, window_days: int = 30) -> pd.Series:
    """Annualised (sqrt 365) Sharpe of the trailing ``window_days`` daily returns, by day.

    Uses only returns up to and including each day (no look-ahead); NaN until the window is full.
    """
    days, r = daily_returns(ts, equity)
    s = pd.Series(r, index=pd.to_datetime(days, unit="us", utc=True))
    roll = s.rolling(window_days, min_periods=window_days)
    with np.errstate(divide="ignore", invalid="ignore"):
        return roll.mean() / roll.std(ddof=1) * math.sqrt(365.0)


def rolling_sharpe_png(ts: np.ndarray, equity: np.ndarray, window_days: int = 30) -> bytes:
    days, _ = daily_returns(ts, equity)
    w = window_days if len(days) >= 2 * window_days else max(3, len(days) // 3)
    rs = rolling_sharpe_series(ts, equity, w)
    fig = _figure(10, 3.5)
    ax = fig.add_axes((0.08, 0.14, 0.9, 0.74))
    if rs.notna().sum() == 0:
        _empty(ax, f"fewer than {w} days: no rolling Sharpe")
        ax.set_title("Rolling Sharpe")
        return _png(fig)
    ax.plot(_dates(rs.index.as_unit("us").asi8), rs.to_numpy(), lw=1.0, color="#2ca02c")
    _date_axis(ax)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title(f"Rolling Sharpe ({w} days, annualised with 365)")
    ax.grid(alpha=0.3)
    return _png(fig)


def trade_pnl_png(trades: Optional[pd.DataFrame]) -> bytes:
    """PnL of each round trip against its exit time; longs green, shorts red, open trades hollow."""
    fig = _figure(10, 3.5)
    ax = fig.add_axes((0.08, 0.14, 0.9, 0.74))
    if trades is None or len(trades) == 0:
        _empty(ax, "no trades")
        ax.set_title("Trade PnL")
        return _png(fig)
    t = trades
    dated = "exit_time" in t and t["exit_time"].notna().all()
    x = _dates(t["exit_time"].astype("int64").to_numpy() // 1000) if dated else np.arange(len(t))
    pnl = np.asarray(t["pnl"], dtype=np.float64)
    direction = np.asarray(t["direction"] if "direction" in t else ["long"] * len(t), dtype=object)
    is_open = np.asarray(t["is_open"], dtype=bool) if "is_open" in t else np.zeros(len(t), bool)
    for color, name in (("#2ca02c", "long"), ("#d62728", "short")):
        sel = (direction == name) & ~is_open
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


def render_charts(result: Any, title: str = "Equity") -> dict[str, bytes]:
    """All per-run charts of a backtest result: ``{name: png bytes}`` with names ``CHART_NAMES``."""
    eq = np.asarray(result.equity, dtype=np.float64)
    ts = getattr(result, "ts", None)
    ts = np.arange(len(eq), dtype=np.int64) * DAY_US if ts is None else np.asarray(ts, dtype=np.int64)
    return {
        "equity_drawdown": equity_drawdown_png(ts, eq, title),
        "monthly_returns": monthly_returns_png(ts, eq),
        "returns_distribution": returns_distribution_png(ts, eq),
        "rolling_sharpe": rolling_sharpe_png(ts, eq),
        "trade_pnl": trade_pnl_png(getattr(result, "trades", None)),
    }


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
        for (i, j), v in np.ndenumerate(vals):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
    step_x, step_y = max(1, nx // 20), max(1, ny // 20)
    ax.set_xticks(range(0, nx, step_x))
    ax.set_xticklabels([str(v) for v in piv.columns[::step_x]], rotation=45, fontsize=8)
    ax.set_yticks(range(0, ny, step_y))
    ax.set_yticklabels([str(v) for v in piv.index[::step_y]], fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{value} by {x} x {y}")
    return _png(fig)
