"""The universe stage: ``universe.*`` + the quality table's daily sums -> :mod:`btsys.universe`
(ranked on the driver) -> the membership table (None for ``universe=static``: every symbol of
``data.symbols``, all the time). Not cached: ranking a few thousand symbol-days takes milliseconds.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import pandas as pd

from btsys.stages.context import RunContext
from btsys.universe.membership import Membership, UniverseSpec, membership_from_config

log = logging.getLogger("btsys.stages.universe")


def check(cfg: Any) -> None:
    """Fail fast (before any Spark job) on bad ``universe`` settings."""
    UniverseSpec.from_config(cfg.get("universe"))


def run(ctx: RunContext, qtable: pd.DataFrame) -> Optional[Membership]:
    """The run's universe membership from the quality table's daily sums (days with trades)."""
    m = membership_from_config(ctx.cfg.get("universe"), qtable[qtable["rows"] > 0], ctx.cfg.data)
    if m is not None:
        t = m.turnover()
        log.info(
            "universe %s: %d rebalances, %.1f members on average, turnover %.3f",
            m.spec.kind,
            len(t),
            t["n_members"].mean(),
            m.metrics()["universe_turnover"],
        )
    return m
