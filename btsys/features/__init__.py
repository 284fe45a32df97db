"""Feature library over the bar table (numba kernels in ``_nb.py``, registry in ``library.py``).

``compute_features(bars, specs)`` adds one float64 column per spec; ``compute_features_stage`` is
the cached pipeline stage (``btsys.pipeline.features_stage``) that does it for every symbol.
"""

from __future__ import annotations

from typing import Any

from btsys.features.library import (
    BAR_COLUMNS,
    FEATURES,
    NON_FEATURE_COLUMNS,
    FeatureError,
    compute_feature,
    compute_features,
    normalize_specs,
    parse_feature_name,
)

__all__ = [
    "BAR_COLUMNS",
    "FEATURES",
    "NON_FEATURE_COLUMNS",
    "FeatureError",
    "compute_feature",
    "compute_features",
    "compute_features_stage",
    "normalize_specs",
    "parse_feature_name",
]


def compute_features_stage(features_cfg: Any, store, bars_entry, prefix: str) -> dict:
    """Compute the feature frame of every symbol of a bars cache entry and write it under ``prefix``.

    Reads ``bars_entry.meta["symbols"][SYMBOL]["path"]`` with ``store.read_parquet`` and writes
    ``{prefix}/symbol={SYMBOL}/features.parquet``. Returns the stage meta
    ``{"symbols": {SYMBOL: {"path", "n_bars"}}, "columns": [feature names]}``.
    """
    import pyarrow as pa

    specs = normalize_specs(
        features_cfg.get("specs") if hasattr(features_cfg, "get") else getattr(features_cfg, "specs", [])
    )
    symbols = (bars_entry.meta or {}).get("symbols")
    if not isinstance(symbols, dict):
        raise FeatureError(
            f"bars cache entry {getattr(bars_entry, 'key', '?')} has no meta['symbols'] mapping"
        )
    out = {}
    for sym in sorted(symbols):
        info = symbols[sym]
        path = info.get("path") if isinstance(info, dict) else None
        if not path:
            raise FeatureError(f"bars entry meta['symbols'][{sym!r}] has no 'path'")
        bars = store.read_parquet(path).to_pandas()
        try:
            frame = compute_features(bars, specs)
        except FeatureError as e:
            raise FeatureError(f"{sym} ({store.uri(path)}): {e}") from None
        key = f"{prefix}/symbol={sym}/features.parquet"
        store.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), key)
        out[sym] = {"path": key, "n_bars": int(len(frame))}
        if isinstance(info, dict) and "partial" in info:  # the trailing bar is unfinished
            out[sym]["partial"] = bool(info["partial"])
    return {"symbols": out, "columns": [s.name for s in specs]}
