"""Progress a person can watch: bytes and rows inside a file while it runs, rate and ETA; a live bar
on a terminal, plain lines in logs, and no line repeated while nothing moved."""

from __future__ import annotations

import io
import json
import logging

import pytest
from faultserver import FaultServer

from btsys.data import binance as bn
from btsys.data.progress import IngestProgress, TaskProgress
from btsys.data.synthetic import generate_mirror
from btsys.stages import ingest as ingest_stage
from btsys.storage import LocalStorage


def test_task_states_and_plain_lines_only_when_something_moved(tmp_path, caplog):
    store = LocalStorage(str(tmp_path))
    a = TaskProgress(store, "p/a.json", "A.zip", interval_s=3600)
    a.update(phase="download")
    a.download(1_000_000, 4_000_000)  # not written: the interval has not passed and no phase change
    assert json.loads(store.read_text("p/a.json"))["dl"] == 0
    a.update(phase="parse", dl=4_000_000, size=4_000_000, parsed=1_000_000, rows=12_345)
    mon = IngestProgress(store, "p", n_files=2, log_every_s=0, tty=False)
    with caplog.at_level(logging.INFO, logger="btsys.data.ingest"):
        mon.poll()
        mon.poll()  # nothing moved: no second line
        a.update(phase="done", rows=50_000, parsed=4_000_000)
        mon.poll()
    lines = [r.getMessage() for r in caplog.records if "ingest progress" in r.getMessage()]
    assert len(lines) == 2
    assert "0/2 files, 4.0 MB of ~8.0 MB downloaded, 12,345 rows parsed" in lines[0] and "ETA" in lines[0]
    assert lines[1].startswith("ingest progress: 1/2 files") and "50,000 rows" in lines[1]


def test_a_terminal_gets_a_live_bar(tmp_path, monkeypatch):
    store = LocalStorage(str(tmp_path))
    TaskProgress(store, "p/a.json", "A.zip").update(phase="parse", dl=2_000_000, size=2_000_000, rows=7)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    mon = IngestProgress(store, "p", n_files=1, tty=True)
    mon.poll()
    mon.close()
    out = err.getvalue()
    assert "ingest" in out and "files 0/1" in out and "7 rows" in out and "%" in out


@pytest.mark.slow
def test_progress_moves_inside_a_file_that_is_still_downloading(spark, tmp_path, monkeypatch, caplog):
    site = tmp_path / "site"
    generate_mirror(str(site), start="2025-01-01", end="2025-01-01", ticks_per_day=3000)
    sf = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    size = (site / sf.rel).stat().st_size
    srv = FaultServer(str(site), trickle_bps=max(size // 6, 1000))  # about 6 s for the zip
    srv.faults["/" + sf.rel] = ["trickle"]
    monkeypatch.setattr(ingest_stage, "PROGRESS_EVERY_S", 0.5)
    try:
        with caplog.at_level(logging.INFO, logger="btsys.data.ingest"):
            out = ingest_stage.build(
                spark,
                {"market": "spot", "symbols": ["BTCUSDT"], "start": "2025-01-01", "end": "2025-01-01"},
                LocalStorage(str(tmp_path / "store")),
                srv.url,
                "c/a",
            )
    finally:
        srv.close()
    assert out["summary"]["ok"] == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ingest progress")]
    during = [
        ln
        for ln in lines
        if ln.startswith("ingest progress: 0/1 files") and not ln.split("files, ")[1].startswith("0.0 kB")
    ]
    assert during, lines  # bytes of the file that is still downloading
    assert all(a != b for a, b in zip(lines, lines[1:], strict=False))
