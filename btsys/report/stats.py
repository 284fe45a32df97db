"""Overfitting statistics across the trials of a sweep.

The return series and the Sharpe ratio they start from are the backtest's own definitions
(:mod:`btsys.backtest.metrics`: daily returns against the initial cash, 365-day years); nothing
here redefines them.

* :func:`deflated_sharpe_ratio` — Bailey and López de Prado (2014), "The Deflated Sharpe Ratio:
  Correcting for Selection Bias, Backtest Overfitting and Non-Normality", *Journal of Portfolio
  Management* 40(5). The probability that the best trial's true Sharpe ratio is above the Sharpe
  ratio one expects from the maximum of ``N`` unskilled trials.
* :func:`pbo_cscv` — Bailey, Borwein, López de Prado and Zhu (2017), "The Probability of Backtest
  Overfitting", *Journal of Computational Finance* 20(4): combinatorially symmetric
  cross-validation (CSCV).

All Sharpe ratios passed to the DSR functions are **per observation** (not annualised): divide an
annualised daily Sharpe by ``sqrt(365)`` first (:func:`deannualise_sharpe`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import numpy as np

from btsys.backtest.metrics import ANNUAL_DAYS, sharpe

EULER_GAMMA = 0.5772156649015329


# --------------------------------------------------------------------------- deflated Sharpe
def deannualise_sharpe(sr_annual: Union[float, np.ndarray], periods: float = ANNUAL_DAYS):
    """Per-observation Sharpe from an annualised one (``SR / sqrt(periods)``)."""
    return (
        np.asarray(sr_annual, dtype=np.float64) / math.sqrt(periods)
        if np.ndim(sr_annual)
        else float(sr_annual) / math.sqrt(periods)
    )


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _norm_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """PSR: probability that the true per-observation Sharpe exceeds ``sr_benchmark``.

    ``PSR = Z[(SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2)]`` with ``g3`` the skewness
    and ``g4`` the (non-excess) kurtosis of the returns (3 for a normal distribution).
    """
    if n_obs < 2:
        raise ValueError(f"n_obs must be >= 2 for a PSR, got {n_obs}")
    if not math.isfinite(sr) or not math.isfinite(sr_benchmark):
        return float("nan")
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not var > 0:
        raise ValueError(
            f"non-positive variance term 1 - skew*SR + (kurtosis-1)/4*SR^2 = {var} "
            f"(skew={skew}, kurtosis={kurtosis}, sr={sr})"
        )
    return _norm_cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1.0) / math.sqrt(var))


def expected_max_sharpe(sr_variance: float, n_trials: int) -> float:
    """Expected maximum per-observation Sharpe of ``n_trials`` unskilled trials (true SR = 0).

    ``SR0 = sqrt(V[SR]) ((1 - g) Z^-1[1 - 1/N] + g Z^-1[1 - 1/(N e)])``, ``g`` = Euler-Mascheroni
    (Bailey and López de Prado 2014, eq. 4 / the "False Strategy" theorem). 0 for a single trial.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if sr_variance < 0 or not math.isfinite(sr_variance):
        raise ValueError(f"sr_variance must be a finite non-negative number, got {sr_variance}")
    if n_trials == 1:
        return 0.0
    return math.sqrt(sr_variance) * (
        (1.0 - EULER_GAMMA) * _norm_ppf(1.0 - 1.0 / n_trials)
        + EULER_GAMMA * _norm_ppf(1.0 - 1.0 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(
    sr: float, n_obs: int, n_trials: int, sr_variance: float, skew: float = 0.0, kurtosis: float = 3.0
) -> tuple[float, float]:
    """Deflated Sharpe ratio of the best of ``n_trials``.

    Parameters
    ----------
    sr : the selected (best) trial's per-observation Sharpe ratio.
    n_obs : number of return observations behind ``sr`` (T).
    n_trials : number of independent trials tried (N).
    sr_variance : variance of the per-observation Sharpe ratios across the trials.
    skew, kurtosis : of the selected trial's returns (kurtosis non-excess; normal = 3).

    Returns
    -------
    dsr, sr0 : the DSR (a probability) and the benchmark ``SR0`` it deflates against.
    """
    sr0 = expected_max_sharpe(sr_variance, n_trials)
    return probabilistic_sharpe_ratio(sr, sr0, n_obs, skew, kurtosis), sr0


def dsr_from_trials(
    best_returns: np.ndarray,
    trial_sharpes_annual: np.ndarray,
    periods: float = ANNUAL_DAYS,
    n_trials: Optional[int] = None,
) -> dict:
    """DSR of a sweep from the best trial's daily returns and every trial's annualised Sharpe.

    Non-finite Sharpe ratios (e.g. flat trials) are left out of the variance but still count as
    trials. Returns a dict with ``dsr``, ``dsr_sr0`` (per observation), ``dsr_sr`` (best trial, per
    observation), ``dsr_n_trials``, ``dsr_n_obs``, ``dsr_skew``, ``dsr_kurtosis``.
    """
    from scipy.stats import kurtosis as _kurt
    from scipy.stats import skew as _skew

    r = np.asarray(best_returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    srs = np.asarray(trial_sharpes_annual, dtype=np.float64)
    n = int(n_trials if n_trials is not None else len(srs))
    out = {
        "dsr": float("nan"),
        "dsr_sr0": float("nan"),
        "dsr_sr": float("nan"),
        "dsr_n_trials": n,
        "dsr_n_obs": int(len(r)),
        "dsr_skew": float("nan"),
        "dsr_kurtosis": float("nan"),
    }
    sr = sharpe(r, periods=1.0) if len(r) >= 3 else float("nan")
    if n < 1 or not math.isfinite(sr):
        return out
    fin = deannualise_sharpe(srs[np.isfinite(srs)], periods)
    var = float(np.var(fin, ddof=1)) if len(fin) >= 2 else 0.0
    g3, g4 = float(_skew(r, bias=False)), float(_kurt(r, fisher=False, bias=False))
    dsr, sr0 = deflated_sharpe_ratio(sr, len(r), max(n, 1), var, g3, g4)
    out.update(dsr=dsr, dsr_sr0=sr0, dsr_sr=sr, dsr_skew=g3, dsr_kurtosis=g4)
    return out


# --------------------------------------------------------------------------- PBO by CSCV
@dataclass
class PboResult:
    """Outcome of CSCV: ``pbo`` is the share of splits whose in-sample best is at or below the
    out-of-sample median (logit <= 0)."""

    pbo: float
    logits: np.ndarray
    n_splits: int
    n_combinations: int
    is_best: np.ndarray = field(repr=False)  # index of the IS-best trial per combination
    oos_rank: np.ndarray = field(repr=False)  # its OOS rank (1 = worst .. N = best)
    perf_is: np.ndarray = field(repr=False)  # IS performance of the IS best
    perf_oos: np.ndarray = field(repr=False)  # its OOS performance

    @property
    def degradation_slope(self) -> float:
        """Slope of OOS on IS performance of the selected trials (negative: overfit)."""
        ok = np.isfinite(self.perf_is) & np.isfinite(self.perf_oos)
        if ok.sum() < 2 or np.ptp(self.perf_is[ok]) == 0:
            return float("nan")
        return float(np.polyfit(self.perf_is[ok], self.perf_oos[ok], 1)[0])


def _sharpe_cols(m: np.ndarray) -> np.ndarray:
    """Per-observation Sharpe ratio of each column (:func:`btsys.backtest.metrics.sharpe`); a
    column without dispersion ranks by the sign of its mean (+inf, -inf, or 0)."""
    sr = sharpe(m, periods=1.0)
    mu = m.mean(axis=0)
    return np.where(np.isnan(sr), np.where(mu > 0, np.inf, np.where(mu < 0, -np.inf, 0.0)), sr)


def _mean_cols(m: np.ndarray) -> np.ndarray:
    return m.mean(axis=0)


_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"sharpe": _sharpe_cols, "mean": _mean_cols}


def pbo_cscv(
    returns: np.ndarray,
    n_splits: int = 16,
    metric: Union[str, Callable[[np.ndarray], np.ndarray]] = "sharpe",
    max_combinations: int = 20_000,
    seed: int = 0,
) -> PboResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    Parameters
    ----------
    returns : (T, N) array, one column of per-period returns per trial, rows aligned in time.
    n_splits : S, an even number of contiguous row blocks (rows beyond ``S * (T // S)`` at the end
        are dropped so blocks have equal size, as in the paper).
    metric : ``"sharpe"`` (mean / std per block set), ``"mean"``, or a function mapping a
        (rows, N) array to N performance values.
    max_combinations : if ``C(S, S/2)`` exceeds it, a seeded random subset of the combinations is
        used (the paper's S=16 gives 12,870, below the default).

    Notes
    -----
    For every combination ``J`` of ``S/2`` blocks (training set) and its complement (testing set),
    the trial ``n*`` with the best training performance is located in the testing ranking; its
    relative rank ``w = rank / (N + 1)`` (rank 1 = worst) gives the logit ``log(w / (1 - w))``.
    PBO is the share of logits ``<= 0``. Ties in the testing set take the average rank.
    """
    m = _checked_returns(returns, n_splits)
    if isinstance(metric, str) and metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)} or a function, got {metric!r}")
    t, n = m.shape
    size = t // n_splits
    combos = _combinations(n_splits, max_combinations, seed)
    c_mask = np.zeros((len(combos), n_splits), dtype=bool)
    for i, c in enumerate(combos):
        c_mask[i, list(c)] = True
    # combinations are evaluated in chunks so that memory stays O(chunk x N), not O(C(S, S/2) x N)
    chunk = max(1, 4_000_000 // max(n, 1))
    best = np.empty(len(combos), dtype=np.int64)
    rank = np.empty(len(combos))
    perf_is = np.empty(len(combos))
    perf_oos = np.empty(len(combos))
    blocked = m[: size * n_splits].reshape(n_splits, size, n)
    sums = (blocked.sum(axis=1), (blocked * blocked).sum(axis=1)) if isinstance(metric, str) else None
    for lo in range(0, len(combos), chunk):
        hi = min(lo + chunk, len(combos))
        if sums is not None:
            perf_tr, perf_te = _block_metric(sums, size, c_mask[lo:hi], metric)
        else:
            perf_tr, perf_te = _row_metric(m, size, c_mask[lo:hi], metric)
        b = np.argmax(perf_tr, axis=1)  # first index on ties, like np.argmax
        rows = np.arange(hi - lo)
        chosen = perf_te[rows, b][:, None]
        less = (perf_te < chosen).sum(axis=1)
        equal = (perf_te == chosen).sum(axis=1)  # includes the chosen trial itself
        best[lo:hi] = b
        rank[lo:hi] = less + (equal + 1) / 2.0  # 1 = worst .. N = best, ties averaged
        perf_is[lo:hi] = perf_tr[rows, b]
        perf_oos[lo:hi] = perf_te[rows, b]
    w = rank / (n + 1.0)
    lg = np.log(w / (1.0 - w))
    return PboResult(
        pbo=float(np.mean(lg <= 0.0)),
        logits=lg,
        n_splits=n_splits,
        n_combinations=len(combos),
        is_best=best,
        oos_rank=rank,
        perf_is=perf_is,
        perf_oos=perf_oos,
    )


def _checked_returns(returns: np.ndarray, n_splits: int) -> np.ndarray:
    """The (T, N) returns of a CSCV as float64, or a ``ValueError`` naming what is wrong."""
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"returns must be a 2-d (T, N) array, got shape {m.shape}")
    t, n = m.shape
    if n < 2:
        raise ValueError(f"PBO needs at least 2 trials (columns), got {n}")
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be an even number >= 2, got {n_splits}")
    if t < n_splits:
        raise ValueError(f"returns has {t} rows, fewer than n_splits={n_splits}")
    if not np.all(np.isfinite(m)):
        bad = np.argwhere(~np.isfinite(m))[0]
        raise ValueError(f"returns must be finite; row {bad[0]}, column {bad[1]} is {m[bad[0], bad[1]]}")
    return m


def _combinations(n_splits: int, max_combinations: int, seed: int) -> list[tuple]:
    """The training sets: every ``S/2`` of the ``S`` blocks, or a seeded random subset of
    ``max_combinations`` of them when there are more."""
    half = n_splits // 2
    if math.comb(n_splits, half) <= max_combinations:
        return list(itertools.combinations(range(n_splits), half))
    rng = np.random.default_rng(seed)
    seen: set = set()
    while len(seen) < max_combinations:
        seen.add(tuple(sorted(rng.choice(n_splits, half, replace=False).tolist())))
    return sorted(seen)


def _row_metric(m: np.ndarray, size: int, c_mask: np.ndarray, fn) -> tuple[np.ndarray, np.ndarray]:
    """Training/testing performance of every trial with a callable metric over the rows."""
    n_splits, n = c_mask.shape[1], m.shape[1]
    blocks = [np.arange(i * size, (i + 1) * size) for i in range(n_splits)]
    perf_tr = np.empty((len(c_mask), n))
    perf_te = np.empty((len(c_mask), n))
    for i, mask in enumerate(c_mask):
        train = np.concatenate([blocks[b] for b in np.flatnonzero(mask)])
        test = np.concatenate([blocks[b] for b in np.flatnonzero(~mask)])
        perf_tr[i] = np.asarray(fn(m[train]), dtype=np.float64)
        perf_te[i] = np.asarray(fn(m[test]), dtype=np.float64)
    return perf_tr, perf_te


def _block_metric(
    sums: tuple[np.ndarray, np.ndarray], size: int, c_mask: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Training/testing performance of every trial for the given combinations, from per-block sums.

    ``sums`` are the per-block sums and sums of squares, each (S, N), of blocks of ``size`` rows.
    They make each combination's mean and sample standard deviation a matrix product instead of a
    pass over the rows.
    """
    s1, s2 = sums
    out = []
    for mask in (c_mask, ~c_mask):
        w = mask.astype(np.float64)
        cnt = w.sum(axis=1, keepdims=True) * size
        tot = w @ s1
        mu = tot / cnt
        if metric == "mean":
            out.append(mu)
            continue
        var = np.maximum((w @ s2 - tot * mu) / (cnt - 1.0), 0.0)
        sd = np.sqrt(var)
        # exact zero variance (constant returns) within round-off: treat as undefined like _sharpe_cols
        flat = sd <= 1e-12 * np.maximum(np.abs(mu), 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            sr = np.where(flat, np.where(mu > 0, np.inf, np.where(mu < 0, -np.inf, 0.0)), mu / sd)
        out.append(sr)
    return out[0], out[1]


def choose_splits(n_rows: int, wanted: int = 16) -> int:
    """The largest even S <= ``wanted`` with at least 2 rows per block (0 if none)."""
    s = min(int(wanted), n_rows // 2)
    s -= s % 2
    return s if s >= 2 else 0
