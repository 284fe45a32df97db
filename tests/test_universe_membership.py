"""Universe membership: point in time, no look-ahead, no survivorship; candidates from a file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btsys.universe import UniverseSpec, compute_membership, expand_symbols, members_at, rebalance_times
from btsys.universe.symbols import resolve_symbols

D = 86_400_000_000
DAY0 = 20089  # 2025-01-01


def daily(spans):
    """``{symbol: (first day idx, last day idx, quote volume per day)}`` -> the daily table."""
    rows = [
        {"symbol": s, "day": (DAY0 + d) * D, "rows": 10, "quote_volume": v, "volume": v / 2}
        for s, (a, b, v) in spans.items()
        for d in range(a, b + 1)
    ]
    return pd.DataFrame(rows)


SPEC = UniverseSpec("top_n", n=2, lookback_days=3, rebalance="1d", min_history_days=2)


def test_top_n_by_hand_listing_delisting_and_history():
    # A trades every day; B lists on day 2; C is the biggest until it is delisted after day 4; D lists day 5
    t = daily({"A": (0, 9, 1.0), "B": (2, 9, 5.0), "C": (0, 4, 10.0), "D": (5, 9, 20.0)})
    m = compute_membership(t, SPEC, ["D", "C", "B", "A"], "2025-01-01", "2025-01-10")
    got = {r: members_at(m, (DAY0 + r) * D) for r in range(10)}
    assert got == {
        0: [],  # no history at all
        1: [],  # one day of history < min_history_days=2
        2: ["A", "C"],
        3: ["A", "C"],
        4: ["B", "C"],  # B has 2 days of history now and outranks A
        5: ["B", "C"],  # C's last day (4) is still the day before
        6: ["A", "B"],  # C did not trade on day 5: inactive (delisted), A takes its place
        7: ["B", "D"],  # D listed on day 5: two days of history
        8: ["B", "D"],
        9: ["B", "D"],
    }
    tab = m.table.set_index(["date", "symbol"])
    assert tab.loc[("2025-01-07", "C"), "reason"] == "inactive"
    assert tab.loc[("2025-01-07", "D"), "reason"] == "short_history"
    assert tab.loc[("2025-01-06", "D"), "reason"] == "not_listed"
    assert tab.loc[("2025-01-05", "A"), "reason"] == "rank"
    assert tab.loc[("2025-01-05", "B"), "score"] == 10.0  # window days 1-3; B trades on days 2 and 3
    tv = m.turnover()
    assert tv.loc[6, "joined"] == "A" and tv.loc[6, "left"] == "C" and tv.loc[6, "turnover"] == 0.5
    mt = m.metrics()
    assert mt["universe_changes"] == 8.0 and mt["universe_rebalances"] == 10.0
    assert mt["universe_turnover"] == pytest.approx(2.5 / 9)
    w = m.wide()
    assert list(w.columns) == ["ts", "A", "B", "C", "D"] and w["ts"].dtype == np.int64


def test_weekly_rebalance_times_and_measure_choice():
    assert list(rebalance_times("2025-01-01", "2025-01-15", 7)) == [(DAY0 + k) * D for k in (0, 7, 14)]
    t = daily({"A": (0, 9, 1.0), "B": (0, 9, 5.0)})
    t.loc[t.symbol == "A", "rows"] = 1000  # A: far more trades, far less volume
    by_trades = compute_membership(
        t,
        UniverseSpec("top_n", n=1, lookback_days=2, rebalance="1w", measure="trades"),
        ["A", "B"],
        "2025-01-01",
        "2025-01-10",
    )
    by_volume = compute_membership(
        t, UniverseSpec("top_n", n=1, lookback_days=2, rebalance="7d"), ["A", "B"], "2025-01-01", "2025-01-10"
    )
    assert members_at(by_trades, (DAY0 + 7) * D) == ["A"] and members_at(by_volume, (DAY0 + 7) * D) == ["B"]


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"n": 0}, "universe.n must be >= 1"),
        ({"lookback_days": 0}, "universe.lookback_days"),
        ({"rebalance": "12h"}, "universe.rebalance must be a whole number of days"),
        ({"rebalance": "often"}, "universe.rebalance: 'often' is not a duration"),
        ({"measure": "vibes"}, "universe.measure must be one of"),
        ({"min_history_days": -1}, "universe.min_history_days"),
    ],
)
def test_bad_settings_name_the_key(kw, msg):
    with pytest.raises(ValueError, match=msg):
        UniverseSpec("top_n", **kw)


@st.composite
def cases(draw):
    n_sym = draw(st.integers(1, 6))
    n_days = draw(st.integers(2, 16))
    present = draw(
        st.lists(st.lists(st.booleans(), min_size=n_days, max_size=n_days), min_size=n_sym, max_size=n_sym)
    )
    vols = draw(
        st.lists(
            st.lists(st.floats(1.0, 1e6), min_size=n_days, max_size=n_days), min_size=n_sym, max_size=n_sym
        )
    )
    rows = [
        {"symbol": f"S{k}", "day": (DAY0 + d) * D, "rows": 1 + d, "quote_volume": vols[k][d], "volume": 1.0}
        for k in range(n_sym)
        for d in range(n_days)
        if present[k][d]
    ]
    spec = UniverseSpec(
        "top_n",
        n=draw(st.integers(1, 4)),
        lookback_days=draw(st.integers(1, 5)),
        rebalance=f"{draw(st.integers(1, 3))}d",
        min_history_days=draw(st.integers(0, 3)),
    )
    cut = draw(st.integers(0, n_days - 1))  # the perturbed instant: day index
    seed = draw(st.integers(0, 2**31))
    frame = pd.DataFrame(rows, columns=["symbol", "day", "rows", "quote_volume", "volume"])
    return frame, spec, [f"S{k}" for k in range(n_sym)], n_days, cut, seed


def _end(n_days):
    return str((pd.Timestamp("2025-01-01") + pd.Timedelta(days=n_days - 1)).date())


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(cases())
def test_changing_data_on_or_after_an_instant_leaves_its_membership_unchanged(case):
    frame, spec, syms, n_days, cut, seed = case
    rng = np.random.default_rng(seed)
    base = compute_membership(frame, spec, syms, "2025-01-01", _end(n_days))
    # perturb everything on or after day `cut`: volumes, trade counts, rows added and removed
    late = frame["day"] >= (DAY0 + cut) * D
    pert = frame[~late | (rng.random(len(frame)) < 0.5)].copy()
    pert.loc[pert["day"] >= (DAY0 + cut) * D, "quote_volume"] *= rng.uniform(0.01, 100.0)
    extra = [
        {
            "symbol": s,
            "day": (DAY0 + d) * D,
            "rows": 5,
            "quote_volume": float(rng.uniform(1, 1e7)),
            "volume": 1.0,
        }
        for s in syms
        for d in range(cut, n_days)
        if rng.random() < 0.3
    ]
    if extra:
        parts = [f for f in (pert, pd.DataFrame(extra)) if len(f)]
        pert = pd.concat(parts).drop_duplicates(["symbol", "day"])
    other = compute_membership(pert, spec, syms, "2025-01-01", _end(n_days))
    upto = base.times <= (DAY0 + cut) * D
    np.testing.assert_array_equal(base.member[upto], other.member[upto])
    pd.testing.assert_frame_equal(
        base.table[base.table["ts"] <= (DAY0 + cut) * D].reset_index(drop=True),
        other.table[other.table["ts"] <= (DAY0 + cut) * D].reset_index(drop=True),
    )


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(cases())
def test_a_symbol_that_appears_later_changes_no_earlier_membership(case):
    frame, spec, syms, n_days, cut, seed = case
    base = compute_membership(frame, spec, syms, "2025-01-01", _end(n_days))
    huge = pd.DataFrame(
        [
            {"symbol": "ZNEW", "day": (DAY0 + d) * D, "rows": 99, "quote_volume": 1e12, "volume": 1.0}
            for d in range(cut, n_days)
        ]
    )
    both = pd.concat([f for f in (frame, huge) if len(f)])
    other = compute_membership(both, spec, [*syms, "ZNEW"], "2025-01-01", _end(n_days))
    upto = base.times <= (DAY0 + cut) * D
    np.testing.assert_array_equal(base.member[upto], other.member[upto][:, : len(syms)])
    assert not other.member[upto][:, -1].any()


def test_symbols_file(tmp_path):
    f = tmp_path / "top.txt"
    f.write_text("# majors\nBTCUSDT\nETHUSDT  # second\n\nSOLUSDT\n")
    assert expand_symbols([f"file:{f}", "XRPUSDT"]) == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    with pytest.raises(ValueError, match="listed twice"):
        expand_symbols([f"file:{f}", "ETHUSDT"])
    bad = tmp_path / "bad.txt"
    bad.write_text("BTCUSDT\nbtc-usdt\n")
    with pytest.raises(ValueError, match=r"bad.txt line 2: invalid symbol 'btc-usdt'"):
        expand_symbols([f"file:{bad}"])
    with pytest.raises(ValueError, match="not found"):
        expand_symbols([f"file:{tmp_path}/nope.txt"])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no symbols"):
        expand_symbols([f"file:{empty}"])


def test_resolve_symbols_in_a_composed_config(tmp_path):
    from btsys.config import compose

    f = tmp_path / "syms.txt"
    f.write_text("BNBUSDT\nADAUSDT\n")
    cfg = compose(["+experiment=demo", f"data.symbols=[file:{f}]"])
    resolve_symbols(cfg)
    assert list(cfg.data.symbols) == ["BNBUSDT", "ADAUSDT"]
    resolve_symbols(cfg)  # idempotent
    assert list(cfg.data.symbols) == ["BNBUSDT", "ADAUSDT"]
