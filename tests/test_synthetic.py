"""The synthetic Binance-layout mirror: layout, determinism, realism, ensure_mirror caching."""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np
import pytest

from btsys.data import binance as bn
from btsys.data.download import open_member, parse_checksum
from btsys.data.synthetic import ensure_mirror, generate_mirror, simulate_ticks
from btsys.storage import LocalStorage


def _member(path):
    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) == 1
        return zf.namelist()[0], zf.read(zf.namelist()[0])


def test_layout_names_checksums_and_time_units(tmp_path):
    inv = generate_mirror(
        str(tmp_path),
        markets=["spot", "um", "cm"],
        datasets=["aggTrades", "trades"],
        symbols=["BTCUSDT"],
        start="2024-12-31",
        end="2025-01-01",
        ticks_per_day=300,
        funding=True,
    )
    rels = {f["rel"] for f in inv["files"]}
    assert "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-01.zip" in rels
    assert "data/futures/cm/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-31.zip" in rels
    assert "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-12.zip" in rels
    assert not any("spot" in r and "fundingRate" in r for r in rels)
    for f in inv["files"]:
        path = os.path.join(tmp_path, f["rel"])
        text = open(path + ".CHECKSUM").read()
        assert text.endswith("\n") and parse_checksum(text, os.path.basename(path)) == f["sha256"]
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() == f["sha256"]
        name, data = _member(path)
        assert name == os.path.basename(path)[:-4] + ".csv"
        first = data.split(b"\n", 1)[0]
        if "/spot/" in f["rel"]:
            assert first[:1].isdigit() and (b",True," in data or b",False," in data)  # no header
            ts = int(first.split(b",")[5 if "aggTrades" in f["rel"] else 4])
            assert (ts >= 10**14) == ("2025-01-01" in f["rel"])  # µs from 2025
        else:
            assert not first[:1].isdigit()  # header
    _, spot = _member(
        os.path.join(tmp_path, "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-01.zip")
    )
    assert spot.split(b"\n")[0].count(b",") == 7  # 8 columns


def test_parses_with_the_real_parsers_and_ids_are_contiguous(tmp_path):
    generate_mirror(
        str(tmp_path),
        markets=["spot", "cm"],
        symbols=["ETHUSDT"],
        start="2025-01-01",
        end="2025-01-02",
        ticks_per_day=1000,
    )
    for market in ("spot", "cm"):
        ids, tss = [], []
        for day in ("2025-01-01", "2025-01-02"):
            sf = bn.source_file(market, "aggTrades", "ETHUSDT", "daily", day)
            raw = open_member(os.path.join(tmp_path, sf.rel), sf.name).read()
            t, info = bn.read_ticks_csv(
                raw, market, "aggTrades", "ETHUSDT", sf.name, bn.DEFAULT_CONTRACT_SIZE
            )
            assert t.num_rows == 1000 and info.malformed_rows == 0
            ids.append(t["trade_id"].to_numpy()), tss.append(t["ts"].to_numpy())
            lines = raw.splitlines()[1 if info.header else 0 :]
            first_ids = np.array([int(x.split(b",")[3]) for x in lines])
            last_ids = np.array([int(x.split(b",")[4]) for x in lines])
            assert np.all(last_ids >= first_ids) and np.all(first_ids[1:] == last_ids[:-1] + 1)
        assert np.all(np.diff(np.concatenate(ids)) == 1)
        assert np.all(np.diff(np.concatenate(tss)) >= 0)


def test_deterministic_and_seed_sensitive(tmp_path):
    a = generate_mirror(
        str(tmp_path / "a"),
        symbols=["BTCUSDT"],
        start="2025-01-01",
        end="2025-01-01",
        ticks_per_day=500,
        seed=1,
    )
    b = generate_mirror(
        str(tmp_path / "b"),
        symbols=["BTCUSDT"],
        start="2025-01-01",
        end="2025-01-01",
        ticks_per_day=500,
        seed=1,
    )
    c = generate_mirror(
        str(tmp_path / "c"),
        symbols=["BTCUSDT"],
        start="2025-01-01",
        end="2025-01-01",
        ticks_per_day=500,
        seed=2,
    )
    assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]]
    assert a["files"][0]["sha256"] != c["files"][0]["sha256"]


def test_realistic_ticks():
    t = simulate_ticks("BTCUSDT", "spot", 20089, 20, 20_000, seed=11)
    ts = t["ts"]
    hour = (ts // 3_600_000_000) % 24
    counts = np.bincount(hour, minlength=24)
    assert counts[13:17].mean() > 1.8 * counts[1:5].mean()  # intraday seasonality
    r = np.diff(np.log(t["price"]))
    r = r[r != 0]
    kurt = ((r - r.mean()) ** 4).mean() / r.var() ** 2
    assert kurt > 5  # heavy-tailed returns
    # volatility clustering: 5-minute absolute returns are autocorrelated
    block = ts // 300_000_000
    last = np.flatnonzero(np.diff(block))
    p5 = np.log(t["price"][last])
    a = np.abs(np.diff(p5))
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.1
    q = t["qty"]
    assert q.min() > 0 and np.percentile(q, 99.9) > 20 * np.median(q)  # heavy-tailed sizes
    ibm = t["is_buyer_maker"][1:]
    assert ibm[np.diff(t["price"]) < 0].mean() > 0.6 > 0.4 > ibm[np.diff(t["price"]) > 0].mean()
    assert np.all(np.diff(t["agg_id"]) == 1) and np.all(np.diff(ts) >= 0)


def test_monthly_files_and_unsorted_futures_months(tmp_path):
    inv = generate_mirror(
        str(tmp_path),
        markets=["spot", "um"],
        symbols=["BTCUSDT"],
        start="2024-11-30",
        end="2024-12-31",
        ticks_per_day=100,
        daily="needed",
    )
    rels = sorted(f["rel"] for f in inv["files"])
    assert [r.rsplit("/", 1)[1] for r in rels if "/um/" in r] == [
        "BTCUSDT-aggTrades-2024-11-30.zip",
        "BTCUSDT-aggTrades-2024-12.zip",
    ]
    for market in ("spot", "um"):
        sf = bn.source_file(market, "aggTrades", "BTCUSDT", "monthly", "2024-12")
        raw = open_member(os.path.join(tmp_path, sf.rel), sf.name).read()
        t, _ = bn.read_ticks_csv(raw, market, "aggTrades", "BTCUSDT", sf.name, {})
        ids = t["trade_id"].to_numpy()
        assert t.num_rows == 3100 and len(np.unique(ids)) == 3100
        assert (np.all(np.diff(ids) == 1)) == (market == "spot")  # futures months jumbled


def test_ensure_mirror_builds_once_atomically_under_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = LocalStorage(str(tmp_path / "store"))
    data = {
        "market": "spot",
        "dataset": "aggTrades",
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "start": "2025-01-01",
        "end": "2025-01-03",
        "synthetic": {"seed": 7, "ticks_per_day": 2000, "markets": ["spot"]},
    }
    url = ensure_mirror(data, store)
    assert url.startswith("file://") and url.startswith((tmp_path / "store" / "mirror").as_uri())
    root = url[len("file://") :]
    assert os.path.isfile(os.path.join(root, "_MIRROR.json"))
    assert sorted(os.listdir(os.path.join(root, "data/spot/daily/aggTrades"))) == ["BTCUSDT", "ETHUSDT"]
    stamp = os.path.getmtime(os.path.join(root, "_MIRROR.json"))
    assert ensure_mirror(data, store) == url and os.path.getmtime(os.path.join(root, "_MIRROR.json")) == stamp
    assert [d for d in os.listdir(tmp_path / "store" / "mirror") if ".tmp-" in d] == []
    other = ensure_mirror({**data, "synthetic": {**data["synthetic"], "seed": 8}}, store)
    assert other != url
    with pytest.raises(ValueError, match="invalid symbol"):
        ensure_mirror({**data, "symbols": ["../../x"]}, store)
    assert [d for d in os.listdir(tmp_path / "store" / "mirror") if ".tmp-" in d] == []
    assert sorted(os.listdir(tmp_path)) == ["store"]  # nothing in the working directory


def test_ensure_mirror_on_s3_uploads_it_into_the_bucket(s3_bucket):
    from btsys.data.download import fetch_bytes
    from btsys.storage import storage_from_dict

    endpoint, bucket = s3_bucket
    store = storage_from_dict({"kind": "s3", "root": f"s3://{bucket}/pre", "endpoint_url": endpoint})
    data = {
        "market": "spot",
        "dataset": "aggTrades",
        "symbols": ["BTCUSDT"],
        "start": "2025-01-01",
        "end": "2025-01-01",
        "synthetic": {"seed": 7, "ticks_per_day": 50},
    }
    url = ensure_mirror(data, store)
    assert url.startswith(f"s3://{bucket}/pre/mirror/")
    keys = store.list("mirror")
    assert keys[-1].endswith("_MIRROR.json") or any(k.endswith("_MIRROR.json") for k in keys)
    rel = "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-01.zip"
    sha = parse_checksum(fetch_bytes(f"{url}/{rel}.CHECKSUM", s3_endpoint=endpoint))
    assert hashlib.sha256(fetch_bytes(f"{url}/{rel}", s3_endpoint=endpoint)).hexdigest() == sha
    assert ensure_mirror(data, store) == url
