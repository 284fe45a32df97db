"""Signals: rule strategies, the safe rule grammar, AFML labels and walk-forward ML strategies.

``generate_signals(strategy_cfg, frame) -> Signals`` for single-symbol strategies,
``generate_scores(strategy_cfg, frames) -> {symbol: scores}`` for ``xs_momentum``. The ML pieces
(``btsys.signals.ml``, ``btsys.signals.labels``) import scikit-learn lazily.
"""

from btsys.signals.base import Signals
from btsys.signals.rules import RuleError, evaluate_rule, parse_rule
from btsys.signals.strategies import (
    STRATEGIES,
    Strategy,
    StrategyError,
    generate_scores,
    generate_signals,
    strategy_params,
)

__all__ = [
    "RuleError",
    "STRATEGIES",
    "Signals",
    "Strategy",
    "StrategyError",
    "evaluate_rule",
    "generate_scores",
    "generate_signals",
    "parse_rule",
    "strategy_params",
]
