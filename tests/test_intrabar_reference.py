"""The tick-by-tick reference of the README's intrabar rules, on hand-made trade sequences whose
outcome follows from the rules by hand (the property tests then hold the engine to it)."""

from __future__ import annotations

import numpy as np
import pytest
from intrabar_reference import (
    ENTRY,
    EXIT,
    LIQUIDATION,
    STOP_LOSS,
    TAKE_PROFIT,
    TRAILING_STOP,
    Rules,
    simulate_ticks,
)

FREE = dict(taker=0.0, maker=0.0, slippage=0.0)


def run(bars, rules, le=None, se=None, lx=None, funding=None):
    """``bars``: lists of trade prices; trade j is stamped j seconds (in µs)."""
    price = np.array([p for b in bars for p in b], dtype=float)
    ts = np.arange(price.size, dtype=np.int64) * 1_000_000
    starts = np.cumsum([0] + [len(b) for b in bars[:-1]])
    n = len(bars)
    flag = lambda ks: None if ks is None else np.isin(np.arange(n), ks)  # noqa: E731
    f_ts, f_rate = (None, None) if funding is None else (np.array(funding[0]) * 1_000_000, funding[1])
    return simulate_ticks(price, ts, starts, flag(le), flag(lx), flag(se), None, f_ts, f_rate, rules)


def kinds(out):
    return [(o[0], o[2]) for o in out.orders]


def test_the_trade_order_decides_between_target_and_stop():
    out = run(
        [[100.0], [100.0, 101.5, 97.0], [97.0]], Rules(**FREE, stop_loss=0.02, take_profit=0.01), le=[0]
    )
    assert kinds(out) == [(1, ENTRY), (1, TAKE_PROFIT)]
    assert out.orders[1][4] == pytest.approx(101.0)  # at the target, not at the trade
    out = run(
        [[100.0], [100.0, 97.0, 101.5], [97.0]], Rules(**FREE, stop_loss=0.02, take_profit=0.01), le=[0]
    )
    assert kinds(out) == [(1, ENTRY), (1, STOP_LOSS)]
    assert out.orders[1][4] == 97.0  # the stop fills at the trade that went through it


def test_target_through_or_touch_and_maker_fee():
    bars = [[100.0], [100.0, 101.0, 100.5], [100.0]]
    out = run(bars, Rules(**FREE, take_profit=0.01), le=[0])
    assert kinds(out) == [(1, ENTRY)]  # 101 only touches the target: no fill
    out = run(
        bars, Rules(taker=0.001, maker=0.0002, slippage=0.0, take_profit=0.01, fill_rule="touch"), le=[0]
    )
    assert kinds(out) == [(1, ENTRY), (1, TAKE_PROFIT)]
    qty = out.orders[1][3]
    assert out.orders[1][5] == pytest.approx(qty * 101.0 * 0.0002)


def test_trailing_stop_checks_before_it_moves():
    out = run([[100.0], [100.0, 110.0, 104.6, 104.5, 90.0]], Rules(**FREE, trailing_stop=0.05), le=[0])
    assert kinds(out) == [(1, ENTRY), (1, TRAILING_STOP)]
    assert out.orders[1][4] == 104.5
    # a new best price is never a trigger, and the entry trade itself arms the levels only
    out = run([[100.0], [100.0, 94.0]], Rules(**FREE, trailing_stop=0.05), le=[0])
    assert kinds(out) == [(1, ENTRY), (1, TRAILING_STOP)]


def test_liquidation_loses_the_margin_before_the_own_stop():
    r = Rules(**FREE, leverage=10.0, mmr=0.005, stop_loss=0.05)
    out = run([[100.0], [100.0, 99.0, 90.0, 89.0], [89.0]], r, le=[0])
    assert kinds(out) == [(1, ENTRY), (1, LIQUIDATION)]
    margin = out.orders[0][3] * 100.0 / 10
    np.testing.assert_allclose(out.equity, [10_000.0, 10_000.0 - margin, 10_000.0 - margin])
    assert out.orders[1][4] == pytest.approx(100 * 0.9 / 0.995)


def test_short_mirrors():
    r = Rules(**FREE, stop_loss=0.02, take_profit=0.01)
    out = run([[100.0], [100.0, 98.5, 103.0]], r, se=[0])
    assert kinds(out) == [(1, ENTRY), (1, TAKE_PROFIT)] and out.orders[1][4] == pytest.approx(99.0)
    assert out.orders[0][1] == -1 and out.position[-1] == 0.0


def test_funding_at_instants():
    """Funding at the stamp of trade 3 (second 3) is charged before it at trade 2's price; a
    position stopped before the instant pays nothing."""
    r = Rules(**FREE)
    out = run([[100.0], [100.0, 102.0, 104.0, 90.0]], r, le=[0], funding=([3], [0.001]))
    qty = out.orders[0][3]
    assert out.funding_paid == pytest.approx(qty * 102.0 * 0.001)
    out = run(
        [[100.0], [100.0, 97.0, 104.0, 90.0]], Rules(**FREE, stop_loss=0.02), le=[0], funding=([3], [0.001])
    )
    assert out.funding_paid == 0.0 and kinds(out)[-1] == (1, STOP_LOSS)


def test_exit_signal_fills_at_the_next_first_trade():
    out = run([[100.0], [100.0, 101.0], [103.0, 99.0]], Rules(**FREE), le=[0], lx=[1])
    assert kinds(out) == [(1, ENTRY), (2, EXIT)] and out.orders[1][4] == 103.0


@pytest.mark.parametrize(
    "rule, bars, want",
    [
        ("through", [[100.0], [99.5, 99.0, 98.9]], [(1, ENTRY, 99.0, 0.0002)]),
        ("touch", [[100.0], [99.5, 99.0, 98.9]], [(1, ENTRY, 99.0, 0.0002)]),
        ("through", [[100.0], [99.5, 99.0], [99.2]], []),  # touched only, then expired
        ("through", [[100.0], [98.5, 98.0]], [(1, ENTRY, 98.5, 0.001)]),  # marketable: taker at the trade
    ],
)
def test_limit_entries(rule, bars, want):
    r = Rules(taker=0.001, maker=0.0002, slippage=0.0, order_type="limit", offset_bps=100.0, fill_rule=rule)
    out = run(bars, r, le=[0])
    got = [(o[0], o[2], o[4], o[5] / (o[3] * o[4])) for o in out.orders]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:2] == w[:2] and g[2] == pytest.approx(w[2]) and g[3] == pytest.approx(w[3])
    assert out.expired == (0 if want else 1)
    if want and want[0][1] == ENTRY and bars[1][0] != want[0][2]:
        # filled mid-bar: the levels arm from the next trade, sizing uses the cash at the fill
        assert out.orders[0][3] == pytest.approx(10_000.0 / (1 + 0.0002) / 99.0)
