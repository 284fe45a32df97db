"""The outcome of a backtest: arrays for code; readable frames, stats and a chart for people.

``BacktestResult`` keeps what the numba kernels produced (per-bar arrays, the order and trade
records, the metrics) and derives on first access what a researcher reads: ``orders`` and
``trades`` as DataFrames with UTC datetimes and named values, ``benchmark_equity`` (buy-and-hold
of the same symbols), ``stats()`` (a labelled pandas Series) and ``plot()`` (plotly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from btsys.backtest.enums import DAY_US, ORDER_KIND_LABELS, SIDE_LABELS, TRADE_DIRECTION_LABELS
from btsys.backtest.metrics import CALENDAR_METRICS, benchmark_metrics, buy_and_hold, drawdown, metrics_dict

__all__ = ["BacktestResult", "make_result"]

#: ``stats()`` rows: (label, key). Keys are metric names or values derived here; ``[%]`` rows
#: show fractions as percentages.
STATS = (
    ("Start", "start"),
    ("End", "end"),
    ("Period", "period"),
    ("Bars", "n_bars"),
    ("Start Value", "init_cash"),
    ("End Value", "final_value"),
    ("Total Return [%]", "total_return"),
    ("Benchmark Return [%]", "benchmark_return"),
    ("Annual Return [%]", "annual_return"),
    ("Max Drawdown [%]", "max_drawdown"),
    ("Max Drawdown Duration", "max_drawdown_duration"),
    ("Sharpe Ratio", "sharpe"),
    ("Sortino Ratio", "sortino"),
    ("Calmar Ratio", "calmar"),
    ("Alpha [%]", "alpha"),
    ("Beta", "beta"),
    ("Information Ratio", "information_ratio"),
    ("Exposure [%]", "exposure"),
    ("Turnover", "turnover"),
    ("Total Trades", "n_trades"),
    ("Win Rate [%]", "win_rate"),
    ("Best Trade [%]", "best_trade"),
    ("Worst Trade [%]", "worst_trade"),
    ("Avg Trade Duration", "avg_trade_duration"),
    ("Profit Factor", "profit_factor"),
    ("Expectancy", "expectancy"),
    ("Fees Paid", "fees_paid"),
    ("Funding Paid", "funding_paid"),
    ("Open Position", "open_position"),
)
_PERCENT = {k for label, k in STATS if label.endswith("[%]")}
_TIME_KEYS = {"start", "end", "period", "max_drawdown_duration", "avg_trade_duration"}


def _times(ts: Optional[np.ndarray], rows: np.ndarray) -> pd.Series:
    """UTC datetimes of bar rows (NaT without bar times)."""
    if ts is None:
        return pd.Series(pd.NaT, index=range(len(rows)), dtype="datetime64[ns, UTC]")
    return pd.Series(pd.to_datetime(ts[rows], unit="us", utc=True))


def _labels(codes: np.ndarray, labels: dict) -> pd.Categorical:
    """Integer codes as named categories (a code without a name shows as ``code_<n>``)."""
    names = [labels.get(int(c), f"code_{int(c)}") for c in codes]
    return pd.Categorical(names, categories=list(dict.fromkeys([*labels.values(), *names])))


@dataclass(frozen=True, repr=False)
class BacktestResult:
    """Outcome of a backtest.

    Attributes
    ----------
    ts : int64 µs UTC per bar (the bar's ``ts_close``; portfolios: the merged timeline), or
        ``None`` when the bars have no calendar time (see :mod:`btsys.backtest.inputs`).
    equity, cash, position : float64 per bar, marked at the bar's close (position: signed base
        qty; portfolios: time x symbol).
    order_records, trade_records : structured arrays (``enums.order_dt``, ``enums.trade_dt``)
        with integer codes, one record per order / round trip.
    metrics : dict of floats: ``enums.METRIC_NAMES`` + ``metrics.BENCHMARK_METRICS``.
    final_value : equity after the last bar.
    close : the prices the run saw (per bar; portfolios: time x symbol, NaN where a symbol has no bar).
    init_cash : starting value.
    symbols : symbol per ``order_records['col']`` (portfolios; ``[]`` for one asset).
    intrabar : ``intrabar="ticks"`` runs: what the trades changed (``engine.INTRABAR_METRICS``
        plus ``passes`` of the engine and ``ohlc_final_value``); None otherwise.

    Derived on first access: ``orders``, ``trades`` (DataFrames), ``benchmark_equity``,
    ``drawdown``, ``returns``; ``stats()`` and ``plot()``.
    """

    ts: Optional[np.ndarray]
    equity: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    order_records: np.ndarray
    trade_records: np.ndarray
    metrics: dict
    final_value: float
    close: np.ndarray
    init_cash: float = 10_000.0
    symbols: list = field(default_factory=list)
    intrabar: Optional[dict] = None

    # ------------------------------------------------------------------ per-bar series
    @property
    def index(self) -> pd.Index:
        """The bars' UTC DatetimeIndex, or a RangeIndex of bar numbers without bar times."""
        if self.ts is None:
            return pd.RangeIndex(len(self.equity), name="bar")
        return pd.DatetimeIndex(pd.to_datetime(self.ts, unit="us", utc=True), name="time")

    @property
    def returns(self) -> np.ndarray:
        """Per-bar simple returns of equity (the first against the initial cash)."""
        prev = np.concatenate([[self.init_cash], self.equity[:-1]])
        return self.equity / prev - 1.0

    @cached_property
    def benchmark_equity(self) -> np.ndarray:
        """Buy-and-hold of the same symbols (equal weight), float64 per bar, from ``init_cash``."""
        return buy_and_hold(self.close, self.init_cash)

    @cached_property
    def drawdown(self) -> np.ndarray:
        """Per-bar drawdown from the running peak (initial cash included), <= 0; its minimum is
        ``-metrics['max_drawdown']``."""
        return drawdown(self.equity, self.init_cash)

    # ------------------------------------------------------------------ readable records
    def _symbol_cols(self, df: pd.DataFrame, col: np.ndarray) -> pd.DataFrame:
        if self.symbols:
            df.insert(0, "col", col)
            df.insert(1, "symbol", np.asarray(self.symbols, dtype=object)[col] if len(col) else [])
        return df

    @cached_property
    def orders(self) -> pd.DataFrame:
        """One row per order: ``idx`` (bar row), ``time`` (UTC), ``side`` (buy/sell), ``reason``
        (entry, exit_signal, stop_loss, ...), ``size`` (base qty), ``price`` (with slippage),
        ``fees``; portfolios start with ``col``/``symbol``."""
        o = self.order_records
        df = pd.DataFrame(
            {
                "idx": o["idx"],
                "time": _times(self.ts, o["idx"]),
                "side": _labels(o["side"], SIDE_LABELS),
                "reason": _labels(o["kind"], ORDER_KIND_LABELS),
                "size": o["size"],
                "price": o["price"],
                "fees": o["fees"],
            }
        )
        return self._symbol_cols(df, o["col"])

    @cached_property
    def trades(self) -> pd.DataFrame:
        """One row per round trip: entry/exit ``idx`` and ``time``, ``direction`` (long/short),
        ``size``, prices, ``pnl`` (quote, after fees and funding), ``return`` (on margin),
        ``duration`` and ``duration_bars``, ``fees``, ``funding``, ``is_open`` (marked at the last
        close) and ``exit_reason`` (exit_signal, stop_loss, ..., open)."""
        tr = self.trade_records
        entry_t, exit_t = _times(self.ts, tr["entry_idx"]), _times(self.ts, tr["exit_idx"])
        df = pd.DataFrame(
            {
                "entry_idx": tr["entry_idx"],
                "exit_idx": tr["exit_idx"],
                "entry_time": entry_t,
                "exit_time": exit_t,
                "direction": _labels(tr["direction"], TRADE_DIRECTION_LABELS),
                "size": tr["size"],
                "entry_price": tr["entry_price"],
                "exit_price": tr["exit_price"],
                "pnl": tr["pnl"],
                "return": tr["return"],
                "duration": exit_t - entry_t,
                "duration_bars": tr["exit_idx"] - tr["entry_idx"],
                "fees": tr["fees"],
                "funding": tr["funding"],
                "is_open": tr["is_open"].astype(bool),
                "exit_reason": _labels(tr["exit_kind"], ORDER_KIND_LABELS),
            }
        )
        return self._symbol_cols(df, tr["col"])

    # ------------------------------------------------------------------ summaries
    def _derived(self) -> dict:
        n = len(self.equity)
        closed = self.trades[~self.trades["is_open"]]
        d: dict[str, Any] = {"n_bars": n, "init_cash": self.init_cash}
        if self.ts is not None:
            d["start"] = pd.Timestamp(int(self.ts[0]), unit="us", tz="UTC")
            d["end"] = pd.Timestamp(int(self.ts[-1]), unit="us", tz="UTC")
            d["period"] = d["end"] - d["start"]
            d["avg_trade_duration"] = closed["duration"].mean() if len(closed) else pd.NaT
        else:
            d.update(start=None, end=None, period=None, avg_trade_duration=None)
        d["best_trade"] = float(closed["return"].max()) if len(closed) else math.nan
        d["worst_trade"] = float(closed["return"].min()) if len(closed) else math.nan
        return d

    def stats(self, metrics: Optional[Sequence[str]] = None) -> pd.Series:
        """Summary as a labelled pandas Series (like vectorbt's ``stats()``): start, end, period,
        values, total and benchmark return, drawdown, Sharpe, ..., then any other metric under
        its key. Fractions are shown as percentages in the ``[%]`` rows.

        ``metrics`` selects rows by key (e.g. ``["total_return", "sharpe"]``); asking for a
        metric that needs calendar time from bars without times is an error."""
        values = {**self.metrics, **self._derived()}
        rows = list(STATS) + [(k, k) for k in self.metrics if k not in {key for _, key in STATS}]
        if metrics is not None:
            known = {key for _, key in rows}
            unknown = [k for k in metrics if k not in known]
            if unknown:
                raise KeyError(f"stats: unknown metric(s) {unknown}; known: {sorted(known)}")
            if self.ts is None:
                timed = [k for k in metrics if k in CALENDAR_METRICS or k in _TIME_KEYS]
                if timed:
                    raise ValueError(
                        f"stats: {timed} need bar times; simulate with a DatetimeIndex, `ts=` or `freq=`"
                    )
            rows = [r for r in rows if r[1] in set(metrics)]
        out = {}
        for label, key in rows:
            v = values.get(key, math.nan)
            if key in _PERCENT and v is not None:
                v = float(v) * 100.0
            elif key == "max_drawdown_duration" and v is not None and math.isfinite(v):
                v = pd.Timedelta(microseconds=round(v * DAY_US))
            elif key in ("n_bars", "n_trades") and math.isfinite(v):
                v = int(v)
            elif key == "open_position":
                v = bool(v)
            out[label] = v
        return pd.Series(out, dtype=object, name="+".join(self.symbols) or "backtest")

    def __repr__(self) -> str:
        m = self.metrics
        n = len(self.equity)
        who = f"{'+'.join(self.symbols)}, " if self.symbols else ""
        if self.ts is not None:
            fmt = "%Y-%m-%d %H:%M"
            t0 = pd.Timestamp(int(self.ts[0]), unit="us").strftime(fmt)
            t1 = pd.Timestamp(int(self.ts[-1]), unit="us").strftime(fmt)
            span = f"{t0} -> {t1} UTC"
        else:
            span = "no bar times"
        g = lambda k: m.get(k, math.nan)  # noqa: E731
        return (
            f"<BacktestResult {who}{n:,} bars, {span}: total_return {g('total_return'):+.2%} "
            f"(buy & hold {g('benchmark_return'):+.2%}), sharpe {g('sharpe'):.2f}, "
            f"max_drawdown {g('max_drawdown'):.2%}, {g('n_trades'):.0f} trades, "
            f"final_value {self.final_value:,.2f}>"
        )

    # ------------------------------------------------------------------ chart
    def plot(self, symbol: Optional[str] = None, height: int = 760):
        """Interactive plotly figure: the price with the orders (entries as triangles, exits as
        crosses, hover for reason, size, price, fees), equity against buy-and-hold, drawdown.

        ``symbol`` picks the price panel's symbol of a portfolio (default: the first)."""
        from btsys.backtest.plot import result_figure

        return result_figure(self, symbol=symbol, height=height)


def make_result(
    *,
    ts: Optional[np.ndarray],
    equity: np.ndarray,
    cash: np.ndarray,
    position: np.ndarray,
    order_records: np.ndarray,
    trade_records: np.ndarray,
    metric_vector: np.ndarray,
    close: np.ndarray,
    init_cash: float,
    symbols: Sequence[str] = (),
) -> BacktestResult:
    """Package a kernel's outputs: metrics as a dict, NaN for the calendar metrics when there are
    no bar times (``ts=None``), plus the benchmark metrics."""
    m = metrics_dict(metric_vector)
    if ts is None:
        m.update((k, math.nan) for k in CALENDAR_METRICS if k in m)
    m.update(benchmark_metrics(ts, equity, init_cash, close))
    return BacktestResult(
        ts=ts,
        equity=equity,
        cash=cash,
        position=position,
        order_records=order_records,
        trade_records=trade_records,
        metrics=m,
        final_value=m["final_value"],
        close=close,
        init_cash=float(init_cash),
        symbols=list(symbols),
    )
