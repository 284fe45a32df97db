"""Known-value tests of the deflated Sharpe ratio and of PBO by CSCV (btsys.report.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from btsys.report import stats


# --------------------------------------------------------------------------- deflated Sharpe
def test_dsr_reproduces_bailey_lopez_de_prado_2014_example():
    # The paper's numerical example (section 6): N = 100 trials, best annualised SR = 2.5 over
    # 5 years of daily data (T = 1250, 250 days a year), V[SR_n] = 1/2 annualised, skew -3,
    # kurtosis 10. By hand:
    #   sqrt(V) per day = sqrt(0.5 / 250) = 0.044721
    #   Z^-1(1 - 1/100) = 2.326348, Z^-1(1 - 1/(100 e)) = 2.680210 (e = 2.718282)
    #   SR0 = 0.044721 * (0.422784 * 2.326348 + 0.577216 * 2.680210) = 0.044721 * 2.530603 = 0.113172
    #   SR  = 2.5 / sqrt(250) = 0.158114
    #   den = sqrt(1 + 3 * 0.158114 + (10 - 1) / 4 * 0.158114^2) = sqrt(1.530593) = 1.237171
    #   z   = (0.158114 - 0.113172) * sqrt(1249) / 1.237171 = 0.044942 * 35.341194 / 1.237171 = 1.28382
    #   DSR = Phi(1.28382) = 0.9004   (the paper reports 0.9004)
    dsr, sr0 = stats.deflated_sharpe_ratio(2.5 / math.sqrt(250), 1250, 100, 0.5 / 250, skew=-3, kurtosis=10)
    assert sr0 == pytest.approx(0.113172, abs=2e-6)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_dsr_normal_returns_by_hand():
    # SR = 0.1 per day, T = 1000, N = 100, V[SR] = 0.05^2, normal returns (skew 0, kurtosis 3):
    #   SR0 = 0.05 * 2.530603 = 0.126530
    #   z = (0.1 - 0.126530) * sqrt(999) / sqrt(1 + 2/4 * 0.01) = -0.026530 * 31.606961 / 1.002497 = -0.83645
    #   DSR = Phi(-0.83645) = 0.2015
    dsr, sr0 = stats.deflated_sharpe_ratio(0.1, 1000, 100, 0.0025)
    assert sr0 == pytest.approx(0.126530, abs=2e-6)
    assert dsr == pytest.approx(0.2015, abs=1e-4)
    # one trial: no deflation, SR0 = 0 and DSR = PSR(0) = Phi(0.1 * sqrt(999) / 1.002497) = Phi(3.15282)
    dsr1, sr01 = stats.deflated_sharpe_ratio(0.1, 1000, 1, 0.0025)
    assert sr01 == 0.0
    assert dsr1 == pytest.approx(0.999192, abs=2e-6)


def test_dsr_more_trials_deflate_more_and_bad_inputs_are_named():
    a, _ = stats.deflated_sharpe_ratio(0.1, 500, 10, 0.001)
    b, _ = stats.deflated_sharpe_ratio(0.1, 500, 1000, 0.001)
    assert b < a
    with pytest.raises(ValueError, match="n_obs"):
        stats.probabilistic_sharpe_ratio(0.1, 0.0, 1)
    with pytest.raises(ValueError, match="n_trials"):
        stats.expected_max_sharpe(0.01, 0)
    with pytest.raises(ValueError, match="sr_variance"):
        stats.expected_max_sharpe(-1.0, 5)


def test_dsr_from_trials_uses_per_day_sharpes():
    rng = np.random.default_rng(3)
    r = rng.normal(0.002, 0.02, 400)
    srs = np.array([1.0, 0.5, -0.3, 2.0, np.nan])  # annualised; the NaN counts as a trial only
    d = stats.dsr_from_trials(r, srs)
    var = np.var(srs[:4] / math.sqrt(365), ddof=1)
    from scipy.stats import kurtosis, skew

    exp, sr0 = stats.deflated_sharpe_ratio(
        r.mean() / r.std(ddof=1), 400, 5, var, skew(r, bias=False), kurtosis(r, fisher=False, bias=False)
    )
    assert d["dsr"] == pytest.approx(exp)
    assert d["dsr_sr0"] == pytest.approx(sr0)
    assert d["dsr_n_trials"] == 5 and d["dsr_n_obs"] == 400


# --------------------------------------------------------------------------- PBO by CSCV
def test_pbo_is_one_when_in_sample_winner_always_loses_out_of_sample():
    # S = 2 blocks of 2 rows; A wins block 0 and loses block 1, B the reverse. Both combinations
    # pick the trial that is worst in the other block: rank 1 of N = 2 -> w = 1/3 -> logit
    # ln(0.5) = -0.6931 <= 0 -> PBO = 2/2 = 1.
    m = np.array([[0.02, -0.01], [0.03, -0.02], [-0.02, 0.01], [-0.01, 0.02]])
    res = stats.pbo_cscv(m, n_splits=2, metric="mean")
    assert res.n_combinations == 2
    assert res.pbo == 1.0
    np.testing.assert_allclose(res.logits, [math.log(0.5)] * 2)


def test_pbo_is_zero_for_a_dominant_trial():
    # A beats B in every block -> IS best is always A, OOS rank 2 of 2 -> w = 2/3 -> logit ln 2 > 0.
    m = np.array([[0.02, 0.01], [0.03, 0.00], [0.01, -0.01], [0.02, 0.01]])
    res = stats.pbo_cscv(m, n_splits=2, metric="mean")
    assert res.pbo == 0.0
    np.testing.assert_allclose(res.logits, [math.log(2.0)] * 2)


def test_pbo_mixed_case_by_hand():
    # S = 4 one-row blocks, N = 3 trials, metric = mean. Rows (blocks) x trials A, B, C:
    #   b0: 4 1 0
    #   b1: 0 1 2
    #   b2: 0 1 3
    #   b3: 1 1 0
    # The 6 training sets (IS means A/B/C -> best; OOS means -> rank of best, 1 = worst):
    #   {0,1}: 2/1/1 -> A; OOS {2,3}: .5/1/1.5 -> A rank 1 -> w=1/4 -> logit ln(1/3) < 0
    #   {0,2}: 2/1/1.5 -> A; OOS {1,3}: .5/1/1 -> A rank 1 -> logit < 0
    #   {0,3}: 2.5/1/0 -> A; OOS {1,2}: 0/1/2.5 -> A rank 1 -> logit < 0
    #   {1,2}: 0/1/2.5 -> C; OOS {0,3}: 2.5/1/0 -> C rank 1 -> logit < 0
    #   {1,3}: .5/1/1 -> B,C tie -> argmax picks B (first); OOS {0,2}: 2/1/1.5 -> B rank 1 -> < 0
    #   {2,3}: .5/1/1.5 -> C; OOS {0,1}: 2/1/1 -> C ties B at 1 -> average rank 1.5 -> w = 1.5/4
    #          -> logit ln(1.5/2.5) < 0
    # PBO = 6/6 = 1.
    m = np.array([[4, 1, 0], [0, 1, 2], [0, 1, 3], [1, 1, 0]], dtype=float)
    res = stats.pbo_cscv(m, n_splits=4, metric="mean")
    assert res.n_combinations == 6
    assert res.pbo == 1.0
    assert list(res.is_best) == [0, 0, 0, 2, 1, 2]
    np.testing.assert_allclose(res.oos_rank, [1, 1, 1, 1, 1, 1.5])
    # Second matrix (A steady winner in b0,b1; B in b2,b3):
    #   b0: 3 0 / b1: 3 0 / b2: 0 1 / b3: 0 1   (N = 2)
    #   {0,1}: A (3 vs 0); OOS {2,3}: A 0 < B 1 -> rank 1 -> logit ln(1/2) < 0
    #   {0,2}: A 1.5 vs B .5 -> A; OOS {1,3}: A 1.5 vs B .5 -> rank 2 -> logit ln 2 > 0
    #   {0,3}: same as {0,2} -> > 0
    #   {1,2}: same -> > 0 ; {1,3}: same -> > 0
    #   {2,3}: B (1 vs 0); OOS {0,1}: B 0 < A 3 -> rank 1 -> < 0
    # PBO = 2/6 = 0.3333
    m2 = np.array([[3, 0], [3, 0], [0, 1], [0, 1]], dtype=float)
    res2 = stats.pbo_cscv(m2, n_splits=4, metric="mean")
    assert res2.pbo == pytest.approx(2 / 6)
    np.testing.assert_allclose(
        res2.logits, [math.log(0.5), math.log(2), math.log(2), math.log(2), math.log(2), math.log(0.5)]
    )


def test_pbo_sharpe_metric_and_noise_is_near_one_half():
    # 40 pure-noise trials: the IS winner is a random draw OOS, so PBO is about 0.5 (one draw
    # varies a lot because the 70 combinations share blocks: average 10 seeded draws).
    pbos = []
    for seed in range(10):
        m = np.random.default_rng(seed).normal(0, 0.01, (480, 40))
        res = stats.pbo_cscv(m, n_splits=8)
        assert res.n_combinations == 70
        pbos.append(res.pbo)
    assert 0.3 < np.mean(pbos) < 0.7
    # one strategy with a real edge is picked in-sample and stays good out of sample
    m[:, 7] += 0.004
    assert stats.pbo_cscv(m, n_splits=8).pbo < 0.1


def test_pbo_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="even"):
        stats.pbo_cscv(np.zeros((10, 3)), n_splits=3)
    with pytest.raises(ValueError, match="at least 2 trials"):
        stats.pbo_cscv(np.zeros((10, 1)), n_splits=2)
    with pytest.raises(ValueError, match="fewer than n_splits"):
        stats.pbo_cscv(np.zeros((3, 3)), n_splits=4)
    bad = np.zeros((8, 2))
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="row 5, column 1"):
        stats.pbo_cscv(bad, n_splits=2)
    assert stats.choose_splits(100) == 16 and stats.choose_splits(7) == 2 and stats.choose_splits(3) == 0


def test_pbo_vectorised_block_sums_equal_the_row_loop():
    # The built-in metrics use per-block sums; a callable metric goes through the rows. Same answer.
    m = np.random.default_rng(5).normal(0.0002, 0.01, (96, 12))
    fast = stats.pbo_cscv(m, n_splits=8)
    slow = stats.pbo_cscv(m, n_splits=8, metric=stats._sharpe_cols)
    np.testing.assert_allclose(fast.logits, slow.logits)
    np.testing.assert_array_equal(fast.is_best, slow.is_best)
    assert fast.pbo == slow.pbo
