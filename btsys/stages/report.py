"""The report stage: ``mlflow.*`` + a backtest (or a sweep table) -> :mod:`btsys.report` -> one
MLflow run: params (the flattened config), metrics, charts, the tearsheet, the fitted models.

Its key is the config hash (:func:`key`): a trial whose hash is already logged as a finished run is
not computed again (:func:`logged`) unless ``force=true``, as a cached stage reuses its entry.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from btsys.report import mlflow_log
from btsys.report.models import log_model_info
from btsys.report.universe import attach_run_reports


def key(cfg: Any) -> str:
    """The config hash: the MLflow tag ``btsys.config_hash`` and the ``results/<hash>/`` folder."""
    return mlflow_log.config_hash(cfg)


def check(cfg: Any) -> None:
    """An unusable tracking store fails now, not after the compute (``mlflow.tracking_uri``)."""
    mlflow_log.check_tracking(cfg)


def logged(cfg: Any) -> Optional[dict]:
    """The metrics of the finished run already logged for this config (with ``skipped_run_id``),
    or None."""
    rid = mlflow_log.find_logged_run(cfg)
    if rid is None:
        return None
    return {"skipped_run_id": rid, **mlflow_log.logged_metrics(cfg, rid)}


def attach(result: Any, qtable, membership, cfg: Any, charts: bool) -> None:
    """Add the quality and universe tables, metrics and charts to a backtest stage result."""
    attach_run_reports(result, qtable, membership, charts=charts and bool(cfg.mlflow.charts))


def run(cfg: Any, result: Any, keys: Mapping[str, str]) -> Optional[str]:
    """Log one backtest (and an ML strategy's fitted models) as an MLflow run; returns its id."""
    rid = mlflow_log.log_run(cfg, result, keys=keys)
    if rid is not None and result.model_infos:
        _log_models(cfg, rid, result.model_infos)
    return rid


def run_sweep(cfg: Any, grid: Any, keys: Mapping[str, str]) -> Optional[str]:
    """Log a kernel or Spark sweep (:class:`btsys.stages.sweep.GridResult`) as ONE run with child
    runs for the top ``sweep.top_k``."""
    return mlflow_log.log_sweep_table(
        cfg, grid.table, grid.param_cols, grid.objective, grid.top_results, returns=grid.returns, keys=keys
    )


def _log_models(cfg: Any, run_id: str, model_infos: dict) -> None:
    """Add an ML strategy's fitted models and importances to its (already logged) run: ``model``
    for one symbol, ``model_<SYMBOL>`` (metrics prefixed ``<SYMBOL>.``) for several."""
    import mlflow

    mlflow.set_tracking_uri(str(cfg.mlflow.tracking_uri))
    with mlflow.start_run(run_id=run_id):
        for sym, info in sorted(model_infos.items()):
            one = len(model_infos) == 1
            log_model_info(
                info, artifact_name="model" if one else f"model_{sym}", prefix="" if one else f"{sym}."
            )
