"""``btsys.load``: the bars, features and backtest of a run, from its config or its MLflow run id.

A notebook should not need to know where the stages keep their outputs::

    run = btsys.load("+experiment=demo")                 # the overrides of `python -m btsys`
    run = btsys.load("2f1c...e9", tracking_uri="sqlite:///mlflow.db")   # a logged run
    run.bars["BTCUSDT"], run.features["BTCUSDT"], run.result.stats(), run.result.plot()

The bars and features are read from the content-addressed cache (nothing is computed: a stage that
is not cached is an error naming the command that builds it). The backtest is run again on the
cached features with the run's config, which is exact and takes milliseconds; for a logged run
the recomputed metrics are compared with the logged ones and a difference is reported.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

log = logging.getLogger("btsys.load")

__all__ = ["LoadedRun", "load"]

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, repr=False)
class LoadedRun:
    """What :func:`load` returns.

    Attributes
    ----------
    config : the run's composed config (OmegaConf).
    bars, features : symbol -> DataFrame (bar-table columns; features add their columns), the
        trailing partial bar dropped unless ``bars.keep_partial``.
    result : the backtest (:class:`~btsys.backtest.result.BacktestResult`) of the config.
    keys : the stage cache keys (``ingest``, ``bars``, ``features``).
    run_id, logged_metrics : the MLflow run and its metrics, when loaded from a run id.
    """

    config: Any
    bars: dict
    features: dict
    result: Any
    keys: dict
    run_id: Optional[str] = None
    logged_metrics: dict = field(default_factory=dict)

    @property
    def symbols(self) -> list:
        return sorted(self.features)

    def __repr__(self) -> str:
        n = ", ".join(f"{s} {len(f):,} bars" for s, f in sorted(self.features.items()))
        src = f"run {self.run_id}" if self.run_id else f"features {self.keys.get('features')}"
        return f"<LoadedRun {self.config.get('name', '')!s} ({src}): {n}; result {self.result!r}>"


def _compose(overrides: Sequence[str]):
    from btsys.config import compose

    return compose(list(overrides))


def _logged_config(run_id: str, overrides: Sequence[str], tracking_uri: str):
    """(config, cache-key tags, metrics) of a logged trial run; ``overrides`` (``key=value``)
    replace values of the logged config (e.g. ``storage.root`` when loading from elsewhere)."""
    import tempfile

    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    kind = run.data.tags.get("btsys.run_kind", "")
    if kind != "trial":
        raise ValueError(
            f"load: run {run_id} is a {kind or 'non-btsys'} run, not a backtest trial; "
            "load one of its child runs"
        )
    with tempfile.TemporaryDirectory(prefix="btsys-load-") as d:
        from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

        bar = os.environ.get(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
        os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"  # one small file: no bar
        try:
            cfg = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", d))
        finally:
            if bar is None:
                os.environ.pop(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
            else:
                os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = bar
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    keys = {k: run.data.tags.get(f"btsys.{k}_key") for k in ("ingest", "bars", "features")}
    return cfg, keys, dict(run.data.metrics)


def _entries(cfg: Any, keys: dict):
    """The committed cache entries of the stages, or an error naming what to run first."""
    from btsys.stages.cache import lookup
    from btsys.storage import make_storage

    store = make_storage(cfg.storage)
    entries = {}
    for stage in ("ingest", "bars", "features"):
        e = lookup(store, stage, keys[stage]) if keys[stage] else None
        if e is None:
            raise LookupError(
                f"load: no cached {stage} for this config under {store.uri('cache/' + stage)} "
                f"(key {keys[stage] or 'unknown: its inputs are not cached'}); run "
                "`python -m btsys <the same overrides> stage=backtest` first, or give "
                "storage.root=<the run's store>"
            )
        entries[stage] = e
    return store, entries


def _universe(cfg: Any, store, ingest):
    """The run's universe membership table (``Membership.wide()``; None for ``universe=static``),
    ranked from the cached quality table as the pipeline does (nothing is computed by Spark)."""
    from btsys.stages import quality as quality_stage
    from btsys.stages.cache import lookup
    from btsys.universe import UniverseSpec
    from btsys.universe.membership import membership_from_config

    spec = cfg.get("universe")
    if not UniverseSpec.from_config(spec).dynamic:
        return None
    key = quality_stage.key(cfg, ingest)
    quality = lookup(store, "quality", key)
    if quality is None:
        raise LookupError(
            f"load: no cached quality table for this config under {store.uri('cache/quality')} (key "
            f"{key}): the universe is ranked on it; run `python -m btsys <the same overrides> "
            "stage=backtest` first, or give storage.root=<the run's store>"
        )
    table = quality_stage.policy_table(store, cfg, quality)
    m = membership_from_config(spec, table[table["rows"] > 0], cfg.data)
    return m.wide() if m is not None else None


def _compare(logged: dict, metrics: dict, run_id: str) -> None:
    off = []
    for k, v in logged.items():
        w = metrics.get(k)
        if w is None or not (math.isfinite(v) and math.isfinite(w)):
            continue
        if abs(v - w) > 1e-9 * max(1.0, abs(v)):
            off.append(f"{k} (logged {v:.6g}, now {w:.6g})")
    if off:
        warnings.warn(
            f"load: the backtest recomputed for run {run_id} differs from the logged run on "
            f"{', '.join(off[:5])}: the code changed since the run?",
            stacklevel=3,
        )


def load(
    run_or_config: Union[str, Sequence[str], Any],
    *overrides: str,
    tracking_uri: str = "sqlite:///mlflow.db",
) -> LoadedRun:
    """The bars, features and backtest of a cached or logged run.

    Parameters
    ----------
    run_or_config : one of
        * an MLflow run id (32 hex digits) of a backtest trial: its logged ``config.yaml`` and
          cache keys are used (``tracking_uri`` names the store);
        * the overrides of ``python -m btsys`` as one string (``"+experiment=demo strategy.fast=5"``)
          or a list;
        * a composed config (``btsys.config.compose([...])``).
    overrides : more ``key=value`` overrides (a run id: replacing values of its logged config,
        e.g. ``storage.root=/path/to/store`` when the run's store was a relative path).

    Raises
    ------
    LookupError : a stage of the config is not in the cache (nothing is computed here).
    """
    from omegaconf import DictConfig

    from btsys.bars import load_bars
    from btsys.pipeline import stage_keys
    from btsys.stages import backtest

    run_id, logged = None, {}
    if isinstance(run_or_config, str) and _RUN_ID.match(run_or_config.strip()):
        run_id = run_or_config.strip()
        cfg, keys, logged = _logged_config(run_id, overrides, tracking_uri)
        if not all(keys.values()):
            keys = stage_keys(cfg)
    else:
        if isinstance(run_or_config, DictConfig):
            cfg = run_or_config
        else:
            given = run_or_config.split() if isinstance(run_or_config, str) else list(run_or_config)
            cfg = _compose([*given, *overrides])
        keys = stage_keys(cfg)
    store, entries = _entries(cfg, keys)
    keep = bool(cfg.bars.get("keep_partial", False))
    features = backtest.load_frames(store, entries["features"], keep)
    bars = {s: load_bars(store, entries["bars"], s, keep_partial=keep) for s in features}
    universe = _universe(cfg, store, entries["ingest"])
    result = backtest.run(cfg, store, entries["features"], entries["ingest"], universe=universe).result
    if logged:
        _compare(logged, result.metrics, run_id)
    log.info("loaded %s: %s", run_id or f"features {keys['features']}", ", ".join(sorted(features)))
    return LoadedRun(cfg, bars, features, result, keys, run_id, logged)
