"""Triple-barrier labels, meta-labels and uniqueness weights against hand-computed values (AFML ch. 3-4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btsys.signals.labels import (
    LabelError,
    average_uniqueness,
    ewm_vol,
    meta_labels,
    num_concurrent_events,
    return_attribution_weights,
    triple_barrier,
    triple_barrier_labels,
    uniqueness_weights,
)

CLOSE = np.array([100.0, 101.0, 103.0, 99.0, 98.0, 104.0])


def test_triple_barrier_by_hand():
    t1, ret, barrier = triple_barrier(
        CLOSE, [0, 2, 0, 4, 1], [0.02, 0.02, 0.5, 0.5, 0.015], pt=1.0, sl=1.0, vertical_bars=3
    )
    # event 0: +1 %, +3 % >= 2 % -> upper barrier at bar 2
    # event 2 (103): 99/103 - 1 = -3.9 % <= -2 % -> lower barrier at bar 3
    # event 0 with a 50 % target: no touch, vertical barrier at bar 3: 99/100 - 1 = -1 %
    # event 4: the vertical barrier (bar 7) is beyond the data and no touch -> unknown (-1)
    # event 1 (101) with 1.5 %: 103/101 - 1 = 1.98 % >= 1.5 % -> upper at bar 2
    assert t1.tolist() == [2, 3, 3, -1, 2]
    assert barrier.tolist() == [1, -1, 0, 0, 1]
    np.testing.assert_allclose(ret[[0, 1, 2, 4]], [0.03, 99 / 103 - 1, -0.01, 103 / 101 - 1], rtol=1e-12)
    assert np.isnan(ret[3])


def test_barriers_can_be_switched_off_and_sides_flip_returns():
    t1, ret, barrier = triple_barrier(CLOSE, [2], [0.02], pt=1.0, sl=0.0, vertical_bars=3)
    assert (t1[0], barrier[0]) == (5, 0)  # no stop: 104/103 - 1 < 2 %, vertical at 5
    assert ret[0] == pytest.approx(104 / 103 - 1)
    t1, ret, barrier = triple_barrier(CLOSE, [2], [0.02], pt=1.0, sl=1.0, vertical_bars=3, side=[-1.0])
    assert (t1[0], barrier[0]) == (3, 1) and ret[0] == pytest.approx(1 - 99 / 103)  # short side gains


def test_triple_barrier_labels_frame():
    tgt = np.array([0.02, 0.02, 0.02, 0.02, 0.1, 0.02])
    lab = triple_barrier_labels(CLOSE, events=[0, 2, 4], target=tgt, vertical_bars=3)
    assert lab["t0"].tolist() == [0, 2] and lab["t1"].tolist() == [2, 3]  # event 4 not known yet
    assert lab["label"].tolist() == [1, -1] and lab["barrier"].tolist() == [1, -1]
    lab = triple_barrier_labels(CLOSE, events=[0], target=np.full(6, 0.5), vertical_bars=3)
    assert lab["label"].tolist() == [-1] and lab["barrier"].tolist() == [0]  # sign at the vertical barrier
    lab = triple_barrier_labels(
        CLOSE, events=[0], target=np.full(6, 0.5), vertical_bars=3, zero_vertical=True
    )
    assert lab["label"].tolist() == [0]
    tgt = np.array([0.02, np.nan, 0.001, 0.02, 0.02, 0.02])
    lab = triple_barrier_labels(CLOSE, events=[0, 1, 2], target=tgt, vertical_bars=3, min_ret=0.01)
    assert lab["t0"].tolist() == [0]  # NaN and below-min_ret targets are skipped
    assert lab.dtypes["t0"] == np.int64 and lab.dtypes["t1"] == np.int64


def test_default_target_is_causal_ewm_vol():
    rng = np.random.default_rng(0)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    v = ewm_vol(c, 20)
    r = pd.Series(np.log(c)).diff()
    np.testing.assert_allclose(v, r.ewm(span=20, min_periods=20).std(), rtol=1e-12)
    np.testing.assert_array_equal(ewm_vol(c[:150], 20), v[:150])
    lab = triple_barrier_labels(c, vol_span=20, vertical_bars=10)
    assert lab["t0"].min() == 20 and (lab["t1"] > lab["t0"]).all() and (lab["t1"] - lab["t0"] <= 10).all()
    hit = lab["barrier"].to_numpy() != 0
    assert (np.abs(lab["ret"].to_numpy()[hit]) >= lab["target"].to_numpy()[hit] - 1e-15).all()


def test_meta_labels():
    side = np.array([1.0, 0.0, -1.0, 1.0, 0.0, 0.0])
    lab = meta_labels(CLOSE, side, target=np.full(6, 0.02), vertical_bars=3)
    # bar 0 long: +3 % -> 1; bar 2 short: price fell 3.9 % -> 1; bar 3 long: 98 then 104 (+5 %) -> 1
    assert lab["t0"].tolist() == [0, 2, 3] and lab["label"].tolist() == [1, 1, 1]
    lab = meta_labels(CLOSE, -side, target=np.full(6, 0.02), vertical_bars=3)
    assert lab["label"].tolist() == [0, 0, 0]


def test_concurrency_and_uniqueness_by_hand():
    t0, t1 = np.array([0, 1, 4]), np.array([2, 3, 5])
    c = num_concurrent_events(6, t0, t1)
    assert c.tolist() == [1, 2, 2, 1, 1, 1]
    u = average_uniqueness(t0, t1, c)
    np.testing.assert_allclose(u, [(1 + 0.5 + 0.5) / 3, (0.5 + 0.5 + 1) / 3, 1.0])
    # an open event (label unknown) starting at bar 3 covers bars 3..5
    np.testing.assert_allclose(
        uniqueness_weights(6, t0, t1, open_t0=[3]), [2 / 3, (0.5 + 0.5 + 0.5) / 3, 0.5]
    )


def test_return_attribution_by_hand():
    t0, t1 = np.array([0, 1]), np.array([2, 3])
    np.testing.assert_array_equal(num_concurrent_events(6, t0, t1), [1, 2, 2, 1, 0, 0])
    r = np.diff(np.log(CLOSE))  # r[k] is the return into bar k + 1
    w0 = abs(r[0] / 2 + r[1] / 2)  # bars 1, 2 (concurrency 2, 2)
    w1 = abs(r[1] / 2 + r[2] / 1)  # bars 2, 3 (concurrency 2, 1)
    np.testing.assert_allclose(return_attribution_weights(CLOSE, t0, t1), np.array([w0, w1]) * 2 / (w0 + w1))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: triple_barrier(CLOSE, [7], [0.1]), "event index out of range"),
        (lambda: triple_barrier(CLOSE, [0], [0.1], vertical_bars=0), "vertical_bars must be >= 1"),
        (lambda: triple_barrier(CLOSE, [0], [0.1], pt=-1), "pt and sl must be >= 0"),
        (lambda: triple_barrier([1.0, np.nan], [0], [0.1]), "row 1"),
        (lambda: num_concurrent_events(6, [3], [2]), r"event 0: span \[3, 2\]"),
        (lambda: triple_barrier_labels(CLOSE, target=np.ones(3)), "one value per bar"),
        (lambda: ewm_vol(CLOSE, 1), "vol_span must be >= 2"),
    ],
)
def test_label_errors(call, match):
    with pytest.raises(LabelError, match=match):
        call()
