"""The lake commit on its own (no Spark): source priority, cross-day duplicates in every order,
stale days, and what a direct reader sees."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

from btsys.data.lake import Series, commit_series, partitions, read_index, write_day
from btsys.data.validate import TICK_SCHEMA, day_number, table_version
from btsys.storage import LocalStorage

S = Series("um", "trades", "BTCUSDT")
D0 = day_number("2025-01-01") * 86_400_000_000


def ticks(day: int, ids) -> pa.Table:
    ids = np.asarray(ids, np.int64)
    n = ids.size
    return pa.table(
        {
            "ts": D0 + day * 86_400_000_000 + np.arange(n, dtype=np.int64) * 1000,
            "trade_id": ids,
            "price": np.full(n, 100.0),
            "qty": np.ones(n),
            "quote_qty": np.full(n, 100.0),
            "is_buyer_maker": np.zeros(n, bool),
        },
        schema=TICK_SCHEMA,
    )


def stage(store, key, day, ids, source, period="daily", complete=True, base="b"):
    t = ticks(day, ids)
    v = table_version(t)
    write_day(store, key, t, v)
    date = f"2025-01-{day + 1:02d}"
    return {
        "date": date,
        "staged": key,
        "source": source,
        "period": period,
        "complete": complete,
        "base": base,
        "sha256": "x",
        "version": v,
        "rows": t.num_rows,
        "min_id": int(min(ids)),
        "max_id": int(max(ids)),
        "first_ts": int(t["ts"][0].as_py()),
        "last_ts": int(t["ts"][-1].as_py()),
    }


def lake_ids(store) -> dict:
    idx = read_index(store, S)
    return {
        p["date"]: store.read_parquet(p["path"])["trade_id"].to_pylist()
        for p in partitions(store, S, sorted(idx["days"]), idx)
    }


DAYS = {0: list(range(0, 10)), 1: list(range(7, 20)), 2: list(range(18, 30))}  # overlapping ids


def test_every_commit_order_gives_the_same_lake(tmp_path):
    """Days committed one by one in any order, or together: earlier days keep shared ids."""
    results = []
    for k, order in enumerate([*itertools.permutations(DAYS), None]):
        store = LocalStorage(str(tmp_path / f"s{k}"))
        groups = [[d] for d in order] if order else [list(DAYS)]
        for g in groups:
            cands = [stage(store, f"tmp/{k}/{d}-{len(results)}.parquet", d, DAYS[d], f"f{d}.zip") for d in g]
            commit_series(store, S, cands, "tmp/x")
        results.append(lake_ids(store))
    assert all(r == results[0] for r in results)
    assert results[0] == {
        "2025-01-01": list(range(0, 10)),
        "2025-01-02": list(range(10, 20)),
        "2025-01-03": list(range(20, 30)),
    }


def test_a_complete_monthly_beats_a_daily_which_beats_a_cut_monthly_and_a_new_base_replaces(tmp_path):
    store = LocalStorage(str(tmp_path))
    commit_series(store, S, [stage(store, "tmp/m.parquet", 0, range(5), "m.zip", "monthly")], "tmp/x")
    commit_series(store, S, [stage(store, "tmp/d.parquet", 0, range(6), "d.zip")], "tmp/x")
    assert read_index(store, S)["days"]["2025-01-01"]["source"] == "m.zip"  # the monthly stays
    commit_series(
        store, S, [stage(store, "tmp/c.parquet", 0, range(4), "m.zip", "monthly", complete=False)], "tmp/x"
    )
    commit_series(store, S, [stage(store, "tmp/d.parquet", 0, range(6), "d.zip")], "tmp/x")
    assert read_index(store, S)["days"]["2025-01-01"]["source"] == "d.zip"  # a cut monthly loses
    commit_series(
        store, S, [stage(store, "tmp/o.parquet", 0, range(3), "m.zip", "monthly", base="other")], "tmp/x"
    )
    assert lake_ids(store) == {"2025-01-01": [0, 1, 2]}  # another source replaces, whatever its kind


def test_a_changed_earlier_day_that_still_overlaps_marks_the_later_day_stale(tmp_path):
    store = LocalStorage(str(tmp_path))
    commit_series(
        store, S, [stage(store, f"tmp/{d}.parquet", d, DAYS[d], f"f{d}.zip") for d in (0, 1)], "tmp/x"
    )
    assert lake_ids(store)["2025-01-02"] == list(range(10, 20))
    idx = commit_series(store, S, [stage(store, "tmp/0b.parquet", 0, [0, 1, 2, 8, 12], "f0.zip")], "tmp/x")
    day2 = idx["days"]["2025-01-02"]
    assert day2["stale"] is True and not idx["pending"]
    assert lake_ids(store) == {"2025-01-01": [0, 1, 2, 8, 12]}  # a stale day is listed by nobody
    ids2 = store.read_parquet(S.day_key("2025-01-02"))["trade_id"].to_pylist()
    assert 12 not in ids2 and ids2 == [10, 11, 13, 14, 15, 16, 17, 18, 19]  # never twice, even stale
    idx = commit_series(store, S, [stage(store, "tmp/1b.parquet", 1, DAYS[1], "f1.zip")], "tmp/x")
    assert lake_ids(store)["2025-01-02"] == [7, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19]  # re-derived
