"""Numba kernels of ``intrabar="ticks"``: a held position walked through the trades of one bar.

The rules are the README's "Intrabar fills" section; ``tests/intrabar_reference.py`` is their
plain tick-by-tick reference. The event loop (``_nb.simulate_nb``) calls these for the bars whose
range reaches a level or that hold a funding instant; every other bar keeps the bar rules (no
level inside the range: the trades cannot trigger anything).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from btsys.backtest.enums import OrderKind

_SL = int(OrderKind.STOP_LOSS)
_TSL = int(OrderKind.TRAILING_STOP)
_TP = int(OrderKind.TAKE_PROFIT)
_LIQ = int(OrderKind.LIQUIDATION)


@njit(cache=True, error_model="numpy")
def funding_until_nb(size, price, f_ts, f_rate, f, f_end, t):
    """Funding instants ``f_ts[f:f_end]`` at or before ``t`` (a trade stamped at an instant counts
    after it) on a position of ``size`` at ``price`` (the trade before): ``(amount paid, next f)``."""
    paid = 0.0
    while f < f_end and f_ts[f] <= t:
        paid += size * price * f_rate[f]
        f += 1
    return paid, f


@njit(cache=True, error_model="numpy")
def trade_exit_nb(side, p, stop, tgt, liq, extreme, tsl, touch):
    """The exit a trade at ``p`` triggers for a ``side`` (+1 / -1) position: ``(kind, raw price)``,
    kind -1 for none. Liquidation (at or beyond ``liq``, 0 = none) first, then the stop-market (at
    or beyond the fixed ``stop`` or the trailing level from ``extreme``: at ``p``), then the take
    profit (beyond ``tgt``, or at it with ``touch``: at ``tgt``). Off levels are ±inf."""
    tl = extreme * (1.0 - side * tsl) if tsl > 0.0 else -side * np.inf
    if liq > 0.0 and side * (p - liq) <= 0.0:
        return _LIQ, liq
    if side * (p - stop) <= 0.0 or side * (p - tl) <= 0.0:
        return (_TSL if side * (tl - stop) > 0.0 else _SL), p
    if side * (p - tgt) > 0.0 or (touch and p == tgt):
        return _TP, tgt
    return -1, 0.0


@njit(cache=True, error_model="numpy")
def walk_trades_nb(
    size, tk_ts, tk_px, j0, j1, prev_px, stop, tgt, liq, extreme, tsl, touch, f_ts, f_rate, f, f_end
):
    """Walk a position of ``size`` (signed) through trades ``j0:j1`` until one exits it.

    Per trade: the funding instants up to it (on the position, at the price of the trade before,
    ``prev_px`` for the first), then :func:`trade_exit_nb`, then the trailing extreme moves.

    Returns ``(kind, j, raw price, extreme, funding paid, next f)``: ``kind`` -1 when no trade
    exits (``j == j1``).
    """
    side = 1.0 if size > 0.0 else -1.0
    paid = 0.0
    p_prev = prev_px
    for j in range(j0, j1):
        p = tk_px[j]
        if f < f_end:
            x, f = funding_until_nb(size, p_prev, f_ts, f_rate, f, f_end, tk_ts[j])
            paid += x
        kind, px = trade_exit_nb(side, p, stop, tgt, liq, extreme, tsl, touch)
        if kind >= 0:
            return kind, j, px, extreme, paid, f
        if side * (p - extreme) > 0.0:
            extreme = p
        p_prev = p
    return -1, j1, 0.0, extreme, paid, f


@njit(cache=True, error_model="numpy")
def reaches_nb(size, h, lo, stop, tgt, liq, extreme, tsl):
    """Whether a bar with range ``[lo, h]`` can exit a position of ``size`` trade by trade: a
    level inside the range, the trailing level taken where the bar's own best price puts it
    (a superset of the bars that exit; a bar outside it cannot, whatever its trades' order)."""
    if size > 0.0:
        prot = stop if stop > liq else liq
        if tsl > 0.0:
            best = h if h > extreme else extreme
            tl = best * (1.0 - tsl)
            prot = tl if tl > prot else prot
        return lo <= prot or h >= tgt
    prot = stop if (stop < liq or liq <= 0.0) else liq
    if tsl > 0.0:
        best = lo if lo < extreme else extreme
        tl = best * (1.0 + tsl)
        prot = tl if tl < prot else prot
    return h >= prot or lo <= tgt
