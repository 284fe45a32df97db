"""``python -m btsys +experiment=NAME [stage=ingest|bars|backtest|all] [key=value ...]``."""

from __future__ import annotations

import logging
import math

import hydra
from omegaconf import DictConfig

from btsys.config import conf_dir  # importing btsys.config registers the schemas


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Returns the sweep objective (a finite float, as Optuna needs)."""
    from btsys.pipeline import run

    logging.getLogger("py4j").setLevel(logging.WARNING)
    metrics = run(cfg)
    shown = {
        k: round(float(metrics[k]), 4)
        for k in ("total_return", "sharpe", "max_drawdown", "n_trades")
        if isinstance(metrics.get(k), (int, float))
    }
    if shown:
        logging.getLogger("btsys").info(
            "%s: %s; MLflow run %s in %s (make ui to browse)",
            cfg.name,
            shown,
            metrics.get("mlflow_run_id") or metrics.get("skipped_run_id"),
            cfg.mlflow.tracking_uri,
        )
    value = metrics.get(str(cfg.sweep.objective), float("nan"))
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return 1e9 if str(cfg.sweep.direction) == "minimize" else -1e9  # undefined objective: worst


if __name__ == "__main__":
    main()
