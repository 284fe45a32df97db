"""Whole-grid sweeps inside one run: ``sweep.mode=kernel`` (one numba call on the driver) and
``sweep.mode=spark`` (the grid split into chunks, each chunk a Spark task calling the same sweep
on that executor's copy of the frames).

The grid is ``sweep.grid``: dotted config keys -> lists of values, e.g.
``{"strategy.fast": [5, 10], "strategy.slow": [50, 100], "backtest.risk.stop_loss": [0, 0.02]}``.
Every combination is checked before anything is computed (:func:`btsys.backtest.sweep.plan_from_config`).
A row is one parameter set evaluated as the run evaluates it: with several ``data.symbols``, the
shared-cash portfolio of all of them (with a dynamic universe, ``universe=top_n``, of its
members). Combinations are enumerated in ``itertools.product`` order.
Spark chunks are *sub-grids* (a fixed index on the leading keys and a slice of one key, the
trailing keys whole), described by one integer per task: the driver creates ``n_chunks`` integers
and nothing per combination, and the chunks concatenated in id order give exactly the kernel-mode
table, row for row. The top ``sweep.top_k`` rows are run again by the pipeline's own backtest
(:func:`btsys.backtest.run.backtest_frames`) for their child runs, which therefore equal them.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from btsys.backtest.enums import METRIC_NAMES
from btsys.backtest.metrics import BENCHMARK_METRICS
from btsys.backtest.result import BacktestResult
from btsys.backtest.run import backtest_frames, load_stage_inputs
from btsys.backtest.sweep import SweepError, check_frames, evaluate, grid_axes, plan_from_config, sweep_frames

log = logging.getLogger("btsys.backtest")


@dataclass
class GridResult:
    table: pd.DataFrame  # one row per combination: params + metrics
    param_cols: List[str]
    objective: str
    top_results: List[Tuple[Dict[str, Any], BacktestResult]]
    best_metrics: Dict[str, float]
    returns: pd.DataFrame  # daily returns: index UTC day (µs), one column per table row


def grid_of(cfg: Any) -> Dict[str, list]:
    """``sweep.grid`` as a plain dict (checked: non-empty, lists)."""
    from btsys.config import to_plain

    keys, values = grid_axes(to_plain(cfg.sweep.grid) or {})
    return dict(zip(keys, values, strict=True))


def check_objective(cfg: Any) -> Tuple[str, bool]:
    """``(sweep.objective, maximise?)``, checked against the metric names."""
    objective = str(cfg.sweep.objective)
    if objective not in METRIC_NAMES + BENCHMARK_METRICS:
        raise SweepError(
            f"sweep.objective={objective!r} is not a backtest metric; one of "
            f"{list(METRIC_NAMES + BENCHMARK_METRICS)}"
        )
    direction = str(cfg.sweep.get("direction", "maximize"))
    if direction not in ("maximize", "minimize"):
        raise SweepError(f"sweep.direction must be maximize or minimize, got {direction!r}")
    return objective, direction == "maximize"


def ranking(table: pd.DataFrame, objective: str, maximize: bool) -> np.ndarray:
    """Row positions from best to worst by ``objective`` (NaN last, ties in grid order)."""
    score = table[objective].astype(float).fillna(-np.inf if maximize else np.inf).to_numpy()
    return np.argsort(-score if maximize else score, kind="stable")


def trial_config(cfg: Any, params: Mapping[str, Any]):
    """``cfg`` (without ``hydra``) with one combination's values set."""
    from omegaconf import OmegaConf

    trial = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    trial.pop("hydra", None)
    for k, v in params.items():
        OmegaConf.update(trial, k, v.item() if isinstance(v, np.generic) else v, force_add=True)
    return trial


def chunk_plan(sizes: Sequence[int], chunk_size: int) -> Tuple[int, int, int]:
    """How to cut a grid of ``sizes`` into sub-grids of at most ``chunk_size`` combinations.

    Returns ``(axis, step, n_chunks)``: the leading ``axis`` keys take one index each, key ``axis``
    a slice of ``step`` values, the trailing keys are whole.
    """
    if chunk_size < 1:
        raise ValueError(f"sweep.chunk_size must be >= 1, got {chunk_size}")
    trailing = 1
    for n in sizes:
        trailing *= n
    for axis, n in enumerate(sizes):
        trailing //= n  # combinations of the keys after `axis`
        if trailing <= chunk_size:
            step = max(1, min(n, chunk_size // trailing))
            lead = int(np.prod(sizes[:axis], dtype=np.int64)) if axis else 1
            return axis, step, lead * math.ceil(n / step)
    raise AssertionError("unreachable")  # the last axis always has trailing == 1


def chunk_grid(
    keys: Sequence[str], values: Sequence[list], plan: Tuple[int, int, int], chunk_id: int
) -> Dict[str, list]:
    """The sub-grid of chunk ``chunk_id`` (mixed-radix decoding; see :func:`chunk_plan`)."""
    axis, step, n_chunks = plan
    if not 0 <= chunk_id < n_chunks:
        raise IndexError(f"chunk {chunk_id} out of range 0..{n_chunks - 1}")
    n_slices = math.ceil(len(values[axis]) / step)
    rest, s = divmod(chunk_id, n_slices)
    lead = []
    for vals in reversed(values[:axis]):
        rest, i = divmod(rest, len(vals))
        lead.append(i)
    lead.reverse()
    sub = {k: [values[a][i]] for a, (k, i) in enumerate(zip(keys[:axis], lead, strict=True))}
    sub[keys[axis]] = values[axis][s * step : (s + 1) * step]
    for a in range(axis + 1, len(keys)):
        sub[keys[a]] = values[a]
    return sub


# --------------------------------------------------------------------------- spark
_EXECUTOR_FRAMES: Dict[Tuple[str, str], pd.DataFrame] = {}


def _executor_frame(store_dict: dict, path: str, keep_partial: bool) -> pd.DataFrame:
    """The bars/features frame of a symbol, read from the store once per executor Python worker."""
    from btsys.storage import storage_from_dict

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
        table, daily = sweep_frames(cfg, frames, sub, funding=funding, daily_returns=True, universe=universe)
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


# --------------------------------------------------------------------------- driver
def run_grid(
    cfg: Any, store, feats_entry, ingest_entry, spark=None, universe: Optional[pd.DataFrame] = None
) -> GridResult:
    """Sweep ``cfg.sweep.grid`` over the run's frames (all of ``data.symbols`` together; members
    only with a ``universe`` membership table); run the top K again through the pipeline's
    backtest for their reports."""
    grid = grid_of(cfg)
    sweep_plan = plan_from_config(cfg, grid)  # every combination checked before anything runs
    objective, maximize = check_objective(cfg)
    frames, funding = load_stage_inputs(cfg, store, feats_entry, ingest_entry)
    check_frames(sweep_plan, frames)
    keys, values = list(grid), list(grid.values())
    if spark is not None:
        paths = [(s, feats_entry.meta["symbols"][s]["path"]) for s in frames]
        table, daily = spark_sweep(
            spark, store, paths, cfg, keys, values, bool(cfg.bars.keep_partial), funding, universe
        )
    else:
        table, daily = evaluate(sweep_plan, frames, funding, daily_returns=True, universe=universe)
    daily.columns = table.index
    order = ranking(table, objective, maximize)
    top = []
    for i in order[: int(cfg.sweep.top_k)]:
        params = {k: table[k].iloc[int(i)] for k in keys}  # per column: dtypes kept
        params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
        trial = trial_config(cfg, params)
        top.append((params, backtest_frames(trial, frames, funding, universe=universe).result))
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
