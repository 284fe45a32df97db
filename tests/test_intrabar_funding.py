"""Funding in a bar that also exits the position, by the bar rules (``intrabar="ohlc"``): the
order of the funding instant and the exit inside the bar is unknown, so the costlier one is
assumed (README, "Intrabar fills"): a cost is charged on the position held at the bar's open, a
credit is not. Cases worked by hand, long and short, cost and credit."""

from __future__ import annotations

import numpy as np
import pytest

from btsys.backtest import simulate

H = 3_600_000_000
T0 = 1_735_689_600_000_000
TS = T0 + np.arange(4) * H
#: one instant inside bar 2 (after bar 1's close, before bar 2's)
F_TS = np.array([T0 + 2 * H - H // 2])
NO_COSTS = dict(fees=0.0, maker_fee=0.0, slippage=0.0)


def run(rows, direction, rate, **kw):
    o, h, lo, c = (np.array(x, dtype=float) for x in zip(*rows, strict=True))
    entries = np.array([True, False, False, False])
    return simulate(
        c, entries, None, open=o, high=h, low=lo, ts=TS, direction=direction,
        funding_ts=F_TS, funding_rate=np.array([rate]), **NO_COSTS, **kw,
    )  # fmt: skip


LONG_STOPPED = [(100, 100, 100, 100), (100, 100.5, 99.5, 100), (100, 100.5, 97, 98), (98, 98, 98, 98)]
SHORT_STOPPED = [(100, 100, 100, 100), (100, 100.5, 99.5, 100), (100, 103, 99.5, 101), (101, 101, 101, 101)]


@pytest.mark.parametrize(
    "rows, direction, rate, pays",
    [
        (LONG_STOPPED, "long", 0.001, True),  # a long pays a positive rate: a cost
        (LONG_STOPPED, "long", -0.001, False),  # ... and receives a negative one: not credited
        (SHORT_STOPPED, "short", -0.001, True),
        (SHORT_STOPPED, "short", 0.001, False),
    ],
)
def test_a_stopped_position_pays_the_bars_funding_only_when_it_is_a_cost(rows, direction, rate, pays):
    """Entered at bar 1's open (100), stopped at 98 (long) / 102 (short) inside bar 2."""
    r = run(rows, direction, rate, stop_loss=0.02)
    (tr,) = r.trade_records
    assert tr["exit_idx"] == 2 and tr["exit_price"] == (98.0 if direction == "long" else 102.0)
    q = tr["size"] if direction == "long" else -tr["size"]
    want = q * rows[2][3] * rate if pays else 0.0  # on the position at the bar's close price
    assert want >= 0.0
    assert r.metrics["funding_paid"] == pytest.approx(want, rel=1e-12, abs=0.0)
    assert tr["funding"] == pytest.approx(want, rel=1e-12, abs=0.0)
    gross = q * (tr["exit_price"] - tr["entry_price"])
    assert tr["pnl"] == pytest.approx(gross - want, rel=1e-12)
    assert r.final_value == pytest.approx(10_000 + gross - want, rel=1e-12)


@pytest.mark.parametrize("rate", [0.001, -0.001])
def test_a_position_held_through_the_bar_pays_or_receives_its_funding(rate):
    rows = [(100, 100, 100, 100), (100, 100.5, 99.5, 100), (100, 100.5, 99, 99.5), (99.5,) * 4]
    r = run(rows, "long", rate, stop_loss=0.02)
    q = r.position[2]
    assert r.metrics["funding_paid"] == pytest.approx(q * 99.5 * rate, rel=1e-12)


@pytest.mark.parametrize("rate, pays", [(0.001, True), (-0.001, False)])
def test_a_limit_entry_filled_inside_the_bar_pays_its_funding_only_when_it_is_a_cost(rate, pays):
    """A buy limit at 99 (1 % under bar 0's close) filled inside bar 2 (after the instant or not:
    unknown), held to the end (a credit is not counted) or stopped in the same bar."""
    rows = [(100, 100, 100, 100), (100, 100.5, 99.5, 100), (99.5, 100, 98.5, 99.8), (99.8,) * 4]
    kw = dict(order_type="limit", limit_offset=0.01, time_in_force=3)
    held = run(rows, "long", rate, **kw)
    (o,) = held.order_records
    assert (o["idx"], o["price"]) == (2, 99.0)
    want = o["size"] * 99.8 * rate if pays else 0.0
    assert held.metrics["funding_paid"] == pytest.approx(want, rel=1e-12, abs=0.0)
    stopped = run(rows, "long", rate, stop_loss=0.003, **kw)  # 98.703: the low 98.5 reaches it
    (tr,) = stopped.trade_records
    assert tr["exit_idx"] == 2 and tr["funding"] == pytest.approx(want, rel=1e-12, abs=0.0)
