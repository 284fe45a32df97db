"""Stage graph and content-addressed cache.

A stage's output lives under ``cache/<stage>/<key>/`` where ``key`` hashes the config section that
determines it, the stage's code version and its input's key. Publishing is crash- and race-safe
on local disk and S3 alike:

* a run writes its output under a fresh attempt prefix ``cache/<stage>/<key>/<attempt>/``;
* only then does it write the marker ``cache/<stage>/<key>/_COMMITTED`` (atomic) naming the attempt.

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

from btsys.config import to_plain as _plain
from btsys.failpoint import failpoint
from btsys.storage import Storage

log = logging.getLogger("btsys.pipeline")

#: Bump a stage's version when its code changes what it writes; old cache entries are then ignored.
STAGE_VERSIONS = {"mirror": 1, "ingest": 3, "quality": 2, "bars": 2, "features": 1}

#: Config keys that do not change a stage's output (excluded from its key).
NON_DETERMINING = {
    "mirror": {"quality", "source"},  # a synthetic mirror is generated, not fetched
    "ingest": {
        "source.timeout_s",
        "source.retries",
        "source.backoff_s",
        "source.file_deadline_s",
        "archive_raw",
        "quality",
    },
    "bars": {"keep_partial"},
}

MARKER = "_COMMITTED"


def _drop(d: dict, dotted: set[str], prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        full = f"{prefix}{k}"
        if full in dotted:
            continue
        out[k] = _drop(v, dotted, full + ".") if isinstance(v, dict) else v
    return out


def stage_key(stage: str, section: Any, input_key: Optional[str] = None) -> str:
    """Content address of a stage output: sha256 of (stage, code version, config, input key)."""
    cfg = _drop(_plain(section) or {}, NON_DETERMINING.get(stage, set()))
    payload = json.dumps(
        {"stage": stage, "version": STAGE_VERSIONS.get(stage, 1), "config": cfg, "input": input_key},
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
        "meta": _plain(meta),
        "created": time.time(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    store.write_text(f"{entry_dir(stage, key)}/{MARKER}", json.dumps(marker, sort_keys=True))
    log.info("committed %s %s in %.2fs", stage, key, marker["seconds"])
    return CacheEntry(stage, key, prefix, marker["meta"], hit=False)


# --------------------------------------------------------------------------- the stage graph
class RunContext:
    """What a stage needs: the config, the store, and a Spark session created only on demand."""

    def __init__(self, cfg: Any):
        from btsys.storage import make_storage
        from btsys.universe.symbols import resolve_symbols

        resolve_symbols(cfg)  # data.symbols entries file:PATH -> the file's symbols
        self.cfg = cfg
        self.store = make_storage(cfg.storage)
        self._spark = None

    @property
    def spark(self):
        if self._spark is None:
            from btsys.spark import get_spark

            self._spark = get_spark(self.cfg.spark)
        return self._spark


def ingest_key(cfg: Any) -> str:
    """The ingest stage's key: the ``data`` section; for synthetic data the mirror's own key (from
    the synthetic settings) replaces the source URL."""
    section = _plain(cfg.data)
    if section.get("name") == "synthetic":
        section["source"] = {"base_url": "synthetic:" + stage_key("mirror", _plain(cfg.data))}
    return stage_key("ingest", section)


def stage_keys(cfg: Any, store: Optional[Storage] = None) -> dict:
    """Keys of the cached stages a config reads (``ingest``, ``bars``, ``features``), computed
    without running anything: what :func:`run` returns as ``*_key``.

    The bars key depends on what the cached ingest listed (its ``lake_version``) and on the days
    the quality policy excluded, so both are read from the cached ingest and quality entries of
    ``store`` (default: ``cfg.storage``); ``bars`` and ``features`` are None while those are not
    cached.
    """
    from btsys.data.quality import excluded_days

    if store is None:
        from btsys.storage import make_storage

        store = make_storage(cfg.storage)
    keys: dict = {"ingest": ingest_key(cfg), "bars": None, "features": None}
    ingest = lookup(store, "ingest", keys["ingest"])
    quality = lookup(store, "quality", quality_key(cfg, ingest)) if ingest is not None else None
    if quality is not None:
        excluded = excluded_days(policy_table(store, cfg, quality))
        keys["bars"] = stage_key("bars", cfg.bars, bars_input_key(ingest, excluded))
        keys["features"] = stage_key("features", cfg.features, keys["bars"])
    return keys


def ingest_stage(ctx: RunContext) -> CacheEntry:
    """Tick lake partitions for the configured data (Spark job; the lake is shared, the listing cached).

    A cached listing is used only while every day it lists still has the version it recorded
    (else the ingest runs again: its unchanged files are reused). A listing with missing files is
    not trusted for good: each run asks the source again for those files only (a ``HEAD`` each,
    on the driver; Binance publishes days and months late) and, when some appeared, ingests them
    and commits a new listing.
    """
    from btsys.data.ingest import published_since, run_ingest
    from btsys.data.lake import listing_is_current
    from btsys.data.synthetic import ensure_mirror

    data = ctx.cfg.data
    key = ingest_key(ctx.cfg)

    def base_url() -> str:
        return ensure_mirror(data, ctx.store) if data.name == "synthetic" else data.source.base_url

    def build(prefix: str, trust: Optional[dict] = None, force: bool = False) -> dict:
        return run_ingest(ctx.spark, data, ctx.store, base_url(), prefix, force=force, trust=trust)

    force = bool(ctx.cfg.force)
    hit = None if force else lookup(ctx.store, "ingest", key)
    if hit is None:
        return cached(ctx.store, "ingest", key, lambda p: build(p, force=force), force=force)
    if not listing_is_current(ctx.store, hit.meta):
        log.warning(
            "ingest %s: lake days changed since this listing; ingesting again (unchanged files are reused)",
            key,
        )
        return cached(ctx.store, "ingest", key, build, force=True)
    missing = hit.meta.get("summary", {}).get("missing_files") or []
    appeared = published_since(hit.meta, data, base_url(), ctx.store) if missing else []
    if not appeared:
        if missing:
            log.info(
                "ingest %s: %d files still missing (asked again): %s",
                key,
                len(missing),
                ", ".join(missing[:5]),
            )
        log.info("cache hit: ingest %s (%s)", key, ctx.store.uri(hit.prefix))
        return hit
    log.info("ingest %s: %d missing files are published now: %s", key, len(appeared), ", ".join(appeared[:5]))
    return cached(ctx.store, "ingest", key, lambda p: build(p, trust=hit.meta), force=True)


def ingest_input_key(ingest: CacheEntry) -> str:
    """What the stages after the ingest hash as their input: the listing key and the versions of
    the lake days it lists, so a day that changed under a listing gives new bars."""
    return f"{ingest.key}@{ingest.meta.get('lake_version', '')}"


def quality_key(cfg: Any, ingest: CacheEntry) -> str:
    """The quality stage's key: ``data.quality.gap_s`` and what the ingest listed."""
    from btsys.data.quality import policy_from_config

    gap_s = policy_from_config(cfg.data.get("quality"))["gap_s"]
    return stage_key("quality", {"gap_s": gap_s}, ingest_input_key(ingest))


def quality_stage(ctx: RunContext, ingest: CacheEntry) -> CacheEntry:
    """Data quality per symbol-day from the lake and the manifests (Spark job; btsys.data.quality),
    cached by ``data.quality.gap_s`` + what the ingest listed. Also the daily sums the universe
    ranks on."""
    from btsys.data.quality import policy_from_config, run_quality

    gap_s = policy_from_config(ctx.cfg.data.get("quality"))["gap_s"]
    symbols = list(ctx.cfg.data.symbols)
    return cached(
        ctx.store,
        "quality",
        quality_key(ctx.cfg, ingest),
        lambda prefix: run_quality(ctx.spark, ctx.store, ingest.meta, gap_s, prefix, symbols=symbols),
        force=ctx.cfg.force,
    )


def policy_table(store: Storage, cfg: Any, quality: CacheEntry):
    """The cached quality table with the config's policy applied (``excluded``, ``exclude_reason``)."""
    from btsys.data.quality import apply_policy, policy_from_config

    table = store.read_parquet(quality.meta["path"]).to_pandas()
    return apply_policy(table, policy_from_config(cfg.data.get("quality")))


def quality_table(ctx: RunContext, quality: CacheEntry):
    """The quality table with the run's policy applied (:func:`policy_table`); the excluded days
    are logged with their reason."""
    table = policy_table(ctx.store, ctx.cfg, quality)
    for sym, g in table[table["excluded"]].groupby("symbol"):
        days = "; ".join(f"{d} ({why})" for d, why in zip(g["date"], g["exclude_reason"], strict=True))
        log.warning("quality: %s: %d days excluded, bars restart after each: %s", sym, len(g), days)
    return table


def bars_input_key(ingest: CacheEntry, excluded: Optional[dict] = None) -> str:
    """What the bars hash as their input: what the ingest listed (+ the days the quality policy
    excluded, when there are any)."""
    key = ingest_input_key(ingest)
    if excluded:
        key += ":excluded:" + hashlib.sha256(json.dumps(excluded, sort_keys=True).encode()).hexdigest()[:16]
    return key


def bars_stage(ctx: RunContext, ingest: CacheEntry, excluded: Optional[dict] = None) -> CacheEntry:
    """Bars per symbol from the tick lake (Spark job), cached by bars config + what the ingest
    listed (+ the days the quality policy excluded, when there are any)."""
    from btsys.bars.job import run_bars

    key = stage_key("bars", ctx.cfg.bars, bars_input_key(ingest, excluded))
    return cached(
        ctx.store,
        "bars",
        key,
        lambda prefix: run_bars(ctx.spark, ctx.cfg.bars, ctx.store, ingest, prefix, excluded=excluded),
        force=ctx.cfg.force,
    )


def features_stage(ctx: RunContext, bars: CacheEntry) -> CacheEntry:
    """Feature frame per symbol (numpy/numba on the driver), cached by features config + bars key."""
    from btsys.features import compute_features_stage

    key = stage_key("features", ctx.cfg.features, bars.key)
    return cached(
        ctx.store,
        "features",
        key,
        lambda prefix: compute_features_stage(ctx.cfg.features, ctx.store, bars, prefix),
        force=ctx.cfg.force,
    )


def check_universe_and_quality(cfg: Any) -> None:
    """Fail fast (before any Spark job) on bad ``universe`` or ``data.quality`` settings."""
    from btsys.data.quality import policy_from_config
    from btsys.universe.membership import UniverseSpec

    policy_from_config(cfg.data.get("quality"))
    UniverseSpec.from_config(cfg.get("universe"))


def universe_membership(ctx: RunContext, qtable):
    """The run's universe membership (``None`` for ``universe=static``) from the quality table's
    daily sums; ranked on the driver (btsys.universe.membership)."""
    from btsys.universe.membership import membership_from_config

    m = membership_from_config(ctx.cfg.get("universe"), qtable[qtable["rows"] > 0], ctx.cfg.data)
    if m is not None:
        t = m.turnover()
        log.info(
            "universe %s: %d rebalances, %.1f members on average, turnover %.3f",
            m.spec.kind,
            len(t),
            t["n_members"].mean(),
            m.metrics()["universe_turnover"],
        )
    return m


def save_results(store: Storage, config_hash: str, result: Any) -> str:
    """Write a backtest's equity curve, orders, trades and metrics under ``results/<config hash>/``."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    prefix = f"results/{config_hash}"
    equity = pd.DataFrame({"ts": result.ts, "equity": result.equity, "cash": result.cash})
    pos = np.asarray(result.position)
    if pos.ndim == 1:
        equity["position"] = pos
    else:  # portfolio: one position column per symbol
        for j, sym in enumerate(result.symbols or range(pos.shape[1])):
            equity[f"position.{sym}"] = pos[:, j]
    store.write_parquet(pa.Table.from_pandas(equity, preserve_index=False), f"{prefix}/equity.parquet")
    store.write_parquet(
        pa.Table.from_pandas(pd.DataFrame(result.orders), preserve_index=False), f"{prefix}/orders.parquet"
    )
    store.write_parquet(pa.Table.from_pandas(result.trades, preserve_index=False), f"{prefix}/trades.parquet")
    store.write_text(
        f"{prefix}/metrics.json",
        json.dumps(_plain(dict(result.metrics)), sort_keys=True, default=float, indent=1),
    )
    for name, data in (getattr(result, "extra_artifacts", None) or {}).items():
        store.write_bytes(f"{prefix}/{name}", data)  # quality/ and universe/ tables
    return store.uri(prefix)


def _log_models(cfg: Any, run_id: str, model_infos: dict) -> None:
    """Add an ML strategy's fitted models and importances to its (already logged) run: ``model``
    for one symbol, ``model_<SYMBOL>`` (metrics prefixed ``<SYMBOL>.``) for several."""
    import mlflow

    from btsys.signals.ml import log_model_info

    mlflow.set_tracking_uri(str(cfg.mlflow.tracking_uri))
    with mlflow.start_run(run_id=run_id):
        for sym, info in sorted(model_infos.items()):
            one = len(model_infos) == 1
            log_model_info(
                info, artifact_name="model" if one else f"model_{sym}", prefix="" if one else f"{sym}."
            )


def run(cfg: Any) -> dict:
    """Run the pipeline up to ``cfg.stage``; returns the run's metrics (and the stage keys).

    ``stage=backtest`` stops before MLflow: the results are written to the store only.

    A trial whose config hash is already logged as a finished MLflow run is skipped (its logged
    metrics are returned) unless ``force=true``. ``sweep.mode=kernel|spark`` evaluates the whole
    ``sweep.grid`` in this one run (see :mod:`btsys.backtest.grid`).
    """
    from btsys.backtest.validate import validate_config
    from btsys.report import mlflow_log
    from btsys.universe.symbols import resolve_symbols

    resolve_symbols(cfg)  # before the config hash: a symbols file's content, not its path, counts
    validate_config(cfg)  # before Spark or numba starts: messages name the key
    stage = str(getattr(cfg.stage, "value", cfg.stage))
    mode = str(getattr(cfg.sweep.mode, "value", cfg.sweep.mode))
    check_universe_and_quality(cfg)
    if stage == "all":
        mlflow_log.check_tracking(cfg)  # an unusable tracking store fails now, not after the compute
    if stage == "all" and mode == "hydra" and not cfg.force:
        rid = mlflow_log.find_logged_run(cfg)
        if rid is not None:
            return {"skipped_run_id": rid, **mlflow_log.logged_metrics(cfg, rid)}
    ctx = RunContext(cfg)
    out: dict = {}
    ingest = ingest_stage(ctx)
    out["ingest_key"] = ingest.key
    quality = quality_stage(ctx, ingest)
    out["quality_key"] = quality.key
    if stage == "ingest":
        return out
    qtable = quality_table(ctx, quality)
    if stage == "quality":
        from btsys.data.quality import format_summary, summarize

        print(format_summary(qtable), flush=True)
        out["quality"] = ctx.store.uri(quality.meta["path"])
        out.update({f"quality_{k}": v for k, v in summarize(qtable).items()})
        return out
    from btsys.data.quality import excluded_days

    bars = bars_stage(ctx, ingest, excluded_days(qtable))
    out["bars_key"] = bars.key
    if stage == "bars":
        return out
    feats = features_stage(ctx, bars)
    out["features_key"] = feats.key
    keys = {"ingest": ingest.key, "quality": quality.key, "bars": bars.key, "features": feats.key}
    membership = universe_membership(ctx, qtable)
    universe = membership.wide() if membership is not None else None
    if mode in ("kernel", "spark"):
        from btsys.backtest.grid import run_grid

        spark = ctx.spark if mode == "spark" else None
        grid = run_grid(cfg, ctx.store, feats, ingest, spark=spark, universe=universe)
        rid = mlflow_log.log_sweep_table(
            cfg,
            grid.table,
            grid.param_cols,
            grid.objective,
            grid.top_results,
            returns=grid.returns,
            keys=keys,
        )
        out.update(grid.best_metrics)
        out["n_combinations"] = len(grid.table)
        out["mlflow_run_id"] = rid
        return out
    from btsys.backtest.run import run_backtest_stage

    result = run_backtest_stage(cfg, ctx.store, feats, ingest, universe=universe)
    from btsys.report.universe import attach_run_reports

    attach_run_reports(result, qtable, membership, charts=stage == "all" and bool(cfg.mlflow.charts))
    out.update(result.metrics)
    out.update(result.extra_metrics)
    out["results"] = save_results(ctx.store, mlflow_log.config_hash(cfg), result)
    if stage == "backtest":  # stop before the report stage: results in the store only
        return out
    rid = mlflow_log.log_run(cfg, result, keys=keys)
    if rid is not None and result.model_infos:
        _log_models(cfg, rid, result.model_infos)
    out["mlflow_run_id"] = rid
    return out
