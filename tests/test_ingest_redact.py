"""A password in ``data.source.base_url`` is used to fetch, and found nowhere the ingest writes or logs:
manifests, listings, the cache marker, quarantine, error messages and log lines."""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import pathlib

from conftest import CONF_DIR
from faultserver import FaultServer

from btsys.data import binance as bn
from btsys.data.ingest import ingest_file, task_settings
from btsys.data.synthetic import generate_mirror
from btsys.errors import USER_ERROR_EXIT
from btsys.storage import LocalStorage

SECRET = "pa55-W0rd-planted"
DAY2 = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-02")


def _job():
    path = os.path.join(os.path.dirname(CONF_DIR), "jobs", "ingest.py")
    spec = importlib.util.spec_from_file_location("jobs_ingest_redact", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_password_in_base_url_is_sent_but_never_stored_or_logged(spark, tmp_path, capsys, caplog):
    site = tmp_path / "site"
    generate_mirror(str(site), start="2025-01-01", end="2025-01-02", ticks_per_day=100)
    srv = FaultServer(str(site))
    srv.faults["/" + DAY2.rel] = ["500"] * 10  # a failed file: its error names the URL
    base = f"http://alice:{SECRET}@127.0.0.1:{srv.port}"
    store = tmp_path / "store"
    argv = [
        "data=binance",
        "data.symbols=[BTCUSDT]",
        "data.start=2025-01-01",
        "data.end=2025-01-03",  # day 3 is not published: a missing file names its URL too
        f"data.source.base_url='{base}'",
        "data.source.retries=1",
        "data.source.backoff_s=0.01",
        f"storage.root={store}",
    ]
    try:
        with caplog.at_level(logging.DEBUG):
            try:
                _job().main(argv)
                code = 0
            except SystemExit as e:
                code = e.code
            st = task_settings({"source": {"retries": 0}}, base)
            ingest_file(
                bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01"),
                LocalStorage(str(tmp_path / "s2")),
                st,
            )
        out, err = capsys.readouterr()
    finally:
        srv.close()
    line = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "btsys"]
    assert code == USER_ERROR_EXIT and len(line) == 1  # the one-line user error
    assert "BTCUSDT-aggTrades-2025-01-02.zip: failed" in line[0] and "alice:***" not in line[0]
    assert "http://***@127.0.0.1" in line[0]
    token = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert srv.auth and set(srv.auth) == {token}  # the credentials were used
    for text in (out, err, caplog.text):
        assert SECRET not in text
    written = [p for p in pathlib.Path(tmp_path).rglob("*") if p.is_file() and "site" not in p.parts]
    assert any(p.name == "listing.json" for p in written) and any("_manifest" in str(p) for p in written)
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), p
