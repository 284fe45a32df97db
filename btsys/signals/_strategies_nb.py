"""Numba kernels of the rule strategies: one signal kernel per strategy.

The single run (``generate_signals``), the kernel sweep and the Spark sweep all call these, so a
sweep row trades exactly the signals of the run it stands for. A kernel reads precomputed
indicator series (the feature library's kernels: a sweep computes each distinct window once) and
writes four bool arrays: long entry, long exit, short entry, short exit, for bars
``[start, stop)`` only (a walk-forward window needs no more; the state before ``start`` is read
from bar ``start - 1``). A side whose two arrays have length 0 is skipped (a long-only sweep
computes no short signals).

Edges, as every rule strategy emits them: ``cond`` *becomes* true at bar ``t`` when it is true at
``t`` and false at ``t - 1`` (a condition already true at the first bar counts). State strategies
(crosses, momentum) enter on the rising edge of their long/short state and exit on its falling
edge. Comparisons with NaN (warm-up) are false.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from btsys.features import _nb as fnb

# dispatch codes of :func:`rule_signals_nb` (btsys.signals.specs maps strategy names to them)
CROSS = 0  # ma_cross, ema_cross: indicators (fast, slow)
RSI_REVERSION = 1  # indicator (rsi), scalars (lower, upper, exit)
BOLLINGER = 2  # indicators (mid, std), scalar (k)
MOMENTUM = 3  # indicator (log return), scalar (threshold)


# indicator family codes of :func:`indicator_nb` (btsys.signals.specs.FAMILIES maps names to them)
SMA = 0
EMA = 1
RSI = 2
STD = 3
LOG_RETURN = 4


@njit(cache=True)
def indicator_nb(close, family, window):
    """One indicator series of close: the feature library's kernel of ``family``."""
    if family == SMA:
        return fnb.rolling_mean_nb(close, window)
    if family == EMA:
        return fnb.ema_nb(close, window)
    if family == RSI:
        return fnb.rsi_nb(close, window)
    if family == STD:
        return fnb.rolling_std_nb(close, window, 0)
    return fnb.log_return_nb(close, window)


@njit(cache=True, parallel=True)
def indicators_nb(close, families, windows, out):
    """``out[j]``: the series of ``families[j]`` over ``windows[j]`` bars (:func:`indicator_nb`), the
    rows computed in parallel (a sweep's distinct indicator windows)."""
    for j in prange(families.shape[0]):
        out[j] = indicator_nb(close, families[j], windows[j])


@njit(cache=True, inline="always")
def _edge(now, prev):
    """``now and not prev``, branch-free (the signal loops then vectorise)."""
    return now & (not prev)


@njit(cache=True)
def state_signals_nb(long_state, short_state, start, stop, le, lx, se, sx):
    """Edges of a long and a short state (bool arrays) over bars ``[start, stop)``."""
    pl = long_state[start - 1] if start > 0 else False
    ps = short_state[start - 1] if start > 0 else False
    for i in range(start, stop):
        a = long_state[i]
        b = short_state[i]
        le[i] = _edge(a, pl)
        lx[i] = _edge(pl, a)
        se[i] = _edge(b, ps)
        sx[i] = _edge(ps, b)
        pl = a
        ps = b


# A side's signals are written only when its arrays are given (length > 0): a long-only sweep
# writes no short signals. Each side is its own loop over the bars (a loop that tests per bar
# which sides to write does not vectorise), over views of bars [start, stop) indexed from 0 (a
# loop from a run-time ``start`` keeps numba's negative-index check per access, which also
# prevents vectorising: 3 x slower).
@njit(cache=True, inline="always")
def _above(sign, x, level):
    """``sign * x > level`` (``sign`` +-1: the negation is exact, so ``-x > -l`` is ``x < l``)."""
    return sign * x > level


@njit(cache=True)
def _cross_side_nb(x, y, start, stop, entry, exit_):
    """Edges of the state ``x > y``: ``entry`` when it becomes true, ``exit_`` when it ends."""
    prev = x[start - 1] > y[start - 1] if start > 0 else False
    x, y, entry, exit_ = x[start:stop], y[start:stop], entry[start:stop], exit_[start:stop]
    for i in range(x.shape[0]):
        now = x[i] > y[i]
        entry[i] = _edge(now, prev)
        exit_[i] = _edge(prev, now)
        prev = now


@njit(cache=True)
def _level_side_nb(x, sign, level, start, stop, entry, exit_):
    """Edges of the state ``sign * x > level`` (see :func:`_cross_side_nb`)."""
    prev = _above(sign, x[start - 1], level) if start > 0 else False
    x, entry, exit_ = x[start:stop], entry[start:stop], exit_[start:stop]
    for i in range(x.shape[0]):
        now = _above(sign, x[i], level)
        entry[i] = _edge(now, prev)
        exit_[i] = _edge(prev, now)
        prev = now


@njit(cache=True)
def _level_edges_nb(x, s1, l1, s2, l2, start, stop, out1, out2):
    """Rising edges of two conditions on ``x``: ``s1 * x > l1`` into ``out1``, ``s2 * x > l2``
    into ``out2``."""
    p1 = _above(s1, x[start - 1], l1) if start > 0 else False
    p2 = _above(s2, x[start - 1], l2) if start > 0 else False
    x, out1, out2 = x[start:stop], out1[start:stop], out2[start:stop]
    for i in range(x.shape[0]):
        a = _above(s1, x[i], l1)
        b = _above(s2, x[i], l2)
        out1[i] = _edge(a, p1)
        out2[i] = _edge(b, p2)
        p1 = a
        p2 = b


@njit(cache=True)
def cross_signals_nb(fast, slow, start, stop, le, lx, se, sx):
    """``ma_cross``/``ema_cross``: long while fast > slow, short while slow > fast."""
    if le.shape[0] > 0:
        _cross_side_nb(fast, slow, start, stop, le, lx)
    if se.shape[0] > 0:
        _cross_side_nb(slow, fast, start, stop, se, sx)


@njit(cache=True)
def momentum_signals_nb(ret, threshold, start, stop, le, lx, se, sx):
    """``momentum``: long while the look-back log return > threshold, short while < -threshold."""
    if le.shape[0] > 0:
        _level_side_nb(ret, 1.0, threshold, start, stop, le, lx)
    if se.shape[0] > 0:
        _level_side_nb(ret, -1.0, threshold, start, stop, se, sx)


@njit(cache=True)
def rsi_reversion_signals_nb(rsi, lower, upper, exit_, start, stop, le, lx, se, sx):
    """``rsi_reversion``: long entry when RSI falls below ``lower``, long exit when it rises above
    ``exit_``; short entry above ``upper``, short exit below ``exit_`` (each on its edge)."""
    if le.shape[0] > 0:
        _level_edges_nb(rsi, -1.0, -lower, 1.0, exit_, start, stop, le, lx)
    if se.shape[0] > 0:
        _level_edges_nb(rsi, 1.0, upper, -1.0, -exit_, start, stop, se, sx)


@njit(cache=True)
def _bollinger_side_nb(close, mid, std, k, sign, start, stop, entry, exit_):
    """One side of :func:`bollinger_signals_nb` (``sign`` +1: long, -1: short; ``-mid + w`` is
    exactly ``-(mid - w)``): entry on ``sign * close > sign * mid + k std``, exit on
    ``sign * mid > sign * close``."""
    pa = False
    pb = False
    if start > 0:
        j = start - 1
        pa = sign * close[j] > sign * mid[j] + k * std[j]
        pb = sign * mid[j] > sign * close[j]
    close, mid, std = close[start:stop], mid[start:stop], std[start:stop]
    entry, exit_ = entry[start:stop], exit_[start:stop]
    for i in range(close.shape[0]):
        c = sign * close[i]
        m = sign * mid[i]
        a = c > m + k * std[i]
        b = m > c
        entry[i] = _edge(a, pa)
        exit_[i] = _edge(b, pb)
        pa = a
        pb = b


@njit(cache=True)
def bollinger_signals_nb(close, mid, std, k, start, stop, le, lx, se, sx):
    """``bollinger_breakout``: long entry on a close above ``mid + k std``, long exit on a close
    below ``mid``; short entry below ``mid - k std``, short exit above ``mid``."""
    if le.shape[0] > 0:
        _bollinger_side_nb(close, mid, std, k, 1.0, start, stop, le, lx)
    if se.shape[0] > 0:
        _bollinger_side_nb(close, mid, std, k, -1.0, start, stop, se, sx)


@njit(cache=True)
def rule_signals_nb(code, close, ind, rows, sp, start, stop, le, lx, se, sx):
    """Signals of the single-symbol rule strategy ``code`` over bars ``[start, stop)`` (a side whose
    two arrays have length 0 is not computed).

    ``ind`` holds indicator series as rows, ``rows`` the rows this strategy reads (its indicator
    slots, see ``btsys.signals.specs``), ``sp`` its scalar parameters.
    """
    if code == CROSS:
        cross_signals_nb(ind[rows[0]], ind[rows[1]], start, stop, le, lx, se, sx)
    elif code == RSI_REVERSION:
        rsi_reversion_signals_nb(ind[rows[0]], sp[0], sp[1], sp[2], start, stop, le, lx, se, sx)
    elif code == BOLLINGER:
        bollinger_signals_nb(close, ind[rows[0]], ind[rows[1]], sp[0], start, stop, le, lx, se, sx)
    else:
        momentum_signals_nb(ind[rows[0]], sp[0], start, stop, le, lx, se, sx)


# --------------------------------------------------------------------------- xs_momentum
@njit(cache=True)
def xs_scores_nb(close, lookback, skip, out):
    """``out[t] = ln(close[t - skip] / close[t - lookback])`` (NaN for ``t < lookback``)."""
    n = close.shape[0]
    for t in range(min(lookback, n)):
        out[t] = np.nan
    for t in range(lookback, n):
        out[t] = math.log(close[t - skip] / close[t - lookback])


@njit(cache=True)
def _rank_desc_nb(v, ok, order):
    """Indices of ``ok`` sorted by ``v`` descending, ties in index order (stable); returns count."""
    m = 0
    for k in range(v.shape[0]):
        if not ok[k]:
            continue
        j = m
        while j > 0 and v[k] > v[order[j - 1]]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = k
        m += 1
    return m


@njit(cache=True)
def _xs_targets_nb(latest, ok, top_n, bottom_n, order, target):
    """Targets (+1 long, -1 short, 0 flat) from the latest scores of the symbols ``ok`` (finite
    scores of members): the top ``top_n`` long, the bottom ``bottom_n`` that are not long short;
    the others (unranked: NaN scores, non-members) flat."""
    target[:] = 0
    m = _rank_desc_nb(latest, ok, order)
    n_long = min(top_n, m)
    for j in range(n_long):
        target[order[j]] = 1
    for j in range(min(bottom_n, m - n_long)):  # bottom-ranked first, never one that is long
        target[order[m - 1 - j]] = -1


@njit(cache=True)
def xs_momentum_signals_nb(has, score, member, reb, top_n, bottom_n, le, lx, se, sx):
    """Cross-sectional momentum on a merged timeline (rows = times, columns = symbols).

    ``score[t, k]`` is symbol k's score at its bar closing at row t (``has[t, k]``). At each
    rebalance row (``reb[t]``) the latest finite score of every symbol that is a member at that
    row (``member[t, k]``; ``member`` of shape (0, 0): every symbol, always) is ranked (ties by
    column): the top ``top_n`` are to be long, the bottom ``bottom_n`` (not already long) short,
    the others flat. Each symbol acts on that target at its first bar at or after the rebalance
    row (a later rebalance before that bar replaces it): enter or reverse into the target side,
    else exit. Signals are written where ``has`` is true.
    """
    T, K = has.shape
    has_member = member.shape[0] > 0
    latest = np.full(K, np.nan)
    ok = np.zeros(K, dtype=np.bool_)
    order = np.empty(K, dtype=np.int64)
    target = np.zeros(K, dtype=np.int64)
    pending = np.zeros(K, dtype=np.bool_)
    for t in range(T):
        for k in range(K):
            if has[t, k] and not np.isnan(score[t, k]):
                latest[k] = score[t, k]
        if reb[t]:
            for k in range(K):
                ok[k] = not np.isnan(latest[k]) and (not has_member or member[t, k])
            _xs_targets_nb(latest, ok, top_n, bottom_n, order, target)
            pending[:] = True
        for k in range(K):
            if has[t, k]:
                w = target[k] if pending[k] else 2  # 2: no decision at this bar
                le[t, k] = w == 1
                lx[t, k] = w != 1 and w != 2
                se[t, k] = w == -1
                sx[t, k] = w != -1 and w != 2
                pending[k] = False
