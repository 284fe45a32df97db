"""The MLflow tracking store: checked before use, created once, artifacts kept beside it.

* :func:`check_tracking_uri` fails in seconds, naming ``mlflow.tracking_uri``, when a sqlite store's
  folder cannot be written or an HTTP server does not answer (MLflow itself retries for minutes).
* :func:`make_client` creates (or migrates) a new sqlite store under an exclusive file lock
  ``<db>.lock`` beside the database, so runs started at once on a new store do not race through
  MLflow's schema migration.
* :func:`ensure_experiment` creates an experiment with its artifacts next to a sqlite store
  (``<db folder>/mlruns/<experiment>``, not ``./mlruns`` in whatever folder the run started from)
  and tags it ``mlflow.experimentKind=custom_model_development`` (created or first used), so the
  MLflow 3 UI opens it on runs, metrics and artifacts instead of its GenAI views.
* :func:`ui_url` is the link to an experiment or run page. MLflow 3.17's UI ignores the tag and
  shows the mode of its global GenAI / "Model training" switch (GenAI until changed); the link
  carries ``workflowType=machine_learning``, which selects the runs view whatever the switch says.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from btsys.errors import ConfigError, TrackingError
from btsys.redact import redact_url

KEY = "mlflow.tracking_uri"
#: Where ``make ui`` serves a local store (``mlflow ui --host 127.0.0.1 --port 5000``).
UI_DEFAULT = "http://127.0.0.1:5000"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
CHECK_TIMEOUT_S = 5.0
LOCK_TIMEOUT_S = 120.0


def sqlite_path(uri: str) -> Optional[str]:
    """Absolute database path of a ``sqlite:///`` URI (relative paths: to the working directory);
    ``None`` for other schemes and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return os.path.abspath(path)


def _check_folder(uri: str, db: str) -> None:
    folder = os.path.dirname(db)
    hint = "point mlflow.tracking_uri at a writable folder, e.g. sqlite:///$PWD/mlflow.db"
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        if os.path.exists(db):
            with open(db, "ab"):
                pass
    except OSError as e:
        raise TrackingError(
            f"{redact_url(uri)}: cannot write the tracking database in {folder} ({e.strerror or e})",
            key=KEY,
            hint=hint,
        ) from None


def _check_http(uri: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # the server answered (a proxy may not know /health): reachable
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(
            f"{redact_url(uri)}: the tracking server does not answer ({reason})",
            key=KEY,
            hint="start it (mlflow server ...) or use a local store: mlflow.tracking_uri=sqlite:///mlflow.db",
        ) from None


def check_tracking_uri(uri: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` unless the store at ``uri`` can be used (sqlite: its folder and
    file are writable; http(s): the server answers within ``timeout`` seconds)."""
    db = sqlite_path(uri)
    if db is not None:
        _check_folder(uri, db)
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, timeout)


@contextmanager
def store_lock(uri: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive lock on ``<db>.lock`` beside a sqlite store (no-op for other stores)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    with open(db + ".lock", "a+") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingError(
                        f"{redact_url(uri)}: another process has held {db}.lock for {timeout:.0f} s",
                        key=KEY,
                        hint="wait for it to finish, or remove the lock file if no btsys process is running",
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def make_client(uri: str):
    """A checked :class:`mlflow.tracking.MlflowClient` whose store exists (created under the lock)."""
    check_tracking_uri(uri)
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        return MlflowClient(tracking_uri=uri)  # the constructor creates or migrates the schema


def default_artifact_location(uri: str, experiment: str) -> Optional[str]:
    """``<db folder>/mlruns/<experiment>`` for a sqlite store; ``None`` (the server decides) else."""
    db = sqlite_path(uri)
    if db is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return os.path.join(os.path.dirname(db), "mlruns", safe)


def ensure_experiment(client: Any, uri: str, name: str, artifact_location: Optional[str] = None) -> str:
    """Id of experiment ``name``, created if needed; tagged as a model-development experiment."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = artifact_location or default_artifact_location(uri, name)
        with store_lock(uri):
            try:
                return client.create_experiment(
                    name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            except Exception:  # created meanwhile by another process (a server has no lock)
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"experiment {name!r} is deleted in {redact_url(uri)}",
            key="mlflow.experiment_name",
            hint="restore it in the MLflow UI or choose another mlflow.experiment_name",
        )
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def ui_url(uri: str, experiment_id: str, run_id: Optional[str] = None) -> str:
    """Link to an experiment's runs table (or a run) in the MLflow UI, in its model-training view:
    the tracking server itself for an ``http(s)`` store, else where ``make ui`` serves it."""
    base = redact_url(uri.rstrip("/")) if uri.startswith(("http://", "https://")) else UI_DEFAULT
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base}/{page}?workflowType=machine_learning"
