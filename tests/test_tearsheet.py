"""Tearsheet content and chart helpers: number formats, names, drawdown periods, short runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_report_helpers import HOUR_US, T0, make_result, prices

from btsys.backtest.enums import DAY_US
from btsys.backtest.metrics import period_returns
from btsys.report import charts
from btsys.report.drawdowns import drawdown_periods
from btsys.report.tearsheet import duration_text, fmt_value, render_tearsheet, trades_view

MIN5_US = DAY_US // 288


# --------------------------------------------------------------------------- price precision
@pytest.mark.parametrize(
    "grid, decimals",
    [(0.01, 2), (0.001, 3), (0.00001, 5), (1.0, 0), (0.5, 1), (0.25, 2)],
)
def test_price_decimals_follow_the_instrument_grid(grid, decimals):
    rng = np.random.default_rng(3)
    p = np.round(rng.uniform(0.1, 90_000.0, 5000) / grid) * grid  # float products of the grid
    assert charts.price_decimals(p) == decimals


def test_price_decimals_of_unrounded_prices_is_the_cap():
    p = 100.0 * np.exp(np.random.default_rng(1).normal(0, 0.01, 500).cumsum())
    assert charts.price_decimals(p) == 8
    assert charts.price_decimals(p, max_decimals=4) == 4


# --------------------------------------------------------------------------- contrast
@pytest.mark.parametrize(
    "cmap, x, colour",
    [("RdYlGn", 0.0, "white"), ("RdYlGn", 0.5, "black"), ("RdYlGn", 1.0, "white"), ("viridis", 0.0, "white"),
     ("viridis", 1.0, "black")],
)  # fmt: skip
def test_heatmap_text_contrasts_with_its_cell(cmap, x, colour):
    import matplotlib

    assert charts.text_colour(matplotlib.colormaps[cmap](x)) == colour


# --------------------------------------------------------------------------- short runs
def test_return_period_is_daily_for_long_runs_and_finer_for_short_ones():
    day = T0 + np.arange(120, dtype=np.int64) * DAY_US
    assert charts.return_period(day) == (DAY_US, "daily")
    ten_days = T0 + np.arange(240, dtype=np.int64) * HOUR_US
    assert charts.return_period(ten_days) == (HOUR_US, "hourly")
    six_hours = T0 + np.arange(360, dtype=np.int64) * 60_000_000
    assert charts.return_period(six_hours) == (MIN5_US, "5-minute")


def test_period_returns_known_values_and_empty_buckets():
    # bars at 00:10, 00:50, 02:30 (no bar in hour 1): hours 0, 1, 2 -> equity 100 -> 110, 110, 99
    ts = T0 + np.array([10, 50, 150], dtype=np.int64) * 60_000_000
    starts, r = period_returns(ts, np.array([100.0, 110.0, 99.0]), 100.0, HOUR_US)
    np.testing.assert_array_equal(starts, T0 + np.arange(3, dtype=np.int64) * HOUR_US)
    np.testing.assert_allclose(r, [0.10, 0.0, -0.10])


def test_period_returns_and_rolling_sharpe_have_no_look_ahead():
    ts, close = prices(24 * 12, 4)
    eq = 1e4 * close / close[0]
    cut = 24 * 7
    full = period_returns(ts, eq, 1e4, HOUR_US)[1]
    part = period_returns(ts[:cut], eq[:cut], 1e4, HOUR_US)[1]
    np.testing.assert_array_equal(full[:cut], part)
    perturbed = eq.copy()
    perturbed[cut:] *= 1.5  # a different future
    a = charts.rolling_sharpe_series(ts, eq, 1e4, 48, HOUR_US)
    b = charts.rolling_sharpe_series(ts, perturbed, 1e4, 48, HOUR_US)
    np.testing.assert_array_equal(a.iloc[:cut].to_numpy(), b.iloc[:cut].to_numpy())
    assert not np.allclose(a.iloc[cut + 1 :].to_numpy(), b.iloc[cut + 1 :].to_numpy(), equal_nan=True)


def test_rolling_sharpe_of_a_ten_day_run_spans_whole_days():
    ts, close = prices(24 * 10, 5)
    period, _ = charts.return_period(ts)
    n = len(period_returns(ts, close, close[0], period)[1])
    w = charts.rolling_window(n, period)
    assert period == HOUR_US and w == 48  # 2 days of hourly returns, not a 3-day window of 10 days
    assert charts.rolling_sharpe_series(ts, close, close[0], w, period).notna().sum() == n - w + 1


def test_returns_histogram_leaves_out_flat_periods():
    ts = T0 + np.arange(24 * 10, dtype=np.int64) * HOUR_US
    eq = np.full(len(ts), 1e4)
    eq[100:130] = 1e4 * np.cumprod(1 + np.linspace(-0.01, 0.01, 30))  # in the market for 30 hours
    r, flat, name = charts.histogram_returns(ts, eq, 1e4)
    assert name == "hourly"
    assert flat + len(r) == len(ts) and len(r) == 31 and np.all(r != 0)  # one return per hour


# --------------------------------------------------------------------------- drawdown periods
def test_drawdown_periods_known_values():
    ts = T0 + np.arange(8, dtype=np.int64) * DAY_US
    eq = np.array([100, 90, 95, 100, 120, 60, 90, 80.0])
    d = drawdown_periods(ts, eq, start_value=100.0)
    assert list(d["depth"]) == pytest.approx([0.5, 0.1])
    deep, small = d.iloc[0], d.iloc[1]
    assert (deep["peak"], deep["trough"], deep["recovery"], bool(deep["recovered"])) == (
        ts[4],
        ts[5],
        ts[7],
        False,
    )
    assert (small["peak"], small["trough"], small["recovery"], bool(small["recovered"])) == (
        ts[0],
        ts[1],
        ts[3],
        True,
    )
    assert list(d["days"]) == [3.0, 3.0] and list(d["days_to_trough"]) == [1.0, 1.0]
    # start value above the first bar: the first period starts before the first bar (dated ts[0])
    d = drawdown_periods(ts[:2], np.array([95.0, 96.0]), start_value=100.0)
    assert d["depth"].iloc[0] == pytest.approx(0.05) and not d["recovered"].iloc[0]


@pytest.mark.parametrize("seed", range(4))
def test_deepest_and_longest_period_are_the_engine_metrics(seed):
    r = make_result(10, 50, n=24 * 40, seed=seed)
    d = drawdown_periods(r.ts, r.equity, r.init_cash)
    assert d["depth"].max() == pytest.approx(r.metrics["max_drawdown"], rel=1e-12)
    assert d["days"].max() == pytest.approx(r.metrics["max_drawdown_duration"], rel=1e-12)


def test_recovered_drawdown_periods_do_not_change_with_the_future():
    r = make_result(10, 50, n=24 * 40, seed=2)
    full = drawdown_periods(r.ts, r.equity, r.init_cash)
    cut = len(r.ts) // 2
    part = drawdown_periods(r.ts[:cut], r.equity[:cut], r.init_cash)
    done = part[part["recovered"]].sort_values("peak").reset_index(drop=True)
    same = full[full["peak"].isin(done["peak"])].sort_values("peak").reset_index(drop=True)
    pd.testing.assert_frame_equal(done, same)


# --------------------------------------------------------------------------- formats and names
def test_fmt_value_by_what_the_key_measures():
    assert fmt_value("total_return", -0.0519) == "-5.19%"
    assert fmt_value("max_drawdown", 0.1088) == "10.88%"
    assert fmt_value("BTCUSDT.oos_total_return_w003", 0.25) == "+25.00%"
    assert fmt_value("sharpe", -3.35731) == "-3.36"
    assert fmt_value("fees_paid", 12345.678) == "12,345.68"
    assert fmt_value("n_trades", 20.0) == "20"
    assert fmt_value("max_drawdown_duration", 5.66) == "5.7 days"
    assert fmt_value("open_position", 1.0) == "yes"
    assert fmt_value("profit_factor", float("inf")) == "inf"
    assert fmt_value("calmar", float("nan")) == "n/a"
    assert fmt_value("alpha", 0.0123) == "+1.23%"
    assert duration_text(3 * 86400 + 4 * 3600 + 20 * 60) == "3d 04:20"
    assert duration_text(5 * 3600 + 20 * 60) == "5h 20m" and duration_text(45 * 60) == "45m"


def _trades(symbols=False):
    t = pd.DataFrame(
        {
            "entry_idx": [0, 5],
            "exit_idx": [3, 9],
            "entry_time": pd.to_datetime([T0, T0 + 5 * HOUR_US], unit="us", utc=True),
            "exit_time": pd.to_datetime(
                [T0 + 3 * HOUR_US + 20 * 60_000_000, T0 + 9 * HOUR_US], unit="us", utc=True
            ),
            "direction": ["long", "short"],
            "size": [0.0123456789, 0.5],
            "entry_price": [86321.45, 3321.5],
            "exit_price": [86000.1, 3300.25],
            "pnl": [-3.95, 10.6],
            "return": [-0.0037, 0.0064],
            "duration_bars": [3, 4],
            "fees": [1.06, 1.66],
            "funding": [0.0, 0.0],
            "is_open": [False, True],
            "exit_reason": ["stop_loss", "open"],
        }
    )
    if symbols:
        t.insert(0, "col", [0, 1])
        t.insert(1, "symbol", ["BTCUSDT", "ETHUSDT"])
    return t


def test_trades_view_names_codes_and_formats_prices_per_instrument():
    view, cls = trades_view(_trades(symbols=True), {"BTCUSDT": 2, "ETHUSDT": 3})
    assert list(view["side"]) == ["long", "short"]
    assert list(view["exit"]) == ["stop loss", "open (marked at the last close)"]
    assert list(view["entry price"]) == ["86,321.45", "3,321.500"]
    assert list(view["entry (UTC)"]) == ["2025-01-01 00:00", "2025-01-01 05:00"]
    assert list(view["held"]) == ["3h 20m", "4h 00m"]
    assert list(view["pnl"]) == ["-3.95", "+10.60"] and list(cls["pnl"]) == ["neg", "pos"]
    assert "entry_idx" not in view and "col" not in view and "is_open" not in view


def test_tearsheet_formats_benchmark_drawdowns_and_trades():
    n = 24 * 60
    ts, close = prices(n, 7, tick=0.01)
    r = make_result(10, 50, n=n, seed=7, tick=0.01)
    px = {"BTCUSDT": (ts, close)}
    page = render_tearsheet(r, charts.render_charts(r, prices=px), prices=px)  # simulate's benchmark
    assert page.count('src="data:image/png;base64,') == len(charts.CHART_NAMES)
    for label in ("buy and hold return", "alpha", "beta", "information ratio"):
        assert f'<div class="n">{label}</div>' in page
    assert "Drawdown periods" in page and page.count("not recovered") <= 1
    table = page[page.index("<h2>Trades") :]
    first = r.trades.iloc[0]
    assert f">{first['entry_price']:,.2f}<" in table  # the instrument's 0.01 grid: two decimals
    assert f">{first['exit_price']:,.3f}<" not in table
    assert table.count(">long<") == len(r.trades) and ">1<" not in table  # names, not direction codes
