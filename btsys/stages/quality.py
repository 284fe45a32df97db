"""The quality stage: ``data.quality.gap_s`` + the ingest listing -> key -> :mod:`btsys.data.quality`
(Spark tasks over the symbol-day files) -> ``cache/quality/<key>/<attempt>/quality.parquet``.

The table is cached by what determines it (``gap_s`` and the listing); the policy
(``data.quality.min_coverage``, ``max_gap_s``) is applied when the table is read
(:func:`policy_table`), so changing the policy recomputes nothing. The table also holds the daily
sums the universe ranks on.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Optional

import pandas as pd
import pyarrow as pa

from btsys.data import quality
from btsys.stages import ingest
from btsys.stages.cache import CacheEntry, cached, stage_key
from btsys.stages.context import RunContext
from btsys.storage import Storage

log = logging.getLogger("btsys.stages.quality")

NAME = "quality"
VERSION = 2


def section(cfg: Any) -> dict:
    """``{"gap_s"}``: the only setting the table depends on (the policy is applied on read)."""
    return {"gap_s": quality.policy_from_config(cfg.data.get("quality"))["gap_s"]}


def key(cfg: Any, ingest_entry: CacheEntry) -> str:
    return stage_key(NAME, section(cfg), ingest.input_key(ingest_entry), version=VERSION)


def check(cfg: Any) -> None:
    """Fail fast (before any Spark job) on bad ``data.quality`` settings."""
    quality.policy_from_config(cfg.data.get("quality"))


def run(ctx: RunContext, ingest_entry: CacheEntry) -> CacheEntry:
    """The cached quality table of what the ingest listed."""
    gap_s = section(ctx.cfg)["gap_s"]
    symbols = list(ctx.cfg.data.symbols)
    return cached(
        ctx.store,
        NAME,
        key(ctx.cfg, ingest_entry),
        lambda prefix: build(ctx.spark, ctx.store, ingest_entry.meta, gap_s, prefix, symbols=symbols),
        force=ctx.force,
    )


def build(
    spark, store: Storage, listing: dict, gap_s: float, out_prefix: str, symbols: Optional[list] = None
) -> dict:
    """The quality Spark job: tasks over the listing's symbol-day files, the table written to
    ``<out_prefix>/quality.parquet``. Returns ``{"path", "summary"}``.

    ``listing`` is the ingest listing (``partitions``, ``files`` manifests, ``start``, ``end``,
    ``symbols``); ``symbols`` overrides the listing's symbols (the day grid's rows).
    """
    t0 = time.perf_counter()
    parts = quality.listing_days(listing)
    rows: list[dict] = []
    if parts:
        par = max(1, int(spark.sparkContext.defaultParallelism))
        n_slices = min(len(parts), par * 2)  # a few tasks per core: stragglers even out, little overhead
        gap_us = int(round(float(gap_s) * 1e6))
        fn = functools.partial(quality.day_rows, store_dict=store.to_dict(), gap_us=gap_us)
        spark.sparkContext.setJobDescription(f"btsys quality: {len(parts)} symbol-days")
        rows = spark.sparkContext.parallelize(parts, n_slices).mapPartitions(fn).collect()
    table = quality.quality_table(rows, listing, store, symbols)
    path = f"{out_prefix.rstrip('/')}/quality.parquet"
    store.write_parquet(pa.Table.from_pandas(table, preserve_index=False), path)
    summary = quality.summarize(table)
    log.info(
        "quality: %d symbol-days (%d missing, %d truncated) from %d files in %.2fs",
        summary["days"],
        summary["missing"],
        summary["truncated"],
        len(parts),
        time.perf_counter() - t0,
    )
    return {"path": path, "summary": summary}


def policy_table(store: Storage, cfg: Any, entry: CacheEntry) -> pd.DataFrame:
    """The cached quality table with the config's policy applied (``excluded``, ``exclude_reason``)."""
    table = store.read_parquet(entry.meta["path"]).to_pandas()
    return quality.apply_policy(table, quality.policy_from_config(cfg.data.get("quality")))


def table(ctx: RunContext, entry: CacheEntry) -> pd.DataFrame:
    """The quality table with the run's policy applied (:func:`policy_table`); the excluded days
    are logged with their reason."""
    t = policy_table(ctx.store, ctx.cfg, entry)
    for sym, g in t[t["excluded"]].groupby("symbol"):
        days = "; ".join(f"{d} ({why})" for d, why in zip(g["date"], g["exclude_reason"], strict=True))
        log.warning("quality: %s: %d days excluded, bars restart after each: %s", sym, len(g), days)
    return t
