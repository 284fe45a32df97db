"""Numba kernels of the sweeps: every combination of a grid in one parallel call.

A combination is decoded from its index (mixed radix over the grid's axes, the last axis fastest:
``itertools.product`` order) into the kernel's inputs: the parameter vector (``enums.Param``), the
strategy's indicator rows and scalars, the volatility series of ``vol_target`` and, for
``xs_momentum``, the rebalance schedule. Its signals then come from the strategy's own kernel
(``btsys.signals._strategies_nb``) and its backtest from the engine's own event loop
(:func:`btsys.backtest._nb.simulate_nb` for one symbol, :func:`btsys.backtest._nb.portfolio_nb`
for several or for ``xs_momentum``): the very functions a single run calls, so a row equals its
run. Each thread owns its signal and equity buffers and consecutive combinations (which often
share their signals: only their backtest options differ, and the signals are then reused): in
one-symbol sweeps units of them dealt round-robin (:func:`_units_of_nb`), in portfolio sweeps
one block per thread (dealing units measured no gain there); nothing of size combinations x bars
exists.

Axis kinds (``kinds[a]``), applied to value ``vals[a, j]``:

* ``AX_PARAM``: ``p[targets[a]] = value`` (a backtest option, kernel units);
* ``AX_SCALAR``: ``sp[targets[a]] = value`` (a strategy scalar);
* ``AX_ROWS``: ``rows[s] = rowmap[a, j, s]`` for every slot ``s`` with ``rowmap >= 0`` (an
  indicator window: the row of that window's series in ``ind``);
* ``AX_VOL``: the ``vol_target`` series is row ``value`` of ``vol_all``;
* ``AX_REB``: the ``xs_momentum`` rebalance schedule is row ``value`` of ``reb_all``.

Only bars (or timeline rows) ``[lo, hi)`` are traded; signals and volatility come from the whole
history before them (a walk-forward window), exactly as ``simulate(..., window=(lo, hi))``.

A combination's row ``out[c]`` holds the engine's metrics (``enums.METRIC_NAMES``) followed by
alpha, beta and the information ratio against the benchmark's daily returns ``bench`` (computed
once per sweep by ``btsys.backtest.metrics``): :func:`bench_stats_nb` applies the definitions of
:func:`btsys.backtest.metrics.benchmark_metrics` to the combination's daily returns.

numba's on-disk cache (``cache=True``) of these kernels is keyed on this file only: it does not see
a change of the ``_nb.py`` functions they call, and a stale cache then runs the old event loop.
A change of ``_nb.py``'s rules must therefore touch this file too (or the ``__pycache__/*.nbi``
files must be deleted).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from btsys.backtest._nb import portfolio_nb, simulate_nb, xs_params_nb
from btsys.backtest.enums import N_METRICS, Direction, Param, SizeMode
from btsys.signals._strategies_nb import rule_signals_nb, xs_momentum_signals_nb, xs_scores_nb

AX_PARAM = 0
AX_SCALAR = 1
AX_ROWS = 2
AX_VOL = 3
AX_REB = 4

#: columns of ``out`` after the engine's metrics: alpha, beta, information ratio
N_BENCH = 3


@njit(cache=True)
def bench_stats_nb(r, b, out):
    """Alpha (annualised), beta and information ratio of the daily returns ``r`` against the
    benchmark's ``b`` into ``out`` (NaN when undefined: fewer than two days, a flat benchmark, no
    tracking error): ``btsys.backtest.metrics.benchmark_metrics``'s definitions."""
    out[:] = np.nan
    n = r.shape[0]
    if n < 2 or b.shape[0] != n:
        return
    mr = 0.0
    mb = 0.0
    for i in range(n):
        mr += r[i]
        mb += b[i]
    mr /= n
    mb /= n
    cov = 0.0
    var_b = 0.0
    var_a = 0.0
    ma = mr - mb
    for i in range(n):
        dr = r[i] - mr
        db = b[i] - mb
        cov += dr * db
        var_b += db * db
        da = (r[i] - b[i]) - ma
        var_a += da * da
    if var_b > 0.0:
        beta = cov / var_b
        out[1] = beta
        out[0] = (mr - beta * mb) * 365.0
    if var_a > 0.0:
        out[2] = ma / math.sqrt(var_a / (n - 1)) * math.sqrt(365.0)


@njit(cache=True)
def decode_nb(c, kinds, targets, nvals, vals, rowmap, p0, rows0, sp0, aux0, p, rows, sp, aux):
    """Inputs of combination ``c`` into the thread's buffers ``p``, ``rows``, ``sp``, ``aux``
    (``aux[0]``: volatility row, ``aux[1]``: rebalance row)."""
    p[:] = p0
    rows[:] = rows0
    sp[:] = sp0
    aux[:] = aux0
    rem = c
    for a in range(kinds.shape[0] - 1, -1, -1):
        j = rem % nvals[a]
        rem //= nvals[a]
        v = vals[a, j]
        k = kinds[a]
        if k == AX_PARAM:
            p[targets[a]] = v
        elif k == AX_SCALAR:
            sp[targets[a]] = v
        elif k == AX_ROWS:
            for s in range(rows.shape[0]):
                if rowmap[a, j, s] >= 0:
                    rows[s] = rowmap[a, j, s]
        elif k == AX_VOL:
            aux[0] = int(v)
        else:
            aux[1] = int(v)
    if p[Param.SIZE_MODE] == SizeMode.ALL:
        p[Param.SIZE] = np.inf  # all available cash: the size value is not used


@njit(cache=True)
def _new_signal_inputs_nb(rows, sp, reb_row, prev):
    """Whether a combination's signal inputs (indicator rows, scalars, rebalance schedule) differ
    from the previous combination's, kept in ``prev`` (updated): if not, its signals are reused."""
    k = rows.shape[0]
    m = sp.shape[0]
    same = prev[k + m] == reb_row
    for j in range(k):
        same &= prev[j] == rows[j]
    for j in range(m):
        same &= prev[k + j] == sp[j]
    if same:
        return False
    for j in range(k):
        prev[j] = rows[j]
    for j in range(m):
        prev[k + j] = sp[j]
    prev[k + m] = reb_row
    return True


@njit(cache=True)
def _sides_nb(kinds, targets, nvals, vals, p0):
    """``(long, short)``: whether some combination trades that side (its signals are computed)."""
    dirs = p0[Param.DIRECTION : Param.DIRECTION + 1]
    for a in range(kinds.shape[0]):
        if kinds[a] == AX_PARAM and targets[a] == Param.DIRECTION:
            dirs = vals[a, : nvals[a]]
    return (dirs != Direction.SHORT).any(), (dirs != Direction.LONG).any()


@njit(cache=True)
def _unit_nb(kinds, nvals):
    """Combinations per unit of work: the product of the trailing axes (the last varies fastest)
    that are backtest options, so that the combinations of a unit share their signals."""
    u = 1
    for a in range(kinds.shape[0] - 1, -1, -1):
        if kinds[a] != AX_PARAM and kinds[a] != AX_VOL:
            break
        u *= nvals[a]
    return u


@njit(cache=True)
def _units_of_nb(th, nth, unit, n_comb):
    """The combinations of thread ``th`` of ``nth``: units of ``unit`` consecutive combinations
    dealt round-robin (neighbouring combinations often differ much in their number of trades: a
    thread per block of the grid waited on the other, 59 % vs 41 % of the trades in the MA
    sweep of bench/backtest.py, 91 % vs 9 % in its rsi_reversion sweep)."""
    n_units = (n_comb + unit - 1) // unit
    out = np.empty(n_comb, dtype=np.int64)
    k = 0
    for u in range(th, n_units, nth):
        for c in range(u * unit, min((u + 1) * unit, n_comb)):
            out[k] = c
            k += 1
    return out[:k]


@njit(cache=True, inline="always")
def _thread_buffers_nb(bench, p0, rows0, sp0, aux0):
    """A sweep thread's own buffers: daily returns, metrics, benchmark statistics, the decoded inputs
    (``p``, ``rows``, ``sp``, ``aux``) and ``prev``, the signal inputs of its last combination."""
    rows = np.empty_like(rows0)
    sp = np.empty_like(sp0)
    prev = np.full(rows.shape[0] + sp.shape[0] + 1, np.nan)
    return (
        np.empty(bench.shape[0]), np.empty(N_METRICS), np.empty(N_BENCH), np.empty_like(p0), rows, sp,
        np.empty_like(aux0), prev,
    )  # fmt: skip


@njit(cache=True)
def _row_nb(c, m, dret, bench, mb, out, daily):
    """Combination ``c``'s row: the engine's metrics, then the benchmark statistics; its daily
    returns when they are kept."""
    bench_stats_nb(dret, bench, mb)
    out[c, :N_METRICS] = m
    out[c, N_METRICS:] = mb
    if daily.shape[1] > 0:
        daily[c, :] = dret


@njit(cache=True)
def _single_block_nb(
    combos, n_long, n_short, ts, open_, high, low, close, volume, funding, vol_all, code, ind, kinds,
    targets, nvals, vals, rowmap, p0, rows0, sp0, aux0, lo, hi, bench, orders0, trades0, out, daily,
):  # fmt: skip
    """Combinations ``combos`` of :func:`sweep_single_nb` on one thread, with its own buffers
    (signals of length ``n_long``/``n_short``: 0 for a side no combination trades)."""
    le = np.zeros(n_long, dtype=np.bool_)
    lx = np.zeros(n_long, dtype=np.bool_)
    se = np.zeros(n_short, dtype=np.bool_)
    sx = np.zeros(n_short, dtype=np.bool_)
    dret, m, mb, p, rows, sp, aux, prev = _thread_buffers_nb(bench, p0, rows0, sp0, aux0)
    none = np.zeros(0, dtype=np.bool_)
    empty = dret[0:0]
    for c in combos:
        decode_nb(c, kinds, targets, nvals, vals, rowmap, p0, rows0, sp0, aux0, p, rows, sp, aux)
        if _new_signal_inputs_nb(rows, sp, aux[1], prev):
            rule_signals_nb(code, close, ind, rows, sp, lo, hi, le, lx, se, sx)
        d = p[Param.DIRECTION]
        a_le = le[lo:hi] if d != Direction.SHORT else none
        a_lx = lx[lo:hi] if d != Direction.SHORT else none
        a_se = se[lo:hi] if d != Direction.LONG else none
        a_sx = sx[lo:hi] if d != Direction.LONG else none
        simulate_nb(
            ts[lo:hi],
            open_[lo:hi],
            high[lo:hi],
            low[lo:hi],
            close[lo:hi],
            volume[lo:hi],
            a_le,
            a_lx,
            a_se,
            a_sx,
            funding[lo:hi],
            vol_all[aux[0]][lo:hi],
            empty,
            p,
            False,
            empty,
            empty,
            empty,
            orders0,
            trades0,
            m,
            dret,
            0,
        )
        _row_nb(c, m, dret, bench, mb, out, daily)


@njit(cache=True, parallel=True)
def sweep_single_nb(
    ts, open_, high, low, close, volume, funding, vol_all, code, ind, kinds, targets, nvals, vals,
    rowmap, p0, rows0, sp0, aux0, lo, hi, n_threads, bench, orders0, trades0, out, daily,
):  # fmt: skip
    """One symbol, a rule strategy: combination ``c`` -> ``out[c]`` (metrics) and ``daily[c]``
    (``daily`` with no columns: none kept). Each thread runs its units of combinations
    (:func:`_units_of_nb`) through :func:`_single_block_nb` (a plain function: the same loop
    compiled inside the parallel loop ran 1.4 x slower)."""
    n = close.shape[0]
    n_comb = out.shape[0]
    unit = _unit_nb(kinds, nvals)
    nth = max(1, min(n_threads, (n_comb + unit - 1) // unit))
    any_long, any_short = _sides_nb(kinds, targets, nvals, vals, p0)
    n_long = n if any_long else 0
    n_short = n if any_short else 0
    for th in prange(nth):
        _single_block_nb(
            _units_of_nb(th, nth, unit, n_comb), n_long, n_short, ts, open_, high, low, close,
            volume, funding, vol_all, code, ind, kinds, targets, nvals, vals, rowmap, p0, rows0, sp0,
            aux0, lo, hi, bench, orders0, trades0, out, daily,
        )  # fmt: skip


@njit(cache=True)
def _symbol_signals_nb(code, k, closes, nbars, rowsof, blo, bhi, ind, rows, sp, b4, g4):
    """Rule-strategy signals of symbol ``k`` over its bars ``[blo, bhi)``, scattered to the
    timeline grids ``g4`` (le, lx, se, sx) at the rows of those bars."""
    n_k = nbars[k]
    rule_signals_nb(code, closes[k, :n_k], ind[k], rows, sp, blo[k], bhi[k], b4[0], b4[1], b4[2], b4[3])
    for b in range(blo[k], bhi[k]):
        t = rowsof[k, b]
        for s in range(4):
            g4[s, t, k] = b4[s, b]


@njit(cache=True)
def _xs_signals_nb(closes, nbars, rowsof, has, member, reb, sp, hi, score_b, score, g4):
    """``xs_momentum`` signals over timeline rows ``[0, hi)`` from every symbol's scores (members
    ranked only, with a ``member`` grid)."""
    lookback = int(sp[0])
    skip = int(sp[1])
    for k in range(closes.shape[0]):
        n_k = nbars[k]
        xs_scores_nb(closes[k, :n_k], lookback, skip, score_b[:n_k])
        for b in range(n_k):
            score[rowsof[k, b], k] = score_b[b]
    xs_momentum_signals_nb(
        has[:hi],
        score[:hi],
        member[:hi],
        reb[:hi],
        int(sp[2]),
        int(sp[3]),
        g4[0, :hi],
        g4[1, :hi],
        g4[2, :hi],
        g4[3, :hi],
    )


@njit(cache=True, parallel=True)
def sweep_portfolio_nb(
    ts,
    has,
    open_,
    high,
    low,
    close,
    volume,
    funding,
    vol_all,
    member,
    code,
    closes,
    nbars,
    rowsof,
    blo,
    bhi,
    ind,
    reb_all,
    kinds,
    targets,
    nvals,
    vals,
    rowmap,
    p0,
    rows0,
    sp0,
    aux0,
    lo,
    hi,
    n_threads,
    bench,
    orders0,
    trades0,
    out,
    daily,
):
    """Several symbols on one shared-cash portfolio (or ``xs_momentum``, ``code < 0``) over the
    merged timeline rows ``[lo, hi)``: combination ``c`` -> ``out[c]`` and ``daily[c]``.
    ``member``: the dynamic universe's (time x symbol) membership, or (0, 0) (always a member).

    ``closes[k, :nbars[k]]`` are symbol k's closes, ``rowsof[k, b]`` the timeline row of its bar
    b, ``[blo[k], bhi[k])`` its bars inside the window, ``ind[k]`` its indicator rows."""
    T, K = close.shape
    nmax = closes.shape[1]
    n_comb = out.shape[0]
    nth = max(1, min(n_threads, n_comb))
    for th in prange(nth):
        g4 = np.zeros((4, T, K), dtype=np.bool_)
        flat = np.zeros((T, K), dtype=np.bool_)  # the signals of a side that may not trade
        b4 = np.zeros((4, nmax), dtype=np.bool_)
        score_b = np.empty(nmax)
        score = np.full((T, K), np.nan)
        dret, m, mb, p, rows, sp, aux, prev = _thread_buffers_nb(bench, p0, rows0, sp0, aux0)
        for c in range(th * n_comb // nth, (th + 1) * n_comb // nth):
            decode_nb(c, kinds, targets, nvals, vals, rowmap, p0, rows0, sp0, aux0, p, rows, sp, aux)
            fresh = _new_signal_inputs_nb(rows, sp, aux[1], prev)
            if code < 0:
                if fresh:
                    _xs_signals_nb(
                        closes, nbars, rowsof, has, member, reb_all[aux[1]], sp, hi, score_b, score, g4
                    )
                xs_params_nb(p, sp[2], sp[3])
            elif fresh:
                for k in range(K):
                    _symbol_signals_nb(code, k, closes, nbars, rowsof, blo, bhi, ind, rows, sp, b4, g4)
            d = p[Param.DIRECTION]
            long_ok = d != Direction.SHORT
            short_ok = d != Direction.LONG
            w = slice(lo, hi)
            n_ord, n_tr = portfolio_nb(
                ts[w],
                has[w],
                open_[w],
                high[w],
                low[w],
                close[w],
                volume[w],
                g4[0, w] if long_ok else flat[w],
                g4[1, w] if long_ok else flat[w],
                g4[2, w] if short_ok else flat[w],
                g4[3, w] if short_ok else flat[w],
                funding[w],
                vol_all[aux[0]][w],
                score[0:0, 0:0],
                member[w],
                p,
                False,
                dret[0:0],
                dret[0:0],
                score[0:0, 0:0],
                orders0,
                trades0,
                m,
                dret,
            )
            _row_nb(c, m, dret, bench, mb, out, daily)
