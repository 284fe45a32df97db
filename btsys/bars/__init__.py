"""Bars: time, tick, volume, dollar, imbalance and run bars from an ordered tick stream.

``build_bars`` (in memory) and the bars stage (``btsys.stages.bars``: one Spark task per symbol,
:func:`btsys.bars.lake.symbol_task`) use the same resumable numba kernels, so the bars of a
distributed run equal those of one pass over the whole stream.
"""

from btsys.bars.api import (
    BAR_COLUMNS,
    BAR_SCHEMA,
    KINDS,
    TICK_COLUMNS,
    BarsConfigError,
    BarsInputError,
    BarSpec,
    BarStream,
    build_bars,
    tick_arrays,
)
from btsys.bars.lake import load_bars

__all__ = [
    "build_bars",
    "load_bars",
    "BarStream",
    "BarSpec",
    "BarsInputError",
    "BarsConfigError",
    "BAR_COLUMNS",
    "BAR_SCHEMA",
    "TICK_COLUMNS",
    "KINDS",
    "tick_arrays",
]
