"""Feature library over the bar table (numba kernels in ``_nb.py``, registry in ``library.py``).

``compute_features(bars, specs)`` adds one float64 column per spec; the features stage
(``btsys.stages.features``) does it for every symbol of a bars entry and caches the frames.
"""

from __future__ import annotations

from btsys.features.library import (
    FEATURES,
    NON_FEATURE_COLUMNS,
    FeatureError,
    compute_feature,
    compute_features,
    normalize_specs,
    parse_feature_name,
)

__all__ = [
    "FEATURES",
    "NON_FEATURE_COLUMNS",
    "FeatureError",
    "compute_feature",
    "compute_features",
    "normalize_specs",
    "parse_feature_name",
]
