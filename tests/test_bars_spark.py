"""The bars Spark job over a real tick lake: for random streams and random file layouts (by day, by
row count, one row per file, empty files and empty days), every symbol's bars equal the
single-pass reference bit for bit; the real COIN-M day is one of the cases."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from test_bars import CASES, ref
from test_bars_reference import (
    BINANCE_CM_DAY,
    assert_bars_equal,
    gen_ticks,
    read_cm_day,
    split_rows,
    to_arrow,
)

from btsys.bars import BarsInputError, load_bars
from btsys.stages.bars import build as run_bars
from btsys.stages.cache import CacheEntry, cached, lookup, stage_key
from btsys.storage import LocalStorage, storage_from_dict

# Spark's Python workers inherit the environment of the JVM, which starts with the first test that
# uses the session's `spark` fixture: the moto dummy credentials (the same defaults conftest's
# moto_server sets) must already be there, so set them at collection time.
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_k, _v)


def write_lake(
    store,
    symbol: str,
    df: pd.DataFrame,
    how: str,
    seed: int = 0,
    market: str = "spot",
    with_first: bool = True,
) -> list[dict]:
    """Write a symbol's ticks as lake files (``lake/market=/symbol=/date=/part-k.parquet``)."""
    parts = []
    for k, (date, piece) in enumerate(split_rows(df, how, seed)):
        path = f"lake/market={market}/symbol={symbol}/date={date}/part-{k:05d}.parquet"
        store.write_parquet(to_arrow(piece), path)
        part = {"market": market, "symbol": symbol, "date": date, "path": path, "rows": len(piece)}
        if len(piece) and with_first:  # the ingest listing carries these (order within a date)
            part.update(first_ts=int(piece["ts"].iloc[0]), min_id=int(piece["trade_id"].iloc[0]))
        parts.append(part)
    return parts


def entry(parts):
    return CacheEntry("ingest", "testkey", "cache/ingest/testkey/x", {"partitions": parts})


# one lake shared by the parametrised job runs: symbol -> (ticks, layout)
LAYOUTS = {
    "BYDAY": ("day+empty", 3000, 2),
    "BYROWS": ("rows+empty", 3000, 1),
    "ONEROW": ("one", 60, 0),
    "SINGLE": ("day", 1, 0),
    "NULLSIDE": ("rows", 1500, 3),
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    store = LocalStorage(str(tmp_path_factory.mktemp("bars_lake")))
    parts, ticks = [], {}
    for i, (sym, (how, n, gap)) in enumerate(LAYOUTS.items()):
        df = gen_ticks(100 + i, n, days=4.0, null_side=0.3 if sym == "NULLSIDE" else 0.0, gap_days=gap)
        ticks[sym] = df
        parts += write_lake(store, sym, df, how, seed=i)
    # an empty day partition in the middle of BYROWS's stream (the ingest lists a 0-row day file)
    empty_day = {
        "market": "spot",
        "symbol": "BYROWS",
        "date": "2025-01-02b",
        "rows": 0,
        "path": "lake/market=spot/symbol=BYROWS/date=2025-01-02b/part-0.parquet",
    }
    store.write_parquet(to_arrow(ticks["BYROWS"].iloc[:0]), empty_day["path"])
    parts.append(empty_day)
    rng = np.random.default_rng(0)
    rng.shuffle(parts)  # the listing order across symbols and dates must not matter
    return store, parts, ticks


@pytest.mark.parametrize(
    "name",
    [
        "dollar",
        "dollar_dyn",
        "volume_dyn_fixed_warmup",
        "tick",
        "time_1h",
        "tick_imbalance",
        "volume_run",
        "dollar_imbalance",
    ],
)
def test_spark_job_equals_single_pass_reference(spark, lake, name):
    store, parts, ticks = lake
    kind, opts = CASES[name]
    cfg = {"kind": kind, "keep_partial": False, **opts}
    meta = run_bars(spark, cfg, store, entry(parts), f"out/{name}")
    assert sorted(meta["symbols"]) == sorted(LAYOUTS)
    for sym, df in ticks.items():
        want, want_thr = ref(df, kind, opts, keep_partial=True)
        got = load_bars(store, meta, sym, keep_partial=True)
        assert_bars_equal(got, want, f"{name} {sym} ({LAYOUTS[sym][0]})")
        m = meta["symbols"][sym]
        assert m["n_bars"] == int((~want["is_partial"]).sum()) and m["partial"] == bool(
            want["is_partial"].any()
        )
        assert m["n_ticks"] == len(df)
        assert_bars_equal(load_bars(store, meta, sym), want[~want["is_partial"]], f"{name} {sym} complete")
        assert_bars_equal(load_bars(store, f"out/{name}", sym), want[~want["is_partial"]], "by prefix")
        if "thresholds" in m:
            assert list(m["thresholds"].values()) == list(want_thr.values())


def test_spark_job_real_coin_m_day(spark, tmp_path):
    store = LocalStorage(str(tmp_path))
    df = read_cm_day(BINANCE_CM_DAY)
    parts = write_lake(store, "BTCUSD_PERP", df, "rows", seed=5, market="cm", with_first=False)
    hours = pd.to_datetime(df["ts"], unit="us").dt.hour
    for h in range(24):  # the same day as 24 hourly files under a second name
        piece = df[hours == h]
        path = f"lake/market=cm/symbol=HOURLY/date=2026-05-08/part-{h:02d}.parquet"
        store.write_parquet(to_arrow(piece), path)
        parts.append(
            {"market": "cm", "symbol": "HOURLY", "date": "2026-05-08", "path": path, "rows": len(piece)}
        )
    assert len({p["path"] for p in parts}) > 24
    for kind, opts in [
        ("dollar", dict(threshold=2e6)),
        ("tick_imbalance", dict(expected_ticks_init=200, ewma_span=5, min_ticks=3, max_ticks=5000)),
    ]:
        meta = run_bars(spark, {"kind": kind, **opts}, store, {"partitions": parts}, f"out/{kind}")
        want, _ = ref(df, kind, opts, keep_partial=True)
        assert len(want) > 20
        for sym in ("BTCUSD_PERP", "HOURLY"):
            assert_bars_equal(load_bars(store, meta, sym, keep_partial=True), want, f"COIN-M {kind} {sym}")


def test_spark_job_errors_name_the_file_and_row(spark, tmp_path):
    store = LocalStorage(str(tmp_path))
    df = gen_ticks(3, 400, days=2.0)
    df.loc[150, ["qty", "quote_qty"]] = 0.0
    parts = write_lake(store, "BAD", df, "day")
    bad = next(
        p for p in parts if p["date"] == pd.Timestamp(df.loc[150, "ts"], unit="us").strftime("%Y-%m-%d")
    )
    row = 150 - sum(p["rows"] for p in parts if p["date"] < bad["date"])
    with pytest.raises(Exception) as ei:
        run_bars(spark, {"kind": "dollar", "threshold": 100.0}, store, {"partitions": parts}, "out/bad")
    text = str(ei.value)
    assert "BarsInputError" in text and bad["path"] in text and f"row {row}: qty must be" in text
    # files listed out of order are caught at the boundary, naming the file
    df = gen_ticks(3, 400, days=2.0)
    parts = write_lake(store, "ORDER", df, "day")
    parts[0]["date"], parts[1]["date"] = parts[1]["date"], parts[0]["date"]
    with pytest.raises(Exception) as ei:
        run_bars(spark, {"kind": "tick", "threshold": 5}, store, {"partitions": parts}, "out/order")
    assert parts[0]["path"] in str(ei.value) and "ticks must be sorted" in str(ei.value)
    with pytest.raises(BarsInputError, match="markets"):
        run_bars(
            spark,
            {"kind": "tick", "threshold": 5},
            store,
            {"partitions": [dict(parts[0]), dict(parts[1], market="um")]},
            "out/x",
        )


def test_spark_job_on_s3_store_via_pipeline_cache(spark, s3_bucket):
    endpoint, bucket = s3_bucket
    store = storage_from_dict({"kind": "s3", "root": f"s3://{bucket}/btsys", "endpoint_url": endpoint})
    df = gen_ticks(21, 2000, days=3.0)
    parts = write_lake(store, "S3SYM", df, "rows", seed=2)
    ingest = entry(parts)
    cfg = {
        "kind": "dollar",
        "threshold": 1500.0,
        "threshold_mode": "dynamic",
        "bars_per_day": 40.0,
        "lookback_days": 2,
        "keep_partial": False,
    }
    key = stage_key("bars", cfg, ingest.key)
    calls = []

    def build(prefix):
        calls.append(prefix)
        return run_bars(spark, cfg, store, ingest, prefix)

    e1 = cached(store, "bars", key, build)
    e2 = cached(store, "bars", key, build)  # a second run (a sweep job) reuses the bars
    assert len(calls) == 1 and e2.hit and lookup(store, "bars", key).prefix == e1.prefix
    want, _ = ref(df, "dollar", {k: v for k, v in cfg.items() if k not in ("kind", "keep_partial")})
    assert_bars_equal(load_bars(store, e2, "S3SYM"), want, "s3")
    assert json.loads(json.dumps(e2.meta)) == e2.meta


def test_jobs_bars_entry_point_runs_ingest_and_bars_cached(spark, tmp_path, capsys):
    """`python jobs/bars.py +experiment=demo ...`: composes conf/, runs the (cached) ingest of a tiny
    synthetic mirror and the bars stage; a rerun is a cache hit."""
    import importlib.util

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("jobs_bars", os.path.join(repo, "jobs", "bars.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = [
        "+experiment=demo",
        f"storage.root={tmp_path}",
        "data.symbols=[BTCUSDT]",
        "data.end=2025-01-02",
        "data.synthetic.ticks_per_day=1500",
        "bars.bars_per_day=20",
    ]
    out = mod.main(args)
    assert not out["cache_hit"] and list(out["symbols"]) == ["BTCUSDT"]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["bars_key"] == out["bars_key"]
    m = out["symbols"]["BTCUSDT"]
    assert m["n_ticks"] == 3000 and list(m["thresholds"]) == ["2025-01-01", "2025-01-02"]
    store = LocalStorage(str(tmp_path))
    bars = load_bars(store, out["bars_prefix"].split(str(tmp_path) + "/", 1)[1], "BTCUSDT")
    assert len(bars) == m["n_bars"] > 0
    assert mod.main(args)["cache_hit"]
