"""Numba kernels of the backtest engine.

One event loop, :func:`simulate_nb`, implements every fill, cost, sizing and risk rule and
computes the metrics while it runs, so a sweep (``_sweep_nb.py``) calls the very same function
with ``store=False`` and keeps nothing per bar. :func:`portfolio_nb` runs the same rules over
several symbols with shared cash, for runs and sweeps alike. Both are built from the same small
helpers: a position is a :class:`Position` (opened by :func:`open_position_nb`, closed by
:func:`close_position_nb`), an order decided at a close and filled at the next open an
:class:`Order`, the close's decision :func:`close_decision_nb`, the equity statistics a
:class:`Stats` (:func:`stats_push_nb`; over an equity array :func:`equity_stats_nb`). Python
wrappers in ``engine.py``, ``portfolio.py`` and ``sweep.py`` validate inputs; nothing here
checks its arguments, except that :func:`simulate_nb` can check prices and bar times in its own
pass (``check``) and :func:`simulate_checked_nb` checks them on a second thread while the loop
runs.

Bar order of events (bar ``i``)
-------------------------------
1. ``fill="next_open"``: the order decided at bar ``i-1``'s close fills at ``open[i]`` (exit first,
   then entry: a reversal is two orders).
2. Intra-bar: stop loss, trailing stop, take profit and liquidation from ``open/high/low``. A gap
   through a level fills at the open; when a protective level and the target both lie inside the
   bar, the protective one (the worse outcome) is assumed to come first.
3. Funding due in the bar is charged on the position at the bar's close price; a position that
   step 2 closed pays it only when it is a cost (charged before the exit: the order of the
   instant and the exit inside the bar is unknown, the costlier one is assumed).
4. At the close: signals, time stop, the universe and the drawdown kill switch decide;
   ``fill="close"`` executes at ``close[i]``, ``"next_open"`` keeps the order for bar ``i+1``.
5. The trailing extreme moves; equity is marked at the close and the statistics are updated.

Speed
-----
:func:`simulate_nb` runs the phases above (:func:`_bar_nb`) only on bars where something can
happen; runs of quiet bars (flat with nothing to do: :func:`_flat_run_nb`; holding with no exit:
:func:`_held_run_nb`) only mark equity and update the statistics, in tight loops that first test,
with the same helpers, whether the bar is quiet. Helpers that take arrays but allocate nothing are
compiled without reference counting (``_nrt=False``): a call with array arguments would
otherwise cost an atomic increment and decrement per array (about 10 ns per bar and call).
Functions called once per bar or per event (the quiet runs, the event bar, a portfolio symbol's
bar) are inlined: called out of line they receive the tuples of arrays (``Bars``, ``Ledger``,
``Marks``, ``Market``, ``Book``) by value at every call, which cost ``simulate`` 10-45 % and the
portfolio sweeps up to 3x.
"""

from __future__ import annotations

import math
from typing import NamedTuple, get_type_hints

import numpy as np
from numba import njit, prange

from btsys.backtest._intrabar_nb import funding_until_nb, reaches_nb, walk_trades_nb
from btsys.backtest.enums import DAY_US, OPEN_TRADE, Check, Metric, OrderKind, Param, SizeMode

_SQRT365 = math.sqrt(365.0)
#: kernels and helpers that allocate
_jit = njit(cache=True, error_model="numpy")
#: helpers that read or write arrays but allocate nothing: no reference counting (see above)
_helper = njit(cache=True, error_model="numpy", _nrt=False)
#: small helpers over scalars, inlined into their callers
_inline = njit(cache=True, error_model="numpy", inline="always")


class _AccT(NamedTuple):
    """Slots of a run's accumulator array ``acc`` (exits and entries are rare: an array is fine)."""

    FEES: int = 0
    TRADED: int = 1
    CLOSED: int = 2
    WIN: int = 3
    GROSS_WIN: int = 4
    GROSS_LOSS: int = 5
    SUM_PNL: int = 6
    FUNDING: int = 7


_Acc = _AccT()


class Params(NamedTuple):
    """The parameter vector (``enums.Param``) unpacked: :func:`params_nb`."""

    init_cash: float
    fee: float
    fee_fixed: float
    min_fee: float
    slip: float
    impact: float
    impact_exp: float
    fill_close: bool
    size_mode: int
    size: float
    min_qty: float
    step: float
    lev: float
    mmr: float
    sl: float
    tp: float
    tsl: float
    time_stop: int
    cooldown: int
    max_pos: float
    max_lev: float
    max_dd_kill: float
    allow_long: bool
    allow_short: bool
    maker: float  # maker fee: resting limits (limit entries; the take profit with intrabar=ticks)
    touch: bool  # a resting limit fills at its price (else only beyond it)
    limit: bool  # entries are limit orders
    offset: float  # a limit entry's distance from the signal close (fraction)
    tif: int  # bars a limit entry stays active


class Position(NamedTuple):
    """One symbol's position (``size == 0.0``: flat; the other fields then keep the last trade's
    values, except ``margin``, which is 0)."""

    size: float  # signed base quantity
    margin: float
    price: float  # entry fill price
    bar: int  # the symbol's bar number at entry (time stop)
    row: int  # timeline row (bar index of a single asset) of the entry
    fee: float  # entry fee
    funding: float  # funding paid while open
    extreme: float  # best price since entry (trailing stop)
    liq: float  # liquidation price
    prot: float  # protective level (stop, trailing stop, liquidation; -inf/+inf: none)
    prot_fix: float  # the protective level without the trailing part
    tgt: float  # take-profit level (+inf/-inf: none)
    guarded: bool  # any finite level
    last_exit: int  # the symbol's bar number of the last exit (cooldown)


class Order(NamedTuple):
    """An order decided at a close, filled at the next open (``fill="next_open"``)."""

    exit: bool  # close the position
    kind: int  # OrderKind of the exit
    side: int  # side to open after it, 0: none
    scale: float  # bet size of the decision bar
    vol_ref: float  # volume of the decision bar (impact)
    vol_est: float  # volatility known at the decision bar (vol_target sizing)


class Stats(NamedTuple):
    """Running equity statistics (:func:`stats_push_nb`); times are read through the bar index."""

    sum_eq: float
    peak: float
    peak_row: int
    trough: float
    max_dd: float
    max_dd_us: int
    day: int  # UTC day of the current daily bucket
    next_row: int  # first row of the next day
    day_prev: float  # equity at the end of the previous day
    day_last: float  # last equity of the current day
    n_day: int  # daily returns pushed


class Ledger(NamedTuple):
    """Where a run's orders, trades and accumulators go (records only with ``store``)."""

    store: bool
    orders: np.ndarray
    trades: np.ndarray
    acc: np.ndarray  # _Acc slots
    cnt: np.ndarray  # orders and trades so far


class Marks(NamedTuple):
    """Per-bar outputs and daily statistics of a run."""

    equity: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    dacc: np.ndarray  # Welford accumulator of the daily returns: n, mean, m2, downside sum of squares
    daily: np.ndarray  # the daily returns, or length 0


_FLAT = Position(0.0, 0.0, 0.0, -1, -1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False, -(1 << 62))
_NO_ORDER = Order(False, OrderKind.EXIT_SIGNAL, 0, 1.0, 0.0, 0.0)


def record_dtype(nt: type) -> np.dtype:
    """The structured dtype of a named tuple of scalars (its fields and types)."""
    return np.dtype([(f, np.dtype(t)) for f, t in get_type_hints(nt).items()])


#: per-symbol state records of :func:`portfolio_nb`
position_dt = record_dtype(Position)
order_state_dt = record_dtype(Order)


# --------------------------------------------------------------------------- small rules
@_jit
def fee_nb(notional, fee, fee_fixed, min_fee):
    """Fee of one order: ``notional * fee + fee_fixed``, at least ``min_fee``."""
    f = notional * fee + fee_fixed
    if f < min_fee:
        f = min_fee
    return f


@_jit
def slip_price_nb(px_raw, side, slip, impact, impact_exp, qty, vol_ref):
    """Fill price moved against the order by fixed slippage plus participation impact.

    impact term: ``impact * (qty / vol_ref) ** impact_exp`` (a fraction of price), ``vol_ref`` the
    volume of the last completed bar when the order was decided (no look-ahead).
    """
    s = slip
    if impact > 0.0 and vol_ref > 0.0:
        s += impact * (qty / vol_ref) ** impact_exp
    return px_raw * (1.0 + side * s)


@_jit
def liq_price_nb(side, pe, lev, mmr):
    """Isolated-margin liquidation price (0 = none): position equity = maintenance margin.

    long: ``pe * (1 - 1/L) / (1 - mmr)`` (never at L = 1); short: ``pe * (1 + 1/L) / (1 + mmr)``.
    """
    if side > 0:
        return pe * (1.0 - 1.0 / lev) / (1.0 - mmr)
    return pe * (1.0 + 1.0 / lev) / (1.0 + mmr)


@_jit
def params_nb(p):
    """The parameter vector (``enums.Param``) unpacked, for the single-asset and portfolio kernels."""
    return Params(
        p[Param.INIT_CASH],
        p[Param.FEE],
        p[Param.FEE_FIXED],
        p[Param.MIN_FEE],
        p[Param.SLIPPAGE],
        p[Param.IMPACT],
        p[Param.IMPACT_EXP],
        p[Param.FILL] == 1.0,
        int(p[Param.SIZE_MODE]),
        p[Param.SIZE],
        p[Param.MIN_QTY],
        p[Param.STEP],
        p[Param.LEVERAGE],
        p[Param.MMR],
        p[Param.STOP_LOSS],
        p[Param.TAKE_PROFIT],
        p[Param.TRAILING_STOP],
        int(p[Param.TIME_STOP]),
        int(p[Param.COOLDOWN]),
        p[Param.MAX_POSITION],
        p[Param.MAX_LEVERAGE],
        p[Param.MAX_DRAWDOWN],
        p[Param.DIRECTION] != 1.0,  # long or both
        p[Param.DIRECTION] != 0.0,  # short or both
        p[Param.MAKER_FEE],
        p[Param.FILL_RULE] == 1.0,
        p[Param.ORDER_TYPE] == 1.0,
        p[Param.LIMIT_OFFSET],
        int(p[Param.TIME_IN_FORCE]),
    )


@_jit
def fill_params_nb(prm, fee):
    """``prm`` for a limit's fill: no slippage or impact, the fee rate ``fee`` (maker, or taker
    for a limit marketable when it becomes active)."""
    return Params(
        prm.init_cash, fee, prm.fee_fixed, prm.min_fee, 0.0, 0.0, prm.impact_exp, prm.fill_close,
        prm.size_mode, prm.size, prm.min_qty, prm.step, prm.lev, prm.mmr, prm.sl, prm.tp, prm.tsl,
        prm.time_stop, prm.cooldown, prm.max_pos, prm.max_lev, prm.max_dd_kill, prm.allow_long,
        prm.allow_short, prm.maker, prm.touch, prm.limit, prm.offset, prm.tif,
    )  # fmt: skip


# --------------------------------------------------------------------------- entry sizing
@_jit
def _cap_nb(cash, equity, prm):
    """Largest notional of an entry: its margin (notional / leverage) plus the fee fit in ``cash``,
    within the position and leverage caps."""
    afford = (cash - prm.fee_fixed) / (1.0 / prm.lev + prm.fee)
    if afford * prm.fee + prm.fee_fixed < prm.min_fee:
        afford = (cash - prm.min_fee) * prm.lev
    cap = afford
    if prm.max_pos < cap:
        cap = prm.max_pos
    if prm.max_lev * equity < cap:
        cap = prm.max_lev * equity
    return cap


@_jit
def _sized_qty_nb(px, cap, equity, vol_i, prm):
    """Quantity of the sizing mode at price ``px``, within ``cap``."""
    if prm.size_mode == SizeMode.ALL:
        return cap / px
    if prm.size_mode == SizeMode.QTY:
        return prm.size if prm.size * px <= cap else cap / px
    if prm.size_mode == SizeMode.NOTIONAL:
        notional = prm.size
    elif prm.size_mode == SizeMode.PERCENT:
        notional = prm.size * equity * prm.lev
    else:  # volatility target
        notional = equity * prm.size / vol_i if vol_i > 0.0 else 0.0
    if notional > cap:
        notional = cap
    return notional / px


@_jit
def _stepped_qty_nb(qty, px, cap, prm):
    """``qty`` rounded down to the quantity step; 0 below the minimum quantity."""
    if prm.step > 0.0:
        qty = math.floor(qty / prm.step + 1e-9) * prm.step
        if qty * px > cap * (1.0 + 1e-12):
            qty -= prm.step
    if qty <= 0.0 or qty < prm.min_qty:
        return 0.0
    return qty


@_jit
def entry_size_nb(side, px_raw, cash, equity, vol_ref, vol_i, scale, prm):
    """Quantity and fill price of an entry; quantity 0 when no order can be placed.

    The margin (notional / leverage) plus the fee must fit in ``cash``. With a participation
    impact the price depends on the quantity: the quantity is sized at the fixed-slippage price,
    the impact price is computed from it, and the quantity is cut back to what that price allows.
    ``scale`` is the bet size of the signal bar (1.0 without bet sizing).
    """
    px = px_raw * (1.0 + side * prm.slip)
    if not (px > 0.0) or not (cash > 0.0):
        return 0.0, px
    cap = _cap_nb(cash, equity, prm)
    qty = _sized_qty_nb(px, cap, equity, vol_i, prm) * scale
    if not (qty > 0.0):
        return 0.0, px
    if prm.impact > 0.0 and vol_ref > 0.0:
        px = slip_price_nb(px_raw, side, prm.slip, prm.impact, prm.impact_exp, qty, vol_ref)
        if qty * px > cap:
            qty = cap / px
    return _stepped_qty_nb(qty, px, cap, prm), px


# --------------------------------------------------------------------------- stop levels
@_inline
def _beyond_nb(side, a, b):
    """``a`` is at or past ``b`` in the direction ``side`` (+1: ``a >= b``, -1: ``a <= b``)."""
    return a >= b if side > 0 else a <= b


@_inline
def _past_nb(side, a, b):
    """``a`` is strictly past ``b`` in the direction ``side`` (+1: ``a > b``, -1: ``a < b``)."""
    return a > b if side > 0 else a < b


@_jit
def _protective_nb(side, pe, extreme, sl, tsl, liq):
    """The protective level of a position nearest the price and its kind (-1: none): stop loss,
    trailing stop (from ``extreme``), liquidation; ties go to the later one."""
    prot = -side * np.inf
    kind = -1
    if sl > 0.0:
        prot = pe * (1.0 - side * sl)
        kind = OrderKind.STOP_LOSS
    if tsl > 0.0:
        t = extreme * (1.0 - side * tsl)
        if _past_nb(side, t, prot):
            prot = t
            kind = OrderKind.TRAILING_STOP
    if liq > 0.0 and _beyond_nb(side, liq, prot):
        prot = liq
        kind = OrderKind.LIQUIDATION
    return prot, kind


@_jit
def _target_nb(side, pe, tp):
    """Take-profit level (+inf for a long, -inf for a short when off)."""
    return pe * (1.0 + side * tp) if tp > 0.0 else side * np.inf


@_jit
def intrabar_exit_nb(side, o, h, lo, pe, extreme, sl, tp, tsl, liq, touch):
    """Exit triggered inside a bar: ``(kind, raw price)``, kind -1 when none.

    ``extreme`` is the best price since entry *before* this bar (highest high for a long, lowest
    low for a short), so a trailing stop never uses the bar's own high. Protective levels (stop,
    trailing stop, liquidation) are taken before the target when both lie in the bar.
    """
    prot, kp = _protective_nb(side, pe, extreme, sl, tsl, liq)
    tpl = _target_nb(side, pe, tp)
    best, worst = (h, lo) if side > 0 else (lo, h)
    if _past_nb(side, o, tpl) or (touch and o == tpl):  # a resting limit: at its price
        return OrderKind.TAKE_PROFIT, tpl
    if kp >= 0 and _beyond_nb(-side, o, prot):  # gap through the protective level
        if kp == OrderKind.LIQUIDATION or (liq > 0.0 and _beyond_nb(-side, o, liq)):
            return OrderKind.LIQUIDATION, liq
        return kp, o
    if kp >= 0 and _beyond_nb(-side, worst, prot):
        return kp, prot
    if _past_nb(side, best, tpl) or (touch and best == tpl):
        return OrderKind.TAKE_PROFIT, tpl
    return -1, 0.0


@_jit
def stop_levels_nb(side, pe, extreme, sl, tp, tsl, liq):
    """``(protective, target)`` trigger levels of a position (+-inf when off).

    Only used as a fast pre-check: a bar whose range stays strictly between the two levels cannot
    trigger anything, otherwise :func:`intrabar_exit_nb` decides."""
    prot = liq if liq > 0.0 else -side * np.inf
    if sl > 0.0 and _past_nb(side, pe * (1.0 - side * sl), prot):
        prot = pe * (1.0 - side * sl)
    if tsl > 0.0 and _past_nb(side, extreme * (1.0 - side * tsl), prot):
        prot = extreme * (1.0 - side * tsl)
    return prot, _target_nb(side, pe, tp)


@_jit
def entry_levels_nb(side, px, lev, mmr, sl, tp, tsl):
    """Levels of a position just opened at ``px``: ``(liquidation, protective stop, target,
    protective stop without the trailing part)`` — the trailing extreme starts at ``px``."""
    liq = liq_price_nb(side, px, lev, mmr)
    prot, tgt = stop_levels_nb(side, px, px, sl, tp, tsl, liq)
    prot_fix, _ = stop_levels_nb(side, px, px, sl, tp, 0.0, liq)
    return liq, prot, tgt, prot_fix


# --------------------------------------------------------------------------- records
@_helper
def _rec_order_nb(orders, k, idx, ts, col, side, kind, size, price, fees):
    r = orders[k]
    r["idx"] = idx
    r["ts"] = ts
    r["col"] = col
    r["side"] = side
    r["kind"] = kind
    r["size"] = size
    r["price"] = price
    r["fees"] = fees


@_helper
def _rec_trade_nb(trades, k, col, ps, exit_row, is_open, exit_kind, exit_price, pnl, fees):
    """Trade record ``k`` of position ``ps`` closed (or marked, ``is_open``) at ``exit_price``."""
    r = trades[k]
    r["col"] = col
    r["entry_idx"] = ps.row
    r["exit_idx"] = exit_row
    r["direction"] = 1 if ps.size > 0.0 else -1
    r["is_open"] = is_open
    r["exit_kind"] = exit_kind
    r["size"] = abs(ps.size)
    r["entry_price"] = ps.price
    r["exit_price"] = exit_price
    r["pnl"] = pnl
    r["return"] = pnl / ps.margin
    r["fees"] = fees
    r["funding"] = ps.funding


@_helper
def record_open_nb(lg, col, ps, row, c):
    """The trade record of a position still open after the last bar, marked at ``c``."""
    pnl = ps.size * (c - ps.price) - ps.fee - ps.funding
    _rec_trade_nb(lg.trades, lg.cnt[1], col, ps, row, 1, OPEN_TRADE, c, pnl, ps.fee)


# --------------------------------------------------------------------------- positions
@_inline
def _position(ps, size, margin, funding, extreme, prot, last_exit):
    """``ps`` with the fields that change while it is held, or when it is closed, replaced."""
    return Position(
        size, margin, ps.price, ps.bar, ps.row, ps.fee, funding, extreme, ps.liq, prot, ps.prot_fix, ps.tgt,
        ps.guarded, last_exit,
    )  # fmt: skip


@_helper
def open_position_nb(
    cash, lg, col, row, bar, ts_i, side, px_raw, budget, equity, vol_ref, vol_i, scale, ps, prm
):
    """Open a ``side`` position at ``px_raw`` (slippage, impact, sizing from ``budget`` and
    ``equity``, fee) and record the order; returns ``(cash, position)``, both unchanged when no
    order can be placed. ``bar`` is the symbol's bar number, ``row`` the record index."""
    q, px = entry_size_nb(side, px_raw, budget, equity, vol_ref, vol_i, scale, prm)
    if q <= 0.0:
        return cash, ps
    notional = q * px
    f = fee_nb(notional, prm.fee, prm.fee_fixed, prm.min_fee)
    lg.acc[_Acc.FEES] += f
    lg.acc[_Acc.TRADED] += notional
    if lg.store:
        _rec_order_nb(lg.orders, lg.cnt[0], row, ts_i, col, side, OrderKind.ENTRY, q, px, f)
    lg.cnt[0] += 1
    m = notional / prm.lev
    liq, prot, tgt, prot_fix = entry_levels_nb(side, px, prm.lev, prm.mmr, prm.sl, prm.tp, prm.tsl)
    guarded = np.isfinite(prot) or np.isfinite(tgt)
    opened = Position(side * q, m, px, bar, row, f, 0.0, px, liq, prot, prot_fix, tgt, guarded, ps.last_exit)
    return cash - (m + f), opened


@_helper
def close_position_nb(cash, lg, col, row, bar, ts_i, kind, px, ps, prm):
    """Close the whole position at ``px`` paying the taker fee: fee, pnl and trade statistics,
    the order and trade records; returns ``(cash, flat position)`` (its last exit at ``bar``)."""
    f = fee_nb(abs(ps.size) * px, prm.fee, prm.fee_fixed, prm.min_fee)
    return settle_nb(cash, lg, col, row, bar, ts_i, kind, px, ps.size * (px - ps.price), f, ps)


@_helper
def settle_nb(cash, lg, col, row, bar, ts_i, kind, px, gross, f, ps):
    """Close the whole position recorded at ``px`` with the gross pnl ``gross`` and the fee ``f``
    (:func:`close_position_nb`; a liquidation loses the margin: ``gross = -margin``, no fee)."""
    q = abs(ps.size)
    side = -1 if ps.size > 0.0 else 1
    notional = q * px
    pnl = gross - ps.fee - f - ps.funding
    acc = lg.acc
    acc[_Acc.FEES] += f
    acc[_Acc.TRADED] += notional
    acc[_Acc.CLOSED] += 1.0
    acc[_Acc.SUM_PNL] += pnl
    if pnl > 0.0:
        acc[_Acc.WIN] += 1.0
        acc[_Acc.GROSS_WIN] += pnl
    else:
        acc[_Acc.GROSS_LOSS] -= pnl
    if lg.store:
        _rec_order_nb(lg.orders, lg.cnt[0], row, ts_i, col, side, kind, q, px, f)
        _rec_trade_nb(lg.trades, lg.cnt[1], col, ps, row, 0, kind, px, pnl, ps.fee + f)
    lg.cnt[0] += 1
    lg.cnt[1] += 1
    return cash + (ps.margin + gross - f), _position(ps, 0.0, 0.0, ps.funding, ps.extreme, ps.prot, bar)


@_helper
def exit_at_nb(cash, lg, col, row, bar, ts_i, kind, px_raw, vol_ref, ps, prm):
    """Close the position with a market order at ``px_raw`` (slippage and impact against it)."""
    side = -1 if ps.size > 0.0 else 1
    px = slip_price_nb(px_raw, side, prm.slip, prm.impact, prm.impact_exp, abs(ps.size), vol_ref)
    return close_position_nb(cash, lg, col, row, bar, ts_i, kind, px, ps, prm)


@_inline
def levels_hit_nb(size, prot, tgt, h, lo):
    """Whether a bar's range reaches a protective level ``prot`` or the target ``tgt`` of a
    position of ``size`` (the cheap pre-check before :func:`intrabar_exit_nb`)."""
    if size > 0.0:
        return not ((lo > prot) & (h < tgt))
    return not ((h < prot) & (lo > tgt))


@_inline
def stop_hit_nb(ps, h, lo):
    """:func:`levels_hit_nb` of a position."""
    return levels_hit_nb(ps.size, ps.prot, ps.tgt, h, lo)


@_helper
def stop_exit_nb(cash, lg, col, row, bar, ts_i, o, h, lo, vol_ref, ps, fpay, prm):
    """Phase 2: the intra-bar exit (stop, trailing stop, target, liquidation) of a position whose
    levels the bar reaches (:func:`stop_hit_nb`); ``(cash, position)``. ``fpay``: the funding due
    in the bar on the position (0: none). The bar rules do not know whether its instant came
    before the exit: a cost (``fpay > 0``) is charged before the exit, a credit is not (the
    costlier order; README, "Intrabar fills")."""
    side = 1 if ps.size > 0.0 else -1
    k, px_raw = intrabar_exit_nb(
        side, o, h, lo, ps.price, ps.extreme, prm.sl, prm.tp, prm.tsl, ps.liq, prm.touch
    )
    if k < 0:
        return cash, ps
    if fpay > 0.0:
        cash, ps = pay_funding_nb(cash, lg, ps, fpay)
    return bar_exit_nb(cash, lg, col, row, bar, ts_i, k, px_raw, vol_ref, ps, prm)


@_helper
def bar_exit_nb(cash, lg, col, row, bar, ts_i, kind, px_raw, vol_ref, ps, prm):
    """Close the position for an intra-bar exit (README, "Intrabar fills"): a liquidation loses the
    isolated margin (no fee), the take profit is a resting limit (at its price, maker fee, no
    slippage), stops are stop-market orders (``px_raw`` moved by the slippage, taker fee)."""
    if kind == OrderKind.LIQUIDATION:
        return settle_nb(cash, lg, col, row, bar, ts_i, kind, px_raw, -ps.margin, 0.0, ps)
    if kind == OrderKind.TAKE_PROFIT:
        fee = fee_nb(abs(ps.size) * px_raw, prm.maker, prm.fee_fixed, prm.min_fee)
        return settle_nb(cash, lg, col, row, bar, ts_i, kind, px_raw, ps.size * (px_raw - ps.price), fee, ps)
    return exit_at_nb(cash, lg, col, row, bar, ts_i, kind, px_raw, vol_ref, ps, prm)


@_inline
def pay_funding_nb(cash, lg, ps, paid):
    """Funding ``paid`` (negative: received) by the position, out of cash, added to the run's."""
    lg.acc[_Acc.FUNDING] += paid
    return cash - paid, _position(
        ps, ps.size, ps.margin, ps.funding + paid, ps.extreme, ps.prot, ps.last_exit
    )


@_inline
def trail_nb(ps, row, h, lo, prm):
    """Phase 5: the best price since entry moves with the bar (not on the entry bar of a fill at
    its close) and the trailing stop follows it. Branch-free: new extremes are frequent and random;
    the level is the same max/min over (liquidation, stop, trailing) as :func:`stop_levels_nb`."""
    if ps.size == 0.0 or not prm.tsl > 0.0 or (ps.row == row and prm.fill_close):
        return ps
    extreme, prot = trailed_nb(ps.size, ps.extreme, ps.prot_fix, h, lo, prm.tsl)
    return _position(ps, ps.size, ps.margin, ps.funding, extreme, prot, ps.last_exit)


@_inline
def trailed_nb(size, extreme, prot_fix, h, lo, tsl):
    """``(extreme, protective level)`` after a bar with range ``[lo, h]``: see :func:`trail_nb`."""
    if size > 0.0:
        extreme = h if h > extreme else extreme
        tl = extreme * (1.0 - tsl)
        return extreme, (tl if tl > prot_fix else prot_fix)
    extreme = lo if lo < extreme else extreme
    tl = extreme * (1.0 + tsl)
    return extreme, (tl if tl < prot_fix else prot_fix)


@_inline
def equity_nb(cash, ps, c):
    """A single asset's equity at price ``c`` (summed as ``cash + margin + pnl``)."""
    return cash + ps.margin + ps.size * (c - ps.price)


@_inline
def cooling_nb(ps, bar, prm):
    """Whether entries are still blocked by the cooldown after the last exit."""
    return prm.cooldown > 0 and bar - ps.last_exit <= prm.cooldown


@_inline
def kill_nb(equity, kpeak, halted, prm):
    """The drawdown kill switch on ``equity``: ``(equity peak, halted, halted at this bar)``."""
    if prm.max_dd_kill > 0.0 and not halted:
        if equity > kpeak:
            kpeak = equity
        if kpeak - equity >= prm.max_dd_kill * kpeak:
            return kpeak, True, True
    return kpeak, halted, False


# --------------------------------------------------------------------------- decisions
@_inline
def signal_sides_nb(size, b_le, b_lx, b_se, b_sx):
    """``(exit, side to open)`` from the four signals of a close; an entry and an exit of the same
    side on the same bar cancel each other."""
    if b_le and b_lx:
        b_le = False
        b_lx = False
    if b_se and b_sx:
        b_se = False
        b_sx = False
    if size > 0.0:
        return b_lx or b_se, -1 if b_se else 0
    if size < 0.0:
        return b_sx or b_le, 1 if b_le else 0
    if b_le != b_se:
        return False, 1 if b_le else -1
    return False, 0


@_inline
def allowed_side_nb(dd, in_univ, halted, prm):
    """The side to open, 0 when the direction, the universe or the kill switch forbids it."""
    if halted or not in_univ or (dd > 0 and not prm.allow_long) or (dd < 0 and not prm.allow_short):
        return 0
    return dd


@_inline
def time_up_nb(ps, bar, prm):
    """Whether the time stop closes the position at this bar's close."""
    held = bar - ps.bar + (0 if prm.fill_close else 1)
    return prm.time_stop > 0 and ps.size != 0.0 and held >= prm.time_stop


@_inline
def close_decision_nb(ps, bar, b_le, b_lx, b_se, b_sx, in_univ, kill_now, halted, prm):
    """Phase 4's decision: ``(exit, exit kind, side to open)`` from the signals, the time stop, the
    universe (a non-member exits and opens nothing) and the kill switch (it overrides the kind)."""
    dx, dd = signal_sides_nb(ps.size, b_le, b_lx, b_se, b_sx)
    dk = OrderKind.EXIT_SIGNAL
    if not dx and time_up_nb(ps, bar, prm):
        dx = True
        dk = OrderKind.TIME_STOP
    if not in_univ and ps.size != 0.0 and not dx:
        dx = True
        dk = OrderKind.UNIVERSE_EXIT
    if kill_now and ps.size != 0.0:
        dx = True
        dk = OrderKind.KILL_SWITCH
    return dx, dk, allowed_side_nb(dd, in_univ, halted, prm)


# --------------------------------------------------------------------------- equity statistics
@_inline
def _push_nb(acc, r):
    """Welford update of the daily-return accumulator ``acc = [n, mean, m2, downside_sq]``."""
    acc[0] += 1.0
    d = r - acc[1]
    acc[1] += d / acc[0]
    acc[2] += d * (r - acc[1])
    if r < 0.0:
        acc[3] += r * r


@_inline
def _push_day_nb(acc, daily_out, k, r):
    """Push day ``k``'s return into the accumulator and, when ``daily_out`` has room, record it."""
    _push_nb(acc, r)
    if k < daily_out.shape[0]:
        daily_out[k] = r
    return k + 1


@_inline
def _day_return(st):
    return st.day_last / st.day_prev - 1.0 if st.day_prev > 0.0 else 0.0


@_inline
def _day_row(ts, i, day):
    """First row after ``i`` of a day after ``day`` (``ts`` sorted; ``len(ts)``: none)."""
    return i + 1 + np.searchsorted(ts[i + 1 :], (day + 1) * DAY_US)


@_helper
def stats_start_nb(ts, init_cash):
    """Statistics before the first bar of ``ts`` (the equity starts at ``init_cash``)."""
    day = ts[0] // DAY_US
    return Stats(0.0, init_cash, 0, init_cash, 0.0, 0, day, _day_row(ts, 0, day), init_cash, init_cash, 0)


@_inline
def _drawdown_end_nb(st, ts, i):
    """``(max drawdown, longest drawdown in µs)`` with the drawdown from the peak ending at row ``i``."""
    max_dd = st.max_dd
    max_dd_us = st.max_dd_us
    if st.trough < st.peak:
        if ts[i] - ts[st.peak_row] > max_dd_us:
            max_dd_us = ts[i] - ts[st.peak_row]
        ddv = (st.peak - st.trough) / st.peak
        if ddv > max_dd:
            max_dd = ddv
    return max_dd, max_dd_us


@_inline
def _new_day_nb(st, ts, i, dacc, daily_out):
    """Row ``i`` starts a new UTC day: the finished day's return, then 0 for every day without a
    bar, are pushed; returns ``(day, next_row, n_day)``."""
    d = ts[i] // DAY_US
    n_day = _push_day_nb(dacc, daily_out, st.n_day, _day_return(st))
    for _ in range(d - st.day - 1):
        n_day = _push_day_nb(dacc, daily_out, n_day, 0.0)
    return d, _day_row(ts, i, d), n_day


@_inline
def stats_push_nb(st, ts, i, eq, dacc, daily_out):
    """Bar ``i``'s equity ``eq`` into the statistics: its sum, the running peak and trough (a
    drawdown's depth and duration are taken when the peak is regained) and the daily returns
    (the last equity of each UTC day, into ``dacc``/``daily_out``). The one definition of the
    equity statistics: simulate, portfolios and :func:`equity_stats_nb` use it alike.

    Inlined into loops that carry ``st`` (assigned once per bar: numba then keeps it in
    registers); its callers are compiled without reference counting."""
    peak, peak_row, trough, max_dd, max_dd_us = st.peak, st.peak_row, st.trough, st.max_dd, st.max_dd_us
    if eq >= peak:
        max_dd, max_dd_us = _drawdown_end_nb(st, ts, i)
        peak = eq
        peak_row = i
        trough = eq
    else:
        trough = min(trough, eq)
    day, next_row, day_prev, n_day = st.day, st.next_row, st.day_prev, st.n_day
    if i == next_row:
        day, next_row, n_day = _new_day_nb(st, ts, i, dacc, daily_out)
        day_prev = st.day_last
    return Stats(
        st.sum_eq + eq, peak, peak_row, trough, max_dd, max_dd_us, day, next_row, day_prev, eq, n_day
    )


@_helper
def stats_finish_nb(st, ts, dacc, daily_out):
    """Close the statistics after the last bar: ``(sum of equity, max drawdown, longest drawdown
    in µs)``; the last day's return is pushed."""
    _push_day_nb(dacc, daily_out, st.n_day, _day_return(st))
    max_dd, max_dd_us = _drawdown_end_nb(st, ts, ts.shape[0] - 1)
    return st.sum_eq, max_dd, max_dd_us


@_helper
def equity_stats_nb(ts, equity, init_cash, dacc, daily_out):
    """Statistics of an equity path: returns ``(sum of equity, max drawdown, longest drawdown in
    µs)`` and pushes the daily returns (last equity per UTC day) into ``dacc``/``daily_out``:
    :func:`stats_push_nb` over the array."""
    st = stats_start_nb(ts, init_cash)
    for i in range(equity.shape[0]):
        st = stats_push_nb(st, ts, i, equity[i], dacc, daily_out)
    return stats_finish_nb(st, ts, dacc, daily_out)


@_helper
def finish_metrics_nb(out, init_cash, final, dacc, stats, acc, is_open, exposure, n_bars):
    """Fill the metric vector (slots ``enums.Metric``) from the run's statistics ``(sum of equity,
    max drawdown, longest drawdown in µs)`` and accumulators."""
    sum_eq, max_dd, max_dd_us = stats
    n_closed = int(acc[_Acc.CLOSED])
    nd = dacc[0]
    out[Metric.TOTAL_RETURN] = final / init_cash - 1.0
    if final > 0.0 and nd > 0.0:
        ann = (final / init_cash) ** (365.0 / nd) - 1.0
    else:
        ann = -1.0 if nd > 0.0 else np.nan
    out[Metric.ANNUAL_RETURN] = ann
    sharpe_ok = nd > 1.0 and dacc[2] > 0.0
    out[Metric.SHARPE] = dacc[1] / math.sqrt(dacc[2] / (nd - 1.0)) * _SQRT365 if sharpe_ok else np.nan
    sortino_ok = nd > 0.0 and dacc[3] > 0.0
    out[Metric.SORTINO] = dacc[1] / math.sqrt(dacc[3] / nd) * _SQRT365 if sortino_ok else np.nan
    out[Metric.MAX_DRAWDOWN] = max_dd
    out[Metric.CALMAR] = ann / max_dd if max_dd > 0.0 else np.nan
    out[Metric.WIN_RATE] = int(acc[_Acc.WIN]) / n_closed if n_closed > 0 else np.nan
    gross_win, gross_loss = acc[_Acc.GROSS_WIN], acc[_Acc.GROSS_LOSS]
    no_loss = np.inf if gross_win > 0.0 else np.nan
    out[Metric.PROFIT_FACTOR] = gross_win / gross_loss if gross_loss > 0.0 else no_loss
    out[Metric.N_TRADES] = n_closed + (1.0 if is_open else 0.0)
    out[Metric.EXPOSURE] = exposure
    out[Metric.FEES_PAID] = acc[_Acc.FEES]
    out[Metric.FUNDING_PAID] = acc[_Acc.FUNDING]
    out[Metric.MAX_DRAWDOWN_DURATION] = max_dd_us / DAY_US
    out[Metric.EXPECTANCY] = acc[_Acc.SUM_PNL] / n_closed if n_closed > 0 else np.nan
    mean_eq = sum_eq / n_bars
    out[Metric.TURNOVER] = acc[_Acc.TRADED] / mean_eq if mean_eq > 0.0 else np.nan
    out[Metric.FINAL_VALUE] = final
    out[Metric.OPEN_POSITION] = 1.0 if is_open else 0.0


# --------------------------------------------------------------------------- input checks
@_inline
def positive_nb(v):
    """``v`` is finite and > 0 (branch-free; NaN fails)."""
    return (v > 0.0) & (v < np.inf)


@_inline
def row_ok_nb(check, i, ts, open_, high, low, close, t_prev):
    """Row ``i``'s inputs named by ``check`` (``enums.Check`` bits) are valid: prices finite and
    > 0, ``ts`` not before ``t_prev`` (the previous row's); returns ``(ok, ts[i])``."""
    ok = True
    if check & Check.CLOSE:
        ok = ok & positive_nb(close[i])
    if check & Check.OPEN:
        ok = ok & positive_nb(open_[i])
    if check & Check.HIGH:
        ok = ok & positive_nb(high[i])
    if check & Check.LOW:
        ok = ok & positive_nb(low[i])
    if check & Check.TS:
        t_i = ts[i]
        ok = ok & (t_i >= t_prev)
        t_prev = t_i
    return ok, t_prev


@_jit
def first_not_positive_nb(a):
    """Index of the first value that is not finite and > 0, or -1.

    The fast path is branch-free (a minimum and a sum, which vectorise): any NaN or inf makes the
    sum non-finite, any value <= 0 makes the minimum <= 0; only then is the row searched for.
    """
    mn = np.inf
    total = 0.0
    for i in range(a.shape[0]):
        v = a[i]
        mn = v if v < mn else mn
        total += v
    if mn > 0.0 and np.isfinite(total):
        return -1
    for i in range(a.shape[0]):
        if not positive_nb(a[i]):
            return i
    return -1


@_jit
def first_decrease_nb(t):
    """Index of the first value smaller than its predecessor, or -1."""
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            return i
    return -1


@_helper
def first_bad_input_nb(ts, open_, high, low, close, check):
    """First row where an input named by ``check`` (``enums.Check`` bits) is invalid, or -1: the
    rule of :func:`simulate_nb`'s fused checks (:func:`row_ok_nb`)."""
    t_prev = ts[0]
    for i in range(close.shape[0]):
        ok, t_prev = row_ok_nb(check, i, ts, open_, high, low, close, t_prev)
        if not ok:
            return i
    return -1


# --------------------------------------------------------------------------- one asset
class Ticks(NamedTuple):
    """The trades inside bars for ``intrabar="ticks"`` (every array of length 0 for ``ohlc``), and
    what a run reports about them (``out``, ``need``). See :func:`simulate_ticks_nb`."""

    lo: np.ndarray  # int64 per bar: its first trade in ``ts``/``price``; -1: not loaded
    hi: np.ndarray  # int64 per bar: one past its last trade
    ts: np.ndarray  # int64 µs, the loaded bars' trades in (ts, trade_id) order
    price: np.ndarray  # float64
    f_off: np.ndarray  # int64 n+1: bar i's funding instants are f_ts[f_off[i]:f_off[i+1]]; or length 0
    f_ts: np.ndarray  # int64 µs
    f_rate: np.ndarray  # float64
    # int64 [bars resolved from trades, intrabar disagreements, bars not loaded, limits expired]
    out: np.ndarray
    need: np.ndarray  # bool per bar: its trades were needed but not loaded


class Bars(NamedTuple):
    """A single asset's inputs (see :func:`simulate_nb`)."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    le: np.ndarray
    lx: np.ndarray
    se: np.ndarray
    sx: np.ndarray
    funding: np.ndarray
    vol_est: np.ndarray
    scale: np.ndarray
    tk: Ticks


class Limit(NamedTuple):
    """A limit entry decided at a close (``backtest.orders.type=limit``), active from ``first``
    (the next bar) through ``last`` (its time in force) until it fills."""

    side: int  # 0: none
    price: float
    first: int
    last: int
    scale: float  # bet size of the decision bar
    vol_est: float  # volatility known at the decision bar (vol_target sizing)


_NO_LIMIT = Limit(0, 0.0, -1, -1, 1.0, 0.0)


class Sim(NamedTuple):
    """The state of a single-asset run between bars."""

    cash: float
    ps: Position
    pend: Order
    st: Stats
    kpeak: float  # equity peak of the kill switch
    halted: bool  # the kill switch has fired
    n_exposed: int  # bars ending with a position
    eq: float  # the last bar's equity
    t_prev: int  # the last bar's time (order check)
    lim: Limit  # the limit entry waiting for its fill


@_inline
def _at(a, i, default):
    """``a[i]``, or ``default`` for an input that is not given (an empty array)."""
    return a[i] if a.shape[0] > 0 else default


@_inline
def _signals_nb(bars, i):
    """Bar ``i``'s long entry, long exit, short entry and short exit (False for an unused pair)."""
    has_long = bars.le.shape[0] > 0
    has_short = bars.se.shape[0] > 0
    return (
        bars.le[i] if has_long else False,
        bars.lx[i] if has_long else False,
        bars.se[i] if has_short else False,
        bars.sx[i] if has_short else False,
    )


@_inline
def _row_ok_nb(check, i, bars, t_prev):
    return row_ok_nb(check, i, bars.ts, bars.open, bars.high, bars.low, bars.close, t_prev)


@_inline
def _open_phase_nb(cash, lg, bars, i, pend, halted, ps, prm):
    """Phase 1: the order decided at the previous close fills at this open."""
    o = bars.open[i]
    if pend.exit and ps.size != 0.0:
        cash, ps = exit_at_nb(cash, lg, 0, i, i, bars.ts[i], pend.kind, o, pend.vol_ref, ps, prm)
    if pend.side != 0 and ps.size == 0.0 and not halted and not cooling_nb(ps, i, prm):
        cash, ps = open_position_nb(
            cash,
            lg,
            0,
            i,
            i,
            bars.ts[i],
            pend.side,
            o,
            cash,
            cash,
            pend.vol_ref,
            pend.vol_est,
            pend.scale,
            ps,
            prm,
        )
    return cash, ps


@_inline
def _in_bar_nb(cash, lg, bars, i, ps, prm):
    """Phases 2 and 3: intra-bar exits (the volume of the previous bar for impact), funding due
    in the bar at its close price (on a position the bar exits, only a cost: :func:`stop_exit_nb`)."""
    fund = bars.funding.shape[0] > 0
    fpay = ps.size * bars.close[i] * bars.funding[i] if fund else 0.0
    if ps.guarded and stop_hit_nb(ps, bars.high[i], bars.low[i]):
        vol_ref = _at(bars.volume, i - 1, 0.0) if i > 0 else 0.0
        cash, ps = stop_exit_nb(
            cash, lg, 0, i, i, bars.ts[i], bars.open[i], bars.high[i], bars.low[i], vol_ref, ps, fpay, prm
        )
    if fund and ps.size != 0.0:
        cash, ps = pay_funding_nb(cash, lg, ps, fpay)
    return cash, ps


@_inline
def _close_phase_nb(cash, lg, bars, i, dx, dk, dd, ps, prm):
    """Phase 4's execution: with ``fill="close"`` the exit, then the entry, at this close; else the
    order is kept for the next open. Returns ``(cash, position, pending order)``."""
    c = bars.close[i]
    v = _at(bars.volume, i, 0.0)
    ve = _at(bars.vol_est, i, 0.0)
    sc = _at(bars.scale, i, 1.0)
    if not prm.fill_close:
        return cash, ps, Order(dx, dk, dd, sc, v, ve)
    if dx:
        cash, ps = exit_at_nb(cash, lg, 0, i, i, bars.ts[i], dk, c, v, ps, prm)
    if dd != 0 and ps.size == 0.0 and not cooling_nb(ps, i, prm):
        cash, ps = open_position_nb(cash, lg, 0, i, i, bars.ts[i], dd, c, cash, cash, v, ve, sc, ps, prm)
    return cash, ps, _NO_ORDER


@_inline
def _fixed_stop_nb(ps, prm):
    """The stop-loss level of a position (-inf / +inf: none), without trailing or liquidation."""
    side = 1.0 if ps.size > 0.0 else -1.0
    return ps.price * (1.0 - side * prm.sl) if prm.sl > 0.0 else -side * np.inf


@_helper
def _funding_span_nb(tk, i):
    """``(first, end)`` of bar ``i``'s funding instants in ``tk.f_ts`` (none without funding)."""
    if tk.f_off.shape[0] == 0:
        return 0, 0
    return tk.f_off[i], tk.f_off[i + 1]


@_helper
def _pre_open_ticks_nb(cash, lg, bars, i, ps):
    """``intrabar="ticks"``, before the open's fills: the funding instants up to the bar's first
    trade, on the position held then at the previous close. ``(cash, position, next instant)``."""
    tk = bars.tk
    f, f_end = _funding_span_nb(tk, i)
    if f < f_end and ps.size != 0.0:
        j0 = tk.lo[i]
        if j0 < 0:
            tk.need[i] = True
            return cash, ps, f_end
        paid, f = funding_until_nb(ps.size, bars.close[i - 1], tk.f_ts, tk.f_rate, f, f_end, tk.ts[j0])
        cash, ps = pay_funding_nb(cash, lg, ps, paid)
    return cash, ps, f


@_helper
def _in_bar_ticks_nb(cash, lg, bars, i, ps, f, prm):
    """Phases 2 and 3 from the bar's trades (``intrabar="ticks"``), when its range reaches a level
    or a funding instant falls in it (:func:`_walk_nb`). A bar whose trades are not loaded is
    marked in ``tk.need`` and resolved by the bar rules for this pass (the caller loads it and
    runs again)."""
    tk = bars.tk
    _, f_end = _funding_span_nb(tk, i)
    stop = _fixed_stop_nb(ps, prm)
    reach = ps.guarded and reaches_nb(
        ps.size, bars.high[i], bars.low[i], stop, ps.tgt, ps.liq, ps.extreme, prm.tsl
    )
    if not (f < f_end or reach):
        return cash, ps
    if tk.lo[i] < 0:
        tk.need[i] = True
        tk.out[2] += 1
        return _in_bar_nb(cash, lg, bars, i, ps, prm)
    # a position entered at this first trade has its levels from the next one
    at = tk.lo[i] if (ps.row == i and not prm.fill_close) else -1
    return _walk_nb(cash, lg, bars, i, ps, at, f, True, prm)


@_helper
def _walk_nb(cash, lg, bars, i, ps, entered_at, f, compare, prm):
    """The position through bar ``i``'s (loaded) trades, from the one after ``entered_at`` (-1:
    held from before the bar, all of them): funding at its instants, then the first exit
    (:func:`walk_trades_nb`). ``compare``: count a disagreement with the bar rules' exit."""
    tk = bars.tk
    _, f_end = _funding_span_nb(tk, i)
    j0, j1 = tk.lo[i], tk.hi[i]
    start, prev = j0, (bars.close[i - 1] if i > 0 else tk.price[j0])
    if entered_at >= 0:
        start, prev = entered_at + 1, tk.price[entered_at]
        while f < f_end and tk.f_ts[f] <= tk.ts[entered_at]:
            f += 1  # before the entry
    stop = _fixed_stop_nb(ps, prm)
    kind, j, px, ext, paid, f = walk_trades_nb(
        ps.size, tk.ts, tk.price, start, j1, prev, stop, ps.tgt, ps.liq, ps.extreme, prm.tsl, prm.touch,
        tk.f_ts, tk.f_rate, f, f_end,
    )  # fmt: skip
    tk.out[0] += 1
    if compare:
        side = 1 if ps.size > 0.0 else -1
        o, h, lo = bars.open[i], bars.high[i], bars.low[i]
        k_bar, _ = intrabar_exit_nb(
            side, o, h, lo, ps.price, ps.extreme, prm.sl, prm.tp, prm.tsl, ps.liq, prm.touch
        )
        tk.out[1] += k_bar != kind
    if paid != 0.0:
        cash, ps = pay_funding_nb(cash, lg, ps, paid)
    if kind >= 0:  # a stop-market at the trade's price, the target at its price, a liquidation
        vol_ref = _at(bars.volume, i - 1, 0.0) if i > 0 else 0.0
        return bar_exit_nb(cash, lg, 0, i, i, bars.ts[i], kind, px, vol_ref, ps, prm)
    if prm.tsl > 0.0:  # the best price of the trades walked
        ext, prot = trailed_nb(ps.size, ps.extreme, ps.prot_fix, ext, ext, prm.tsl)
        ps = _position(ps, ps.size, ps.margin, ps.funding, ext, prot, ps.last_exit)
    return cash, ps


@_helper
def _limit_fill_nb(cash, lg, bars, i, lim, px, fee, ps, prm):
    """A limit entry filled at ``px`` with the fee rate ``fee`` (no slippage): ``(cash, position)``."""
    return open_position_nb(
        cash, lg, 0, i, i, bars.ts[i], lim.side, px, cash, cash, 0.0, lim.vol_est, lim.scale, ps,
        fill_params_nb(prm, fee),
    )  # fmt: skip


@_inline
def _limit_hit_nb(side, limit, p, touch):
    """A price ``p`` (a trade, or the bar's low/high) beyond a ``side`` limit (or at it: ``touch``)."""
    return side * (limit - p) > 0.0 or (touch and p == limit)


@_helper
def _limit_bar_nb(cash, lg, bars, i, lim, ps, prm):
    """A limit entry filled inside bar ``i`` by the bar rules (``ohlc``, or a ``ticks`` pass that
    lacks the bar's trades): the new position's protective levels then meet the rest of the range
    (the worse case), its target waits for the next bar. The bar's funding (at its close price)
    is charged only when a cost: the fill may have come after the instant."""
    side, px = lim.side, lim.price
    cash, ps = _limit_fill_nb(cash, lg, bars, i, lim, px, prm.maker, ps, prm)
    if ps.size != 0.0 and bars.funding.shape[0] > 0:
        fpay = ps.size * bars.close[i] * bars.funding[i]
        if fpay > 0.0:
            cash, ps = pay_funding_nb(cash, lg, ps, fpay)
    if ps.size != 0.0 and ps.guarded:
        h, lo = (px, bars.low[i]) if side > 0 else (bars.high[i], px)
        vol_ref = _at(bars.volume, i - 1, 0.0) if i > 0 else 0.0
        cash, ps = stop_exit_nb(cash, lg, 0, i, i, bars.ts[i], px, h, lo, vol_ref, ps, 0.0, prm)
    return cash, ps


@_helper
def _limit_phase_nb(cash, lg, bars, i, lim, ps, f, prm):
    """A flat bar with an active limit entry (README, "Limit entry orders"): marketable at the
    bar's first trade when the bar is its first (a taker fill at that trade, then the bar as after
    a market entry), else filled at its price with the maker fee by the first trade beyond it
    (``touch``: at it), from the bar's range (:func:`_limit_bar_nb`) or its trades (``ticks``: the
    rest of the bar is then walked). ``(cash, position, limit left, trail)``: ``trail`` False after
    a fill inside the bar (the bar's best price may come before it: it does not move the trailing
    stop; with trades, the walk after the fill did)."""
    side, px, o = lim.side, lim.price, bars.open[i]
    tk = bars.tk
    ticks = tk.lo.shape[0] > 0
    if i == lim.first and side * (o - px) <= 0.0:
        cash, ps = _limit_fill_nb(cash, lg, bars, i, lim, o, prm.fee, ps, prm)
        if ps.size != 0.0:
            if ticks:
                cash, ps = _in_bar_ticks_nb(cash, lg, bars, i, ps, f, prm)
            else:
                cash, ps = _in_bar_nb(cash, lg, bars, i, ps, prm)
        return cash, ps, _NO_LIMIT, True
    if not _limit_hit_nb(side, px, bars.low[i] if side > 0 else bars.high[i], prm.touch):
        return cash, ps, lim, True
    if ticks and tk.lo[i] < 0:
        tk.need[i] = True
        tk.out[2] += 1
    if not ticks or tk.lo[i] < 0:
        cash, ps = _limit_bar_nb(cash, lg, bars, i, lim, ps, prm)
        return cash, ps, _NO_LIMIT, False
    j = tk.lo[i] + (1 if i == lim.first else 0)  # the first trade was checked above
    while j < tk.hi[i] and not _limit_hit_nb(side, px, tk.price[j], prm.touch):
        j += 1
    if j == tk.hi[i]:
        return cash, ps, lim, True
    cash, ps = _limit_fill_nb(cash, lg, bars, i, lim, px, prm.maker, ps, prm)
    if ps.size != 0.0:
        cash, ps = _walk_nb(cash, lg, bars, i, ps, j, f, False, prm)
    return cash, ps, _NO_LIMIT, False


@_inline
def _limit_at_close_nb(lim, bars, i, dd, halted, prm):
    """At bar ``i``'s close: the limit entry expires after its last bar (counted in
    ``tk.out[3]``) or is cancelled by the kill switch; a new entry decision ``dd`` replaces it
    with a limit at ``close * (1 -/+ offset)``. Returns ``(limit, market entry side)``."""
    if lim.side != 0 and (lim.last <= i or halted):
        if lim.last <= i:
            bars.tk.out[3] += 1
        lim = _NO_LIMIT
    if prm.limit and dd != 0:
        c = bars.close[i]
        lim = Limit(
            dd,
            c * (1.0 - dd * prm.offset),
            i + 1,
            i + prm.tif,
            _at(bars.scale, i, 1.0),
            _at(bars.vol_est, i, 0.0),
        )
        dd = 0
    return lim, dd


@_inline
def _event_bar_nb(i, s, bars, lg, marks, prm):
    """Bar ``i`` through the five phases, then marked (inputs already checked)."""
    cash, ps = s.cash, s.ps
    ticks = bars.tk.lo.shape[0] > 0
    f = 0
    if ticks:
        cash, ps, f = _pre_open_ticks_nb(cash, lg, bars, i, ps)
    if s.pend.exit or s.pend.side != 0:
        cash, ps = _open_phase_nb(cash, lg, bars, i, s.pend, s.halted, ps, prm)
    lim = s.lim
    trail = True
    if ps.size == 0.0 and lim.side != 0 and lim.first <= i and not (s.halted or cooling_nb(ps, i, prm)):
        cash, ps, lim, trail = _limit_phase_nb(cash, lg, bars, i, lim, ps, f, prm)
    elif ps.size != 0.0:
        if ticks:
            cash, ps = _in_bar_ticks_nb(cash, lg, bars, i, ps, f, prm)
        else:
            cash, ps = _in_bar_nb(cash, lg, bars, i, ps, prm)
    c = bars.close[i]
    kpeak, halted, kill_now = kill_nb(equity_nb(cash, ps, c), s.kpeak, s.halted, prm)
    b_le, b_lx, b_se, b_sx = _signals_nb(bars, i)
    dx, dk, dd = close_decision_nb(ps, i, b_le, b_lx, b_se, b_sx, True, kill_now, halted, prm)
    lim, dd = _limit_at_close_nb(lim, bars, i, dd, halted, prm)
    pend = _NO_ORDER
    if dx or dd != 0:
        cash, ps, pend = _close_phase_nb(cash, lg, bars, i, dx, dk, dd, ps, prm)
    if trail:
        ps = trail_nb(ps, i, bars.high[i], bars.low[i], prm)
    eq = equity_nb(cash, ps, c) if ps.size != 0.0 else cash
    st = stats_push_nb(s.st, bars.ts, i, eq, marks.dacc, marks.daily)
    if lg.store:
        marks.equity[i] = eq
        marks.cash[i] = cash
        marks.position[i] = ps.size
    return Sim(cash, ps, pend, st, kpeak, halted, s.n_exposed + (ps.size != 0.0), eq, s.t_prev, lim)


@_inline
def _flat_run_nb(i, s, bars, marks, store, prm, check):
    """Bars from ``i`` that are quiet while flat with no order pending (no entry decided, the kill
    switch not fired): only the statistics move. Returns ``(first bar that is not quiet, state,
    bad row found)``; the loop carries scalars only (numba keeps them in registers)."""
    n = bars.close.shape[0]
    cash = s.cash
    st, kpeak, t_prev, eq = s.st, s.kpeak, s.t_prev, s.eq
    bad = False
    while i < n:
        b_le, b_lx, b_se, b_sx = _signals_nb(bars, i)
        _, dd = signal_sides_nb(0.0, b_le, b_lx, b_se, b_sx)
        if allowed_side_nb(dd, True, s.halted, prm) != 0:
            break
        if prm.max_dd_kill > 0.0:  # the flat equity is the cash (the same sum as in a position)
            kp, _, killed = kill_nb(equity_nb(cash, s.ps, bars.close[i]), kpeak, s.halted, prm)
            if killed:
                break
            kpeak = kp
        if check != 0:
            ok, t_prev = _row_ok_nb(check, i, bars, t_prev)
            if not ok:
                bad = True
                break
        eq = cash
        st = stats_push_nb(st, bars.ts, i, eq, marks.dacc, marks.daily)
        if store:
            marks.equity[i] = eq
            marks.cash[i] = cash
            marks.position[i] = 0.0
        i += 1
    return i, Sim(cash, s.ps, s.pend, st, kpeak, s.halted, s.n_exposed, eq, t_prev, s.lim), bad


@_inline
def _held_run_nb(i, s, bars, lg, marks, prm, check):
    """Bars from ``i`` that are quiet while a position is held with no order pending (no level
    reached, no exit decided, the kill switch not fired): funding, the trailing stop and the
    statistics move. Returns as :func:`_flat_run_nb`."""
    n = bars.close.shape[0]
    ps = s.ps
    fund = bars.funding.shape[0] > 0
    cash, funding, extreme, prot = s.cash, ps.funding, ps.extreme, ps.prot
    st, kpeak, t_prev, eq = s.st, s.kpeak, s.t_prev, s.eq
    acc_fund = lg.acc[_Acc.FUNDING]
    i0 = i
    bad = False
    tk = bars.tk
    ticks = tk.lo.shape[0] > 0
    stop = _fixed_stop_nb(ps, prm)
    while i < n:
        if ps.guarded and levels_hit_nb(ps.size, prot, ps.tgt, bars.high[i], bars.low[i]):
            break
        if ticks and (
            (tk.f_off.shape[0] > 0 and tk.f_off[i + 1] > tk.f_off[i])
            or (
                ps.guarded
                and reaches_nb(ps.size, bars.high[i], bars.low[i], stop, ps.tgt, ps.liq, extreme, prm.tsl)
            )
        ):
            break  # the bar's trades decide
        b_le, b_lx, b_se, b_sx = _signals_nb(bars, i)
        dx, _ = signal_sides_nb(ps.size, b_le, b_lx, b_se, b_sx)
        c = bars.close[i]
        fpay = ps.size * c * bars.funding[i] if fund else 0.0
        cash_i = cash - fpay if fund else cash
        kp, _, killed = kill_nb(equity_nb(cash_i, ps, c), kpeak, s.halted, prm)
        if dx or killed or time_up_nb(ps, i, prm):
            break
        if check != 0:
            ok, t_prev = _row_ok_nb(check, i, bars, t_prev)
            if not ok:
                bad = True
                break
        if fund:
            funding += fpay
            acc_fund += fpay
        cash = cash_i
        kpeak = kp
        if prm.tsl > 0.0:
            extreme, prot = trailed_nb(ps.size, extreme, ps.prot_fix, bars.high[i], bars.low[i], prm.tsl)
        eq = equity_nb(cash, ps, c)
        st = stats_push_nb(st, bars.ts, i, eq, marks.dacc, marks.daily)
        if lg.store:
            marks.equity[i] = eq
            marks.cash[i] = cash
            marks.position[i] = ps.size
        i += 1
    lg.acc[_Acc.FUNDING] = acc_fund
    ps = _position(ps, ps.size, ps.margin, funding, extreme, prot, ps.last_exit)
    return i, Sim(cash, ps, s.pend, st, kpeak, s.halted, s.n_exposed + (i - i0), eq, t_prev, s.lim), bad


@_helper
def _simulate_run_nb(bars, lg, marks, prm, check):
    """The bars of a single asset: runs of quiet bars, and the bars between them through every
    phase; returns ``(final state, bad row or -1)``."""
    n = bars.close.shape[0]
    cash = prm.init_cash
    s = Sim(
        cash, _FLAT, _NO_ORDER, stats_start_nb(bars.ts, cash), cash, False, 0, cash, bars.ts[0], _NO_LIMIT
    )
    i = 0
    while i < n:
        bad = False
        if not (s.pend.exit or s.pend.side != 0 or s.lim.side != 0):
            if s.ps.size == 0.0:
                i, s, bad = _flat_run_nb(i, s, bars, marks, lg.store, prm, check)
            else:
                i, s, bad = _held_run_nb(i, s, bars, lg, marks, prm, check)
        if i < n and not bad and check != 0:
            ok, t_prev = _row_ok_nb(check, i, bars, s.t_prev)
            bad = not ok
            s = Sim(s.cash, s.ps, s.pend, s.st, s.kpeak, s.halted, s.n_exposed, s.eq, t_prev, s.lim)
        if bad:
            return s, i
        if i < n:
            s = _event_bar_nb(i, s, bars, lg, marks, prm)
        i += 1
    return s, -1


@_jit
def simulate_nb(
    ts, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, p, store, eq_out, cash_out,
    pos_out, orders, trades, metrics, daily_out, check,
):  # fmt: skip
    """Single-asset backtest; returns ``(n_orders, n_trades, bad_row)`` and fills ``metrics``.

    ``bad_row`` is -1, or the first row where an input named by ``check`` is invalid (the run
    then stops there and its outputs are meaningless; the caller raises).

    Parameters
    ----------
    ts, open_, high, low, close : arrays of length n (int64 µs, float64)
    volume : float64 array of length n, or length 0 (no participation impact)
    le, lx, se, sx : bool arrays (long entry/exit, short entry/exit) of length n, or length 0
        (unused: never true; a direction's pair is passed together)
    funding : float64 funding rate due in each bar (sum of the bar's events), or length 0
    vol_est : float64 annualised volatility known at each bar's close (volatility target), or length 0
    scale : float64 bet size in [0, 1] decided at each bar's close (scales the entry), or length 0
    p : float64 parameter vector (``enums.Param``)
    store : write equity, cash and position per bar and the order/trade records (False in
        sweeps: then ``eq_out``, ``cash_out``, ``pos_out``, ``orders`` and ``trades`` may be empty)
    daily_out : float64 array receiving the daily returns (one per UTC day from the first bar's
        day to the last's), or length 0
    check : bit mask of inputs validated in the same pass (``enums.Check``): close/open/high/low
        must be finite and > 0, ts non-decreasing; 0 when the caller validated them already
    """
    e_i = np.zeros(0, dtype=np.int64)
    e_f = np.zeros(0)
    tk = Ticks(e_i, e_i, e_i, e_f, e_i, e_i, e_f, np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.bool_))
    bars = Bars(ts, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, tk)
    return _simulate_bars_nb(
        bars, p, store, eq_out, cash_out, pos_out, orders, trades, metrics, daily_out, check
    )


@_jit
def simulate_ticks_nb(
    ts, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, tk, p, store, eq_out,
    cash_out, pos_out, orders, trades, metrics, daily_out, check,
):  # fmt: skip
    """:func:`simulate_nb` with ``intrabar="ticks"``: the bars whose range reaches a level, or that
    hold a funding instant while a position is held, are resolved from their trades
    (:func:`_in_bar_ticks_nb`; the rules of the README's "Intrabar fills"). ``tk`` is a
    :class:`Ticks` (funding as instants in it, ``funding`` of length 0); after the run ``tk.need``
    marks the bars whose trades were needed but not loaded (the run is then only a pass that finds
    them) and ``tk.out`` holds the bars resolved, the disagreements with the bar rules, the misses
    and the limit entries that expired. With ``tk.lo`` of length 0 it is :func:`simulate_nb` (the
    bar rules, ``funding`` per bar) that also returns ``tk.out[3]``."""
    bars = Bars(ts, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, tk)
    return _simulate_bars_nb(
        bars, p, store, eq_out, cash_out, pos_out, orders, trades, metrics, daily_out, check
    )


@_jit
def _simulate_bars_nb(bars, p, store, eq_out, cash_out, pos_out, orders, trades, metrics, daily_out, check):
    n = bars.close.shape[0]
    prm = params_nb(p)
    lg = Ledger(store, orders, trades, np.zeros(8), np.zeros(2, dtype=np.int64))
    marks = Marks(eq_out, cash_out, pos_out, np.zeros(4), daily_out)
    s, bad = _simulate_run_nb(bars, lg, marks, prm, check)
    if bad >= 0:
        return lg.cnt[0], lg.cnt[1], bad
    is_open = s.ps.size != 0.0
    if is_open and store:
        record_open_nb(lg, 0, s.ps, n - 1, bars.close[n - 1])
    lg.cnt[1] += is_open
    stats = stats_finish_nb(s.st, bars.ts, marks.dacc, daily_out)
    finish_metrics_nb(metrics, prm.init_cash, s.eq, marks.dacc, stats, lg.acc, is_open, s.n_exposed / n, n)
    return lg.cnt[0], lg.cnt[1], -1


# --------------------------------------------------------------------------- metrics from arrays
@_jit
def equity_metrics_nb(
    ts, equity, init_cash, exposed, trade_pnl, trade_open, fees_paid, funding_paid, traded, out
):
    """The metric vector from per-bar equity and trade pnls (same definitions as the metrics of
    :func:`simulate_nb`): used to cross-check the event loop."""
    n = equity.shape[0]
    dacc = np.zeros(4)
    stats = equity_stats_nb(ts, equity, init_cash, dacc, np.zeros(0))
    acc = np.zeros(8)
    acc[_Acc.FEES] = fees_paid
    acc[_Acc.FUNDING] = funding_paid
    acc[_Acc.TRADED] = traded
    n_open = 0
    for j in range(trade_pnl.shape[0]):
        if trade_open[j]:
            n_open += 1
            continue
        acc[_Acc.CLOSED] += 1.0
        acc[_Acc.SUM_PNL] += trade_pnl[j]
        if trade_pnl[j] > 0.0:
            acc[_Acc.WIN] += 1.0
            acc[_Acc.GROSS_WIN] += trade_pnl[j]
        else:
            acc[_Acc.GROSS_LOSS] -= trade_pnl[j]
    n_exp = 0
    for i in range(n):
        if exposed[i]:
            n_exp += 1
    finish_metrics_nb(out, init_cash, equity[n - 1], dacc, stats, acc, n_open > 0, n_exp / n, n)
    out[Metric.N_TRADES] = acc[_Acc.CLOSED] + n_open


# --------------------------------------------------------------------------- portfolios
class Market(NamedTuple):
    """A portfolio's inputs on its merged timeline (rows = times, columns = symbols); see
    :func:`portfolio_nb`."""

    ts: np.ndarray
    has: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    le: np.ndarray
    lx: np.ndarray
    se: np.ndarray
    sx: np.ndarray
    funding: np.ndarray
    vol_est: np.ndarray
    scale: np.ndarray
    member: np.ndarray


class Book(NamedTuple):
    """A portfolio's per-symbol state."""

    pos: np.ndarray  # position_dt per symbol
    pending: np.ndarray  # order_state_dt per symbol
    nbar: np.ndarray  # the symbol's bar number of its last bar
    prev_t: np.ndarray  # timeline row of the symbol's previous bar
    last_close: np.ndarray
    last_row: np.ndarray  # last row with a bar per symbol (dynamic universes only)


@_inline
def _load_position_nb(pos, k):
    r = pos[k]
    return Position(
        r["size"], r["margin"], r["price"], r["bar"], r["row"], r["fee"], r["funding"], r["extreme"],
        r["liq"], r["prot"], r["prot_fix"], r["tgt"], r["guarded"], r["last_exit"],
    )  # fmt: skip


@_inline
def _store_position_nb(pos, k, ps):
    r = pos[k]
    r["size"] = ps.size
    r["margin"] = ps.margin
    r["price"] = ps.price
    r["bar"] = ps.bar
    r["row"] = ps.row
    r["fee"] = ps.fee
    r["funding"] = ps.funding
    r["extreme"] = ps.extreme
    r["liq"] = ps.liq
    r["prot"] = ps.prot
    r["prot_fix"] = ps.prot_fix
    r["tgt"] = ps.tgt
    r["guarded"] = ps.guarded
    r["last_exit"] = ps.last_exit


@_inline
def _load_order_nb(pending, k):
    r = pending[k]
    return Order(r["exit"], r["kind"], r["side"], r["scale"], r["vol_ref"], r["vol_est"])


@_inline
def _store_order_nb(pending, k, od):
    r = pending[k]
    r["exit"] = od.exit
    r["kind"] = od.kind
    r["side"] = od.side
    r["scale"] = od.scale
    r["vol_ref"] = od.vol_ref
    r["vol_est"] = od.vol_est


@_jit
def _last_rows_nb(has):
    """Per column, the last row where ``has`` is True (-1 for none)."""
    T, K = has.shape
    out = np.full(K, -1, dtype=np.int64)
    for t in range(T):
        for k in range(K):
            if has[t, k]:
                out[k] = t
    return out


@_jit
def _new_book_nb(has, member):
    K = has.shape[1]
    bk = Book(
        np.empty(K, dtype=position_dt),
        np.empty(K, dtype=order_state_dt),
        np.full(K, -1, dtype=np.int64),
        np.full(K, -1, dtype=np.int64),
        np.zeros(K),
        _last_rows_nb(has) if member.shape[0] > 0 else np.zeros(0, dtype=np.int64),
    )
    for k in range(K):
        _store_position_nb(bk.pos, k, _FLAT)
        _store_order_nb(bk.pending, k, _NO_ORDER)
    return bk


@_inline
def _at2(a, t, k, default):
    """``a[t, k]``, or ``default`` for an input that is not given (an empty array)."""
    return a[t, k] if a.shape[0] > 0 else default


@_helper
def _budget_nb(cash, bk, mk, t, prm):
    """``(cash for an entry, portfolio equity)``: size mode ``all`` splits the free cash evenly over
    the flat symbols that may still enter (members, with a universe)."""
    eq_now = cash
    n_flat = 0
    for j in range(bk.pos.shape[0]):
        r = bk.pos[j]
        eq_now += r["margin"] + r["size"] * (bk.last_close[j] - r["price"])
        if r["size"] == 0.0 and (mk.member.shape[0] == 0 or mk.member[t, j]):
            n_flat += 1
    return (cash / n_flat if (prm.size_mode == SizeMode.ALL and n_flat > 0) else cash), eq_now


@_helper
def _pf_enter_nb(cash, lg, bk, mk, t, k, b, side, px_raw, vol_ref, vol_i, scale, ps, prm):
    """Open symbol ``k``'s position, sized against the whole portfolio."""
    _store_position_nb(bk.pos, k, ps)  # the budget sees this symbol flat
    budget, eq_now = _budget_nb(cash, bk, mk, t, prm)
    return open_position_nb(
        cash, lg, k, t, b, mk.ts[t], side, px_raw, budget, eq_now, vol_ref, vol_i, scale, ps, prm
    )


@_helper
def _pf_open_phase_nb(cash, lg, bk, mk, t, k, b, in_univ, halted, pend, ps, prm):
    """Phase 1 of symbol ``k``'s bar: the order decided at its previous close fills at this open."""
    o = mk.open[t, k]
    if pend.exit and ps.size != 0.0:
        cash, ps = exit_at_nb(cash, lg, k, t, b, mk.ts[t], pend.kind, o, pend.vol_ref, ps, prm)
    if pend.side != 0 and ps.size == 0.0 and in_univ and not halted and not cooling_nb(ps, b, prm):
        cash, ps = _pf_enter_nb(
            cash, lg, bk, mk, t, k, b, pend.side, o, pend.vol_ref, pend.vol_est, pend.scale, ps, prm
        )
    return cash, ps


@_inline
def _pf_in_bar_nb(cash, lg, bk, mk, t, k, b, ps, prm):
    """Phases 2 and 3 of symbol ``k``'s bar (its previous bar's volume for impact)."""
    h = mk.high[t, k]
    lo = mk.low[t, k]
    fund = mk.funding.shape[0] > 0
    fpay = ps.size * mk.close[t, k] * mk.funding[t, k] if fund else 0.0
    if ps.guarded and stop_hit_nb(ps, h, lo):
        p = bk.prev_t[k]
        vol_ref = mk.volume[p, k] if (mk.volume.shape[0] > 0 and p >= 0) else 0.0
        cash, ps = stop_exit_nb(cash, lg, k, t, b, mk.ts[t], mk.open[t, k], h, lo, vol_ref, ps, fpay, prm)
    if fund and ps.size != 0.0:
        cash, ps = pay_funding_nb(cash, lg, ps, fpay)
    return cash, ps


@_helper
def _pf_close_phase_nb(cash, lg, bk, mk, t, k, b, dx, dk, dd, ps, prm):
    """Phase 4's execution for symbol ``k`` (as :func:`_close_phase_nb`)."""
    c = mk.close[t, k]
    v = _at2(mk.volume, t, k, 0.0)
    ve = _at2(mk.vol_est, t, k, 0.0)
    sc = _at2(mk.scale, t, k, 1.0)
    if not prm.fill_close:
        return cash, ps, Order(dx, dk, dd, sc, v, ve)
    if dx:
        cash, ps = exit_at_nb(cash, lg, k, t, b, mk.ts[t], dk, c, v, ps, prm)
    if dd != 0 and ps.size == 0.0 and not cooling_nb(ps, b, prm):
        cash, ps = _pf_enter_nb(cash, lg, bk, mk, t, k, b, dd, c, v, ve, sc, ps, prm)
    return cash, ps, _NO_ORDER


@_inline
def _symbol_bar_nb(cash, lg, bk, mk, t, k, kill_now, halted, prm):
    """The five phases of symbol ``k``'s bar closing at row ``t`` (as :func:`simulate_nb`'s bars)."""
    ps = _load_position_nb(bk.pos, k)
    pend = _load_order_nb(bk.pending, k)
    b = bk.nbar[k] + 1
    bk.nbar[k] = b
    in_univ = mk.member.shape[0] == 0 or mk.member[t, k]
    if pend.exit or pend.side != 0:
        cash, ps = _pf_open_phase_nb(cash, lg, bk, mk, t, k, b, in_univ, halted, pend, ps, prm)
    if ps.size != 0.0:
        cash, ps = _pf_in_bar_nb(cash, lg, bk, mk, t, k, b, ps, prm)
    bk.last_close[k] = mk.close[t, k]
    dx, dk, dd = close_decision_nb(
        ps, b, mk.le[t, k], mk.lx[t, k], mk.se[t, k], mk.sx[t, k], in_univ, kill_now, halted, prm
    )
    pend = _NO_ORDER
    if dx or dd != 0:
        cash, ps, pend = _pf_close_phase_nb(cash, lg, bk, mk, t, k, b, dx, dk, dd, ps, prm)
    _store_position_nb(bk.pos, k, trail_nb(ps, t, mk.high[t, k], mk.low[t, k], prm))
    _store_order_nb(bk.pending, k, pend)
    bk.prev_t[k] = t
    return cash


@_helper
def _close_delisted_nb(cash, lg, bk, mk, t, prm):
    """Close, at its last close, every open position whose data has ended (after its last row)
    and that is no longer a member at row ``t`` (kind ``DELISTED``, fee charged, no slippage)."""
    for k in range(bk.pos.shape[0]):
        ps = _load_position_nb(bk.pos, k)
        if ps.size != 0.0 and t > bk.last_row[k] and not mk.member[t, k]:
            cash, ps = close_position_nb(
                cash, lg, k, t, ps.last_exit, mk.ts[t], OrderKind.DELISTED, bk.last_close[k], ps, prm
            )
            _store_position_nb(bk.pos, k, ps)
    return cash


@_inline
def _mark_row_nb(cash, bk, t, store, pos_out):
    """Portfolio equity at row ``t`` (every position at its symbol's last close) and whether any
    position is open; positions into ``pos_out`` when storing."""
    eq = cash
    exposed = False
    for j in range(bk.pos.shape[0]):
        r = bk.pos[j]
        eq += r["margin"] + r["size"] * (bk.last_close[j] - r["price"])
        exposed |= r["size"] != 0.0
        if store:
            pos_out[t, j] = r["size"]
    return eq, exposed


@_helper
def _portfolio_run_nb(mk, bk, lg, marks, prm):
    """The rows of a portfolio: delisted closes, each symbol's bar, marking, statistics and the
    kill switch; returns ``(statistics, last equity, rows with a position)``."""
    T, K = mk.close.shape
    st = stats_start_nb(mk.ts, prm.init_cash)
    cash = prm.init_cash
    halted = False
    kill_now = False  # once halted, every symbol flattens at its next bar's decision
    kpeak = prm.init_cash
    n_exposed = 0
    eq = cash
    for t in range(T):
        if mk.member.shape[0] > 0:
            cash = _close_delisted_nb(cash, lg, bk, mk, t, prm)
        for k in range(K):
            if mk.has[t, k]:
                cash = _symbol_bar_nb(cash, lg, bk, mk, t, k, kill_now, halted, prm)
        eq, exposed = _mark_row_nb(cash, bk, t, lg.store, marks.position)
        n_exposed += exposed
        st = stats_push_nb(st, mk.ts, t, eq, marks.dacc, marks.daily)
        if lg.store:
            marks.equity[t] = eq
            marks.cash[t] = cash
        kpeak, halted, killed = kill_nb(eq, kpeak, halted, prm)
        kill_now |= killed
    return st, eq, n_exposed


@_helper
def _record_open_positions_nb(lg, bk, T):
    """Trade records of the positions still open after the last row (at their last close); returns
    their number."""
    n_open = 0
    for k in range(bk.pos.shape[0]):
        ps = _load_position_nb(bk.pos, k)
        if ps.size == 0.0:
            continue
        n_open += 1
        if lg.store:
            record_open_nb(lg, k, ps, T - 1, bk.last_close[k])
            lg.cnt[1] += 1
    return n_open


@_jit
def portfolio_nb(
    ts, has, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, member, p, store,
    eq_out, cash_out, pos_out, orders, trades, metrics, daily_out,
):  # fmt: skip
    """Several symbols (columns) with shared cash over one merged timeline (rows = time).

    ``has[t, k]``: symbol k has a bar closing at ``ts[t]``; its other inputs at ``[t, k]`` are
    only read then. Symbols with a bar at the same time are processed in column order. Each bar
    of a symbol goes through the same phases as :func:`simulate_nb` (next-open fill, intra-bar
    exits, funding, close decisions); ``next_open`` orders fill at the symbol's next bar.
    Size mode ``all`` splits the free cash evenly over the flat symbols that may still enter.
    The kill switch watches portfolio equity and flattens every symbol. ``vol_est[t, k]``: the
    annualised volatility of symbol k known at that bar (``vol_target`` sizing; (0, 0) without).
    Returns ``(n_orders, n_trades)`` and fills ``metrics`` like :func:`simulate_nb` (``n_trades``
    counts every open position); ``store=False`` (sweeps) writes no records, equity, cash or
    positions, only the daily returns into ``daily_out`` (length 0: none).

    ``member[t, k]`` (shape ``(T, K)``, or ``(0, 0)``: always a member) is the dynamic universe:
    a symbol that is not a member at its bar's close opens nothing (a pending entry is dropped,
    it does not count as a flat symbol for size mode ``all``) and its open position is closed by
    the bar's close decision (kind ``UNIVERSE_EXIT``, filled like any exit). A symbol that is no
    longer a member after its last bar (its data ended: delisted) is closed at its last close,
    fee charged, on the first row where it is not a member (kind ``DELISTED``).
    """
    T, K = close.shape
    prm = params_nb(p)
    mk = Market(ts, has, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, member)
    bk = _new_book_nb(has, member)
    lg = Ledger(store, orders, trades, np.zeros(8), np.zeros(2, dtype=np.int64))
    marks = Marks(eq_out, cash_out, pos_out, np.zeros(4), daily_out)
    st, eq, n_exposed = _portfolio_run_nb(mk, bk, lg, marks, prm)
    n_open = _record_open_positions_nb(lg, bk, T)
    stats = stats_finish_nb(st, ts, marks.dacc, daily_out)
    finish_metrics_nb(metrics, prm.init_cash, eq, marks.dacc, stats, lg.acc, n_open > 0, n_exposed / T, T)
    metrics[Metric.N_TRADES] = lg.acc[_Acc.CLOSED] + n_open
    return lg.cnt[0], lg.cnt[1]


@_jit
def xs_params_nb(p, top_n, bottom_n):
    """The parameter vector of a cross-sectional portfolio, in place: both directions, and size
    mode ``all`` becomes ``percent`` with ``1 / (top_n + bottom_n)`` of equity per position."""
    p[Param.DIRECTION] = 2.0
    if p[Param.SIZE_MODE] == SizeMode.ALL:
        p[Param.SIZE_MODE] = SizeMode.PERCENT
        p[Param.SIZE] = 1.0 / (top_n + bottom_n)


@njit(cache=True, parallel=True, error_model="numpy")
def simulate_checked_nb(
    ts, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, p, eq_out, cash_out,
    pos_out, orders, trades, metrics, check,
):  # fmt: skip
    """:func:`simulate_nb` (``store=True``) on one thread while a second thread validates the
    inputs named by ``check`` (:func:`first_bad_input_nb`); returns ``(n_orders, n_trades,
    bad_row)``. The event loop never fails on invalid values (they only make its outputs
    meaningless), so the two can run at once; with a bad row the caller raises."""
    out = np.full(3, -1, dtype=np.int64)
    daily = np.zeros(0)
    for k in prange(2):
        if k == 0:
            n_ord, n_tr, _ = simulate_nb(
                ts, open_, high, low, close, volume, le, lx, se, sx, funding, vol_est, scale, p, True, eq_out,
                cash_out, pos_out, orders, trades, metrics, daily, 0,
            )  # fmt: skip
            out[0] = n_ord
            out[1] = n_tr
        else:
            out[2] = first_bad_input_nb(ts, open_, high, low, close, check)
    return out[0], out[1], out[2]
