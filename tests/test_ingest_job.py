"""jobs/ingest.py: Hydra compose with the same overrides as ``python -m btsys``, ingest stage only."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _job():
    spec = importlib.util.spec_from_file_location("jobs_ingest", os.path.join(REPO, "jobs", "ingest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compose_demo_and_real_experiment():
    from btsys.config import compose  # what the entry point composes with

    cfg = compose(["+experiment=demo", "data.symbols=[BTCUSDT]"])
    assert cfg.data.name == "synthetic" and list(cfg.data.symbols) == ["BTCUSDT"]
    real = compose(["+experiment=btc_dollar_ma"])
    assert real.data.name == "binance" and real.data.source.base_url == "https://data.binance.vision"
    assert (str(real.data.market.value), real.data.start, real.data.end) == (
        "spot",
        "2025-01-01",
        "2025-01-31",
    )
    assert real.bars.kind == "dollar" and real.strategy.name == "ma_cross"
    with pytest.raises(Exception, match="sybmols"):
        compose(["+experiment=demo", "data.sybmols=[BTCUSDT]"])


def test_job_runs_the_ingest_stage_and_caches(spark, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    job = _job()
    args = [
        "+experiment=demo",
        "data.symbols=[ETHUSDT]",
        "data.end=2025-01-02",
        "data.synthetic.ticks_per_day=500",
        "spark.conf={spark.sql.shuffle.partitions: '2'}",
    ]
    out = job.main(args)
    assert out["cache_hit"] is False and out["summary"]["rows"] == 1000 and out["summary"]["ok"] == 2
    listing = json.load(open(out["listing"]))
    assert [(p["symbol"], p["date"]) for p in listing["partitions"]] == [
        ("ETHUSDT", "2025-01-01"),
        ("ETHUSDT", "2025-01-02"),
    ]
    assert os.path.isdir(tmp_path / "data" / "mirror") and os.path.isdir(tmp_path / "data" / "lake")
    again = job.main(args)
    assert again["cache_hit"] is True and again["ingest_key"] == out["ingest_key"]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed[-1]["ingest_key"] == out["ingest_key"]
