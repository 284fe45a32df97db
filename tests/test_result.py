"""pandas inputs, bar times, the result object (frames, stats, repr, plot) and benchmark metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from btsys.backtest import simulate
from btsys.backtest.enums import DAY_US
from btsys.backtest.inputs import NoCalendarWarning
from btsys.backtest.metrics import BENCHMARK_METRICS, CALENDAR_METRICS, buy_and_hold, daily_returns
from btsys.backtest.portfolio import simulate_portfolio
from btsys.backtest.sweep import sweep
from btsys.signals import generate_signals

H = 3_600_000_000
T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
KW = dict(fees=0.001, stop_loss=0.03, take_profit=0.05, direction="both")


def _bars(n=24 * 20, seed=3, step=H):
    rng = np.random.default_rng(seed)
    c = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.002, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.002, n)))
    ts = T0 + np.arange(n, dtype=np.int64) * step
    e, x = rng.random(n) < 0.04, rng.random(n) < 0.04
    return ts, o, h, lo, c, e, x


def _same(a, b):
    """Two results are the same backtest: arrays, records and metrics equal."""
    for k in ("ts", "equity", "cash", "position", "order_records", "trade_records", "benchmark_equity"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.metrics.keys() == b.metrics.keys()
    for k in a.metrics:
        assert a.metrics[k] == pytest.approx(b.metrics[k], rel=0, abs=0, nan_ok=True), k


# --------------------------------------------------------------------------- pandas inputs
def test_series_with_datetime_index_equals_arrays_with_ts():
    ts, o, h, lo, c, e, x = _bars()
    ref = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, **KW)
    idx = pd.to_datetime(ts, unit="us", utc=True)
    s = lambda a: pd.Series(a, index=idx)  # noqa: E731
    got = simulate(s(c), s(e), s(x), open=s(o), high=s(h), low=s(lo), **KW)
    _same(ref, got)
    # the same instants in another time zone, or naive (taken as UTC)
    _same(ref, simulate(pd.Series(c, idx.tz_convert("Asia/Tokyo")), e, x, open=o, high=h, low=lo, **KW))
    _same(ref, simulate(pd.Series(c, idx.tz_localize(None)), e, x, open=o, high=h, low=lo, **KW))


def test_bar_table_input_takes_its_columns_and_ts_close():
    ts, o, h, lo, c, e, x = _bars()
    bars = pd.DataFrame({"ts_close": ts, "open": o, "high": h, "low": lo, "close": c, "volume": 1.0})
    ref = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, volume=np.ones(len(c)), **KW)
    _same(ref, simulate(bars, e, x, **KW))
    # indexed by time instead of a ts_close column
    by_time = bars.drop(columns="ts_close").set_index(pd.to_datetime(ts, unit="us", utc=True))
    _same(ref, simulate(by_time, e, x, **KW))


def test_misaligned_pandas_signals_are_refused_not_realigned():
    ts, o, h, lo, c, e, x = _bars(n=50)
    idx = pd.to_datetime(ts, unit="us", utc=True)
    shifted = pd.Series(e, index=idx + pd.Timedelta("1h"))
    with pytest.raises(ValueError, match=r"`entries` is indexed differently from `close` \(row 0\)"):
        simulate(pd.Series(c, idx), shifted, x)
    with pytest.raises(ValueError, match="simulate: `close` is a DataFrame with columns"):
        simulate(pd.DataFrame({"A": c, "B": c}, index=idx), e, x)
    with pytest.raises(ValueError, match="`ts` has NaT at row 3"):
        simulate(pd.Series(c, idx.where(np.arange(50) != 3)), e, x)


def test_freq_spaces_bars_and_refuses_contradictions():
    ts, o, h, lo, c, e, x = _bars()
    ref = simulate(c, e, x, ts=np.arange(len(c), dtype=np.int64) * H, **KW)
    _same(ref, simulate(c, e, x, freq="1h", **KW))
    _same(ref, simulate(c, e, x, freq=pd.Timedelta(hours=1), **KW))
    with pytest.raises(ValueError, match="drop `freq='1h'`"):
        simulate(pd.Series(c, pd.to_datetime(ts, unit="us", utc=True)), e, x, freq="1h")
    with pytest.raises(ValueError, match="drop `freq='1h'`"):
        simulate(c, e, x, ts=ts, freq="1h")
    with pytest.raises(ValueError, match="freq='MS' is not a fixed bar spacing"):
        simulate(c, e, x, freq="MS")
    with pytest.raises(ValueError, match="positive bar spacing"):
        simulate(c, e, x, freq="0s")


def test_without_bar_times_nothing_is_annualised_per_bar():
    ts, o, h, lo, c, e, x = _bars()
    with pytest.warns(NoCalendarWarning, match="annual_return, sharpe"):
        r = simulate(c, e, x, **KW)
    timed = simulate(c, e, x, ts=ts, **KW)
    assert r.ts is None and isinstance(r.index, pd.RangeIndex)
    for k in r.metrics:
        if k in CALENDAR_METRICS:
            assert math.isnan(r.metrics[k]) and math.isfinite(timed.metrics[k]), k
        else:
            assert r.metrics[k] == pytest.approx(timed.metrics[k], nan_ok=True), k
    assert r.trades["entry_time"].isna().all() and r.orders["time"].isna().all()
    with pytest.raises(ValueError, match="'vol_target' annualises volatility and needs bar times"):
        simulate(c, e, x, size=0.5, size_mode="vol_target")
    with pytest.raises(ValueError, match="funding needs bar times"):
        simulate(c, e, x, funding_ts=[ts[5]], funding_rate=[0.001])
    with pytest.raises(ValueError, match=r"\['sharpe'\] need bar times"):
        r.stats(["total_return", "sharpe"])
    assert r.stats(["total_return"]).iloc[0] == pytest.approx(r.metrics["total_return"] * 100)


def test_sweep_takes_pandas_and_refuses_calendar_metrics_without_times():
    ts, o, h, lo, c, e, x = _bars()
    grid = {"fast": [5, 10], "slow": [30, 60]}
    ref = sweep(c, grid, open=o, high=h, low=lo, ts=ts, fees=0.001)
    idx = pd.to_datetime(ts, unit="us", utc=True)
    got = sweep(pd.Series(c, idx), grid, open=pd.Series(o, idx), high=h, low=lo, fees=0.001)
    pd.testing.assert_frame_equal(ref, got)
    with pytest.warns(NoCalendarWarning):
        plain = sweep(c, grid, open=o, high=h, low=lo, fees=0.001)
    for k in ref.columns:
        if k in CALENDAR_METRICS:
            assert plain[k].isna().all(), k
        else:
            np.testing.assert_allclose(plain[k], ref[k], err_msg=k)
    with pytest.raises(ValueError, match="daily_returns=True needs bar times"):
        sweep(c, grid, daily_returns=True)
    # a sweep row equals simulate on the same pandas input
    sig = generate_signals({"name": "ma_cross", "fast": 10, "slow": 60}, pd.DataFrame({"close": c}))
    r = simulate(pd.Series(c, idx), sig.entries, sig.exits, open=o, high=h, low=lo, fees=0.001)
    row = got[(got.fast == 10) & (got.slow == 60)].iloc[0]
    assert row["sharpe"] == pytest.approx(r.metrics["sharpe"], rel=1e-12)
    assert row["final_value"] == pytest.approx(r.final_value, rel=1e-12)


def test_portfolio_takes_wide_frames_and_series_by_time():
    ts, o, h, lo, c, e, x = _bars(n=300)
    c2 = c[::-1].copy()
    idx = pd.to_datetime(ts, unit="us", utc=True)
    tables = {
        "A": pd.DataFrame({"ts_close": ts, "open": c, "high": c, "low": c, "close": c}),
        "B": pd.DataFrame(
            {"ts_close": ts[50:], "open": c2[50:], "high": c2[50:], "low": c2[50:], "close": c2[50:]}
        ),
    }
    ref = simulate_portfolio(tables, {"A": e, "B": e[50:]}, {"A": x, "B": x[50:]}, {"fill": "close"})
    wide = pd.DataFrame({"A": c, "B": np.where(np.arange(300) >= 50, c2, np.nan)}, index=idx)
    ents = pd.DataFrame({"A": e, "B": e}, index=idx)
    exts = pd.DataFrame({"A": x, "B": x}, index=idx)
    _same(ref, simulate_portfolio(wide, ents, exts, fill="close"))
    short = pd.DataFrame({"A": e, "B": e}, index=idx[1:].append(idx[:1]))  # a bar time missing for A
    with pytest.raises(ValueError, match=r"`entries\['A'\]` has no value for bar"):
        simulate_portfolio(wide, short.iloc[:-1], exts, fill="close")


# --------------------------------------------------------------------------- benchmark
def test_buy_and_hold_equity_and_benchmark_return():
    ts, o, h, lo, c, e, x = _bars()
    r = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, init_cash=2_500.0, **KW)
    b = r.benchmark_equity
    assert b.dtype == np.float64 and b.shape == r.equity.shape and b[0] == 2_500.0
    np.testing.assert_allclose(b, 2_500.0 * c / c[0], rtol=1e-15)
    assert r.metrics["benchmark_return"] == pytest.approx(c[-1] / c[0] - 1, rel=1e-13)
    assert set(BENCHMARK_METRICS) <= set(r.metrics)


def test_fully_invested_from_the_first_close_matches_the_benchmark():
    """Bought at the first close without fees, the strategy is the benchmark: beta 1, alpha 0."""
    ts, o, h, lo, c, e, x = _bars()
    first = np.zeros(len(c), bool)
    first[0] = True
    r = simulate(c, first, np.zeros(len(c), bool), ts=ts, fill="close", fees=0, slippage=0)
    np.testing.assert_allclose(r.equity, r.benchmark_equity, rtol=1e-12)
    assert r.metrics["beta"] == pytest.approx(1.0, rel=1e-9)
    assert r.metrics["alpha"] == pytest.approx(0.0, abs=1e-9)
    assert r.metrics["benchmark_return"] == pytest.approx(r.metrics["total_return"], rel=1e-9)


def test_alpha_beta_information_ratio_against_pandas_resample():
    """Independent reference: last value per UTC day with pandas, empty days carried forward."""
    ts, o, h, lo, c, e, x = _bars(n=400, step=5 * H)  # 5 h bars: some days without bars
    r = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, **KW)

    def daily(values, start):
        s = pd.Series(values, pd.to_datetime(ts, unit="us", utc=True)).resample("1D").last().ffill()
        return s.pct_change().fillna(s.iloc[0] / start - 1).to_numpy()

    rs, rb = daily(r.equity, 10_000.0), daily(c, c[0])
    beta = np.cov(rs, rb)[0, 1] / np.var(rb, ddof=1)
    assert r.metrics["beta"] == pytest.approx(beta, rel=1e-9)
    assert r.metrics["alpha"] == pytest.approx((rs.mean() - beta * rb.mean()) * 365, rel=1e-9)
    a = rs - rb
    assert r.metrics["information_ratio"] == pytest.approx(
        a.mean() / a.std(ddof=1) * math.sqrt(365), rel=1e-9
    )
    # the same daily returns give the kernel's Sharpe: one definition
    d = daily_returns(ts, r.equity, 10_000.0)
    np.testing.assert_allclose(d, rs, rtol=1e-12, atol=1e-15)
    assert r.metrics["sharpe"] == pytest.approx(d.mean() / d.std(ddof=1) * math.sqrt(365), rel=1e-9)


def test_benchmark_has_no_look_ahead():
    """Truncating or perturbing future bars leaves the past benchmark unchanged."""
    ts, o, h, lo, c, e, x = _bars()
    full = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, **KW)
    k = 200
    cut = simulate(c[:k], e[:k], x[:k], open=o[:k], high=h[:k], low=lo[:k], ts=ts[:k], **KW)
    np.testing.assert_array_equal(full.benchmark_equity[:k], cut.benchmark_equity)
    c2 = c.copy()
    c2[k:] *= 1.5
    o2, h2, lo2 = o.copy(), h.copy(), lo.copy()
    for a in (o2, h2, lo2):
        a[k:] *= 1.5
    moved = simulate(c2, e, x, open=o2, high=h2, low=lo2, ts=ts, **KW)
    np.testing.assert_array_equal(moved.benchmark_equity[:k], full.benchmark_equity[:k])


def test_portfolio_benchmark_is_equal_weight_from_each_symbols_first_bar():
    ts = T0 + np.arange(6, dtype=np.int64) * DAY_US
    a = pd.DataFrame({"ts_close": ts, "close": [100.0, 110, 120, 130, 140, 150]})
    b = pd.DataFrame({"ts_close": ts[2:], "close": [50.0, 25, 75, 100]})
    for t in (a, b):
        t["open"] = t["high"] = t["low"] = t["close"]
    no = {"A": np.zeros(6, bool), "B": np.zeros(4, bool)}
    r = simulate_portfolio({"A": a, "B": b}, no, no, init_cash=1_000.0)
    half = 500.0
    want = half * a["close"].to_numpy() / 100 + np.r_[half, half, half * np.array([50, 25, 75, 100]) / 50]
    np.testing.assert_allclose(r.benchmark_equity, want, rtol=1e-14)
    assert r.metrics["benchmark_return"] == pytest.approx(want[-1] / 1_000 - 1)
    np.testing.assert_allclose(buy_and_hold(r.close, 1_000.0, np.array([3])), want[3:4])


# --------------------------------------------------------------------------- readable result
def test_orders_and_trades_frames_have_times_and_names():
    ts, o, h, lo, c, e, x = _bars()
    r = simulate(pd.Series(c, pd.to_datetime(ts, unit="us", utc=True)), e, x, open=o, high=h, low=lo, **KW)
    od, tr = r.orders, r.trades
    assert (
        str(od["time"].dtype) == "datetime64[ns, UTC]"
        and str(tr["entry_time"].dtype) == "datetime64[ns, UTC]"
    )
    np.testing.assert_array_equal(od["time"].astype("int64") // 1000, ts[r.order_records["idx"]])
    assert (
        set(od["side"]) == {"buy", "sell"}
        and (od["side"] == "buy").sum() == (r.order_records["side"] == 1).sum()
    )
    assert {"entry", "exit_signal", "stop_loss"} <= set(od["reason"])
    assert set(tr["direction"]) == {"long", "short"}
    assert set(tr["exit_reason"]) <= {"exit_signal", "stop_loss", "take_profit", "open"}
    assert (tr["exit_reason"] == "open").sum() == tr["is_open"].sum()
    assert (tr["duration"] == tr["exit_time"] - tr["entry_time"]).all()


def test_stats_is_a_labelled_series_of_the_metrics():
    ts, o, h, lo, c, e, x = _bars()
    r = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, **KW)
    s = r.stats()
    m = r.metrics
    assert isinstance(s, pd.Series)
    assert s["Start"] == pd.Timestamp(T0, unit="us", tz="UTC")
    assert s["Period"] == pd.Timedelta(microseconds=int(ts[-1] - ts[0]))
    assert s["Total Return [%]"] == pytest.approx(m["total_return"] * 100)
    assert s["Benchmark Return [%]"] == pytest.approx(m["benchmark_return"] * 100)
    assert s["Max Drawdown [%]"] == pytest.approx(-r.drawdown.min() * 100, rel=1e-12)
    assert s["Sharpe Ratio"] == m["sharpe"] and s["Beta"] == m["beta"]
    assert s["Total Trades"] == int(m["n_trades"]) and s["End Value"] == r.final_value
    closed = r.trades[~r.trades["is_open"]]
    assert s["Best Trade [%]"] == pytest.approx(closed["return"].max() * 100)
    assert s["Max Drawdown Duration"] == pd.Timedelta(days=m["max_drawdown_duration"]).round("us")
    with pytest.raises(KeyError, match="unknown metric"):
        r.stats(["sharp"])


def test_repr_is_one_short_line():
    ts, o, h, lo, c, e, x = _bars(n=5000)
    r = simulate(c, e, x, ts=np.arange(5000, dtype=np.int64) * H + T0, **KW)
    text = repr(r)
    assert "\n" not in text and len(text) < 250
    assert "5,000 bars" in text and "2025-01-01 00:00" in text and f"{r.metrics['total_return']:+.2%}" in text


def test_plot_panels_hold_the_result():
    ts, o, h, lo, c, e, x = _bars()
    r = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, **KW)
    fig = r.plot()
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_array_equal(by_name["price"].y, c)
    np.testing.assert_array_equal(by_name["strategy"].y, r.equity)
    np.testing.assert_array_equal(by_name["buy & hold"].y, r.benchmark_equity)
    assert min(by_name["drawdown"].y) == pytest.approx(-r.metrics["max_drawdown"] * 100, rel=1e-12)
    markers = sum(len(t.x) for t in fig.data if t.name.startswith(("entry", "exit")))
    assert markers == len(r.orders)
    assert pd.Timestamp(by_name["strategy"].x[0]) == pd.Timestamp(T0, unit="us", tz="UTC")


def test_portfolio_plot_shows_one_symbols_price_and_fills():
    ts, o, h, lo, c, e, x = _bars(n=300)
    idx = pd.to_datetime(ts, unit="us", utc=True)
    wide = pd.DataFrame({"A": c, "B": c[::-1]}, index=idx)
    sig = pd.DataFrame({"A": e, "B": x}, index=idx)
    r = simulate_portfolio(wide, sig, sig.shift(2, fill_value=False), fill="close")
    fig = r.plot(symbol="B")
    np.testing.assert_array_equal(fig.data[0].y, c[::-1])
    markers = sum(len(t.x) for t in fig.data if t.name.startswith(("entry", "exit")))
    assert markers == (r.orders["symbol"] == "B").sum() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a portfolio has times: no warning
        repr(r)
