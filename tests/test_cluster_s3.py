"""Scale-out paths: the jobs on a real multi-process Spark cluster, the whole pipeline on S3 (moto).

* ``spark-submit --master local-cluster[2,1,1024] jobs/bars.py ...`` starts two executor JVMs, each
  with its own Python workers, ships the package as a zip (``spark=cluster``), and must produce
  the same tick lake and bars as local mode in this process.
* The demo pipeline with ``storage=s3`` against moto's S3 server on 127.0.0.1: lake, caches and
  results land in the bucket, a second run is served from the S3 cache, and no credential reaches
  MLflow (params, tags, artifacts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir

from btsys import pipeline as P
from btsys.stages import bars, ingest
from btsys.stages.context import RunContext
from btsys.storage import LocalStorage, storage_from_dict

REPO = os.path.dirname(CONF_DIR)
SMALL = ["+experiment=demo", "data.synthetic.ticks_per_day=4000", "data.end=2025-01-03"]


def _cfg(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _lake(store) -> dict:
    out = {}
    for key in store.list("lake"):
        if key.endswith(".parquet") and "/_" not in key:
            out[key] = store.read_parquet(key).to_pandas()
    return out


def test_jobs_on_local_cluster_equal_local_mode(tmp_path, spark, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cluster_root = tmp_path / "cluster"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "spark-submit"),
        "--master",
        "local-cluster[2,1,1024]",
        "--conf",
        "spark.ui.enabled=false",
        os.path.join(REPO, "jobs", "bars.py"),
        *SMALL,
        "spark=cluster",
        f"storage.root={cluster_root}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])

    cfg = _cfg([*SMALL, f"storage.root={tmp_path / 'local'}"])
    ctx = RunContext(cfg)
    listing = ingest.run(ctx)
    built = bars.run(ctx, listing)
    assert built.key == out["bars_key"]  # same config, same content address

    local_store, cluster_store = LocalStorage(str(tmp_path / "local")), LocalStorage(str(cluster_root))
    local_lake, cluster_lake = _lake(local_store), _lake(cluster_store)
    assert local_lake and sorted(local_lake) == sorted(cluster_lake)
    for k in local_lake:
        pd.testing.assert_frame_equal(local_lake[k], cluster_lake[k], check_exact=True)
    assert sorted(out["symbols"]) == sorted(built.meta["symbols"]) == ["BTCUSDT", "ETHUSDT"]
    for sym, info in built.meta["symbols"].items():
        a = local_store.read_parquet(info["path"]).to_pandas()
        b = cluster_store.read_parquet(out["symbols"][sym]["path"]).to_pandas()
        assert len(a) > 10
        pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.spark
@pytest.mark.slow
def test_shipped_package_is_what_executors_import(tmp_path):
    """``spark.ship_package=true``: executors import btsys from the shipped zip, not from a local install."""
    code = (
        "from btsys.spark import get_spark\n"
        "s = get_spark({'master': 'local-cluster[2,1,1024]', 'ship_package': True,"
        " 'conf': {'spark.ui.enabled': 'false'}})\n"
        "def f(_):\n"
        "    import btsys, os\n"
        "    yield (btsys.__file__, os.getpid())\n"
        "print('RESULT', sorted(set(s.sparkContext.parallelize(range(4), 4).mapPartitions(f).collect())))\n"
        "s.stop()\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=dict(os.environ, PYSPARK_PYTHON=sys.executable),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    files = eval(r.stdout.split("RESULT", 1)[1].strip())
    assert files and all("btsys.zip" in f for f, _ in files), files
    assert all(pid != os.getpid() for _, pid in files)


def test_demo_pipeline_on_s3(tmp_path, spark, s3_bucket, monkeypatch, caplog):
    endpoint, bucket = s3_bucket
    monkeypatch.chdir(tmp_path)
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    key_id = os.environ["AWS_ACCESS_KEY_ID"]
    base = [
        *SMALL,
        "data.symbols=[BTCUSDT]",
        "storage=s3",
        f"storage.root=s3://{bucket}/btsys",
        f"storage.endpoint_url={endpoint}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    ]
    out1 = P.run(_cfg(base))
    store = storage_from_dict({"kind": "s3", "root": f"s3://{bucket}/btsys", "endpoint_url": endpoint})
    keys = store.list()
    assert "lake/market=spot/dataset=aggTrades/symbol=BTCUSDT/date=2025-01-01/part-0.parquet" in keys
    assert any(k.startswith("mirror/") and k.endswith("_MIRROR.json") for k in keys)  # the mirror is in S3
    assert any(k.startswith(f"cache/bars/{out1['bars_key']}/") and k.endswith("bars.parquet") for k in keys)
    assert any(k.startswith("results/") and k.endswith("metrics.json") for k in keys)
    assert json.loads(
        store.read_text(out1["results"].split(f"s3://{bucket}/btsys/", 1)[1] + "/metrics.json")
    )["final_value"] == pytest.approx(out1["final_value"])

    before = set(keys)
    caplog.clear()
    with caplog.at_level("INFO", logger="btsys.stages"):
        out2 = P.run(_cfg([*base, "strategy.fast=7"]))  # a new trial over the same data
    assert "cache hit: ingest" in caplog.text and "cache hit: bars" in caplog.text
    assert "cache hit: features" in caplog.text and "computing" not in caplog.text
    new = set(store.list()) - before
    assert new and all(k.startswith("results/") for k in new)  # nothing recomputed, only new results
    assert out2["bars_key"] == out1["bars_key"]

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("demo")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    for run in runs:
        for text in list(run.data.params.values()) + list(run.data.tags.values()):
            assert secret not in text and key_id not in text
        d = tmp_path / f"art-{run.info.run_id}"
        client.download_artifacts(run.info.run_id, "", str(d))
        for dirpath, _, files in os.walk(d):
            for fn in files:
                blob = open(os.path.join(dirpath, fn), "rb").read()
                assert secret.encode() not in blob and key_id.encode() not in blob, fn
    assert runs[0].data.params["storage.root"] == f"s3://{bucket}/btsys"
