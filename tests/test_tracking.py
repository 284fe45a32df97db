"""The tracking store: fail fast naming the URI, safe creation under concurrency, artifacts beside
the database, experiments tagged for MLflow 3's model-development UI (real sqlite stores, real
processes, a closed loopback port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import TESTS
from test_report import compose
from test_report_helpers import make_result

from btsys.errors import TrackingError
from btsys.report import mlflow_log as ml
from btsys.report import tracking

ROOT = os.path.dirname(TESTS)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def _unwritable_folder(tmp_path) -> str:
    """A folder this process cannot write into (root ignores permission bits: /proc then)."""
    if os.geteuid() == 0:
        return "/proc"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return str(d)


def test_unwritable_sqlite_folder_fails_in_seconds_naming_the_uri(tmp_path):
    uri = f"sqlite:///{_unwritable_folder(tmp_path)}/mlflow.db"
    t0 = time.perf_counter()
    with pytest.raises(TrackingError) as e:
        tracking.make_client(uri)
    assert time.perf_counter() - t0 < 5
    assert e.value.key == "mlflow.tracking_uri" and uri in str(e.value) and "hint:" in str(e.value)


def test_unreachable_server_fails_in_seconds_naming_the_uri():
    uri = f"http://user:pw@127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingError) as e:
        tracking.check_tracking_uri(uri)
    assert time.perf_counter() - t0 < 5
    assert "http://***@127.0.0.1" in str(e.value) and "pw" not in str(e.value)


def test_a_new_folder_is_created_and_relative_paths_are_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.sqlite_path("sqlite:///runs/mlflow.db") == str(tmp_path / "runs" / "mlflow.db")
    assert tracking.sqlite_path("sqlite:////abs/m.db?timeout=5") == "/abs/m.db"
    assert tracking.sqlite_path("http://h") is None and tracking.sqlite_path("sqlite://") is None
    tracking.check_tracking_uri("sqlite:///runs/mlflow.db")
    assert (tmp_path / "runs").is_dir()


@pytest.mark.slow
def test_artifacts_live_beside_the_database_not_in_the_cwd(tmp_path, monkeypatch):
    cwd, store = tmp_path / "cwd", tmp_path / "store"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = compose(
        tmp_path, f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db", "mlflow.artifact_location=null"
    )
    rid = ml.log_run(cfg, make_result(10, 50, n=24 * 10, seed=1), {})
    uri = ml.client_for(cfg).get_run(rid).info.artifact_uri
    assert uri.replace("file://", "").startswith(str(store / "mlruns" / "demo"))
    assert (store / "mlruns" / "demo" / rid / "artifacts" / "tearsheet.html").is_file()
    assert sorted(os.listdir(cwd)) == []


@pytest.mark.slow
def test_experiments_are_tagged_model_development_when_created_or_first_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    raw = MlflowClient(uri)
    old = raw.create_experiment("made-elsewhere")  # an experiment btsys did not create
    assert "mlflow.experimentKind" not in raw.get_experiment(old).tags
    client = tracking.make_client(uri)
    for name in ("made-elsewhere", "new-one"):
        eid = tracking.ensure_experiment(client, uri, name)
        assert raw.get_experiment(eid).tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.ensure_experiment(client, uri, "made-elsewhere") == old


CONCURRENT = textwrap.dedent("""
    import os, sys, time
    import btsys.config  # noqa: F401
    from hydra import compose, initialize_config_dir
    from test_report_helpers import make_result
    from btsys.report import mlflow_log as ml

    db, barrier, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with initialize_config_dir({conf!r}, version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=demo", f"mlflow.tracking_uri=sqlite:///{{db}}",
                                           "mlflow.charts=false", f"strategy.fast={{5 + seed}}"])
    r = make_result(5 + seed, 50, n=24 * 10, seed=seed)
    import mlflow  # noqa: F401  (imported before the barrier: the runs begin together)
    open(f"{{barrier}}.ready{{seed}}", "w").close()
    while not os.path.exists(f"{{barrier}}.go"):
        time.sleep(0.005)
    print(ml.log_run(cfg, r, {{}}))
""")


@pytest.mark.slow
def test_runs_started_at_once_on_a_new_database_all_succeed(tmp_path):
    from conftest import CONF_DIR

    script = tmp_path / "one.py"
    script.write_text(CONCURRENT.format(conf=CONF_DIR))
    db, barrier, n = tmp_path / "new" / "mlflow.db", tmp_path / "barrier", 4
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT]))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(barrier), str(i)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.time() + 240
    while sum(os.path.exists(f"{barrier}.ready{i}") for i in range(n)) < n and time.time() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll()]
        time.sleep(0.05)
    open(f"{barrier}.go", "w").close()  # every process creates its client on the new store now
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    ids = {o.strip().splitlines()[-1] for o, _ in outs}
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{db}")
    runs = c.search_runs([c.get_experiment_by_name("demo").experiment_id])
    assert {r.info.run_id for r in runs} == ids and len(ids) == n
    assert all(r.info.status == "FINISHED" for r in runs)
