"""``btsys +experiment=NAME [stage=STAGE] [key=value ...]`` (= ``python -m btsys``).

STAGE: ingest|quality|bars|backtest|all (:class:`btsys.config.Stage`; default all).

A :class:`btsys.errors.UserError` ends the run with one log line naming the config key and a hint,
exit status 2; any other exception is a bug and shows its traceback. ``--debug`` (or
``HYDRA_FULL_ERROR=1``) shows tracebacks of user errors too. ``--help`` lists the experiments and
the config groups' options; ``-sc install=bash`` installs Hydra's tab completion for ``btsys``.
"""

from __future__ import annotations

import logging
import math
import os
import sys

import hydra
from omegaconf import DictConfig

from btsys.config import conf_dir  # importing btsys.config registers the schemas
from btsys.errors import as_user_error, exit_on_user_error
from btsys.help import register_resolver

log = logging.getLogger("btsys")
register_resolver()  # ${btsys_help:} of conf/hydra/help/btsys.yaml

#: Metrics of the closing summary line and how they are shown.
SUMMARY = (
    ("total_return", "{:+.2%}"),
    ("sharpe", "{:.2f}"),
    ("max_drawdown", "{:.2%}"),
    ("n_trades", "{:,.0f}"),
)


def summary_line(name: str, metrics: dict, tracking_uri: str, url: str = "") -> str:
    """``demo: total_return -5.19%, sharpe -3.36, ...; MLflow run <id> in <uri> (<UI link>)``."""
    from btsys.redact import redact_url

    shown = ", ".join(
        f"{k} {fmt.format(float(metrics[k]))}"
        for k, fmt in SUMMARY
        if isinstance(metrics.get(k), (int, float)) and math.isfinite(float(metrics[k]))
    )
    rid = metrics.get("mlflow_run_id") or metrics.get("skipped_run_id")
    browse = f"make ui, then {url}" if url.startswith("http://127.0.0.1") else url
    where = f"; MLflow run {rid} in {redact_url(tracking_uri)} ({browse})" if rid else ""
    return f"{name}: {shown or 'no metrics'}{where}"


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Returns the sweep objective (a finite float, as Optuna needs)."""
    from btsys.logs import quiet_third_party
    from btsys.pipeline import run
    from btsys.report.mlflow_log import hydra_job, run_url

    quiet_third_party()
    try:
        metrics = run(cfg)
    except Exception as e:  # user errors (also from inside Spark tasks) end in one line
        user = as_user_error(e)
        if user is None:
            raise
        if hydra_job() is not None:  # multirun: the sweep callback records the failed job
            if user is e:
                raise
            raise user from e
        exit_on_user_error(e, log)
    if any(k in metrics for k, _ in SUMMARY):
        rid = metrics.get("mlflow_run_id") or metrics.get("skipped_run_id")
        url = run_url(cfg, rid) if rid else ""
        log.info("%s", summary_line(str(cfg.name), metrics, str(cfg.mlflow.tracking_uri), url))
    value = metrics.get(str(cfg.sweep.objective), float("nan"))
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return 1e9 if str(cfg.sweep.direction) == "minimize" else -1e9  # undefined objective: worst


def cli() -> None:
    """The ``btsys`` console script: ``--debug`` turns on full tracebacks, then Hydra takes over."""
    if "--debug" in sys.argv[1:]:
        sys.argv = [a for a in sys.argv if a != "--debug"]
        os.environ["HYDRA_FULL_ERROR"] = "1"
    main()


if __name__ == "__main__":
    cli()
