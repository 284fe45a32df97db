"""The streaming ingest equals a plain whole-file reference, wherever the blocks are cut.

The reference below reads a whole (small) CSV with plain Python, line by line, and applies the
documented rules: BOM stripped, header detected, blank lines skipped, rows with a wrong column
count or a value that does not convert counted with their line, ms/µs per file, bad price/qty and
rows outside the file's days dropped, duplicate ids within a day dropped (the first line wins),
ids duplicated across days kept in the earlier day, each day sorted by (ts, trade_id). The
streaming path (:func:`ingest_file` + the lake commit) must give the same lake and the same counts
and line numbers for the real samples and for random files, with block sizes down to a row or two
(every block boundary) and late rows spilled to disk.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import BINANCE_SAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btsys.data import binance as bn
from btsys.data.ingest import commit_files, ingest_file, manifest_key, task_settings
from btsys.data.lake import Series
from btsys.data.validate import US_PER_DAY, day_number, day_string
from btsys.storage import LocalStorage

CM_REL = "futures/cm/daily/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2026-05-08.zip"
TRUNC_CSV = os.path.join(BINANCE_SAMPLES, "truncated/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-01-01.csv")
CS = {"BTC": 100.0, "default": 10.0}
_INT = re.compile(rb"^-?[0-9]+$")
_FLOAT = re.compile(rb"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")
_BOOL = {b"true": True, b"True": True, b"TRUE": True, b"false": False, b"False": False, b"FALSE": False}


# --------------------------------------------------------------------------- the reference
def _convert(field: bytes, typ):
    if typ == "int":
        return int(field) if _INT.match(field) else None
    if typ == "float":
        return float(field) if _FLOAT.match(field) else None
    return _BOOL.get(field)


def reference(csv: bytes, market, dataset, symbol, first, last, max_bad_fraction=0.001) -> dict:
    """Whole-file reference of one source file's lake days (plain Python, one line at a time)."""
    layout = bn.LAYOUTS[(market, dataset)]
    types = ["int" if t == bn.pa.int64() else "float" if t == bn.pa.float64() else "bool" for _, t in layout]
    csv = csv[3:] if csv.startswith(b"\xef\xbb\xbf") else csv
    lines = csv.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    header = bool(lines) and lines[0] != b"" and not lines[0].split(b",")[0].strip().lstrip(b"-").isdigit()
    rows, bad = [], []
    for no, line in enumerate(lines, start=1):
        if (no == 1 and header) or line == b"":
            continue
        fields = line.split(b",")
        vals = (
            [_convert(f, t) for f, t in zip(fields, types, strict=False)]
            if len(fields) == len(types)
            else None
        )
        if vals is None or any(v is None for v in vals):
            bad.append(no)
            continue
        rows.append((no, vals))
    if bad and len(bad) > max_bad_fraction * (len(rows) + len(bad)):
        return {"failed": True, "bad_lines": bad}
    roles = {"aggTrades": (0, 1, 2, 5, 6), "trades": (0, 1, 2, 4, 5)}[dataset]
    df = pd.DataFrame(
        {
            "line": [n for n, _ in rows],
            "trade_id": [v[roles[0]] for _, v in rows],
            "price": [v[roles[1]] for _, v in rows],
            "qty": [v[roles[2]] for _, v in rows],
            "t": [v[roles[3]] for _, v in rows],
            "is_buyer_maker": [v[roles[4]] for _, v in rows],
        }
    ).astype({"line": "int64", "trade_id": "int64", "price": "float64", "qty": "float64", "t": "int64"})
    if len(df) and df["t"].max() >= bn.US_THRESHOLD > df["t"].min():
        return {"failed": True, "bad_lines": []}
    us = len(df) and df["t"].min() >= bn.US_THRESHOLD
    df["ts"] = df["t"] if us else df["t"] * 1000
    df["quote_qty"] = df["qty"] * bn.contract_size(symbol, CS) if market == "cm" else df["price"] * df["qty"]
    lo, hi = day_number(first) * US_PER_DAY, (day_number(last) + 1) * US_PER_DAY
    bad_price = ~(np.isfinite(df["price"]) & (df["price"] > 0))
    bad_qty = ~(np.isfinite(df["qty"]) & (df["qty"] > 0)) & ~bad_price
    out = ((df["ts"] < lo) | (df["ts"] >= hi)) & ~bad_price & ~bad_qty
    dropped = {
        "bad_price": int(bad_price.sum()),
        "bad_qty": int(bad_qty.sum()),
        "out_of_period": int(out.sum()),
    }
    by_day: dict = {}  # date -> reason -> rows, for the drops that belong to a day of the file

    def per_day(reason, rows):
        for d, n in (rows["ts"] // US_PER_DAY).value_counts().items():
            by_day.setdefault(day_string(d), {})[reason] = int(n)

    inside = (df["ts"] >= lo) & (df["ts"] < hi)
    per_day("bad_price", df[bad_price & inside])
    per_day("bad_qty", df[bad_qty & inside])
    df = df[~(bad_price | bad_qty | out)].copy()
    df["day"] = df["ts"] // US_PER_DAY
    dup = df.duplicated(["day", "trade_id"], keep="first")  # file order = line order
    dropped["duplicate"] = int(dup.sum())
    per_day("duplicate", df[dup])
    df = df[~dup]
    across = df.sort_values("day", kind="stable").duplicated("trade_id", keep="first")  # earlier day wins
    dropped["duplicate_across_days"] = int(across.sum())
    per_day("duplicate_across_days", df.loc[across[across].index])
    df = df.drop(index=across[across].index)
    cols = ["ts", "trade_id", "price", "qty", "quote_qty", "is_buyer_maker"]
    days = {
        day_string(d): g.sort_values(["ts", "trade_id"], kind="stable")[cols].reset_index(drop=True)
        for d, g in df.groupby("day")
    }
    return {
        "failed": False,
        "days": days,
        "dropped": {k: v for k, v in dropped.items() if v},
        "dropped_by_day": dict(sorted(by_day.items())),
        "bad_lines": bad,
    }


# --------------------------------------------------------------------------- the streaming path
def put_zip(root, sf: bn.SourceFile, payload: bytes) -> None:
    import hashlib

    path = os.path.join(root, *sf.rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{sf.stem}.csv", payload)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with open(path + ".CHECKSUM", "w") as f:
        f.write(f"{sha}  {sf.name}\n")


def stream(tmp, sf: bn.SourceFile, payload: bytes, block_size: int, late_spill_bytes: int = 1 << 30, **kw):
    """Ingest one file through the streaming path into a fresh store; returns (lake days, manifest)."""
    root = os.path.join(tmp, "mirror")
    put_zip(root, sf, payload)
    store = LocalStorage(os.path.join(tmp, f"store-{block_size}-{late_spill_bytes}"))
    s = task_settings({"max_bad_row_fraction": kw.get("max_bad_fraction", 0.001)}, "file://" + root)
    s.update(block_size=block_size, late_spill_bytes=late_spill_bytes)
    man = ingest_file(sf, store, s)
    commit_files(store, [man], s["staging"])
    stored = json.loads(store.read_text(manifest_key(sf)))
    series = Series(sf.market, sf.dataset, sf.symbol)
    days = {}
    for d in stored.get("days", []):
        if not d["rows"]:
            assert not store.exists(series.day_key(d["date"]))  # all its ids were in earlier days
            continue
        t = store.read_parquet(series.day_key(d["date"]))
        days[d["date"]] = t.replace_schema_metadata(None).to_pandas()
    return days, stored


def assert_same(days: dict, man: dict, ref: dict) -> None:
    if ref["failed"]:
        assert man["status"] == "failed", man
        return
    assert man["status"] == "ok", man.get("error")
    assert sorted(days) == sorted(ref["days"])
    for d, df in ref["days"].items():
        pd.testing.assert_frame_equal(days[d], df, check_exact=True)
    assert {
        k: v for k, v in (man.get("dropped") or {}).items() if k not in ("malformed", "unparseable")
    } == ref["dropped"]
    assert man["dropped_by_day"] == ref["dropped_by_day"]  # the same drops, each on its day
    got_bad = (man.get("dropped") or {}).get("malformed", 0) + (man.get("dropped") or {}).get(
        "unparseable", 0
    )
    assert got_bad == len(ref["bad_lines"])
    quoted = [
        int(m.group(1)) for e in man.get("examples", []) for m in [re.search(r"\.csv line (\d+): ", e)] if m
    ]
    bad_quoted = sorted(n for n, e in zip(quoted, man.get("examples", []), strict=True) if "column" in e)
    assert bad_quoted == ref["bad_lines"][: len(bad_quoted)]
    assert man["rows"] == sum(len(df) for df in ref["days"].values())


# --------------------------------------------------------------------------- real samples
@pytest.mark.slow
def test_real_cm_sample_equals_the_reference_at_tiny_and_default_blocks(tmp_path):
    with zipfile.ZipFile(os.path.join(BINANCE_SAMPLES, CM_REL)) as zf:
        payload = zf.read(zf.namelist()[0])
    sf = bn.source_file("cm", "aggTrades", "BTCUSD_PERP", "daily", "2026-05-08")
    ref = reference(payload, "cm", "aggTrades", "BTCUSD_PERP", sf.first, sf.last)
    assert len(ref["days"]["2026-05-08"]) == 105_280
    versions = set()
    for block in (1 << 14, bn.BLOCK_SIZE):
        days, man = stream(str(tmp_path), sf, payload, block)
        assert_same(days, man, ref)
        versions.add(man["days"][0]["version"])
    assert len(versions) == 1  # the same day, bit for bit


def test_real_truncated_spot_trades_sample_equals_the_reference(tmp_path):
    payload = open(TRUNC_CSV, "rb").read()
    sf = bn.source_file("spot", "trades", "BTCUSDT", "daily", "2024-01-01")
    ref = reference(payload, "spot", "trades", "BTCUSDT", sf.first, sf.last)
    for block in (64, 200, bn.BLOCK_SIZE):
        days, man = stream(str(tmp_path), sf, payload, block)
        assert_same(days, man, ref)
        assert man["truncated"] and man["days"][0]["complete"] is False


def test_a_jumbled_synthetic_month_equals_the_reference_with_late_rows_spilled(tmp_path):
    from btsys.data.synthetic import generate_mirror

    generate_mirror(
        str(tmp_path / "gen"), markets=["um"], start="2024-12-01", end="2024-12-31", ticks_per_day=60
    )
    sf = bn.source_file("um", "aggTrades", "BTCUSDT", "monthly", "2024-12")
    with zipfile.ZipFile(tmp_path / "gen" / sf.rel) as zf:
        payload = zf.read(zf.namelist()[0])
    lines = payload.split(b"\n")
    # a few rows of early days moved to the end of the file: they arrive after their day is finished
    body = lines[1:-1]
    moved = [body.pop(i) for i in (700, 300, 5)]
    payload = b"\n".join([lines[0], *body, *moved]) + b"\n"
    ref = reference(payload, "um", "aggTrades", "BTCUSDT", sf.first, sf.last)
    for block, spill in ((256, 1), (4096, 1 << 30)):
        days, man = stream(str(tmp_path), sf, payload, block, late_spill_bytes=spill)
        assert_same(days, man, ref)
        assert man["unsorted"] and len(man["days"]) == 31 and man["rows"] == 31 * 60


# --------------------------------------------------------------------------- random files
def _random_csv(draw) -> tuple[bytes, str, str]:
    market = draw(st.sampled_from(["spot", "um"]))
    n = draw(st.integers(0, 60))
    d0 = day_number("2025-01-01")
    day_ms = US_PER_DAY // 1000
    base_id = draw(st.integers(1, 10**6))
    rows = []
    for _ in range(n):
        kind = draw(
            st.sampled_from(["ok"] * 12 + ["blank", "extra", "short", "abc", "empty", "badprice", "zeroqty"])
        )
        day = draw(st.integers(-1, 2))  # -1 and 2 are outside the file's two days
        t = (d0 + day) * day_ms + draw(st.integers(0, day_ms - 1))
        tid = base_id + draw(st.integers(0, 80))  # small id range: duplicates within and across days
        price = draw(st.sampled_from(["100.5", "99", "0.001", "1e2"]))
        qty = draw(st.sampled_from(["1", "0.25", "3.5"]))
        ibm = draw(st.sampled_from(["true", "false", "True"]))
        if kind == "badprice":
            price = "-1"
        if kind == "zeroqty":
            qty = "0"
        fields = (
            [str(tid), price, qty, "1", "1", str(t), ibm, "true"]
            if market == "spot"
            else [str(tid), price, qty, "1", "1", str(t), ibm]
        )
        if kind == "blank":
            rows.append("")
            continue
        if kind == "extra":
            fields.append("9")
        if kind == "short":
            fields = fields[:3]
        if kind == "abc":
            fields[1] = "abc"
        if kind == "empty":
            fields[2] = ""
        rows.append(",".join(fields))
    header = market == "um" and draw(st.booleans())
    text = (
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
        if header
        else ""
    )
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text += eol.join(rows) + (eol if rows else "")
    raw = text.encode()
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    return raw, market, eol


@st.composite
def random_files(draw):
    return _random_csv(draw)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=random_files(), blocks=st.lists(st.integers(64, 400), min_size=2, max_size=3, unique=True))
def test_random_files_equal_the_reference_at_every_block_size(tmp_path_factory, f, blocks):
    payload, market, _ = f
    sf = bn.SourceFile(market, "aggTrades", "BTCUSDT", "daily", "2025-01-01", "2025-01-01", "2025-01-02")
    ref = reference(payload, market, "aggTrades", "BTCUSDT", sf.first, sf.last, max_bad_fraction=0.5)
    tmp = str(tmp_path_factory.mktemp("rand"))
    results = []
    for block in blocks + [bn.BLOCK_SIZE]:
        days, man = stream(tmp, sf, payload, block, late_spill_bytes=block, max_bad_fraction=0.5)
        assert_same(days, man, ref)
        results.append(
            ({d: v.to_dict("list") for d, v in days.items()}, man.get("dropped"), man.get("id_gaps"))
        )
    assert all(r == results[0] for r in results)


def test_every_block_boundary_of_one_file(tmp_path):
    """One file with blank lines, bad rows, BOM and CRLF, cut at every block size from 64 bytes."""
    rows = []
    for i in range(40):
        t = 1735689600000 + i * 3_600_000  # 2025-01-01 00:00 then hourly into 2025-01-02
        rows.append(f"{1000 + (i % 17)},{100 + i}.5,0.{i + 1},1,1,{t},{'true' if i % 3 else 'false'}")
        if i % 11 == 5:
            rows.append("")
        if i % 13 == 7:
            rows.append(f"{5000 + i},1.0,1.0,1,1,{t},true,extra")
    payload = ("\ufeff" + "\r\n".join(rows) + "\r\n").encode()
    sf = bn.SourceFile("um", "aggTrades", "BTCUSDT", "daily", "2025-01-01", "2025-01-01", "2025-01-02")
    ref = reference(payload, "um", "aggTrades", "BTCUSDT", sf.first, sf.last, max_bad_fraction=0.2)
    assert ref["bad_lines"] and ref["dropped"]["duplicate"] > 0
    for block in range(64, 260, 7):
        days, man = stream(str(tmp_path), sf, payload, block, late_spill_bytes=block, max_bad_fraction=0.2)
        assert_same(days, man, ref)


def test_header_row_count_mismatch_and_bom_on_a_headerless_file(tmp_path):
    """A BOM does not turn the first data row into a header (all 3 rows kept)."""
    payload = b"\xef\xbb\xbf" + b"".join(
        b"%d,1.0,2.0,1,1,%d,true,true\n" % (7 + i, 1735689600000000 + i) for i in range(3)
    )
    sf = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    days, man = stream(str(tmp_path), sf, payload, 64)
    assert man["status"] == "ok" and man["rows"] == 3 and man["bom"] and not man["header"]
    assert days["2025-01-01"]["trade_id"].tolist() == [7, 8, 9]


def test_crlf_and_ms_us_files_give_the_same_lake(tmp_path):
    rows = [(1, 1735689600123), (2, 1735689600124)]
    ms = "".join(f"{i},100.0,2.0,{i},{i},{t},True,True\r\n" for i, t in rows).encode()
    us = "".join(f"{i},100.0,2.0,{i},{i},{t * 1000},true,true\n" for i, t in rows).encode()
    sf = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    a, ma = stream(str(tmp_path / "a"), sf, ms, 64)
    b, mb = stream(str(tmp_path / "b"), sf, us, 64)
    assert (ma["time_unit"], mb["time_unit"]) == ("ms", "us")
    pd.testing.assert_frame_equal(a["2025-01-01"], b["2025-01-01"], check_exact=True)
    assert ma["days"][0]["version"] == mb["days"][0]["version"]


def test_an_extra_column_on_every_row_fails_the_file_quoting_lines(tmp_path):
    payload = b"".join(b"%d,1.0,2.0,1,1,%d,true,true,9\n" % (i, 1735689600000000 + i) for i in range(2000))
    sf = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    days, man = stream(str(tmp_path), sf, payload, 1 << 12)
    assert man["status"] == "failed" and days == {} and man.get("days", []) == []
    assert "do not parse" in man["error"] and "data.max_bad_row_fraction=0.001" in man["error"]
    assert "BTCUSDT-aggTrades-2025-01-01.csv line 1: 9 columns, expected 8" in man["error"]
    assert "line 2: 9 columns" in man["error"] and "row None" not in man["error"]


def test_funding_reads_the_same_with_any_block(tmp_path):
    raw = io.BytesIO()
    text = "calc_time,funding_interval_hours,last_funding_rate\n" + "".join(
        f"{1735689600000 + k * 28_800_000},8,0.000{k % 9 + 1}\n" for k in range(90)
    )
    table, info = bn.parse_funding(text.encode(), "um", "f.csv", block_size=64)
    ref, _ = bn.parse_funding(text.encode(), "um", "f.csv")
    assert table.equals(ref) and table.num_rows == 90 and info.header
    del raw


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_member_cut_short_fails_and_leaves_nothing(tmp_path, cut):
    """A truncated deflate stream (zip directory intact) fails at the end: no day of it is kept."""
    from btsys.data.download import UnsafeArchive, open_member

    payload = b"".join(b"%d,1.0,2.0,1,1,%d,true,true\n" % (i, 1735689600000000 + i) for i in range(20000))
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.csv", payload)
    raw = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).infolist()[0]
    start = info.header_offset + 30 + len(info.filename)
    k = start + int(info.compress_size * cut)
    raw[k : start + info.compress_size] = b"\x00" * (start + info.compress_size - k)
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchive, match="x.zip: corrupt"), open_member(str(path), "x.zip") as m:
        while m.read(1 << 16):
            pass


def test_a_crc_error_at_the_end_of_a_streamed_member_leaves_nothing(tmp_path):
    """The deflate stream is fine but the CRC-32 in the zip's headers is wrong: found only at the
    end of the member, after days were already staged; the file fails and no day of it is kept."""
    rows = b"".join(
        b"%d,1.0,2.0,%d,%d,%d,true\n" % (i, i, i, 1735689600000 + i * 864) for i in range(3 * 100_000)
    )
    sf = bn.SourceFile("um", "aggTrades", "BTCUSDT", "daily", "2025-01-01", "2025-01-01", "2025-01-03")
    root = tmp_path / "mirror"
    put_zip(str(root), sf, rows)
    path = root / sf.rel
    raw = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):  # local and central header CRC-32
        k = raw.find(sig)
        raw[k + off] ^= 0xFF
    path.write_bytes(bytes(raw))
    import hashlib

    (root / (sf.rel + ".CHECKSUM")).write_text(f"{hashlib.sha256(bytes(raw)).hexdigest()}  {sf.name}\n")
    store = LocalStorage(str(tmp_path / "store"))
    s = task_settings({}, root.as_uri())
    s.update(block_size=1 << 16)
    staged = []
    orig = store.write_parquet
    store.write_parquet = lambda t, key, **kw: (staged.append(key), orig(t, key, **kw))[1]
    man = ingest_file(sf, store, s)
    assert man["status"] == "failed" and "size/CRC-32 do not match" in man["error"]
    assert len(staged) >= 2  # days were staged before the end of the member showed the error
    commit_files(store, [man], s["staging"])
    assert [k for k in store.list("") if k.endswith(".parquet")] == []
