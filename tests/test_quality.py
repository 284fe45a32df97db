"""Data-quality table: per-day statistics by hand, the manifest join, the exclusion policy."""

from __future__ import annotations

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
)
from btsys.data.quality import _manifest_rows as manifest_rows

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
        "n_files": 1,
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


MANIFESTS = [
    {"file": "AUSDT-aggTrades-2025-01-01.zip", "symbol": "AUSDT", "dataset": "aggTrades", "status": "ok",
     "dropped": {"bad_price": 2, "duplicate": 1}},
    {"file": "AUSDT-aggTrades-2025-01-02.zip", "symbol": "AUSDT", "dataset": "aggTrades", "status": "ok",
     "flags": ["truncated"]},
    {"file": "AUSDT-aggTrades-2025-01-03.zip", "symbol": "AUSDT", "dataset": "aggTrades",
     "status": "missing"},
    {"file": "BUSDT-aggTrades-2025-01.zip", "symbol": "BUSDT", "dataset": "aggTrades", "status": "ok",
     "dropped": {"out_of_period": 7}},
]  # fmt: skip


def test_assemble_joins_days_manifests_and_marks_missing_and_truncated():
    rows = [
        _row("AUSDT", "2025-01-01", 100, 5, 86_390, 1, 100),
        _row("AUSDT", "2025-01-02", 50, 5, 40_000, 104, 153),  # stops at 11:06: truncated
        _row("BUSDT", "2025-01-01", 80, 4_000, 86_000, 10, 89),  # starts at 01:06: truncated
        _row("BUSDT", "2025-01-03", 80, 5, 86_000, 90, 169),
    ]
    t = assemble(rows, manifest_rows(MANIFESTS), ["AUSDT", "BUSDT"], "2025-01-01", "2025-01-03").set_index(
        ["symbol", "date"]
    )
    assert t["status"].to_dict() == {
        ("AUSDT", "2025-01-01"): "ok",
        ("AUSDT", "2025-01-02"): "truncated",
        ("AUSDT", "2025-01-03"): "missing",
        ("BUSDT", "2025-01-01"): "truncated",
        ("BUSDT", "2025-01-02"): "missing",
        ("BUSDT", "2025-01-03"): "ok",
    }
    a1, a3, b2 = (
        t.loc[("AUSDT", "2025-01-01")],
        t.loc[("AUSDT", "2025-01-03")],
        t.loc[("BUSDT", "2025-01-02")],
    )
    # a daily file's drops belong to its day; a monthly file's cannot be split by day (null)
    assert (a1["dropped"], a1["dropped_bad_price"], a1["dropped_duplicate"], a1["dropped_out_of_period"]) == (
        3,
        2,
        1,
        0,
    )
    assert pd.isna(b2["dropped"]) and pd.isna(b2["dropped_out_of_period"])
    assert (a3["source_status"], a3["rows"], a3["coverage"], a3["max_gap_s"]) == ("missing", 0, 0.0, 86_400.0)
    assert pd.isna(a3["first_ts"]) and b2["source"] == "BUSDT-aggTrades-2025-01.zip"
    # ids missing between traded days: A 100 -> 104, B 89 -> 90
    assert (
        t.loc[("AUSDT", "2025-01-02"), "id_gap_prev"] == 3
        and t.loc[("BUSDT", "2025-01-03"), "id_gap_prev"] == 0
    )
    assert t["day"].dtype == np.int64 and str(t["first_ts"].dtype) == "Int64"


def test_policy_excludes_with_reasons_and_defaults_report_only():
    rows = [_row("AUSDT", "2025-01-01", 100, 5, 86_390, 1, 100, cov=0.95)]
    rows.append({**_row("AUSDT", "2025-01-02", 10, 5, 86_390, 101, 110, cov=0.4), "max_gap_s": 20_000.0})
    t = assemble(rows, manifest_rows([]), ["AUSDT"], "2025-01-01", "2025-01-03")
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
    store.write_parquet(t, "lake/x/date=2025-01-01/part.parquet")
    with pytest.raises(
        ValueError, match=r"AUSDT 2025-01-01: tick at ts .* outside its date partition .*part.parquet"
    ):
        day_row(store, "AUSDT", "2025-01-01", ["lake/x/date=2025-01-01/part.parquet"], 300 * S)
