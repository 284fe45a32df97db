"""One truth per (symbol, day): overlapping runs, monthly and daily files, datasets, direct readers.

Every case checks the exact lake: rows per day, no duplicate (ts, trade_id), one Parquet file per
day folder, and that it equals the lake a clean run over the same days gives.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from lakecheck import lake_files, lake_rows, member, rewrite

from btsys.data import binance as bn
from btsys.data.ingest import manifest_key, read_ticks
from btsys.data.lake import Series, listing_is_current
from btsys.data.synthetic import generate_mirror
from btsys.stages import bars as bars_stage
from btsys.stages import ingest as ingest_stage
from btsys.stages.context import RunContext
from btsys.stages.ingest import build as run_ingest
from btsys.storage import LocalStorage

FAST = {"source": {"retries": 1, "backoff_s": 0.01, "timeout_s": 10}}


def cfg(**kw):
    c = {"market": "um", "dataset": "aggTrades", "symbols": ["BTCUSDT"], **FAST}
    c.update(kw)
    return c


def check_each_trade_once(store) -> dict:
    return lake_rows(store.root)


def day_rows(out) -> list[tuple[str, int]]:
    return [(p["date"], p["rows"]) for p in out["partitions"]]


# --------------------------------------------------------------------------- overlapping ranges
def test_overlapping_ranges_converge_to_a_clean_run(spark, tmp_path):
    """Ingest 01-02 alone, then 01-01..02 where day 2 repeats ids of day 1: the first listing is
    invalidated (not served), the lake equals a clean run, and every order gives that lake."""
    root = tmp_path / "mirror"
    generate_mirror(str(root), markets=["um"], start="2025-01-01", end="2025-01-02", ticks_per_day=400)
    d1 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    d2 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    rows1 = member(root / d1.rel).splitlines()[1:]
    lines2 = member(root / d2.rel).splitlines()
    t0 = lines2[1].split(b",")[5]
    # day 2 repeats the last 100 aggregate ids of day 1, at day-2 times
    extra = [b",".join([r.split(b",")[0], b"100.0", b"1.0", b"1", b"1", t0, b"true"]) for r in rows1[-100:]]
    rewrite(root / d2.rel, b"\n".join([lines2[0], *extra, *lines2[1:]]) + b"\n")
    base = root.as_uri()

    def run(store, start, end, prefix):
        return run_ingest(spark, cfg(start=start, end=end), store, base, prefix)

    shared = LocalStorage(str(tmp_path / "shared"))
    first = run(shared, "2025-01-02", "2025-01-02", "cache/i/a")
    assert day_rows(first) == [("2025-01-02", 500)]  # alone, day 2 has all its rows
    both = run(shared, "2025-01-01", "2025-01-02", "cache/i/b")
    assert day_rows(both) == [("2025-01-01", 400), ("2025-01-02", 400)]
    assert not listing_is_current(shared, first)  # day 2 changed under the first listing
    assert listing_is_current(shared, both)
    again = run(shared, "2025-01-02", "2025-01-02", "cache/i/c")
    assert day_rows(again) == [("2025-01-02", 400)] and again["summary"]["reused"] == 1
    man2 = json.loads(shared.read_text(manifest_key(d2)))
    assert man2["dropped"]["duplicate_across_days"] == 100 and man2["rows"] == 400

    clean = LocalStorage(str(tmp_path / "clean"))
    run(clean, "2025-01-01", "2025-01-02", "cache/i/a")
    reverse = LocalStorage(str(tmp_path / "reverse"))
    run(reverse, "2025-01-01", "2025-01-01", "cache/i/a")
    run(reverse, "2025-01-02", "2025-01-02", "cache/i/b")
    assert lake_files(shared.root) == lake_files(clean.root) == lake_files(reverse.root)
    assert check_each_trade_once(shared) == {
        ("aggTrades", "2025-01-01"): 400,
        ("aggTrades", "2025-01-02"): 400,
    }


def _cfg(root, base, start, end, *extra):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "data=binance",
                "data.market=um",
                "data.symbols=[BTCUSDT]",
                f"data.start={start}",
                f"data.end={end}",
                f"data.source.base_url={base}",
                "data.source.retries=1",
                "data.source.backoff_s=0.01",
                "bars=tick",
                "bars.threshold=50",
                f"storage.root={root}",
                *extra,
            ],
        )


def test_pipeline_reruns_after_an_overlapping_run_and_force_recovers(spark, tmp_path):
    """The issue's case through the pipeline: the first config's rerun gets a fresh listing and
    new bars (no 'listing says 20000 rows' error); force=true gives the same."""
    root = tmp_path / "mirror"
    generate_mirror(str(root), markets=["um"], start="2025-01-01", end="2025-01-02", ticks_per_day=300)
    d1 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    d2 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    rows1 = member(root / d1.rel).splitlines()[1:]
    lines2 = member(root / d2.rel).splitlines()
    t0 = lines2[1].split(b",")[5]
    extra = [b",".join([r.split(b",")[0], b"100.0", b"1.0", b"1", b"1", t0, b"true"]) for r in rows1[-50:]]
    rewrite(root / d2.rel, b"\n".join([lines2[0], *extra, *lines2[1:]]) + b"\n")
    store = tmp_path / "store"
    one = _cfg(store, root.as_uri(), "2025-01-02", "2025-01-02")
    two = _cfg(store, root.as_uri(), "2025-01-01", "2025-01-02")
    c1 = RunContext(one)
    i1 = ingest_stage.run(c1)
    b1 = bars_stage.run(c1, i1)
    assert b1.meta["symbols"]["BTCUSDT"]["n_ticks"] == 350
    c2 = RunContext(two)
    bars_stage.run(c2, ingest_stage.run(c2))
    c3 = RunContext(one)
    i3 = ingest_stage.run(c3)
    assert not i3.hit and i3.key == i1.key and i3.meta["lake_version"] != i1.meta["lake_version"]
    b3 = bars_stage.run(c3, i3)
    assert b3.key != b1.key and b3.meta["symbols"]["BTCUSDT"]["n_ticks"] == 300
    forced = RunContext(_cfg(store, root.as_uri(), "2025-01-02", "2025-01-02", "force=true"))
    i4 = ingest_stage.run(forced)
    assert i4.meta["lake_version"] == i3.meta["lake_version"]
    assert bars_stage.run(forced, i4).meta["symbols"]["BTCUSDT"]["n_ticks"] == 300


# --------------------------------------------------------------------------- monthly and daily files
@pytest.fixture
def month_mirror(tmp_path):
    """January 2025 USD-M trades: the monthly file and every daily file (like Binance's site)."""
    root = tmp_path / "mirror"
    generate_mirror(
        str(root),
        markets=["um"],
        datasets=["trades"],
        start="2025-01-01",
        end="2025-01-31",
        ticks_per_day=40,
        daily="all",
    )
    return root


MONTH = bn.source_file("um", "trades", "BTCUSDT", "monthly", "2025-01")


def test_monthly_404_then_published_replaces_the_daily_days_once(spark, tmp_path, month_mirror):
    root = month_mirror
    hidden = tmp_path / "hidden.zip"
    shutil.move(root / MONTH.rel, hidden)
    shutil.move(str(root / MONTH.rel) + ".CHECKSUM", str(hidden) + ".CHECKSUM")
    store = tmp_path / "store"
    c = _cfg(store, root.as_uri(), "2025-01-01", "2025-01-31", "data.dataset=trades")
    first = ingest_stage.run(RunContext(c))
    parts = first.meta["partitions"]
    assert len(parts) == 31 and all(p["rows"] == 40 for p in parts)
    assert {p["source"] for p in parts} == {f"BTCUSDT-trades-2025-01-{d:02d}.zip" for d in range(1, 32)}
    assert first.meta["summary"]["missing_files"] == ["BTCUSDT-trades-2025-01.zip"]
    s = LocalStorage(str(store))
    before = check_each_trade_once(s)
    # a rerun asks again for the missing monthly only: still 404, nothing else fetched
    again = ingest_stage.run(RunContext(c))
    assert again.hit and again.meta["lake_version"] == first.meta["lake_version"]
    # Binance publishes the month: the rerun finds it and the monthly file now serves every day
    shutil.move(hidden, root / MONTH.rel)
    shutil.move(str(hidden) + ".CHECKSUM", str(root / MONTH.rel) + ".CHECKSUM")
    third = ingest_stage.run(RunContext(c))
    assert {p["source"] for p in third.meta["partitions"]} == {"BTCUSDT-trades-2025-01.zip"}
    assert third.meta["summary"]["missing_files"] == []
    assert check_each_trade_once(s) == before  # same trades, each once
    daily = json.loads(
        s.read_text(manifest_key(bn.source_file("um", "trades", "BTCUSDT", "daily", "2025-01-05")))
    )
    assert daily["days"] == [] and daily["superseded"] == ["2025-01-05"] and daily["rows"] == 0
    month = json.loads(s.read_text(manifest_key(MONTH)))
    assert len(month["days"]) == 31 and month["rows"] == 31 * 40
    # a config over a few days of that month is served from the monthly days: no daily fetched
    few = ingest_stage.run(
        RunContext(_cfg(store, root.as_uri(), "2025-01-10", "2025-01-12", "data.dataset=trades"))
    )
    assert [p["source"] for p in few.meta["partitions"]] == ["BTCUSDT-trades-2025-01.zip"] * 3
    assert few.meta["summary"]["served_from_lake"] == 3 and few.meta["summary"]["files"] == 0


def test_a_monthly_file_with_7_of_31_days_is_completed_from_dailies(spark, tmp_path, month_mirror):
    root = month_mirror
    lines = member(root / MONTH.rel).splitlines()
    seven = [ln for ln in lines[1:] if int(ln.split(b",")[4]) < 1735689600000 + 7 * 86_400_000 - 3_600_000]
    rewrite(root / MONTH.rel, b"\n".join([lines[0], *seven]) + b"\n")  # cut 1 h before day 8
    store = LocalStorage(str(tmp_path / "store"))
    out = run_ingest(
        spark, cfg(dataset="trades", start="2025-01-01", end="2025-01-31"), store, root.as_uri(), "c/a"
    )
    src = {p["date"]: p["source"] for p in out["partitions"]}
    assert len(src) == 31 and all(p["rows"] == 40 for p in out["partitions"])
    assert {src[f"2025-01-{d:02d}"] for d in range(1, 7)} == {"BTCUSDT-trades-2025-01.zip"}
    assert src["2025-01-07"] == "BTCUSDT-trades-2025-01-07.zip"  # cut inside the day: the daily wins
    assert all(src[f"2025-01-{d:02d}"] == f"BTCUSDT-trades-2025-01-{d:02d}.zip" for d in range(7, 32))
    month = json.loads(store.read_text(manifest_key(MONTH)))
    assert month["truncated"] and month["covers"] == [f"2025-01-{d:02d}" for d in range(1, 7)]
    assert check_each_trade_once(store) == {("trades", f"2025-01-{d:02d}"): 40 for d in range(1, 32)}


def test_a_daily_404_inside_a_month_served_by_dailies_is_a_missing_day(spark, tmp_path, month_mirror):
    root = month_mirror
    (root / MONTH.rel).unlink()
    pathlib.Path(str(root / MONTH.rel) + ".CHECKSUM").unlink()
    d9 = bn.source_file("um", "trades", "BTCUSDT", "daily", "2025-01-09")
    (root / d9.rel).unlink()
    pathlib.Path(str(root / d9.rel) + ".CHECKSUM").unlink()
    store = LocalStorage(str(tmp_path / "store"))
    c = cfg(dataset="trades", start="2025-01-01", end="2025-01-31")
    out = run_ingest(spark, c, store, root.as_uri(), "c/a")
    assert [p["date"] for p in out["partitions"]] == [f"2025-01-{d:02d}" for d in range(1, 32) if d != 9]
    assert out["summary"]["missing_files"] == ["BTCUSDT-trades-2025-01-09.zip", "BTCUSDT-trades-2025-01.zip"]
    man = json.loads(store.read_text(manifest_key(d9)))
    assert man["status"] == "missing" and man["error"].startswith("not found: file:")
    from btsys.data.ingest import IngestError

    with pytest.raises(IngestError, match="BTCUSDT-trades-2025-01-09.zip: missing"):
        run_ingest(spark, {**c, "require_complete": True}, store, root.as_uri(), "c/b")


@pytest.mark.slow
def test_daily_monthly_and_both_datasets_keep_one_file_per_day(spark, tmp_path, month_mirror):
    """Daily, then monthly, then the other dataset of the same days: one Parquet file per day folder,
    each dataset's trades once (the issue's store had 3 part files and 49,000 rows for 31,000)."""
    root = month_mirror
    generate_mirror(
        str(root),
        markets=["um"],
        datasets=["aggTrades"],
        start="2025-01-01",
        end="2025-01-31",
        ticks_per_day=40,
        daily="all",
    )
    store = LocalStorage(str(tmp_path / "store"))
    run_ingest(
        spark, cfg(dataset="trades", start="2025-01-01", end="2025-01-30"), store, root.as_uri(), "c/a"
    )
    run_ingest(
        spark, cfg(dataset="trades", start="2025-01-01", end="2025-01-31"), store, root.as_uri(), "c/b"
    )
    run_ingest(
        spark, cfg(dataset="aggTrades", start="2025-01-01", end="2025-01-31"), store, root.as_uri(), "c/c"
    )
    files = lake_files(store.root)
    assert len(files) == 62
    counts = check_each_trade_once(store)
    assert counts == {(d, f"2025-01-{k:02d}"): 40 for d in ("trades", "aggTrades") for k in range(1, 32)}
    # Spark reads the same: each trade of a dataset once
    n = (
        spark.read.parquet(store.uri("lake"))
        .where("dataset = 'trades'")
        .select("trade_id")
        .distinct()
        .count()
    )
    assert n == spark.read.parquet(store.uri("lake")).where("dataset = 'trades'").count() == 31 * 40


def test_a_changed_earlier_day_makes_the_later_day_stale_until_re_derived(spark, tmp_path):
    """Day 2 dropped ids that day 1 held; day 1 is republished without them: day 2 is marked stale
    (no listing trusts it) and the next ingest of day 2 gives it all its rows back."""
    root = tmp_path / "mirror"
    generate_mirror(str(root), markets=["um"], start="2025-01-01", end="2025-01-02", ticks_per_day=100)
    d1 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    d2 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    lines1, lines2 = member(root / d1.rel).splitlines(), member(root / d2.rel).splitlines()
    t0 = lines2[1].split(b",")[5]
    shared_ids = [b"999000001", b"999000002"]
    extra2 = [b",".join([i, b"100.0", b"1.0", b"1", b"1", t0, b"true"]) for i in shared_ids]
    extra1 = [
        b",".join([i, b"100.0", b"1.0", b"1", b"1", lines1[1].split(b",")[5], b"true"]) for i in shared_ids
    ]
    original1 = member(root / d1.rel)
    rewrite(root / d1.rel, b"\n".join([lines1[0], *extra1, *lines1[1:]]) + b"\n")
    rewrite(root / d2.rel, b"\n".join([lines2[0], *extra2, *lines2[1:]]) + b"\n")
    store = LocalStorage(str(tmp_path / "store"))
    both = run_ingest(spark, cfg(start="2025-01-01", end="2025-01-02"), store, root.as_uri(), "c/a")
    assert day_rows(both) == [("2025-01-01", 102), ("2025-01-02", 100)]
    rewrite(root / d1.rel, original1)  # day 1 republished without the two ids
    run_ingest(spark, cfg(start="2025-01-01", end="2025-01-01"), store, root.as_uri(), "c/b")
    idx = json.loads(store.read_text(Series("um", "aggTrades", "BTCUSDT").index_key))
    assert idx["days"]["2025-01-02"]["stale"] is True and not listing_is_current(store, both)
    fixed = run_ingest(spark, cfg(start="2025-01-01", end="2025-01-02"), store, root.as_uri(), "c/c")
    assert day_rows(fixed) == [("2025-01-01", 100), ("2025-01-02", 102)]
    clean = LocalStorage(str(tmp_path / "clean"))
    run_ingest(spark, cfg(start="2025-01-01", end="2025-01-02"), clean, root.as_uri(), "c/a")
    assert lake_files(store.root) == lake_files(clean.root)
    t = read_ticks(store, [p["path"] for p in fixed["partitions"]])
    assert len(np.unique(t["trade_id"].to_numpy())) == t.num_rows == 202


def test_a_missing_checksum_next_to_a_published_zip_fails(spark, tmp_path):
    root = tmp_path / "mirror"
    generate_mirror(str(root), markets=["um"], start="2025-01-01", end="2025-01-02", ticks_per_day=50)
    d2 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    os.remove(str(root / d2.rel) + ".CHECKSUM")
    store = LocalStorage(str(tmp_path / "store"))
    from btsys.data.ingest import IngestError

    with pytest.raises(
        IngestError, match=r"BTCUSDT-aggTrades-2025-01-02.zip: failed: .*\.CHECKSUM is missing"
    ) as e:
        run_ingest(spark, cfg(start="2025-01-01", end="2025-01-02"), store, root.as_uri(), "c/a")
    assert e.value.report["summary"]["missing_files"] == [] and day_rows(e.value.report) == [
        ("2025-01-01", 50)
    ]
