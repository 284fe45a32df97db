"""Performance metrics of an equity curve and its trades: the one home of their definitions (the
metric names of docs/DESIGN.md).

The kernels compute them in numba (``_nb.equity_metrics_nb``, ``finish_metrics_nb``); the Python
functions here (:func:`period_returns`, :func:`sharpe`, :func:`drawdown`) are the same definitions
for the reports, the walk-forward windows and the sweep statistics, and
``tests/test_metrics.py`` checks that they agree with the kernels. Nothing else in btsys defines
a return series, a Sharpe ratio or a drawdown.

Definitions:

* daily returns: last equity per UTC day, calendar days without bars carried forward (0 return),
  the first day measured against the initial cash; Sharpe = mean / std (ddof 1) * sqrt(365);
  Sortino = mean / sqrt(mean(min(r, 0)^2)) * sqrt(365); NaN when undefined;
* annual_return = (final / initial) ** (365 / days) - 1, days = number of daily returns;
* max_drawdown: largest fall from a running peak of per-bar equity (initial cash included), a
  positive fraction; max_drawdown_duration: longest peak-to-recovery (or to the end) in days;
* calmar = annual_return / max_drawdown; win_rate, profit_factor, expectancy over closed trades;
  n_trades counts closed and open trades; exposure = fraction of bars with a position at the close;
  turnover = traded notional / mean equity; fees_paid, funding_paid (positive = paid).

Benchmark (buy-and-hold of the same symbols, no fees; several symbols: equal weight at each
symbol's first bar, never rebalanced, a sleeve held in cash until its symbol's first bar):

* benchmark_equity: ``init_cash * close / close[0]`` per bar (one symbol), starting at the
  strategy's initial value; benchmark_return = its last value / init_cash - 1;
* beta = cov(r, b) / var(b) over the daily returns r (strategy) and b (benchmark), ddof 1;
* alpha = (mean(r) - beta * mean(b)) * 365 (annualised Jensen's alpha, zero risk-free rate);
* information_ratio = mean(r - b) / std(r - b, ddof 1) * sqrt(365).

Without bar times (``simulate`` with neither ``ts``, a DatetimeIndex nor ``freq=``) the
:data:`CALENDAR_METRICS` are NaN: nothing is annualised per bar.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from btsys.backtest import _nb
from btsys.backtest.enums import DAY_US, METRIC_NAMES, N_METRICS

__all__ = [
    "ANNUAL_DAYS",
    "BENCHMARK_METRICS",
    "CALENDAR_METRICS",
    "METRIC_NAMES",
    "benchmark_metrics",
    "buy_and_hold",
    "compute_metrics",
    "daily_returns",
    "drawdown",
    "period_returns",
    "rolling_sharpe",
    "sharpe",
]

#: Metrics added to every result's ``metrics`` next to the kernel's ``METRIC_NAMES``.
BENCHMARK_METRICS = ("benchmark_return", "alpha", "beta", "information_ratio")

#: Metrics that need calendar time (daily returns, annualisation, durations in days).
CALENDAR_METRICS = (
    "annual_return",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown_duration",
    "alpha",
    "beta",
    "information_ratio",
)

#: Days per year of the annualisation (crypto trades every day).
ANNUAL_DAYS = 365.0


def metrics_dict(m: np.ndarray) -> dict:
    """The kernel's metric vector as a ``{name: float}`` dict (``enums.METRIC_NAMES``)."""
    return {k: float(m[i]) for i, k in enumerate(METRIC_NAMES)}


def period_ends(ts: np.ndarray, period_us: int = DAY_US) -> np.ndarray:
    """Row of the last bar of each ``period_us`` bucket (epoch-aligned: UTC days for ``DAY_US``)
    from the first bar's bucket to the last bar's; a bucket without bars repeats the previous
    bucket's row (its return is 0). ``ts`` must be sorted."""
    d0, d1 = int(ts[0] // period_us), int(ts[-1] // period_us)
    ends = np.empty(d1 - d0 + 1, dtype=np.int64)
    starts = np.arange(d0 + 1, d1 + 1, dtype=np.int64) * period_us
    ends[:-1] = np.searchsorted(ts, starts, side="left") - 1
    ends[-1] = ts.shape[0] - 1
    return ends


def day_ends(ts: np.ndarray) -> np.ndarray:
    """:func:`period_ends` of UTC days."""
    return period_ends(ts, DAY_US)


def _simple_returns(v: np.ndarray, start_value: float) -> np.ndarray:
    prev = np.empty_like(v)
    prev[0] = start_value
    prev[1:] = v[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0.0, v / prev - 1.0, 0.0)


def period_returns(ts, values, start_value: float, period_us: int = DAY_US) -> tuple[np.ndarray, np.ndarray]:
    """Simple returns of a value path per ``period_us`` bucket: the last value of each bucket
    against the previous bucket's, the first against ``start_value`` (a backtest's initial cash);
    a bucket without bars has return 0. A bucket's return uses bars up to its end only.

    Returns ``(bucket start µs, returns)``; empty arrays for an empty path. Raises ``ValueError``
    naming the first bar whose ``ts`` goes backwards.
    """
    t = np.asarray(ts, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValueError(f"ts {t.shape} and values {v.shape} must be 1-D and of equal length")
    if t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        k = int(back[0]) + 1
        raise ValueError(f"ts must be non-decreasing; ts[{k}]={t[k]} < ts[{k - 1}]={t[k - 1]}")
    starts = np.arange(int(t[0] // period_us), int(t[-1] // period_us) + 1, dtype=np.int64) * period_us
    return starts, _simple_returns(v[period_ends(t, period_us)], start_value)


def daily_returns(ts, values, start_value: float) -> np.ndarray:
    """:func:`period_returns` per UTC day: the daily returns of the kernels' Sharpe and Sortino
    (one per calendar day from the first bar's to the last bar's)."""
    return period_returns(ts, values, start_value, DAY_US)[1]


def sharpe(returns, periods: float = ANNUAL_DAYS) -> np.ndarray | float:
    """Sharpe ratio of simple returns (zero risk-free rate): ``mean / std(ddof=1) * sqrt(periods)``;
    NaN with fewer than two returns or zero dispersion. ``periods=1`` gives the per-observation
    ratio (the deflated Sharpe ratio's); a 2-D array gives one ratio per column."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.shape[0]
    if n < 2:
        return np.full(r.shape[1:], np.nan) if r.ndim > 1 else float("nan")
    sd = r.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(sd > 0.0, r.mean(axis=0) / sd * math.sqrt(periods), np.nan)
    return out if r.ndim > 1 else float(out)


def rolling_sharpe(returns, window: int, periods: float = ANNUAL_DAYS) -> np.ndarray:
    """:func:`sharpe` of each trailing ``window`` of returns (NaN until the window is full): the
    value at ``t`` uses returns up to ``t`` only."""
    s = pd.Series(np.asarray(returns, dtype=np.float64))
    roll = s.rolling(window, min_periods=window)
    sd = roll.std(ddof=1).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0.0, roll.mean().to_numpy() / sd * math.sqrt(periods), np.nan)


def drawdown(values, start_value: float) -> np.ndarray:
    """Drawdown per bar from the running peak (``start_value`` included), a fraction <= 0; its
    minimum is ``-max_drawdown``."""
    v = np.asarray(values, dtype=np.float64)
    peak = np.maximum.accumulate(np.maximum(v, start_value)) if v.size else v
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0.0, v / peak - 1.0, 0.0)


def buy_and_hold(close, init_cash: float, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Buy-and-hold equity per bar (or at ``rows`` only), starting at ``init_cash``.

    ``close`` is one price per bar, or a (time x symbol) grid with NaN where a symbol has no bar:
    each symbol then gets ``init_cash / n_symbols`` at its first bar, held in cash before it and
    marked at its last known close after it."""
    c = np.asarray(close, dtype=np.float64)
    if c.ndim == 1:
        return init_cash * (c if rows is None else c[rows]) / c[0]
    filled = pd.DataFrame(c).ffill().to_numpy()
    first = filled[np.argmax(np.isfinite(c), axis=0), np.arange(c.shape[1])]
    grown = np.nan_to_num(filled / first, nan=1.0)
    value = grown.mean(axis=1) * init_cash
    return value if rows is None else value[rows]


def benchmark_metrics(ts: Optional[np.ndarray], equity, init_cash: float, close) -> dict:
    """``BENCHMARK_METRICS`` of an equity path against buy-and-hold of ``close`` (see the module
    docstring); alpha, beta and the information ratio are NaN without bar times (``ts=None``) or
    with fewer than two days."""
    n = np.shape(equity)[0]
    out = {"benchmark_return": float(buy_and_hold(close, init_cash, np.array([n - 1]))[0] / init_cash - 1.0)}
    out.update(alpha=np.nan, beta=np.nan, information_ratio=np.nan)
    if ts is None:
        return out
    ends = day_ends(ts)
    if ends.shape[0] < 2:
        return out
    r = _simple_returns(np.asarray(equity, dtype=np.float64)[ends], init_cash)
    b = _simple_returns(buy_and_hold(close, init_cash, ends), init_cash)
    var_b = float(np.var(b, ddof=1))
    if var_b > 0.0:
        beta = float(np.cov(r, b, ddof=1)[0, 1]) / var_b
        out["beta"] = beta
        out["alpha"] = (float(r.mean()) - beta * float(b.mean())) * ANNUAL_DAYS
    out["information_ratio"] = sharpe(r - b)  # the Sharpe ratio of the active returns
    return out


def compute_metrics(
    ts,
    equity,
    init_cash: float,
    trades: Optional[pd.DataFrame] = None,
    position=None,
    fees_paid: float = 0.0,
    funding_paid: float = 0.0,
    traded_notional: float = 0.0,
) -> dict:
    """Metrics of an equity curve (int64 µs ``ts``, float64 ``equity`` per bar).

    ``trades`` needs columns ``pnl`` and ``is_open``; ``position`` (per bar, or time x symbol)
    gives the exposure."""
    t = np.ascontiguousarray(ts, dtype=np.int64)
    eq = np.ascontiguousarray(equity, dtype=np.float64)
    if t.shape != eq.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(
            f"compute_metrics: `ts` {t.shape} and `equity` {eq.shape} must be 1-D, "
            "non-empty and of equal length"
        )
    if not init_cash > 0:
        raise ValueError(f"compute_metrics: `init_cash` must be > 0, got {init_cash!r}")
    if position is None:
        exposed = np.zeros(t.shape[0], dtype=np.bool_)
    else:
        pos = np.asarray(position)
        exposed = (pos != 0).any(axis=1) if pos.ndim == 2 else pos != 0
    if trades is None or len(trades) == 0:
        pnl, is_open = np.zeros(0), np.zeros(0, dtype=np.bool_)
    else:
        missing = {"pnl", "is_open"} - set(trades.columns)
        if missing:
            raise KeyError(f"compute_metrics: trades lack column(s) {sorted(missing)}")
        pnl = trades["pnl"].to_numpy(np.float64)
        is_open = trades["is_open"].to_numpy(np.bool_)
    out = np.empty(N_METRICS)
    _nb.equity_metrics_nb(
        t,
        eq,
        float(init_cash),
        np.ascontiguousarray(exposed, np.bool_),
        pnl,
        is_open,
        float(fees_paid),
        float(funding_paid),
        float(traded_notional),
        out,
    )
    return metrics_dict(out)
