"""What a run leaves behind: nothing in the working directory but Hydra's outputs (real data or the
synthetic demo), no planted password anywhere it logs or stores (MLflow, Hydra, the store's
manifests and listings), a non-zero exit when every job of a multirun failed. Real ``btsys``
processes, real Spark, a real sqlite tracking store."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from btsys.data.synthetic import generate_mirror

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SECRET = "S3cretPa55w0rd"


def btsys(cwd, *args, timeout=600):
    exe = os.path.join(os.path.dirname(sys.executable), "btsys")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("source", ["file_mirror", "synthetic"])
def test_a_run_from_a_fresh_folder_leaves_only_hydra_outputs(tmp_path, source):
    """A real-data run from a ``file://`` mirror, and the synthetic demo, whose generated mirror goes
    under ``storage.root`` (never into the working directory)."""
    mirror, cwd, store, track = (tmp_path / d for d in ("mirror", "cwd", "store", "track"))
    cwd.mkdir()
    if source == "file_mirror":
        generate_mirror(
            str(mirror), symbols=["BTCUSDT"], start="2025-01-01", end="2025-01-02", ticks_per_day=4000
        )
        data = ["data=binance", f"data.source.base_url=file://{mirror}"]
    else:
        data = ["data.synthetic.ticks_per_day=4000"]
    p = btsys(
        cwd,
        "+experiment=demo",
        *data,
        "data.symbols=[BTCUSDT]",
        "data.start=2025-01-01",
        "data.end=2025-01-02",
        f"storage.root={store}",
        f"mlflow.tracking_uri=sqlite:///{track}/mlflow.db",
    )
    assert p.returncode == 0, p.stderr[-4000:]
    assert sorted(os.listdir(cwd)) == ["outputs"]
    assert sorted(os.listdir(track)) == ["mlflow.db", "mlflow.db.lock", "mlruns"]
    assert {"cache", "lake"} <= set(os.listdir(store))
    assert ("mirror" in os.listdir(store)) == (source == "synthetic")
    # one log format: btsys's lines, none in Spark's default layout ("26/01/01 12:00:00 WARN Utils: ...")
    assert re.search(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d ", p.stderr, re.M) is None, p.stderr[-3000:]
    assert (
        "Using Spark's default log4j profile" not in p.stderr and "Setting default log level" not in p.stderr
    )
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO btsys: demo: total_return ", p.stderr, re.M)


def _strings_with(root, needle: str) -> list[str]:
    """Files under ``root`` whose bytes contain ``needle``."""
    hits = []
    for dirpath, _, files in os.walk(root):
        for fn in files:
            path = os.path.join(dirpath, fn)
            with open(path, "rb") as f:
                if needle.encode() in f.read():
                    hits.append(path)
    return hits


def test_a_planted_password_is_nowhere_and_an_all_failed_multirun_exits_non_zero(new_mlflow_db, tmp_path):
    cwd, store, track = (tmp_path / d for d in ("cwd", "store", "track"))
    cwd.mkdir()
    new_mlflow_db(track)
    p = btsys(
        cwd,
        "-m",
        "+experiment=demo",
        "data=binance",
        f"data.source.base_url=http://btsys:{SECRET}@127.0.0.1:9/",  # nothing listens: every file fails
        "data.source.retries=0",
        "data.symbols=[BTCUSDT]",
        "data.start=2025-01-01",
        "data.end=2025-01-02",
        f"storage.root={store}",
        f"mlflow.tracking_uri=sqlite:///{track}/mlflow.db",
        "strategy.fast=5,10",
    )
    assert p.returncode == 2, p.stderr[-4000:]
    last = p.stderr.strip().splitlines()[-1]
    assert " ERROR btsys.report: all 2 jobs of the multirun failed" in last and "hint:" in last
    # the terminal, the job logs, .hydra/*.yaml, multirun.yaml, the sweep's state files
    assert SECRET not in p.stdout + p.stderr
    assert _strings_with(cwd, SECRET) == []
    # every param, tag (error tags too) and artifact of every run, and the database itself
    assert _strings_with(track, SECRET) == []
    # the store: the failed files' manifests and the listing that names them
    written = [str(p) for p in store.rglob("*") if p.is_file()]
    assert any("/lake/_manifest/" in f for f in written) and any(f.endswith("/listing.json") for f in written)
    assert _strings_with(store, SECRET) == []
    con = sqlite3.connect(track / "mlflow.db")
    runs = dict(con.execute("select run_uuid, status from runs").fetchall())
    assert len(runs) == 3 and set(runs.values()) == {"FAILED"}  # a FAILED parent and two children
    errors = [v for (v,) in con.execute("select value from tags where key = 'btsys.error'")]
    assert len(errors) >= 2 and all("http://***@127.0.0.1:9/" in e for e in errors[:2])
    urls = [v for (v,) in con.execute("select value from params where key = 'data.source.base_url'")]
    assert urls and set(urls) == {"http://***@127.0.0.1:9/"}
    con.close()
    hydra_overrides = next(cwd.glob("multirun/*/*/0/.hydra/overrides.yaml")).read_text()
    assert "***@127.0.0.1" in hydra_overrides  # rewritten, not dropped
