"""The array-level sweep equals simulate of the strategy's signals row by row; grid checks;
vectorbt parity of orders (when vectorbt is installed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btsys.backtest import simulate
from btsys.backtest.enums import METRIC_NAMES
from btsys.backtest.metrics import BENCHMARK_METRICS
from btsys.backtest.options import OptionError
from btsys.backtest.sweep import SweepError, sweep
from btsys.signals import StrategyError, generate_signals


def bars(n=1500, seed=2):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.001, n))
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.004, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.004, n)))
    ts = np.arange(n, dtype=np.int64) * 3_600_000_000
    return ts, o, h, lo, c


@pytest.mark.parametrize(
    "strategy,fixed,grid",
    [
        ("ma_cross", {"direction": "long", "fill": "next_open"}, {"fast": [3, 8], "slow": [20, 45]}),
        ("ema_cross", {"direction": "both", "fill": "close"}, {"fast": [3, 8], "slow": [20, 45]}),
        ("rsi_reversion", {"direction": "both"}, {"window": [7, 14], "lower": [30.0, 40.0]}),
        ("bollinger_breakout", {"direction": "short"}, {"window": [10, 30], "k": [1.0, 2.5]}),
        ("momentum", {"direction": "both"}, {"lookback": [5, 30], "threshold": [0.0, 0.01]}),
    ],
)
def test_sweep_equals_simulate_for_every_combination(strategy, fixed, grid):
    ts, o, h, lo, c = bars()
    opts = dict(trailing_stop=0.05, leverage=2.0, size=0.5, size_mode="percent", **fixed)
    grid = {**grid, "stop_loss": [0.0, 0.03], "take_profit": [0.0, 0.06], "fees": [0.0005, 0.002]}
    df = sweep(c, grid, open=o, high=h, low=lo, ts=ts, strategy=strategy, **opts)
    assert len(df) == 32 and list(df.columns[: len(grid)]) == list(grid)
    assert df["n_trades"].min() > 0
    frame = pd.DataFrame({"ts_close": ts, "open": o, "high": h, "low": lo, "close": c})
    keys = list(grid)
    for i in range(len(df)):
        row = {k: df[k].iloc[i].item() for k in keys}
        strat = {k: v for k, v in row.items() if k not in ("stop_loss", "take_profit", "fees")}
        sig = generate_signals({"name": strategy, **strat}, frame)
        r = simulate(
            c, sig.entries, sig.exits, open=o, high=h, low=lo, ts=ts, short_entries=sig.short_entries,
            short_exits=sig.short_exits, stop_loss=row["stop_loss"], take_profit=row["take_profit"],
            fees=row["fees"], **opts,
        )  # fmt: skip
        for k in METRIC_NAMES:  # the same kernels in the same order: bit for bit
            assert df[k].iloc[i] == r.metrics[k] or (np.isnan(df[k].iloc[i]) and np.isnan(r.metrics[k])), (
                k,
                row,
            )
        for k in BENCHMARK_METRICS:  # the same definitions, summed in the sweep kernel
            assert df[k].iloc[i] == pytest.approx(r.metrics[k], rel=1e-9, abs=1e-12), (k, row)


def test_sweep_rejects_bad_grids_before_computing():
    ts, o, h, lo, c = bars(200)
    with pytest.raises(SweepError, match="fsat is not a sweepable key"):
        sweep(c, {"fsat": [1], "slow": [5]})
    with pytest.raises(OptionError, match=r"`stop_loss` .* = -1.0 is out of range"):
        sweep(c, {"fast": [2], "slow": [5], "stop_loss": [-1.0]})
    with pytest.raises(StrategyError, match="strategy.fast must be an integer >= 1, got 0"):
        sweep(c, {"fast": [0], "slow": [5]})
    with pytest.raises(
        StrategyError, match=r"strategy.fast \(10\) must be smaller than strategy.slow \(10\)"
    ):
        sweep(c, {"fast": [2, 10], "slow": [10, 20]})
    with pytest.raises(SweepError, match="strategy.slow = 500 needs more than the 200 bars"):
        sweep(c, {"fast": [2], "slow": [50, 500]})
    with pytest.raises(SweepError, match="cannot be swept in the kernel"):
        sweep(c, {"fast": [2]}, strategy="rule")


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
