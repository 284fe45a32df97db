"""Shared fixtures: one Spark session per test session, a loopback HTTP file server, moto's S3 server.

Nothing here touches the internet: HTTP goes to 127.0.0.1, S3 to moto's server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import sys
import threading

import pytest

import btsys.config  # noqa: F401  (registers the config schemas for compose())

TESTS = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(TESTS, "data")
BINANCE_SAMPLES = os.path.join(DATA, "binance")
CONF_DIR = os.path.join(os.path.dirname(TESTS), "conf")

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("MPLBACKEND", "Agg")
# Dummy credentials for moto's server, set before any Spark worker starts so that Spark tasks find
# them in the standard AWS chain too (tests never reach a real AWS endpoint).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-key-id")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Every JVM the tests start (the session's, and those of the entry points run in subprocesses) compiles
# with C1 only: a test's Spark job is short, and C2's compiler threads roughly double the JVM's CPU
# time on the 2 shared cores (12 -> 6 CPU-seconds for a session start and two tiny jobs). Only speed
# changes; Spark's launcher reads SPARK_SUBMIT_OPTS without printing anything.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1")


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the Spark session (directly or through a fixture) ``spark``, so
    ``pytest -m "not spark and not slow"`` is the quick loop."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
    # the longest file first (stable: each file keeps its order): `make test` runs two workers, each
    # taking whole files (--dist loadfile), and this one would otherwise start last and run alone
    items.sort(key=lambda item: item.path.name != "test_workflows.py")


@pytest.fixture(scope="session")
def spark():
    """The test session's SparkSession: local[2], 2 shuffle partitions, UI off, UTC."""
    from btsys.spark import get_spark

    s = get_spark(
        {
            "master": "local[2]",
            "app_name": "btsys-tests",
            "conf": {
                "spark.sql.shuffle.partitions": "2",
                "spark.ui.enabled": "false",
                "spark.default.parallelism": "2",
            },
        }
    )
    yield s
    s.stop()


@pytest.fixture(scope="session")
def new_mlflow_db(tmp_path_factory):
    """``new_mlflow_db(folder)`` puts a new, empty MLflow sqlite store at ``folder/mlflow.db`` and
    returns its path.

    A store btsys creates costs seconds of schema migrations (mostly fsyncs); this copies one that
    ``make_client`` created once (milliseconds), with its Default experiment's artifacts under
    ``folder/mlruns``, as a store created from ``folder`` has them. Tests whose point is creating a
    store (concurrent first runs, a fresh folder, nothing written) let btsys create it instead.
    """
    import pathlib
    import sqlite3

    from btsys.report.tracking import make_client

    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    make_client(f"sqlite:///{template}").search_experiments()

    def make(folder) -> str:
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / "mlflow.db"
        shutil.copyfile(template, db)
        con = sqlite3.connect(db)
        with con:
            con.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (str(folder / "mlruns" / "0"),),
            )
        con.close()
        return str(db)

    return make


@pytest.fixture
def mlflow_db(new_mlflow_db, tmp_path) -> str:
    """A new, empty MLflow sqlite store at ``tmp_path / "mlflow.db"`` (see ``new_mlflow_db``)."""
    return new_mlflow_db(tmp_path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


class FileServer:
    """A threaded HTTP server on 127.0.0.1 serving one directory.

    ``fail[path] = [503, 503]`` makes the next requests for ``path`` answer those codes first.
    ``hits`` counts requests per path.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.fail: dict[str, list[int]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(_QuietHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                codes = server.fail.get(path)
                if codes:
                    code = codes.pop(0)
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=directory)
        )
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def file_server():
    """Factory: ``file_server(directory)`` starts a loopback HTTP server over a directory."""
    servers = []

    def start(directory: str) -> FileServer:
        s = FileServer(directory)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def binance_samples(tmp_path):
    """A writable copy of the real Binance sample files (tests/data/binance, see its SOURCES.md)."""
    dst = tmp_path / "binance"
    shutil.copytree(BINANCE_SAMPLES, dst)
    return str(dst)


@pytest.fixture(scope="session")
def moto_server():
    """moto's real S3 HTTP server on 127.0.0.1 (credentials: the dummy ones set above)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(moto_server):
    """A fresh bucket on the moto server; returns (endpoint_url, bucket)."""
    import uuid

    import boto3

    bucket = f"btsys-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return moto_server, bucket
