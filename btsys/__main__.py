"""``python -m btsys +experiment=NAME [stage=ingest|bars|backtest|all] [key=value ...]``."""
from __future__ import annotations

import logging
import math
import os

import hydra
from omegaconf import DictConfig

import btsys.config  # noqa: F401  (registers the schemas)

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
if not os.path.isdir(CONF_DIR):  # shipped zip / installed wheel: configs inside the package
    CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Returns the sweep objective (a finite float, as Optuna needs)."""
    from btsys.pipeline import run

    logging.getLogger("py4j").setLevel(logging.WARNING)
    metrics = run(cfg)
    value = metrics.get(str(cfg.sweep.objective), float("nan"))
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -1e9


if __name__ == "__main__":
    main()
