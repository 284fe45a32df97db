"""The features stage: ``features.specs`` + the bars key -> key -> :mod:`btsys.features` (numpy and
numba on the driver, symbol by symbol) -> ``cache/features/<key>/<attempt>/symbol=<S>/features.parquet``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from btsys.config import to_plain
from btsys.features import FeatureError, compute_features, normalize_specs
from btsys.stages.cache import CacheEntry, cached, stage_key
from btsys.stages.context import RunContext

NAME = "features"
VERSION = 1


def section(cfg: Any) -> dict:
    return to_plain(cfg.features)


def key(cfg: Any, bars_key: str) -> str:
    """The features' key: the ``features`` section and the key of the bars they are computed on."""
    return stage_key(NAME, section(cfg), bars_key, version=VERSION)


def run(ctx: RunContext, bars_entry: CacheEntry) -> CacheEntry:
    """The cached feature frames of every symbol of a bars entry."""
    return cached(
        ctx.store,
        NAME,
        key(ctx.cfg, bars_entry.key),
        lambda prefix: build(ctx.cfg.features, ctx.store, bars_entry, prefix),
        force=ctx.force,
    )


def build(features_cfg: Any, store, bars_entry, prefix: str) -> dict:
    """Compute the feature frame of every symbol of a bars cache entry and write it under ``prefix``.

    Reads ``bars_entry.meta["symbols"][SYMBOL]["path"]`` with ``store.read_parquet`` and writes
    ``{prefix}/symbol={SYMBOL}/features.parquet``. Returns the stage meta
    ``{"symbols": {SYMBOL: {"path", "n_bars"[, "partial"]}}, "columns": [feature names]}``.
    """
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
        path_out = f"{prefix}/symbol={sym}/features.parquet"
        store.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), path_out)
        out[sym] = {"path": path_out, "n_bars": int(len(frame))}
        if isinstance(info, dict) and "partial" in info:  # the trailing bar is unfinished
            out[sym]["partial"] = bool(info["partial"])
    return {"symbols": out, "columns": [s.name for s in specs]}
