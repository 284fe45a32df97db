"""Portfolios: one symbol equals simulate; shared cash over two symbols by hand; cross-sectional."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btsys.backtest import simulate, simulate_from_config
from btsys.backtest.enums import METRIC_NAMES
from btsys.backtest.portfolio import simulate_cross_sectional, simulate_portfolio

H = 3_600_000_000
NO_COSTS = {"fees": {"taker": 0.0}, "slippage": {"bps": 0.0}}  # by-hand cases; costs default on


def frame(close, ts, volume=None):
    close = np.asarray(close, float)
    return pd.DataFrame(
        {
            "ts_close": np.asarray(ts, np.int64),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": np.ones(len(close)) if volume is None else volume,
        }
    )


def test_single_symbol_portfolio_equals_simulate():
    rng = np.random.default_rng(4)
    n = 400
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    h, lo = np.maximum(o, c) * 1.003, np.minimum(o, c) * 0.997
    ts = np.arange(n, dtype=np.int64) * H
    df = pd.DataFrame({"ts_close": ts, "open": o, "high": h, "low": lo, "close": c, "volume": np.ones(n)})
    e, x = rng.random(n) < 0.05, rng.random(n) < 0.05
    cfg = {
        "fees": {"taker": 0.001},
        "risk": {"stop_loss": 0.02, "take_profit": 0.04},
        "direction": "both",
        "leverage": 2.0,
    }
    pr = simulate_portfolio({"BTC": df}, {"BTC": e}, {"BTC": x}, cfg)
    r = simulate(
        c,
        e,
        x,
        open=o,
        high=h,
        low=lo,
        ts=ts,
        fees=0.001,
        stop_loss=0.02,
        take_profit=0.04,
        direction="both",
        leverage=2.0,
        volume=np.ones(n),
    )
    np.testing.assert_allclose(pr.equity, r.equity, rtol=1e-12)
    assert len(pr.orders) == len(r.orders)
    np.testing.assert_allclose(pr.orders["price"], r.orders["price"])
    for k, v in r.metrics.items():
        assert pr.metrics[k] == pytest.approx(v, rel=1e-9, nan_ok=True), k
    assert pr.symbols == ["BTC"] and set(pr.orders["col"]) == {0}


def test_shared_cash_event_order_by_time():
    # A closes at 0,2,4,6 h; B at 1,3,5 h: merged timeline of 7 rows
    a = frame([100, 100, 110, 110], np.array([0, 2, 4, 6]) * H)
    b = frame([50, 50, 40], np.array([1, 3, 5]) * H)
    ent = {"A": np.array([1, 0, 0, 0], bool), "B": np.array([1, 0, 0], bool)}
    ex = {"A": np.array([0, 0, 1, 0], bool), "B": np.zeros(3, bool)}
    r = simulate_portfolio({"A": a, "B": b}, ent, ex, {"fill": "close", **NO_COSTS})
    assert list(r.ts) == [0, H, 2 * H, 3 * H, 4 * H, 5 * H, 6 * H]
    # A enters first with half the cash (2 flat symbols), B then takes all that is left
    assert list(r.orders["col"]) == [0, 1, 0]
    assert list(r.orders["idx"]) == [0, 1, 4]
    assert r.orders["size"][0] == pytest.approx(5000 / 100)
    assert r.orders["size"][1] == pytest.approx(5000 / 50)
    assert r.final_value == pytest.approx(50 * 110 + 100 * 40)
    assert r.equity[2] == pytest.approx(50 * 100 + 100 * 50)
    np.testing.assert_allclose(r.position[:, 1], [0, 100, 100, 100, 100, 100, 100])
    assert list(r.trades["symbol"]) == ["A", "B"]
    assert r.trades["pnl"].sum() == pytest.approx(r.final_value - 10_000)


def test_cross_sectional_long_top_short_bottom():
    ts = np.arange(6) * H
    closes = {
        "A": [100, 101, 102, 103, 104, 105],
        "B": [100, 100, 100, 100, 100, 100],
        "C": [100, 99, 98, 97, 96, 95],
    }
    bars = {s: frame(c, ts) for s, c in closes.items()}
    scores = {
        "A": np.array([3, 3, 3, 1, 1, 1.0]),
        "B": np.array([2, 2, 2, 2, 2, 2.0]),
        "C": np.array([1, 1, 1, 3, 3, 3.0]),
    }
    r = simulate_cross_sectional(
        bars, scores, top_n=1, bottom_n=1, rebalance_every=3, bt_cfg={"fill": "close", **NO_COSTS}
    )
    o = pd.DataFrame(r.orders)
    first = o[o.idx == 0]
    assert sorted(zip(first.col, first.side, strict=True)) == [(0, "buy"), (2, "sell")]  # long A, short C
    # each side gets half the equity as margin
    assert first.loc[first.col == 0, "size"].iloc[0] == pytest.approx(5000 / 100)
    second = o[o.idx == 3]
    # at row 3 the ranking flips: A -> short, C -> long (reversals: two orders each)
    assert sorted(zip(second.col, second.side, strict=True)) == [
        (0, "sell"),
        (0, "sell"),
        (2, "buy"),
        (2, "buy"),
    ]
    assert r.metrics["n_trades"] == 4
    with pytest.raises(ValueError, match="top_n"):
        simulate_cross_sectional(bars, scores, 2, 2, 3, {})
    # a pandas offset schedule: one rebalance per day -> only the first row here
    r = simulate_cross_sectional(bars, scores, 1, 0, "1D", {"fill": "close"})
    assert list(r.orders["idx"]) == [0]


def test_streaming_metrics_equal_metrics_from_arrays():
    from btsys.backtest.metrics import compute_metrics

    rng = np.random.default_rng(8)
    n = 24 * 30
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = np.arange(n, dtype=np.int64) * H * 3  # gaps of empty days are carried forward
    r = simulate(
        c, rng.random(n) < 0.04, rng.random(n) < 0.04, ts=ts, fees=0.001, direction="both", stop_loss=0.03
    )
    m = compute_metrics(
        r.ts,
        r.equity,
        10_000.0,
        r.trades,
        r.position,
        r.metrics["fees_paid"],
        r.metrics["funding_paid"],
        float((r.orders["size"] * r.orders["price"]).sum()),
    )
    for k, v in m.items():
        assert r.metrics[k] == pytest.approx(v, rel=1e-9, nan_ok=True), k


def test_portfolio_bet_sizes_scale_each_symbols_entries():
    from btsys.backtest.portfolio import simulate_portfolio

    ts = np.arange(4, dtype=np.int64) * 3_600_000_000
    bars = {
        s: pd.DataFrame({"ts_close": ts, "open": px, "high": px, "low": px, "close": px})
        for s, px in (("AAA", np.array([10.0, 10, 12, 12])), ("BBB", np.array([20.0, 20, 20, 25])))
    }
    entries = {"AAA": np.array([True, False, False, False]), "BBB": np.array([True, False, False, False])}
    exits = {"AAA": np.array([False, False, True, False]), "BBB": np.array([False, False, False, True])}
    cfg = {
        "init_cash": 10_000.0,
        "fill": "close",
        "size": {"mode": "qty", "value": 10.0},
        "fees": {"taker": 0.0, "maker": 0.0},
        "slippage": {"bps": 0.0},
    }
    res = simulate_portfolio(
        bars, entries, exits, cfg, size_scale={"AAA": np.array([0.5, 1, 1, 1]), "BBB": None}
    )
    buys = res.orders[res.order_records["side"] == 1]
    got = {res.symbols[c]: q for c, q in zip(buys["col"], buys["size"], strict=True)}
    assert got == {"AAA": pytest.approx(5.0), "BBB": pytest.approx(10.0)}
    assert res.final_value == pytest.approx(10_000.0 + 5 * 2.0 + 10 * 5.0)


@pytest.mark.parametrize(
    "extra",
    [
        {"size": {"mode": "vol_target", "value": 0.4, "vol_window": 30}, "funding": True},
        {"size": {"mode": "percent", "value": 0.3}, "risk": {"trailing_stop": 0.02, "max_drawdown": 0.2}},
    ],
)
def test_portfolio_metrics_equal_metrics_from_arrays_and_one_symbol_equals_simulate(extra):
    """The portfolio kernel's streaming metrics equal the metrics of its equity and trades; with one
    symbol it equals simulate (vol_target sizing and funding included)."""
    from btsys.backtest.metrics import compute_metrics

    rng = np.random.default_rng(12)
    n = 600
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    h, lo = np.maximum(o, c) * 1.003, np.minimum(o, c) * 0.997
    ts = np.cumsum(rng.integers(1, 5, n)).astype(np.int64) * H
    df = pd.DataFrame({"ts_close": ts, "open": o, "high": h, "low": lo, "close": c, "volume": np.ones(n)})
    e, x, se, sx = (rng.random(n) < 0.05 for _ in range(4))
    fund = pd.DataFrame({"ts": ts[::7] + 1, "rate": rng.normal(0, 0.001, len(ts[::7]))})
    cfg = {"fees": {"taker": 0.001}, "direction": "both", **extra}
    pr = simulate_portfolio(
        {"BTC": df}, {"BTC": e}, {"BTC": x}, cfg, funding={"BTC": fund}, short_entries={"BTC": se},
        short_exits={"BTC": sx},
    )  # fmt: skip
    r = simulate_from_config(df, e, x, cfg, funding=fund, short_entries=se, short_exits=sx)
    assert len(r.orders) > 10
    np.testing.assert_allclose(pr.equity, r.equity, rtol=1e-13)  # sums associate differently
    for k, v in r.metrics.items():
        assert pr.metrics[k] == pytest.approx(v, rel=1e-9, nan_ok=True), k
    m = compute_metrics(
        pr.ts, pr.equity, 10_000.0, pr.trades, pr.position, pr.metrics["fees_paid"],
        pr.metrics["funding_paid"], float((pr.orders["size"] * pr.orders["price"]).sum()),
    )  # fmt: skip
    assert set(m) == set(METRIC_NAMES)  # the benchmark metrics come from metrics.benchmark_metrics
    for k in METRIC_NAMES:
        assert m[k] == pytest.approx(pr.metrics[k], rel=1e-9, nan_ok=True), k
