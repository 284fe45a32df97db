"""The bars stage: ``bars.*`` (the selected kind's settings) + the ingest listing (+ the days the
quality policy excluded) -> key -> :mod:`btsys.bars` (one Spark task per symbol over its lake
files) -> ``cache/bars/<key>/<attempt>/symbol=<S>/bars.parquet``.

The written tables do not depend on ``bars.keep_partial`` (a trailing unfinished bar is written
flagged ``is_partial``; readers drop it unless asked), so the key leaves it out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from typing import Any, Iterable, Mapping, Optional

from btsys.bars import BarsInputError, BarSpec
from btsys.bars import lake as bars_lake
from btsys.stages import ingest
from btsys.stages.cache import CacheEntry, cached, stage_key
from btsys.stages.context import RunContext
from btsys.storage import Storage

log = logging.getLogger("btsys.stages.bars")

NAME = "bars"
VERSION = 3  # 3: bar tables carry first_trade_id / last_trade_id


def section(cfg: Any) -> dict:
    """The validated settings that determine the bars (:meth:`btsys.bars.BarSpec.determining`)."""
    return BarSpec.from_config(cfg.bars).determining()


def input_key(ingest_entry: CacheEntry, excluded: Optional[dict] = None) -> str:
    """What the bars hash as their input: what the ingest listed (+ the days the quality policy
    excluded, when there are any)."""
    k = ingest.input_key(ingest_entry)
    if excluded:
        k += ":excluded:" + hashlib.sha256(json.dumps(excluded, sort_keys=True).encode()).hexdigest()[:16]
    return k


def key(cfg: Any, ingest_entry: CacheEntry, excluded: Optional[dict] = None) -> str:
    return stage_key(NAME, section(cfg), input_key(ingest_entry, excluded), version=VERSION)


def run(ctx: RunContext, ingest_entry: CacheEntry, excluded: Optional[dict] = None) -> CacheEntry:
    """The cached bars of every symbol of the ingest listing."""
    return cached(
        ctx.store,
        NAME,
        key(ctx.cfg, ingest_entry, excluded),
        lambda prefix: build(ctx.spark, ctx.cfg.bars, ctx.store, ingest_entry, prefix, excluded=excluded),
        force=ctx.force,
    )


def build(
    spark,
    bars_cfg: Any,
    store: Storage,
    ingest_entry: Any,
    out_prefix: str,
    excluded: Optional[Mapping[str, Iterable[str]]] = None,
) -> dict:
    """The bars Spark job: one task per symbol (:func:`btsys.bars.lake.symbol_task`) over the lake
    files the ingest entry lists.

    Parameters
    ----------
    spark : SparkSession
    bars_cfg : the ``bars`` config node (or a mapping, or a :class:`~btsys.bars.BarSpec`)
    store : Storage holding the lake; bars are written to it too
    ingest_entry : CacheEntry (or its ``meta`` dict) whose ``meta["partitions"]`` lists
        ``{"market", "symbol", "date", "path", "rows"}``
    out_prefix : storage prefix to write under (``{out_prefix}/symbol={SYM}/bars.parquet``)
    excluded : ``{symbol: [date, ...]}`` days left out, bars restarting after each
        (:mod:`btsys.bars.lake`)

    Returns
    -------
    dict
        ``{"kind": ..., "symbols": {SYM: {"path", "n_bars", "partial", "n_ticks", "n_files", ...}}}``
    """
    spec = bars_cfg if isinstance(bars_cfg, BarSpec) else BarSpec.from_config(bars_cfg)
    meta_in = ingest_entry if isinstance(ingest_entry, Mapping) else getattr(ingest_entry, "meta", None)
    if not isinstance(meta_in, Mapping) or "partitions" not in meta_in:
        raise BarsInputError("ingest entry has no meta['partitions'] listing the tick lake files")
    groups = bars_lake.plan_symbols(list(meta_in["partitions"]))
    excluded = excluded or {}
    segs = {sym: bars_lake.split_segments(parts, excluded.get(sym)) for sym, parts in groups.items()}
    # biggest symbols first, so they do not start last
    items = sorted(segs.items(), key=lambda kv: -sum(int(p.get("rows") or 0) for s in kv[1] for p in s))
    out: dict = {"kind": spec.kind, "symbols": {}}
    if not items:
        return out
    # cores per concurrently running task: all of them when one symbol runs alone (the decode
    # of its files is multi-threaded), one each when there are at least as many symbols as cores
    par = max(1, int(spark.sparkContext.defaultParallelism))
    fn = functools.partial(
        bars_lake.symbol_task,
        spec_dict=spec.to_dict(),
        store_dict=store.to_dict(),
        out_prefix=out_prefix,
        threads=max(1, par // min(len(items), par)),
    )
    t0 = time.perf_counter()
    results = spark.sparkContext.parallelize(items, len(items)).map(fn).collect()
    for r in sorted(results, key=lambda r: r["symbol"]):
        out["symbols"][r.pop("symbol")] = r
    log.info(
        "bars: %d symbols, %d ticks in %.2fs",
        len(results),
        sum(r["n_ticks"] for r in results),
        time.perf_counter() - t0,
    )
    return out
