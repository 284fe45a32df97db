"""``intrabar="ticks"`` equals the plain tick-by-tick reference (tests/intrabar_reference.py) on
random trade streams cut into random bar kinds, for each rule, long and short; and what a ticks
run reports (disagreements, PnL difference, misses) is what its trades say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from intrabar_reference import Rules, simulate_ticks

from btsys.backtest import simulate
from btsys.backtest.options import OptionError
from btsys.backtest.ticks import FrameTrades
from btsys.bars import build_bars
from btsys.errors import TradesMissing

T0 = 1_735_689_600_000_000
KINDS = [
    dict(kind="tick", threshold=23),
    dict(kind="volume", threshold=15.0),
    dict(kind="dollar", threshold=1800.0),
    dict(kind="time", interval="1min"),
    dict(kind="tick_imbalance"),
]


def stream(rng, n):
    """Trades with ms stamps (ties), fat-tailed moves and a few jumps (liquidations, gaps)."""
    ts = T0 + np.sort(rng.integers(0, 3_600_000, n)) * 1000
    r = rng.standard_t(3, n) * 4e-4
    r[rng.random(n) < 0.004] *= 40
    price = np.round(100 * np.exp(np.cumsum(r)), 4)
    qty = rng.exponential(1.0, n) + 1e-3
    return pd.DataFrame(
        dict(
            ts=ts,
            trade_id=np.arange(n) + 1,
            price=price,
            qty=qty,
            quote_qty=qty * price,
            is_buyer_maker=rng.random(n) < 0.5,
        )
    )


RULES = {
    "stops": dict(stop_loss=0.004, take_profit=0.006),
    "trailing": dict(trailing_stop=0.005),
    "all": dict(stop_loss=0.008, take_profit=0.005, trailing_stop=0.006),
    "liquidation": dict(leverage=60.0, mmr=0.005, stop_loss=0.0115),
    "touch": dict(take_profit=0.003, fill_rule="touch", stop_loss=0.01),
    "funding": dict(),
    "limit": dict(
        order_type="limit", offset_bps=15.0, time_in_force_bars=3, stop_loss=0.004, take_profit=0.005
    ),
    "limit_touch": dict(
        order_type="limit", offset_bps=5.0, time_in_force_bars=2, fill_rule="touch", trailing_stop=0.004
    ),
}


def case(seed: int, rule: str, direction: str):
    rng = np.random.default_rng(seed)
    ticks = stream(rng, int(rng.integers(800, 2500)))
    bars = build_bars(ticks, **KINDS[seed % len(KINDS)])
    n = len(bars)
    le, lx = rng.random(n) < 0.15, rng.random(n) < 0.1
    se, sx = (rng.random(n) < 0.15, rng.random(n) < 0.1) if direction == "both" else (None, None)
    # funding instants: some exactly at trade stamps, some between
    f_ts = np.concatenate([rng.choice(ticks.ts.to_numpy(), 6), T0 + rng.integers(0, 3_600_000_000, 6)])
    f_rate = rng.normal(0, 2e-3, f_ts.size)
    r = Rules(taker=0.0006, maker=0.0002, slippage=0.0002, **{k: v for k, v in RULES[rule].items()})
    return ticks, bars, (le, lx, se, sx), (f_ts, f_rate), r


def engine(ticks, bars, sig, funding, r: Rules, direction: str):
    le, lx, se, sx = sig
    return simulate(
        bars, le, lx, short_entries=se, short_exits=sx, direction=direction, intrabar="ticks", ticks=ticks,
        funding_ts=funding[0], funding_rate=funding[1], fees=r.taker, maker_fee=r.maker, slippage=r.slippage,
        leverage=r.leverage, maintenance_margin=r.mmr, stop_loss=r.stop_loss, take_profit=r.take_profit,
        trailing_stop=r.trailing_stop, fill_rule=r.fill_rule, order_type=r.order_type,
        limit_offset=r.offset_bps / 1e4, time_in_force=r.time_in_force_bars,
    )  # fmt: skip


def reference(ticks, bars, sig, funding, r: Rules, direction: str):
    le, lx, se, sx = sig
    if direction == "short":
        le, lx, se, sx = None, None, le, lx
    ids = ticks.trade_id.to_numpy()
    starts = np.searchsorted(ids, bars.first_trade_id.to_numpy())
    end = np.searchsorted(ids, bars.last_trade_id.iloc[-1]) + 1  # the trailing partial bar is not traded
    price, ts = ticks.price.to_numpy()[:end], ticks.ts.to_numpy()[:end]
    return simulate_ticks(price, ts, starts, le, lx, se, sx, *funding, rules=r)


@pytest.mark.parametrize("direction", ["long", "short", "both"])
@pytest.mark.parametrize("rule", list(RULES))
def test_ticks_equal_the_reference(rule, direction):
    n_orders = 0
    for seed in range(6):
        ticks, bars, sig, funding, r = case(seed * 7 + len(rule), rule, direction)
        res = engine(ticks, bars, sig, funding, r, direction)
        ref = reference(ticks, bars, sig, funding, r, direction)
        o = res.order_records
        want = np.array(ref.orders, dtype=float).reshape(-1, 6)
        got = np.column_stack([o["idx"], o["side"], o["kind"], o["size"], o["price"], o["fees"]])
        assert got.shape == want.shape, (seed, got[:, :3].tolist(), want[:, :3].tolist())
        np.testing.assert_array_equal(got[:, :3], want[:, :3])
        np.testing.assert_allclose(got[:, 3:], want[:, 3:], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(res.equity, ref.equity, rtol=1e-9)
        np.testing.assert_allclose(res.position, ref.position, rtol=1e-9, atol=1e-12)
        assert res.metrics["funding_paid"] == pytest.approx(ref.funding_paid, rel=1e-9, abs=1e-12)
        assert res.metrics.get("orders_expired", 0) == ref.expired
        n_orders += len(o)
    assert n_orders > 10  # the cases trade


def test_what_a_ticks_run_reports():
    ticks, bars, sig, funding, r = case(3, "all", "both")
    res = engine(ticks, bars, sig, funding, r, "both")
    le, lx, se, sx = sig
    ohlc = simulate(
        bars, le, lx, short_entries=se, short_exits=sx, direction="both", funding_ts=funding[0],
        funding_rate=funding[1], fees=r.taker, maker_fee=r.maker, slippage=r.slippage, stop_loss=r.stop_loss,
        take_profit=r.take_profit, trailing_stop=r.trailing_stop,
    )  # fmt: skip
    ib = res.intrabar
    assert ib["ohlc_final_value"] == ohlc.final_value
    assert res.metrics["intrabar_pnl_diff"] == res.final_value - ohlc.final_value
    assert 0 < ib["intrabar_bars"] < len(bars) and ib["intrabar_share"] == ib["intrabar_bars"] / len(bars)
    assert 0 < ib["intrabar_disagreements"] <= ib["intrabar_bars"] and ib["passes"] >= 2
    assert "intrabar_disagreements" not in ohlc.metrics


def test_bars_out_of_reach_never_read_trades():
    """A source that records what it is asked: only bars during which a position was held (in the
    bar-rule pass or the final path) are read, each once, and every bar the final path resolved
    from trades was read."""
    ticks, bars, sig, _, r = case(5, "stops", "long")
    mem = FrameTrades(ticks, bars)
    asked = []

    def src(idx):
        asked.extend(idx.tolist())
        return mem(idx)

    kw = dict(stop_loss=r.stop_loss, take_profit=r.take_profit)
    res = simulate(bars, sig[0], sig[1], intrabar="ticks", ticks=src, **kw)
    ohlc = simulate(bars, sig[0], sig[1], **kw)

    def held(x):
        pos = x.position != 0
        h = pos | np.concatenate([[False], pos[:-1]])
        h[x.order_records["idx"]] = True
        return set(np.flatnonzero(h).tolist())

    assert len(asked) == len(set(asked)) >= res.intrabar["intrabar_bars"] > 0
    assert set(asked) <= held(res) | held(ohlc)
    assert len(asked) < len(bars) / 3


def test_missing_trades_stop_the_run():
    ticks, bars, sig, funding, r = case(1, "stops", "long")
    with pytest.raises(TradesMissing, match=r"bar \d+ \(closed 2025-01-01 .* UTC\): the ticks hold 0 of its"):
        simulate(
            bars, sig[0], sig[1], stop_loss=0.004, take_profit=0.006, intrabar="ticks", ticks=ticks.iloc[:5]
        )


def test_bad_calls():
    ticks, bars, sig, _, _ = case(2, "stops", "long")
    with pytest.raises(ValueError, match="needs `ticks`"):
        simulate(bars, sig[0], sig[1], intrabar="ticks")
    with pytest.raises(ValueError, match="only read with intrabar='ticks'"):
        simulate(bars, sig[0], sig[1], ticks=ticks)
    with pytest.raises(ValueError, match="needs `close` to be the bar table"):
        simulate(bars.close.to_numpy(), sig[0], sig[1], intrabar="ticks", ticks=ticks)
    with pytest.raises(OptionError, match="intrabar"):
        simulate(bars, sig[0], sig[1], intrabar="tick")
    with pytest.raises(ValueError, match="missing \\['first_trade_id'"):
        simulate(bars.drop(columns=["first_trade_id"]), sig[0], sig[1], intrabar="ticks", ticks=ticks)


# --------------------------------------------------------------------------- limit entries by bar rules
def _bars(rows):
    o, h, lo, c = (np.array(x, dtype=float) for x in zip(*rows, strict=True))
    return dict(open=o, high=h, low=lo), c


LIMIT = dict(fees=0.001, maker_fee=0.0002, slippage=0.0005, order_type="limit", limit_offset=0.01)


def test_limit_entry_by_the_bar_range():
    """Signal at bar 0 (close 100) -> a buy limit at 99 from bar 1: marketable at a gapped open
    (taker at the open, no slippage), else filled at 99 (maker) when the low goes through it."""
    ohl, c = _bars([(100, 100, 100, 100), (98, 99, 97, 98.5), (98.5, 99, 98, 99)])
    r = simulate(c, [True, False, False], None, **ohl, **LIMIT)
    (o,) = r.order_records
    assert (o["idx"], o["price"]) == (1, 98.0) and o["fees"] == pytest.approx(o["size"] * 98.0 * 0.001)
    ohl, c = _bars([(100, 100, 100, 100), (99.5, 100, 98.9, 99.5), (99.5, 100, 99, 99.5)])
    r = simulate(c, [True, False, False], None, **ohl, **LIMIT)
    (o,) = r.order_records
    assert (o["idx"], o["price"]) == (1, 99.0) and o["fees"] == pytest.approx(o["size"] * 99.0 * 0.0002)
    assert o["size"] == pytest.approx(10_000 / (1 + 0.0002) / 99.0)
    assert r.metrics["orders_expired"] == 0


def test_limit_touch_expiry_and_the_stop_after_the_fill():
    ohl, c = _bars([(100, 100, 100, 100), (99.5, 100, 99.0, 99.5), (99.5, 100, 99.2, 99.5)])
    r = simulate(c, [True, False, False], None, **ohl, **LIMIT)
    assert len(r.order_records) == 0 and r.metrics["orders_expired"] == 1  # 99 only touched
    r = simulate(c, [True, False, False], None, **ohl, **LIMIT, fill_rule="touch")
    assert r.order_records["price"].tolist() == [99.0]
    r = simulate(c, [True, False, False], None, **ohl, **{**LIMIT, "time_in_force": 2}, fill_rule="touch")
    assert r.metrics["orders_expired"] == 0
    # filled at 99 inside bar 1 whose low is 98: a 0.5 % stop (98.505) is assumed hit after the fill
    ohl, c = _bars([(100, 100, 100, 100), (99.5, 100, 98.0, 99.5), (99.5, 100, 99.2, 99.5)])
    r = simulate(c, [True, False, False], None, **ohl, **LIMIT, stop_loss=0.005, take_profit=0.001)
    assert r.order_records["kind"].tolist() == [0, 2] and r.order_records["idx"].tolist() == [1, 1]


def test_limit_entries_and_ticks_are_refused_by_portfolios():
    from btsys.backtest.portfolio import simulate_portfolio

    c = pd.Series(np.linspace(100, 110, 50), index=pd.date_range("2025-01-01", periods=50, freq="h"))
    e = pd.Series(np.arange(50) % 7 == 0, index=c.index)
    with pytest.raises(OptionError, match="backtest.orders.type=limit: .*a portfolio takes market orders"):
        simulate_portfolio({"A": c, "B": c}, {"A": e, "B": e}, {"A": ~e, "B": ~e}, order_type="limit")
    with pytest.raises(OptionError, match="intrabar=ticks .* a portfolio uses the bar rules"):
        simulate_portfolio({"A": c, "B": c}, {"A": e, "B": e}, {"A": ~e, "B": ~e}, intrabar="ticks")


@pytest.mark.parametrize("rule", ["all", "limit", "touch"])
def test_future_trades_do_not_change_the_past(rule):
    """Trades after a cut perturbed (prices, signals and funding after it): every order and the
    equity before the bar holding the cut are unchanged, in ticks mode."""
    ticks, bars, sig, funding, r = case(11, rule, "both")
    cut = len(ticks) * 2 // 3
    rng = np.random.default_rng(1)
    later = ticks.copy()
    later.loc[cut:, "price"] *= np.exp(np.cumsum(rng.normal(0, 2e-3, len(ticks) - cut)))
    later["quote_qty"] = later.qty * later.price
    bars2 = build_bars(later, **KINDS[11 % len(KINDS)])
    k = int(
        np.searchsorted(bars.last_trade_id.to_numpy(), ticks.trade_id.iloc[cut])
    )  # the bar holding the cut
    pd.testing.assert_frame_equal(bars.iloc[:k], bars2.iloc[:k])
    f2 = (funding[0], np.where(funding[0] > ticks.ts.iloc[cut], -funding[1], funding[1]))
    n2 = len(bars2)
    sig2 = tuple(np.r_[a[:k], rng.random(n2 - k) < 0.2] for a in sig)
    a = engine(ticks, bars, sig, funding, r, "both")
    b = engine(later, bars2, sig2, f2, r, "both")
    oa, ob = a.order_records, b.order_records
    assert (oa["idx"] < k).sum() >= 4
    np.testing.assert_array_equal(oa[oa["idx"] < k], ob[ob["idx"] < k])
    np.testing.assert_array_equal(a.equity[:k], b.equity[:k])
    assert not np.array_equal(a.equity, b.equity[: len(a.equity)])


def test_a_window_reads_the_trades_of_its_own_bars():
    """``window=(a, b)`` asks the source for bar indices of the whole table: the run equals the
    same run over the bars a..b alone."""
    ticks, bars, sig, funding, r = case(5, "all", "both")  # tick bars
    a, b = len(bars) // 4, len(bars) * 3 // 4
    le, lx, se, sx = sig
    kw = dict(
        stop_loss=r.stop_loss, take_profit=r.take_profit, trailing_stop=r.trailing_stop, direction="both"
    )
    win = simulate(
        bars, le, lx, short_entries=se, short_exits=sx, window=(a, b), intrabar="ticks", ticks=ticks, **kw
    )
    part = bars.iloc[a:b].reset_index(drop=True)
    w = slice(a, b)
    alone = simulate(
        part, le[w], lx[w], short_entries=se[w], short_exits=sx[w], intrabar="ticks", ticks=ticks, **kw
    )
    np.testing.assert_array_equal(win.equity, alone.equity)
    np.testing.assert_array_equal(win.order_records["price"], alone.order_records["price"])
    assert win.intrabar["intrabar_bars"] == alone.intrabar["intrabar_bars"] > 0
