"""Whole-grid sweeps inside one run: ``sweep.mode=kernel`` (one numba call per symbol on the driver)
and ``sweep.mode=spark`` (the grid split into chunks, each chunk a Spark task calling the same
numba sweep kernel on that executor's copy of the bars).

The grid is ``sweep.grid``: dotted config keys -> lists of values, e.g.
``{"strategy.fast": [5, 10], "strategy.slow": [50, 100], "backtest.risk.stop_loss": [0, 0.02]}``.
Its combinations are enumerated in ``itertools.product`` order. Spark chunks are *sub-grids*
(a fixed index on the leading keys and a slice of one key, the trailing keys whole), described by
one integer per task: the driver creates ``n_chunks`` integers and nothing per combination, and the
chunks concatenated in id order give exactly the kernel-mode table, row for row.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from btsys.backtest.engine import BacktestResult, simulate_from_config
from btsys.backtest.run import load_frames, load_funding
from btsys.backtest.sweep import sweep_from_config

log = logging.getLogger("btsys.backtest")


@dataclass
class GridResult:
    table: pd.DataFrame  # one row per (symbol,) combination: params + metrics
    param_cols: List[str]
    objective: str
    top_results: List[Tuple[Dict[str, Any], BacktestResult]]
    best_metrics: Dict[str, float]
    returns: pd.DataFrame  # daily returns: index UTC day (µs), one column per table row


def grid_axes(grid: Mapping[str, Any]) -> Tuple[List[str], List[list]]:
    """Keys and value lists of a ``sweep.grid`` (clear errors for an empty grid or a scalar)."""
    if not grid:
        raise ValueError(
            "sweep.grid is empty: give dotted keys with lists of values, e.g. "
            "sweep.grid={strategy.fast:[5,10],strategy.slow:[50,100]}"
        )
    keys, values = [], []
    for k, v in grid.items():
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ValueError(f"sweep.grid.{k} must be a list of values, got {v!r}")
        v = list(v)
        if not v:
            raise ValueError(f"sweep.grid.{k} is an empty list")
        keys.append(str(k))
        values.append(v)
    return keys, values


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
    sub = {k: [values[a][i]] for a, (k, i) in enumerate(zip(keys[:axis], lead))}
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


def _chunk_task(ids, store_dict, paths, cfg_dict, keys, values, plan, keep_partial, funding):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg_dict)
    n_chunks = plan[2]
    for task_id in ids:
        sym_i, chunk = divmod(task_id, n_chunks)
        sym, path = paths[sym_i]
        frame = _executor_frame(store_dict, path, keep_partial)
        table, daily = sweep_from_config(
            frame,
            cfg,
            chunk_grid(keys, values, plan, chunk),
            funding=None if funding is None else funding.get(sym),
            daily_returns=True,
        )
        table.insert(0, "_task", task_id)
        daily.columns = [str(c) for c in daily.columns]
        tbuf, dbuf = io.BytesIO(), io.BytesIO()
        table.to_parquet(tbuf, index=False)
        daily.to_parquet(dbuf)
        yield task_id, tbuf.getvalue(), dbuf.getvalue()


def spark_sweep(
    spark,
    store,
    paths: List[Tuple[str, str]],
    cfg: Any,
    keys: List[str],
    values: List[list],
    keep_partial: bool = False,
    funding: Optional[Dict[str, pd.DataFrame]] = None,
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate the grid for every ``(symbol, storage path)`` in Spark tasks; rows in kernel order.

    Returns the metrics table and the daily returns (one column per table row)."""
    from omegaconf import OmegaConf

    plan = chunk_plan([len(v) for v in values], int(cfg.sweep.chunk_size))
    n_tasks = plan[2] * len(paths)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    cfg_dict.pop("hydra", None)
    store_dict = store.to_dict()
    sc = spark.sparkContext
    parts = min(n_tasks, max(1, sc.defaultParallelism * 4))
    log.info(
        "spark sweep: %d combinations x %d symbol(s) in %d chunks on %d partitions",
        int(np.prod([len(v) for v in values])),
        len(paths),
        n_tasks,
        parts,
    )
    blobs = sorted(
        sc.parallelize(range(n_tasks), parts)
        .mapPartitions(
            lambda it: _chunk_task(it, store_dict, paths, cfg_dict, keys, values, plan, keep_partial, funding)
        )
        .collect(),
        key=lambda b: b[0],
    )
    table = pd.concat([pd.read_parquet(io.BytesIO(t)) for _, t, _ in blobs], ignore_index=True)
    daily = pd.concat([pd.read_parquet(io.BytesIO(d)) for _, _, d in blobs], axis=1)
    daily.columns = range(daily.shape[1])
    return table.drop(columns="_task"), daily


# --------------------------------------------------------------------------- driver
def run_grid(cfg: Any, store, feats_entry, ingest_entry, spark=None) -> GridResult:
    """Sweep ``cfg.sweep.grid`` over every symbol's bars; simulate the top K again for their reports."""
    from omegaconf import OmegaConf

    from btsys.signals import generate_signals

    keys, values = grid_axes(
        OmegaConf.to_container(cfg.sweep.grid, resolve=True)
        if OmegaConf.is_config(cfg.sweep.grid)
        else cfg.sweep.grid
    )
    keep_partial = bool(cfg.bars.keep_partial)
    frames = load_frames(store, feats_entry, keep_partial)
    funding = load_funding(store, ingest_entry, frames) if bool(cfg.backtest.funding) else None
    objective = str(cfg.sweep.objective)
    multi = len(frames) > 1
    if spark is not None:
        paths = [(s, feats_entry.meta["symbols"][s]["path"]) for s in frames]
        table, daily = spark_sweep(spark, store, paths, cfg, keys, values, keep_partial, funding)
        n_per = len(table) // len(frames)
        table.insert(0, "symbol", np.repeat(list(frames), n_per))
    else:
        parts, dailies = [], []
        for sym, frame in frames.items():
            t, d = sweep_from_config(
                frame,
                cfg,
                dict(zip(keys, values)),
                funding=None if funding is None else funding.get(sym),
                daily_returns=True,
            )
            t.insert(0, "symbol", sym)
            parts.append(t)
            dailies.append(d)
        table = pd.concat(parts, ignore_index=True)
        daily = pd.concat(dailies, axis=1)
    # symbols cover different days: a day outside a symbol's data is a zero return
    daily = daily.fillna(0.0)
    daily.columns = table.index
    if not multi:
        table = table.drop(columns="symbol")
    if objective not in table.columns:
        raise KeyError(
            f"sweep.objective={objective!r} is not a metric of the sweep table "
            f"({[c for c in table.columns if c not in keys]})"
        )
    param_cols = (["symbol"] if multi else []) + keys
    maximize = str(cfg.sweep.get("direction", "maximize")) != "minimize"
    score = table[objective].astype(float).fillna(-np.inf if maximize else np.inf)
    order = np.argsort(-score.to_numpy() if maximize else score.to_numpy(), kind="stable")
    top = []
    for i in order[: int(cfg.sweep.top_k)]:
        cell = {k: table[k].iloc[int(i)] for k in table.columns}  # per column: dtypes kept
        params = {k: (cell[k].item() if isinstance(cell[k], np.generic) else cell[k]) for k in keys}
        sym = cell["symbol"] if multi else next(iter(frames))
        trial = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        trial.pop("hydra", None)
        for k, v in params.items():
            OmegaConf.update(trial, k, v, force_add=True)
        if multi:
            OmegaConf.update(trial, "data.symbols", [sym], force_add=True)
            params = {"data.symbols": [sym], **params}
        sig = generate_signals(trial.strategy, frames[sym])
        res = simulate_from_config(
            frames[sym],
            sig.entries,
            sig.exits,
            trial.backtest,
            funding=None if funding is None else funding.get(sym),
            short_entries=sig.short_entries,
            short_exits=sig.short_exits,
        )
        top.append((params, res))
    best = dict(top[0][1].metrics) if top else {}
    return GridResult(table, param_cols, objective, top, best, daily)
