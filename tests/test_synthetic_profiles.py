"""Synthetic mirror profiles: listing and delisting dates (files exist only while listed) and
trade-size scales, so universes change membership in the demo and the tests."""

from __future__ import annotations

import os

import numpy as np
import pytest

from btsys.data.synthetic import generate_mirror, simulate_ticks, symbol_profile
from btsys.data.validate import day_number


def _files(inv):
    return sorted(f["rel"].rsplit("/", 1)[1] for f in inv["files"])


def test_listing_and_delisting_bound_the_files(tmp_path):
    inv = generate_mirror(
        str(tmp_path),
        symbols=["NEWUSDT", "OLDUSDT", "GONEUSDT"],
        start="2025-01-01",
        end="2025-01-04",
        ticks_per_day=50,
        profiles={
            "NEWUSDT": {"listing": "2025-01-03"},
            "OLDUSDT": {"delisting": "2025-01-02"},
            "GONEUSDT": {"delisting": "2024-12-31"},  # gone before the range: no file at all
        },
    )
    assert _files(inv) == [
        "NEWUSDT-aggTrades-2025-01-03.zip",
        "NEWUSDT-aggTrades-2025-01-04.zip",
        "OLDUSDT-aggTrades-2025-01-01.zip",
        "OLDUSDT-aggTrades-2025-01-02.zip",
    ]
    assert all(f["rows"] == 50 for f in inv["files"])
    assert not os.path.exists(tmp_path / "data/spot/daily/aggTrades/GONEUSDT")


def test_a_monthly_file_holds_only_the_listed_days(tmp_path):
    inv = generate_mirror(
        str(tmp_path),
        symbols=["NEWUSDT"],
        start="2025-01-01",
        end="2025-01-31",
        ticks_per_day=20,
        profiles={"NEWUSDT": {"listing": "2025-01-21"}},
    )
    assert _files(inv) == ["NEWUSDT-aggTrades-2025-01.zip"] and inv["files"][0]["rows"] == 11 * 20


def test_profiles_without_changes_give_identical_bytes(tmp_path):
    kw = dict(symbols=["BTCUSDT"], start="2025-01-01", end="2025-01-02", ticks_per_day=100)
    a = generate_mirror(str(tmp_path / "a"), **kw)
    b = generate_mirror(str(tmp_path / "b"), profiles={"BTCUSDT": {"volume_scale": 1.0}}, **kw)
    assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]]


def test_volume_scale_and_trend_multiply_trade_sizes_per_day():
    d0 = day_number("2025-01-01")
    lo, hi, scale = symbol_profile("XUSDT", {"volume_scale": 4.0, "volume_trend": 0.25}, d0, 5)
    assert (lo, hi) == (d0, d0 + 4)
    np.testing.assert_allclose(scale, 4.0 * 0.25 ** (np.arange(5) / 4))  # 4 on day 0 .. 1 on day 4
    base = simulate_ticks("XUSDT", "spot", d0, 5, 2000, seed=3)
    big = simulate_ticks("XUSDT", "spot", d0, 5, 2000, seed=3, qty_scale=scale)
    np.testing.assert_array_equal(base["ts"], big["ts"])
    np.testing.assert_array_equal(base["price"], big["price"])
    ratio = big["qty"].reshape(5, -1).sum(axis=1) / base["qty"].reshape(5, -1).sum(axis=1)
    np.testing.assert_allclose(ratio, scale, rtol=0.02)  # up to lot rounding
    with pytest.raises(ValueError, match=r"profiles.XUSDT: volume_scale and volume_trend must be > 0"):
        symbol_profile("XUSDT", {"volume_scale": 0.0}, d0, 5)
    with pytest.raises(ValueError, match=r"profiles.XUSDT: unknown keys \['volume'\]"):
        symbol_profile("XUSDT", {"volume": 2.0}, d0, 5)
    with pytest.raises(ValueError, match=r"profiles.XUSDT.listing: expected a YYYY-MM-DD date"):
        symbol_profile("XUSDT", {"listing": "soon"}, d0, 5)
