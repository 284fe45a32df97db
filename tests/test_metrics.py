"""One definition of each metric: the Python functions of btsys.backtest.metrics (used by the
reports, the walk-forward windows and the sweep statistics) agree with the kernels' metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btsys.backtest import simulate
from btsys.backtest.enums import DAY_US
from btsys.backtest.metrics import (
    compute_metrics,
    daily_returns,
    drawdown,
    period_returns,
    rolling_sharpe,
    sharpe,
)
from btsys.backtest.split import split_table
from btsys.report import stats

T0 = 1_735_689_600_000_000  # 2025-01-01 UTC


def test_period_returns_known_values():
    # bars on days 0 (twice), 1 and 3 (none on day 2): last equity per day 110, 99, 99 (carried), 133.1
    ts = T0 + np.array([0, DAY_US // 2, DAY_US + 1, 3 * DAY_US + 7], dtype=np.int64)
    days, r = period_returns(ts, np.array([100.0, 110.0, 99.0, 133.1]), 100.0)
    np.testing.assert_array_equal(days, T0 + np.arange(4, dtype=np.int64) * DAY_US)
    np.testing.assert_allclose(r, [0.10, -0.10, 0.0, 133.1 / 99.0 - 1.0])
    # the first day is measured against the start value (the initial cash), not the first bar
    np.testing.assert_allclose(daily_returns(ts, [100.0, 110.0, 99.0, 133.1], 50.0)[0], 110.0 / 50.0 - 1.0)
    with pytest.raises(ValueError, match=r"ts\[2\]"):
        daily_returns(np.array([0, 5, 3]), np.ones(3), 1.0)
    assert drawdown([100, 120, 90, 130], 100.0).min() == pytest.approx(-0.25)
    assert drawdown([90, 95], 100.0).tolist() == pytest.approx([-0.10, -0.05])  # the start is a peak


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(30, 400), hours=st.sampled_from([1, 5, 24, 30]))
def test_python_definitions_equal_the_kernel_metrics(seed, n, hours):
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.integers(1, hours + 1, n)) * 3_600_000_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    entries, exits = rng.random(n) < 0.1, rng.random(n) < 0.1
    r = simulate(close, entries, exits, ts=ts, fees=0.001, init_cash=1e4)
    d = daily_returns(ts, r.equity, r.init_cash)
    assert r.metrics["sharpe"] == pytest.approx(sharpe(d), rel=1e-9, nan_ok=True)
    assert r.metrics["max_drawdown"] == pytest.approx(-drawdown(r.equity, r.init_cash).min(), abs=1e-12)
    assert np.array_equal(r.drawdown, drawdown(r.equity, r.init_cash))
    again = compute_metrics(ts, r.equity, r.init_cash, r.trades, r.position)
    for k in ("sharpe", "sortino", "total_return", "annual_return", "max_drawdown"):
        assert again[k] == pytest.approx(r.metrics[k], rel=1e-9, nan_ok=True), k
    if len(d) >= 10:  # the rolling Sharpe's last value is the Sharpe of the last window
        assert rolling_sharpe(d, 10)[-1] == pytest.approx(sharpe(d[-10:]), rel=1e-12, nan_ok=True)


def test_walk_forward_window_is_the_run_over_its_bars():
    # a window's figures are those of a backtest whose equity starts at 1 before the window
    rng = np.random.default_rng(4)
    n = 300
    ts = T0 + np.arange(n, dtype=np.int64) * 6 * 3_600_000_000
    eq = 1e4 * np.cumprod(1 + rng.normal(0.0005, 0.01, n))

    class Result:
        pass

    res = Result()
    res.ts, res.equity = ts, eq
    tab = split_table(res, {"train_bars": 100, "test_bars": 50})
    for _, w in tab.iterrows():
        a, b = int(w["test_start"]), int(w["test_stop"])
        m = compute_metrics(ts[a:b], eq[a:b] / eq[a - 1], 1.0)
        for k in ("sharpe", "sortino", "total_return", "annual_return", "max_drawdown"):
            assert w[f"oos_{k}"] == pytest.approx(m[k], rel=1e-9), k


def test_dsr_uses_the_backtest_sharpe():
    r = np.random.default_rng(3).normal(0.002, 0.02, 400)
    d = stats.dsr_from_trials(r, np.array([1.0, 0.5, 2.0]))
    assert d["dsr_sr"] == pytest.approx(sharpe(r, periods=1.0), rel=1e-12)
    assert sharpe(r) == pytest.approx(d["dsr_sr"] * math.sqrt(365.0), rel=1e-12)
