"""What every strategy returns: :class:`Signals`, aligned to the rows of the frame it was given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np


@dataclass
class Signals:
    """Signals aligned to the rows of the frame they were generated from.

    ``entries``/``exits`` (and the optional short pair) are bool arrays: True = act on the
    information at that bar's close. ``size`` is an optional per-bar bet size in [0, 1] (fraction
    of the configured size), ``model_info`` what an ML strategy fitted (see
    :func:`btsys.report.models.log_model_info`).
    """

    entries: np.ndarray
    exits: np.ndarray
    short_entries: Optional[np.ndarray] = None
    short_exits: Optional[np.ndarray] = None
    size: Optional[np.ndarray] = None
    model_info: Optional[dict] = None
    indicators: Dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.entries.shape[0])
