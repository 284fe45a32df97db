"""Single-asset backtests: :func:`simulate` over arrays, :func:`simulate_from_config` over a bar table.

All rules live in the numba event loop ``_nb.simulate_nb`` (see its module docstring for the order
of events inside a bar); this module validates inputs, maps options to the kernel's parameter
vector and packages the :class:`BacktestResult`.

Accounting model (isolated margin, also used at leverage 1): an entry locks ``margin =
notional / leverage`` and pays its fee from ``cash``; the position's value is ``margin +
position * (close - entry_price)``; ``equity = cash + position value``. At leverage 1 a long's
value is ``position * close`` as in a spot account.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Optional

import numba
import numpy as np
import pandas as pd

from btsys.backtest import _nb
from btsys.backtest.enums import DAY_US, N_METRICS, Check, OrderType, Param, SizeMode, order_dt, trade_dt
from btsys.backtest.inputs import prices_and_clock
from btsys.backtest.options import BY_KW, _get, build_params, options_from_config
from btsys.backtest.options import KW_DEFAULTS as _D
from btsys.backtest.result import BacktestResult, make_result
from btsys.backtest.ticks import FrameTrades, funding_instants, trade_source
from btsys.features._nb import rolling_std_nb

__all__ = ["BacktestResult", "simulate", "simulate_from_config", "options_from_config", "build_params"]

_PAR_LOCK = threading.Lock()


# --------------------------------------------------------------------------- validation helpers
def _f64(name: str, x: Any, n: Optional[int], *, positive: bool = False) -> np.ndarray:
    try:
        a = np.ascontiguousarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"simulate: `{name}` must be numeric: {e}") from None
    if a.ndim != 1:
        raise ValueError(f"simulate: `{name}` must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"simulate: `{name}` has {a.shape[0]} rows, `close` has {n}")
    if positive:
        i = _nb.first_not_positive_nb(a)
        if i >= 0:
            raise ValueError(f"simulate: `{name}` must be finite and > 0; row {i} is {a[i]!r}")
    return a


def ohlc_arrays(close, open, high, low, who: str, check: bool = True):
    """Validated float64 close/open/high/low (open/high/low default to close).

    ``check=False`` converts and checks shapes only, and also returns the ``enums.Check`` mask of the
    given arrays, for a kernel that validates values in its own pass (:func:`simulate`)."""
    c = _f64("close", close, None, positive=check)
    n = c.shape[0]
    if n == 0:
        raise ValueError(f"{who}: `close` is empty")
    o = c if open is None else _f64("open", open, n, positive=check)
    h = c if high is None else _f64("high", high, n, positive=check)
    lo = c if low is None else _f64("low", low, n, positive=check)
    if check:
        return c, o, h, lo
    mask = (
        Check.CLOSE
        | (0 if open is None else Check.OPEN)
        | (0 if high is None else Check.HIGH)
        | (0 if low is None else Check.LOW)
    )
    return c, o, h, lo, mask


def _bool(name: str, x: Any, n: int) -> np.ndarray:
    if x is None:
        return np.zeros(n, dtype=np.bool_)
    a = np.asarray(x)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"simulate: `{name}` must be 1-D of length {n}, got shape {a.shape}")
    if a.dtype != np.bool_:
        if a.dtype.kind == "f" and np.isnan(a).any():
            i = int(np.flatnonzero(np.isnan(a))[0])
            raise ValueError(f"simulate: `{name}` has NaN at row {i}; signals must be boolean")
        a = a.astype(np.bool_)
    return np.ascontiguousarray(a)


def signal_arrays(direction: str, n: int, entries, exits, short_entries=None, short_exits=None):
    """Map user signals to the kernel's (long entry, long exit, short entry, short exit).

    * ``long``: entries/exits open and close longs.
    * ``short``: short_entries/short_exits if given, else entries/exits, open and close shorts.
    * ``both``: entries/exits are the long signals; short_entries/short_exits the short ones. When
      no short signals are given, ``exits`` open shorts and ``entries`` close them (a reversal
      system that is always in the market after the first signal, as vectorbt's ``direction='both'``).
    """
    d = getattr(direction, "value", direction)
    e = _bool("entries", entries, n)
    x = _bool("exits", exits, n)
    se = _bool("short_entries", short_entries, n)
    sx = _bool("short_exits", short_exits, n)
    empty = np.zeros(n, dtype=np.bool_)
    if d == "long":
        return e, x, empty, empty
    if d == "short":
        if short_entries is None and short_exits is None:
            return empty, empty, e, x
        return empty, empty, se, sx
    if short_entries is None and short_exits is None:
        return e, x, x, e
    return e, x, se, sx


def bar_times(ts, n: int, check: bool = True) -> np.ndarray:
    """Bar times as int64 µs. ``None`` (no calendar time) -> zeros: the kernels then see one
    day, and the caller reports the calendar metrics as NaN (``result.make_result``).
    ``check=False``: shape only (the caller's kernel checks the order, ``Check.TS``)."""
    if ts is None:
        return np.zeros(n, dtype=np.int64)
    a = np.asarray(ts)
    if np.issubdtype(a.dtype, np.datetime64):
        a = a.astype("datetime64[us]").astype(np.int64)
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.shape != (n,):
        raise ValueError(f"simulate: `ts` must have {n} rows, got shape {a.shape}")
    if not check:
        return a
    i = _nb.first_decrease_nb(a)
    if i > 0:
        raise ValueError(
            f"simulate: `ts` must be non-decreasing; row {i} ({a[i]}) is before row {i - 1} ({a[i - 1]})"
        )
    return a


def volume_array(volume, n: int) -> np.ndarray:
    """Checked float64 volumes (finite, >= 0), or an empty array for none."""
    if volume is None:
        return np.zeros(0)
    v = _f64("volume", volume, n)
    if (v < 0).any() or not np.isfinite(v).all():
        i = int(np.flatnonzero(~(v >= 0) | ~np.isfinite(v))[0])
        raise ValueError(f"simulate: `volume` row {i} is {v[i]!r}")
    return v


def funding_per_bar(ts: np.ndarray, funding_ts, funding_rate) -> np.ndarray:
    """Sum the funding rates due in each bar: an event at time t belongs to the first bar whose
    close time is >= t; events after the last bar are dropped. ``ts=None``: bars without times,
    which funding events cannot be placed in (an error)."""
    ft, fr = funding_events(ts, funding_ts, funding_rate)
    if ft is None:
        return np.zeros(0)
    out = np.zeros(ts.shape[0])
    idx = np.searchsorted(ts, ft, side="left")
    keep = idx < ts.shape[0]
    np.add.at(out, idx[keep], fr[keep])
    return out


def funding_events(ts: Optional[np.ndarray], funding_ts, funding_rate):
    """Checked funding events ``(times µs int64, rates float64)``, or ``(None, None)`` for none."""
    if funding_ts is None and funding_rate is None:
        return None, None
    if ts is None:
        raise ValueError("simulate: funding needs bar times; give `ts`, a DatetimeIndex or `freq=`")
    if funding_ts is None or funding_rate is None:
        raise ValueError("simulate: give both `funding_ts` and `funding_rate`, or neither")
    ft = np.asarray(funding_ts)
    if np.issubdtype(ft.dtype, np.datetime64):
        ft = ft.astype("datetime64[us]").astype(np.int64)
    ft = ft.astype(np.int64)
    fr = np.asarray(funding_rate, dtype=np.float64)
    if ft.shape != fr.shape or ft.ndim != 1:
        raise ValueError(
            f"simulate: `funding_ts` {ft.shape} and `funding_rate` {fr.shape} must be 1-D of equal length"
        )
    if not np.isfinite(fr).all():
        i = int(np.flatnonzero(~np.isfinite(fr))[0])
        raise ValueError(f"simulate: `funding_rate` row {i} is {fr[i]!r}")
    return ft, fr


def realised_vol(close: np.ndarray, ts: np.ndarray, window: int) -> np.ndarray:
    """Annualised volatility known at each bar's close (``size.mode=vol_target``): the sample
    standard deviation of the last ``window`` 1-bar log returns times ``sqrt(bars per year)``,
    with bars per year from those same bars' span, ``window * 365 days / (ts[t] - ts[t - window])``.

    Uses closes and bar times up to and including bar ``t`` only (later bars change nothing
    before them); NaN during the warm-up and when the window spans no time (no entry then).
    ``ts=None`` (bars without times) is an error."""
    if ts is None:
        raise ValueError(
            "simulate: size_mode='vol_target' annualises volatility and needs bar times; "
            "give `ts`, a DatetimeIndex or `freq=`"
        )
    n = close.shape[0]
    if window < 2:
        raise ValueError(f"simulate: `vol_window` must be >= 2, got {window}")
    r = np.empty(n)
    r[0] = np.nan
    r[1:] = np.diff(np.log(close))
    out = rolling_std_nb(r, window, 1)
    span = np.full(n, np.nan)
    span[window:] = (ts[window:] - ts[:-window]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out *= np.sqrt(np.where(span > 0, window * 365.0 * DAY_US / span, np.nan))
    return out


def simulate(
    close,
    entries,
    exits,
    open=None,
    high=None,
    low=None,
    init_cash=_D["init_cash"],
    fees=_D["fees"],
    slippage=_D["slippage"],
    fill=_D["fill"],
    size=_D["size"],
    *,
    ts=None,
    freq=None,
    volume=None,
    direction=_D["direction"],
    short_entries=None,
    short_exits=None,
    fee_fixed=_D["fee_fixed"],
    min_fee=_D["min_fee"],
    maker_fee=_D["maker_fee"],
    slippage_impact=_D["slippage_impact"],
    impact_exponent=_D["impact_exponent"],
    size_mode=_D["size_mode"],
    vol_window=_D["vol_window"],
    min_qty=_D["min_qty"],
    step=_D["step"],
    leverage=_D["leverage"],
    maintenance_margin=_D["maintenance_margin"],
    stop_loss=_D["stop_loss"],
    take_profit=_D["take_profit"],
    trailing_stop=_D["trailing_stop"],
    time_stop=_D["time_stop"],
    cooldown=_D["cooldown"],
    max_position=_D["max_position"],
    max_leverage=_D["max_leverage"],
    max_drawdown=_D["max_drawdown"],
    order_type=_D["order_type"],
    limit_offset=_D["limit_offset"],
    time_in_force=_D["time_in_force"],
    fill_rule=_D["fill_rule"],
    intrabar=_D["intrabar"],
    ticks=None,
    funding_ts=None,
    funding_rate=None,
    size_scale=None,
    window=None,
) -> BacktestResult:
    """Backtest one asset from boolean signals.

    The option keywords default to a default run's config (the table in
    :mod:`btsys.backtest.options`): taker fee 0.0005 and slippage 0.0001 (1 bp) are charged unless
    ``fees=0, slippage=0`` are passed.

    Parameters
    ----------
    close : float64 prices, one per bar (positive, finite): an array, a Series (a DatetimeIndex
        gives ``ts``) or a bar table (``close`` column; ``open``/``high``/``low``/``volume`` and
        ``ts_close`` are taken from it when not given). Per-bar inputs given as pandas objects
        must carry the same index (see :mod:`btsys.backtest.inputs`).
    entries, exits : boolean signals decided at each bar's close (see ``signal_arrays`` for
        ``direction="short"/"both"``). An entry and an exit on the same bar cancel each other.
    open, high, low : default to ``close`` (then stops can only trigger at closes/opens).
    init_cash : quote currency.
    fees : taker fee fraction (market orders and stops); ``fee_fixed`` quote per order; ``min_fee``
        per order; ``maker_fee``: resting limits (the take profit, limit entries).
    slippage : fraction of price against the order; ``slippage_impact`` adds
        ``impact * (qty / volume_of_last_completed_bar) ** impact_exponent`` (needs ``volume``).
    fill : ``"next_open"`` (signal at bar i fills at open[i+1]; no next bar, no fill) or ``"close"``.
    size, size_mode : ``size=inf`` -> all cash (notional = cash / (1/leverage + fee)); otherwise
        ``size_mode`` ``qty`` (default for finite size), ``notional``, ``percent`` (margin as a
        fraction of equity) or ``vol_target`` (annual vol target; realised vol over ``vol_window``
        bars). ``min_qty``: smaller orders are skipped; ``step``: quantities round down to it.
    leverage, maintenance_margin : isolated margin; a liquidation (at the liquidation price) loses
        the position's margin.
    stop_loss, take_profit, trailing_stop : fractions from the entry (trailing: from the best
        price since entry), resolved inside the bar from high/low, the worse first (or from the
        bar's trades, ``intrabar="ticks"``); the take profit is a resting limit (at the target,
        maker fee, ``fill_rule``).
    time_stop : exit after this many bars in a position; cooldown : bars after an exit during which
        no entry fills; max_position : notional cap (quote); max_leverage : notional / equity cap;
        max_drawdown : kill switch (fraction from the equity peak) that flattens and stops trading.
    ts : int64 µs (or datetime64) bar close times. Without ``ts`` or a DatetimeIndex, ``freq``
        (a fixed pandas offset such as ``"1h"``) spaces the bars evenly from 1970-01-01; with
        none of them the bars have no calendar time: the metrics that need it
        (``metrics.CALENDAR_METRICS``) are NaN with a ``NoCalendarWarning`` and ``result.ts`` is None.
    intrabar, ticks, fill_rule : ``"ohlc"`` (default) resolves stops, targets and liquidations from
        open/high/low, the worse first; ``"ticks"`` resolves the bars whose range reaches a level
        (or that hold a funding instant while a position is held) from their trades, in
        (ts, trade_id) order (README, "Intrabar fills"). ``ticks`` is then the bars' trades: a
        tick table (``ts``, ``trade_id``, ``price``) with ``close`` the bar table (its
        ``first_trade_id``, ``last_trade_id``, ``n_ticks``), or a trade source
        (:mod:`btsys.backtest.ticks`, e.g. ``btsys.stages.bar_trades.LakeTrades``). Only the bars needed
        are asked for; missing trades raise :class:`~btsys.errors.TradesMissing`. The result's
        ``intrabar`` dict and metrics add :data:`INTRABAR_METRICS` (against the same run with
        ``"ohlc"``). ``fill_rule``: resting limits (the take profit, limit entries) fill on a
        trade (``"ohlc"``: a range) beyond their price (``"through"``) or at it (``"touch"``).
    order_type, limit_offset, time_in_force : ``"market"`` entries fill at the next open (or the
        close); ``"limit"`` entries rest at ``close * (1 -/+ limit_offset)`` from the bar after the
        signal for ``time_in_force`` bars (README, "Limit entry orders"; maker fee, no slippage;
        taker at the first trade when already marketable); ``metrics["orders_expired"]`` counts
        those that never filled.
    funding_ts, funding_rate : funding events of a perpetual; charged at the bar that contains each
        event on ``position * close`` (longs pay a positive rate, shorts receive it); with
        ``intrabar="ticks"`` at the instant, on the position held then, at the trade before it.
    size_scale : optional float64 per bar, >= 0 (NaN counts as 0): bet size decided at each bar's
        close; it multiplies the quantity of an entry signalled on that bar (e.g. an ML
        strategy's AFML bet size). ``None``: 1.0 everywhere.
    window : ``(start, stop)`` bar indices: trade bars ``[start, stop)`` only, starting flat with
        ``init_cash``; funding and the ``vol_target`` volatility still come from the bars before
        (a walk-forward window). The result covers the window's bars.
    """
    close_in = close
    close, a, ts = prices_and_clock(
        close,
        dict(
            entries=entries,
            exits=exits,
            open=open,
            high=high,
            low=low,
            volume=volume,
            short_entries=short_entries,
            short_exits=short_exits,
            size_scale=size_scale,
        ),
        ts,
        freq,
        "simulate",
    )
    entries, exits, open, high, low, volume = (
        a[k] for k in ("entries", "exits", "open", "high", "low", "volume")
    )
    short_entries, short_exits, size_scale = a["short_entries"], a["short_exits"], a["size_scale"]
    bars_table = close_in if isinstance(close_in, pd.DataFrame) else None
    # prices and ts are validated inside the kernel's single pass (``check``); shapes here
    c, o, h, lo, check = ohlc_arrays(close, open, high, low, "simulate", check=False)
    n = c.shape[0]
    p = build_params(
        init_cash=init_cash,
        fees=fees,
        slippage=slippage,
        fill=fill,
        size=size,
        direction=direction,
        fee_fixed=fee_fixed,
        min_fee=min_fee,
        maker_fee=maker_fee,
        slippage_impact=slippage_impact,
        impact_exponent=impact_exponent,
        size_mode=size_mode,
        vol_window=vol_window,
        min_qty=min_qty,
        step=step,
        leverage=leverage,
        maintenance_margin=maintenance_margin,
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing_stop=trailing_stop,
        time_stop=time_stop,
        cooldown=cooldown,
        max_position=max_position,
        max_leverage=max_leverage,
        max_drawdown=max_drawdown,
        order_type=order_type,
        limit_offset=limit_offset,
        time_in_force=time_in_force,
        fill_rule=fill_rule,
    )
    src = trade_source(BY_KW["intrabar"].check(intrabar, "simulate"), ticks, bars_table)
    t = bar_times(ts, n, check=False)
    # the zero clock of bars without times passes the order check too; checking it keeps the
    # no-times run on the timed run's code path (measured: ~10 % faster than skipping the check)
    check |= Check.TS
    if volume is None and p[Param.IMPACT] > 0:
        raise ValueError("simulate: `slippage_impact` > 0 needs `volume`")
    v = volume_array(volume, n)
    le, lx, se, sx = signal_arrays(direction, n, entries, exits, short_entries, short_exits)
    clock = None if ts is None else t
    fund = funding_per_bar(clock, funding_ts, funding_rate)
    with np.errstate(invalid="ignore", divide="ignore"):  # prices not checked yet: no warnings
        vol_est = (
            realised_vol(c, clock, int(vol_window))
            if p[Param.SIZE_MODE] == SizeMode.VOL_TARGET
            else np.zeros(0)
        )
    d = getattr(direction, "value", direction)
    none = np.zeros(0, dtype=np.bool_)  # an unused signal pair is not read by the kernel
    if d == "long":
        se = sx = none
    elif d == "short":
        le = lx = none
    scale = bet_sizes(size_scale, n)
    start = 0
    if window is not None:  # inputs before the window are used: check them all, then trade a slice
        ohlc_arrays(c, None if o is c else o, None if h is c else h, None if lo is c else lo, "simulate")
        bar_times(t, n)
        w = window_slice(window, n)
        start = w.start
        t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale = (
            a[w] for a in (t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale)
        )
        check = 0
    limit = p[Param.ORDER_TYPE] == OrderType.LIMIT
    try:
        if src is None and not limit:
            return _run(t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale, p, check, clock is not None)
        if src is None:
            events = funding_instants(t, None, None)
            run = _run_tk(t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale, p, check, None, 0, events)
        else:
            events = funding_instants(t, *funding_events(clock, funding_ts, funding_rate))
            none = np.zeros(0)  # funding comes as instants
            run = _run_tk(
                t, o, h, lo, c, v, le, lx, se, sx, none, vol_est, scale, p, check, src, start, events
            )
        (eq, cash_, pos, orders, trades, m, n_ord, n_tr), tk_out, passes = run
        res = make_result(
            ts=t if clock is not None else None, equity=eq, cash=cash_, position=pos,
            order_records=orders[:n_ord].copy(), trade_records=trades[:n_tr].copy(), metric_vector=m, close=c,
            init_cash=float(p[Param.INIT_CASH]),
        )  # fmt: skip
        if limit:
            res.metrics["orders_expired"] = float(tk_out[3])
        if src is None:
            return res
        ohlc = _run(t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale, p, 0, clock is not None)
        return _intrabar_result(res, ohlc, tk_out, passes)
    except _BadInput:
        # the kernel stopped at a bad row: the separate checks name the argument and the row
        ohlc_arrays(c, None if o is c else o, None if h is c else h, None if lo is c else lo, "simulate")
        bar_times(t, n)
        raise AssertionError(
            "simulate: the kernel reported an invalid input row that the checks did not find"
        ) from None


#: what a run with ``intrabar="ticks"`` adds to its metrics (MLflow metric names)
INTRABAR_METRICS = ("intrabar_bars", "intrabar_share", "intrabar_disagreements", "intrabar_pnl_diff")


def _run_tk(t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale, p, check, src, start, events):
    """The event loop with a :class:`~btsys.backtest._nb.Ticks`: ``(kernel outputs, tk.out,
    passes)``. Without a trade source (``src=None``: the bar rules, e.g. to count expired limit
    entries) one pass; with one (``intrabar="ticks"``), the trades of the bars a pass needed but
    did not have are loaded (``src``, bar indices offset by the window's ``start``) and the loop
    runs again until no bar is missing: the first pass asks for the bars the bar rules reach, a
    later one only for those where the trades changed the path."""
    n = c.shape[0]
    f_off, f_ts, f_rate = events
    tk_lo = np.full(n if src is not None else 0, -1, dtype=np.int64)
    tk_hi = tk_lo.copy()
    tk_ts, tk_px = np.zeros(0, dtype=np.int64), np.zeros(0)
    passes = 0
    while True:
        eq, cash, pos, m = np.empty(n), np.empty(n), np.empty(n), np.empty(N_METRICS)
        orders, trades = _record_buffers(n)
        tk = _nb.Ticks(
            tk_lo, tk_hi, tk_ts, tk_px, f_off, f_ts, f_rate, np.zeros(4, np.int64), np.zeros(n, np.bool_)
        )
        n_ord, n_tr, bad = _nb.simulate_ticks_nb(
            t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale, tk, p, True, eq, cash, pos, orders,
            trades, m, np.zeros(0), check,
        )  # fmt: skip
        if bad >= 0:
            raise _BadInput(bad)
        passes += 1
        need = np.flatnonzero(tk.need)
        if need.size == 0:
            return (eq, cash, pos, orders, trades, m, n_ord, n_tr), tk.out, passes
        off, nts, npx = src(need + start)
        tk_lo[need] = tk_ts.size + off[:-1]
        tk_hi[need] = tk_ts.size + off[1:]
        tk_ts, tk_px = np.concatenate([tk_ts, nts]), np.concatenate([tk_px, npx])
        check = 0  # checked by the first pass


def _intrabar_result(res: BacktestResult, ohlc: BacktestResult, tk_out, passes: int) -> BacktestResult:
    """``res`` (``intrabar="ticks"``) with :data:`INTRABAR_METRICS` against the same run by the bar
    rules (``ohlc``) in its metrics and its ``intrabar`` dict."""
    n = res.equity.shape[0]
    resolved, disagree = int(tk_out[0]), int(tk_out[1])
    figures = (float(resolved), resolved / n, float(disagree), res.final_value - ohlc.final_value)
    extra = dict(zip(INTRABAR_METRICS, figures, strict=True))
    res.metrics.update(extra)
    return dataclasses.replace(
        res, intrabar={**extra, "passes": passes, "ohlc_final_value": ohlc.final_value}
    )


def window_slice(window, n: int) -> slice:
    """``slice(start, stop)`` of a ``(start, stop)`` window checked against ``n`` bars."""
    try:
        start, stop = (int(x) for x in window)
    except (TypeError, ValueError):
        raise ValueError(f"simulate: `window` must be (start, stop) bar indices, got {window!r}") from None
    if not 0 <= start < stop <= n:
        raise ValueError(f"simulate: `window` {window!r} must satisfy 0 <= start < stop <= {n}")
    return slice(start, stop)


class _BadInput(Exception):
    """Raised by :func:`_run` when the kernel's fused input checks fail."""


def bet_sizes(size_scale, n: Optional[int], where: str = "size_scale") -> np.ndarray:
    """Validated per-bar bet sizes (NaN -> 0); an empty array when ``size_scale`` is None."""
    if size_scale is None:
        return np.zeros(0)
    a = np.array(size_scale, dtype=np.float64)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise ValueError(f"simulate: `{where}` must have shape ({n},), got {a.shape}")
    a[np.isnan(a)] = 0.0
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"simulate: `{where}` row {i} is {a[i]!r}; bet sizes must be finite and >= 0")
    return a


_SCRATCH = threading.local()
_SCRATCH_MAX_BARS = 4_000_000


def _record_buffers(n: int):
    """Order and trade record buffers for an n-bar run (3n+2 orders, n+1 trades at most).

    The result keeps copies of the used records only, so the buffers are scratch: up to
    ``_SCRATCH_MAX_BARS`` bars they are kept per thread and reused (a fresh 3 M-record buffer
    costs ~0.8 ms of mapping and page faults per call; only the pages written are resident)."""
    if n > _SCRATCH_MAX_BARS:
        return np.empty(3 * n + 2, dtype=order_dt), np.empty(n + 1, dtype=trade_dt)
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None or bufs[1].shape[0] < n + 1:
        bufs = (np.empty(3 * n + 2, dtype=order_dt), np.empty(n + 1, dtype=trade_dt))
        _SCRATCH.bufs = bufs
    return bufs


def _run(t, o, h, lo, c, v, le, lx, se, sx, fund, vol_est, scale, p, check=0, timed=True) -> BacktestResult:
    n = c.shape[0]
    eq = np.empty(n)
    cash = np.empty(n)
    pos = np.empty(n)
    orders, trades = _record_buffers(n)
    m = np.empty(N_METRICS)
    # with a second core, the input checks run on it while the event loop runs (one launch at a
    # time per process: numba's workqueue threading layer allows no concurrent launches; a caller
    # that finds the lock taken runs the single-threaded loop, which checks in its own pass)
    if check and numba.get_num_threads() > 1 and _PAR_LOCK.acquire(blocking=False):
        try:
            n_ord, n_tr, bad = _nb.simulate_checked_nb(
                t,
                o,
                h,
                lo,
                c,
                v,
                le,
                lx,
                se,
                sx,
                fund,
                vol_est,
                scale,
                p,
                eq,
                cash,
                pos,
                orders,
                trades,
                m,
                check,
            )
        finally:
            _PAR_LOCK.release()
    else:
        n_ord, n_tr, bad = _nb.simulate_nb(
            t,
            o,
            h,
            lo,
            c,
            v,
            le,
            lx,
            se,
            sx,
            fund,
            vol_est,
            scale,
            p,
            True,
            eq,
            cash,
            pos,
            orders,
            trades,
            m,
            np.zeros(0),
            check,
        )
    if bad >= 0:
        raise _BadInput(bad)
    return make_result(
        ts=t if timed else None,
        equity=eq,
        cash=cash,
        position=pos,
        order_records=orders[:n_ord].copy(),
        trade_records=trades[:n_tr].copy(),
        metric_vector=m,
        close=c,
        init_cash=float(p[Param.INIT_CASH]),
    )


# --------------------------------------------------------------------------- config mapping
#: the bar-table columns :func:`simulate_from_config` reads (``volume`` too, when there)
PRICE_COLUMNS = ("ts_close", "open", "high", "low", "close")


def _bars_arrays(bars: pd.DataFrame, where: str = "bars") -> dict:
    missing = [k for k in PRICE_COLUMNS if k not in bars.columns]
    if missing:
        raise KeyError(f"{where}: missing bar column(s) {missing}; have {list(bars.columns)}")
    out = {k: bars[k].to_numpy() for k in PRICE_COLUMNS}
    out["volume"] = bars["volume"].to_numpy() if "volume" in bars.columns else None
    return out


def _funding_arrays(funding: Optional[pd.DataFrame], where: str = "funding"):
    if funding is None:
        return None, None
    missing = [k for k in ("ts", "rate") if k not in funding.columns]
    if missing:
        raise KeyError(f"{where}: missing column(s) {missing}; have {list(funding.columns)}")
    return funding["ts"].to_numpy(), funding["rate"].to_numpy()


def simulate_from_config(
    bars: pd.DataFrame,
    entries,
    exits,
    bt_cfg: Any,
    funding: Optional[pd.DataFrame] = None,
    short_entries=None,
    short_exits=None,
    size_scale=None,
    window=None,
    ticks=None,
) -> BacktestResult:
    """Backtest a bar table (``ts_close, open, high, low, close[, volume]``) with a ``backtest``
    config node (OmegaConf or dict). ``funding`` (columns ``ts`` µs, ``rate``) is charged when
    given and ``bt_cfg.funding`` is true; ``size_scale`` is a per-bar bet size; ``ticks`` the
    bars' trades for ``backtest.intrabar=ticks`` (see :func:`simulate`)."""
    a = _bars_arrays(bars)
    opts = options_from_config(bt_cfg)
    fts, frate = _funding_arrays(funding) if _get(bt_cfg, "funding", False) else (None, None)
    vol = a["volume"] if (a["volume"] is not None) else None
    if ticks is not None and not callable(ticks):
        ticks = FrameTrades(ticks, bars)
    return simulate(
        a["close"],
        entries,
        exits,
        open=a["open"],
        high=a["high"],
        low=a["low"],
        ts=a["ts_close"],
        volume=vol,
        short_entries=short_entries,
        short_exits=short_exits,
        funding_ts=fts,
        funding_rate=frate,
        size_scale=size_scale,
        window=window,
        ticks=ticks,
        **opts,
    )
