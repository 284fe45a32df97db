"""No look-ahead through prices or time stamps: changing every bar after k (prices, volume, bar
times, funding) leaves every output up to bar k unchanged, for every sizing mode and risk option."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btsys.backtest import simulate
from btsys.backtest.engine import realised_vol
from btsys.backtest.portfolio import simulate_portfolio

H = 3_600_000_000
N = 400


def market(seed: int, n: int = N, t0: int = 1_735_689_600_000_000):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.002, n))
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.004, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.004, n)))
    ts = t0 + np.cumsum(rng.integers(1, 4, n)) * H  # irregular bars, like dollar bars
    vol = rng.uniform(5, 50, n)
    e, x = rng.random(n) < 0.06, rng.random(n) < 0.06
    se, sx = rng.random(n) < 0.06, rng.random(n) < 0.06
    return dict(close=c, open=o, high=h, low=lo, ts=ts, volume=vol), (e, x, se, sx)


def perturbed(m: dict, k: int, seed: int = 99) -> dict:
    """Every bar after k changed: another price path (scaled), volumes, and bar times stretched."""
    other, _ = market(seed)
    out = {key: v.copy() for key, v in m.items()}
    for key in ("close", "open", "high", "low", "volume"):
        out[key][k + 1 :] = other[key][k + 1 :] * 1.3
    gaps = np.diff(m["ts"][k:]) * 7 + 11  # later bars much further apart
    out["ts"][k + 1 :] = m["ts"][k] + np.cumsum(gaps)
    return out


FUNDING_TS = 1_735_689_600_000_000 + np.arange(0, 2000, 8) * H
FUNDING_RATE = np.random.default_rng(5).normal(0.0001, 0.0003, FUNDING_TS.shape[0])

CASES = {
    "all": {},
    "qty": {"size": 3.0, "size_mode": "qty", "min_qty": 0.5, "step": 0.1},
    "notional": {"size": 4000.0, "size_mode": "notional"},
    "percent": {"size": 0.4, "size_mode": "percent", "leverage": 3.0},
    "vol_target": {"size": 0.5, "size_mode": "vol_target", "vol_window": 20},
    "stops": {"stop_loss": 0.01, "take_profit": 0.02, "trailing_stop": 0.015},
    "time_cooldown": {"time_stop": 5, "cooldown": 3},
    "kill_switch": {"max_drawdown": 0.1},
    # a liquidation loses the isolated margin: a fifth of equity per position keeps the run trading
    "liquidation": {"leverage": 25.0, "maintenance_margin": 0.01, "size": 0.2, "size_mode": "percent"},
    "caps": {"max_position": 3000.0, "max_leverage": 0.5},
    "impact_fees": {"slippage_impact": 0.2, "fee_fixed": 0.5, "min_fee": 1.0},
    "funding": {"funding": True},
}


def _run(m, sig, opts, direction, fill):
    opts = dict(opts)
    fund = {"funding_ts": FUNDING_TS, "funding_rate": FUNDING_RATE} if opts.pop("funding", False) else {}
    e, x, se, sx = sig
    return simulate(
        m["close"],
        e,
        x,
        open=m["open"],
        high=m["high"],
        low=m["low"],
        ts=m["ts"],
        volume=m["volume"],
        direction=direction,
        fill=fill,
        short_entries=se,
        short_exits=sx,
        **fund,
        **opts,
    )


@pytest.mark.parametrize("direction,fill", [("long", "next_open"), ("both", "close"), ("short", "next_open")])
@pytest.mark.parametrize("case", list(CASES))
def test_simulate_has_no_look_ahead(case, direction, fill):
    m, sig = market(1)
    full = _run(m, sig, CASES[case], direction, fill)
    assert len(full.orders) > 4, "nothing traded"
    changed_after = False
    for k in (120, 250):
        alt = _run(perturbed(m, k), sig, CASES[case], direction, fill)
        for name in ("equity", "cash", "position"):
            np.testing.assert_array_equal(getattr(alt, name)[: k + 1], getattr(full, name)[: k + 1], name)
        a, b = (
            alt.order_records[alt.order_records["idx"] <= k],
            full.order_records[full.order_records["idx"] <= k],
        )
        np.testing.assert_array_equal(a, b)
        changed_after |= not np.array_equal(alt.equity[k + 1 :], full.equity[k + 1 :])
    assert changed_after, "the perturbation changed nothing"


def test_vol_target_size_ignores_later_bar_times():
    """Stretching only the times of later bars does not change an earlier entry's size."""
    m, sig = market(2)
    k = 200
    alt = perturbed(m, k)
    for key in ("close", "open", "high", "low", "volume"):
        alt[key] = m[key]  # only the times change
    v_full = realised_vol(m["close"], m["ts"], 30)
    v_alt = realised_vol(alt["close"], alt["ts"], 30)
    np.testing.assert_array_equal(v_alt[: k + 1], v_full[: k + 1])
    assert not np.array_equal(v_alt[k + 1 :], v_full[k + 1 :], equal_nan=True)
    opts = {"size": 0.3, "size_mode": "vol_target", "vol_window": 30}
    a, b = _run(alt, sig, opts, "long", "close"), _run(m, sig, opts, "long", "close")
    np.testing.assert_array_equal(
        a.order_records[a.order_records["idx"] <= k], b.order_records[b.order_records["idx"] <= k]
    )


def _frames(ms):
    return {
        s: pd.DataFrame(
            {"ts_close": m["ts"], **{k: m[k] for k in ("open", "high", "low", "close", "volume")}}
        )
        for s, m in ms.items()
    }


@pytest.mark.parametrize("case", ["all", "percent", "stops", "kill_switch", "funding", "time_cooldown"])
def test_portfolio_has_no_look_ahead(case):
    (ma, sa), (mb, sb) = market(3), market(4, t0=1_735_689_600_000_000 + H // 2)
    opts = dict(CASES[case])
    funding = opts.pop("funding", False)
    fr = pd.DataFrame({"ts": FUNDING_TS, "rate": FUNDING_RATE})
    bt = {"funding": funding, "direction": "both", "fill": "next_open"}

    def run(ma, mb):
        return simulate_portfolio(
            _frames({"A": ma, "B": mb}),
            {"A": sa[0], "B": sb[0]},
            {"A": sa[1], "B": sb[1]},
            bt,
            funding={"A": fr, "B": fr} if funding else None,
            short_entries={"A": sa[2], "B": sb[2]},
            short_exits={"A": sa[3], "B": sb[3]},
            **opts,
        )

    full = run(ma, mb)
    assert len(full.orders) > 4
    k = 150
    cut = ma["ts"][k]
    kb = int(np.searchsorted(mb["ts"], cut, side="right")) - 1
    alt = run(perturbed(ma, k), perturbed(mb, kb, seed=98))
    rows = int(np.searchsorted(full.ts, cut, side="right"))
    np.testing.assert_array_equal(alt.ts[:rows], full.ts[:rows])
    np.testing.assert_array_equal(alt.equity[:rows], full.equity[:rows])
    np.testing.assert_array_equal(alt.position[:rows], full.position[:rows])
    np.testing.assert_array_equal(
        alt.order_records[alt.order_records["idx"] < rows],
        full.order_records[full.order_records["idx"] < rows],
    )
    assert not np.array_equal(alt.equity[rows:], full.equity[rows:])
