"""End-to-end ingest through Spark: real samples over loopback HTTP, synthetic mirrors (spot ms/µs,
USD-M, COIN-M), retries, missing days, reruns after a kill, cross-file duplicates, S3 (moto)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from conftest import BINANCE_SAMPLES

from btsys.data import binance as bn
from btsys.data.ingest import IngestError, manifest_key, read_funding, read_ticks
from btsys.data.synthetic import generate_mirror
from btsys.stages.ingest import build as run_ingest
from btsys.storage import LocalStorage, storage_from_dict

# Spark's Python workers inherit the environment the JVM was started with, so the dummy AWS
# credentials of the moto fixture must be in place before the (session-wide) Spark session starts:
# set them at collection time, with the same values conftest's moto_server uses.
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_k, _v)

FAST = {"source": {"retries": 3, "backoff_s": 0.01, "timeout_s": 10}}


def cfg(**kw):
    c = {
        "market": "spot",
        "dataset": "aggTrades",
        "symbols": ["BTCUSDT"],
        "start": "2025-01-01",
        "end": "2025-01-01",
        **FAST,
    }
    c.update(kw)
    return c


def rewrite_zip(path: pathlib.Path, member: str, payload: bytes) -> None:
    """Replace a mirror zip's content and its CHECKSUM (a consistent but altered file)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, payload)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    pathlib.Path(str(path) + ".CHECKSUM").write_text(f"{sha}  {path.name}\n")


def lake_state(store):
    return {
        k: hashlib.sha256(store.read_bytes(k)).hexdigest()
        for k in store.list("lake")
        if k.endswith(".parquet")
    }


@pytest.fixture
def served_samples(tmp_path, file_server):
    """The real samples under a Binance-like root (``<root>/data/futures/...``) on loopback HTTP."""
    root = tmp_path / "site"
    shutil.copytree(BINANCE_SAMPLES, root / "data")
    return file_server(str(root))


def test_real_cm_aggtrades_day_over_http(spark, served_samples, tmp_path):
    store = LocalStorage(str(tmp_path / "store"))
    out = run_ingest(
        spark,
        cfg(market="cm", symbols=["BTCUSD_PERP"], start="2026-05-08", end="2026-05-08"),
        store,
        served_samples.url,
        "cache/ingest/k/a",
    )
    assert [(p["symbol"], p["date"], p["rows"]) for p in out["partitions"]] == [
        ("BTCUSD_PERP", "2026-05-08", 105_280)
    ]
    p = out["partitions"][0]
    assert p["path"] == "lake/market=cm/dataset=aggTrades/symbol=BTCUSD_PERP/date=2026-05-08/part-0.parquet"
    t = read_ticks(store, [p["path"]])
    assert t.num_rows == 105_280 and t["ts"][0].as_py() == 1778198400020000
    ids = t["trade_id"].to_numpy()
    assert np.all(np.diff(ids) == 1) and np.all(np.diff(t["ts"].to_numpy()) >= 0)
    np.testing.assert_array_equal(t["quote_qty"].to_numpy(), t["qty"].to_numpy() * 100.0)
    listing = json.loads(store.read_text("cache/ingest/k/a/listing.json"))
    assert listing["partitions"] == out["partitions"]
    man = json.loads(
        store.read_text(manifest_key(bn.source_file("cm", "aggTrades", "BTCUSD_PERP", "daily", "2026-05-08")))
    )
    assert man["status"] == "ok" and man["rows"] == 105_280 and man["id_gaps"] == 0
    assert (
        man["sha256"]
        == open(
            os.path.join(
                BINANCE_SAMPLES,
                "futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip.CHECKSUM",
            )
        )
        .read()
        .split()[0]
    )
    assert out["summary"]["rows"] == 105_280 and out["summary"]["ok"] == 1


def test_real_um_funding_month_and_missing_ticks(spark, served_samples, tmp_path):
    """April 2026 for USD-M BTCUSDT: the funding file is served, the monthly aggTrades is not (404)
    and neither are the daily files asked for in its place."""
    store = LocalStorage(str(tmp_path / "store"))
    c = cfg(market="um", start="2026-04-01", end="2026-04-30", funding=True)
    out = run_ingest(spark, c, store, served_samples.url, "cache/ingest/k/a")
    assert out["partitions"] == []
    assert out["summary"]["missing_files"] == sorted(
        ["BTCUSDT-aggTrades-2026-04.zip"] + [f"BTCUSDT-aggTrades-2026-04-{d:02d}.zip" for d in range(1, 31)]
    )
    assert [(f["symbol"], f["month"], f["rows"]) for f in out["funding"]] == [("BTCUSDT", "2026-04", 90)]
    df = read_funding(store, [f["path"] for f in out["funding"]])
    assert len(df) == 90 and df["ts"].iloc[0] == 1775001600000000
    with pytest.raises(IngestError, match="BTCUSDT-aggTrades-2026-04.zip: missing"):
        run_ingest(spark, {**c, "require_complete": True}, store, served_samples.url, "cache/ingest/k/b")


def test_synthetic_mirror_spot_ms_us_um_cm(spark, tmp_path):
    root = tmp_path / "mirror"
    inv = generate_mirror(
        str(root),
        markets=["spot", "um", "cm"],
        symbols=["BTCUSDT", "ETHUSDT"],
        start="2024-12-31",
        end="2025-01-01",
        ticks_per_day=2000,
        seed=3,
    )
    units = {(f["rel"].split("/")[1], f["time_unit"], f["header"]) for f in inv["files"]}
    assert (
        ("spot", "ms", False) in units and ("spot", "us", False) in units and ("futures", "ms", True) in units
    )
    base = root.as_uri()
    store = LocalStorage(str(tmp_path / "store"))
    for market in ("spot", "um", "cm"):
        out = run_ingest(
            spark,
            cfg(market=market, symbols=["BTCUSDT", "ETHUSDT"], start="2024-12-31", end="2025-01-01"),
            store,
            base,
            f"cache/ingest/{market}/a",
        )
        parts = out["partitions"]
        assert [(p["symbol"], p["date"], p["rows"]) for p in parts] == [
            (s, d, 2000) for s in ("BTCUSDT", "ETHUSDT") for d in ("2024-12-31", "2025-01-01")
        ]
        for sym in ("BTCUSDT", "ETHUSDT"):
            t = read_ticks(store, [p["path"] for p in parts if p["symbol"] == sym])
            ts = t["ts"].to_numpy()
            assert ts[0] >= 1735603200000000 and ts[-1] < 1735776000000000  # µs inside the two days
            assert np.all(np.diff(ts) >= 0) and np.all(np.diff(t["trade_id"].to_numpy()) == 1)
            assert (t["price"].to_numpy() > 0).all() and (t["qty"].to_numpy() > 0).all()
        assert out["summary"]["dropped"] == {} and out["summary"]["id_gaps"] == 0


def test_503_twice_then_success_through_spark(spark, tmp_path, file_server):
    root = tmp_path / "mirror"
    generate_mirror(str(root), symbols=["BTCUSDT"], start="2025-01-01", end="2025-01-02", ticks_per_day=500)
    srv = file_server(str(root))
    sf = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    srv.fail["/" + sf.rel] = [503, 503]
    store = LocalStorage(str(tmp_path / "store"))
    out = run_ingest(spark, cfg(end="2025-01-02"), store, srv.url, "cache/i/a")
    assert srv.hits["/" + sf.rel] == 3
    assert out["summary"]["ok"] == 2 and [p["rows"] for p in out["partitions"]] == [500, 500]


def test_failed_file_raises_after_the_rest_and_rerun_retries_only_it(spark, tmp_path, file_server):
    root = tmp_path / "mirror"
    generate_mirror(str(root), symbols=["BTCUSDT"], start="2025-01-01", end="2025-01-03", ticks_per_day=500)
    bad = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    path = root / bad.rel
    good_bytes = path.read_bytes()
    path.write_bytes(good_bytes[:-100])  # CHECKSUM no longer matches
    srv = file_server(str(root))
    store = LocalStorage(str(tmp_path / "store"))
    with pytest.raises(
        IngestError, match="BTCUSDT-aggTrades-2025-01-02.zip: quarantined: .*SHA-256 mismatch"
    ) as ei:
        run_ingest(spark, cfg(end="2025-01-03"), store, srv.url, "cache/i/a")
    rep = ei.value.report
    assert [p["date"] for p in rep["partitions"]] == ["2025-01-01", "2025-01-03"]
    assert store.exists(f"quarantine/{bad.rel}")
    before = lake_state(store)
    path.write_bytes(good_bytes)  # the site is fixed; rerun
    hits = dict(srv.hits)
    out = run_ingest(spark, cfg(end="2025-01-03"), store, srv.url, "cache/i/b")
    assert [p["date"] for p in out["partitions"]] == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert out["summary"]["reused"] == 2
    zips = {
        k: srv.hits[k] - hits.get(k, 0)
        for k in srv.hits
        if k.endswith(".zip") and srv.hits[k] > hits.get(k, 0)
    }
    assert zips == {"/" + bad.rel: 1}  # only the failed zip was downloaded again
    after = lake_state(store)
    assert {k: v for k, v in after.items() if k in before} == before


def test_killed_run_then_rerun_gives_the_same_lake(spark, tmp_path):
    root = tmp_path / "mirror"
    generate_mirror(
        str(root),
        markets=["um"],
        symbols=["BTCUSDT"],
        start="2024-11-30",
        end="2024-12-31",
        ticks_per_day=300,
    )
    base = root.as_uri()
    store = LocalStorage(str(tmp_path / "store"))
    c = cfg(market="um", start="2024-11-30", end="2024-12-31")
    first = run_ingest(spark, c, store, base, "cache/i/a")
    assert len(first["partitions"]) == 32 and first["summary"]["unsorted_files"] == 1  # the jumbled month
    reference = lake_state(store)
    # simulate a task killed mid-way through the monthly file: no manifest, some parts gone,
    # a temp file left behind by an interrupted atomic write
    month = bn.source_file("um", "aggTrades", "BTCUSDT", "monthly", "2024-12")
    store.delete_prefix(manifest_key(month))
    for p in first["partitions"][5:20]:
        store.delete_prefix(p["path"])
    stale = first["partitions"][3]["path"] + ".tmp-deadbeef0000"
    store.write_bytes(stale, b"partial")
    again = run_ingest(spark, c, store, base, "cache/i/b")
    assert again["partitions"] == first["partitions"]
    assert again["summary"]["reused"] == 1  # the daily file; the month was redone
    assert lake_state(store) == reference
    sym = [p["path"] for p in again["partitions"]]
    t = read_ticks(store, sym)
    assert t.num_rows == 32 * 300 and len(np.unique(t["trade_id"].to_numpy())) == t.num_rows


def test_duplicates_across_files_are_dropped_and_counted(spark, tmp_path):
    root = tmp_path / "mirror"
    generate_mirror(str(root), symbols=["BTCUSDT"], start="2025-01-01", end="2025-01-02", ticks_per_day=400)
    import zipfile

    d1 = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    d2 = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    last_ids = [
        int(line.split(b",")[0])
        for line in zipfile.ZipFile(root / d1.rel).read(d1.stem + ".csv").splitlines()[-3:]
    ]
    rows2 = zipfile.ZipFile(root / d2.rel).read(d2.stem + ".csv").splitlines()
    t0 = rows2[0].split(b",")[5]
    # day 2 republishes the last 3 aggregate ids of day 1 (at its own first timestamp)
    extra = [
        b",".join([str(i).encode(), b"100.0", b"1.0", b"1", b"1", t0, b"True", b"True"]) for i in last_ids
    ]
    rewrite_zip(root / d2.rel, d2.stem + ".csv", b"\n".join(extra + rows2) + b"\n")
    store = LocalStorage(str(tmp_path / "store"))
    out = run_ingest(spark, cfg(end="2025-01-02"), store, root.as_uri(), "cache/i/a")
    assert out["summary"]["duplicates_across_days"] == 3
    assert [p["rows"] for p in out["partitions"]] == [400, 400]
    t = read_ticks(store, [p["path"] for p in out["partitions"]])
    assert len(np.unique(t["trade_id"].to_numpy())) == 800
    man = json.loads(store.read_text(manifest_key(d2)))
    assert man["dropped"]["duplicate_across_days"] == 3 and man["rows"] == 400
    again = run_ingest(spark, cfg(end="2025-01-02"), store, root.as_uri(), "cache/i/b")  # idempotent
    assert again["partitions"] == out["partitions"] and again["summary"]["reused"] == 2


def test_path_traversal_symbol_is_refused_before_any_work(spark, tmp_path):
    store = LocalStorage(str(tmp_path / "store"))
    with pytest.raises(ValueError, match=r"invalid symbol '\.\./etc'"):
        run_ingest(spark, cfg(symbols=["BTCUSDT", "../etc"]), store, "file:///nonexistent", "cache/i/a")
    assert store.list("") == []


def test_s3_round_trip_with_raw_archive(spark, tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    root = tmp_path / "mirror"
    generate_mirror(
        str(root),
        markets=["um"],
        symbols=["BTCUSDT"],
        start="2025-01-01",
        end="2025-01-02",
        ticks_per_day=700,
    )
    store = storage_from_dict({"kind": "s3", "root": f"s3://{bucket}/lake", "endpoint_url": endpoint})
    out = run_ingest(
        spark, cfg(market="um", end="2025-01-02", archive_raw=True), store, root.as_uri(), "cache/i/a"
    )
    assert [p["rows"] for p in out["partitions"]] == [700, 700]
    keys = store.list("")
    sf = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    assert f"raw/{sf.rel}" in keys and "cache/i/a/listing.json" in keys
    assert store.read_bytes(f"raw/{sf.rel}") == (root / sf.rel).read_bytes()
    t = read_ticks(store, [p["path"] for p in out["partitions"]])
    assert t.num_rows == 1400 and np.all(np.diff(t["trade_id"].to_numpy()) == 1)
    again = run_ingest(
        spark, cfg(market="um", end="2025-01-02", archive_raw=True), store, root.as_uri(), "cache/i/b"
    )
    assert again["summary"]["reused"] == 2
