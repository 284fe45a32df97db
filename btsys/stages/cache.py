"""The content-addressed cache every cached stage publishes through.

A stage's output lives under ``cache/<stage>/<key>/`` where ``key`` hashes the config section
that determines it, the stage's code version and its input's key (:func:`stage_key`). Publishing
is crash- and race-safe on local disk and S3 alike:

* a run writes its output under a fresh attempt prefix ``cache/<stage>/<key>/<attempt>/``;
* only then does it write the marker ``cache/<stage>/<key>/_COMMITTED`` (atomic) naming the
  attempt and holding the stage's small ``meta`` dict.

Readers trust an entry only through its marker, so a killed run leaves an attempt nobody reads;
two sweep jobs computing the same key at once both leave intact attempts and the marker names one
of them. ``force=true`` recomputes and re-points the marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from btsys.config import to_plain
from btsys.failpoint import failpoint
from btsys.storage import Storage

log = logging.getLogger("btsys.stages")

MARKER = "_COMMITTED"


def drop_keys(d: dict, dotted: set[str], prefix: str = "") -> dict:
    """``d`` without the dotted keys ``dotted`` (``{"source.retries", ...}``), recursively."""
    out = {}
    for k, v in d.items():
        full = f"{prefix}{k}"
        if full in dotted:
            continue
        out[k] = drop_keys(v, dotted, full + ".") if isinstance(v, dict) else v
    return out


def stage_key(stage: str, section: Any, input_key: Optional[str] = None, version: int = 1) -> str:
    """Content address of a stage output: sha256 of (stage, code version, config section, input
    key). ``section`` is what determines the output and nothing else (each stage's ``section``)."""
    payload = json.dumps(
        {"stage": stage, "version": version, "config": to_plain(section) or {}, "input": input_key},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class CacheEntry:
    stage: str
    key: str
    prefix: str  # storage key of the attempt directory holding the data
    meta: dict = field(default_factory=dict)
    hit: bool = False


def entry_dir(stage: str, key: str) -> str:
    return f"cache/{stage}/{key}"


def lookup(store: Storage, stage: str, key: str) -> Optional[CacheEntry]:
    """The committed entry of a key, or None."""
    marker = f"{entry_dir(stage, key)}/{MARKER}"
    if not store.exists(marker):
        return None
    m = json.loads(store.read_text(marker))
    return CacheEntry(stage, key, m["prefix"], m.get("meta", {}), hit=True)


def cached(
    store: Storage, stage: str, key: str, build: Callable[[str], dict], force: bool = False
) -> CacheEntry:
    """Return the committed output of ``stage``/``key``, building it with ``build(prefix)`` if needed.

    ``build`` writes everything under the storage prefix it is given and returns a small JSON-able
    ``meta`` dict that is stored in the marker.
    """
    if not force:
        hit = lookup(store, stage, key)
        if hit is not None:
            log.info("cache hit: %s %s (%s)", stage, key, store.uri(hit.prefix))
            return hit
    attempt = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    prefix = f"{entry_dir(stage, key)}/{attempt}"
    t0 = time.perf_counter()
    log.info("computing %s %s%s", stage, key, " (force)" if force else "")
    meta = build(prefix) or {}
    failpoint(f"{stage}.marker")
    marker = {
        "prefix": prefix,
        "meta": to_plain(meta),
        "created": time.time(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    store.write_text(f"{entry_dir(stage, key)}/{MARKER}", json.dumps(marker, sort_keys=True))
    log.info("committed %s %s in %.2fs", stage, key, marker["seconds"])
    return CacheEntry(stage, key, prefix, marker["meta"], hit=False)
