"""The signals stage: ``strategy.*`` + the feature frames -> :mod:`btsys.signals` -> signals per
symbol (or cross-sectional scores), aligned to each frame's rows.

Not cached: the rule strategies' kernels take microseconds per thousand bars, and the backtest
stage, the sweeps and the walk-forward optimisation ask for the signals of many strategy
configs over the same frames. An ML strategy's fitted models travel in ``Signals.model_info``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np
import pandas as pd

from btsys.signals import Signals, generate_scores, generate_signals, strategy_params


def params(cfg: Any) -> dict:
    """The ``strategy`` section, validated and with its schema's defaults filled in."""
    return strategy_params(cfg.strategy)


def is_cross_sectional(cfg: Any) -> bool:
    """``xs_momentum`` ranks the symbols against each other (scores, not per-symbol signals)."""
    return params(cfg)["name"] == "xs_momentum"


def signals(cfg: Any, frames: Mapping[str, pd.DataFrame]) -> Dict[str, Signals]:
    """The strategy's signals over each symbol's feature frame."""
    return {sym: generate_signals(cfg.strategy, frame) for sym, frame in frames.items()}


def scores(cfg: Any, frames: Mapping[str, pd.DataFrame]) -> Dict[str, np.ndarray]:
    """A cross-sectional strategy's scores per symbol."""
    return generate_scores(cfg.strategy, frames)
