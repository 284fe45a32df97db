"""Sweeps equal simulate row by row; vectorbt parity of orders (when vectorbt is installed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btsys.backtest import simulate
from btsys.backtest.enums import METRIC_NAMES
from btsys.backtest.sweep import ma_cross_signals, sweep, sweep_from_config


def bars(n=1500, seed=2):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.001, n))
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.004, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.004, n)))
    ts = np.arange(n, dtype=np.int64) * 3_600_000_000
    return ts, o, h, lo, c


def assert_rows_equal(df, keys, run):
    for _, row in df.iterrows():
        res = run(row)
        for k in METRIC_NAMES:
            a, b = row[k], res.metrics[k]
            if np.isnan(b):
                assert np.isnan(a), k
            else:
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (k, dict(row[keys]))


@pytest.mark.parametrize(
    "strategy,direction,fill", [("ma_cross", "long", "next_open"), ("ema_cross", "both", "close")]
)
def test_sweep_equals_simulate_for_every_combination(strategy, direction, fill):
    ts, o, h, lo, c = bars()
    grid = {
        "fast": [3, 8],
        "slow": [20, 45],
        "stop_loss": [0.0, 0.03],
        "take_profit": [0.0, 0.06],
        "fees": [0.0005, 0.002],
    }
    df = sweep(
        c,
        grid,
        open=o,
        high=h,
        low=lo,
        ts=ts,
        strategy=strategy,
        direction=direction,
        fill=fill,
        trailing_stop=0.05,
        leverage=2.0,
        size=0.5,
        size_mode="percent",
    )
    assert len(df) == 32 and list(df.columns[:5]) == list(grid)
    assert df["n_trades"].min() > 0

    def run(row):
        e, x = ma_cross_signals(c, int(row.fast), int(row.slow), kind=strategy)
        return simulate(
            c,
            e,
            x,
            open=o,
            high=h,
            low=lo,
            ts=ts,
            direction=direction,
            fill=fill,
            fees=row.fees,
            stop_loss=row.stop_loss,
            take_profit=row.take_profit,
            trailing_stop=0.05,
            leverage=2.0,
            size=0.5,
            size_mode="percent",
        )

    assert_rows_equal(df, list(grid), run)


def test_sweep_rejects_unknown_keys_and_bad_values():
    ts, o, h, lo, c = bars(200)
    with pytest.raises(ValueError, match="fsat"):
        sweep(c, {"fsat": [1], "slow": [5]})
    with pytest.raises(ValueError, match="stop_loss"):
        sweep(c, {"fast": [2], "slow": [5], "stop_loss": [-1.0]})
    with pytest.raises(ValueError, match="fast"):
        sweep(c, {"fast": [0], "slow": [5]})


def test_sweep_from_config_dotted_keys():
    from omegaconf import OmegaConf

    ts, o, h, lo, c = bars(800)
    df_bars = pd.DataFrame(
        {"ts_close": ts, "open": o, "high": h, "low": lo, "close": c, "volume": np.full(len(c), 50.0)}
    )
    cfg = OmegaConf.create(
        {
            "strategy": {"name": "ma_cross", "fast": 5, "slow": 30},
            "backtest": {
                "init_cash": 1000.0,
                "fill": "next_open",
                "direction": "long",
                "fees": {"maker": 0.0002, "taker": 0.001, "fixed": 0.0, "min_fee": 0.0},
                "slippage": {"bps": 2.0, "impact": 0.0, "impact_exponent": 0.5},
                "size": {"mode": "all", "value": 1.0, "min_qty": 0.0, "step": 0.0},
                "risk": {"stop_loss": 0.0},
            },
        }
    )
    grid = {
        "strategy.slow": [20, 40],
        "backtest.slippage.bps": [0.0, 10.0],
        "backtest.risk.stop_loss": [0.0, 0.02],
    }
    df = sweep_from_config(df_bars, cfg, grid)
    assert list(df.columns[:3]) == list(grid) and len(df) == 8
    assert sorted(set(df["backtest.slippage.bps"])) == [0.0, 10.0]
    for _, row in df.iterrows():
        e, x = ma_cross_signals(c, 5, int(row["strategy.slow"]))
        r = simulate(
            c,
            e,
            x,
            open=o,
            high=h,
            low=lo,
            ts=ts,
            init_cash=1000.0,
            fees=0.001,
            slippage=row["backtest.slippage.bps"] / 1e4,
            stop_loss=row["backtest.risk.stop_loss"],
            maker_fee=0.0002,
        )
        assert row["final_value"] == pytest.approx(r.final_value, rel=1e-12)
    with pytest.raises(KeyError, match="strategy.window"):
        sweep_from_config(df_bars, cfg, {"strategy.window": [3]})


def test_orders_equal_vectorbt_from_signals():
    vbt = pytest.importorskip("vectorbt")
    rng = np.random.default_rng(9)
    n = 3000
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    e = rng.random(n) < 0.05
    x = rng.random(n) < 0.05
    r = simulate(c, e, x, fill="close", fees=0.001, size=np.inf, init_cash=10_000.0)
    pf = vbt.Portfolio.from_signals(c, e, x, fees=0.001, size=np.inf, init_cash=10_000.0)
    o = pf.orders.records
    assert len(o) == len(r.orders) > 50
    np.testing.assert_array_equal(o["idx"], r.orders["idx"])
    np.testing.assert_allclose(o["size"], r.orders["size"], rtol=1e-9)
    np.testing.assert_allclose(o["price"], r.orders["price"], rtol=1e-9)
    np.testing.assert_allclose(o["fees"], r.orders["fees"], rtol=1e-9)
    np.testing.assert_array_equal(np.where(o["side"] == 0, 1, -1), r.order_records["side"])
    assert r.final_value == pytest.approx(float(pf.final_value()), rel=1e-9)


def test_sweep_daily_returns_are_the_series_behind_each_rows_sharpe():
    """With daily_returns, each column is that combination's daily returns: compounding them gives
    the row's total return, and their mean/std give its Sharpe (365-day annualisation)."""
    from btsys.backtest.sweep import sweep

    rng = np.random.default_rng(5)
    n = 20_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    ts = 1_735_689_600_000_000 + np.arange(n, dtype=np.int64) * 300_000_000  # 5-minute bars, ~69 days
    table, daily = sweep(close, {"fast": [5, 20], "slow": [50, 100]}, ts=ts, fees=0.001, daily_returns=True)
    assert daily.shape == (int(ts[-1] // 86_400_000_000 - ts[0] // 86_400_000_000 + 1), 4)
    assert (np.diff(daily.index.to_numpy()) == 86_400_000_000).all()
    for i in range(4):
        r = daily[i].to_numpy()
        assert np.prod(1 + r) - 1 == pytest.approx(table["total_return"][i], rel=1e-9, abs=1e-12)
        assert r.mean() / r.std(ddof=1) * np.sqrt(365) == pytest.approx(table["sharpe"][i], rel=1e-6)
