"""Dynamic universes: which candidate symbols a portfolio may trade, decided point in time.

* :mod:`btsys.universe.symbols` -- candidates (``data.symbols``, with ``file:PATH`` entries);
* :mod:`btsys.universe.membership` -- ``top_n`` membership from daily per-symbol sums;
* :mod:`btsys.universe.report` -- membership/turnover/contribution tables and charts for a run.
"""

from btsys.universe.membership import (
    Membership,
    UniverseSpec,
    compute_membership,
    members_at,
    membership_from_config,
    rebalance_times,
)
from btsys.universe.symbols import expand_symbols, resolve_symbols

__all__ = [
    "Membership",
    "UniverseSpec",
    "compute_membership",
    "expand_symbols",
    "members_at",
    "membership_from_config",
    "rebalance_times",
    "resolve_symbols",
]
