"""Hydra callback: one MLflow parent run per multirun, every job a child, a sweep summary at the end.

Enable it in ``conf/config.yaml``::

    hydra:
      callbacks:
        mlflow_sweep:
          _target_: btsys.report.callback.MlflowSweepCallback

* ``on_multirun_start`` (sweeper process): creates the experiment once, opens the parent run
  (``btsys.run_kind=sweep_parent``, params = the base config, the sweep overrides as a tag,
  ``config.yaml``) and writes its id to ``<sweep dir>/.btsys_mlflow/parent.json``. Jobs find it
  there whatever the launcher (basic: same process; joblib: loky worker processes, possibly reused
  from an earlier sweep, so no process-global state is trusted).
* each job's :func:`btsys.report.mlflow_log.log_run` makes a child run and registers it under
  ``.btsys_mlflow/trials/``; a job skipped because its config hash was already logged registers
  the earlier run (``reused``).
* ``on_job_end`` (job process): a job that raised is recorded as a FAILED child run with a
  ``btsys.error`` tag. With ``continue_on_failure`` (default) the failed job then reports a finite
  bad objective (``failure_value``: ``-1e9`` when maximising, ``+1e9`` when minimising) so the basic
  sweeper does not abort after the batch and Optuna gets a finite value; the error stays in the
  run, the job log and the summary table.
* ``on_multirun_end`` (sweeper process): reads every trial back (metrics, ``returns.parquet``) and
  logs the summary on the parent — ``sweep_trials.parquet``/``.csv``, ``sweep_heatmap.png`` for
  two swept parameters, the best trial, the deflated Sharpe ratio and PBO (CSCV) — then closes it.
  If the sweep dies before that, an ``atexit`` hook closes the parent as FAILED.
"""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
from typing import Any, Optional

import pandas as pd
from hydra.experimental.callback import Callback

from btsys.errors import UserError, debug_enabled, exit_on_user_error
from btsys.redact import redact_text
from btsys.report import mlflow_log as ml
from btsys.report.naming import describe, sweep_values

log = logging.getLogger("btsys.report")


class SweepFailed(UserError):
    """Every job of a multirun failed."""


def all_failed(trials: list[dict], parent: str, sweep_dir: str) -> Optional[SweepFailed]:
    """A :class:`SweepFailed` naming the first error when every recorded trial failed, else None."""
    if not trials or any(t.get("status") != "FAILED" for t in trials):
        return None
    first = next((t.get("error") for t in trials if t.get("error")), "unknown error")
    return SweepFailed(
        f"all {len(trials)} jobs of the multirun failed; the first: {first}",
        hint=f"every error is on the FAILED child runs of MLflow run {parent} and in the job logs "
        f"under {sweep_dir}",
    )


def _strip_hydra(config: Any) -> Any:
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(config, resolve=False)
    d.pop("hydra", None)
    return OmegaConf.create(d)


def grid_params(cfg: Any, config: Any) -> dict[str, str]:
    """The parent run's params: the base config without the swept keys (their base values are
    not what the sweep ran), and each swept key's values as ``sweep.grid.<key>``."""
    from btsys.backtest.validate import multirun_overrides, sweep_values

    swept = sweep_values(multirun_overrides(config))
    params = {k: v for k, v in ml.param_items(cfg).items() if k not in swept and k.split(".")[0] not in swept}
    params.update({f"sweep.grid.{k}": redact_text(v)[: ml.MAX_PARAM_VALUE] for k, v in swept.items()})
    return params


def _trial_row(client: Any, t: dict) -> tuple[dict, Optional[pd.Series]]:
    """A trial record as a summary row (metrics of its run) and its daily returns (or None)."""
    row = {
        "job": int(t["job_num"]),
        "run_id": t.get("run_id"),
        "link_run_id": t.get("link_run_id"),  # a reused trial's child run under this sweep
        "status": t.get("status"),
        "reused": bool(t.get("reused")),
        "error": t.get("error", ""),
    }
    row.update({f"param:{k}": v for k, v in ml.parse_overrides(t.get("overrides") or []).items()})
    if not (t.get("run_id") and t.get("status") == "FINISHED"):
        return row, None
    run = client.get_run(t["run_id"])
    row["run_name"] = run.info.run_name
    row.update(run.data.metrics)
    try:
        with tempfile.TemporaryDirectory(prefix="btsys-ret-") as d:
            f = pd.read_parquet(client.download_artifacts(t["run_id"], "returns.parquet", d))
        return row, pd.Series(f["ret"].to_numpy(), index=f["ts"].to_numpy())
    except Exception as e:
        log.warning("run %s has no readable returns.parquet (%s): left out of PBO", t["run_id"], e)
        return row, None


class MlflowSweepCallback(Callback):
    """See the module docstring.

    Parameters
    ----------
    continue_on_failure : turn a failed job into a completed one returning ``failure_value``
        (after recording the failure) so the sweep goes on. Multirun only.
    failure_value : objective reported for a failed job; ``None``: ``-1e9``, or ``+1e9`` when
        ``hydra.sweeper.direction`` is ``minimize``.
    pbo_splits : number of CSCV blocks S for PBO (reduced to fit the common days of returns).
    """

    def __init__(
        self, continue_on_failure: bool = True, failure_value: Optional[float] = None, pbo_splits: int = 16
    ) -> None:
        self.continue_on_failure = bool(continue_on_failure)
        self.failure_value = failure_value
        self.pbo_splits = int(pbo_splits)
        self._parent: Optional[str] = None
        self._job_cfg: Any = None
        self._sweep_dir: Optional[str] = None

    # ------------------------------------------------------------------ sweeper process
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from btsys.backtest.validate import validate_multirun

        try:  # every job's values checked before any job starts
            validate_multirun(config)
        except UserError as e:  # one line, exit 2; Hydra would turn a raised exception into a warning
            exit_on_user_error(e, log, reraise=False)
        if not ml._enabled(config):
            return
        try:
            self._open_parent(config)
        except UserError as e:  # e.g. an unreachable tracking store: one line, before any job runs
            exit_on_user_error(e, log)

    def _open_parent(self, config: Any) -> None:
        from btsys.backtest.validate import multirun_overrides

        cfg = _strip_hydra(config)
        sweep_dir = str(config.hydra.sweep.dir)
        os.makedirs(sweep_dir, exist_ok=True)
        client = ml.client_for(cfg)
        exp = ml.experiment_id(cfg, client)
        overrides = [str(o) for o in (config.hydra.overrides.task or [])]
        swept = sweep_values(multirun_overrides(config))  # hydra.sweeper.params too (grid presets)
        tags = ml._base_tags(cfg, "sweep_parent", None, None)
        tags["btsys.sweep_dir"] = os.path.abspath(sweep_dir)
        tags["btsys.overrides"] = redact_text(" ".join(overrides))
        tags["btsys.sweeper"] = str(config.hydra.sweeper.get("_target_", ""))
        tags["btsys.launcher"] = str(config.hydra.launcher.get("_target_", ""))
        if swept:
            tags["btsys.swept"] = ",".join(swept)
        run = client.create_run(exp, tags=tags, run_name=describe(ml.plain_config(cfg), swept, ["sweep"]))
        self._parent, self._job_cfg, self._sweep_dir = run.info.run_id, cfg, sweep_dir
        try:
            ml._log_batch(client, self._parent, params=grid_params(cfg, config))
            with tempfile.TemporaryDirectory(prefix="btsys-parent-") as d:
                with open(os.path.join(d, "config.yaml"), "w") as f:
                    f.write(ml.config_yaml(cfg))
                client.log_artifacts(self._parent, d)
            ml.write_parent(
                sweep_dir,
                {
                    "run_id": self._parent,
                    "experiment_id": exp,
                    "tracking_uri": redact_text(str(cfg.mlflow.tracking_uri)),
                    "swept": list(swept),
                },
            )
        except BaseException as e:
            ml._fail_run(client, self._parent, e)
            self._parent = None
            raise
        atexit.register(self._close_if_open)
        log.info("mlflow parent run %s opened for the sweep in %s", self._parent, sweep_dir)

    def _close_if_open(self) -> None:
        if self._parent is None:
            return
        parent, self._parent = self._parent, None
        ml._fail_run(
            ml.client_for(self._job_cfg),
            parent,
            RuntimeError("the sweep ended before on_multirun_end (a job or the sweeper raised)"),
        )

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self._parent is None:
            return
        parent, self._parent = self._parent, None
        cfg = self._job_cfg
        client = ml.client_for(cfg)
        sweep_dir = str(config.hydra.sweep.dir)
        try:
            self._summarize(client, cfg, parent, sweep_dir, config)
            failure = all_failed(ml.read_trials(sweep_dir, parent), parent, sweep_dir)
            if failure is None:
                client.set_terminated(parent, "FINISHED")
        except BaseException as e:
            ml._fail_run(client, parent, e)
            raise
        if failure is not None:  # nothing of the sweep succeeded: FAILED parent, non-zero exit
            ml._fail_run(client, parent, failure)
            exit_on_user_error(failure, log)
        log.info("mlflow parent run %s closed with the sweep summary", parent)

    def _summarize(self, client: Any, cfg: Any, parent: str, sweep_dir: str, config: Any) -> None:
        trials = ml.read_trials(sweep_dir, parent)  # this sweep's trials only
        objective = str(cfg.sweep.objective)
        direction = str(config.hydra.sweeper.get("direction", "") or cfg.sweep.get("direction", "maximize"))
        direction = "minimize" if "min" in direction.lower() else "maximize"
        rows, returns = [], {}
        for t in trials:
            row, ret = _trial_row(client, t)
            rows.append(row)
            if ret is not None:
                returns[row["job"]] = ret
        table = (
            pd.DataFrame(rows).set_index("job")
            if rows
            else pd.DataFrame(columns=["run_id", "status", "reused", "error"])
        )
        # swept parameters: the override keys whose values differ between trials
        all_params = [ml.parse_overrides(t.get("overrides") or []) for t in trials]
        keys = sorted({k for p in all_params for k in p})
        varying = [k for k in keys if len({p.get(k) for p in all_params}) > 1]
        table = table.rename(columns={f"param:{k}": k for k in keys})
        for k in varying:  # numeric grids sort numerically in the heatmap
            conv = pd.to_numeric(table[k], errors="coerce")
            if conv.notna().all():
                table[k] = conv
        ret_df = pd.DataFrame(returns).sort_index() if returns else None
        with tempfile.TemporaryDirectory(prefix="btsys-summary-") as d:
            metrics, tags, params = ml.summarize_sweep(
                d, table, varying, objective, direction, returns=ret_df, n_splits=self.pbo_splits
            )
            params["sweep.params"] = ",".join(varying)[: ml.MAX_PARAM_VALUE]
            best = tags.get("btsys.best_trial")
            if best is not None:
                row = table.loc[int(best)]
                child = row["link_run_id"] if isinstance(row.get("link_run_id"), str) else row["run_id"]
                tags.update(ml.best_link_tags(client, child))
                log.info(
                    "sweep best of %d trials: %s=%.6g with %s (run %s, %s)",
                    len(table),
                    objective,
                    metrics[f"best_{objective}"],
                    " ".join(f"{k}={row[k]}" for k in varying) or "(no swept key)",
                    tags["btsys.best_run_name"],
                    child,
                )
            ml._log_batch(client, parent, params=params, metrics=metrics, tags=tags)
            client.log_artifacts(parent, d)

    # ------------------------------------------------------------------ job process
    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if job_return is None or job_return.status != JobStatus.FAILED:
            return
        exc = job_return._return_value
        hydra_cfg = config.get("hydra") if hasattr(config, "get") else None
        cfg = _strip_hydra(config) if hydra_cfg is not None else config
        if not isinstance(exc, BaseException):
            exc = RuntimeError(str(exc))
        rid = ml.record_failure(cfg, exc, hydra_cfg)
        job = ml.hydra_job(hydra_cfg)
        if job is None or not self.continue_on_failure:
            return
        value = self.failure_value
        if value is None:
            direction = str(hydra_cfg.sweeper.get("direction", "")) if hydra_cfg is not None else ""
            value = 1e9 if "min" in direction.lower() else -1e9
        user = isinstance(exc, UserError) and not debug_enabled()  # a bug keeps its traceback
        log.error(
            "job %s failed (%s: %s); recorded in mlflow run %s; reporting objective %g and "
            "continuing the sweep",
            job["job_num"],
            type(exc).__name__,
            exc.line() if isinstance(exc, UserError) else exc,
            rid,
            value,
            exc_info=None if user else (type(exc), exc, exc.__traceback__),
        )
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = float(value)
