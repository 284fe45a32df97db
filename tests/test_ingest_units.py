"""Ingest without Spark: fetch/retry, checksum, safe streaming unzip, parsing, validation,
one-file ingest and its commit.

Bad inputs go through :func:`btsys.data.ingest.ingest_file` against a real loopback HTTP server;
each test checks the status, that the message names the file and line, and that the lake is
unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile

import numpy as np
import pyarrow as pa
import pytest
from conftest import BINANCE_SAMPLES

from btsys.data import binance as bn
from btsys.data.download import (
    MissingFile,
    UnsafeArchive,
    fetch_bytes,
    fetch_verified,
    open_member,
    parse_checksum,
)
from btsys.data.ingest import commit_files, ingest_file, manifest_key, read_funding, read_ticks, task_settings
from btsys.data.lake import Series
from btsys.data.validate import MemorySink, TickValidator
from btsys.storage import LocalStorage

CM_REL = "futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip"
FUND_REL = "futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2026-04.zip"
TRUNC_CSV = os.path.join(BINANCE_SAMPLES, "truncated/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-01-01.csv")


# --------------------------------------------------------------------------- helpers
def put_zip(
    root,
    sf: bn.SourceFile,
    payload: bytes | None = None,
    member: str | None = None,
    raw: bytes | None = None,
    checksum: str | None = None,
    newline: bool = True,
) -> str:
    """Write ``sf`` (a zip with one member, or ``raw`` bytes) + its CHECKSUM under a mirror root."""
    path = os.path.join(root, *sf.rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if raw is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(member or f"{sf.stem}.csv", payload)
        raw = buf.getvalue()
    with open(path, "wb") as f:
        f.write(raw)
    sha = checksum or hashlib.sha256(raw).hexdigest()
    with open(path + ".CHECKSUM", "w") as f:
        f.write(f"{sha}  {sf.name}" + ("\n" if newline else ""))
    return path


def lake_snapshot(store) -> dict:
    keys = [k for k in store.list("lake") if k.endswith(".parquet")]
    return {k: hashlib.sha256(store.read_bytes(k)).hexdigest() for k in keys}


def settings(base_url, **kw):
    s = task_settings({"source": {"retries": 2, "backoff_s": 0.01, "timeout_s": 5}}, base_url)
    s.update(kw)
    return s


def ingest(sf, store, st):
    """One file through the task and the lake commit (what the Spark job does per file)."""
    man = ingest_file(sf, store, st)
    commit_files(store, [man], st["staging"])
    return {**json.loads(store.read_text(manifest_key(sf))), "reused": man["reused"]}


def day_paths(sf, man) -> list[str]:
    return [
        Series(sf.market, sf.dataset, sf.symbol).day_key(d["date"]) for d in man.get("days", []) if d["rows"]
    ]


def extract(path, label, **kw) -> bytes:
    with open_member(path, label, **kw) as m:
        return m.read()


GOOD_UM = (
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
    "100,50000.5,0.010,1000,1000,1735689600000,true\n"
    "101,50001.0,0.020,1001,1002,1735689601000,false\n"
    "102,50002.0,0.030,1003,1003,1735776000000,true\n"
).encode()  # 102 is on 2025-01-02


@pytest.fixture
def mirror(tmp_path, file_server):
    """An empty mirror root served over loopback HTTP, plus a lake that already holds one good file."""
    root = tmp_path / "mirror"
    root.mkdir()
    srv = file_server(str(root))
    store = LocalStorage(str(tmp_path / "store"))
    good = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    put_zip(root, good, GOOD_UM.replace(b"1735776000000", b"1735689602000"))
    man = ingest(good, store, settings(srv.url))
    assert man["status"] == "ok" and man["rows"] == 3
    return root, srv, store


def bad_day(day="2025-01-02", market="um", dataset="aggTrades", symbol="BTCUSDT"):
    return bn.source_file(market, dataset, symbol, "daily", day)


# --------------------------------------------------------------------------- URLs and plans
def test_urls_for_spot_um_cm():
    assert (
        bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01").url(
            "https://data.binance.vision"
        )
        == "https://data.binance.vision/data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-01.zip"
    )
    assert (
        bn.source_file("um", "trades", "ETHUSDT", "monthly", "2024-02").rel
        == "data/futures/um/monthly/trades/ETHUSDT/ETHUSDT-trades-2024-02.zip"
    )
    assert (
        bn.source_file("cm", "fundingRate", "BTCUSD_PERP", "monthly", "2026-04").rel
        == "data/futures/cm/monthly/fundingRate/BTCUSD_PERP/BTCUSD_PERP-fundingRate-2026-04.zip"
    )


def test_plan_monthly_for_complete_months_daily_for_the_rest():
    files = bn.plan_files("spot", "aggTrades", ["BTCUSDT"], "2024-12-30", "2025-03-02")
    labels = [(f.period, f.label) for f in files]
    assert labels == [
        ("daily", "2024-12-30"),
        ("daily", "2024-12-31"),
        ("monthly", "2025-01"),
        ("monthly", "2025-02"),
        ("daily", "2025-03-01"),
        ("daily", "2025-03-02"),
    ]
    assert files[3].first == "2025-02-01" and files[3].last == "2025-02-28"
    assert [f.label for f in bn.plan_funding("um", ["BTCUSDT"], "2024-12-30", "2025-01-02")] == [
        "2024-12",
        "2025-01",
    ]
    assert bn.plan_funding("spot", ["BTCUSDT"], "2025-01-01", "2025-01-02") == []


@pytest.mark.parametrize("bad", ["../etc", "BTC/USDT", "btcusdt", "A", "X" * 33, "..", "BTC USDT", ""])
def test_bad_symbols_are_rejected_before_any_fetch(bad):
    with pytest.raises(ValueError, match="data.symbols: invalid symbol"):
        bn.plan_files("spot", "aggTrades", ["BTCUSDT", bad], "2025-01-01", "2025-01-01")


def test_contract_size_table():
    t = {"BTC": 100.0, "default": 10.0}
    assert bn.contract_size("BTCUSD_PERP", t) == 100.0
    assert bn.contract_size("BTCUSD_250627", t) == 100.0
    assert bn.contract_size("ETHUSD_PERP", t) == 10.0
    with pytest.raises(KeyError, match="ETH"):
        bn.contract_size("ETHUSD_PERP", {"BTC": 100.0})


# --------------------------------------------------------------------------- download and verify
def test_checksum_with_and_without_final_newline():
    sha = "ab" * 32
    assert parse_checksum(f"{sha}  X.zip\n", "X.zip") == sha
    assert parse_checksum(f"{sha}  X.zip", "X.zip") == sha
    with pytest.raises(ValueError, match="names 'Y.zip', expected 'X.zip'"):
        parse_checksum(f"{sha}  Y.zip", "X.zip")
    with pytest.raises(ValueError, match="not a '<sha256>"):
        parse_checksum("hello  X.zip", "X.zip")


def test_real_sample_checksums_verify_over_http(file_server):
    srv = file_server(BINANCE_SAMPLES)
    for rel in (CM_REL, FUND_REL):
        got, sha = fetch_verified(f"{srv.url}/{rel}", rel.rsplit("/", 1)[1], backoff=0.01)
        assert got.sha256 == sha and got.size == os.path.getsize(os.path.join(BINANCE_SAMPLES, rel))
        os.remove(got.path)


def test_503_twice_then_success_is_retried(file_server, binance_samples):
    srv = file_server(binance_samples)
    path = "/" + FUND_REL
    srv.fail[path] = [503, 503]
    data = fetch_bytes(srv.url + path, retries=3, backoff=0.01)
    assert srv.hits[path] == 3
    assert data == open(os.path.join(binance_samples, FUND_REL), "rb").read()


def test_5xx_forever_gives_up_and_404_is_missing(file_server, binance_samples):
    srv = file_server(binance_samples)
    path = "/" + FUND_REL
    srv.fail[path] = [500, 502, 503]
    with pytest.raises(Exception, match="giving up .* after 3 attempts"):
        fetch_bytes(srv.url + path, retries=2, backoff=0.01)
    with pytest.raises(MissingFile, match="404"):
        fetch_bytes(srv.url + "/no/such/file.zip", retries=2, backoff=0.01)


def test_safe_unzip_rejects_bad_archives(tmp_path):
    def z(members, path):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
        return str(path)

    ok = z([("a.csv", b"1,2\n")], tmp_path / "ok.zip")
    assert extract(ok, "ok.zip") == b"1,2\n"
    cases = {
        "slip.zip": ([("../../evil.csv", b"1")], "not a plain file name"),
        "dir.zip": ([("sub/a.csv", b"1")], "not a plain file name"),
        "two.zip": ([("a.csv", b"1"), ("b.csv", b"2")], "exactly one member"),
        "nested.zip": ([("inner.zip", b"PK\x03\x04")], "nested archive"),
        "disguised.zip": ([("a.csv", open(ok, "rb").read())], "itself a zip"),
        "txt.zip": ([("a.txt", b"1")], "not a .csv"),
    }
    for fname, (members, msg) in cases.items():
        with pytest.raises(UnsafeArchive, match=msg):
            extract(z(members, tmp_path / fname), fname)
    bomb = z([("a.csv", b"0" * (8 << 20))], tmp_path / "bomb.zip")
    with pytest.raises(UnsafeArchive, match="compression ratio"):
        extract(bomb, "bomb.zip", max_ratio=250)
    big = z([("a.csv", os.urandom(3 << 20))], tmp_path / "big.zip")
    with pytest.raises(UnsafeArchive, match="max_uncompressed_bytes=1048576"):
        extract(big, "big.zip", max_bytes=1 << 20)


# --------------------------------------------------------------------------- bad inputs through ingest_file
def test_checksum_mismatch_is_retried_once_then_quarantined(mirror):
    root, srv, store = mirror
    before = lake_snapshot(store)
    sf = bad_day()
    put_zip(root, sf, GOOD_UM, checksum="0" * 64)
    man = ingest(sf, store, settings(srv.url))
    assert man["status"] == "quarantined"
    assert "SHA-256 mismatch (attempt 2/2)" in man["error"] and sf.name in man["error"]
    assert srv.hits["/" + sf.rel] == 2  # downloaded twice
    assert store.exists(f"quarantine/{sf.rel}")
    assert lake_snapshot(store) == before
    assert store.exists(manifest_key(sf))


@pytest.mark.parametrize(
    "kind,msg",
    [
        ("truncated", "not a zip file \\(or truncated"),
        ("not_a_zip", "not a zip file"),
        ("nested", "nested archive"),
        ("slip", "not a plain file name"),
        ("oversized", "max_uncompressed_bytes"),
    ],
)
def test_bad_archives_fail_cleanly(mirror, kind, msg):
    root, srv, store = mirror
    before = lake_snapshot(store)
    sf = bad_day()
    full = io.BytesIO()
    with zipfile.ZipFile(full, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{sf.stem}.csv", GOOD_UM * 200)
    if kind == "truncated":
        put_zip(root, sf, raw=full.getvalue()[: len(full.getvalue()) // 2])
    elif kind == "not_a_zip":
        put_zip(root, sf, raw=b"<html>Access denied</html>")
    elif kind == "nested":
        put_zip(root, sf, full.getvalue(), member=f"{sf.stem}.zip")
    elif kind == "slip":
        put_zip(root, sf, GOOD_UM, member=f"../../{sf.stem}.csv")
    else:
        put_zip(root, sf, GOOD_UM * 200)
    extra = {"max_uncompressed_bytes": 1000} if kind == "oversized" else {}
    man = ingest(sf, store, settings(srv.url, **extra))
    assert man["status"] == "failed", man
    assert sf.name in man["error"]
    assert __import__("re").search(msg, man["error"]), man["error"]
    assert man["rows"] == 0 and man.get("days", []) == []
    assert lake_snapshot(store) == before


def test_a_zip_that_understates_its_size_is_still_bounded(tmp_path):
    """The directory claims 100 bytes; inflating stops at the ratio bound, not at 8 MB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"0" * (8 << 20))
    raw = bytearray(buf.getvalue())
    for sig, off in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # central + local header sizes
        i = raw.find(sig)
        raw[i + off : i + off + 4] = (100).to_bytes(4, "little")
    p = tmp_path / "liar.zip"
    p.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchive, match="liar.zip: member 'a.csv' inflates past"):
        extract(str(p), "liar.zip", max_ratio=250)


def test_corrupt_member_data_is_reported(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", os.urandom(1 << 16).hex().encode())
    raw = bytearray(buf.getvalue())
    raw[200:260] = b"\x00" * 60  # damage the deflate stream, keep the directory
    p = tmp_path / "bad.zip"
    p.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchive, match="corrupt or truncated zip data"):
        extract(str(p), "bad.zip")


def test_missing_day_is_recorded(mirror):
    root, srv, store = mirror
    before = lake_snapshot(store)
    man = ingest(bad_day("2025-01-05"), store, settings(srv.url))
    assert man["status"] == "missing" and "404" in man["error"]
    assert lake_snapshot(store) == before


def test_unparseable_values_are_counted_with_row_numbers(mirror):
    root, srv, store = mirror
    sf = bad_day()
    payload = GOOD_UM.replace(b"50001.0", b"abc").replace(b"\n10", b"\n20")  # ids 200..202
    put_zip(root, sf, payload)
    man = ingest(sf, store, settings(srv.url))
    assert man["status"] == "failed"  # 1 of 3 rows: over the default max_bad_row_fraction
    assert (
        "1 of the first 3 rows do not parse" in man["error"] and "line 3: column price='abc'" in man["error"]
    )
    man = ingest(sf, store, settings(srv.url, max_bad_row_fraction=0.5))
    assert man["status"] == "ok" and man["rows"] == 1  # row 3 is unparseable, row 2 on 2025-01-01
    assert man["dropped"] == {"unparseable": 1, "out_of_period": 1}
    assert any("line 3: column price='abc'" in e for e in man["examples"]), man["examples"]


def test_truncated_real_sample_is_flagged(tmp_path, file_server):
    """The real first 5 rows of BTCUSDT spot trades 2024-01-01 (headerless, ms, True/False)."""
    root = tmp_path / "m"
    sf = bn.source_file("spot", "trades", "BTCUSDT", "daily", "2024-01-01")
    put_zip(root, sf, open(TRUNC_CSV, "rb").read())
    srv = file_server(str(root))
    store = LocalStorage(str(tmp_path / "s"))
    man = ingest(sf, store, settings(srv.url))
    assert man["status"] == "ok" and man["rows"] == 5
    assert man["truncated"] and "truncated" in man["flags"]
    assert man["header"] is False and man["time_unit"] == "ms"
    t = read_ticks(store, day_paths(sf, man))
    assert t["ts"].to_pylist()[:2] == [1704067200000000, 1704067200001000]
    assert t["trade_id"].to_pylist() == list(range(3344774379, 3344774384))
    assert t["is_buyer_maker"].to_pylist() == [True, False, True, False, False]
    np.testing.assert_allclose(
        t["quote_qty"].to_numpy(), [29.1756702, 60.8883696, 43.1292516, 92.6010621, 68.9222517], rtol=1e-9
    )


# --------------------------------------------------------------------------- parsing
def test_real_cm_aggtrades_sample_parses_fully():
    raw = extract(os.path.join(BINANCE_SAMPLES, CM_REL), "cm.zip")
    t, info = bn.read_ticks_csv(
        raw, "cm", "aggTrades", "BTCUSD_PERP", "cm.csv", {"BTC": 100.0, "default": 10.0}
    )
    assert info.header and info.time_unit == "ms" and t.num_rows == 105_280
    assert t.schema == bn.TICK_SCHEMA
    assert t["ts"][0].as_py() == 1778198400020000
    ids = t["trade_id"].to_numpy()
    assert ids[0] == 480537903 and ids[-1] == 480643182 and np.all(np.diff(ids) == 1)
    np.testing.assert_array_equal(t["quote_qty"].to_numpy(), t["qty"].to_numpy() * 100.0)
    assert t["qty"][0].as_py() == 542.0 and t["price"][0].as_py() == 79972.8


def test_real_funding_sample_parses():
    raw = extract(os.path.join(BINANCE_SAMPLES, FUND_REL), "f.zip")
    t, info = bn.parse_funding(raw, "um", "f.csv")
    assert t.num_rows == 90 and info.header and info.time_unit == "ms"
    assert t["ts"][0].as_py() == 1775001600000000 and t["rate"][0].as_py() == pytest.approx(-0.00003449)
    assert t.schema.field("rate").type == pa.float64()


def test_header_and_headerless_give_the_same_table():
    body = GOOD_UM.split(b"\n", 1)[1]
    a, ia = bn.read_ticks_csv(GOOD_UM, "um", "aggTrades", "BTCUSDT", "h.csv", {})
    b, ib = bn.read_ticks_csv(body, "um", "aggTrades", "BTCUSDT", "n.csv", {})
    assert ia.header and not ib.header and a.equals(b) and a.num_rows == 3
    with pytest.raises(bn.FormatError, match="x.csv: header has 3 columns"):
        bn.read_ticks_csv(b"a,b,c\n1,2,3\n", "um", "aggTrades", "BTCUSDT", "x.csv", {})


def test_booleans_any_case_and_ms_us_detection():
    ms = b"1,100.0,2.0,1,1,1735689600123,True,True\n2,101.0,1.0,2,2,1735689600124,false,true\n"
    us = ms.replace(b"1735689600123,", b"1735689600123000,").replace(b"1735689600124,", b"1735689600124000,")
    a, ia = bn.read_ticks_csv(ms, "spot", "aggTrades", "BTCUSDT", "ms.csv", {})
    b, ib = bn.read_ticks_csv(us, "spot", "aggTrades", "BTCUSDT", "us.csv", {})
    assert (ia.time_unit, ib.time_unit) == ("ms", "us") and a.equals(b)
    assert a["is_buyer_maker"].to_pylist() == [True, False]
    assert a["quote_qty"].to_pylist() == [200.0, 101.0]
    mixed = ms.replace(b"1735689600124,", b"1735689600124000,")
    with pytest.raises(bn.FormatError, match="mixed.csv: timestamps mix milliseconds and microseconds"):
        bn.read_ticks_csv(mixed, "spot", "aggTrades", "BTCUSDT", "mixed.csv", {})


def test_layouts_of_trades_files():
    spot = b"7,10.5,2.0,21.0,1735689600000000,True,True\n"
    um = b"id,price,qty,quote_qty,time,is_buyer_maker\n7,10.5,2.0,21.0,1735689600000,true\n"
    cm = b"id,price,qty,base_qty,time,is_buyer_maker\n7,50000.0,3,0.006,1735689600000,false\n"
    for market, raw, quote, ibm in [
        ("spot", spot, 21.0, True),
        ("um", um, 21.0, True),
        ("cm", cm, 300.0, False),
    ]:
        t, _ = bn.read_ticks_csv(
            raw,
            market,
            "trades",
            "BTCUSD_PERP" if market == "cm" else "BTCUSDT",
            "t.csv",
            {"BTC": 100.0, "default": 10.0},
        )
        assert t.to_pylist() == [
            {
                "ts": 1735689600000000,
                "trade_id": 7,
                "price": t["price"][0].as_py(),
                "qty": t["qty"][0].as_py(),
                "quote_qty": quote,
                "is_buyer_maker": ibm,
            }
        ]


# --------------------------------------------------------------------------- validation
def _ticks(ids, ts, price=None, qty=None):
    n = len(ids)
    price = np.full(n, 100.0) if price is None else np.asarray(price, float)
    qty = np.full(n, 1.0) if qty is None else np.asarray(qty, float)
    return pa.table(
        {
            "ts": pa.array(ts, pa.int64()),
            "trade_id": pa.array(ids, pa.int64()),
            "price": price,
            "qty": qty,
            "quote_qty": price * qty,
            "is_buyer_maker": np.zeros(n, bool),
        },
        schema=bn.TICK_SCHEMA,
    )


D0 = 1735689600000000  # 2025-01-01 in µs


def validate(t, name, first, last, lines=None, **kw):
    sink = MemorySink()
    v = TickValidator(name, first, last, sink, **kw)
    v.feed(t, np.arange(1, t.num_rows + 1) if lines is None else np.asarray(lines))
    rep = v.finish()
    out = pa.concat_tables([sink.days[d] for d in sorted(sink.days)]) if sink.days else None
    return out, rep


def test_unsorted_and_duplicated_rows_are_sorted_and_counted():
    t = _ticks([3, 1, 2, 2, 4, 6], [D0 + 30, D0 + 10, D0 + 20, D0 + 20, D0 + 40, D0 + 60])
    out, rep = validate(t, "u.csv", "2025-01-01", "2025-01-01")
    assert out["trade_id"].to_pylist() == [1, 2, 3, 4, 6]
    assert out["ts"].to_pylist() == sorted(out["ts"].to_pylist())
    assert rep.unsorted and rep.dropped == {"duplicate": 1}
    assert rep.id_gaps == 1 and rep.gap_events == 1  # id 5 missing
    assert "u.csv line 4: duplicate (trade id 2)" in rep.examples


def test_qty_zero_and_bad_price_are_dropped_and_named():
    t = _ticks(
        [1, 2, 3, 4],
        [D0 + 1, D0 + 2, D0 + 3, D0 + 4],
        price=[1.0, -1.0, 1.0, np.nan],
        qty=[1.0, 1.0, 0.0, 1.0],
    )
    out, rep = validate(t, "q.csv", "2025-01-01", "2025-01-01", lines=[2, 3, 4, 5])
    assert out["trade_id"].to_pylist() == [1]
    assert rep.dropped == {"bad_price": 2, "bad_qty": 1}
    assert "q.csv line 4: bad_qty (qty 0.0)" in rep.examples
    assert rep.rows_in == 4 and rep.rows_out == 1


def test_duplicated_rows_in_a_file_do_not_reach_the_lake(mirror):
    root, srv, store = mirror
    sf = bad_day("2025-01-03")
    body = GOOD_UM.replace(b"1735689600000", b"1735862400000").replace(b"1735689601000", b"1735862401000")
    body = body.replace(b"1735776000000", b"1735862402000").replace(b"\n10", b"\n20")  # ids 200..202
    lines = body.split(b"\n")
    jumbled = (
        b"\n".join([lines[0], lines[3], lines[1], lines[2], lines[1], lines[2].replace(b"0.020", b"0")])
        + b"\n"
    )
    put_zip(root, sf, jumbled)
    man = ingest(sf, store, settings(srv.url))
    assert man["status"] == "ok" and man["unsorted"] and man["rows"] == 3
    assert man["dropped"] == {"duplicate": 1, "bad_qty": 1}
    t = read_ticks(store, day_paths(sf, man))
    assert t["trade_id"].to_pylist() == [200, 201, 202]


def test_read_funding_dataframe(tmp_path, file_server):
    root = tmp_path / "m"
    dst = root / "data" / FUND_REL
    dst.parent.mkdir(parents=True)
    shutil.copy(os.path.join(BINANCE_SAMPLES, FUND_REL), dst)
    shutil.copy(os.path.join(BINANCE_SAMPLES, FUND_REL + ".CHECKSUM"), str(dst) + ".CHECKSUM")
    srv = file_server(str(root))
    store = LocalStorage(str(tmp_path / "s"))
    sf = bn.source_file("um", "fundingRate", "BTCUSDT", "monthly", "2026-04")
    man = ingest(sf, store, settings(srv.url))
    assert man["status"] == "ok" and man["rows"] == 90
    df = read_funding(store, [p["path"] for p in man["partitions"]])
    assert list(df.columns[:2]) == ["ts", "rate"] and len(df) == 90
    assert str(df["ts"].dtype) == "int64" and str(df["rate"].dtype) == "float64"
    assert df["ts"].is_monotonic_increasing and df["ts"].iloc[0] == 1775001600000000
