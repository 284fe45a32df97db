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
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from btsys.backtest import _nb
from btsys.backtest.engine import metrics_dict
from btsys.backtest.enums import METRIC_NAMES, N_METRICS

__all__ = ["METRIC_NAMES", "compute_metrics"]


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
