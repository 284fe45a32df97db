"""The sweep stage: ``sweep.*`` (``mode``, ``grid``, ``objective``, ``top_k``, ``chunk_size``) + the
feature frames -> :mod:`btsys.backtest.sweep` -> one table row per combination of ``sweep.grid``
(the report stage logs it to ONE MLflow run with child runs for the top ``sweep.top_k``).

``sweep.mode=kernel`` evaluates the grid in one numba call on the driver; ``sweep.mode=spark``
cuts it into chunks (:func:`btsys.backtest.grid.chunk_plan`), each chunk a Spark task calling the
same sweep on that executor's copy of the frames; the chunks in id order give the kernel table row
for row. Every combination is checked before anything is computed
(:func:`btsys.backtest.sweep.plan_from_config`). A row is one parameter set evaluated as the run
evaluates it: with several ``data.symbols``, the shared-cash portfolio of all of them (with a
dynamic universe, of its members). With ``backtest.intrabar=ticks`` (one symbol) each combination
is run by the engine (:mod:`btsys.backtest.sweep_runs`) and the trades come from the tick lake,
each bar's read once per chunk (in Spark, by the task that sweeps the chunk). The top
``sweep.top_k`` rows are run again by the backtest stage's
:func:`~btsys.stages.backtest.backtest_frames` for their child runs, which therefore equal them.
(``sweep.mode=hydra``, one Hydra job per combination, needs no stage: each job is a run.)
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from btsys.backtest import BacktestResult
from btsys.backtest.grid import check_objective, chunk_grid, chunk_plan, grid_of, ranking, trial_config
from btsys.backtest.sweep import check_frames, evaluate, plan_from_config, sweep_frames
from btsys.stages.backtest import backtest_frames, lake_trades, load_inputs
from btsys.storage import storage_from_dict

log = logging.getLogger("btsys.stages.sweep")


@dataclass
class GridResult:
    table: pd.DataFrame  # one row per combination: params + metrics
    param_cols: List[str]
    objective: str
    top_results: List[Tuple[Dict[str, Any], BacktestResult]]
    best_metrics: Dict[str, float]
    returns: pd.DataFrame  # daily returns: index UTC day (µs), one column per table row


# --------------------------------------------------------------------------- spark mode
_EXECUTOR_FRAMES: Dict[Tuple[str, str], pd.DataFrame] = {}


def _executor_frame(store_dict: dict, path: str, keep_partial: bool) -> pd.DataFrame:
    """The bars/features frame of a symbol, read from the store once per executor Python worker."""
    key = (repr(sorted(store_dict.items())), path)
    if key not in _EXECUTOR_FRAMES:
        df = storage_from_dict(store_dict).read_parquet(path).to_pandas()
        if "is_partial" in df.columns and not keep_partial:
            df = df[~df["is_partial"].to_numpy(bool)].reset_index(drop=True)
        _EXECUTOR_FRAMES[key] = df
    return _EXECUTOR_FRAMES[key]


def _chunk_task(ids, store_dict, paths, cfg_dict, keys, values, plan, keep_partial, funding, universe):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg_dict)
    frames = {sym: _executor_frame(store_dict, path, keep_partial) for sym, path in paths}
    for chunk in ids:
        sub = chunk_grid(keys, values, plan, chunk)
        # backtest.intrabar=ticks: the chunk's trades, read by this task from the lake once
        trades = lake_trades(cfg, storage_from_dict(store_dict), frames)
        table, daily = sweep_frames(
            cfg, frames, sub, funding=funding, daily_returns=True, universe=universe, trades=trades
        )
        daily.columns = [str(c) for c in daily.columns]
        tbuf, dbuf = io.BytesIO(), io.BytesIO()
        table.to_parquet(tbuf, index=False)
        daily.to_parquet(dbuf)
        yield chunk, tbuf.getvalue(), dbuf.getvalue()


def spark_sweep(
    spark,
    store,
    paths: List[Tuple[str, str]],
    cfg: Any,
    keys: List[str],
    values: List[list],
    keep_partial: bool = False,
    funding: Optional[Dict[str, pd.DataFrame]] = None,
    universe: Optional[pd.DataFrame] = None,
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate the grid over the symbols ``[(symbol, storage path), ...]`` in Spark tasks, one
    chunk of combinations per task; rows in kernel order. Returns the metrics table and the
    daily returns (one column per table row). ``universe`` (the membership table, one row per
    rebalance) travels with the tasks."""
    from omegaconf import OmegaConf

    plan = chunk_plan([len(v) for v in values], int(cfg.sweep.chunk_size))
    n_tasks = plan[2]
    cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    cfg_dict.pop("hydra", None)
    store_dict = store.to_dict()
    sc = spark.sparkContext
    parts = min(n_tasks, max(1, sc.defaultParallelism * 4))
    log.info(
        "spark sweep: %d combinations over %d symbol(s) in %d chunks on %d partitions",
        int(np.prod([len(v) for v in values])),
        len(paths),
        n_tasks,
        parts,
    )
    blobs = sorted(
        sc.parallelize(range(n_tasks), parts)
        .mapPartitions(
            lambda it: _chunk_task(
                it, store_dict, paths, cfg_dict, keys, values, plan, keep_partial, funding, universe
            )
        )
        .collect(),
        key=lambda b: b[0],
    )
    table = pd.concat([pd.read_parquet(io.BytesIO(t)) for _, t, _ in blobs], ignore_index=True)
    daily = pd.concat([pd.read_parquet(io.BytesIO(d)) for _, _, d in blobs], axis=1)
    daily.columns = range(daily.shape[1])
    return table, daily


# --------------------------------------------------------------------------- the stage
def run(
    cfg: Any, store, feats_entry, ingest_entry, spark=None, universe: Optional[pd.DataFrame] = None
) -> GridResult:
    """Sweep ``cfg.sweep.grid`` over the run's frames (all of ``data.symbols`` together; members
    only with a ``universe`` membership table); run the top K again through the backtest stage's
    :func:`~btsys.stages.backtest.backtest_frames` for their reports."""
    grid = grid_of(cfg)
    sweep_plan = plan_from_config(cfg, grid)  # every combination checked before anything runs
    objective, maximize = check_objective(cfg)
    frames, funding = load_inputs(cfg, store, feats_entry, ingest_entry)
    check_frames(sweep_plan, frames)
    keys, values = list(grid), list(grid.values())
    trades = lake_trades(cfg, store, frames)
    if spark is not None:
        paths = [(s, feats_entry.meta["symbols"][s]["path"]) for s in frames]
        table, daily = spark_sweep(
            spark, store, paths, cfg, keys, values, bool(cfg.bars.keep_partial), funding, universe
        )
    else:
        table, daily = evaluate(
            sweep_plan, frames, funding, daily_returns=True, universe=universe, trades=trades
        )
    daily.columns = table.index
    order = ranking(table, objective, maximize)
    top = []
    for i in order[: int(cfg.sweep.top_k)]:
        params = {k: table[k].iloc[int(i)] for k in keys}  # per column: dtypes kept
        params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
        trial = trial_config(cfg, params)
        top.append((params, backtest_frames(trial, frames, funding, universe=universe, trades=trades).result))
    best = dict(top[0][1].metrics) if top else {}
    if top:
        log.info(
            "sweep best of %d: %s=%.6g with %s",
            len(table),
            objective,
            best.get(objective, float("nan")),
            " ".join(f"{k}={v}" for k, v in top[0][0].items()),
        )
    return GridResult(table, keys, objective, top, best, daily)
