"""The stage graph: which stages a run executes, in which order, and where it stops (``stage=``).

::

    ingest -> quality -> [universe] -> bars -> features -> (signals -> backtest | sweep) -> report

Each stage is one module of :mod:`btsys.stages` in one pattern (config section -> key -> the pure
package -> cache entry); this module only wires them. ``stage=ingest`` stops after the ingest and
quality stages, ``stage=quality`` prints the quality summary, ``stage=bars`` stops after the bars,
``stage=backtest`` writes the results to the store without MLflow, ``stage=all`` (default) logs to
MLflow.
"""

from __future__ import annotations

from typing import Any, Optional

from btsys.backtest.validate import validate_config
from btsys.data.quality import excluded_days, format_summary, summarize
from btsys.stages import backtest, bars, features, ingest, quality, report, sweep, universe
from btsys.stages.cache import lookup
from btsys.stages.context import RunContext
from btsys.storage import Storage, make_storage
from btsys.universe.symbols import resolve_symbols


def stage_keys(cfg: Any, store: Optional[Storage] = None) -> dict:
    """Keys of the cached stages a config reads (``ingest``, ``bars``, ``features``), computed
    without running anything: what :func:`run` returns as ``*_key``.

    The bars key depends on what the cached ingest listed (its ``lake_version``) and on the days
    the quality policy excluded, so both are read from the cached ingest and quality entries of
    ``store`` (default: ``cfg.storage``); ``bars`` and ``features`` are None while those are not
    cached.
    """
    store = store or make_storage(cfg.storage)
    keys: dict = {"ingest": ingest.key(cfg), "bars": None, "features": None}
    ing = lookup(store, ingest.NAME, keys["ingest"])
    qual = lookup(store, quality.NAME, quality.key(cfg, ing)) if ing is not None else None
    if qual is not None:
        keys["bars"] = bars.key(cfg, ing, excluded_days(quality.policy_table(store, cfg, qual)))
        keys["features"] = features.key(cfg, keys["bars"])
    return keys


def _check(cfg: Any, stage: str) -> None:
    """Everything that can be known before Spark or numba starts; messages name the key."""
    resolve_symbols(cfg)  # before the config hash: a symbols file's content, not its path, counts
    validate_config(cfg)
    quality.check(cfg)
    universe.check(cfg)
    if stage == "all":
        report.check(cfg)


def run(cfg: Any) -> dict:
    """Run the stages up to ``cfg.stage``; returns the run's metrics and the stage keys.

    A trial whose config hash is already logged as a finished MLflow run is skipped (its logged
    metrics are returned) unless ``force=true``. ``sweep.mode=kernel|spark`` evaluates the whole
    ``sweep.grid`` in this one run (:mod:`btsys.stages.sweep`).
    """
    stage = str(getattr(cfg.stage, "value", cfg.stage))
    mode = str(getattr(cfg.sweep.mode, "value", cfg.sweep.mode))
    _check(cfg, stage)
    if stage == "all" and mode == "hydra" and not cfg.force:
        done = report.logged(cfg)
        if done is not None:
            return done
    ctx = RunContext(cfg)
    ing = ingest.run(ctx)
    qual = quality.run(ctx, ing)
    out: dict = {"ingest_key": ing.key, "quality_key": qual.key}
    if stage == "ingest":
        return out
    qtable = quality.table(ctx, qual)
    if stage == "quality":
        print(format_summary(qtable), flush=True)
        out["quality"] = ctx.store.uri(qual.meta["path"])
        out.update({f"quality_{k}": v for k, v in summarize(qtable).items()})
        return out
    bars_entry = bars.run(ctx, ing, excluded_days(qtable))
    out["bars_key"] = bars_entry.key
    if stage == "bars":
        return out
    feats = features.run(ctx, bars_entry)
    out["features_key"] = feats.key
    keys = {"ingest": ing.key, "quality": qual.key, "bars": bars_entry.key, "features": feats.key}
    membership = universe.run(ctx, qtable)
    members = membership.wide() if membership is not None else None
    if mode in ("kernel", "spark"):
        grid = sweep.run(
            cfg, ctx.store, feats, ing, spark=ctx.spark if mode == "spark" else None, universe=members
        )
        out.update(grid.best_metrics)
        out["n_combinations"] = len(grid.table)
        out["mlflow_run_id"] = report.run_sweep(cfg, grid, keys)
        return out
    result = backtest.run(cfg, ctx.store, feats, ing, universe=members)
    report.attach(result, qtable, membership, cfg, charts=stage == "all")
    out.update(result.metrics)
    out.update(result.extra_metrics)
    out["results"] = backtest.save_results(ctx.store, report.key(cfg), result)
    if stage == "backtest":  # stop before the report stage: results in the store only
        return out
    out["mlflow_run_id"] = report.run(cfg, result, keys)
    return out
