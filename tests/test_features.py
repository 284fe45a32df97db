"""Feature library: hand-computed values, no look-ahead for every feature, validation, cached stage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from btsys.features import (
    FEATURES,
    FeatureError,
    compute_feature,
    compute_features,
    parse_feature_name,
)


def random_bars(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A small, plausible bar table (docs/DESIGN.md columns) from a seeded random walk."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, n)))
    volume = rng.uniform(1.0, 10.0, n)
    buy = volume * rng.uniform(0.0, 1.0, n)
    ts = 1_735_689_600_000_000 + np.cumsum(rng.integers(1_000_000, 60_000_000, n)).astype(np.int64)
    return pd.DataFrame(
        {
            "ts_open": ts,
            "ts_close": ts + 999_999,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "quote_volume": volume * close,
            "buy_volume": buy,
            "n_ticks": rng.integers(1, 100, n).astype(np.int64),
            "vwap": (high + low + close) / 3,
        }
    )


def bars_from(close, open_=None, high=None, low=None, volume=None, quote_volume=None, buy_volume=None):
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    one = np.ones(n)
    return pd.DataFrame(
        {
            "ts_open": np.arange(n, dtype=np.int64) * 1_000_000,
            "ts_close": np.arange(n, dtype=np.int64) * 1_000_000 + 1,
            "open": close if open_ is None else np.asarray(open_, float),
            "high": close if high is None else np.asarray(high, float),
            "low": close if low is None else np.asarray(low, float),
            "close": close,
            "volume": one if volume is None else np.asarray(volume, float),
            "quote_volume": close if quote_volume is None else np.asarray(quote_volume, float),
            "buy_volume": 0.5 * one if buy_volume is None else np.asarray(buy_volume, float),
            "n_ticks": np.ones(n, dtype=np.int64),
            "vwap": close,
        }
    )


NAN = np.nan
E = math.e


# --------------------------------------------------------------------------- known values
@pytest.mark.parametrize(
    "fn,window,params,bars,expected",
    [
        ("sma", 3, {}, bars_from([1, 2, 3, 4, 5]), [NAN, NAN, 2, 3, 4]),
        # alpha = 0.5, seed = mean(1,2,3) = 2; 0.5*10 + 0.5*2 = 6; 0.5*2 + 0.5*6 = 4
        ("ema", 3, {}, bars_from([1, 2, 3, 10, 2]), [NAN, NAN, 2, 6, 4]),
        ("log_return", 1, {}, bars_from([1, E, E**3]), [NAN, 1, 2]),
        ("log_return", 2, {}, bars_from([1, E, E**3]), [NAN, NAN, 3]),
        # r = [nan, 1, 2, 0]: sqrt((1+4)/2), sqrt((4+0)/2)
        ("realized_vol", 2, {}, bars_from([1, E, E**3, E**3]), [NAN, NAN, math.sqrt(2.5), math.sqrt(2)]),
        (
            "realized_vol",
            2,
            {"periods_per_year": 4.0},
            bars_from([1, E, E**3, E**3]),
            [NAN, NAN, 2 * math.sqrt(2.5), 2 * math.sqrt(2)],
        ),
        # changes +1 +1 -1 +1 +1 -> RS = inf, 1, 3, 7 (Wilder smoothing with w = 2)
        ("rsi", 2, {}, bars_from([1, 2, 3, 2, 3, 4]), [NAN, NAN, 100, 50, 75, 87.5]),
        # TR = [2, 2, 3]; ATR1 = mean(2, 2) = 2; ATR2 = (2*1 + 3)/2
        ("atr", 2, {}, bars_from([2, 3, 5], high=[3, 4, 6], low=[1, 2, 3]), [NAN, 2, 2.5]),
        ("atr", 2, {"relative": 1.0}, bars_from([2, 3, 5], high=[3, 4, 6], low=[1, 2, 3]), [NAN, 2 / 3, 0.5]),
        ("bb_mid", 3, {}, bars_from([1, 2, 3]), [NAN, NAN, 2]),
        ("bb_upper", 3, {"k": 2.0}, bars_from([1, 2, 3]), [NAN, NAN, 2 + 2 * math.sqrt(2 / 3)]),
        ("bb_lower", 3, {"k": 1.0}, bars_from([1, 2, 3]), [NAN, NAN, 2 - math.sqrt(2 / 3)]),
        # (3 - lower) / (upper - lower) with upper/lower = 2 +/- sqrt(2/3)
        (
            "bb_pctb",
            3,
            {"k": 1.0},
            bars_from([1, 2, 3]),
            [NAN, NAN, (1 + math.sqrt(2 / 3)) / (2 * math.sqrt(2 / 3))],
        ),
        ("bb_width", 3, {"k": 1.0}, bars_from([1, 2, 3]), [NAN, NAN, math.sqrt(2 / 3)]),
        ("parkinson_vol", 1, {}, bars_from([1.0], high=[E], low=[1.0]), [math.sqrt(1 / (4 * math.log(2)))]),
        (
            "garman_klass_vol",
            1,
            {},
            bars_from([E**0.5], open_=[1.0], high=[E], low=[1.0]),
            [math.sqrt(0.5 - (2 * math.log(2) - 1) * 0.25)],
        ),
        # ema2 = [., 1.5, 2.5, 7.5, 23/6], ema3 = [., ., 2, 6, 4]
        ("macd", 3, {"fast": 2.0}, bars_from([1, 2, 3, 10, 2]), [NAN, NAN, 0.5, 1.5, -1 / 6]),
        # signal: seed mean(0.5, 1.5) = 1; then 2/3 * (-1/6) + 1/3 * 1 = 2/9
        (
            "macd_signal",
            3,
            {"fast": 2.0, "signal": 2.0},
            bars_from([1, 2, 3, 10, 2]),
            [NAN, NAN, NAN, 1.0, 2 / 9],
        ),
        (
            "macd_hist",
            3,
            {"fast": 2.0, "signal": 2.0},
            bars_from([1, 2, 3, 10, 2]),
            [NAN, NAN, NAN, 0.5, -1 / 6 - 2 / 9],
        ),
        # rolling vwap = (10 + 30) / (1 + 2); close 15 -> 15 * 3 / 40 - 1
        ("vwap_dev", 2, {}, bars_from([5, 15], volume=[1, 2], quote_volume=[10, 30]), [NAN, 0.125]),
        ("taker_buy_ratio", 2, {}, bars_from([1, 1], volume=[2, 3], buy_volume=[1, 1]), [NAN, 0.4]),
        ("ofi", 2, {}, bars_from([1, 1], volume=[2, 3], buy_volume=[1, 1]), [NAN, -0.2]),  # (0 - 1) / 5
        ("vpin", 2, {}, bars_from([1, 1], volume=[2, 3], buy_volume=[1, 1]), [NAN, 0.2]),  # (0 + 1) / 5
        # dC = [., 1, 3]; signed volume 2B - V = [., 1, 2] -> slope (3 - 1) / (2 - 1)
        ("kyle_lambda", 2, {}, bars_from([1, 2, 5], volume=[1, 1, 2], buy_volume=[0, 1, 2]), [NAN, NAN, 2.0]),
        # |r| = [., 1, 1], quote volume [., 2, 4] -> mean(1/2, 1/4)
        ("amihud", 2, {"scale": 1.0}, bars_from([1, E, 1], quote_volume=[1, 2, 4]), [NAN, NAN, 0.375]),
        # dC = [., 1, -1, 1, -1]; pairs (dC_t, dC_t-1) = (-1, 1), (1, -1), (-1, 1): cov = -2 (ddof 1)
        (
            "roll_spread",
            2,
            {},
            bars_from([10, 11, 10, 11, 10]),
            [NAN, NAN, NAN, 2 * math.sqrt(2), 2 * math.sqrt(2)],
        ),
    ],
)
def test_known_values(fn, window, params, bars, expected):
    got = compute_feature(bars, fn, window, params)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float64), rtol=1e-12, atol=1e-12)


def test_roll_spread_is_zero_for_trending_prices():
    got = compute_feature(bars_from([1, 2, 4, 7, 11, 16]), "roll_spread", 3)
    assert np.all(got[4:] == 0.0)


# --------------------------------------------------------------------------- look-ahead
@pytest.mark.parametrize("fn", sorted(FEATURES))
def test_no_look_ahead(fn):
    """Values at or before t depend only on bars <= t: drop or change everything after t."""
    bars = random_bars(260, seed=3)
    params = {k: v for k, v in {"fast": 5.0, "signal": 4.0}.items() if k in FEATURES[fn].params}
    window = 12
    full = compute_feature(bars, fn, window, params)
    assert np.isfinite(full[60:]).all(), f"{fn} has NaN after the warm-up"
    for t in (40, 130, 258):
        cut = compute_feature(bars.iloc[: t + 1].reset_index(drop=True), fn, window, params)
        np.testing.assert_array_equal(cut, full[: t + 1])
        changed = bars.copy()
        other = random_bars(260, seed=99)
        for c in ["open", "high", "low", "close", "volume", "quote_volume", "buy_volume"]:
            changed.loc[t + 1 :, c] = other.loc[t + 1 :, c] * 1.7
        alt = compute_feature(changed, fn, window, params)
        np.testing.assert_array_equal(alt[: t + 1], full[: t + 1])
        if t + 1 < len(bars):
            assert not np.array_equal(alt[t + 1 :], full[t + 1 :], equal_nan=True), (
                "perturbation had no effect"
            )


def test_long_series_matches_pandas_rolling():
    """Drift control of the running sums: 10k bars against pandas' rolling mean and std."""
    bars = random_bars(10_000, seed=5)
    c = bars["close"]
    np.testing.assert_allclose(compute_feature(bars, "sma", 50), c.rolling(50).mean(), rtol=1e-10)
    np.testing.assert_allclose(
        compute_feature(bars, "bb_upper", 50, {"k": 2.0}),
        c.rolling(50).mean() + 2 * c.rolling(50).std(ddof=0),
        rtol=1e-10,
    )
    np.testing.assert_allclose(compute_feature(bars, "ema", 30), _ema_reference(c.to_numpy(), 30), rtol=1e-10)
    dp = c.diff()
    sv = 2 * bars["buy_volume"] - bars["volume"]
    np.testing.assert_allclose(
        compute_feature(bars, "kyle_lambda", 40), dp.rolling(40).cov(sv) / sv.rolling(40).var(), rtol=1e-8
    )
    roll = 2 * np.sqrt((-dp.rolling(40).cov(dp.shift(1))).clip(lower=0))
    np.testing.assert_allclose(compute_feature(bars, "roll_spread", 40), roll, rtol=1e-7, atol=1e-12)


def test_rolling_std_at_large_price_offsets():
    """BTC-like levels (1e5) with tiny moves: the one-pass updates must not cancel."""
    rng = np.random.default_rng(1)
    from btsys.features import _nb

    x = 1e5 + np.cumsum(rng.normal(0, 0.01, 9000))
    exact = np.lib.stride_tricks.sliding_window_view(x, 25).std(axis=1)  # two-pass per window
    got = _nb.rolling_std_nb(x, 25, 0)
    assert np.isnan(got[:24]).all()
    np.testing.assert_allclose(got[24:], exact, rtol=1e-8)


def test_kyle_lambda_is_nan_for_constant_signed_volume():
    got = compute_feature(
        bars_from(np.linspace(1, 2, 30), volume=np.full(30, 2.0), buy_volume=np.full(30, 1.5)),
        "kyle_lambda",
        5,
    )
    assert np.isnan(got).all()


def _ema_reference(x, w):
    out = np.full(len(x), np.nan)
    out[w - 1] = x[:w].mean()
    a = 2 / (w + 1)
    for i in range(w, len(x)):
        out[i] = a * x[i] + (1 - a) * out[i - 1]
    return out


# --------------------------------------------------------------------------- frame and validation
def test_compute_features_adds_float64_columns():
    bars = random_bars(100)
    specs = [
        {"name": "rsi_14", "fn": "rsi", "window": 14},
        {"name": "bbp", "fn": "bb_pctb", "window": 20, "params": {"k": 1.5}},
    ]
    out = compute_features(bars, specs)
    assert list(out.columns) == list(bars.columns) + ["rsi_14", "bbp"]
    assert out["rsi_14"].dtype == np.float64 and out["bbp"].dtype == np.float64
    pd.testing.assert_frame_equal(out[bars.columns], bars)


def test_compute_features_accepts_hydra_nodes():
    """The composed ``features`` group (typed FeatureSpec nodes) is accepted as is."""
    import os

    from hydra import compose, initialize_config_dir

    import btsys.config  # noqa: F401  (registers the schemas)

    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        cfg = compose(config_name="config")
    out = compute_features(random_bars(60), cfg.features.specs)
    names = [s.name for s in cfg.features.specs]
    assert names and all(out[n].dtype == np.float64 for n in names)


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"name": "x", "fn": "nope", "window": 3}, "unknown fn 'nope'"),
        ({"name": "x", "fn": "sma", "window": 0}, "window must be an integer"),
        ({"name": "x", "fn": "sma", "window": 2.5}, "window must be an integer"),
        ({"name": "x", "fn": "sma", "window": 3, "params": {"k": 2}}, r"unknown params \['k'\]"),
        ({"name": "x", "fn": "bb_upper", "window": 3, "params": {"k": "wide"}}, "params.k must be a number"),
        ({"name": "close", "fn": "sma", "window": 3}, "clashes with a bar-table column"),
        ({"name": "a b", "fn": "sma", "window": 3}, "name must be an identifier"),
        ({"name": "m", "fn": "macd", "window": 5, "params": {"fast": 9}}, "params.fast=9 must be"),
    ],
)
def test_bad_specs_are_named(spec, match):
    with pytest.raises(FeatureError, match=match):
        compute_features(random_bars(50), [spec])


def test_duplicate_names_and_bad_bars():
    with pytest.raises(FeatureError, match="duplicate name 'a'"):
        compute_features(random_bars(50), [{"name": "a", "fn": "sma", "window": 3}] * 2)
    bars = random_bars(50)
    bars.loc[17, "close"] = np.nan
    with pytest.raises(FeatureError, match="column 'close' has a non-finite value at row 17"):
        compute_features(bars, [{"name": "a", "fn": "sma", "window": 3}])
    with pytest.raises(FeatureError, match="no column 'buy_volume'"):
        compute_features(
            random_bars(50).drop(columns=["buy_volume"]), [{"name": "a", "fn": "vpin", "window": 3}]
        )
    shuffled = random_bars(50).iloc[::-1].reset_index(drop=True)
    with pytest.raises(FeatureError, match="not ordered by ts_open at row 1"):
        compute_features(shuffled, [{"name": "a", "fn": "sma", "window": 3}])


def test_parse_feature_name():
    s = parse_feature_name("bb_upper_20")
    assert (s.fn, s.window, s.params) == ("bb_upper", 20, {"k": 2.0})
    assert parse_feature_name("sma_200").window == 200
    assert parse_feature_name("close") is None and parse_feature_name("foo_3") is None


# --------------------------------------------------------------------------- cached stage
def test_features_stage_reads_bars_and_is_cached(tmp_path):
    import pyarrow as pa

    from btsys.stages.cache import cached, stage_key
    from btsys.stages.features import build as compute_features_stage
    from btsys.storage import LocalStorage

    store = LocalStorage(str(tmp_path / "store"))
    symbols = {}
    for i, sym in enumerate(["BTCUSDT", "ETHUSDT"]):
        path = f"cache/bars/k/a/symbol={sym}/bars.parquet"
        store.write_parquet(pa.Table.from_pandas(random_bars(80, seed=i), preserve_index=False), path)
        symbols[sym] = {"path": path, "n_bars": 80}
    bars_entry = cached(store, "bars", "k", lambda prefix: {"symbols": symbols})
    cfg = {"specs": [{"name": "rsi_14", "fn": "rsi", "window": 14, "params": {}}]}
    calls = []

    def build(prefix):
        calls.append(prefix)
        return compute_features_stage(cfg, store, bars_entry, prefix)

    key = stage_key("features", cfg, bars_entry.key)
    e1 = cached(store, "features", key, build)
    e2 = cached(store, "features", key, build)
    assert len(calls) == 1 and e2.hit and e2.prefix == e1.prefix
    assert set(e1.meta["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    info = e1.meta["symbols"]["ETHUSDT"]
    assert info["n_bars"] == 80 and info["path"] == f"{e1.prefix}/symbol=ETHUSDT/features.parquet"
    frame = store.read_parquet(info["path"]).to_pandas()
    np.testing.assert_array_equal(frame["rsi_14"], compute_feature(random_bars(80, seed=1), "rsi", 14))
    assert frame["ts_open"].dtype == np.int64


def test_features_stage_names_the_symbol_on_bad_bars(tmp_path):
    import pyarrow as pa

    from btsys.stages.cache import CacheEntry
    from btsys.stages.features import build as compute_features_stage
    from btsys.storage import LocalStorage

    store = LocalStorage(str(tmp_path))
    bad = random_bars(30)
    bad.loc[5, "high"] = -1.0
    store.write_parquet(pa.Table.from_pandas(bad, preserve_index=False), "b/x.parquet")
    entry = CacheEntry("bars", "k", "b", {"symbols": {"SOLUSDT": {"path": "b/x.parquet", "n_bars": 30}}})
    with pytest.raises(FeatureError, match=r"SOLUSDT .*x.parquet.*'high' has a non-positive price at row 5"):
        compute_features_stage({"specs": [{"name": "a", "fn": "atr", "window": 3}]}, store, entry, "f")
    assert not store.exists("f")
