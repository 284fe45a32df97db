"""Walk-forward optimisation results (``backtest.split.reoptimize=true``): the windows' bar times,
the stitched out-of-sample backtest and the in-sample/out-of-sample comparison.

The optimisation itself (per window: sweep ``sweep.grid`` on the in-sample bars, trade the best
out of sample) needs the strategy's signals, so it runs in the backtest stage
(:func:`btsys.stages.backtest.walk_forward`); this module is what it is made of.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import pandas as pd

from btsys.backtest.metrics import benchmark_metrics, compute_metrics
from btsys.backtest.result import BacktestResult

#: metrics reported per window, in-sample (the best row) and out of sample
WINDOW_METRICS = ("sharpe", "total_return", "max_drawdown", "n_trades")


@dataclass
class WalkForward:
    result: BacktestResult  # the stitched out-of-sample backtest
    table: pd.DataFrame  # one row per window
    metrics: Dict[str, float]  # aggregate walk-forward figures


def bar_times(frames: Dict[str, pd.DataFrame]) -> np.ndarray:
    """Close times of the bars windows count: the one symbol's bars, or the merged timeline's rows
    (the union of the symbols' close times, as portfolios trade them)."""
    if len(frames) == 1:
        return next(iter(frames.values()))["ts_close"].to_numpy(np.int64)
    return np.unique(np.concatenate([f["ts_close"].to_numpy(np.int64) for f in frames.values()]))


def stitch(parts: list, init_cash: float) -> BacktestResult:
    """One backtest from consecutive window backtests (each starting with the previous one's final
    equity): arrays concatenated, order and trade bar indices shifted, metrics of the whole (the
    benchmark: buy-and-hold over the stitched bars)."""
    offsets = np.cumsum([0] + [len(p.ts) for p in parts[:-1]])
    orders = np.concatenate([p.order_records for p in parts])
    trades = np.concatenate([p.trade_records for p in parts])
    k = 0
    for p, off in zip(parts, offsets, strict=True):
        orders["idx"][k : k + len(p.order_records)] += off
        k += len(p.order_records)
    k = 0
    for p, off in zip(parts, offsets, strict=True):
        for f in ("entry_idx", "exit_idx"):
            trades[f][k : k + len(p.trade_records)] += off
        k += len(p.trade_records)
    ts = np.concatenate([p.ts for p in parts])
    equity = np.concatenate([p.equity for p in parts])
    position = np.concatenate([p.position for p in parts])
    close = np.concatenate([p.close for p in parts])
    stitched = BacktestResult(
        ts=ts,
        equity=equity,
        cash=np.concatenate([p.cash for p in parts]),
        position=position,
        order_records=orders,
        trade_records=trades,
        metrics={},
        final_value=float(equity[-1]),
        close=close,
        init_cash=init_cash,
        symbols=parts[0].symbols,
    )
    metrics = compute_metrics(
        ts,
        equity,
        init_cash,
        stitched.trades,
        position,
        float(sum(p.metrics["fees_paid"] for p in parts)),
        float(sum(p.metrics["funding_paid"] for p in parts)),
        float((orders["size"] * orders["price"]).sum()),
    )
    stitched.metrics.update(metrics)
    stitched.metrics.update(benchmark_metrics(ts, equity, init_cash, close))
    return stitched


def aggregate(table: pd.DataFrame, result: BacktestResult, objective: str) -> Dict[str, float]:
    """The in-sample/out-of-sample comparison over all windows."""
    is_mean = float(np.nanmean(table[f"is_{objective}"])) if len(table) else float("nan")
    oos = float(result.metrics[objective])
    return {
        "wf_n_windows": float(len(table)),
        f"wf_is_{objective}_mean": is_mean,
        f"wf_oos_{objective}_mean": float(np.nanmean(table[f"oos_{objective}"]))
        if len(table)
        else float("nan"),
        "wf_degradation": is_mean - oos,  # in-sample minus stitched out-of-sample objective
        "wf_efficiency": oos / is_mean if np.isfinite(is_mean) and is_mean > 0 else float("nan"),
    }
