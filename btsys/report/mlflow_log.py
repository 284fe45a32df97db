"""MLflow logging of backtests, failed jobs and kernel-mode sweeps (sqlite tracking store).

Every run made here carries:

* **params** — the flattened config keys (``strategy.fast``, ``backtest.fees.taker``, ...), in
  batches of at most 100; a key longer than 250 characters or a value longer than
  ``MAX_PARAM_VALUE`` characters is replaced by ``sha256:<16 hex>`` (never truncated; the full
  value is in ``config.yaml``);
* **tags** — ``btsys.run_kind`` (``trial``, ``trial_link`` for a reused trial shown under a new
  sweep, ``sweep_parent``, ``sweep_table``), ``btsys.config_hash``,
  the stage cache keys (``btsys.ingest_key``, ``btsys.bars_key``, ``btsys.features_key``), the git
  commit (``btsys.git_commit``, ``mlflow.source.git.commit``, ``btsys.git_dirty``) and
  ``mlflow.parentRunId`` inside a sweep;
* **artifacts** — ``config.yaml`` (resolved, without the ``hydra`` node) always; for a backtest
  also ``metrics.json``, ``returns.parquet`` (daily returns, read back for the sweep's PBO),
  ``trades.parquet``, ``charts/*.png`` and ``tearsheet.html``.

mlflow itself is imported lazily, once per process (it costs about 1.7 s), and runs are made with
:class:`mlflow.tracking.MlflowClient` only — no fluent "active run" — so a reused joblib/loky worker
never inherits a dangling run. Every run is terminated, ``FAILED`` with a ``btsys.error`` tag and an
``error.txt`` artifact when anything goes wrong.

Inside a Hydra multirun the parent run id is found in ``<sweep dir>/.btsys_mlflow/parent.json``
(written by :class:`btsys.report.callback.MlflowSweepCallback`) or, outside Hydra, in the
``BTSYS_MLFLOW_PARENT_RUN_ID`` environment variable. Each job also records what it produced in
``<sweep dir>/.btsys_mlflow/trials/<parent run id>/<job num>.json`` so the callback can summarise
its own sweep (a reused sweep dir never mixes sweeps), including trials skipped because they were
already logged (linked under the new parent, not recomputed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import tempfile
import time
import traceback
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("btsys.report")

PARENT_ENV = "BTSYS_MLFLOW_PARENT_RUN_ID"
STATE_DIR = ".btsys_mlflow"
MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 500
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 800
#: top-level config sections that never change a trial's result (excluded from the config hash)
HASH_EXCLUDE = ("hydra", "mlflow", "spark", "storage", "force", "stage", "sweep", "name")

_MLFLOW = None
_CLIENTS: dict[str, Any] = {}
_EXPERIMENTS: dict[tuple[str, str], str] = {}
_GIT: Optional[tuple[str, str]] = None


# --------------------------------------------------------------------------- small helpers
def _mlflow():
    """``mlflow`` module, imported on first use only."""
    global _MLFLOW
    if _MLFLOW is None:
        from btsys.logs import quiet_third_party

        quiet_third_party()  # before the import: MLflow would install its own log handler
        import mlflow  # noqa: WPS433 (deliberately lazy: ~1.7 s)

        _MLFLOW = mlflow
    return _MLFLOW


def _enabled(cfg: Any) -> bool:
    m = _section(cfg, "mlflow")
    return bool(m is not None and _get(m, "enabled", True))


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    if isinstance(node, Mapping):
        return node.get(key, default)
    try:
        return node.get(key, default)  # DictConfig
    except AttributeError:
        return getattr(node, key, default)


def _section(cfg: Any, key: str) -> Any:
    return _get(cfg, key, None)


def plain_config(cfg: Any) -> dict:
    """Resolved plain dict of a config (DictConfig / dataclass / dict), ``hydra`` node dropped."""
    from btsys.config import to_plain

    return {k: v for k, v in to_plain(cfg).items() if k != "hydra"}


def config_yaml(cfg: Any) -> str:
    """The resolved config as YAML (what is logged as ``config.yaml``), credentials in URLs masked."""
    from omegaconf import OmegaConf

    from btsys.redact import redact_text

    return redact_text(OmegaConf.to_yaml(OmegaConf.create(plain_config(cfg))))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values (logged as JSON)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short_hash(s: str) -> str:
    return "sha256:" + hashlib.sha256(s.encode("utf-8")).hexdigest()[:16]


def _not_applicable(plain: Mapping[str, Any]) -> tuple[str, ...]:
    """Param prefixes that do not apply to this data source: the real site's URL (and its download
    settings) for synthetic data, the generator's settings for real data."""
    data = plain.get("data") or {}
    if "name" not in data:
        return ()
    return ("data.source.",) if data["name"] == "synthetic" else ("data.synthetic.",)


def param_items(cfg: Any) -> dict[str, str]:
    """The MLflow params of a config: flattened keys -> strings; over-long keys/values hashed;
    credentials in URLs masked; settings of the other data source left out."""
    from btsys.redact import redact_text

    out = {}
    plain = plain_config(cfg)
    skip = _not_applicable(plain)
    for k, v in flatten(plain).items():
        if skip and k.startswith(skip):
            continue
        if isinstance(v, (list, tuple, dict)):
            s = json.dumps(v, sort_keys=True, default=str)
        elif v is None:
            s = "None"
        else:
            s = str(v)
        if len(k) > MAX_PARAM_KEY:
            k = k[: MAX_PARAM_KEY - 24] + "~" + _short_hash(k)
        s = redact_text(s)
        if len(s) > MAX_PARAM_VALUE:
            s = f"{_short_hash(s)} (len {len(s)}, full value in config.yaml)"
        out[k] = s
    return out


def config_hash(cfg: Any) -> str:
    """Hash of everything that determines a trial's result (``HASH_EXCLUDE`` sections left out)."""
    d = {k: v for k, v in plain_config(cfg).items() if k not in HASH_EXCLUDE}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:20]


def git_info() -> tuple[str, str]:
    """(commit, "true"/"false" dirty) of the btsys source tree; ("unknown", "unknown") outside git."""
    global _GIT
    if _GIT is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            commit = (
                subprocess.run(
                    ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
                or "unknown"
            )
            dirty = subprocess.run(
                [
                    "git",
                    "-C",
                    root,
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    "btsys",
                    "conf",
                    "jobs",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            _GIT = (commit, "true" if dirty else "false") if commit != "unknown" else ("unknown", "unknown")
        except (OSError, subprocess.SubprocessError):
            _GIT = ("unknown", "unknown")
    return _GIT


def client_for(cfg: Any):
    """A cached :class:`MlflowClient` for ``cfg.mlflow.tracking_uri``, checked and with its store
    created (see :mod:`btsys.report.tracking`)."""
    from btsys.report.tracking import make_client

    uri = str(_get(_section(cfg, "mlflow"), "tracking_uri", "sqlite:///mlflow.db"))
    if uri not in _CLIENTS:
        _mlflow()
        _CLIENTS[uri] = make_client(uri)
    return _CLIENTS[uri]


def check_tracking(cfg: Any) -> None:
    """Fail fast (:class:`btsys.errors.TrackingError`, in seconds) when the run could not be logged;
    the report stage checks it before anything is computed. No-op with ``mlflow.enabled=false``."""
    if _enabled(cfg):
        client_for(cfg)


def experiment_id(cfg: Any, client: Any = None) -> str:
    """Id of ``cfg.mlflow.experiment_name``, created once (race-safe across sweep workers), its
    artifacts beside a sqlite store and tagged as a model-development experiment."""
    from btsys.report.tracking import ensure_experiment

    m = _section(cfg, "mlflow")
    uri = str(_get(m, "tracking_uri", "sqlite:///mlflow.db"))
    name = str(_get(m, "experiment_name", "btsys"))
    if (uri, name) in _EXPERIMENTS:
        return _EXPERIMENTS[(uri, name)]
    art = _get(m, "artifact_location", None)
    eid = ensure_experiment(client or client_for(cfg), uri, name, str(art) if art else None)
    _EXPERIMENTS[(uri, name)] = eid
    return eid


def _log_batch(
    client: Any,
    run_id: str,
    params: Mapping[str, str] = (),
    metrics: Mapping[str, float] = (),
    tags: Mapping[str, str] = (),
    step: int = 0,
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    from btsys.redact import redact_text

    now = int(time.time() * 1000)
    p = [Param(k, v) for k, v in dict(params).items()]
    m = []
    for k, v in dict(metrics).items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            continue
        m.append(Metric(k, fv, now, step))
    t = [RunTag(k, redact_text(str(v))[:5000]) for k, v in dict(tags).items()]
    # MLflow limits one batch to 100 params, 100 tags, 1000 metrics and 1000 entities in all
    n = max(
        -(-len(p) // PARAMS_PER_BATCH), -(-len(t) // PARAMS_PER_BATCH), -(-len(m) // METRICS_PER_BATCH), 1
    )
    for i in range(n):
        client.log_batch(
            run_id,
            metrics=m[i * METRICS_PER_BATCH : (i + 1) * METRICS_PER_BATCH],
            params=p[i * PARAMS_PER_BATCH : (i + 1) * PARAMS_PER_BATCH],
            tags=t[i * PARAMS_PER_BATCH : (i + 1) * PARAMS_PER_BATCH],
        )


def _metric_dict(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, (bool, np.bool_)):
            out[k] = float(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[k] = float(v)
    return out


# --------------------------------------------------------------------------- hydra job context
def hydra_job(hydra_cfg: Any = None) -> Optional[dict]:
    """Multirun context of the current Hydra job: sweep dir, job number, task overrides.

    ``None`` outside Hydra or in a single run. Credentials in URLs of the overrides are masked.
    """
    from btsys.redact import redact_text

    hc = hydra_cfg
    if hc is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
    mode = str(_get(hc, "mode", ""))
    if "MULTIRUN" not in mode:
        return None
    job = _get(hc, "job", {})
    return {
        "sweep_dir": str(_get(_get(hc, "sweep", {}), "dir", "")),
        "job_num": int(_get(job, "num", 0) or 0),
        "overrides": [redact_text(str(o)) for o in (_get(_get(hc, "overrides", {}), "task", []) or [])],
    }


def _state_dir(sweep_dir: str) -> str:
    return os.path.join(sweep_dir, STATE_DIR)


def _write_json_atomic(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True, default=str)
    os.replace(tmp, path)


def write_parent(sweep_dir: str, info: Mapping[str, Any]) -> None:
    _write_json_atomic(os.path.join(_state_dir(sweep_dir), "parent.json"), dict(info))


def read_parent(sweep_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(_state_dir(sweep_dir), "parent.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def register_trial(
    job: Optional[dict],
    run_id: Optional[str],
    status: str,
    reused: bool = False,
    error: str = "",
    link_run_id: Optional[str] = None,
) -> None:
    """Record which run a multirun job produced, under its sweep's parent run (no-op outside a
    multirun or without a parent run): ``<sweep dir>/.btsys_mlflow/trials/<parent>/<job>.json``;
    URLs in the error are redacted.

    Scoping the records by parent run keeps a reused ``hydra.sweep.dir`` from mixing sweeps."""
    from btsys.redact import redact_text

    parent = parent_run_id(job) if job and job.get("sweep_dir") else None
    if parent is None:
        return
    error = redact_text(error)
    _write_json_atomic(
        _trial_path(job["sweep_dir"], parent, job["job_num"]),
        {
            "job_num": job["job_num"],
            "parent_run_id": parent,
            "run_id": run_id,
            "status": status,
            "reused": reused,
            "link_run_id": link_run_id,
            "error": error,
            "overrides": job["overrides"],
        },
    )


def _trial_path(sweep_dir: str, parent: str, job_num: int) -> str:
    return os.path.join(_state_dir(sweep_dir), "trials", parent, f"{int(job_num):06d}.json")


def read_trials(sweep_dir: str, parent: str) -> list[dict]:
    """The trial records of the sweep whose parent run is ``parent`` (in job order)."""
    d = os.path.dirname(_trial_path(sweep_dir, parent, 0))
    out = []
    if os.path.isdir(d):
        for fn in sorted(os.listdir(d)):
            if fn.endswith(".json"):
                with open(os.path.join(d, fn)) as f:
                    out.append(json.load(f))
    return out


def _trial_record(job: Optional[dict]) -> Optional[dict]:
    parent = parent_run_id(job) if job and job.get("sweep_dir") else None
    if parent is None:
        return None
    try:
        with open(_trial_path(job["sweep_dir"], parent, job["job_num"])) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def parent_run_id(job: Optional[dict] = None) -> Optional[str]:
    """Parent run of the current job: the sweep's ``parent.json``, else ``$BTSYS_MLFLOW_PARENT_RUN_ID``."""
    job = job if job is not None else hydra_job()
    if job and job.get("sweep_dir"):
        p = read_parent(job["sweep_dir"])
        if p and p.get("run_id"):
            return str(p["run_id"])
    return os.environ.get(PARENT_ENV) or None


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["strategy.fast=5", "+experiment=demo"]`` -> ``{"strategy.fast": "5", "experiment": "demo"}``."""
    out = {}
    for o in overrides:
        k, sep, v = str(o).partition("=")
        if sep:
            out[k.lstrip("+~")] = v
    return out


# --------------------------------------------------------------------------- runs
def _swept(job: Optional[dict]) -> Optional[dict[str, str]]:
    """This multirun job's values of the keys its sweep varies (``None`` outside a multirun)."""
    if not job:
        return None
    from btsys.report.naming import job_values

    swept = (read_parent(job["sweep_dir"]) or {}).get("swept") if job.get("sweep_dir") else None
    return job_values(job["overrides"], swept)


def _base_tags(cfg: Any, kind: str, parent: Optional[str], job: Optional[dict]) -> dict[str, str]:
    """Tags of every run: kind, git, experiment name, strategy/symbols/bars, sweep context; URLs
    redacted."""
    from btsys.redact import redact_text
    from btsys.report.naming import tags as naming_tags

    commit, dirty = git_info()
    tags = {
        "btsys.run_kind": kind,
        "btsys.git_commit": commit,
        "btsys.git_dirty": dirty,
        "mlflow.source.git.commit": commit,
        "btsys.name": str(_get(cfg, "name", "")),
        "mlflow.user": os.environ.get("USER", "btsys"),
    }
    if parent:
        tags["mlflow.parentRunId"] = parent
    if job:
        tags["btsys.sweep_dir"] = os.path.abspath(job["sweep_dir"])
        tags["btsys.job_num"] = str(job["job_num"])
        if job["overrides"]:
            tags["btsys.overrides"] = " ".join(job["overrides"])
    tags.update(naming_tags(plain_config(cfg), _swept(job)))
    return {k: redact_text(v) for k, v in tags.items()}


def _run_name(cfg: Any, job: Optional[dict], extra: str = "") -> str:
    """``ma_cross fast=10 slow=50 BTCUSDT dollar`` (+ swept keys and ``#<job>`` in a multirun)."""
    from btsys.report.naming import describe

    words = [f"#{job['job_num']}"] if job else []
    return describe(plain_config(cfg), _swept(job), [*words, extra] if extra else words)


def _grid_run_name(cfg: Any, table: pd.DataFrame, param_cols: Sequence[str]) -> str:
    """``ma_cross fast=5..40 slow=50..200 BTCUSDT dollar kernel sweep (24)``: the grid's ranges."""
    from btsys.report.naming import describe

    ranges = {}
    for c in param_cols:
        vals = pd.unique(table[c])
        ranges[c] = str(vals[0]) if len(vals) == 1 else f"{np.min(vals)}..{np.max(vals)}"
    return describe(plain_config(cfg), ranges, ["kernel sweep", f"({len(table)})"])


def _fail_run(client: Any, run_id: str, exc: BaseException) -> None:
    """Mark a run FAILED with the error as a tag and a traceback artifact; never raises."""
    from btsys.redact import redact_text

    try:
        msg = redact_text(f"{type(exc).__name__}: {exc}")
        client.set_tag(run_id, "btsys.error", msg[:5000])
        client.set_tag(run_id, "btsys.error_type", type(exc).__name__)
        tb = redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        with tempfile.TemporaryDirectory(prefix="btsys-err-") as d:
            with open(os.path.join(d, "error.txt"), "w") as f:
                f.write(tb)
            client.log_artifact(run_id, os.path.join(d, "error.txt"))
    except Exception as e2:  # pragma: no cover - logging must not hide the original error
        log.warning("could not record the error on run %s: %s", run_id, e2)
    finally:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception as e3:  # pragma: no cover
            log.warning("could not terminate run %s: %s", run_id, e3)


def returns_frame(result: Any) -> pd.DataFrame:
    """Daily returns of a result as logged in ``returns.parquet``: ``ts`` (day start, µs), ``ret``
    (:func:`btsys.backtest.metrics.period_returns`: the first day against the initial cash)."""
    from btsys.backtest.enums import DAY_US
    from btsys.backtest.metrics import period_returns

    eq = np.asarray(result.equity, dtype=np.float64)
    ts = getattr(result, "ts", None)
    ts = np.arange(len(eq), dtype=np.int64) * DAY_US if ts is None else np.asarray(ts, dtype=np.int64)
    days, r = period_returns(ts, eq, float(result.init_cash))
    return pd.DataFrame({"ts": days.astype(np.int64), "ret": r.astype(np.float64)})


def _write_result_artifacts(
    d: str,
    cfg: Any,
    result: Any,
    metrics: Mapping[str, float],
    charts: bool,
    wf: Optional[pd.DataFrame],
    title: str,
) -> None:
    yaml_text = config_yaml(cfg)
    with open(os.path.join(d, "config.yaml"), "w") as f:
        f.write(yaml_text)
    with open(os.path.join(d, "metrics.json"), "w") as f:
        json.dump(
            {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}, f, indent=1, sort_keys=True
        )
    returns_frame(result).to_parquet(os.path.join(d, "returns.parquet"), index=False)
    trades = getattr(result, "trades", None)
    if isinstance(trades, pd.DataFrame):
        trades.to_parquet(os.path.join(d, "trades.parquet"), index=False)
    if wf is not None:
        wf.to_csv(os.path.join(d, "walk_forward.csv"), index=False)
    for name, data in (getattr(result, "extra_artifacts", None) or {}).items():  # quality/, universe/
        os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    if charts:
        from btsys.report.charts import render_charts
        from btsys.report.tearsheet import render_tearsheet

        prices = getattr(result, "prices", None)  # {symbol: (ts, close)} from the backtest stage
        pngs = {
            **render_charts(result, title=title, prices=prices),
            **(getattr(result, "extra_charts", None) or {}),
        }
        os.makedirs(os.path.join(d, "charts"), exist_ok=True)
        for name, png in pngs.items():
            with open(os.path.join(d, "charts", f"{name}.png"), "wb") as f:
                f.write(png)
        strat = plain_config(cfg).get("strategy") or {}
        params = (
            {f"strategy.{k}": v for k, v in strat.items() if k != "name"} if isinstance(strat, dict) else {}
        )
        base = set(getattr(result, "metrics", {}) or {})
        extra = {k: v for k, v in metrics.items() if k not in base}
        html_text = render_tearsheet(
            result,
            pngs,
            title=title,
            subtitle=f"config hash {config_hash(cfg)} · git {git_info()[0][:10]}",
            params=params,
            extra_metrics=extra,
            config_yaml=yaml_text,
            walk_forward=wf,
            tables=getattr(result, "extra_tables", None),
            prices=prices,
        )
        with open(os.path.join(d, "tearsheet.html"), "w", encoding="utf-8") as f:
            f.write(html_text)


def _log_trial(
    client: Any,
    exp_id: str,
    cfg: Any,
    result: Any,
    keys: Mapping[str, str],
    parent: Optional[str],
    job: Optional[dict],
    run_name: Optional[str] = None,
) -> str:
    tags = _base_tags(cfg, "trial", parent, job)
    tags["btsys.config_hash"] = config_hash(cfg)
    for k, v in (keys or {}).items():
        tags[f"btsys.{k}_key"] = str(v)
    name = run_name or _run_name(cfg, job)
    run = client.create_run(exp_id, tags=tags, run_name=name)
    rid = run.info.run_id
    try:
        from btsys.backtest.split import walk_forward_report

        metrics = _metric_dict(getattr(result, "metrics", {}) or {})
        metrics.update(
            _metric_dict(getattr(result, "extra_metrics", None) or {})
        )  # quality_*, universe_*, wf_*
        wf, wf_metrics = walk_forward_report(result, _get(_section(cfg, "backtest"), "split", None))
        metrics.update(_metric_dict(wf_metrics))
        _log_batch(client, rid, params=param_items(cfg), metrics=metrics)
        if wf is not None:
            log_window_steps(client, rid, wf)
        charts = bool(_get(_section(cfg, "mlflow"), "charts", True))
        with tempfile.TemporaryDirectory(prefix="btsys-mlflow-") as d:
            _write_result_artifacts(d, cfg, result, metrics, charts, wf, title=name)
            client.log_artifacts(rid, d)
        client.set_terminated(rid, "FINISHED")
    except BaseException as e:
        _fail_run(client, rid, e)
        register_trial(job, rid, "FAILED", error=f"{type(e).__name__}: {e}")
        raise
    return rid


def log_window_steps(client: Any, run_id: str, table: pd.DataFrame) -> None:
    """Per-window figures of a walk-forward table as metric steps: ``wf.<column>`` at step =
    window index (``wf.oos_sharpe``, ``wf.is_sharpe``, ``wf.best.strategy.fast``, ...)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    skip = {"window", "train_start", "train_stop", "test_start", "test_stop"}
    out = []
    for _, row in table.iterrows():
        for c, v in row.items():
            if c in skip or c.endswith("_ts_start") or c.endswith("_ts_end") or isinstance(v, (str, bool)):
                continue
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            out.append(Metric(f"wf.{c}", fv, now, int(row["window"])))
    for i in range(0, len(out), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=out[i : i + METRICS_PER_BATCH])


def log_run(cfg: Any, result: Any, keys: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Log one backtest as an MLflow run; returns its run id (``None`` when ``mlflow.enabled`` is false).

    Inside a multirun whose callback opened a parent run, the run is that parent's child.

    Parameters
    ----------
    cfg : the job's config (DictConfig) — flattened into params, logged as ``config.yaml``.
    result : a ``BacktestResult`` (``ts``, ``equity``, ``trades``, ``metrics``).
    keys : stage cache keys, e.g. ``{"ingest": ..., "bars": ..., "features": ...}`` -> tags
        ``btsys.<stage>_key``.
    """
    if not _enabled(cfg):
        return None
    if result is None or getattr(result, "equity", None) is None:
        raise ValueError(
            f"log_run: result must be a BacktestResult with an equity array, got {type(result).__name__}"
        )
    client = client_for(cfg)
    exp = experiment_id(cfg, client)
    job = hydra_job()
    rid = _log_trial(client, exp, cfg, result, keys or {}, parent_run_id(job), job)
    register_trial(job, rid, "FINISHED")
    log.info("mlflow run %s logged (experiment %s)", rid, exp)
    return rid


def find_logged_run(cfg: Any) -> Optional[str]:
    """Id of a FINISHED trial run in the experiment with this config's hash, or ``None``.

    The report stage asks it before the backtest and the trial is skipped when it returns an id (unless
    ``force=true``). Inside a multirun the found run is registered as this job's trial, so the
    sweep summary on the new parent run still includes it (``reused=True``).
    """
    if not _enabled(cfg):
        return None
    client = client_for(cfg)
    name = str(_get(_section(cfg, "mlflow"), "experiment_name", "btsys"))
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        return None
    h = config_hash(cfg)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(
            f"tags.`btsys.config_hash` = '{h}' and tags.`btsys.run_kind` = 'trial' "
            "and attributes.status = 'FINISHED'"
        ),
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        return None
    rid = runs[0].info.run_id
    job = hydra_job()
    link = link_reused_trial(client, cfg, runs[0], parent_run_id(job), job)
    register_trial(job, rid, "FINISHED", reused=True, link_run_id=link)
    log.info("config hash %s already logged as run %s: skipping (force=true reruns)", h, rid)
    return rid


def run_url(cfg: Any, run_id: str) -> str:
    """Link to a logged run in the MLflow UI (:func:`btsys.report.tracking.ui_url`)."""
    from btsys.report.tracking import ui_url

    uri = str(_get(_section(cfg, "mlflow"), "tracking_uri", "sqlite:///mlflow.db"))
    return ui_url(uri, client_for(cfg).get_run(run_id).info.experiment_id, run_id)


def link_reused_trial(
    client: Any, cfg: Any, run: Any, parent: Optional[str], job: Optional[dict]
) -> Optional[str]:
    """Show a reused trial under the sweep that reuses it: a child run of ``parent`` with the
    trial's params and metrics (copied, not recomputed), tagged ``btsys.run_kind=trial_link`` and
    ``btsys.reused_run_id`` (the run that holds its artifacts). None without a parent."""
    if parent is None:
        return None
    tags = _base_tags(cfg, "trial_link", parent, job)
    tags["btsys.reused_run_id"] = run.info.run_id
    tags["btsys.config_hash"] = config_hash(cfg)
    tags["mlflow.note.content"] = (
        f"Reused trial: already logged as run [{run.info.run_name}]"
        f"(#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}), which holds its artifacts."
    )
    link = client.create_run(run.info.experiment_id, tags=tags, run_name=_run_name(cfg, job, "(reused)"))
    lid = link.info.run_id
    try:
        _log_batch(client, lid, params=param_items(cfg), metrics=dict(run.data.metrics))
        client.set_terminated(lid, "FINISHED")
    except BaseException as e:
        _fail_run(client, lid, e)
        raise
    return lid


def logged_metrics(cfg: Any, run_id: str) -> dict[str, float]:
    """Metrics of a logged run (what a skipped trial returns for its objective)."""
    return dict(client_for(cfg).get_run(run_id).data.metrics)


def record_failure(cfg: Any, exc: BaseException, hydra_cfg: Any = None) -> Optional[str]:
    """Record a job that failed before/while logging: a FAILED run with ``btsys.error``.

    Used by the sweep callback's ``on_job_end`` (and usable by ``btsys.__main__``). Does nothing
    if the job already recorded a failed run itself, or when mlflow is disabled. Never raises.
    """
    try:
        if not _enabled(cfg):
            return None
        job = hydra_job(hydra_cfg)
        rec = _trial_record(job)
        if rec and rec.get("status") == "FAILED" and rec.get("run_id"):
            return rec["run_id"]
        client = client_for(cfg)
        exp = experiment_id(cfg, client)
        parent = parent_run_id(job)
        tags = _base_tags(cfg, "trial", parent, job)
        tags["btsys.config_hash"] = config_hash(cfg)
        run = client.create_run(exp, tags=tags, run_name=_run_name(cfg, job, "(failed)"))
        rid = run.info.run_id
        try:
            _log_batch(client, rid, params=param_items(cfg))
            with tempfile.TemporaryDirectory(prefix="btsys-mlflow-") as d:
                with open(os.path.join(d, "config.yaml"), "w") as f:
                    f.write(config_yaml(cfg))
                client.log_artifacts(rid, d)
        finally:
            _fail_run(client, rid, exc)
        register_trial(job, rid, "FAILED", error=f"{type(exc).__name__}: {exc}")
        return rid
    except Exception as e:  # pragma: no cover - must never mask the job's own error
        log.warning("could not record the failure in mlflow: %s", e)
        return None


# --------------------------------------------------------------------------- sweep summary
def summarize_sweep(
    out_dir: str,
    table: pd.DataFrame,
    param_cols: Sequence[str],
    objective: str,
    direction: str = "maximize",
    returns: Optional[pd.DataFrame] = None,
    best_returns: Optional[np.ndarray] = None,
    n_splits: int = 16,
    returns_basis: str = "all",
) -> tuple[dict, dict, dict]:
    """Write the sweep artifacts to ``out_dir`` and compute the overfitting statistics.

    Parameters
    ----------
    table : one row per trial: ``param_cols``, metric columns (``objective``, ``sharpe``), and
        optionally ``status`` (only ``FINISHED`` rows are ranked).
    returns : daily returns, one column per finished trial (index: day), for PBO; columns must be
        labels of ``table``'s index.
    best_returns : the best trial's daily returns for the DSR (else taken from ``returns``).
    returns_basis : ``"all"`` (PBO over every trial: metric ``pbo``) or ``"top_k"`` (only the top
        trials' returns are known: metric ``pbo_top_k``, optimistic since they were preselected).

    Returns
    -------
    metrics, tags, params : for the summary run.
    """
    os.makedirs(out_dir, exist_ok=True)
    table.to_parquet(os.path.join(out_dir, "sweep_trials.parquet"))
    table.to_csv(os.path.join(out_dir, "sweep_trials.csv"))
    metrics: dict[str, float] = {"n_trials": float(len(table))}
    tags: dict[str, str] = {"btsys.objective": objective, "btsys.direction": direction}
    params: dict[str, str] = {}
    ok = _finished_trials(table, metrics)
    best_label = _best_trial(ok, param_cols, objective, direction, metrics, params, tags)
    if len(param_cols) == 2 and best_label is not None:
        from btsys.report.charts import sweep_heatmap_png

        with open(os.path.join(out_dir, "sweep_heatmap.png"), "wb") as f:
            f.write(sweep_heatmap_png(ok, param_cols[0], param_cols[1], objective))
    if best_label is not None and "sharpe" in table:
        metrics.update(_best_dsr(table, best_label, returns, best_returns))
    if returns is not None and returns.shape[1] >= 2:
        _pbo(out_dir, returns, n_splits, returns_basis, metrics, tags)
    with open(os.path.join(out_dir, "sweep_summary.json"), "w") as f:
        json.dump(
            {
                "metrics": {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()},
                "tags": tags,
                "params": params,
                "param_cols": list(param_cols),
            },
            f,
            indent=1,
        )
    return metrics, tags, params


def _finished_trials(table: pd.DataFrame, metrics: dict) -> pd.DataFrame:
    """The rows that are ranked (``status`` FINISHED when there is a status); counts failed and
    reused trials into ``metrics``."""
    ok = table
    if "status" in table:
        ok = table[table["status"] == "FINISHED"]
        metrics["n_failed"] = float((table["status"] == "FAILED").sum())
    if "reused" in table:
        metrics["n_reused"] = float(table["reused"].astype(bool).sum())
    return ok


def _best_trial(ok, param_cols, objective: str, direction: str, metrics, params, tags):
    """The label of the best finished trial by ``objective`` (None when no value is finite);
    ``best_<objective>``, the ``best.<param>`` params and the ``btsys.best_trial`` tag."""
    vals = pd.to_numeric(ok[objective], errors="coerce") if objective in ok else pd.Series(dtype=float)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    best_label = vals.idxmax() if direction == "maximize" else vals.idxmin()
    metrics[f"best_{objective}"] = float(vals[best_label])
    for c in param_cols:
        params[f"best.{c}"] = str(ok.loc[best_label, c])
    tags["btsys.best_trial"] = str(best_label)
    return best_label


def _best_dsr(table, best_label, returns, best_returns) -> dict[str, float]:
    """The deflated Sharpe ratio of the best trial against all trials' Sharpe ratios."""
    from btsys.report.stats import dsr_from_trials

    br = best_returns
    if br is None and returns is not None and best_label in returns.columns:
        br = returns[best_label].to_numpy()
    if br is None:
        return {}
    d = dsr_from_trials(br, pd.to_numeric(table["sharpe"], errors="coerce").to_numpy(), n_trials=len(table))
    return {k: float(v) for k, v in d.items()}


def _pbo(out_dir: str, returns: pd.DataFrame, n_splits: int, basis: str, metrics, tags) -> None:
    """PBO by CSCV across the trials' daily returns (``pbo`` or, over the top K only,
    ``pbo_top_k``) and the ``<name>_cscv.csv`` of its splits."""
    from btsys.report.stats import choose_splits, pbo_cscv

    m = returns.dropna(how="any")
    s = choose_splits(len(m), n_splits)
    name = "pbo" if basis == "all" else "pbo_top_k"
    tags["btsys.pbo_basis"] = basis
    if not s:
        tags[f"btsys.{name}_skipped"] = f"only {len(m)} common days of returns: too few for CSCV"
        return
    res = pbo_cscv(m.to_numpy(dtype=np.float64), n_splits=s)
    metrics[name] = res.pbo
    metrics[f"{name}_splits"] = float(s)
    metrics[f"{name}_combinations"] = float(res.n_combinations)
    metrics[f"{name}_degradation_slope"] = res.degradation_slope
    pd.DataFrame(
        {
            "logit": res.logits,
            "is_best": [str(returns.columns[i]) for i in res.is_best],
            "oos_rank": res.oos_rank,
            "perf_is": res.perf_is,
            "perf_oos": res.perf_oos,
        }
    ).to_csv(os.path.join(out_dir, f"{name}_cscv.csv"), index=False)


def best_link_tags(client: Any, run_id: str) -> dict[str, str]:
    """Tags linking a sweep's parent to its best trial: run id, run name and a note with a link."""
    r = client.get_run(run_id)
    return {
        "btsys.best_run_id": run_id,
        "btsys.best_run_name": str(r.info.run_name),
        "mlflow.note.content": (
            f"Best trial: [{r.info.run_name}](#/experiments/{r.info.experiment_id}/runs/{run_id})"
        ),
    }


def _top_returns(top_results, returns, objective: str, direction: str):
    """``(best trial's daily returns for the DSR, returns for PBO, PBO basis)`` of a kernel sweep:
    every combination's returns when given (basis ``all``), else the top K's (``top_k``)."""
    best_ret = None
    sign = 1.0 if direction == "maximize" else -1.0
    scored = [
        (sign * float((r.metrics or {}).get(objective, float("nan"))), i)
        for i, (_, r) in enumerate(top_results)
    ]
    scored = [x for x in scored if math.isfinite(x[0])]
    if scored:
        best_ret = returns_frame(top_results[max(scored)[1]][1])["ret"].to_numpy()
    if returns is not None or len(top_results) < 2:
        return best_ret, returns, "all"
    cols = {}
    for i, (_, r) in enumerate(top_results):
        f = returns_frame(r)
        cols[f"top{i}"] = pd.Series(f["ret"].to_numpy(), index=f["ts"].to_numpy())
    return best_ret, pd.DataFrame(cols), "top_k"


def log_sweep_table(
    cfg: Any,
    table: pd.DataFrame,
    param_cols: Sequence[str],
    objective: str,
    top_results: Sequence[tuple[Mapping[str, Any], Any]],
    returns: Optional[pd.DataFrame] = None,
    keys: Optional[Mapping[str, str]] = None,
) -> Optional[str]:
    """Log a kernel-mode sweep (``sweep.mode=kernel``) as ONE run plus child runs for the top K.

    Parameters
    ----------
    table : one row per combination: the ``param_cols`` and the metric columns.
    top_results : ``[(params, BacktestResult), ...]`` for the top K combinations; ``params`` maps
        dotted config keys (``strategy.fast``) to values. Each becomes a child trial run whose
        config is ``cfg`` with those values set.
    returns : optional daily returns of every combination (index day, one column per table row
        label) for PBO over the whole grid; without it PBO is computed over the top K only
        (``pbo_top_k``).
    keys : stage cache keys tagged on the runs.
    """
    if not _enabled(cfg):
        return None
    from mlflow.entities import RunTag
    from omegaconf import OmegaConf

    missing = [c for c in param_cols if c not in table.columns]
    if missing:
        raise KeyError(
            f"log_sweep_table: param_cols {missing} are not columns of the table ({list(table.columns)[:20]})"
        )
    if objective not in table.columns:
        raise KeyError(f"log_sweep_table: objective {objective!r} is not a column of the table")
    client = client_for(cfg)
    exp = experiment_id(cfg, client)
    job = hydra_job()
    parent = parent_run_id(job)
    tags = _base_tags(cfg, "sweep_table", parent, job)
    for k, v in (keys or {}).items():
        tags[f"btsys.{k}_key"] = str(v)
    sweep = _section(cfg, "sweep")
    direction = str(_get(sweep, "direction", "maximize") or "maximize")
    run = client.create_run(exp, tags=tags, run_name=_grid_run_name(cfg, table, param_cols))
    rid = run.info.run_id
    try:
        best_ret, rets, basis = _top_returns(top_results, returns, objective, direction)
        params = param_items(cfg)
        for c in param_cols:
            params.pop(c, None)
        params["sweep.param_cols"] = ",".join(param_cols)
        with tempfile.TemporaryDirectory(prefix="btsys-sweep-") as d:
            metrics, stags, sparams = summarize_sweep(
                d,
                table,
                list(param_cols),
                objective,
                direction,
                returns=rets,
                best_returns=best_ret,
                returns_basis=basis,
            )
            with open(os.path.join(d, "config.yaml"), "w") as f:
                f.write(config_yaml(cfg))
            params.update(sparams)
            _log_batch(client, rid, params=params, metrics=metrics, tags=stags)
            client.log_artifacts(rid, d)
        base = OmegaConf.create(plain_config(cfg))
        kids = []
        for i, (p, r) in enumerate(top_results):
            child = OmegaConf.create(OmegaConf.to_container(base))
            for k, v in p.items():
                OmegaConf.update(child, k, v.item() if isinstance(v, np.generic) else v, force_add=True)
            name = _run_name(child, None, f"top{i + 1}")
            kids.append(_log_trial(client, exp, child, r, keys or {}, rid, None, run_name=name))
        if kids:  # top_results come best first
            client.log_batch(rid, tags=[RunTag(k, v) for k, v in best_link_tags(client, kids[0]).items()])
        client.set_terminated(rid, "FINISHED")
    except BaseException as e:
        _fail_run(client, rid, e)
        raise
    register_trial(job, rid, "FINISHED")
    return rid
