"""Portfolios over a dynamic universe: members-only entries, leavers closed, delisted symbols closed
at their last price, and the all-member universe identical to none."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btsys.backtest.enums import OrderKind
from btsys.backtest.portfolio import simulate_cross_sectional, simulate_portfolio

H = 3_600_000_000


def frame(close, ts):
    close = np.asarray(close, float)
    return pd.DataFrame(
        {
            "ts_close": np.asarray(ts, np.int64),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": np.ones(len(close)),
        }
    )


def universe(rows):
    """``[(ts, {symbol: member})]`` -> the wide membership table."""
    return pd.DataFrame([{"ts": t, **m} for t, m in rows]).astype({"ts": np.int64})


def random_bars(rng, n, step, offset):
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    ts = offset + np.arange(n, dtype=np.int64) * step
    return pd.DataFrame(
        {
            "ts_close": ts,
            "open": o,
            "high": np.maximum(o, c) * 1.003,
            "low": np.minimum(o, c) * 0.997,
            "close": c,
            "volume": np.ones(n),
        }
    )


CFG = {
    "fees": {"taker": 0.001},
    "risk": {"stop_loss": 0.02, "take_profit": 0.04},
    "direction": "both",
    "leverage": 2.0,
}


def _random_case(seed):
    rng = np.random.default_rng(seed)
    bars = {
        "A": random_bars(rng, 300, H, 0),
        "B": random_bars(rng, 200, 2 * H, H // 2),
        "C": random_bars(rng, 250, H, 7),
    }
    ent = {s: rng.random(len(b)) < 0.05 for s, b in bars.items()}
    ex = {s: rng.random(len(b)) < 0.05 for s, b in bars.items()}
    return rng, bars, ent, ex


def assert_same(a, b):
    np.testing.assert_array_equal(a.equity, b.equity)
    np.testing.assert_array_equal(a.cash, b.cash)
    np.testing.assert_array_equal(a.order_records, b.order_records)
    np.testing.assert_array_equal(a.trade_records, b.trade_records)


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_all_member_universe_equals_no_universe(fill):
    _, bars, ent, ex = _random_case(1)
    everyone = universe([(0, {"A": True, "B": True, "C": True})])
    a = simulate_portfolio(bars, ent, ex, {**CFG, "fill": fill})
    b = simulate_portfolio(bars, ent, ex, {**CFG, "fill": fill}, universe=everyone)
    assert_same(a, b)
    assert len(a.order_records) > 20


def test_leaver_closed_on_first_bar_after_leaving_and_no_entries_while_out():
    a = frame([100] * 8, np.arange(8) * H)
    b = frame([50, 50, 52, 54, 56, 58, 60, 62], np.arange(8) * H + H // 2)
    ent = {"A": np.zeros(8, bool), "B": np.array([1, 0, 0, 0, 0, 1, 1, 0], bool)}
    ex = {"A": np.zeros(8, bool), "B": np.zeros(8, bool)}
    # B leaves at 3h (its bar closing at 3.5h is the first after leaving) and never comes back
    u = universe([(0, {"A": True, "B": True}), (3 * H, {"A": True, "B": False})])
    free = {"fees": {"taker": 0}, "slippage": {"bps": 0}}  # a cost-free run: fills at the open itself
    r = simulate_portfolio({"A": a, "B": b}, ent, ex, {"fill": "next_open", **free}, universe=u)
    o = r.order_records
    assert list(o["col"]) == [1, 1]
    assert list(o["kind"]) == [OrderKind.ENTRY, OrderKind.UNIVERSE_EXIT]
    # entry decided at B's 0.5h close fills at its 1.5h open; the exit is decided at the close of
    # 3.5h (the first bar after 3h) and fills at the next open (4.5h bar: 56)
    assert list(o["ts"]) == [H + H // 2, 4 * H + H // 2]
    assert o["price"][1] == 56.0
    tr = r.trade_records
    assert list(tr["exit_kind"]) == [OrderKind.UNIVERSE_EXIT] and not tr["is_open"].any()
    # fill at the close: the exit fills at the 3.5h close itself
    rc = simulate_portfolio({"A": a, "B": b}, ent, ex, {"fill": "close"}, universe=u)
    assert list(rc.order_records["kind"]) == [OrderKind.ENTRY, OrderKind.UNIVERSE_EXIT]
    assert rc.order_records["ts"][1] == 3 * H + H // 2


def test_pending_entry_of_a_leaver_is_dropped():
    a = frame([100] * 6, np.arange(6) * H)
    b = frame([50] * 6, np.arange(6) * H + H // 2)
    ent = {"A": np.zeros(6, bool), "B": np.array([0, 1, 0, 0, 0, 0], bool)}
    ex = {"A": np.zeros(6, bool), "B": np.zeros(6, bool)}
    # decided at the 1.5h close (member), the fill bar closes at 2.5h, after B left at 2h
    u = universe([(0, {"A": True, "B": True}), (2 * H, {"A": True, "B": False})])
    r = simulate_portfolio({"A": a, "B": b}, ent, ex, {}, universe=u)
    assert len(r.order_records) == 0


def test_delisted_symbol_closed_at_its_last_price_when_it_leaves():
    a = frame([100] * 8, np.arange(8) * H)
    b = frame([50, 50, 40], np.arange(3) * H + H // 2)  # data ends at 2.5h (last close 40)
    ent = {"A": np.zeros(8, bool), "B": np.array([1, 0, 0], bool)}
    ex = {"A": np.zeros(8, bool), "B": np.zeros(3, bool)}
    u = universe([(0, {"A": True, "B": True}), (5 * H, {"A": True, "B": False})])
    r = simulate_portfolio({"A": a, "B": b}, ent, ex, {"fees": {"taker": 0.001}}, universe=u)
    o = r.order_records
    assert list(o["kind"]) == [OrderKind.ENTRY, OrderKind.DELISTED]
    assert o["ts"][1] == 5 * H and o["price"][1] == 40.0  # the last close, no slippage
    assert o["fees"][1] == pytest.approx(o["size"][1] * 40.0 * 0.001)
    t5 = int(np.searchsorted(r.ts, 5 * H))
    assert r.position[t5 - 1, 1] > 0 and r.position[t5, 1] == 0
    # until it leaves it is held (marked at its last close); the cash comes back when it leaves
    assert r.cash[t5] == pytest.approx(r.cash[t5 - 1] + o["size"][1] * 40.0 - o["fees"][1])
    assert r.trade_records["exit_kind"].tolist() == [OrderKind.DELISTED]


def test_size_all_splits_cash_over_flat_members_only():
    bars = {s: frame([10.0] * 4, np.arange(4) * H) for s in "ABC"}
    ent = {"A": np.array([1, 0, 0, 0], bool), "B": np.zeros(4, bool), "C": np.zeros(4, bool)}
    ex = {s: np.zeros(4, bool) for s in "ABC"}
    u = universe([(0, {"A": True, "B": True, "C": False})])
    r = simulate_portfolio(
        bars, ent, ex, {"fill": "close", "slippage": {"bps": 0}, "fees": {"taker": 0}}, universe=u
    )
    assert r.order_records["size"][0] == pytest.approx(10_000 / 2 / 10)  # 2 flat members, not 3 symbols
    r3 = simulate_portfolio(bars, ent, ex, {"fill": "close", "slippage": {"bps": 0}, "fees": {"taker": 0}})
    assert r3.order_records["size"][0] == pytest.approx(10_000 / 3 / 10)


def test_membership_changes_after_t_leave_everything_before_t_unchanged():
    """No look-ahead: a membership change at instant tau changes no order, cash or equity before it."""
    for seed in range(4):
        rng, bars, ent, ex = _random_case(seed)
        tau = int(rng.integers(50, 250)) * H
        base = universe([(0, {"A": True, "B": True, "C": True})])
        changed = universe(
            [
                (0, {"A": True, "B": True, "C": True}),
                (tau, {"A": bool(rng.random() < 0.5), "B": False, "C": True}),
            ]
        )
        for fill in ("next_open", "close"):
            a = simulate_portfolio(bars, ent, ex, {**CFG, "fill": fill}, universe=base)
            b = simulate_portfolio(bars, ent, ex, {**CFG, "fill": fill}, universe=changed)
            before = a.ts < tau
            np.testing.assert_array_equal(a.equity[before], b.equity[before])
            np.testing.assert_array_equal(
                a.order_records[a.order_records["ts"] < tau], b.order_records[b.order_records["ts"] < tau]
            )
            out = b.order_records[(b.order_records["ts"] >= tau) & (b.order_records["col"] == 1)]
            assert len(out) <= 1 and (out["kind"] != OrderKind.ENTRY).all()  # B left: one exit at most


def test_bad_universe_tables_are_refused():
    bars = {"A": frame([1.0, 1.0], [0, H])}
    e = {"A": np.zeros(2, bool)}
    with pytest.raises(KeyError, match="no column for symbols"):
        simulate_portfolio(bars, e, e, {}, universe=universe([(0, {"B": True})]))
    with pytest.raises(ValueError, match="must increase; row 1"):
        simulate_portfolio(bars, e, e, {}, universe=universe([(H, {"A": True}), (0, {"A": True})]))
    with pytest.raises(ValueError, match=r"columns \['A'\] must be boolean"):
        simulate_portfolio(bars, e, e, {}, universe=pd.DataFrame({"ts": [0], "A": [np.nan]}))
    with pytest.raises(ValueError, match="`ts` column"):
        simulate_portfolio(bars, e, e, {}, universe=pd.DataFrame({"A": [True]}))


def test_cross_sectional_ranks_members_only_and_closes_leavers():
    n = 40
    ts = np.arange(n) * H
    bars = {s: frame(np.full(n, 10.0), ts) for s in "ABC"}
    # A always scores best, but is a member only from 20h on; C leaves at 30h
    scores = {"A": np.full(n, 3.0), "B": np.full(n, 1.0), "C": np.full(n, 2.0)}
    u = universe(
        [
            (0, {"A": False, "B": True, "C": True}),
            (20 * H, {"A": True, "B": True, "C": True}),
            (30 * H, {"A": True, "B": True, "C": False}),
        ]
    )
    r = simulate_cross_sectional(bars, scores, top_n=1, bottom_n=0, rebalance_every=10, bt_cfg={}, universe=u)
    o = pd.DataFrame(r.order_records)
    held = {int(c): o[o["col"] == c] for c in o["col"].unique()}
    # C is the best member until A joins; A is never held before 20h
    assert held[0]["ts"].min() >= 20 * H
    assert held[2]["ts"].min() < 20 * H
    no_univ = simulate_cross_sectional(bars, scores, top_n=1, bottom_n=0, rebalance_every=10, bt_cfg={})
    assert set(pd.DataFrame(no_univ.order_records)["col"]) == {0}  # without a universe only A is ever held


def test_pnl_by_symbol_adds_up_to_the_total_return_open_positions_included():
    from btsys.report.universe import contribution_table

    _, bars, ent, ex = _random_case(7)
    ent["C"][-5] = True  # leaves C open at the end (marked at its last close)
    r = simulate_portfolio(bars, ent, ex, {**CFG, "funding": False})
    c = contribution_table(r)
    assert c["symbol"].tolist() == sorted(c["symbol"], key=lambda s: -c.set_index("symbol").loc[s, "pnl"])
    assert set(c["symbol"]) == {"A", "B", "C"}
    assert c["pnl"].sum() == pytest.approx(r.final_value - r.init_cash, abs=1e-8)
    assert c["return_contribution"].sum() == pytest.approx(r.metrics["total_return"], abs=1e-12)
    by = c.set_index("symbol")
    for s in "ABC":
        t = r.trades[r.trades["symbol"] == s]
        assert by.loc[s, "pnl"] == pytest.approx(t["pnl"].sum()) and by.loc[s, "n_trades"] == len(t)
        assert by.loc[s, "open_pnl"] == pytest.approx(t.loc[t["is_open"], "pnl"].sum())
