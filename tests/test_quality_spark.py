"""The quality job through Spark on a synthetic mirror with listings, a delisting and a cut day:
equal to a single-pass reference; membership from it has no look-ahead; bars restart after an
excluded day."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from btsys.bars import build_bars
from btsys.bars.lake import load_bars, split_segments
from btsys.data.ingest import read_ticks
from btsys.data.quality import DAY_US
from btsys.data.synthetic import generate_mirror
from btsys.stages.bars import build as run_bars
from btsys.stages.ingest import build as run_ingest
from btsys.stages.quality import build as run_quality
from btsys.storage import LocalStorage
from btsys.universe import UniverseSpec, compute_membership, members_at

DATES = [f"2025-01-0{d}" for d in range(1, 6)]
PROFILES = {
    "AAAUSDT": {"listing": "2025-01-02"},
    "BBBUSDT": {"delisting": "2025-01-03"},
    "CCCUSDT": {"volume_scale": 5.0},
}
GAP_S = 300.0
CUT = ("CCCUSDT", "2025-01-03", 6 * 3600, 9 * 3600)  # ticks between 06:00 and 09:00 removed


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("qlake")
    generate_mirror(
        str(root / "mirror"),
        symbols=list(PROFILES),
        start=DATES[0],
        end=DATES[-1],
        ticks_per_day=300,
        profiles=PROFILES,
    )
    store = LocalStorage(str(root / "store"))
    data = {
        "market": "spot",
        "dataset": "aggTrades",
        "symbols": list(PROFILES),
        "start": DATES[0],
        "end": DATES[-1],
    }
    listing = run_ingest(spark, data, store, base_url=(root / "mirror").as_uri(), listing_prefix="listing")
    # cut three hours out of one day's lake file (a gap and missing ids the report must show)
    sym, date, a, b = CUT
    (p,) = [p for p in listing["partitions"] if p["symbol"] == sym and p["date"] == date]
    t = store.read_parquet(p["path"])
    sec = (t["ts"].to_numpy() - pd.Timestamp(date).value // 1000) / 1e6
    keep = ~((sec >= a) & (sec < b))
    store.write_parquet(t.filter(pa.array(keep)), p["path"])
    p["rows"] = int(keep.sum())
    return root, store, listing, int((~keep).sum())


def ref_table(store, listing):
    """One pass per symbol over its whole tick stream, plain Python per day."""
    out = []
    for sym in PROFILES:
        parts = sorted((p for p in listing["partitions"] if p["symbol"] == sym), key=lambda p: p["date"])
        ticks = read_ticks(store, [p["path"] for p in parts]).to_pandas()
        day = ticks["ts"] // DAY_US
        for date in DATES:
            d0 = pd.Timestamp(date).value // 1000
            g = ticks[day == d0 // DAY_US]
            ts, ids = g["ts"].tolist(), sorted(g["trade_id"].tolist())
            pts = [d0, *ts, d0 + DAY_US]
            gaps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
            long = [x for x in gaps if x > GAP_S * 1e6]
            steps = [b - a for a, b in zip(ids, ids[1:], strict=False)]
            out.append(
                {
                    "symbol": sym,
                    "date": date,
                    "rows": len(ts),
                    "volume": g["qty"].sum(),
                    "quote_volume": g["quote_qty"].sum(),
                    "first_ts": ts[0] if ts else None,
                    "last_ts": ts[-1] if ts else None,
                    "max_gap_s": max(gaps) / 1e6,
                    "n_gaps": len(long),
                    "coverage": 1 - sum(long) / DAY_US,
                    "id_gaps": sum(s - 1 for s in steps if s > 1),
                    "duplicates": sum(1 for s in steps if s == 0),
                }
            )
    return pd.DataFrame(out)


def test_distributed_table_equals_single_pass_reference(spark, lake):
    root, store, listing, n_cut = lake
    meta = run_quality(spark, store, listing, GAP_S, "q/base")
    got = store.read_parquet(meta["path"]).to_pandas()
    want = ref_table(store, listing)
    assert list(got[["symbol", "date"]].itertuples(index=False, name=None)) == [
        (s, d) for s in sorted(PROFILES) for d in DATES
    ]
    for c in ("rows", "n_gaps", "id_gaps", "duplicates"):
        assert got[c].tolist() == want[c].tolist(), c
    for c in ("volume", "quote_volume", "max_gap_s", "coverage"):
        np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float), rtol=1e-12, err_msg=c)
    for c in ("first_ts", "last_ts"):
        pd.testing.assert_series_equal(got[c], want[c].astype("Int64"), check_names=False)
    g = got.set_index(["symbol", "date"])
    # not listed yet / delisted: missing days, the 404s recorded as the source status
    assert g.loc[("AAAUSDT", "2025-01-01"), ["status", "source_status"]].tolist() == ["missing", "missing"]
    assert [g.loc[("BBBUSDT", d), "status"] for d in DATES] == ["ok"] * 3 + ["missing"] * 2
    # the cut: a 3-hour gap, its ids missing, and still daily drop counts (0) from the manifest
    cut = g.loc[("CCCUSDT", "2025-01-03")]
    assert cut["max_gap_s"] >= 3 * 3600 and cut["id_gaps"] == n_cut and cut["dropped"] == 0
    # CCC trades five times the size
    mean_q = got[got["rows"] > 0].groupby("symbol")["quote_volume"].mean()
    assert mean_q["CCCUSDT"] > 2.5 * max(mean_q["AAAUSDT"], mean_q["BBBUSDT"])
    assert meta["summary"]["missing"] == 3 and meta["summary"]["days"] == 15


def _scale_days(store, listing, symbol, from_date, factor):
    for p in listing["partitions"]:
        if p["symbol"] == symbol and p["date"] >= from_date:
            t = store.read_parquet(p["path"])
            for c in ("qty", "quote_qty"):
                i = t.schema.get_field_index(c)
                t = t.set_column(i, c, pa.array(t[c].to_numpy() * factor))
            store.write_parquet(t, p["path"])


def test_membership_from_the_lake_has_no_look_ahead(spark, lake, tmp_path):
    root, _, listing, _ = lake
    shutil.copytree(root / "store", tmp_path / "store")
    store = LocalStorage(str(tmp_path / "store"))
    spec = UniverseSpec("top_n", n=1, lookback_days=2, rebalance="1d")

    def membership(prefix):
        t = store.read_parquet(run_quality(spark, store, listing, GAP_S, prefix)["path"]).to_pandas()
        return compute_membership(t[t["rows"] > 0], spec, list(PROFILES), DATES[0], DATES[-1])

    base = membership("q/a")
    assert [members_at(base, (20089 + k) * DAY_US) for k in range(5)] == [[], ["CCCUSDT"], *[["CCCUSDT"]] * 3]
    # AAA trades 1000x more from Jan 3 on: no membership up to Jan 3 may change, later ones do
    _scale_days(store, listing, "AAAUSDT", "2025-01-03", 1000.0)
    after = membership("q/b")
    upto = base.times <= (20089 + 2) * DAY_US
    np.testing.assert_array_equal(base.member[upto], after.member[upto])
    assert members_at(after, (20089 + 3) * DAY_US) == ["AAAUSDT"]


def test_bars_restart_after_an_excluded_day(spark, lake):
    _, store, listing, _ = lake
    ticks = {
        s: read_ticks(
            store,
            [p["path"] for p in sorted(listing["partitions"], key=lambda p: p["date"]) if p["symbol"] == s],
        ).to_pandas()
        for s in PROFILES
    }
    excluded = {"CCCUSDT": ["2025-01-03"], "AAAUSDT": ["2025-01-01"], "BBBUSDT": ["2025-01-05"]}
    for name, opts in {
        "fixed": {"threshold": 2e5},
        "dynamic": {"threshold": 2e5, "threshold_mode": "dynamic", "bars_per_day": 20, "lookback_days": 2},
    }.items():
        meta = run_bars(spark, {"kind": "dollar", **opts}, store, listing, f"bars/{name}", excluded=excluded)
        c = ticks["CCCUSDT"]
        day = pd.to_datetime(c["ts"], unit="us").dt.strftime("%Y-%m-%d")
        first = build_bars(
            c[day < "2025-01-03"].reset_index(drop=True), kind="dollar", keep_partial=False, **opts
        )
        second = build_bars(
            c[day > "2025-01-03"].reset_index(drop=True), kind="dollar", keep_partial=True, **opts
        )
        want = pd.concat([first, second], ignore_index=True)
        pd.testing.assert_frame_equal(
            load_bars(store, meta, "CCCUSDT", keep_partial=True), want, check_exact=True
        )
        segs = meta["symbols"]["CCCUSDT"]["segments"]
        assert [(s["first"], s["last"]) for s in segs] == [
            ("2025-01-01", "2025-01-02"),
            ("2025-01-04", "2025-01-05"),
        ]
        assert meta["symbols"]["CCCUSDT"]["n_ticks"] == len(c) - int((day == "2025-01-03").sum())
        # excluded days outside a symbol's data change nothing: one pass over its whole stream
        for s in ("AAAUSDT", "BBBUSDT"):
            whole = build_bars(ticks[s], kind="dollar", keep_partial=True, **opts)
            pd.testing.assert_frame_equal(
                load_bars(store, meta, s, keep_partial=True), whole, check_exact=True
            )
            assert "segments" not in meta["symbols"][s]


def test_split_segments_cuts_at_excluded_days_with_or_without_files():
    parts = [{"date": d, "path": d} for d in ("2025-01-01", "2025-01-02", "2025-01-04", "2025-01-05")]
    dates = lambda segs: [[p["date"] for p in s] for s in segs]  # noqa: E731
    assert dates(split_segments(parts, None)) == [["2025-01-01", "2025-01-02", "2025-01-04", "2025-01-05"]]
    assert dates(split_segments(parts, ["2025-01-02"])) == [["2025-01-01"], ["2025-01-04", "2025-01-05"]]
    # 01-03 has no file (a missing day) but is excluded: the stream still restarts after it
    assert dates(split_segments(parts, ["2025-01-03"])) == [
        ["2025-01-01", "2025-01-02"],
        ["2025-01-04", "2025-01-05"],
    ]
    assert dates(split_segments(parts, ["2025-01-01", "2025-01-05", "2025-01-09"])) == [
        ["2025-01-02", "2025-01-04"]
    ]


# --------------------------------------------------------------------------- monthly sources
def test_a_monthly_files_drops_land_on_their_days(spark, tmp_path):
    """A USD-M month with a bad price and a zero qty on Jan 3, a repeated line on Jan 5, Jan 5's id
    again on Jan 6 and a row from February: each drop on its day, the February row on none."""
    import json

    from lakecheck import member, rewrite

    from btsys.data import binance as bn

    root, store = tmp_path / "mirror", LocalStorage(str(tmp_path / "store"))
    generate_mirror(str(root), markets=["um"], start="2025-01-01", end="2025-01-31", ticks_per_day=40)
    sf = bn.source_file("um", "aggTrades", "BTCUSDT", "monthly", "2025-01")
    head, *lines = member(root / sf.rel).splitlines()
    rows = [ln.split(b",") for ln in lines]
    day = lambda r: int(r[5]) // 86_400_000 - 20089 + 1  # noqa: E731  (day of January)
    on = {d: [k for k, r in enumerate(rows) if day(r) == d] for d in (3, 5, 6)}
    rows[on[3][0]][1] = b"-1"  # bad price
    rows[on[3][1]][2] = b"0"  # bad qty
    rows.insert(on[5][0] + 1, list(rows[on[5][0]]))  # the same line twice on Jan 5
    jan6 = rows[on[6][0] + 1]
    rows.append([rows[on[5][0]][0], *jan6[1:]])  # a Jan 5 id again on Jan 6 (kept on Jan 5)
    rows.append([b"1", *jan6[1:5], str(20089 * 86_400_000 + 40 * 86_400_000).encode(), jan6[6]])  # Feb 10
    rewrite(root / sf.rel, b"\n".join([head, *(b",".join(r) for r in rows)]) + b"\n")
    data = {
        "market": "um",
        "dataset": "aggTrades",
        "symbols": ["BTCUSDT"],
        "start": "2025-01-01",
        "end": "2025-01-31",
    }
    listing = run_ingest(spark, data, store, base_url=root.as_uri(), listing_prefix="listing")
    man = json.loads(store.read_text(f"lake/_manifest/um/BTCUSDT/aggTrades/{sf.name}.json"))
    assert man["dropped"] == {
        "bad_price": 1,
        "bad_qty": 1,
        "duplicate": 1,
        "duplicate_across_days": 1,
        "out_of_period": 1,
    }
    t = store.read_parquet(run_quality(spark, store, listing, GAP_S, "q/month")["path"]).to_pandas()
    t = t.set_index("date")
    assert (t["source"] == sf.name).all() and (t["source_status"] == "ok").all()
    got = {
        d: {c[8:]: int(t.loc[d, c]) for c in t if c.startswith("dropped_") and t.loc[d, c]} for d in t.index
    }
    assert {d: v for d, v in got.items() if v} == {
        "2025-01-03": {"bad_price": 1, "bad_qty": 1},
        "2025-01-05": {"duplicate": 1},
        "2025-01-06": {"duplicate_across_days": 1},
    }
    assert t["dropped"].tolist() == [sum(v.values()) for _, v in sorted(got.items())]
    assert int(t["dropped"].sum()) == sum(man["dropped"].values()) - man["dropped"]["out_of_period"]


def test_a_day_changed_under_its_listing_is_not_read(spark, lake, tmp_path):
    """The quality and bars jobs read a day only while it has the version its listing recorded."""
    from btsys.data.lake import write_day

    root, _, listing, _ = lake
    shutil.copytree(root / "store", tmp_path / "store")
    store = LocalStorage(str(tmp_path / "store"))
    p = listing["partitions"][0]
    write_day(store, p["path"], store.read_parquet(p["path"]), "another-version")
    for job in (
        lambda: run_quality(spark, store, listing, GAP_S, "q/changed"),
        lambda: run_bars(spark, {"kind": "tick", "threshold": 50}, store, listing, "bars/changed"),
    ):
        with pytest.raises(Exception, match="changed since the ingest listing") as e:
            job()
        assert p["path"] in str(e.value)
