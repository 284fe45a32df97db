"""Data-quality table: per-day statistics by hand, the manifest join, the exclusion policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from btsys.data.quality import (
    DAY_US,
    apply_policy,
    assemble,
    day_stats,
    excluded_days,
    format_summary,
    policy_from_config,
    source_rows,
)

S = 1_000_000
D0 = 20089 * DAY_US  # 2025-01-01


def test_day_stats_by_hand():
    ts = np.array([10, 20, 700, 86_000], np.int64) * S + D0
    st = day_stats(ts, np.array([1, 2, 5, 5]), D0, 300 * S)
    # stretches: 0-10, 10-20, 20-700, 700-86000, 86000-86400 s
    assert st["max_gap_s"] == 85_300.0
    assert st["n_gaps"] == 3
    assert st["coverage"] == pytest.approx(1 - (680 + 85_300 + 400) / 86_400)
    assert (st["id_gaps"], st["duplicates"], st["min_id"], st["max_id"]) == (2, 1, 1, 5)
    empty = day_stats(np.zeros(0, np.int64), np.zeros(0, np.int64), D0, 300 * S)
    assert (empty["max_gap_s"], empty["n_gaps"], empty["coverage"]) == (86_400.0, 1, 0.0)


def _row(sym, date, rows, first_s, last_s, min_id, max_id, cov=0.99):
    day = (pd.Timestamp(date).value // 1000 // DAY_US) * DAY_US
    return {
        "symbol": sym,
        "date": date,
        "rows": rows,
        "volume": 1.0,
        "quote_volume": 10.0,
        "max_gap_s": 100.0,
        "n_gaps": 0,
        "coverage": cov,
        "id_gaps": 0,
        "duplicates": 0,
        "first_ts": day + first_s * S,
        "last_ts": day + last_s * S,
        "min_id": min_id,
        "max_id": max_id,
    }


def _man(file, symbol, status="ok", **kw):
    return {"file": file, "symbol": symbol, "dataset": "aggTrades", "status": status, **kw}


MONTH = {"first": "2025-01-01", "last": "2025-01-31", "period": "monthly"}
MANIFESTS = [
    _man("AUSDT-aggTrades-2025-01-01.zip", "AUSDT", dropped={"bad_price": 2, "duplicate": 1}),
    _man("AUSDT-aggTrades-2025-01-02.zip", "AUSDT", flags=["truncated"]),
    _man("AUSDT-aggTrades-2025-01-03.zip", "AUSDT", "missing"),
    # a monthly file counting its drops per day; the rows out of the month belong to no day
    _man("BUSDT-aggTrades-2025-01.zip", "BUSDT", **MONTH,
         dropped={"out_of_period": 7, "bad_qty": 3, "duplicate_across_days": 2},
         dropped_by_day={"2025-01-01": {"bad_qty": 3}, "2025-01-03": {"duplicate_across_days": 2}}),
    # the daily file asked for the day the monthly file did not cover: it speaks for that day
    _man("BUSDT-aggTrades-2025-01-02.zip", "BUSDT", "missing"),
    # a monthly manifest that does not count drops per day
    _man("CUSDT-aggTrades-2025-01.zip", "CUSDT", **MONTH, dropped={"bad_price": 4}),
]  # fmt: skip


def _part(symbol, date, source, complete=True):
    return {"market": "spot", "dataset": "aggTrades", "symbol": symbol, "date": date, "source": source,
            "complete": complete, "path": f"lake/{symbol}/{date}", "rows": 1}  # fmt: skip


PARTITIONS = [
    _part("AUSDT", "2025-01-01", "AUSDT-aggTrades-2025-01-01.zip"),
    _part("AUSDT", "2025-01-02", "AUSDT-aggTrades-2025-01-02.zip", complete=False),
    _part("BUSDT", "2025-01-01", "BUSDT-aggTrades-2025-01.zip"),
    _part("BUSDT", "2025-01-03", "BUSDT-aggTrades-2025-01.zip"),
    _part("CUSDT", "2025-01-01", "CUSDT-aggTrades-2025-01.zip"),
    # served by a monthly file of an earlier run: not in this listing's files, read from the store
    _part("DUSDT", "2025-01-01", "DUSDT-aggTrades-2025-01.zip"),
]


def test_assemble_joins_days_and_their_source_files_and_marks_missing_and_truncated(tmp_path):
    from btsys.data.lake import Series
    from btsys.storage import LocalStorage

    store = LocalStorage(str(tmp_path))
    store.write_text(
        Series("spot", "aggTrades", "DUSDT").manifest_key("DUSDT-aggTrades-2025-01.zip"),
        json.dumps(
            _man(
                "DUSDT-aggTrades-2025-01.zip",
                "DUSDT",
                **MONTH,
                dropped_by_day={"2025-01-01": {"bad_price": 1}},
            )
        ),
    )
    rows = [
        _row("AUSDT", "2025-01-01", 100, 5, 86_390, 1, 100),
        _row("AUSDT", "2025-01-02", 50, 5, 86_390, 104, 153),  # full day, but its file was cut
        _row("BUSDT", "2025-01-01", 80, 4_000, 86_000, 10, 89),  # starts at 01:06: truncated
        _row("BUSDT", "2025-01-03", 80, 5, 86_000, 90, 169),
        _row("CUSDT", "2025-01-01", 80, 5, 86_000, 1, 80),
        _row("DUSDT", "2025-01-01", 80, 5, 86_000, 1, 80),
    ]
    syms = ["AUSDT", "BUSDT", "CUSDT", "DUSDT"]
    sources = source_rows(PARTITIONS, MANIFESTS, store)
    t = assemble(rows, sources, syms, "2025-01-01", "2025-01-03").set_index(["symbol", "date"])
    status = t["status"].to_dict()
    assert [status[("AUSDT", d)] for d in ("2025-01-01", "2025-01-02", "2025-01-03")] == [
        "ok",
        "truncated",
        "missing",
    ]
    assert [status[("BUSDT", d)] for d in ("2025-01-01", "2025-01-02", "2025-01-03")] == [
        "truncated",
        "missing",
        "ok",
    ]
    a1, a3, b1, b2, b3, c1, d1 = (
        t.loc[k]
        for k in [
            ("AUSDT", "2025-01-01"),
            ("AUSDT", "2025-01-03"),
            ("BUSDT", "2025-01-01"),
            ("BUSDT", "2025-01-02"),
            ("BUSDT", "2025-01-03"),
            ("CUSDT", "2025-01-01"),
            ("DUSDT", "2025-01-01"),
        ]
    )
    # a daily file's drops all belong to its day
    assert (a1["dropped"], a1["dropped_bad_price"], a1["dropped_duplicate"], a1["dropped_bad_qty"]) == (
        3,
        2,
        1,
        0,
    )
    # a monthly file's: the day's own share; its rows out of the month are no day's
    assert (b1["dropped"], b1["dropped_bad_qty"], b1["dropped_bad_price"]) == (3, 3, 0)
    assert (b3["dropped"], b3["dropped_duplicate_across_days"], b3["dropped_bad_qty"]) == (2, 2, 0)
    assert "dropped_out_of_period" not in t
    assert b1["source"] == b3["source"] == "BUSDT-aggTrades-2025-01.zip"
    # a missing day names the daily file asked for it; a month not counted per day: null drops
    assert (b2["source"], b2["source_status"]) == ("BUSDT-aggTrades-2025-01-02.zip", "missing")
    assert pd.isna(b2["dropped"]) and pd.isna(c1["dropped"]) and pd.isna(c1["dropped_bad_price"])
    assert (d1["source"], d1["dropped"], d1["dropped_bad_price"]) == ("DUSDT-aggTrades-2025-01.zip", 1, 1)
    assert (a3["source_status"], a3["rows"], a3["coverage"], a3["max_gap_s"]) == ("missing", 0, 0.0, 86_400.0)
    assert pd.isna(a3["first_ts"])
    # ids missing between traded days: A 100 -> 104, B 89 -> 90
    assert (
        t.loc[("AUSDT", "2025-01-02"), "id_gap_prev"] == 3
        and t.loc[("BUSDT", "2025-01-03"), "id_gap_prev"] == 0
    )
    assert t["day"].dtype == np.int64 and str(t["first_ts"].dtype) == "Int64"


def test_policy_excludes_with_reasons_and_defaults_report_only():
    rows = [_row("AUSDT", "2025-01-01", 100, 5, 86_390, 1, 100, cov=0.95)]
    rows.append({**_row("AUSDT", "2025-01-02", 10, 5, 86_390, 101, 110, cov=0.4), "max_gap_s": 20_000.0})
    t = assemble(rows, source_rows([], []), ["AUSDT"], "2025-01-01", "2025-01-03")
    default = policy_from_config(None)
    assert default == {"gap_s": 300.0, "min_coverage": 0.0, "max_gap_s": math.inf}
    assert not apply_policy(t, default)["excluded"].any()
    p = apply_policy(t, policy_from_config({"min_coverage": 0.5, "max_gap_s": 3600}))
    assert p["excluded"].tolist() == [False, True, True]
    assert p["exclude_reason"][1] == (
        "coverage 0.400 < data.quality.min_coverage 0.5; longest gap 20,000s > data.quality.max_gap_s 3600"
    )
    assert p["exclude_reason"][2].startswith("missing day; coverage 0.000")
    assert excluded_days(p) == {"AUSDT": ["2025-01-02", "2025-01-03"]}
    text = format_summary(p)
    assert "AUSDT" in text and "2 excluded" in text and "AUSDT 2025-01-02: coverage 0.400" in text


@pytest.mark.parametrize(
    "q, msg",
    [
        ({"gap_s": 0}, "data.quality.gap_s"),
        ({"min_coverage": 1.5}, "data.quality.min_coverage"),
        ({"max_gap_s": -1}, "data.quality.max_gap_s"),
    ],
)
def test_bad_policy_names_the_key(q, msg):
    with pytest.raises(ValueError, match=msg):
        policy_from_config(q)


def test_a_tick_outside_its_date_partition_is_named(tmp_path):
    import pyarrow as pa

    from btsys.data.quality import day_row
    from btsys.storage import LocalStorage

    store = LocalStorage(str(tmp_path))
    ts = np.array([D0 + 5 * S, D0 + DAY_US + 1], np.int64)
    t = pa.table({"ts": ts, "trade_id": np.array([1, 2]), "qty": np.ones(2), "quote_qty": np.ones(2)})
    store.write_parquet(t, "lake/x/date=2025-01-01/part-0.parquet")
    part = {
        "symbol": "AUSDT",
        "date": "2025-01-01",
        "path": "lake/x/date=2025-01-01/part-0.parquet",
        "rows": 2,
    }
    with pytest.raises(
        ValueError, match=r"AUSDT 2025-01-01: tick at ts .* outside its date partition .*part-0.parquet"
    ):
        day_row(store, part, 300 * S)


def test_the_quality_heatmap_is_drawn_once_for_an_unchanged_table():
    """The jobs of a multirun share their quality table: its heatmap is drawn once, and a changed
    table is drawn again (never the previous table's chart)."""
    from btsys.report.quality import quality_heatmap_png
    from btsys.report.universe import _heatmap, parquet_bytes

    t1 = pd.DataFrame(
        {
            "symbol": ["AAAUSDT", "AAAUSDT", "BBBUSDT", "BBBUSDT"],
            "date": ["2025-01-01", "2025-01-02"] * 2,
            "coverage": [1.0, 0.5, 0.2, 1.0],
            "status": ["ok", "truncated", "ok", "ok"],
        }
    )
    first = _heatmap(t1, parquet_bytes(t1))
    assert first == quality_heatmap_png(t1)
    assert _heatmap(t1.copy(), parquet_bytes(t1.copy())) is first
    t2 = t1.assign(coverage=[1.0, 0.5, 0.9, 1.0])
    second = _heatmap(t2, parquet_bytes(t2))
    assert second == quality_heatmap_png(t2) and second != first
