"""The grid of a whole-grid sweep (``sweep.grid``): its axes, its objective, the ranking of its
rows, a row's config, and how it is cut into chunks for Spark tasks.

The grid is ``sweep.grid``: dotted config keys -> lists of values, e.g.
``{"strategy.fast": [5, 10], "strategy.slow": [50, 100], "backtest.risk.stop_loss": [0, 0.02]}``.
Combinations are enumerated in ``itertools.product`` order. Spark chunks are *sub-grids* (a fixed
index on the leading keys and a slice of one key, the trailing keys whole), described by one
integer per task (:func:`chunk_plan`, :func:`chunk_grid`): the driver creates ``n_chunks``
integers and nothing per combination, and the chunks concatenated in id order give exactly the
kernel-mode table, row for row. The sweep stage (:mod:`btsys.stages.sweep`) runs them.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd

from btsys.backtest.enums import METRIC_NAMES
from btsys.backtest.metrics import BENCHMARK_METRICS
from btsys.backtest.sweep import SweepError, grid_axes

log = logging.getLogger("btsys.backtest")


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
