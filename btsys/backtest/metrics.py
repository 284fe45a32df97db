"""Performance metrics of an equity curve and its trades (DESIGN.md metric keys).

Definitions (shared by the streaming metrics of the event loop and :func:`compute_metrics`):

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
    "BENCHMARK_METRICS",
    "CALENDAR_METRICS",
    "METRIC_NAMES",
    "benchmark_metrics",
    "buy_and_hold",
    "compute_metrics",
    "daily_returns",
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

_ANNUAL_DAYS = 365.0


def metrics_dict(m: np.ndarray) -> dict:
    """The kernel's metric vector as a ``{name: float}`` dict (``enums.METRIC_NAMES``)."""
    return {k: float(m[i]) for i, k in enumerate(METRIC_NAMES)}


def day_ends(ts: np.ndarray) -> np.ndarray:
    """Row of the last bar of each UTC day, from the first bar's day to the last bar's; a day
    without bars repeats the previous day's row (its return is 0). ``ts`` must be sorted."""
    d0, d1 = int(ts[0] // DAY_US), int(ts[-1] // DAY_US)
    ends = np.empty(d1 - d0 + 1, dtype=np.int64)
    starts = np.arange(d0 + 1, d1 + 1, dtype=np.int64) * DAY_US
    ends[:-1] = np.searchsorted(ts, starts, side="left") - 1
    ends[-1] = ts.shape[0] - 1
    return ends


def _simple_returns(v: np.ndarray, start_value: float) -> np.ndarray:
    prev = np.empty_like(v)
    prev[0] = start_value
    prev[1:] = v[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0.0, v / prev - 1.0, 0.0)


def daily_returns(ts, values, start_value: float) -> np.ndarray:
    """Daily simple returns of a value path (last value per UTC day, the first day against
    ``start_value``): the definition the kernels' Sharpe and Sortino use."""
    t = np.asarray(ts, dtype=np.int64)
    return _simple_returns(np.asarray(values, dtype=np.float64)[day_ends(t)], start_value)


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
        out["alpha"] = (float(r.mean()) - beta * float(b.mean())) * _ANNUAL_DAYS
    active = r - b
    sd = float(np.std(active, ddof=1))
    if sd > 0.0:
        out["information_ratio"] = float(active.mean()) / sd * math.sqrt(_ANNUAL_DAYS)
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
