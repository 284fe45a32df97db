"""Drawdown periods of an equity curve: peak, trough, recovery, depth and length.

The definition is the engine's (:func:`btsys.backtest._nb.equity_stats_nb`): the running peak
starts at the initial value (``start_value``, the backtest's initial cash) at the first bar's time,
a period runs from a peak to the first bar at or above it (its recovery) or to the last bar, its
depth is ``1 - trough / peak``. So the deepest period's depth is the ``max_drawdown`` metric and the
longest period's length is ``max_drawdown_duration``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from btsys.backtest.enums import DAY_US

COLUMNS = ("peak", "trough", "recovery", "depth", "days", "days_to_trough", "recovered")


def drawdown_periods(
    ts: np.ndarray, equity: np.ndarray, start_value: Optional[float] = None, top: Optional[int] = None
) -> pd.DataFrame:
    """Every drawdown period, deepest first (``top``: the first ``top`` only).

    Parameters
    ----------
    ts : int64 µs per bar, non-decreasing.
    equity : float64 per bar.
    start_value : the curve's value before the first bar (initial cash); ``None``: the first bar's.

    Returns
    -------
    DataFrame with ``peak``, ``trough``, ``recovery`` (int64 µs; ``recovery`` is the last bar's time
    when not ``recovered``), ``depth`` (positive fraction), ``days`` (peak to recovery or to the last
    bar), ``days_to_trough`` and ``recovered`` (bool).
    """
    ts = np.asarray(ts, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if ts.shape != eq.shape:
        raise ValueError(f"ts and equity must have one length, got {ts.shape} and {eq.shape}")
    rows = []
    if len(eq):
        v = np.r_[eq[0] if start_value is None else float(start_value), eq]  # v[k] = bar k - 1
        t = np.r_[ts[0], ts]
        under = v < np.maximum.accumulate(v)
        edges = np.diff(np.r_[False, under, False].astype(np.int8))
        for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            trough = s + int(np.argmin(v[s:e]))
            recovered = e < len(v)
            rows.append((t[s - 1], t[trough], t[e if recovered else -1], v[s - 1], v[trough], recovered))
    out = pd.DataFrame(
        [
            {
                "peak": p,
                "trough": t,
                "recovery": r,
                "depth": (pk - tr) / pk if pk > 0 else 0.0,
                "days": (r - p) / DAY_US,
                "days_to_trough": (t - p) / DAY_US,
                "recovered": ok,
            }
            for p, t, r, pk, tr, ok in rows
        ],
        columns=list(COLUMNS),
    )
    out = out.sort_values("depth", ascending=False, kind="stable").reset_index(drop=True)
    return out if top is None else out.head(top)
