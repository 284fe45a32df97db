"""Walk-forward optimisation (``backtest.split.reoptimize=true``).

For each window of :func:`btsys.backtest.split.walk_forward_windows`:

1. the grid ``sweep.grid`` is swept (kernel sweep, :func:`btsys.backtest.sweep.evaluate`) on the
   window's in-sample bars, every earlier bar warming the indicators up;
2. the best combination by ``sweep.objective`` trades the out-of-sample bars, as the pipeline's own
   backtest (:func:`btsys.backtest.run.backtest_frames` with a trading window), starting flat with
   the equity the previous out-of-sample window ended with (a position still open at a window's end
   is marked at its last close, then the next window starts flat).

The stitched out-of-sample backtest is the headline (its metrics are the run's metrics, its equity
the run's charts); per window the chosen parameters, the in-sample and out-of-sample figures; over
all windows the in-sample/out-of-sample degradation. Windows count bars of the symbol (one symbol)
or rows of the merged timeline (several symbols, ``xs_momentum``). With a dynamic universe both
the in-sample sweeps and the out-of-sample backtests trade members only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

from btsys.backtest.grid import check_objective, grid_of, ranking, trial_config
from btsys.backtest.metrics import benchmark_metrics, compute_metrics
from btsys.backtest.result import BacktestResult
from btsys.backtest.run import backtest_frames
from btsys.backtest.split import walk_forward_windows
from btsys.backtest.sweep import check_frames, evaluate, plan_from_config

log = logging.getLogger("btsys.backtest")

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


def walk_forward(
    cfg: Any,
    frames: Dict[str, pd.DataFrame],
    funding: Optional[dict] = None,
    universe: Optional[pd.DataFrame] = None,
) -> WalkForward:
    """Re-optimise ``sweep.grid`` in every in-sample window and trade each best out of sample
    (``universe``: the membership table, as :func:`btsys.backtest.run.backtest_frames` takes it)."""
    grid = grid_of(cfg)
    plan = plan_from_config(cfg, grid)
    objective, maximize = check_objective(cfg)
    check_frames(plan, frames)
    ts = bar_times(frames)
    windows = walk_forward_windows(len(ts), cfg.backtest.split)
    cash = float(cfg.backtest.init_cash)
    rows, parts = [], []
    for i, (tr, te) in enumerate(windows):
        table = evaluate(plan, frames, funding, window=(tr.start, tr.stop), universe=universe)
        best_i = int(ranking(table, objective, maximize)[0])
        best = {k: table[k].iloc[best_i] for k in grid}
        best = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.items()}
        trial = trial_config(cfg, {**best, "backtest.init_cash": cash})
        oos = backtest_frames(trial, frames, funding, window=(te.start, te.stop), universe=universe).result
        parts.append(oos)
        row = {
            "window": i,
            "train_start": tr.start,
            "train_stop": tr.stop,
            "test_start": te.start,
            "test_stop": te.stop,
            "train_ts_start": int(ts[tr.start]),
            "test_ts_start": int(ts[te.start]),
            "test_ts_end": int(ts[te.stop - 1]),
        }
        row.update({f"best.{k}": v for k, v in best.items()})
        for m in dict.fromkeys((objective, *WINDOW_METRICS)):
            row[f"is_{m}"] = float(table[m].iloc[best_i])
            row[f"oos_{m}"] = float(oos.metrics[m])
        rows.append(row)
        log.info(
            "walk-forward window %d: in-sample best %s (%s=%.4g), out of sample %s=%.4g",
            i,
            " ".join(f"{k}={v}" for k, v in best.items()),
            objective,
            row[f"is_{objective}"],
            objective,
            row[f"oos_{objective}"],
        )
        cash = oos.final_value
        if not cash > 0:
            log.warning("walk-forward: equity exhausted after window %d; later windows not traded", i)
            break
    result = stitch(parts, float(cfg.backtest.init_cash))
    return WalkForward(result, pd.DataFrame(rows), _aggregate(pd.DataFrame(rows), result, objective))


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


def _aggregate(table: pd.DataFrame, result: BacktestResult, objective: str) -> Dict[str, float]:
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
