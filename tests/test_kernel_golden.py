"""The kernels give, bit for bit, the results pinned before their refactor.

``tests/data/kernel_golden.npz`` holds the outputs of the cases in ``tests/kernel_golden.py``
computed by the kernels as they were before the shared helpers, the enum declarations and the
named phases (its ``source`` entry names that commit). Every case is recomputed here and compared
as raw bytes: orders, trades, equity, cash, positions and metrics of ``simulate``, portfolios and
cross-sectional portfolios; sweep tables and their daily returns (one symbol and portfolios, every
rule strategy); bars and final kernel states of every bar kernel fed in pieces, and where each
stops on invalid ticks; the feature kernels.
"""

from __future__ import annotations

import kernel_golden as kg
import numpy as np
import pytest

GOLD = np.load(kg.GOLDEN)


def assert_bits(key: str, got) -> None:
    """``got`` equals the stored array ``key`` byte for byte (dtype, shape, NaN payloads, -0.0)."""
    want = GOLD[key]
    got = np.asarray(got)
    if want.dtype.kind == "U":
        assert got.astype(str).tolist() == want.tolist(), key
        return
    assert got.dtype == want.dtype and got.shape == want.shape, (
        key,
        got.dtype,
        got.shape,
        want.dtype,
        want.shape,
    )
    if got.tobytes() != want.tobytes():
        if want.dtype.names:
            for name in want.dtype.names:
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"{key}.{name}")
        np.testing.assert_array_equal(got, want, err_msg=key)
        pytest.fail(f"{key}: equal values but different bits (e.g. -0.0 against 0.0)")


def assert_result(prefix: str, r) -> None:
    assert list(r.metrics) == GOLD["metric_names"].tolist()
    for what, arr in kg._result_arrays(prefix, r).items():
        assert_bits(what, arr)


def test_the_golden_file_comes_from_a_commit_and_has_every_case():
    assert str(GOLD["source"]).startswith("btsys at ")
    keys = set(GOLD.files)
    for name in kg.SIM_CASES:
        assert f"simulate/{name}/orders" in keys
    for name in kg.bar_names():
        assert f"bars/{name}/out_f" in keys
    # not vacuous: the cases trade, stop, liquidate and kill, and the bar kernels emit bars
    kinds = np.concatenate([GOLD[k]["kind"] for k in GOLD.files if k.endswith("/orders")])
    assert set(range(10)) <= set(kinds.tolist())
    assert all(len(GOLD[f"bars/{name}/out_i"]) >= 10 for name in kg.bar_names())


@pytest.mark.parametrize("name", list(kg.SIM_CASES))
def test_simulate(name):
    assert_result(f"simulate/{name}", kg.sim_case(name))


@pytest.mark.parametrize("name", list(kg.PF_CASES))
def test_portfolio(name):
    assert_result(f"portfolio/{name}", kg.pf_case(name))


@pytest.mark.parametrize("name", list(kg.XS_CASES))
def test_cross_sectional(name):
    assert_result(f"cross_sectional/{name}", kg.xs_case(name))


@pytest.mark.parametrize("name", list(kg.SWEEP_CASES))
def test_sweep(name):
    for key, arr in kg._table_arrays(f"sweep/{name}", *kg.sweep_case(name)).items():
        assert_bits(key, arr)


@pytest.mark.parametrize("name", list(kg.FRAME_SWEEP_CASES))
def test_sweep_frames(name):
    for key, arr in kg._table_arrays(f"sweep_frames/{name}", *kg.frame_sweep_case(name)).items():
        assert_bits(key, arr)


@pytest.mark.parametrize("name", kg.bar_names())
def test_bar_kernels(name):
    for key, arr in kg._bar_arrays(f"bars/{name}", kg.bar_case(name)).items():
        assert_bits(key, arr)


def test_flow_bars_with_initial_expectations():
    for key, arr in kg._bar_arrays("bars/flow_warm", kg.warm_flow_case()).items():
        assert_bits(key, arr)


@pytest.mark.parametrize("bad", list(kg.BAD_TICKS))
def test_bar_kernels_stop_at_the_bad_tick(bad):
    for kernel in ("threshold_dollar", "threshold_par_tick", "flow_volume_run", "time_fixed"):
        _, _, ist, fst, stop = kg.bad_tick_case(bad, kernel)
        assert stop[0] == kg.BAD_TICKS[bad][1]
        assert_bits(f"bad_ticks/{bad}/{kernel}/stop", np.array(stop, np.int64))
        assert_bits(f"bad_ticks/{bad}/{kernel}/ist", ist)
        assert_bits(f"bad_ticks/{bad}/{kernel}/fst", fst)


def test_feature_kernels():
    for key, arr in kg.feature_case().items():
        assert_bits(f"features/{key}", arr)
