"""Numba kernels for bars: resumable single-pass scans over an ordered tick stream.

Every kernel processes ticks ``start:end`` of the given column arrays and carries its complete
state in two small arrays (``ist`` int64, ``fst`` float64) so that a stream can be fed in any
number of pieces (files, days, partitions) and still produce exactly the bars of one pass over the
whole stream: the kernels never look at anything but the state and the current tick.

A kernel stops early, returning ``(next_row, n_out, err)``, when

* the output buffer is full (``n_out == out_i.shape[0]``): the caller drains it and calls again
  from ``next_row``;
* a tick is invalid (``err != 0``, ``next_row`` is the offending row, not consumed): see ``ERR_*``.

Output rows: ``out_i[k] = (ts_open, ts_close, n_ticks)``,
``out_f[k] = (open, high, low, close, volume, quote_volume, buy_volume, vwap, threshold)``.

Tick side: ``side[i]`` is 0 for a taker buy (``is_buyer_maker == False``), 1 for a taker sell and
2 for unknown; unknown ticks take the tick rule's sign (last non-zero price change, carried
across calls; +1 before the first price change).
"""

from __future__ import annotations

import numba as nb
import numpy as np

# ---------------------------------------------------------------- state layout (int64)
I_HAS = 0  # 1 while a bar is open
I_TS_OPEN = 1
I_TS_CLOSE = 2
I_N = 3  # ticks in the open bar
I_LAST_TS = 4  # last consumed tick (ordering check)
I_LAST_TID = 5
I_SEEN = 6  # 1 once a tick has been consumed
I_TR_SIGN = 7  # tick-rule sign (+1 / -1)
I_BIN = 8  # time bars: bin of the open bar
I_WARM = 9  # imbalance/run bars: 1 once the expectations are initialised
N_ISTATE = 10

# ---------------------------------------------------------------- state layout (float64)
F_OPEN = 0
F_HIGH = 1
F_LOW = 2
F_CLOSE = 3
F_VOL = 4
F_QVOL = 5
F_BUY = 6
F_PV = 7  # sum(price * qty), for vwap
F_ACC = 8  # threshold bars: accumulated measure of the open bar
F_THR = 9  # threshold of the open bar (fixed when it opens)
F_LAST_PRICE = 10
F_DAY_TOTAL = 11  # threshold bars: measure accumulated since the caller last reset it
F_E_T = 12  # imbalance/run: E[T], expected ticks per bar
F_E_A = 13  # imbalance: E[b*v] per tick; run: E[v * 1{b=+1}] per tick
F_E_B = 14  # run: E[v * 1{b=-1}] per tick
F_THETA = 15  # imbalance: signed flow of the open bar; run: buy flow of the open bar
F_SELL = 16  # run: sell flow of the open bar
N_FSTATE = 17

N_OUT_I = 3
N_OUT_F = 9

# ---------------------------------------------------------------- measures and errors
M_TICK = 0
M_VOLUME = 1
M_DOLLAR = 2

ERR_PRICE = 1  # price not finite and > 0
ERR_QTY = 2  # qty not finite and > 0
ERR_QUOTE = 3  # quote_qty not finite and > 0
ERR_ORDER = 4  # (ts, trade_id) not strictly increasing
ERR_SIDE = 5  # side code not in {0, 1, 2}
ERR_BIN = 6  # time bars: bin id decreased

ERR_TEXT = {
    ERR_PRICE: "price must be finite and > 0",
    ERR_QTY: "qty must be finite and > 0 (zero-volume rows are rejected)",
    ERR_QUOTE: "quote_qty must be finite and > 0 (zero-volume rows are rejected)",
    ERR_ORDER: "ticks must be sorted by (ts, trade_id) with no duplicates",
    ERR_SIDE: "side code must be 0 (taker buy), 1 (taker sell) or 2 (unknown)",
    ERR_BIN: "time-bar bin ids must not decrease",
}

_INF = np.inf
_I64_MIN = np.iinfo(np.int64).min


def new_state() -> tuple[np.ndarray, np.ndarray]:
    """Fresh kernel state: no open bar, nothing seen, tick-rule sign +1."""
    ist = np.zeros(N_ISTATE, dtype=np.int64)
    fst = np.zeros(N_FSTATE, dtype=np.float64)
    ist[I_TR_SIGN] = 1
    return ist, fst


# ---------------------------------------------------------------- shared per-tick helpers
# Every bar kernel runs the same per-tick steps, in this order: ``tick_ok_nb`` (else
# ``tick_error_nb``), ``tick_rule_nb``, ``buy_flag_nb``, ``bar_add_nb`` with ``measure_nb``'s
# amount, and ``emit_bar_nb`` when the bar closes. They are inlined (numba IR), so the compiled
# loops are those of hand-written code.
_inline = nb.njit(cache=True, inline="always")


@_inline
def tick_ok_nb(t, ti, p, q, d, sd, last_ts, last_tid):
    """Whether a tick is valid and after ``(last_ts, last_tid)``: branch-free (ties in ``ts`` are
    common in real data and a data-dependent branch would be mispredicted)."""
    return (
        (p > 0.0)
        & (p < _INF)
        & (q > 0.0)
        & (q < _INF)
        & (d > 0.0)
        & (d < _INF)
        & (sd <= 2)
        & ((t > last_ts) | ((t == last_ts) & (ti > last_tid)))
    )


@nb.njit(cache=True)
def tick_error_nb(p, q, d, sd):
    """Why a tick failed :func:`tick_ok_nb` (``ERR_*``); the ordering check comes last."""
    if not (p > 0.0 and p < _INF):
        return ERR_PRICE
    if not (q > 0.0 and q < _INF):
        return ERR_QTY
    if not (d > 0.0 and d < _INF):
        return ERR_QUOTE
    if sd > 2:
        return ERR_SIDE
    return ERR_ORDER


@_inline
def tick_rule_nb(p, lastp, trs):
    """The tick-rule sign after price ``p``: the sign of the last non-zero price change, ``trs``
    when unchanged (branch-free; ``lastp`` is 0.0 before the first tick: the first sign is +1)."""
    sg = np.int64(p > lastp) - np.int64(p < lastp)
    return sg + np.int64(sg == 0) * trs


@_inline
def buy_flag_nb(sd, trs):
    """1.0 for a buy (taker buy, or unknown side with tick-rule sign +1), else 0.0: ``q * flag``
    is exactly ``q`` or +0.0."""
    return np.float64((sd == 0) | ((sd == 2) & (trs > 0)))


@_inline
def measure_nb(measure, q, d):
    """A tick's amount under ``measure`` (``M_*``): 1, ``qty`` or ``quote_qty``."""
    if measure == M_DOLLAR:
        return d
    if measure == M_VOLUME:
        return q
    return 1.0


@_inline
def bar_add_nb(h, lo, vol, qvol, pv, buy, p, q, d, fb):
    """The open bar's ``(high, low, volume, quote volume, sum p*q, buy volume)`` after a tick."""
    return max(h, p), min(lo, p), vol + q, qvol + d, pv + p * q, buy + q * fb


@_inline
def emit_bar_nb(out_i, out_f, k, ts_open, ts_close, n, o, h, lo, c, vol, qvol, buy, pv, thr):
    """Write a finished bar into output row ``k``."""
    out_i[k, 0] = ts_open
    out_i[k, 1] = ts_close
    out_i[k, 2] = n
    out_f[k, 0] = o
    out_f[k, 1] = h
    out_f[k, 2] = lo
    out_f[k, 3] = c
    out_f[k, 4] = vol
    out_f[k, 5] = qvol
    out_f[k, 6] = buy
    out_f[k, 7] = pv / vol
    out_f[k, 8] = thr


@nb.njit(cache=True, nogil=True)
def threshold_bars_nb(
    ts, tid, price, qty, quote, side, measure, threshold, start, end, ist, fst, out_i, out_f, n_out
):
    """Tick / volume / dollar bars (``measure`` = M_TICK / M_VOLUME / M_DOLLAR).

    A bar opens on a tick with the accumulator at zero and takes ``threshold`` as its threshold
    (a dynamic caller passes each day's threshold, so a bar keeps the threshold of the day it
    opened in); it closes on the first tick at which the accumulated measure is ``>=`` its
    threshold, that tick included; overflow is discarded.
    """
    cap = out_i.shape[0]
    has = ist[I_HAS]
    ts_open = ist[I_TS_OPEN]
    ts_close = ist[I_TS_CLOSE]
    n = ist[I_N]
    last_ts = ist[I_LAST_TS]
    last_tid = ist[I_LAST_TID]
    seen = ist[I_SEEN]
    trs = ist[I_TR_SIGN]
    o = fst[F_OPEN]
    h = fst[F_HIGH]
    lo = fst[F_LOW]
    c = fst[F_CLOSE]
    vol = fst[F_VOL]
    qvol = fst[F_QVOL]
    buy = fst[F_BUY]
    pv = fst[F_PV]
    acc = fst[F_ACC]
    thr = fst[F_THR]
    lastp = fst[F_LAST_PRICE]
    day_total = fst[F_DAY_TOTAL]
    if seen == 0:
        last_ts = _I64_MIN
        lastp = 0.0
    err = 0
    i = start
    while i < end:
        if n_out >= cap:
            break
        t = ts[i]
        p = price[i]
        q = qty[i]
        d = quote[i]
        sd = side[i]
        ti = tid[i]
        if not tick_ok_nb(t, ti, p, q, d, sd, last_ts, last_tid):
            err = tick_error_nb(p, q, d, sd)
        if err != 0:
            break
        trs = tick_rule_nb(p, lastp, trs)
        last_ts = t
        last_tid = ti
        lastp = p
        fb = buy_flag_nb(sd, trs)
        if has == 0:
            has = 1
            ts_open = t
            o = p
            h = p
            lo = p
            vol = 0.0
            qvol = 0.0
            buy = 0.0
            pv = 0.0
            n = 0
            acc = 0.0
            thr = threshold
        h, lo, vol, qvol, pv, buy = bar_add_nb(h, lo, vol, qvol, pv, buy, p, q, d, fb)
        c = p
        ts_close = t
        n += 1
        m = measure_nb(measure, q, d)
        acc += m
        day_total += m
        if acc >= thr:
            emit_bar_nb(out_i, out_f, n_out, ts_open, ts_close, n, o, h, lo, c, vol, qvol, buy, pv, thr)
            n_out += 1
            has = 0
        i += 1
    ist[I_HAS] = has
    ist[I_TS_OPEN] = ts_open
    ist[I_TS_CLOSE] = ts_close
    ist[I_N] = n
    if i > start:
        seen = 1
    else:
        last_ts = ist[I_LAST_TS]
    ist[I_LAST_TS] = last_ts
    ist[I_LAST_TID] = last_tid
    ist[I_SEEN] = seen
    ist[I_TR_SIGN] = trs
    fst[F_OPEN] = o
    fst[F_HIGH] = h
    fst[F_LOW] = lo
    fst[F_CLOSE] = c
    fst[F_VOL] = vol
    fst[F_QVOL] = qvol
    fst[F_BUY] = buy
    fst[F_PV] = pv
    fst[F_ACC] = acc
    fst[F_THR] = thr
    fst[F_LAST_PRICE] = lastp
    fst[F_DAY_TOTAL] = day_total
    return i, n_out, err


@nb.njit(cache=True, nogil=True)
def time_bars_nb(
    ts, tid, price, qty, quote, side, bin_us, bins, label, start, end, ist, fst, out_i, out_f, n_out
):
    """Time bars: all ticks whose bin is equal form one bar.

    The bin of tick ``i`` is ``ts[i] // bin_us`` when ``bin_us > 0`` (fixed intervals, epoch
    aligned), else ``bins[i]`` (calendar intervals, computed by the caller). A bar is emitted when
    the first tick of a later bin arrives, so the open bar is always the trailing partial one.
    ``label`` is written as the bar's threshold (the interval in microseconds, or NaN).
    """
    cap = out_i.shape[0]
    has = ist[I_HAS]
    ts_open = ist[I_TS_OPEN]
    ts_close = ist[I_TS_CLOSE]
    n = ist[I_N]
    last_ts = ist[I_LAST_TS]
    last_tid = ist[I_LAST_TID]
    seen = ist[I_SEEN]
    trs = ist[I_TR_SIGN]
    cur = ist[I_BIN]
    o = fst[F_OPEN]
    h = fst[F_HIGH]
    lo = fst[F_LOW]
    c = fst[F_CLOSE]
    vol = fst[F_VOL]
    qvol = fst[F_QVOL]
    buy = fst[F_BUY]
    pv = fst[F_PV]
    lastp = fst[F_LAST_PRICE]
    if seen == 0:
        last_ts = _I64_MIN
        lastp = 0.0
    err = 0
    i = start
    while i < end:
        if n_out >= cap:
            break
        t = ts[i]
        p = price[i]
        q = qty[i]
        d = quote[i]
        sd = side[i]
        ti = tid[i]
        if not tick_ok_nb(t, ti, p, q, d, sd, last_ts, last_tid):
            err = tick_error_nb(p, q, d, sd)
        b = t // bin_us if bin_us > 0 else bins[i]
        if err == 0 and has != 0 and b < cur:
            err = ERR_BIN
        if err != 0:
            break
        trs = tick_rule_nb(p, lastp, trs)
        last_ts = t
        last_tid = ti
        lastp = p
        fb = buy_flag_nb(sd, trs)
        if has != 0 and b != cur:
            emit_bar_nb(out_i, out_f, n_out, ts_open, ts_close, n, o, h, lo, c, vol, qvol, buy, pv, label)
            n_out += 1
            has = 0
        if has == 0:
            has = 1
            cur = b
            ts_open = t
            o = p
            h = p
            lo = p
            vol = 0.0
            qvol = 0.0
            buy = 0.0
            pv = 0.0
            n = 0
        h, lo, vol, qvol, pv, buy = bar_add_nb(h, lo, vol, qvol, pv, buy, p, q, d, fb)
        c = p
        ts_close = t
        n += 1
        i += 1
    ist[I_HAS] = has
    ist[I_TS_OPEN] = ts_open
    ist[I_TS_CLOSE] = ts_close
    ist[I_N] = n
    if i > start:
        seen = 1
    else:
        last_ts = ist[I_LAST_TS]
    ist[I_LAST_TS] = last_ts
    ist[I_LAST_TID] = last_tid
    ist[I_SEEN] = seen
    ist[I_TR_SIGN] = trs
    ist[I_BIN] = cur
    fst[F_OPEN] = o
    fst[F_HIGH] = h
    fst[F_LOW] = lo
    fst[F_CLOSE] = c
    fst[F_VOL] = vol
    fst[F_QVOL] = qvol
    fst[F_BUY] = buy
    fst[F_PV] = pv
    fst[F_LAST_PRICE] = lastp
    fst[F_THR] = label
    return i, n_out, err


# ---------------------------------------------------------------- imbalance/run bar phases
@_inline
def flow_threshold_nb(run, warm, e_t, e_a, e_b, fmin, fmax):
    """A new imbalance/run bar's threshold from the expectations (NaN while warming up)."""
    if warm == 0:
        return np.nan
    et = min(max(e_t, fmin), fmax)
    if run:
        return et * max(e_a, e_b)
    return et * abs(e_a)


@_inline
def flow_add_nb(run, theta, sell, v, fb):
    """The open bar's ``(theta, sell)`` after a tick of amount ``v`` and buy flag ``fb``
    (branch-free: ``v * 1.0 == v``, ``v * 0.0 == +0.0``, ``v * -1.0 == -v`` exactly)."""
    if run:
        return theta + v * fb, sell + v * (1.0 - fb)
    return theta + v * (2.0 * fb - 1.0), sell


@_inline
def flow_closes_nb(run, warm, n, theta, sell, thr, min_ticks, max_ticks, warm_len):
    """Whether the open imbalance/run bar of ``n`` ticks closes at this tick."""
    if n >= max_ticks:
        return True
    if n < min_ticks:
        return False
    if warm == 0:
        return n >= warm_len
    if run:
        return max(theta, sell) >= thr
    return abs(theta) >= thr


@_inline
def flow_expect_nb(warm, n, theta, sell, e_t, e_a, e_b, alpha_t, alpha_a):
    """``(E[T], E[a], E[b])`` after a bar of ``n`` ticks closed: the warm-up bar sets them, later
    bars move them by their EWMA."""
    fn = float(n)
    if warm == 0:
        return fn, theta / fn, sell / fn
    return e_t + alpha_t * (fn - e_t), e_a + alpha_a * (theta / fn - e_a), e_b + alpha_a * (sell / fn - e_b)


@nb.njit(cache=True, nogil=True)
def flow_bars_nb(
    ts,
    tid,
    price,
    qty,
    quote,
    side,
    measure,
    run,
    t_init,
    alpha_t,
    alpha_a,
    min_ticks,
    max_ticks,
    start,
    end,
    ist,
    fst,
    out_i,
    out_f,
    n_out,
):
    """Imbalance (``run=False``) and run (``run=True``) bars, AFML 2.3.2.

    Per tick, ``v`` is 1, ``qty`` or ``quote_qty`` (``measure``) and ``b`` the tick's sign.

    * Imbalance: ``theta = sum(b * v)`` over the open bar; it closes when
      ``|theta| >= E[T] * |E[b v]|``.
    * Run: ``theta = max(sum over buys of v, sum over sells of v)``; it closes when
      ``theta >= E[T] * max(E[v 1{b=+1}], E[v 1{b=-1}])``.

    The threshold is fixed when a bar opens, from expectations updated only when a bar closes
    (EWMA with ``alpha_t`` for E[T], ``alpha_a`` for the per-tick flows, each bar contributing its
    own mean), so it never uses the bar's own ticks. ``E[T]`` enters the threshold clipped to
    ``[min_ticks, max_ticks]``; a bar never closes before ``min_ticks`` ticks and always closes at
    ``max_ticks``. Until the flow expectations are initialised (``I_WARM == 0``), bars are
    warm-up bars of ``round(t_init)`` ticks (clipped likewise), threshold NaN; the first one
    initialises E[T] and the flow expectations from its own (completed) ticks.
    """
    cap = out_i.shape[0]
    has = ist[I_HAS]
    ts_open = ist[I_TS_OPEN]
    ts_close = ist[I_TS_CLOSE]
    n = ist[I_N]
    last_ts = ist[I_LAST_TS]
    last_tid = ist[I_LAST_TID]
    seen = ist[I_SEEN]
    trs = ist[I_TR_SIGN]
    warm = ist[I_WARM]
    o = fst[F_OPEN]
    h = fst[F_HIGH]
    lo = fst[F_LOW]
    c = fst[F_CLOSE]
    vol = fst[F_VOL]
    qvol = fst[F_QVOL]
    buy = fst[F_BUY]
    pv = fst[F_PV]
    thr = fst[F_THR]
    lastp = fst[F_LAST_PRICE]
    e_t = fst[F_E_T]
    e_a = fst[F_E_A]
    e_b = fst[F_E_B]
    theta = fst[F_THETA]
    sell = fst[F_SELL]
    fmin = float(min_ticks)
    fmax = float(max_ticks)
    warm_len = min(max(np.int64(t_init + 0.5), min_ticks), max_ticks)
    if seen == 0:
        last_ts = _I64_MIN
        lastp = 0.0
    err = 0
    i = start
    while i < end:
        if n_out >= cap:
            break
        t = ts[i]
        p = price[i]
        q = qty[i]
        d = quote[i]
        sd = side[i]
        ti = tid[i]
        if not tick_ok_nb(t, ti, p, q, d, sd, last_ts, last_tid):
            err = tick_error_nb(p, q, d, sd)
        if err != 0:
            break
        trs = tick_rule_nb(p, lastp, trs)
        last_ts = t
        last_tid = ti
        lastp = p
        fb = buy_flag_nb(sd, trs)
        if has == 0:
            has = 1
            ts_open = t
            o = p
            h = p
            lo = p
            vol = 0.0
            qvol = 0.0
            buy = 0.0
            pv = 0.0
            n = 0
            theta = 0.0
            sell = 0.0
            thr = flow_threshold_nb(run, warm, e_t, e_a, e_b, fmin, fmax)
        h, lo, vol, qvol, pv, buy = bar_add_nb(h, lo, vol, qvol, pv, buy, p, q, d, fb)
        c = p
        ts_close = t
        n += 1
        v = measure_nb(measure, q, d)
        theta, sell = flow_add_nb(run, theta, sell, v, fb)
        if flow_closes_nb(run, warm, n, theta, sell, thr, min_ticks, max_ticks, warm_len):
            emit_bar_nb(out_i, out_f, n_out, ts_open, ts_close, n, o, h, lo, c, vol, qvol, buy, pv, thr)
            n_out += 1
            has = 0
            e_t, e_a, e_b = flow_expect_nb(warm, n, theta, sell, e_t, e_a, e_b, alpha_t, alpha_a)
            warm = 1
        i += 1
    ist[I_HAS] = has
    ist[I_TS_OPEN] = ts_open
    ist[I_TS_CLOSE] = ts_close
    ist[I_N] = n
    if i > start:
        seen = 1
    else:
        last_ts = ist[I_LAST_TS]
    ist[I_LAST_TS] = last_ts
    ist[I_LAST_TID] = last_tid
    ist[I_SEEN] = seen
    ist[I_TR_SIGN] = trs
    ist[I_WARM] = warm
    fst[F_OPEN] = o
    fst[F_HIGH] = h
    fst[F_LOW] = lo
    fst[F_CLOSE] = c
    fst[F_VOL] = vol
    fst[F_QVOL] = qvol
    fst[F_BUY] = buy
    fst[F_PV] = pv
    fst[F_THR] = thr
    fst[F_LAST_PRICE] = lastp
    fst[F_E_T] = e_t
    fst[F_E_A] = e_a
    fst[F_E_B] = e_b
    fst[F_THETA] = theta
    fst[F_SELL] = sell
    return i, n_out, err


@nb.njit(cache=True, nogil=True)
def day_runs_nb(ts, day_us):
    """Start offsets of the runs of equal ``ts // day_us`` (plus ``len(ts)`` at the end)."""
    n = ts.shape[0]
    out = np.empty(n + 1, dtype=np.int64)
    k = 0
    prev = np.int64(0)
    for i in range(n):
        dd = ts[i] // day_us
        if i == 0 or dd != prev:
            out[k] = i
            k += 1
            prev = dd
    out[k] = n
    return out[: k + 1]


# ---------------------------------------------------------------- threshold bars, two passes
@nb.njit(cache=True, nogil=True)
def _segment_nb(ts, tid, price, qty, quote, side, s, e, start, fresh, ist, fst, seg_i, seg_f, g):
    """Reduce ticks ``s:e`` as one bar (or the continuation of the carried open bar).

    Same arithmetic, in the same order, as :func:`threshold_bars_nb` over those ticks. The
    ordering check and the tick rule start from tick ``s - 1`` (or the carried state when
    ``s == start``); the tick-rule sign at ``s`` is found by looking back for the last price
    change (or taken from the carried state). Returns False if any tick is invalid.
    """
    seen = ist[I_SEEN]
    if s == start:
        last_ts = ist[I_LAST_TS] if seen != 0 else _I64_MIN
        last_tid = ist[I_LAST_TID]
        lastp = fst[F_LAST_PRICE] if seen != 0 else 0.0
        trs = ist[I_TR_SIGN]
    else:
        last_ts = ts[s - 1]
        last_tid = tid[s - 1]
        lastp = price[s - 1]
        trs = ist[I_TR_SIGN]
        j = s - 1
        while j > start:
            if price[j] != price[j - 1]:
                trs = 1 if price[j] > price[j - 1] else -1
                break
            j -= 1
        if j == start:
            p0 = fst[F_LAST_PRICE] if seen != 0 else 0.0
            if price[start] != p0:
                trs = 1 if price[start] > p0 else -1
    if fresh:
        p = price[s]
        ts_open = ts[s]
        o = p
        h = p
        lo = p
        vol = 0.0
        qvol = 0.0
        buy = 0.0
        pv = 0.0
        n = 0
    else:
        ts_open = ist[I_TS_OPEN]
        n = ist[I_N]
        o = fst[F_OPEN]
        h = fst[F_HIGH]
        lo = fst[F_LOW]
        vol = fst[F_VOL]
        qvol = fst[F_QVOL]
        buy = fst[F_BUY]
        pv = fst[F_PV]
    ok = True
    for i in range(s, e):
        t = ts[i]
        p = price[i]
        q = qty[i]
        d = quote[i]
        sd = side[i]
        ti = tid[i]
        ok &= tick_ok_nb(t, ti, p, q, d, sd, last_ts, last_tid)
        trs = tick_rule_nb(p, lastp, trs)
        last_ts = t
        last_tid = ti
        lastp = p
        fb = buy_flag_nb(sd, trs)
        h, lo, vol, qvol, pv, buy = bar_add_nb(h, lo, vol, qvol, pv, buy, p, q, d, fb)
        n += 1
    seg_i[g, 0] = ts_open
    seg_i[g, 1] = ts[e - 1]
    seg_i[g, 2] = n
    seg_i[g, 3] = trs
    seg_f[g, 0] = o
    seg_f[g, 1] = h
    seg_f[g, 2] = lo
    seg_f[g, 3] = price[e - 1]
    seg_f[g, 4] = vol
    seg_f[g, 5] = qvol
    seg_f[g, 6] = buy
    seg_f[g, 7] = pv
    return ok


@nb.njit(cache=True, nogil=True)
def _bar_closes_nb(qty, quote, measure, threshold, start, end, closes, has, acc, thr, day_total):
    """Pass 1 of :func:`threshold_bars_par_nb`: the rows where bars close, into ``closes`` (at most
    its length), with exactly the accumulator arithmetic of :func:`threshold_bars_nb`; returns
    ``(closes found, next row, has, acc, thr, day_total)``."""
    room = closes.shape[0]
    k = 0
    i = start
    while i < end:
        if has == 0:
            has = 1
            acc = 0.0
            thr = threshold
        m = measure_nb(measure, qty[i], quote[i])
        acc += m
        day_total += m
        i += 1
        if acc >= thr:
            closes[k] = i - 1
            k += 1
            has = 0
            if k == room:
                break
    return k, i, has, acc, thr, day_total


@nb.njit(cache=True, nogil=True, parallel=True)
def threshold_bars_par_nb(
    ts, tid, price, qty, quote, side, measure, threshold, start, end, ist, fst, out_i, out_f, n_out
):
    """:func:`threshold_bars_nb` in two passes, the second on all numba threads; same results.

    Pass 1 (sequential) finds where bars close from the measure column alone, with exactly the
    accumulator arithmetic of the one-pass kernel (and the same stop when the output is full).
    Pass 2 reduces each bar's ticks (OHLC, sums in tick order, validation, tick rule) in a
    ``prange`` over bars; the first piece continues the carried open bar and the last one is the
    new open bar, so the state handed to the next call is that of the one-pass kernel. If any
    tick is invalid, nothing is kept and the one-pass kernel reruns the range from the same
    state: it stops at the first bad row with the usual error.
    """
    cap = out_i.shape[0]
    room = cap - n_out
    if room <= 0 or end <= start:
        return threshold_bars_nb(
            ts, tid, price, qty, quote, side, measure, threshold, start, end, ist, fst, out_i, out_f, n_out
        )
    # ---- pass 1: bar closes
    has = ist[I_HAS]
    acc = fst[F_ACC]
    thr = fst[F_THR]
    day_total = fst[F_DAY_TOTAL]
    thr0 = thr if has != 0 else threshold  # threshold of the first bar of this call
    closes = np.empty(min(room, end - start), dtype=np.int64)
    k, stop, has, acc, thr, day_total = _bar_closes_nb(
        qty, quote, measure, threshold, start, end, closes, has, acc, thr, day_total
    )
    last_end = closes[k - 1] + 1 if k > 0 else start
    nseg = k + (1 if stop > last_end else 0)
    # ---- pass 2: per-bar reductions and validation, in parallel
    seg_i = np.empty((nseg, 4), dtype=np.int64)
    seg_f = np.empty((nseg, 8), dtype=np.float64)
    oks = np.empty(nseg, dtype=np.bool_)
    carried = ist[I_HAS] != 0
    for g in nb.prange(nseg):
        s = start if g == 0 else closes[g - 1] + 1
        e = closes[g] + 1 if g < k else stop
        oks[g] = _segment_nb(
            ts, tid, price, qty, quote, side, s, e, start, not (g == 0 and carried), ist, fst, seg_i, seg_f, g
        )
    for g in range(nseg):
        if not oks[g]:
            return threshold_bars_nb(
                ts,
                tid,
                price,
                qty,
                quote,
                side,
                measure,
                threshold,
                start,
                end,
                ist,
                fst,
                out_i,
                out_f,
                n_out,
            )
    for g in range(k):
        r = n_out + g
        out_i[r, 0] = seg_i[g, 0]
        out_i[r, 1] = seg_i[g, 1]
        out_i[r, 2] = seg_i[g, 2]
        for c in range(7):
            out_f[r, c] = seg_f[g, c]
        out_f[r, 7] = seg_f[g, 7] / seg_f[g, 4]
        out_f[r, 8] = thr0 if g == 0 else threshold
    # ---- the state of the one-pass kernel after tick stop - 1
    G = nseg - 1
    ist[I_HAS] = has
    ist[I_TS_OPEN] = seg_i[G, 0]
    ist[I_TS_CLOSE] = seg_i[G, 1]
    ist[I_N] = seg_i[G, 2]
    ist[I_LAST_TS] = ts[stop - 1]
    ist[I_LAST_TID] = tid[stop - 1]
    ist[I_SEEN] = 1
    ist[I_TR_SIGN] = seg_i[G, 3]
    fst[F_OPEN] = seg_f[G, 0]
    fst[F_HIGH] = seg_f[G, 1]
    fst[F_LOW] = seg_f[G, 2]
    fst[F_CLOSE] = seg_f[G, 3]
    fst[F_VOL] = seg_f[G, 4]
    fst[F_QVOL] = seg_f[G, 5]
    fst[F_BUY] = seg_f[G, 6]
    fst[F_PV] = seg_f[G, 7]
    fst[F_ACC] = acc
    fst[F_THR] = thr
    fst[F_LAST_PRICE] = price[stop - 1]
    fst[F_DAY_TOTAL] = day_total
    return stop, n_out + k, 0
