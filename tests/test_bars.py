"""build_bars / BarStream in memory: equal to the single-pass reference bit for bit, however the
stream is cut; edge cases; clear errors; no look-ahead."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bars_reference import (
    BINANCE_CM_DAY,
    DAY_US,
    T0,
    assert_bars_equal,
    gen_ticks,
    read_cm_day,
    ref_bars,
    to_arrow,
)

from btsys.bars import BarsConfigError, BarsInputError, BarSpec, BarStream, build_bars

# (kind, options) covering every kind and threshold mode; thresholds sized for ~10-30 ticks per bar
CASES = {
    "dollar": ("dollar", dict(threshold=1500.0)),
    "volume": ("volume", dict(threshold=12.0)),
    "tick": ("tick", dict(threshold=7.0)),
    "dollar_dyn": (
        "dollar",
        dict(threshold=1500.0, threshold_mode="dynamic", bars_per_day=40.0, lookback_days=2),
    ),
    "volume_dyn_fixed_warmup": (
        "volume",
        dict(threshold=10.0, threshold_mode="dynamic", bars_per_day=25.0, lookback_days=2, warmup="fixed"),
    ),
    "tick_dyn": ("tick", dict(threshold=5.0, threshold_mode="dynamic", bars_per_day=30.0, lookback_days=3)),
    "time_1h": ("time", dict(interval="1h")),
    "time_7m": ("time", dict(interval="7min")),
    "tick_imbalance": (
        "tick_imbalance",
        dict(expected_ticks_init=20, ewma_span=5, min_ticks=3, max_ticks=200),
    ),
    "volume_imbalance": (
        "volume_imbalance",
        dict(expected_ticks_init=15, ewma_span=8, imbalance_span=3, min_ticks=2, max_ticks=100),
    ),
    "dollar_imbalance": (
        "dollar_imbalance",
        dict(expected_ticks_init=25, imbalance_init=60.0, ewma_span=10, min_ticks=5, max_ticks=80),
    ),
    "tick_run": ("tick_run", dict(expected_ticks_init=20, ewma_span=5, min_ticks=3, max_ticks=200)),
    "volume_run": ("volume_run", dict(expected_ticks_init=10, ewma_span=4, min_ticks=2, max_ticks=50)),
    "dollar_run": (
        "dollar_run",
        dict(expected_ticks_init=30, imbalance_init=100.0, ewma_span=6, min_ticks=4, max_ticks=120),
    ),
}


def ref(df, kind, opts, keep_partial=False):
    o = dict(opts)
    if kind == "time":
        o["interval_us"] = int(pd.Timedelta(o.pop("interval")).value // 1000)
    return ref_bars(df, kind, keep_partial=keep_partial, **o)


@pytest.mark.parametrize("name", list(CASES))
def test_build_bars_equals_reference(name):
    kind, opts = CASES[name]
    df = gen_ticks(11, 3000, days=4.0, null_side=0.1, gap_days=2)
    for keep in (False, True):
        want, _ = ref(df, kind, opts, keep_partial=keep)
        assert len(want) > 20
        assert_bars_equal(build_bars(df, kind, keep_partial=keep, **opts), want, f"{name} keep={keep}")
        assert_bars_equal(build_bars(to_arrow(df), kind, keep_partial=keep, **opts), want, f"{name} arrow")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(CASES)),
    seed=st.integers(0, 10_000),
    n=st.integers(0, 400),
    cuts=st.lists(st.integers(0, 400), max_size=12),
)
def test_any_cut_of_the_stream_gives_the_same_bars(name, seed, n, cuts):
    kind, opts = CASES[name]
    df = gen_ticks(seed, n, days=3.0, null_side=0.2, gap_days=seed % 3)
    want, want_thr = ref(df, kind, opts, keep_partial=True)
    stream = BarStream(BarSpec.from_config(None, kind=kind, **opts))
    edges = sorted({0, n, *[c for c in cuts if c <= n]})
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        stream.feed(df.iloc[a:b], source="piece", row0=a)
    assert_bars_equal(stream.to_pandas(keep_partial=True), want, f"{name} cuts={edges}")
    if stream.spec.dynamic:
        assert stream.day_thresholds == want_thr


@pytest.mark.parametrize("name", ["dollar", "dollar_dyn", "tick_imbalance", "volume_run", "time_1h"])
def test_real_coin_m_day_equals_reference(name):
    kind, opts = CASES[name]
    df = read_cm_day(BINANCE_CM_DAY)
    assert len(df) == 105_280
    opts = dict(opts)
    if kind == "dollar":
        opts["threshold"] = 2e6  # USD notional
    if kind.endswith("_imbalance") or kind.endswith("_run"):
        opts.update(expected_ticks_init=200, max_ticks=5000)
    want, _ = ref(df, kind, opts, keep_partial=True)
    assert len(want) > 20
    got = build_bars(df, kind, keep_partial=True, **opts)
    assert_bars_equal(got, want, f"COIN-M {name}")
    assert got["quote_volume"].iloc[:-1].ge(opts.get("threshold", 0)).all()


@pytest.mark.parametrize(
    "name", ["dollar", "dollar_dyn", "tick_dyn", "time_1h", "tick_imbalance", "dollar_run"]
)
def test_no_look_ahead_truncation_keeps_earlier_bars(name):
    kind, opts = CASES[name]
    df = gen_ticks(5, 2500, days=4.0, null_side=0.05)
    full = BarStream(BarSpec.from_config(None, kind=kind, **opts)).feed(df)
    full_bars = full.to_pandas()
    rng = np.random.default_rng(0)
    for k in sorted(rng.integers(1, len(df), 8).tolist()):
        cut = BarStream(BarSpec.from_config(None, kind=kind, **opts)).feed(df.iloc[:k])
        bars = cut.to_pandas()
        # every completed bar of the truncated stream is the full stream's bar, unchanged ...
        assert_bars_equal(bars, full_bars.iloc[: len(bars)], f"{name} truncated at {k}")
        # ... and every bar of the full stream that closed before the cut is there
        closed = int((full_bars["ts_close"] < df["ts"].iloc[k - 1]).sum())
        assert len(bars) >= closed - (1 if kind == "time" else 0)
        for day, thr in cut.day_thresholds.items():
            assert full.day_thresholds[day] == thr


def test_dynamic_threshold_uses_only_earlier_days():
    kind, opts = CASES["dollar_dyn"]
    df = gen_ticks(8, 2000, days=4.0)
    s1 = BarStream(BarSpec.from_config(None, kind=kind, **opts)).feed(df)
    # multiply the last day's quantities by 10: no threshold of any day may change
    df2 = df.copy()
    last = df2["ts"] // DAY_US == (df2["ts"] // DAY_US).max()
    df2.loc[last, "qty"] *= 10.0
    df2.loc[last, "quote_qty"] *= 10.0
    s2 = BarStream(BarSpec.from_config(None, kind=kind, **opts)).feed(df2)
    assert s1.day_thresholds == s2.day_thresholds
    days = sorted(s1.day_thresholds)
    assert len(days) >= 4 and s1.day_thresholds[days[0]] == opts["threshold"]  # first_day warm-up
    # day 2's threshold: mean of days 0 and 1 over bars_per_day
    tot = df.groupby(df["ts"] // DAY_US)["quote_qty"].apply(lambda x: float(sum(x.tolist())))
    want = (tot[days[0]] + tot[days[1]]) / 2 / opts["bars_per_day"]
    assert s1.day_thresholds[days[2]] == pytest.approx(want, rel=1e-12)


def test_one_tick_larger_than_threshold_is_its_own_bar():
    df = gen_ticks(1, 60, big=0.0, equal_ts=0.0)
    df.loc[20, ["qty", "quote_qty"]] = [1e6, 1e6 * df.loc[20, "price"]]
    bars = build_bars(df, "dollar", threshold=500.0)
    k = int(np.flatnonzero(bars["ts_close"] == df.loc[20, "ts"])[0])
    assert bars["quote_volume"][k] >= 1e6 * df.loc[20, "price"]  # the big tick closes its bar
    assert bars["ts_open"][k + 1] == df.loc[21, "ts"]  # the next tick opens a fresh bar
    # overflow is discarded: the next bar is the same as in a stream starting at tick 21
    rest = build_bars(df.iloc[21:], "dollar", threshold=500.0)
    pd.testing.assert_frame_equal(bars.iloc[k + 1 :].reset_index(drop=True), rest)
    big_alone = build_bars(df.iloc[20:21], "dollar", threshold=500.0)
    assert big_alone["n_ticks"].tolist() == [1]


def test_equal_timestamps_and_single_tick():
    df = gen_ticks(2, 30, equal_ts=1.0)  # all ticks share the first timestamp
    assert df["ts"].nunique() == 1
    want, _ = ref_bars(df, "tick", threshold=4.0, keep_partial=True)
    assert_bars_equal(build_bars(df, "tick", threshold=4.0, keep_partial=True), want, "equal ts")
    one = df.iloc[:1]
    assert len(build_bars(one, "dollar", threshold=1e9)) == 0
    b = build_bars(one, "dollar", threshold=1e9, keep_partial=True)
    assert b["is_partial"].tolist() == [True] and b["n_ticks"].tolist() == [1]
    empty = build_bars(df.iloc[:0], "dollar", threshold=1.0, keep_partial=True)
    assert list(empty.columns) == list(b.columns) and len(empty) == 0


@pytest.mark.parametrize(
    "col,value,msg",
    [
        ("qty", 0.0, "qty must be"),
        ("quote_qty", 0.0, "quote_qty must be"),
        ("price", np.nan, "price must be"),
        ("ts", T0 - 1, "ticks must be sorted"),
    ],
)
def test_bad_rows_are_rejected_naming_the_row(col, value, msg):
    df = gen_ticks(4, 100)
    df.loc[37, col] = value
    with pytest.raises(BarsInputError, match=rf"myfile\.parquet: row 37: {msg}"):
        BarStream(kind="dollar", threshold=100.0).feed(df, source="myfile.parquet")


def test_duplicate_trade_rejected_and_float32_refused():
    df = gen_ticks(4, 10, equal_ts=1.0)
    df.loc[5, "trade_id"] = df.loc[4, "trade_id"]
    with pytest.raises(BarsInputError, match="row 5"):
        build_bars(df, "tick", threshold=3)
    df = gen_ticks(4, 10)
    with pytest.raises(BarsInputError, match="'price' is float32"):
        build_bars(df.astype({"price": "float32"}), "tick", threshold=3)
    with pytest.raises(BarsInputError, match=r"lack column\(s\) \['quote_qty'\]"):
        build_bars(df.drop(columns="quote_qty"), "tick", threshold=3)


def test_bad_settings_name_the_key():
    df = gen_ticks(4, 10)
    with pytest.raises(BarsConfigError, match="bars.threshold"):
        build_bars(df, "dollar")
    with pytest.raises(BarsConfigError, match="bars.kind"):
        build_bars(df, "renko", threshold=1)
    with pytest.raises(BarsConfigError, match="bars.interval"):
        build_bars(df, "time", interval="abc")
    with pytest.raises(BarsConfigError, match="bars.min_ticks"):
        build_bars(df, "tick_run", min_ticks=10, max_ticks=5)
    with pytest.raises(BarsConfigError, match="unknown bars option"):
        build_bars(df, "dollar", threshold=1, tresh=2)


def test_calendar_interval_time_bars():
    df = gen_ticks(9, 3000, days=70.0)
    bars = build_bars(df, "time", interval="MS", keep_partial=True)
    months = pd.to_datetime(df["ts"], unit="us").dt.to_period("M")
    assert len(bars) == months.nunique()
    assert bars["n_ticks"].tolist() == months.value_counts().sort_index().tolist()


def test_imbalance_guards_bound_bar_length():
    df = gen_ticks(6, 5000, null_side=0.0)
    for kind in ("tick_imbalance", "dollar_run"):
        bars = build_bars(df, kind, expected_ticks_init=50, min_ticks=7, max_ticks=40)
        assert bars["n_ticks"].min() >= 7 and bars["n_ticks"].max() <= 40


def test_bars_config_files_validate():
    from hydra import compose, initialize_config_dir

    import btsys.config  # noqa: F401

    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    names = sorted(f[:-5] for f in os.listdir(os.path.join(conf, "bars")) if f.endswith(".yaml"))
    assert len(names) >= 10
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        for n in names:
            spec = BarSpec.from_config(compose("config", overrides=[f"bars={n}"]).bars)
            assert spec.kind in n
        demo = BarSpec.from_config(compose("config", overrides=["+experiment=demo"]).bars)
        assert demo.dynamic and demo.bars_per_day == 100 and demo.lookback_days == 3
