"""An ML strategy's fitted model and diagnostics in MLflow (``Signals.model_info`` of
:mod:`btsys.signals.ml`): the model, its feature importances, the walk-forward and purged-CV scores."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

#: skops refuses tree node storage unless trusted; these are the types of the models btsys fits
#: itself (never of a file read from elsewhere)
_TRUSTED_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


def model_metrics(model_info: dict, prefix: str = "") -> dict[str, float]:
    """The run-level metrics of a model info: ``ml_oos_*``, the mean ``ml_cv_*`` over the purged
    CV folds, ``importance.<feature>``; each name after ``prefix``."""
    metrics = {
        f"{prefix}ml_oos_{k}": float(v)
        for k, v in (model_info.get("oos") or {}).items()
        if isinstance(v, (int, float)) and math.isfinite(v)
    }
    cv = model_info.get("cv_scores") or []
    for key in ("accuracy", "auc", "log_loss"):
        vals = [s[key] for s in cv if key in s]
        if vals:
            metrics[f"{prefix}ml_cv_{key}"] = float(np.mean(vals))
    for name, v in (model_info.get("importances") or {}).items():
        metrics[f"{prefix}importance.{name}"] = float(v)
    return metrics


def _log_fold_steps(mlflow, model_info: dict, prefix: str) -> None:
    """Per walk-forward fold: ``ml_fold_oos_*`` metrics with ``step`` = fold."""
    for f in model_info.get("fold_scores") or []:
        for key in ("oos_accuracy", "oos_auc", "oos_log_loss"):
            if key in f:
                mlflow.log_metric(f"{prefix}ml_fold_{key}", float(f[key]), step=int(f["fold"]))


def _log_model(mlflow, model_info: dict, artifact_name: str) -> None:
    """The final model with ``mlflow.sklearn.log_model`` (its signature from the input example)."""
    model = model_info.get("model")
    if model is None:
        return
    import mlflow.sklearn
    from mlflow.models import infer_signature

    ex = model_info.get("input_example")
    kw = {}
    if ex is not None:
        kw["signature"] = infer_signature(ex, model.predict_proba(ex.to_numpy()))
    mlflow.sklearn.log_model(model, name=artifact_name, skops_trusted_types=list(_TRUSTED_TYPES), **kw)


def log_model_info(model_info: Optional[dict], artifact_name: str = "model", prefix: str = "") -> None:
    """Log an ML strategy's fitted model and diagnostics to the ACTIVE MLflow run.

    Logs the final model with ``mlflow.sklearn.log_model`` (name ``artifact_name``), the feature
    importances (``ml/feature_importances.json`` and metrics ``importance.<feature>``), the
    walk-forward and purged-CV fold scores (``ml/folds.json``; metrics ``ml_oos_*`` and per-fold
    ``ml_fold_oos_*`` with ``step`` = fold). A ``None`` or model-less info logs what there is.
    ``prefix`` (e.g. ``"BTCUSDT."``) goes before every metric name and ``ml/`` file name, so the
    models of several symbols can share one run.
    """
    import mlflow

    if model_info is None:
        return
    if mlflow.active_run() is None:
        raise RuntimeError("log_model_info needs an active MLflow run (call it inside mlflow.start_run())")
    items = list(model_metrics(model_info, prefix).items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 metrics per call
        mlflow.log_metrics(dict(items[i : i + 100]))
    _log_fold_steps(mlflow, model_info, prefix)
    mlflow.log_dict(model_info.get("importances") or {}, f"ml/{prefix}feature_importances.json")
    mlflow.log_dict(
        {
            "fold_scores": model_info.get("fold_scores") or [],
            "cv_scores": model_info.get("cv_scores") or [],
            "oos": model_info.get("oos") or {},
            "features": model_info.get("features") or [],
            "params": model_info.get("params") or {},
        },
        f"ml/{prefix}folds.json",
    )
    _log_model(mlflow, model_info, artifact_name)
