"""The ingest stage: ``data.*`` -> key -> :mod:`btsys.data.ingest` (one Spark task per source
file) -> ``cache/ingest/<key>/<attempt>/listing.json``.

The lake itself is shared by every listing (:mod:`btsys.data.lake`); what this stage caches is the
listing of one request (its days with their versions, the manifests, the summary). A cached listing
is used only while every day it lists still has the version it recorded (else the ingest runs
again: its unchanged files are reused). A listing with missing files is not trusted for good: each
run asks the source again for those files only (a ``HEAD`` each, on the driver; Binance publishes
days and months late) and, when some appeared, ingests them and commits a new listing.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Mapping, Optional

from btsys.config import to_plain
from btsys.data import binance as bn
from btsys.data import ingest
from btsys.data.lake import listing_is_current
from btsys.data.progress import IngestProgress
from btsys.data.synthetic import ensure_mirror, mirror_key
from btsys.failpoint import failpoint
from btsys.stages.cache import CacheEntry, cached, drop_keys, lookup, stage_key
from btsys.stages.context import RunContext
from btsys.storage import Storage

log = logging.getLogger("btsys.stages.ingest")

NAME = "ingest"
VERSION = 3  # bump when the code changes what the stage writes: old entries are then ignored
#: ``data`` keys that do not change the listing (how patiently files are fetched, what is kept aside)
NON_DETERMINING = {
    "source.timeout_s",
    "source.retries",
    "source.backoff_s",
    "source.file_deadline_s",
    "archive_raw",
    "quality",
}
PROGRESS_EVERY_S = 10.0  # plain progress lines (logs, CI): at most this often, and only when moved


def section(cfg: Any) -> dict:
    """The ``data`` settings that determine the listing; a synthetic mirror is named by its own
    content key (:func:`btsys.data.synthetic.mirror_key`) instead of a source URL."""
    data = drop_keys(to_plain(cfg.data), NON_DETERMINING)
    if data.get("name") == "synthetic":
        data["source"] = {"base_url": "synthetic:" + mirror_key(cfg.data)}
    return data


def key(cfg: Any) -> str:
    return stage_key(NAME, section(cfg), version=VERSION)


def input_key(entry: CacheEntry) -> str:
    """What the stages after the ingest hash as their input: the listing key and the versions of
    the lake days it lists, so a day that changed under a listing gives new bars."""
    return f"{entry.key}@{entry.meta.get('lake_version', '')}"


def base_url(ctx: RunContext) -> str:
    """The source's base URL; the synthetic mirror is generated (once) under the store first."""
    data = ctx.cfg.data
    return ensure_mirror(data, ctx.store) if data.name == "synthetic" else data.source.base_url


def run(ctx: RunContext) -> CacheEntry:
    """The cached listing of the run's ``data`` request, ingesting what it needs (module docstring)."""
    k = key(ctx.cfg)

    def fresh(trust: Optional[dict] = None, force: bool = False):
        return lambda prefix: build(
            ctx.spark, ctx.cfg.data, ctx.store, base_url(ctx), prefix, force=force, trust=trust
        )

    hit = None if ctx.force else lookup(ctx.store, NAME, k)
    if hit is None:
        return cached(ctx.store, NAME, k, fresh(force=ctx.force), force=ctx.force)
    if not listing_is_current(ctx.store, hit.meta):
        log.warning(
            "ingest %s: lake days changed since this listing; ingesting again (unchanged files are reused)", k
        )
        return cached(ctx.store, NAME, k, fresh(), force=True)
    missing = hit.meta.get("summary", {}).get("missing_files") or []
    appeared = ingest.published_since(hit.meta, ctx.cfg.data, base_url(ctx), ctx.store) if missing else []
    if not appeared:
        if missing:
            log.info(
                "ingest %s: %d files still missing (asked again): %s", k, len(missing), ", ".join(missing[:5])
            )
        log.info("cache hit: ingest %s (%s)", k, ctx.store.uri(hit.prefix))
        return hit
    log.info("ingest %s: %d missing files are published now: %s", k, len(appeared), ", ".join(appeared[:5]))
    return cached(ctx.store, NAME, k, fresh(trust=hit.meta), force=True)


def build(
    spark,
    data_cfg: Any,
    store: Storage,
    base_url: str,
    listing_prefix: str,
    force: bool = False,
    trust: Optional[Mapping[str, Any]] = None,
) -> dict:
    """The ingest Spark job: plan, the files as Spark tasks in two waves, the commit, the listing.

    Parameters
    ----------
    force : re-download and re-parse every file (the lake is rewritten with what they give).
    trust : a previous listing of the same request (:func:`btsys.data.ingest.plan_request`).

    Returns
    -------
    dict
        ``partitions``: ``[{market, dataset, symbol, date, path, rows, version, source, ...}]``
        sorted by (symbol, date); ``funding``: ``[{market, symbol, month, path, rows, file,
        sha256}]``; ``files``: one manifest per source file; ``summary``: counts;
        ``lake_version``: a hash of every partition's version. Also written to
        ``<listing_prefix>/listing.json``.

    Raises
    ------
    ConfigError
        bad ``data`` settings (symbol, market, dates), before anything is fetched.
    IngestError
        every file asked for was missing; some files failed or were quarantined; or
        (``data.require_complete``) files were missing.
    """
    req = ingest.plan_request(data_cfg, store, base_url, force=force, trust=trust)
    try:
        manifests = list(req.trusted.values()) + _run_tasks(
            spark, store, req.first_wave(), req.settings, "files"
        )
        second = req.second_wave(manifests)
        if second:
            log.info("ingest: %d daily files for days the monthly files do not cover", len(second))
        manifests += _run_tasks(spark, store, second, req.settings, "daily files")
        failpoint("ingest.commit.start")
        req.indexes.update(ingest.commit_files(store, manifests, req.staging))
    finally:
        store.delete_prefix(req.staging)
    return ingest.publish_listing(store, req, manifests, listing_prefix)


def _run_tasks(spark, store: Storage, files: list[bn.SourceFile], settings: dict, what: str) -> list[dict]:
    """One Spark task per file (biggest first), with live progress while they run."""
    if not files:
        return []
    files = sorted(files, key=lambda f: (f.period != "monthly", f.symbol, f.first))
    tasks = [sf.to_dict() for sf in files]
    sc = spark.sparkContext
    sc.setJobDescription(f"btsys ingest: {len(tasks)} {what}")
    par = max(1, int(sc.defaultParallelism))  # cores per concurrently running task
    settings = {
        **settings,
        "progress": f"{settings['staging']}/progress/{what.replace(' ', '-')}",
        "threads": max(1, par // min(len(tasks), par)),
    }
    rdd = sc.parallelize(tasks, len(tasks)).mapPartitions(ingest.file_task(store.to_dict(), settings))
    box: dict = {}

    def collect():
        try:
            box["out"] = rdd.collect()
        except BaseException as e:  # re-raised in the driver thread
            box["err"] = e

    progress = IngestProgress(store, settings["progress"], len(tasks), log_every_s=PROGRESS_EVERY_S)
    th = threading.Thread(target=collect, name="btsys-ingest-collect", daemon=True)
    th.start()
    try:
        while th.is_alive():
            th.join(timeout=0.5 if progress.tty else 2.0)
            progress.poll()
    finally:
        progress.close()
    if "err" in box:
        raise box["err"]
    return [json.loads(x) for x in box["out"]]
