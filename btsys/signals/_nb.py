"""Numba kernels for labels and sample weights (AFML ch. 3-4). Indices are bar positions."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def triple_barrier_nb(close, t0, target, pt, sl, max_hold, side):
    """First barrier touched by each event.

    For event ``i`` starting at bar ``t0[i]`` the path return at bar ``j > t0[i]`` is
    ``side[i] * (close[j] / close[t0[i]] - 1)``. The upper barrier is ``pt * target[i]`` (off if
    ``pt <= 0``), the lower ``-sl * target[i]`` (off if ``sl <= 0``), the vertical barrier bar
    ``t0[i] + max_hold``. Returns ``(t1, ret, barrier)``: the touch bar, the return there and
    ``1`` (upper), ``-1`` (lower), ``0`` (vertical); ``t1 = -1`` when no barrier is reached
    within the data (the label is not known yet).
    """
    n = close.shape[0]
    m = t0.shape[0]
    t1 = np.full(m, -1, dtype=np.int64)
    ret = np.full(m, np.nan)
    barrier = np.zeros(m, dtype=np.int8)
    for i in range(m):
        s = t0[i]
        c0 = close[s]
        up = pt * target[i]
        lo = -sl * target[i]
        last = s + max_hold
        stop = min(last, n - 1)
        for j in range(s + 1, stop + 1):
            r = side[i] * (close[j] / c0 - 1.0)
            if pt > 0.0 and r >= up:
                t1[i] = j
                ret[i] = r
                barrier[i] = 1
                break
            if sl > 0.0 and r <= lo:
                t1[i] = j
                ret[i] = r
                barrier[i] = -1
                break
            if j == last:
                t1[i] = j
                ret[i] = r
                barrier[i] = 0
    return t1, ret, barrier


@njit(cache=True)
def num_concurrent_nb(n_bars, t0, t1):
    """Number of events whose closed span ``[t0, t1]`` covers each bar (AFML 4.1); O(n + m)."""
    d = np.zeros(n_bars + 1, dtype=np.int64)
    for i in range(t0.shape[0]):
        d[t0[i]] += 1
        d[t1[i] + 1] -= 1
    c = np.empty(n_bars, dtype=np.int64)
    acc = 0
    for t in range(n_bars):
        acc += d[t]
        c[t] = acc
    return c


@njit(cache=True)
def average_uniqueness_nb(t0, t1, conc):
    """Mean of ``1 / c_t`` over each event's span (AFML 4.2), with prefix sums; O(n + m)."""
    n = conc.shape[0]
    cs = np.zeros(n + 1)
    for t in range(n):
        cs[t + 1] = cs[t] + (1.0 / conc[t] if conc[t] > 0 else 0.0)
    out = np.empty(t0.shape[0])
    for i in range(t0.shape[0]):
        out[i] = (cs[t1[i] + 1] - cs[t0[i]]) / (t1[i] - t0[i] + 1)
    return out


@njit(cache=True)
def return_attribution_nb(log_ret, t0, t1, conc):
    """``|sum over (t0, t1] of r_t / c_t|`` per event (AFML 4.10, before normalisation)."""
    n = conc.shape[0]
    cs = np.zeros(n + 1)
    for t in range(n):
        v = log_ret[t] / conc[t] if (conc[t] > 0 and not np.isnan(log_ret[t])) else 0.0
        cs[t + 1] = cs[t] + v
    out = np.empty(t0.shape[0])
    for i in range(t0.shape[0]):
        out[i] = abs(cs[t1[i] + 1] - cs[t0[i] + 1])
    return out
