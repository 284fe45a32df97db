"""Backtest engine: hand-computed cases for fills, costs, sizing, risk rules; identities; metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from btsys.backtest import simulate as _simulate
from btsys.backtest import simulate_from_config
from btsys.backtest.engine import realised_vol
from btsys.backtest.enums import DAY_US, OrderKind
from btsys.backtest.inputs import NoCalendarWarning
from btsys.backtest.metrics import CALENDAR_METRICS

F = np.zeros(4, dtype=bool)  # no signal, 4 bars


def simulate(*args, **kw):
    """``simulate`` without costs unless a test sets them: the mechanics are checked by hand."""
    return _simulate(*args, **{"fees": 0.0, "slippage": 0.0, **kw})


def sig(n, *idx):
    a = np.zeros(n, dtype=bool)
    a[list(idx)] = True
    return a


# --------------------------------------------------------------------------- fills
def test_next_open_fill_uses_next_bars_open():
    close = np.array([10.0, 11.0, 12.0, 13.0])
    open_ = np.array([10.0, 10.5, 11.5, 12.5])
    r = simulate(close, sig(4, 0), sig(4, 2), open=open_)
    assert list(r.orders["idx"]) == [1, 3]
    assert list(r.orders["price"]) == [10.5, 12.5]
    q = 10_000 / 10.5
    assert r.orders["size"][0] == pytest.approx(q, rel=1e-12)
    assert r.final_value == pytest.approx(q * 12.5, rel=1e-12)
    # position value at the close of bar 1 and 2
    assert r.equity[1] == pytest.approx(q * 11.0, rel=1e-12)
    assert r.equity[0] == 10_000


def test_order_without_next_bar_is_not_filled():
    close = np.array([10.0, 11.0, 12.0])
    r = simulate(close, sig(3, 2), sig(3))
    assert len(r.orders) == 0 and r.final_value == 10_000
    r = simulate(close, sig(3, 0), sig(3, 2))  # exit on the last bar cannot fill
    assert len(r.orders) == 1 and r.metrics["open_position"] == 1.0
    assert bool(r.trades["is_open"].iloc[0])


def test_fill_close_and_same_bar_conflict_ignored():
    close = np.array([10.0, 11.0, 12.0, 13.0])
    r = simulate(close, sig(4, 1), sig(4, 3), fill="close")
    assert list(r.orders["idx"]) == [1, 3] and list(r.orders["price"]) == [11.0, 13.0]
    r = simulate(close, sig(4, 1), sig(4, 1), fill="close")
    assert len(r.orders) == 0


# --------------------------------------------------------------------------- costs
def test_fees_all_cash_fixed_and_minimum():
    close = np.array([100.0, 100.0, 110.0])
    r = simulate(close, sig(3, 0), sig(3, 2), fill="close", fees=0.001)
    q = 10_000 / (1.001 * 100)
    assert r.orders["size"][0] == pytest.approx(q, rel=1e-12)
    assert r.orders["fees"][0] == pytest.approx(q * 100 * 0.001, rel=1e-12)
    assert r.orders["fees"][1] == pytest.approx(q * 110 * 0.001, rel=1e-12)
    assert r.final_value == pytest.approx(q * 110 * 0.999, rel=1e-12)
    assert r.metrics["fees_paid"] == pytest.approx(r.orders["fees"].sum(), rel=1e-12)
    # fixed fee per order: all-cash size leaves room for it
    r = simulate(close, sig(3, 0), sig(3, 2), fill="close", fees=0.001, fee_fixed=5.0)
    q = (10_000 - 5) / (1.001 * 100)
    assert r.orders["size"][0] == pytest.approx(q, rel=1e-12)
    assert r.orders["fees"][0] == pytest.approx(q * 100 * 0.001 + 5, rel=1e-12)
    # minimum fee dominates a small order
    r = simulate(close, sig(3, 0), sig(3, 2), fill="close", fees=0.001, size=1.0, min_fee=2.0)
    assert list(r.orders["fees"]) == [2.0, 2.0]
    assert r.final_value == pytest.approx(10_000 + 10 - 4, rel=1e-12)


def test_fixed_slippage_moves_price_against_the_order():
    close = np.array([100.0, 100.0, 110.0])
    r = simulate(close, sig(3, 0), sig(3, 2), fill="close", slippage=0.01, size=2.0)
    assert list(r.orders["price"]) == pytest.approx([101.0, 108.9])
    assert r.final_value == pytest.approx(10_000 + 2 * (108.9 - 101.0))


def test_volume_participation_impact():
    close = np.array([100.0, 100.0, 100.0, 100.0])
    vol = np.array([50.0, 400.0, 10.0, 10.0])
    # next_open: participation against the last completed bar (the signal bar) volume
    r = simulate(
        close,
        sig(4, 1),
        sig(4, 2),
        size=4.0,
        slippage=0.001,
        slippage_impact=0.1,
        impact_exponent=0.5,
        volume=vol,
    )
    buy = 100 * (1 + 0.001 + 0.1 * math.sqrt(4 / 400))
    sell = 100 * (1 - 0.001 - 0.1 * math.sqrt(4 / 10))
    assert list(r.orders["price"]) == pytest.approx([buy, sell], rel=1e-12)
    # larger orders pay more
    r2 = simulate(close, sig(4, 1), sig(4, 2), size=40.0, slippage=0.001, slippage_impact=0.1, volume=vol)
    assert r2.orders["price"][0] > buy
    with pytest.raises(ValueError, match="volume"):
        simulate(close, sig(4, 1), sig(4, 2), slippage_impact=0.1)


def test_funding_sign_long_pays_short_receives():
    close = np.array([100.0, 100.0, 120.0, 120.0])
    ts = np.arange(4, dtype=np.int64) * 3_600_000_000
    # one event inside bar 2 (between the closes of bars 1 and 2) at +0.01
    fts, fr = np.array([ts[1] + 1]), np.array([0.01])
    r = simulate(close, sig(4, 0), sig(4, 3), fill="close", size=1.0, ts=ts, funding_ts=fts, funding_rate=fr)
    assert r.metrics["funding_paid"] == pytest.approx(1.2)  # 1 * 120 * 0.01
    assert r.final_value == pytest.approx(10_000 + 20 - 1.2)
    assert r.trades["funding"].iloc[0] == pytest.approx(1.2)
    assert r.cash[2] == pytest.approx(10_000 - 100 - 1.2)
    s = simulate(
        close,
        sig(4, 0),
        sig(4, 3),
        fill="close",
        size=1.0,
        ts=ts,
        funding_ts=fts,
        funding_rate=fr,
        direction="short",
    )
    assert s.metrics["funding_paid"] == pytest.approx(-1.2)
    assert s.final_value == pytest.approx(10_000 - 20 + 1.2)
    # negative rate: longs receive
    r = simulate(close, sig(4, 0), sig(4, 3), fill="close", size=1.0, ts=ts, funding_ts=fts, funding_rate=-fr)
    assert r.final_value == pytest.approx(10_000 + 20 + 1.2)


# --------------------------------------------------------------------------- sizing
def test_sizing_modes_min_qty_and_step():
    close = np.array([100.0, 100.0, 100.0])
    kw = dict(fill="close")
    assert simulate(close, sig(3, 0), sig(3), size=3.0, **kw).orders["size"][0] == 3.0
    assert simulate(close, sig(3, 0), sig(3), size=250.0, size_mode="notional", **kw).orders["size"][
        0
    ] == pytest.approx(2.5)
    assert simulate(close, sig(3, 0), sig(3), size=0.5, size_mode="percent", **kw).orders["size"][
        0
    ] == pytest.approx(50.0)
    # step rounds down, min_qty rejects
    r = simulate(close, sig(3, 0), sig(3), size=2.57, step=0.1, **kw)
    assert r.orders["size"][0] == pytest.approx(2.5)
    assert len(simulate(close, sig(3, 0), sig(3), size=0.5, min_qty=1.0, **kw).orders) == 0
    # an order larger than the cash is cut to what the cash allows
    r = simulate(close, sig(3, 0), sig(3), size=1_000.0, fees=0.001, **kw)
    assert r.orders["size"][0] == pytest.approx(10_000 / 100 / 1.001)


def test_vol_target_sizing_uses_trailing_volatility():
    rng = np.random.default_rng(3)
    n = 60
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    ts = np.arange(n, dtype=np.int64) * DAY_US
    r = simulate(
        close, sig(n, 30), sig(n), fill="close", size=0.2, size_mode="vol_target", vol_window=20, ts=ts
    )
    lr = np.diff(np.log(close))[30 - 20 : 30]  # the 20 returns up to bar 30
    vol = np.std(lr, ddof=1) * math.sqrt(365)
    assert realised_vol(close, ts, 20)[30] == pytest.approx(vol, rel=1e-9)
    assert r.orders["size"][0] * close[30] == pytest.approx(10_000 * 0.2 / vol, rel=1e-9)


def test_max_position_and_max_leverage_caps():
    close = np.array([100.0, 100.0, 100.0])
    r = simulate(close, sig(3, 0), sig(3), fill="close", max_position=1_000.0)
    assert r.orders["size"][0] == pytest.approx(10.0)
    r = simulate(close, sig(3, 0), sig(3), fill="close", leverage=5, max_leverage=2.0)
    assert r.orders["size"][0] == pytest.approx(200.0)
    r = simulate(close, sig(3, 0), sig(3), fill="close", leverage=5)
    assert r.orders["size"][0] == pytest.approx(500.0)


# --------------------------------------------------------------------------- leverage
def test_long_liquidation_at_liquidation_price():
    close = np.array([100.0, 100.0, 95.0, 80.0, 80.0])
    low = np.array([100.0, 100.0, 90.0, 80.0, 80.0])
    r = simulate(
        close,
        sig(5, 0),
        sig(5),
        fill="close",
        leverage=10,
        maintenance_margin=0.005,
        low=low,
        high=close,
        open=close,
        size=10.0,
    )
    liq = 100 * (1 - 0.1) / (1 - 0.005)
    assert r.order_records["kind"][1] == OrderKind.LIQUIDATION
    assert r.orders["idx"][1] == 2
    assert r.orders["price"][1] == pytest.approx(liq)
    # the isolated margin (10 * 100 / 10) is lost, nothing returns (no fee either)
    assert r.final_value == pytest.approx(10_000 - 100)
    assert r.position[2] == 0.0


def test_short_liquidation_and_gap_through_level():
    close = np.array([100.0, 100.0, 130.0])
    open_ = np.array([100.0, 100.0, 130.0])
    r = simulate(
        close,
        sig(3),
        sig(3),
        short_entries=sig(3, 0),
        short_exits=sig(3),
        direction="short",
        fill="close",
        leverage=5,
        open=open_,
        size=10.0,
    )
    liq = 100 * (1 + 0.2) / (1 + 0.005)
    assert r.order_records["kind"][1] == OrderKind.LIQUIDATION
    assert r.orders["price"][1] == pytest.approx(liq)  # gapped through: recorded at the level
    assert r.final_value == pytest.approx(10_000 - 10 * 100 / 5)  # the isolated margin is lost


# --------------------------------------------------------------------------- stops
def bars4():
    close = np.array([100.0, 100.0, 100.0, 100.0])
    return close, close.copy(), close.copy(), close.copy()


def test_stop_loss_inside_bar_and_gap_at_open():
    c, o, h, lo = bars4()
    lo[2] = 97.0
    r = simulate(c, sig(4, 0), sig(4), open=o, high=h, low=lo, fill="close", stop_loss=0.02, size=1.0)
    assert r.order_records["kind"][1] == OrderKind.STOP_LOSS and r.orders["price"][1] == pytest.approx(98)
    o2 = o.copy()
    o2[2] = 96.0
    lo[2] = 95.0
    r = simulate(c, sig(4, 0), sig(4), open=o2, high=h, low=lo, fill="close", stop_loss=0.02, size=1.0)
    assert r.orders["price"][1] == 96.0  # gap through the stop fills at the open


def test_take_profit_and_both_in_one_bar_takes_the_worse():
    c, o, h, lo = bars4()
    h[2] = 106.0
    r = simulate(c, sig(4, 0), sig(4), open=o, high=h, low=lo, fill="close", take_profit=0.05, size=1.0)
    assert r.order_records["kind"][1] == OrderKind.TAKE_PROFIT
    assert r.orders["price"][1] == pytest.approx(105.0)
    lo[2] = 97.0
    r = simulate(
        c, sig(4, 0), sig(4), open=o, high=h, low=lo, fill="close", take_profit=0.05, stop_loss=0.02, size=1.0
    )
    assert r.order_records["kind"][1] == OrderKind.STOP_LOSS
    assert r.orders["price"][1] == pytest.approx(98.0)


def test_short_stops_mirror():
    c, o, h, lo = bars4()
    h[2] = 103.0
    lo[2] = 94.0
    kw = dict(open=o, high=h, low=lo, fill="close", size=1.0, direction="short")
    r = simulate(c, sig(4, 0), sig(4), stop_loss=0.02, take_profit=0.05, **kw)
    assert r.order_records["kind"][1] == OrderKind.STOP_LOSS
    assert r.orders["price"][1] == pytest.approx(102.0)
    r = simulate(c, sig(4, 0), sig(4), take_profit=0.05, **kw)
    assert r.orders["price"][1] == pytest.approx(95.0)
    assert r.final_value == pytest.approx(10_005.0 - 95.0 * 0.0002)  # a resting limit: maker fee


def test_trailing_stop_from_previous_highs():
    c = np.array([100.0, 110.0, 120.0, 120.0, 120.0])
    o = np.array([100.0, 100.0, 110.0, 120.0, 120.0])
    h = np.array([100.0, 110.0, 125.0, 121.0, 120.0])
    lo = np.array([100.0, 100.0, 110.0, 112.0, 120.0])
    r = simulate(c, sig(5, 0), sig(5), open=o, high=h, low=lo, fill="close", trailing_stop=0.1, size=1.0)
    # bar 2: level from the high of bar 1 (110) -> 99 not hit; bar 3: from 125 -> 112.5 hit
    assert list(r.orders["idx"]) == [0, 3]
    assert r.order_records["kind"][1] == OrderKind.TRAILING_STOP
    assert r.orders["price"][1] == pytest.approx(112.5)


def test_time_stop_cooldown_and_kill_switch():
    n = 10
    c = np.full(n, 100.0)
    ent = np.ones(n, dtype=bool)
    r = simulate(c, ent, np.zeros(n, bool), fill="close", time_stop=3, size=1.0)
    idx = list(r.orders["idx"])
    assert idx[:4] == [0, 3, 4, 7]  # exit after 3 bars, re-enter next bar
    assert r.order_records["kind"][1] == OrderKind.TIME_STOP
    r = simulate(c, ent, np.zeros(n, bool), fill="close", time_stop=3, cooldown=2, size=1.0)
    assert list(r.orders["idx"])[:4] == [0, 3, 6, 9]  # bars 4, 5 blocked after the exit at 3
    r = simulate(c, ent, np.zeros(n, bool), time_stop=2, size=1.0)  # next_open
    assert list(r.orders["idx"])[:3] == [1, 3, 4]
    # kill switch: equity falls 20 % from its peak -> flatten and halt
    c = np.array([100.0, 100.0, 120.0, 90.0, 80.0, 100.0, 120.0])
    r = simulate(c, np.ones(7, bool), np.zeros(7, bool), fill="close", max_drawdown=0.2)
    assert list(r.orders["idx"]) == [0, 3]
    assert r.order_records["kind"][1] == OrderKind.KILL_SWITCH
    assert r.position[3:].tolist() == [0.0] * 4


def test_direction_both_reverses_and_short_accounting():
    c = np.array([100.0, 100.0, 90.0, 95.0, 100.0])
    r = simulate(c, sig(5, 0, 3), sig(5, 1), fill="close", direction="both", size=1.0)
    # long 0 -> reverse at 1 (sell 1 to close, sell 1 to open short) -> reverse at 3
    assert list(r.orders["idx"]) == [0, 1, 1, 3, 3]
    assert list(r.order_records["side"]) == [1, -1, -1, 1, 1]
    assert list(r.trades["pnl"]) == pytest.approx([0.0, 5.0, 5.0])
    assert list(r.trades["is_open"]) == [False, False, True]
    assert r.final_value == pytest.approx(10_010.0)


# --------------------------------------------------------------------------- identities
@pytest.mark.parametrize(
    "direction,lev,fill",
    [("long", 1.0, "close"), ("both", 1.0, "next_open"), ("both", 3.0, "close"), ("short", 2.0, "next_open")],
)
def test_accounting_identities(direction, lev, fill):
    rng = np.random.default_rng(11)
    n = 600
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.001, n))
    h = np.maximum(o, c) * 1.004
    lo = np.minimum(o, c) * 0.996
    ts = np.arange(n, dtype=np.int64) * 4 * 3_600_000_000
    fts = ts[::2] + 1
    fr = rng.normal(0.0001, 0.0003, fts.shape[0])
    r = simulate(
        c,
        rng.random(n) < 0.05,
        rng.random(n) < 0.05,
        open=o,
        high=h,
        low=lo,
        ts=ts,
        fees=0.0005,
        fee_fixed=0.1,
        slippage=0.0002,
        stop_loss=0.03,
        take_profit=0.05,
        trailing_stop=0.04,
        direction=direction,
        leverage=lev,
        fill=fill,
        funding_ts=fts,
        funding_rate=fr,
        size=0.5,
        size_mode="percent",
        volume=np.full(n, 1000.0),
    )
    tr = r.trades
    # position value from the open trade at each bar: margin + pos * (close - entry)
    value = np.zeros(n)
    for _, t in tr.iterrows():
        last = t.exit_idx + 1 if t.is_open else t.exit_idx
        rows = np.arange(t.entry_idx, last)
        if t.is_open:
            rows = np.arange(t.entry_idx, n)
        margin = t["size"] * t.entry_price / lev
        side = {"long": 1, "short": -1}[t.direction]
        value[rows] = margin + side * t["size"] * (c[rows] - t.entry_price)
    np.testing.assert_allclose(r.cash + value, r.equity, rtol=1e-10, atol=1e-7)
    if lev == 1.0 and direction == "long":
        np.testing.assert_allclose(r.cash + r.position * c, r.equity, rtol=1e-12)
    closed = tr.loc[~tr.is_open, "pnl"].sum()
    open_pnl = tr.loc[tr.is_open, "pnl"].sum()
    assert closed == pytest.approx(r.final_value - 10_000 - open_pnl, abs=1e-7)
    assert r.metrics["fees_paid"] == pytest.approx(r.orders["fees"].sum())
    assert tr["fees"].sum() == pytest.approx(r.orders["fees"].sum())
    assert r.metrics["funding_paid"] == pytest.approx(tr["funding"].sum())
    assert len(tr) == r.metrics["n_trades"] > 5


# --------------------------------------------------------------------------- metrics
def test_metrics_against_pandas():
    rng = np.random.default_rng(5)
    n = 24 * 40
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.005, n)))
    ts = 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000_000
    r = simulate(c, rng.random(n) < 0.03, rng.random(n) < 0.03, ts=ts, fees=0.001)
    m = r.metrics
    s = pd.Series(r.equity, index=pd.to_datetime(ts, unit="us", utc=True))
    daily = s.resample("1D").last().ffill()
    rets = pd.concat([pd.Series([10_000.0]), daily.reset_index(drop=True)]).pct_change().dropna()
    assert m["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(365), rel=1e-9)
    down = np.sqrt((np.minimum(rets, 0) ** 2).mean())
    assert m["sortino"] == pytest.approx(rets.mean() / down * math.sqrt(365), rel=1e-9)
    eq = np.r_[10_000.0, r.equity]
    dd = 1 - eq / np.maximum.accumulate(eq)
    assert m["max_drawdown"] == pytest.approx(dd.max(), rel=1e-12)
    assert m["total_return"] == pytest.approx(r.final_value / 10_000 - 1)
    nd = len(rets)
    assert m["annual_return"] == pytest.approx((r.final_value / 1e4) ** (365 / nd) - 1)
    assert m["calmar"] == pytest.approx(m["annual_return"] / m["max_drawdown"])
    closed = r.trades[~r.trades.is_open]
    assert m["win_rate"] == pytest.approx((closed.pnl > 0).mean())
    assert m["profit_factor"] == pytest.approx(
        closed.pnl[closed.pnl > 0].sum() / -closed.pnl[closed.pnl <= 0].sum()
    )
    assert m["expectancy"] == pytest.approx(closed.pnl.mean())
    assert m["exposure"] == pytest.approx((r.position != 0).mean())
    notional = (r.orders["size"] * r.orders["price"]).sum()
    assert m["turnover"] == pytest.approx(notional / r.equity.mean())
    # longest drawdown, in days, from the peak bar to the recovery bar (or the end)
    peak_t, longest, under = ts[0], 0, False
    best = 10_000.0
    for t, e in zip(ts, r.equity, strict=True):
        if e >= best:
            if under:
                longest = max(longest, t - peak_t)
            best, peak_t, under = e, t, False
        else:
            under = True
    if under:
        longest = max(longest, ts[-1] - peak_t)
    assert m["max_drawdown_duration"] == pytest.approx(longest / DAY_US)


def test_without_bar_times_calendar_metrics_are_refused_and_freq_gives_them():
    """No ts, DatetimeIndex or freq: the calendar metrics are NaN (with a warning), never per bar;
    freq="1D" spaces the bars a day apart and computes them."""
    c = np.array([100.0, 101.0, 99.0, 102.0])
    with pytest.warns(NoCalendarWarning, match="sharpe"):
        r = simulate(c, sig(4, 0), sig(4), fill="close")
    assert r.ts is None
    assert all(math.isnan(r.metrics[k]) for k in CALENDAR_METRICS)
    d = simulate(c, sig(4, 0), sig(4), fill="close", freq="1D")
    assert list(d.ts) == [0, DAY_US, 2 * DAY_US, 3 * DAY_US]
    rets = np.diff(np.r_[10_000.0, d.equity]) / np.r_[10_000.0, d.equity][:-1]
    assert d.metrics["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(365))
    for k, v in r.metrics.items():
        if k not in CALENDAR_METRICS:
            assert v == pytest.approx(d.metrics[k], nan_ok=True), k


# --------------------------------------------------------------------------- validation + config
def test_clear_errors_name_the_argument():
    c = np.array([100.0, 101.0, 99.0])
    with pytest.raises(ValueError, match="`close`.*row 1"):
        simulate(np.array([1.0, np.nan, 2.0]), sig(3), sig(3))
    with pytest.raises(ValueError, match="`exits`"):
        simulate(c, sig(3), sig(4))
    with pytest.raises(ValueError, match="`fill`"):
        simulate(c, sig(3), sig(3), fill="open")
    with pytest.raises(ValueError, match="`stop_loss`"):
        simulate(c, sig(3), sig(3), stop_loss=-0.1)
    with pytest.raises(ValueError, match="`ts`.*row 2"):
        simulate(c, sig(3), sig(3), ts=np.array([0, 5, 3]))
    with pytest.raises(ValueError, match="`size`"):
        simulate(c, sig(3), sig(3), size_mode="notional")


def test_simulate_from_config_maps_every_group_field():
    import os

    from omegaconf import OmegaConf

    from btsys.config import BacktestConfig

    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    yaml_node = OmegaConf.load(os.path.join(conf, "backtest", "default.yaml"))
    yaml_node.pop("defaults")
    cfg = OmegaConf.merge(
        OmegaConf.structured(BacktestConfig),
        yaml_node,
        OmegaConf.from_dotlist(
            [
                "fees.taker=0.001",
                "slippage.bps=10",
                "risk.stop_loss=0.02",
                "fill=close",
                "size.mode=qty",
                "size.value=2",
                "funding=true",
            ]
        ),
    )
    n = 6
    close = np.array([100.0, 100.0, 97.0, 100.0, 100.0, 100.0])
    ts = np.arange(n, dtype=np.int64) * 3_600_000_000
    bars = pd.DataFrame(
        {
            "ts_open": ts - 3_600_000_000 + 1,
            "ts_close": ts,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": np.ones(n),
        }
    )
    funding = pd.DataFrame({"ts": [ts[1]], "rate": [0.001]})
    r = simulate_from_config(bars, sig(n, 0), sig(n), cfg, funding=funding)
    direct = simulate(
        close,
        sig(n, 0),
        sig(n),
        open=close,
        high=close,
        low=close,
        ts=ts,
        fill="close",
        fees=0.001,
        maker_fee=0.0002,
        slippage=0.001,
        size=2.0,
        stop_loss=0.02,
        funding_ts=[ts[1]],
        funding_rate=[0.001],
        volume=np.ones(n),
    )
    assert r.final_value == direct.final_value
    assert r.order_records["kind"][1] == OrderKind.STOP_LOSS
    assert r.orders["price"][0] == pytest.approx(100.1)
    assert r.metrics["funding_paid"] == pytest.approx(2 * 100 * 0.001)
    with pytest.raises(KeyError, match="close"):
        simulate_from_config(bars.drop(columns="close"), sig(n), sig(n), cfg)
    with pytest.raises(ValueError, match="backtest.fess is not a backtest option"):
        simulate_from_config(bars, sig(n), sig(n), {"fess": {}})
    with pytest.raises(ValueError, match=r"backtest.risk.stop_loss = -0.1 is out of range \[0, 1\]"):
        simulate_from_config(bars, sig(n), sig(n), {"risk": {"stop_loss": -0.1}})


def test_bet_size_scales_the_entry_of_its_signal_bar():
    """A per-bar bet size decided at the signal bar's close scales that entry's quantity."""
    close = np.array([100.0, 100.0, 110.0, 110.0, 121.0, 121.0])
    entries = np.array([True, False, False, True, False, False])
    exits = np.array([False, True, False, False, True, False])
    full = simulate(close, entries, exits, fill="close", size=10.0, size_mode="qty")
    half = simulate(
        close,
        entries,
        exits,
        fill="close",
        size=10.0,
        size_mode="qty",
        size_scale=np.array([0.5, 1.0, 1.0, 0.25, 1.0, 1.0]),
    )
    buys_full = full.orders[full.orders["side"] == "buy"]["size"]
    buys_half = half.orders[half.orders["side"] == "buy"]["size"]
    np.testing.assert_allclose(buys_full, [10.0, 10.0])
    np.testing.assert_allclose(buys_half, [5.0, 2.5])
    # pnl: 5 units * +0 on the first trade, 2.5 units * +11 on the second
    assert half.final_value == pytest.approx(10_000.0 + 2.5 * 11.0)
    none = simulate(close, entries, exits, fill="close", size=10.0, size_mode="qty", size_scale=np.zeros(6))
    assert len(none.orders) == 0 and none.final_value == 10_000.0
    with pytest.raises(ValueError, match="size_scale"):
        simulate(close, entries, exits, size_scale=np.array([1.0, -1, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="size_scale"):
        simulate(close, entries, exits, size_scale=np.ones(3))
