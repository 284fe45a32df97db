"""Numba kernels of the backtest engine.

One event loop, :func:`simulate_nb`, implements every fill, cost, sizing and risk rule and
computes the metrics while it runs, so a sweep (``_sweep_nb.py``) calls the very same function
with ``store=False`` and keeps nothing per bar but a per-thread equity buffer (the equity
statistics come from :func:`equity_stats_nb` over the equity written). :func:`portfolio_nb` runs
the same rules (through the same small helpers) over several symbols with shared cash, for runs
and sweeps alike. Python wrappers in ``engine.py``,
``portfolio.py`` and ``sweep.py`` validate inputs; nothing here checks its arguments, except
that :func:`simulate_nb` can check prices and bar times in its own pass (``check``) and
:func:`simulate_checked_nb` checks them on a second thread while the loop runs (``simulate``).

Bar order of events (bar ``i``)
-------------------------------
1. ``fill="next_open"``: the order decided at bar ``i-1``'s close fills at ``open[i]`` (exit first,
   then entry: a reversal is two orders).
2. Intra-bar: stop loss, trailing stop, take profit and liquidation from ``open/high/low``. A gap
   through a level fills at the open; when a protective level and the target both lie inside the
   bar, the protective one (the worse outcome) is assumed to come first.
3. Funding due in the bar is charged on the position at the bar's close price.
4. At the close: signals, time stop and the drawdown kill switch decide; ``fill="close"`` executes
   at ``close[i]``, ``"next_open"`` keeps the order for bar ``i+1``.
5. Equity is marked at the close.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from btsys.backtest.enums import (
    CHECK_CLOSE,
    CHECK_HIGH,
    CHECK_LOW,
    CHECK_OPEN,
    CHECK_TS,
    DAY_US,
    P_COOLDOWN,
    P_DIRECTION,
    P_FEE,
    P_FEE_FIXED,
    P_FILL,
    P_IMPACT,
    P_IMPACT_EXP,
    P_INIT_CASH,
    P_LEVERAGE,
    P_MAX_DRAWDOWN,
    P_MAX_LEVERAGE,
    P_MAX_POSITION,
    P_MIN_FEE,
    P_MIN_QTY,
    P_MMR,
    P_SIZE,
    P_SIZE_MODE,
    P_SLIPPAGE,
    P_STEP,
    P_STOP_LOSS,
    P_TAKE_PROFIT,
    P_TIME_STOP,
    P_TRAILING_STOP,
    M,
    OrderKind,
    SizeMode,
)

_ENTRY = OrderKind.ENTRY
_EXIT = OrderKind.EXIT
_SL = OrderKind.STOP_LOSS
_TSL = OrderKind.TRAILING_STOP
_TP = OrderKind.TAKE_PROFIT
_LIQ = OrderKind.LIQUIDATION
_TIME = OrderKind.TIME_STOP
_KILL = OrderKind.KILL_SWITCH
_UNIV = OrderKind.UNIVERSE_EXIT
_DELISTED = OrderKind.DELISTED
_S_ALL = SizeMode.ALL
_S_QTY = SizeMode.QTY
_S_NOTIONAL = SizeMode.NOTIONAL
_S_PERCENT = SizeMode.PERCENT
_DAY = DAY_US
_SQRT365 = math.sqrt(365.0)
_M_ANNUAL_RETURN = M["annual_return"]
_M_CALMAR = M["calmar"]
_M_EXPECTANCY = M["expectancy"]
_M_EXPOSURE = M["exposure"]
_M_FEES_PAID = M["fees_paid"]
_M_FINAL_VALUE = M["final_value"]
_M_FUNDING_PAID = M["funding_paid"]
_M_MAX_DRAWDOWN = M["max_drawdown"]
_M_MAX_DRAWDOWN_DURATION = M["max_drawdown_duration"]
_M_N_TRADES = M["n_trades"]
_M_OPEN_POSITION = M["open_position"]
_M_PROFIT_FACTOR = M["profit_factor"]
_M_SHARPE = M["sharpe"]
_M_SORTINO = M["sortino"]
_M_TOTAL_RETURN = M["total_return"]
_M_TURNOVER = M["turnover"]
_M_WIN_RATE = M["win_rate"]


# --------------------------------------------------------------------------- small rules
@njit(cache=True, error_model="numpy")
def fee_nb(notional, fee, fee_fixed, min_fee):
    """Fee of one order: ``notional * fee + fee_fixed``, at least ``min_fee``."""
    f = notional * fee + fee_fixed
    if f < min_fee:
        f = min_fee
    return f


@njit(cache=True, error_model="numpy")
def slip_price_nb(px_raw, side, slip, impact, impact_exp, qty, vol_ref):
    """Fill price moved against the order by fixed slippage plus participation impact.

    impact term: ``impact * (qty / vol_ref) ** impact_exp`` (a fraction of price), ``vol_ref`` the
    volume of the last completed bar when the order was decided (no look-ahead).
    """
    s = slip
    if impact > 0.0 and vol_ref > 0.0:
        s += impact * (qty / vol_ref) ** impact_exp
    return px_raw * (1.0 + side * s)


@njit(cache=True, error_model="numpy")
def liq_price_nb(side, pe, lev, mmr):
    """Isolated-margin liquidation price (0 = none): position equity = maintenance margin.

    long: ``pe * (1 - 1/L) / (1 - mmr)`` (never at L = 1); short: ``pe * (1 + 1/L) / (1 + mmr)``.
    """
    if side > 0:
        return pe * (1.0 - 1.0 / lev) / (1.0 - mmr)
    return pe * (1.0 + 1.0 / lev) / (1.0 + mmr)


@njit(cache=True, error_model="numpy")
def entry_size_nb(
    side,
    px_raw,
    cash,
    equity,
    vol_ref,
    vol_i,
    fee,
    fee_fixed,
    min_fee,
    slip,
    impact,
    impact_exp,
    size_mode,
    size,
    min_qty,
    step,
    lev,
    max_pos,
    max_lev,
    scale,
):
    """Quantity and fill price of an entry; quantity 0 when no order can be placed.

    The margin (notional / leverage) plus the fee must fit in ``cash``. With a participation
    impact the price depends on the quantity: the quantity is sized at the fixed-slippage price,
    the impact price is computed from it, and the quantity is cut back to what that price allows.
    """
    px = px_raw * (1.0 + side * slip)
    if not (px > 0.0) or not (cash > 0.0):
        return 0.0, px
    afford = (cash - fee_fixed) / (1.0 / lev + fee)
    if afford * fee + fee_fixed < min_fee:
        afford = (cash - min_fee) * lev
    cap = afford
    if max_pos < cap:
        cap = max_pos
    if max_lev * equity < cap:
        cap = max_lev * equity
    if size_mode == _S_ALL:
        qty = cap / px
    elif size_mode == _S_QTY:
        qty = size
        if qty * px > cap:
            qty = cap / px
    else:
        if size_mode == _S_NOTIONAL:
            notional = size
        elif size_mode == _S_PERCENT:
            notional = size * equity * lev
        else:  # volatility target
            notional = equity * size / vol_i if vol_i > 0.0 else 0.0
        if notional > cap:
            notional = cap
        qty = notional / px
    qty *= scale  # bet size of the signal bar (1.0 without bet sizing)
    if not (qty > 0.0):
        return 0.0, px
    if impact > 0.0 and vol_ref > 0.0:
        px = slip_price_nb(px_raw, side, slip, impact, impact_exp, qty, vol_ref)
        if qty * px > cap:
            qty = cap / px
    if step > 0.0:
        qty = math.floor(qty / step + 1e-9) * step
        if qty * px > cap * (1.0 + 1e-12):
            qty -= step
    if qty <= 0.0 or qty < min_qty:
        return 0.0, px
    return qty, px


@njit(cache=True, error_model="numpy")
def intrabar_exit_nb(side, o, h, l, pe, extreme, sl, tp, tsl, liq):
    """Exit triggered inside a bar: ``(kind, raw price)``, kind -1 when none.

    ``extreme`` is the best price since entry *before* this bar (highest high for a long, lowest
    low for a short), so a trailing stop never uses the bar's own high. Protective levels (stop,
    trailing stop, liquidation) are taken before the target when both lie in the bar.
    """
    if side > 0:
        prot = -np.inf
        kp = -1
        if sl > 0.0:
            prot = pe * (1.0 - sl)
            kp = _SL
        if tsl > 0.0:
            t = extreme * (1.0 - tsl)
            if t > prot:
                prot = t
                kp = _TSL
        if liq > 0.0 and liq >= prot:
            prot = liq
            kp = _LIQ
        tpl = pe * (1.0 + tp) if tp > 0.0 else np.inf
        if o >= tpl:
            return _TP, o
        if kp >= 0 and o <= prot:
            if kp == _LIQ or (liq > 0.0 and o <= liq):
                return _LIQ, liq
            return kp, o
        if kp >= 0 and l <= prot:
            return kp, prot
        if h >= tpl:
            return _TP, tpl
        return -1, 0.0
    prot = np.inf
    kp = -1
    if sl > 0.0:
        prot = pe * (1.0 + sl)
        kp = _SL
    if tsl > 0.0:
        t = extreme * (1.0 + tsl)
        if t < prot:
            prot = t
            kp = _TSL
    if liq > 0.0 and liq <= prot:
        prot = liq
        kp = _LIQ
    tpl = pe * (1.0 - tp) if tp > 0.0 else -np.inf
    if o <= tpl:
        return _TP, o
    if kp >= 0 and o >= prot:
        if kp == _LIQ or (liq > 0.0 and o >= liq):
            return _LIQ, liq
        return kp, o
    if kp >= 0 and h >= prot:
        return kp, prot
    if l <= tpl:
        return _TP, tpl
    return -1, 0.0


@njit(cache=True, error_model="numpy")
def stop_levels_nb(side, pe, extreme, sl, tp, tsl, liq):
    """``(protective, target)`` trigger levels of a position (+-inf when off).

    Only used as a fast pre-check: a bar whose range stays strictly between the two levels cannot
    trigger anything, otherwise :func:`intrabar_exit_nb` decides."""
    if side > 0:
        prot = liq if liq > 0.0 else -np.inf
        if sl > 0.0 and pe * (1.0 - sl) > prot:
            prot = pe * (1.0 - sl)
        if tsl > 0.0 and extreme * (1.0 - tsl) > prot:
            prot = extreme * (1.0 - tsl)
        return prot, (pe * (1.0 + tp) if tp > 0.0 else np.inf)
    prot = liq if liq > 0.0 else np.inf
    if sl > 0.0 and pe * (1.0 + sl) < prot:
        prot = pe * (1.0 + sl)
    if tsl > 0.0 and extreme * (1.0 + tsl) < prot:
        prot = extreme * (1.0 + tsl)
    return prot, (pe * (1.0 - tp) if tp > 0.0 else -np.inf)


@njit(cache=True, error_model="numpy")
def params_nb(p):
    """The parameter vector (``enums.P_*``) unpacked, once for the single-asset and portfolio kernels."""
    return (
        p[P_INIT_CASH],
        p[P_FEE],
        p[P_FEE_FIXED],
        p[P_MIN_FEE],
        p[P_SLIPPAGE],
        p[P_IMPACT],
        p[P_IMPACT_EXP],
        p[P_FILL] == 1.0,
        int(p[P_SIZE_MODE]),
        p[P_SIZE],
        p[P_MIN_QTY],
        p[P_STEP],
        p[P_LEVERAGE],
        p[P_MMR],
        p[P_STOP_LOSS],
        p[P_TAKE_PROFIT],
        p[P_TRAILING_STOP],
        int(p[P_TIME_STOP]),
        int(p[P_COOLDOWN]),
        p[P_MAX_POSITION],
        p[P_MAX_LEVERAGE],
        p[P_MAX_DRAWDOWN],
        p[P_DIRECTION] != 1.0,  # long or both
        p[P_DIRECTION] != 0.0,  # short or both
    )


@njit(cache=True, error_model="numpy")
def entry_levels_nb(side, px, lev, mmr, sl, tp, tsl):
    """Levels of a position just opened at ``px``: ``(liquidation, protective stop, target,
    protective stop without the trailing part)`` — the trailing extreme starts at ``px``."""
    liq = liq_price_nb(side, px, lev, mmr)
    prot, tgt = stop_levels_nb(side, px, px, sl, tp, tsl, liq)
    prot_fix, _ = stop_levels_nb(side, px, px, sl, tp, 0.0, liq)
    return liq, prot, tgt, prot_fix


@njit(cache=True, error_model="numpy")
def _push_nb(acc, r):
    """Welford update of the daily-return accumulator ``acc = [n, mean, m2, downside_sq]``."""
    acc[0] += 1.0
    d = r - acc[1]
    acc[1] += d / acc[0]
    acc[2] += d * (r - acc[1])
    if r < 0.0:
        acc[3] += r * r


@njit(cache=True, error_model="numpy")
def _push_day_nb(acc, daily_out, k, r):
    """Push day ``k``'s return into the accumulator and, when ``daily_out`` has room, record it."""
    _push_nb(acc, r)
    if k < daily_out.shape[0]:
        daily_out[k] = r
    return k + 1


@njit(cache=True, error_model="numpy")
def finish_metrics_nb(
    out,
    init_cash,
    final,
    dacc,
    max_dd,
    max_dd_us,
    n_closed,
    n_win,
    gross_win,
    gross_loss,
    sum_pnl,
    is_open,
    exposure,
    fees_paid,
    funding_paid,
    traded,
    mean_eq,
):
    """Fill the metric vector (slots in ``enums.METRIC_NAMES``) from the run's accumulators."""
    out[_M_TOTAL_RETURN] = final / init_cash - 1.0
    nd = dacc[0]
    if final > 0.0 and nd > 0.0:
        ann = (final / init_cash) ** (365.0 / nd) - 1.0
    else:
        ann = -1.0 if nd > 0.0 else np.nan
    out[_M_ANNUAL_RETURN] = ann
    if nd > 1.0 and dacc[2] > 0.0:
        out[_M_SHARPE] = dacc[1] / math.sqrt(dacc[2] / (nd - 1.0)) * _SQRT365
    else:
        out[_M_SHARPE] = np.nan
    if nd > 0.0 and dacc[3] > 0.0:
        out[_M_SORTINO] = dacc[1] / math.sqrt(dacc[3] / nd) * _SQRT365
    else:
        out[_M_SORTINO] = np.nan
    out[_M_MAX_DRAWDOWN] = max_dd
    out[_M_CALMAR] = ann / max_dd if max_dd > 0.0 else np.nan
    out[_M_WIN_RATE] = n_win / n_closed if n_closed > 0 else np.nan
    if gross_loss > 0.0:
        out[_M_PROFIT_FACTOR] = gross_win / gross_loss
    else:
        out[_M_PROFIT_FACTOR] = np.inf if gross_win > 0.0 else np.nan
    out[_M_N_TRADES] = n_closed + (1.0 if is_open else 0.0)
    out[_M_EXPOSURE] = exposure
    out[_M_FEES_PAID] = fees_paid
    out[_M_FUNDING_PAID] = funding_paid
    out[_M_MAX_DRAWDOWN_DURATION] = max_dd_us / _DAY
    out[_M_EXPECTANCY] = sum_pnl / n_closed if n_closed > 0 else np.nan
    out[_M_TURNOVER] = traded / mean_eq if mean_eq > 0.0 else np.nan
    out[_M_FINAL_VALUE] = final
    out[_M_OPEN_POSITION] = 1.0 if is_open else 0.0


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def _rec_trade_nb(
    trades,
    k,
    col,
    entry_idx,
    exit_idx,
    direction,
    is_open,
    exit_kind,
    size,
    entry_price,
    exit_price,
    pnl,
    ret,
    fees,
    funding,
):
    r = trades[k]
    r["col"] = col
    r["entry_idx"] = entry_idx
    r["exit_idx"] = exit_idx
    r["direction"] = direction
    r["is_open"] = is_open
    r["exit_kind"] = exit_kind
    r["size"] = size
    r["entry_price"] = entry_price
    r["exit_price"] = exit_price
    r["pnl"] = pnl
    r["return"] = ret
    r["fees"] = fees
    r["funding"] = funding


@njit(cache=True, error_model="numpy")
def equity_stats_nb(ts, equity, init_cash, dacc, daily_out):
    """Statistics of an equity path: returns ``(sum of equity, max drawdown, longest drawdown in
    µs)`` and pushes the daily returns (last equity per UTC day) into ``dacc``/``daily_out``.

    The one definition used by :func:`simulate_nb` (over its per-bar equity, also in sweeps, where
    the buffer is per thread) and by :func:`equity_metrics_nb` (portfolios)."""
    n = equity.shape[0]
    sum_eq = 0.0
    peak = init_cash
    peak_ts = ts[0]
    trough = init_cash
    max_dd = 0.0
    max_dd_us = 0
    cur_day = ts[0] // _DAY
    next_day = (cur_day + 1) * _DAY
    day_prev_eq = init_cash
    day_last_eq = init_cash
    n_day = 0
    for i in range(n):
        eq = equity[i]
        sum_eq += eq
        if eq >= peak:
            if trough < peak:
                if ts[i] - peak_ts > max_dd_us:
                    max_dd_us = ts[i] - peak_ts
                ddv = (peak - trough) / peak
                if ddv > max_dd:
                    max_dd = ddv
            peak = eq
            peak_ts = ts[i]
            trough = eq
        else:
            trough = min(trough, eq)
        if ts[i] >= next_day:
            d = ts[i] // _DAY
            n_day = _push_day_nb(
                dacc, daily_out, n_day, day_last_eq / day_prev_eq - 1.0 if day_prev_eq > 0.0 else 0.0
            )
            for _ in range(d - cur_day - 1):
                n_day = _push_day_nb(dacc, daily_out, n_day, 0.0)
            day_prev_eq = day_last_eq
            cur_day = d
            next_day = (d + 1) * _DAY
        day_last_eq = eq
    _push_day_nb(dacc, daily_out, n_day, day_last_eq / day_prev_eq - 1.0 if day_prev_eq > 0.0 else 0.0)
    if trough < peak:
        if ts[n - 1] - peak_ts > max_dd_us:
            max_dd_us = ts[n - 1] - peak_ts
        ddv = (peak - trough) / peak
        if ddv > max_dd:
            max_dd = ddv
    return sum_eq, max_dd, max_dd_us


# --------------------------------------------------------------------------- the event loop
# accumulator slots of the per-run statistics array (exits and entries are rare: an array is fine)
_A_FEES = 0
_A_TRADED = 1
_A_CLOSED = 2
_A_WIN = 3
_A_GROSS_WIN = 4
_A_GROSS_LOSS = 5
_A_SUM_PNL = 6
_A_FUNDING = 7


@njit(cache=True, error_model="numpy")
def _exit_nb(
    acc,
    store,
    orders,
    trades,
    n_ord,
    n_tr,
    col,
    i,
    ts_i,
    kind,
    px,
    pos,
    margin,
    pe,
    entry_idx,
    entry_fee,
    tr_fund,
    fee,
    fee_fixed,
    min_fee,
):
    """Close the whole position at ``px``; returns the cash released. Records order and trade."""
    q = abs(pos)
    side = -1 if pos > 0.0 else 1
    notional = q * px
    f = fee_nb(notional, fee, fee_fixed, min_fee)
    gross = pos * (px - pe)
    pnl = gross - entry_fee - f - tr_fund
    acc[_A_FEES] += f
    acc[_A_TRADED] += notional
    acc[_A_CLOSED] += 1.0
    acc[_A_SUM_PNL] += pnl
    if pnl > 0.0:
        acc[_A_WIN] += 1.0
        acc[_A_GROSS_WIN] += pnl
    else:
        acc[_A_GROSS_LOSS] -= pnl
    if store:
        _rec_order_nb(orders, n_ord, i, ts_i, col, side, kind, q, px, f)
        _rec_trade_nb(
            trades,
            n_tr,
            col,
            entry_idx,
            i,
            -side,
            0,
            kind,
            q,
            pe,
            px,
            pnl,
            pnl / margin,
            entry_fee + f,
            tr_fund,
        )
    return margin + gross - f


@njit(cache=True, error_model="numpy")
def _entry_nb(
    acc,
    store,
    orders,
    n_ord,
    col,
    i,
    ts_i,
    side,
    px_raw,
    cash,
    equity,
    vol_ref,
    vol_i,
    fee,
    fee_fixed,
    min_fee,
    slip,
    impact,
    impact_exp,
    size_mode,
    size,
    min_qty,
    step,
    lev,
    max_pos,
    max_lev,
    scale,
):
    """Open a position; returns ``(qty, price, fee, margin)`` (qty 0: no order)."""
    q, px = entry_size_nb(
        side,
        px_raw,
        cash,
        equity,
        vol_ref,
        vol_i,
        fee,
        fee_fixed,
        min_fee,
        slip,
        impact,
        impact_exp,
        size_mode,
        size,
        min_qty,
        step,
        lev,
        max_pos,
        max_lev,
        scale,
    )
    if q <= 0.0:
        return 0.0, px, 0.0, 0.0
    notional = q * px
    f = fee_nb(notional, fee, fee_fixed, min_fee)
    acc[_A_FEES] += f
    acc[_A_TRADED] += notional
    if store:
        _rec_order_nb(orders, n_ord, i, ts_i, col, side, _ENTRY, q, px, f)
    return q, px, f, notional / lev


@njit(cache=True, error_model="numpy")
def simulate_nb(
    ts,
    open_,
    high,
    low,
    close,
    volume,
    le,
    lx,
    se,
    sx,
    funding,
    vol_est,
    scale,
    p,
    store,
    eq_out,
    cash_out,
    pos_out,
    orders,
    trades,
    metrics,
    daily_out,
    check,
):
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
    p : float64 parameter vector (``enums.P_*``)
    store : write cash/position per bar and the order/trade records (False in sweeps)
    eq_out : float64 array of length n that always receives the equity per bar (a per-thread
        scratch buffer in sweeps); the equity statistics are computed from it after the loop
    daily_out : float64 array receiving the daily returns (one per UTC day from the first bar's
        day to the last's), or length 0
    check : bit mask of inputs validated in the same pass (``CHECK_*``): close/open/high/low must
        be finite and > 0, ts non-decreasing; 0 when the caller validated them already
    """
    n = close.shape[0]
    chk_c = (check & CHECK_CLOSE) != 0
    chk_o = (check & CHECK_OPEN) != 0
    chk_h = (check & CHECK_HIGH) != 0
    chk_l = (check & CHECK_LOW) != 0
    chk_t = (check & CHECK_TS) != 0
    has_long = le.shape[0] > 0
    has_short = se.shape[0] > 0
    (
        init_cash,
        fee,
        fee_fixed,
        min_fee,
        slip,
        impact,
        impact_exp,
        fill_close,
        size_mode,
        size,
        min_qty,
        step,
        lev,
        mmr,
        sl,
        tp,
        tsl,
        time_stop,
        cooldown,
        max_pos,
        max_lev,
        max_dd_kill,
        allow_long,
        allow_short,
    ) = params_nb(p)
    has_vol = volume.shape[0] > 0
    has_fund = funding.shape[0] > 0
    has_volest = vol_est.shape[0] > 0
    has_scale = scale.shape[0] > 0
    held_extra = 0 if fill_close else 1

    acc = np.zeros(8)
    dacc = np.zeros(4)
    cash = init_cash
    pos = 0.0
    margin = 0.0
    pe = 0.0
    liq = 0.0
    extreme = 0.0
    prot_lvl = 0.0
    prot_fix = 0.0
    tp_lvl = 0.0
    guarded = False
    entry_idx = -1
    entry_fee = 0.0
    tr_fund = 0.0
    last_exit = -(1 << 62)
    halted = False
    pend = False
    pend_exit = False
    pend_kind = _EXIT
    pend_dir = 0
    kpeak = init_cash
    n_ord = 0
    n_tr = 0
    n_exposed = 0
    eq = init_cash

    t_prev = ts[0]
    for i in range(n):
        c = close[i]
        # ---- 0. input checks fused into this pass (branch-free; the row is found on failure)
        if check != 0:
            ok = True
            if chk_c:
                ok = ok & (c > 0.0) & (c < np.inf)
            if chk_o:
                v = open_[i]
                ok = ok & (v > 0.0) & (v < np.inf)
            if chk_h:
                v = high[i]
                ok = ok & (v > 0.0) & (v < np.inf)
            if chk_l:
                v = low[i]
                ok = ok & (v > 0.0) & (v < np.inf)
            if chk_t:
                t_i = ts[i]
                ok = ok & (t_i >= t_prev)
                t_prev = t_i
            if not ok:
                return n_ord, n_tr, i
        # ---- 1. orders decided at the previous close fill at this open
        if pend:
            pend = False
            vol_ref = volume[i - 1] if has_vol else 0.0
            if pend_exit and pos != 0.0:
                side = -1 if pos > 0.0 else 1
                px = slip_price_nb(open_[i], side, slip, impact, impact_exp, abs(pos), vol_ref)
                cash += _exit_nb(
                    acc,
                    store,
                    orders,
                    trades,
                    n_ord,
                    n_tr,
                    0,
                    i,
                    ts[i],
                    pend_kind,
                    px,
                    pos,
                    margin,
                    pe,
                    entry_idx,
                    entry_fee,
                    tr_fund,
                    fee,
                    fee_fixed,
                    min_fee,
                )
                n_ord += 1
                n_tr += 1
                pos = 0.0
                margin = 0.0
                last_exit = i
            if (
                pend_dir != 0
                and pos == 0.0
                and not halted
                and not (cooldown > 0 and i - last_exit <= cooldown)
            ):
                vi = vol_est[i - 1] if has_volest else 0.0
                q, px, f, m = _entry_nb(
                    acc,
                    store,
                    orders,
                    n_ord,
                    0,
                    i,
                    ts[i],
                    pend_dir,
                    open_[i],
                    cash,
                    cash,
                    vol_ref,
                    vi,
                    fee,
                    fee_fixed,
                    min_fee,
                    slip,
                    impact,
                    impact_exp,
                    size_mode,
                    size,
                    min_qty,
                    step,
                    lev,
                    max_pos,
                    max_lev,
                    scale[i - 1] if has_scale else 1.0,
                )
                if q > 0.0:
                    n_ord += 1
                    cash -= m + f
                    margin = m
                    pos = pend_dir * q
                    pe = px
                    entry_idx = i
                    entry_fee = f
                    tr_fund = 0.0
                    extreme = px
                    liq, prot_lvl, tp_lvl, prot_fix = entry_levels_nb(pend_dir, px, lev, mmr, sl, tp, tsl)
                    guarded = np.isfinite(prot_lvl) or np.isfinite(tp_lvl)
            pend_exit = False
            pend_dir = 0

        # ---- 2. stops, targets and liquidation inside the bar (a position without any level,
        # ``guarded`` False, cannot be hit: its high and low are not even read)
        if pos != 0.0 and guarded:
            if pos > 0.0:
                hit = not ((low[i] > prot_lvl) & (high[i] < tp_lvl))
            else:
                hit = not ((high[i] < prot_lvl) & (low[i] > tp_lvl))
            if hit:
                side = 1 if pos > 0.0 else -1
                k, px_raw = intrabar_exit_nb(side, open_[i], high[i], low[i], pe, extreme, sl, tp, tsl, liq)
                if k >= 0:
                    if k == _LIQ:
                        px = px_raw
                    else:
                        vol_ref = volume[i - 1] if (has_vol and i > 0) else 0.0
                        px = slip_price_nb(px_raw, -side, slip, impact, impact_exp, abs(pos), vol_ref)
                    cash += _exit_nb(
                        acc,
                        store,
                        orders,
                        trades,
                        n_ord,
                        n_tr,
                        0,
                        i,
                        ts[i],
                        k,
                        px,
                        pos,
                        margin,
                        pe,
                        entry_idx,
                        entry_fee,
                        tr_fund,
                        fee,
                        fee_fixed,
                        min_fee,
                    )
                    n_ord += 1
                    n_tr += 1
                    pos = 0.0
                    margin = 0.0
                    last_exit = i

        # ---- 3. funding due in this bar, on the position at the close price
        if has_fund and pos != 0.0:
            fpay = pos * c * funding[i]
            cash -= fpay
            acc[_A_FUNDING] += fpay
            tr_fund += fpay

        # ---- 4. decisions at the close
        b_le = le[i] if has_long else False
        b_lx = lx[i] if has_long else False
        b_se = se[i] if has_short else False
        b_sx = sx[i] if has_short else False
        if b_le and b_lx:
            b_le = False
            b_lx = False
        if b_se and b_sx:
            b_se = False
            b_sx = False
        dx = False
        dk = _EXIT
        dd = 0
        if pos > 0.0:
            if b_lx or b_se:
                dx = True
                if b_se:
                    dd = -1
        elif pos < 0.0:
            if b_sx or b_le:
                dx = True
                if b_le:
                    dd = 1
        elif b_le != b_se:
            dd = 1 if b_le else -1
        if time_stop > 0 and pos != 0.0 and not dx:
            if i - entry_idx + held_extra >= time_stop:
                dx = True
                dk = _TIME
        if max_dd_kill > 0.0 and not halted:
            e_now = cash + margin + pos * (c - pe)
            if e_now > kpeak:
                kpeak = e_now
            if kpeak - e_now >= max_dd_kill * kpeak:
                halted = True
                if pos != 0.0:
                    dx = True
                    dk = _KILL
        if halted or (dd > 0 and not allow_long) or (dd < 0 and not allow_short):
            dd = 0
        if dx or dd != 0:
            if not fill_close:
                pend = True
                pend_exit = dx
                pend_kind = dk
                pend_dir = dd
            else:
                vol_ref = volume[i] if has_vol else 0.0
                if dx:
                    side = -1 if pos > 0.0 else 1
                    px = slip_price_nb(c, side, slip, impact, impact_exp, abs(pos), vol_ref)
                    cash += _exit_nb(
                        acc,
                        store,
                        orders,
                        trades,
                        n_ord,
                        n_tr,
                        0,
                        i,
                        ts[i],
                        dk,
                        px,
                        pos,
                        margin,
                        pe,
                        entry_idx,
                        entry_fee,
                        tr_fund,
                        fee,
                        fee_fixed,
                        min_fee,
                    )
                    n_ord += 1
                    n_tr += 1
                    pos = 0.0
                    margin = 0.0
                    last_exit = i
                if dd != 0 and pos == 0.0 and not (cooldown > 0 and i - last_exit <= cooldown):
                    vi = vol_est[i] if has_volest else 0.0
                    q, px, f, m = _entry_nb(
                        acc,
                        store,
                        orders,
                        n_ord,
                        0,
                        i,
                        ts[i],
                        dd,
                        c,
                        cash,
                        cash,
                        vol_ref,
                        vi,
                        fee,
                        fee_fixed,
                        min_fee,
                        slip,
                        impact,
                        impact_exp,
                        size_mode,
                        size,
                        min_qty,
                        step,
                        lev,
                        max_pos,
                        max_lev,
                        scale[i] if has_scale else 1.0,
                    )
                    if q > 0.0:
                        n_ord += 1
                        cash -= m + f
                        margin = m
                        pos = dd * q
                        pe = px
                        entry_idx = i
                        entry_fee = f
                        tr_fund = 0.0
                        extreme = px
                        liq, prot_lvl, tp_lvl, prot_fix = entry_levels_nb(dd, px, lev, mmr, sl, tp, tsl)
                        guarded = np.isfinite(prot_lvl) or np.isfinite(tp_lvl)

        # ---- 5. trailing extreme, mark to market, streaming metrics
        if pos != 0.0:
            if tsl > 0.0 and (entry_idx != i or not fill_close):
                # only a trailing stop reads the extreme; branch-free (new extremes are frequent
                # and random): the trailing level is the same max/min over (liquidation, stop,
                # trailing) that stop_levels_nb computes
                if pos > 0.0:
                    hx = high[i]
                    extreme = hx if hx > extreme else extreme
                    tl = extreme * (1.0 - tsl)
                    prot_lvl = tl if tl > prot_fix else prot_fix
                else:
                    lx_ = low[i]
                    extreme = lx_ if lx_ < extreme else extreme
                    tl = extreme * (1.0 + tsl)
                    prot_lvl = tl if tl < prot_fix else prot_fix
            n_exposed += 1
            eq = cash + margin + pos * (c - pe)
        else:
            eq = cash
        # the equity statistics (drawdowns, daily returns) are computed from eq_out after the
        # loop by equity_stats_nb: one definition for simulate, sweeps and portfolios
        eq_out[i] = eq
        if store:
            cash_out[i] = cash
            pos_out[i] = pos

    sum_eq, max_dd, max_dd_us = equity_stats_nb(ts, eq_out, init_cash, dacc, daily_out)
    is_open = pos != 0.0
    if is_open:
        c = close[n - 1]
        pnl = pos * (c - pe) - entry_fee - tr_fund
        if store:
            _rec_trade_nb(
                trades,
                n_tr,
                0,
                entry_idx,
                n - 1,
                1 if pos > 0.0 else -1,
                1,
                -1,
                abs(pos),
                pe,
                c,
                pnl,
                pnl / margin,
                entry_fee,
                tr_fund,
            )
        n_tr += 1
    finish_metrics_nb(
        metrics,
        init_cash,
        eq,
        dacc,
        max_dd,
        max_dd_us,
        int(acc[_A_CLOSED]),
        int(acc[_A_WIN]),
        acc[_A_GROSS_WIN],
        acc[_A_GROSS_LOSS],
        acc[_A_SUM_PNL],
        is_open,
        n_exposed / n,
        acc[_A_FEES],
        acc[_A_FUNDING],
        acc[_A_TRADED],
        sum_eq / n,
    )
    return n_ord, n_tr, -1


# --------------------------------------------------------------------------- metrics from arrays
@njit(cache=True, error_model="numpy")
def equity_metrics_nb(
    ts, equity, init_cash, exposed, trade_pnl, trade_open, fees_paid, funding_paid, traded, out
):
    """The metric vector from per-bar equity and trade pnls (same definitions as the streaming
    metrics of :func:`simulate_nb`): used for portfolios and to cross-check the event loop."""
    n = equity.shape[0]
    dacc = np.zeros(4)
    sum_eq, max_dd, max_dd_us = equity_stats_nb(ts, equity, init_cash, dacc, np.zeros(0))
    n_exp = 0
    for i in range(n):
        if exposed[i]:
            n_exp += 1
    n_closed = 0
    n_win = 0
    gw = 0.0
    gl = 0.0
    sp = 0.0
    any_open = False
    for j in range(trade_pnl.shape[0]):
        if trade_open[j]:
            any_open = True
            continue
        n_closed += 1
        sp += trade_pnl[j]
        if trade_pnl[j] > 0.0:
            n_win += 1
            gw += trade_pnl[j]
        else:
            gl -= trade_pnl[j]
    n_open = trade_pnl.shape[0] - n_closed
    finish_metrics_nb(
        out,
        init_cash,
        equity[n - 1],
        dacc,
        max_dd,
        max_dd_us,
        n_closed,
        n_win,
        gw,
        gl,
        sp,
        any_open,
        n_exp / n,
        fees_paid,
        funding_paid,
        traded,
        sum_eq / n,
    )
    out[_M_N_TRADES] = n_closed + n_open


# --------------------------------------------------------------------------- portfolios
@njit(cache=True, error_model="numpy")
def _last_rows_nb(has):
    """Per column, the last row where ``has`` is True (-1 for none)."""
    T, K = has.shape
    out = np.full(K, -1, dtype=np.int64)
    for t in range(T):
        for k in range(K):
            if has[t, k]:
                out[k] = t
    return out


@njit(cache=True, error_model="numpy")
def _close_delisted_nb(
    t,
    ts_t,
    member,
    last_row,
    acc,
    store,
    orders,
    trades,
    n_ord,
    n_tr,
    cash,
    pos,
    margin,
    pe,
    last_close,
    entry_t,
    entry_fee,
    tr_fund,
    fee,
    fee_fixed,
    min_fee,
):
    """Close, at its last close, every open position whose data has ended (after its last row)
    and that is no longer a member at row ``t`` (kind ``DELISTED``); returns ``(cash, n_ord, n_tr)``."""
    for k in range(pos.shape[0]):
        if pos[k] != 0.0 and t > last_row[k] and not member[t, k]:
            cash += _exit_nb(
                acc,
                store,
                orders,
                trades,
                n_ord,
                n_tr,
                k,
                t,
                ts_t,
                _DELISTED,
                last_close[k],
                pos[k],
                margin[k],
                pe[k],
                entry_t[k],
                entry_fee[k],
                tr_fund[k],
                fee,
                fee_fixed,
                min_fee,
            )
            n_ord += 1
            n_tr += 1
            pos[k] = 0.0
            margin[k] = 0.0
    return cash, n_ord, n_tr


@njit(cache=True, error_model="numpy")
def portfolio_nb(
    ts,
    has,
    open_,
    high,
    low,
    close,
    volume,
    le,
    lx,
    se,
    sx,
    funding,
    vol_est,
    scale,
    member,
    p,
    store,
    eq_out,
    cash_out,
    pos_out,
    orders,
    trades,
    metrics,
    daily_out,
):
    """Several symbols (columns) with shared cash over one merged timeline (rows = time).

    ``has[t, k]``: symbol k has a bar closing at ``ts[t]``; its other inputs at ``[t, k]`` are
    only read then. Symbols with a bar at the same time are processed in column order. Each bar
    of a symbol goes through the same phases as :func:`simulate_nb` (next-open fill, intra-bar
    exits, funding, close decisions); ``next_open`` orders fill at the symbol's next bar.
    Size mode ``all`` splits the free cash evenly over the flat symbols that may still enter.
    The kill switch watches portfolio equity and flattens every symbol. ``vol_est[t, k]``: the
    annualised volatility of symbol k known at that bar (``vol_target`` sizing; (0, 0) without).
    Returns ``(n_orders, n_trades)`` and fills ``metrics`` like :func:`simulate_nb` (``n_trades``
    counts every open position); ``store=False`` (sweeps) writes no records, cash or positions,
    only ``eq_out`` (a scratch buffer) and the daily returns into ``daily_out`` (length 0: none).

    ``member[t, k]`` (shape ``(T, K)``, or ``(0, 0)``: always a member) is the dynamic universe:
    a symbol that is not a member at its bar's close opens nothing (a pending entry is dropped,
    it does not count as a flat symbol for size mode ``all``) and its open position is closed by
    the bar's close decision (kind ``UNIVERSE_EXIT``, filled like any exit). A symbol that is no
    longer a member after its last bar (its data ended: delisted) is closed at its last close,
    fee charged, on the first row where it is not a member (kind ``DELISTED``).
    """
    T, K = close.shape
    (
        init_cash,
        fee,
        fee_fixed,
        min_fee,
        slip,
        impact,
        impact_exp,
        fill_close,
        size_mode,
        size,
        min_qty,
        step,
        lev,
        mmr,
        sl,
        tp,
        tsl,
        time_stop,
        cooldown,
        max_pos,
        max_lev,
        max_dd_kill,
        allow_long,
        allow_short,
    ) = params_nb(p)
    has_vol = volume.shape[0] > 0
    has_fund = funding.shape[0] > 0
    has_volest = vol_est.shape[0] > 0
    has_member = member.shape[0] > 0
    last_row = _last_rows_nb(has) if has_member else np.zeros(0, dtype=np.int64)
    held_extra = 0 if fill_close else 1

    acc = np.zeros(8)
    cash = init_cash
    pos = np.zeros(K)
    margin = np.zeros(K)
    pe = np.zeros(K)
    liq = np.zeros(K)
    extreme = np.zeros(K)
    prot = np.zeros(K)
    tgt = np.zeros(K)
    entry_idx = np.full(K, -1, dtype=np.int64)  # bar number of the symbol (its own bars)
    entry_t = np.zeros(K, dtype=np.int64)  # timeline row of the entry
    entry_fee = np.zeros(K)
    tr_fund = np.zeros(K)
    last_exit = np.full(K, -(1 << 62), dtype=np.int64)
    nbar = np.full(K, -1, dtype=np.int64)  # bars seen per symbol
    prev_t = np.full(K, -1, dtype=np.int64)  # timeline row of the symbol's previous bar
    last_close = np.zeros(K)
    pend = np.zeros(K, dtype=np.bool_)
    pend_exit = np.zeros(K, dtype=np.bool_)
    pend_kind = np.zeros(K, dtype=np.int64)
    pend_dir = np.zeros(K, dtype=np.int64)
    pend_scale = np.ones(K)
    has_scale = scale.shape[0] > 0
    halted = False
    kill_now = False
    kpeak = init_cash
    n_ord = 0
    n_tr = 0
    n_exposed = 0
    for t in range(T):
        if has_member:
            cash, n_ord, n_tr = _close_delisted_nb(
                t,
                ts[t],
                member,
                last_row,
                acc,
                store,
                orders,
                trades,
                n_ord,
                n_tr,
                cash,
                pos,
                margin,
                pe,
                last_close,
                entry_t,
                entry_fee,
                tr_fund,
                fee,
                fee_fixed,
                min_fee,
            )
        for k in range(K):
            if not has[t, k]:
                continue
            nbar[k] += 1
            b = nbar[k]
            c = close[t, k]
            o = open_[t, k]
            in_univ = not has_member or member[t, k]
            # 1. next-open fills
            if pend[k]:
                pend[k] = False
                vol_ref = volume[prev_t[k], k] if has_vol else 0.0
                if pend_exit[k] and pos[k] != 0.0:
                    side = -1 if pos[k] > 0.0 else 1
                    px = slip_price_nb(o, side, slip, impact, impact_exp, abs(pos[k]), vol_ref)
                    cash += _exit_nb(
                        acc,
                        store,
                        orders,
                        trades,
                        n_ord,
                        n_tr,
                        k,
                        t,
                        ts[t],
                        pend_kind[k],
                        px,
                        pos[k],
                        margin[k],
                        pe[k],
                        entry_t[k],
                        entry_fee[k],
                        tr_fund[k],
                        fee,
                        fee_fixed,
                        min_fee,
                    )
                    n_ord += 1
                    n_tr += 1
                    pos[k] = 0.0
                    margin[k] = 0.0
                    last_exit[k] = b
                d = pend_dir[k]
                if (
                    d != 0
                    and pos[k] == 0.0
                    and in_univ
                    and not halted
                    and not (cooldown > 0 and b - last_exit[k] <= cooldown)
                ):
                    eq_now = cash
                    n_flat = 0
                    for j in range(K):
                        eq_now += margin[j] + pos[j] * (last_close[j] - pe[j])
                        if pos[j] == 0.0 and (not has_member or member[t, j]):
                            n_flat += 1
                    budget = cash / n_flat if (size_mode == _S_ALL and n_flat > 0) else cash
                    q, px, f, m = _entry_nb(
                        acc,
                        store,
                        orders,
                        n_ord,
                        k,
                        t,
                        ts[t],
                        d,
                        o,
                        budget,
                        eq_now,
                        vol_ref,
                        vol_est[prev_t[k], k] if has_volest else 0.0,
                        fee,
                        fee_fixed,
                        min_fee,
                        slip,
                        impact,
                        impact_exp,
                        size_mode,
                        size,
                        min_qty,
                        step,
                        lev,
                        max_pos,
                        max_lev,
                        pend_scale[k],
                    )
                    if q > 0.0:
                        n_ord += 1
                        cash -= m + f
                        margin[k] = m
                        pos[k] = d * q
                        pe[k] = px
                        entry_idx[k] = b
                        entry_t[k] = t
                        entry_fee[k] = f
                        tr_fund[k] = 0.0
                        extreme[k] = px
                        liq[k], prot[k], tgt[k], _ = entry_levels_nb(d, px, lev, mmr, sl, tp, tsl)
                pend_exit[k] = False
                pend_dir[k] = 0
            # 2. intra-bar exits
            if pos[k] != 0.0:
                if pos[k] > 0.0:
                    hit = not (low[t, k] > prot[k] and high[t, k] < tgt[k])
                else:
                    hit = not (high[t, k] < prot[k] and low[t, k] > tgt[k])
                if hit:
                    side = 1 if pos[k] > 0.0 else -1
                    kk, px_raw = intrabar_exit_nb(
                        side, o, high[t, k], low[t, k], pe[k], extreme[k], sl, tp, tsl, liq[k]
                    )
                    if kk >= 0:
                        if kk == _LIQ:
                            px = px_raw
                        else:
                            vol_ref = volume[prev_t[k], k] if (has_vol and prev_t[k] >= 0) else 0.0
                            px = slip_price_nb(px_raw, -side, slip, impact, impact_exp, abs(pos[k]), vol_ref)
                        cash += _exit_nb(
                            acc,
                            store,
                            orders,
                            trades,
                            n_ord,
                            n_tr,
                            k,
                            t,
                            ts[t],
                            kk,
                            px,
                            pos[k],
                            margin[k],
                            pe[k],
                            entry_t[k],
                            entry_fee[k],
                            tr_fund[k],
                            fee,
                            fee_fixed,
                            min_fee,
                        )
                        n_ord += 1
                        n_tr += 1
                        pos[k] = 0.0
                        margin[k] = 0.0
                        last_exit[k] = b
            # 3. funding
            if has_fund and pos[k] != 0.0:
                fpay = pos[k] * c * funding[t, k]
                cash -= fpay
                acc[_A_FUNDING] += fpay
                tr_fund[k] += fpay
            last_close[k] = c
            # 4. decisions at the close
            b_le = le[t, k]
            b_lx = lx[t, k]
            b_se = se[t, k]
            b_sx = sx[t, k]
            if b_le and b_lx:
                b_le = False
                b_lx = False
            if b_se and b_sx:
                b_se = False
                b_sx = False
            dx = False
            dk = _EXIT
            d = 0
            if pos[k] > 0.0:
                if b_lx or b_se:
                    dx = True
                    if b_se:
                        d = -1
            elif pos[k] < 0.0:
                if b_sx or b_le:
                    dx = True
                    if b_le:
                        d = 1
            elif b_le != b_se:
                d = 1 if b_le else -1
            if time_stop > 0 and pos[k] != 0.0 and not dx:
                if b - entry_idx[k] + held_extra >= time_stop:
                    dx = True
                    dk = _TIME
            if not in_univ and pos[k] != 0.0 and not dx:
                dx = True
                dk = _UNIV
            if kill_now and pos[k] != 0.0:
                dx = True
                dk = _KILL
            if halted or not in_univ or (d > 0 and not allow_long) or (d < 0 and not allow_short):
                d = 0
            if dx or d != 0:
                if not fill_close:
                    pend[k] = True
                    pend_exit[k] = dx
                    pend_kind[k] = dk
                    pend_dir[k] = d
                    pend_scale[k] = scale[t, k] if has_scale else 1.0
                else:
                    vol_ref = volume[t, k] if has_vol else 0.0
                    if dx:
                        side = -1 if pos[k] > 0.0 else 1
                        px = slip_price_nb(c, side, slip, impact, impact_exp, abs(pos[k]), vol_ref)
                        cash += _exit_nb(
                            acc,
                            store,
                            orders,
                            trades,
                            n_ord,
                            n_tr,
                            k,
                            t,
                            ts[t],
                            dk,
                            px,
                            pos[k],
                            margin[k],
                            pe[k],
                            entry_t[k],
                            entry_fee[k],
                            tr_fund[k],
                            fee,
                            fee_fixed,
                            min_fee,
                        )
                        n_ord += 1
                        n_tr += 1
                        pos[k] = 0.0
                        margin[k] = 0.0
                        last_exit[k] = b
                    if d != 0 and pos[k] == 0.0 and not (cooldown > 0 and b - last_exit[k] <= cooldown):
                        eq_now = cash
                        n_flat = 0
                        for j in range(K):
                            eq_now += margin[j] + pos[j] * (last_close[j] - pe[j])
                            if pos[j] == 0.0 and (not has_member or member[t, j]):
                                n_flat += 1
                        budget = cash / n_flat if (size_mode == _S_ALL and n_flat > 0) else cash
                        q, px, f, m = _entry_nb(
                            acc,
                            store,
                            orders,
                            n_ord,
                            k,
                            t,
                            ts[t],
                            d,
                            c,
                            budget,
                            eq_now,
                            vol_ref,
                            vol_est[t, k] if has_volest else 0.0,
                            fee,
                            fee_fixed,
                            min_fee,
                            slip,
                            impact,
                            impact_exp,
                            size_mode,
                            size,
                            min_qty,
                            step,
                            lev,
                            max_pos,
                            max_lev,
                            scale[t, k] if has_scale else 1.0,
                        )
                        if q > 0.0:
                            n_ord += 1
                            cash -= m + f
                            margin[k] = m
                            pos[k] = d * q
                            pe[k] = px
                            entry_idx[k] = b
                            entry_t[k] = t
                            entry_fee[k] = f
                            tr_fund[k] = 0.0
                            extreme[k] = px
                            liq[k], prot[k], tgt[k], _ = entry_levels_nb(d, px, lev, mmr, sl, tp, tsl)
            # 5. trailing extreme
            if pos[k] != 0.0 and (entry_t[k] != t or not fill_close):
                if pos[k] > 0.0 and high[t, k] > extreme[k]:
                    extreme[k] = high[t, k]
                elif pos[k] < 0.0 and low[t, k] < extreme[k]:
                    extreme[k] = low[t, k]
                if tsl > 0.0:
                    prot[k], tgt[k] = stop_levels_nb(
                        1 if pos[k] > 0.0 else -1, pe[k], extreme[k], sl, tp, tsl, liq[k]
                    )
            prev_t[k] = t
        # ---- mark the portfolio at this time
        eq = cash
        exposed = False
        for j in range(K):
            eq += margin[j] + pos[j] * (last_close[j] - pe[j])
            exposed |= pos[j] != 0.0
            if store:
                pos_out[t, j] = pos[j]
        n_exposed += exposed
        eq_out[t] = eq
        if store:
            cash_out[t] = cash
        if max_dd_kill > 0.0 and not halted:
            if eq > kpeak:
                kpeak = eq
            if kpeak - eq >= max_dd_kill * kpeak:
                halted = True
                kill_now = True  # every symbol flattens at its next bar's decision
    n_open = 0
    for k in range(K):
        if pos[k] != 0.0:
            n_open += 1
            if not store:
                continue
            c = last_close[k]
            pnl = pos[k] * (c - pe[k]) - entry_fee[k] - tr_fund[k]
            _rec_trade_nb(
                trades,
                n_tr,
                k,
                entry_t[k],
                T - 1,
                1 if pos[k] > 0.0 else -1,
                1,
                -1,
                abs(pos[k]),
                pe[k],
                c,
                pnl,
                pnl / margin[k],
                entry_fee[k],
                tr_fund[k],
            )
            n_tr += 1
    dacc = np.zeros(4)
    sum_eq, max_dd, max_dd_us = equity_stats_nb(ts, eq_out, init_cash, dacc, daily_out)
    finish_metrics_nb(
        metrics,
        init_cash,
        eq_out[T - 1],
        dacc,
        max_dd,
        max_dd_us,
        int(acc[_A_CLOSED]),
        int(acc[_A_WIN]),
        acc[_A_GROSS_WIN],
        acc[_A_GROSS_LOSS],
        acc[_A_SUM_PNL],
        n_open > 0,
        n_exposed / T,
        acc[_A_FEES],
        acc[_A_FUNDING],
        acc[_A_TRADED],
        sum_eq / T,
    )
    metrics[_M_N_TRADES] = acc[_A_CLOSED] + n_open
    return n_ord, n_tr


@njit(cache=True, error_model="numpy")
def xs_params_nb(p, top_n, bottom_n):
    """The parameter vector of a cross-sectional portfolio, in place: both directions, and size
    mode ``all`` becomes ``percent`` with ``1 / (top_n + bottom_n)`` of equity per position."""
    p[P_DIRECTION] = 2.0
    if p[P_SIZE_MODE] == _S_ALL:
        p[P_SIZE_MODE] = _S_PERCENT
        p[P_SIZE] = 1.0 / (top_n + bottom_n)


# --------------------------------------------------------------------------- input checks
@njit(cache=True)
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
        v = a[i]
        if not (v > 0.0 and v < np.inf):
            return i
    return -1


@njit(cache=True)
def first_decrease_nb(t):
    """Index of the first value smaller than its predecessor, or -1."""
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            return i
    return -1


@njit(cache=True, error_model="numpy")
def first_bad_input_nb(ts, open_, high, low, close, check):
    """First row where an input named by ``check`` (``CHECK_*`` bits) is invalid, or -1: the same
    rule as :func:`simulate_nb`'s fused checks (prices finite and > 0, ts non-decreasing)."""
    chk_c = (check & CHECK_CLOSE) != 0
    chk_o = (check & CHECK_OPEN) != 0
    chk_h = (check & CHECK_HIGH) != 0
    chk_l = (check & CHECK_LOW) != 0
    chk_t = (check & CHECK_TS) != 0
    t_prev = ts[0]
    for i in range(close.shape[0]):
        ok = True
        if chk_c:
            v = close[i]
            ok = ok & (v > 0.0) & (v < np.inf)
        if chk_o:
            v = open_[i]
            ok = ok & (v > 0.0) & (v < np.inf)
        if chk_h:
            v = high[i]
            ok = ok & (v > 0.0) & (v < np.inf)
        if chk_l:
            v = low[i]
            ok = ok & (v > 0.0) & (v < np.inf)
        if chk_t:
            t_i = ts[i]
            ok = ok & (t_i >= t_prev)
            t_prev = t_i
        if not ok:
            return i
    return -1


@njit(cache=True, parallel=True, error_model="numpy")
def simulate_checked_nb(
    ts,
    open_,
    high,
    low,
    close,
    volume,
    le,
    lx,
    se,
    sx,
    funding,
    vol_est,
    scale,
    p,
    eq_out,
    cash_out,
    pos_out,
    orders,
    trades,
    metrics,
    check,
):
    """:func:`simulate_nb` (``store=True``) on one thread while a second thread validates the
    inputs named by ``check`` (:func:`first_bad_input_nb`); returns ``(n_orders, n_trades,
    bad_row)``. The event loop never fails on invalid values (they only make its outputs
    meaningless), so the two can run at once; with a bad row the caller raises."""
    out = np.full(3, -1, dtype=np.int64)
    daily = np.zeros(0)
    for k in prange(2):
        if k == 0:
            n_ord, n_tr, _ = simulate_nb(
                ts,
                open_,
                high,
                low,
                close,
                volume,
                le,
                lx,
                se,
                sx,
                funding,
                vol_est,
                scale,
                p,
                True,
                eq_out,
                cash_out,
                pos_out,
                orders,
                trades,
                metrics,
                daily,
                0,
            )
            out[0] = n_ord
            out[1] = n_tr
        else:
            out[2] = first_bad_input_nb(ts, open_, high, low, close, check)
    return out[0], out[1], out[2]
