"""Multi-asset backtests with shared cash, and a cross-sectional long/short strategy.

The symbols' bars are merged on the union of their close times (``BacktestResult.ts``); at each
time every symbol with a bar closing then is processed (in symbol order) by ``_nb.portfolio_nb``,
which applies the same rules as the single-asset engine. Order ``idx`` and trade
``entry_idx``/``exit_idx`` are rows of that merged timeline; ``orders['col']`` indexes
``result.symbols``; ``position`` is a (time x symbol) array.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np
import pandas as pd

from btsys.backtest import _nb
from btsys.backtest.engine import (
    BacktestResult,
    _bars_arrays,
    _funding_arrays,
    bet_sizes,
    realised_vol,
    window_slice,
)
from btsys.backtest.enums import N_METRICS, Param, SizeMode, order_dt, trade_dt
from btsys.backtest.inputs import bar_tables, per_symbol
from btsys.backtest.options import _get, build_params, one_symbol_only, options_from_config
from btsys.backtest.result import make_result
from btsys.signals import _strategies_nb as snb


def _merge(bars: Mapping[str, pd.DataFrame]):
    if not isinstance(bars, Mapping) or not bars:
        raise ValueError("simulate_portfolio: `bars` must be a non-empty dict symbol -> DataFrame")
    symbols = list(bars)
    arrs = {}
    for s in symbols:
        a = _bars_arrays(bars[s], f"bars[{s!r}]")
        t = np.asarray(a["ts_close"], dtype=np.int64)
        if t.size == 0:
            raise ValueError(f"simulate_portfolio: bars[{s!r}] is empty")
        if (np.diff(t) <= 0).any():
            i = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
            raise ValueError(f"simulate_portfolio: bars[{s!r}].ts_close must increase; row {i}")
        for k in ("open", "high", "low", "close"):
            v = np.asarray(a[k], dtype=np.float64)
            bad = ~(v > 0) | ~np.isfinite(v)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"simulate_portfolio: bars[{s!r}].{k} row {i} is {v[i]!r}")
        arrs[s] = a
    ts = np.unique(np.concatenate([np.asarray(arrs[s]["ts_close"], np.int64) for s in symbols]))
    rows = {s: np.searchsorted(ts, np.asarray(arrs[s]["ts_close"], np.int64)) for s in symbols}
    return symbols, arrs, ts, rows


def _grid(symbols, rows, T, per_sym, dtype, fill):
    out = np.full((T, len(symbols)), fill, dtype=dtype)
    for k, s in enumerate(symbols):
        if per_sym.get(s) is not None:
            out[rows[s], k] = per_sym[s]
    return out


def member_grid(universe: Optional[pd.DataFrame], symbols: list, ts: np.ndarray) -> np.ndarray:
    """The (time x symbol) membership of a universe table at the merged bar times.

    ``universe`` has an int64 ``ts`` column (µs, increasing: the instants at which membership
    changes) and one boolean column per symbol; a row holds from its ``ts`` (inclusive) to the
    next. Before the first row nobody is a member. ``None`` -> a ``(0, 0)`` array (everyone, always).
    """
    if universe is None:
        return np.zeros((0, 0), dtype=np.bool_)
    if not isinstance(universe, pd.DataFrame) or "ts" not in universe.columns:
        raise ValueError("simulate_portfolio: `universe` must be a DataFrame with a `ts` column")
    uts = np.asarray(universe["ts"], dtype=np.int64)
    if uts.size and (np.diff(uts) <= 0).any():
        i = int(np.flatnonzero(np.diff(uts) <= 0)[0]) + 1
        raise ValueError(f"simulate_portfolio: universe.ts must increase; row {i}")
    missing = [s for s in symbols if s not in universe.columns]
    if missing:
        raise KeyError(f"simulate_portfolio: `universe` has no column for symbols {missing}")
    not_bool = [s for s in symbols if universe[s].dtype != np.bool_]
    if not_bool:
        raise ValueError(f"simulate_portfolio: `universe` columns {not_bool} must be boolean (member or not)")
    wide = universe[symbols].to_numpy(dtype=np.bool_)
    row = np.searchsorted(uts, ts, side="right") - 1
    out = np.zeros((len(ts), len(symbols)), dtype=np.bool_)
    ok = row >= 0
    out[ok] = wide[row[ok]]
    return out


@dataclass(frozen=True)
class Timeline:
    """Several symbols' bars on the union of their close times (rows), one column per symbol.

    ``has[t, k]``: symbol k has a bar closing at ``ts[t]``; prices are NaN elsewhere. ``volume``
    is (0, 0) unless every table has one; ``funding`` (rates due per bar) is (0, 0) when funding
    is not charged. ``rows[s]``: the timeline row of each of symbol s's bars."""

    symbols: list
    arrs: dict
    ts: np.ndarray
    rows: dict
    has: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    funding: np.ndarray

    def per_symbol(self, per: Mapping[str, Any], dtype, fill) -> np.ndarray:
        """A (time x symbol) grid of per-symbol arrays aligned to each symbol's bars."""
        return _grid(self.symbols, self.rows, len(self.ts), per, dtype, fill)

    def vol_target(self, window: int) -> np.ndarray:
        """Each symbol's annualised volatility at its bars (:func:`realised_vol`, NaN elsewhere)."""
        return self.per_symbol(
            {
                s: realised_vol(
                    np.asarray(a["close"], np.float64), np.asarray(a["ts_close"], np.int64), window
                )
                for s, a in self.arrs.items()
            },
            np.float64,
            np.nan,
        )


def timeline(
    bars: Mapping[str, pd.DataFrame], funding: Optional[Mapping[str, pd.DataFrame]] = None
) -> Timeline:
    """The merged :class:`Timeline` of ``bars``; ``funding`` (symbol -> ``ts``, ``rate``) charged
    when given: each event at the symbol's first bar closing at or after it."""
    symbols, arrs, ts, rows = _merge(bars)
    T, K = len(ts), len(symbols)
    g = {k: _grid(symbols, rows, T, {s: arrs[s][k] for s in symbols}, np.float64, np.nan) for k in BAR_PRICES}
    has = _grid(symbols, rows, T, {s: True for s in symbols}, np.bool_, False)
    vol = np.zeros((0, 0))
    if all(arrs[s]["volume"] is not None for s in symbols):
        vol = _grid(symbols, rows, T, {s: arrs[s]["volume"] for s in symbols}, np.float64, 0.0)
    fund = np.zeros((0, 0))
    if funding is not None:
        fund = np.zeros((T, K))
        for k, s in enumerate(symbols):
            if s not in funding or funding[s] is None:
                continue
            fts, fr = _funding_arrays(funding[s], f"funding[{s!r}]")
            sym_ts = np.asarray(arrs[s]["ts_close"], np.int64)
            idx = np.searchsorted(sym_ts, np.asarray(fts, np.int64), side="left")
            keep = idx < sym_ts.shape[0]
            np.add.at(fund[:, k], rows[s][idx[keep]], np.asarray(fr, np.float64)[keep])
    return Timeline(symbols, arrs, ts, rows, has, g["open"], g["high"], g["low"], g["close"], vol, fund)


BAR_PRICES = ("open", "high", "low", "close")


def _signal_grid(name, sig: Optional[Mapping], tl: Timeline):
    out = np.zeros((len(tl.ts), len(tl.symbols)), dtype=np.bool_)
    if sig is None:
        return out
    unknown = set(sig) - set(tl.symbols)
    if unknown:
        raise KeyError(f"simulate_portfolio: `{name}` has symbols without bars: {sorted(unknown)}")
    for k, s in enumerate(tl.symbols):
        if s in sig and sig[s] is not None:
            a = np.asarray(sig[s])
            if a.shape != (len(tl.arrs[s]["close"]),):
                raise ValueError(
                    f"simulate_portfolio: `{name}[{s!r}]` has shape {a.shape}, "
                    f"bars[{s!r}] has {len(tl.arrs[s]['close'])} rows"
                )
            out[tl.rows[s], k] = a.astype(np.bool_)
    return out


def direction_signals(direction: str, e, x, se, sx, shorts_given: bool):
    """The kernel's (long entry, long exit, short entry, short exit) grids for ``direction``
    (as :func:`btsys.backtest.engine.signal_arrays`, per symbol)."""
    empty = np.zeros_like(e)
    if direction == "long":
        return e, x, empty, empty
    if direction == "short":
        return (empty, empty, se, sx) if shorts_given else (empty, empty, e, x)
    return (e, x, se, sx) if shorts_given else (e, x, x, e)


def simulate_portfolio(
    bars: Union[Mapping[str, pd.DataFrame], pd.DataFrame],
    entries: Union[Mapping, pd.DataFrame],
    exits: Union[Mapping, pd.DataFrame],
    bt_cfg: Any = None,
    funding: Optional[Mapping[str, pd.DataFrame]] = None,
    short_entries: Optional[Mapping] = None,
    short_exits: Optional[Mapping] = None,
    size_scale: Optional[Mapping] = None,
    universe: Optional[pd.DataFrame] = None,
    window=None,
    **overrides,
) -> BacktestResult:
    """Backtest several symbols with one cash balance.

    Parameters
    ----------
    bars : symbol -> bar table (``ts_close, open, high, low, close[, volume]``; without
        ``ts_close``, its DatetimeIndex; a close Series works too), or one DataFrame of closes
        (DatetimeIndex x symbols, NaN where a symbol has no bar).
    entries, exits : symbol -> boolean array aligned to that symbol's bars, or a Series / a
        DataFrame of symbols matched to each symbol's bars by DatetimeIndex (direction semantics
        as in :func:`btsys.backtest.engine.signal_arrays`, per symbol).
    bt_cfg : the ``backtest`` config node (or dict; ``None``: the defaults); ``overrides`` replace
        single simulate options (``fees=0.001``, ``direction="both"``, ...).
    funding : symbol -> DataFrame (``ts`` µs, ``rate``), charged when ``bt_cfg.funding``.
    size_scale : symbol -> per-bar bet size (>= 0, aligned to that symbol's bars) scaling its entries.
    universe : dynamic membership (see :func:`member_grid`; ``btsys.universe.Membership.wide()``):
        a symbol trades only while a member at its bar's close; a leaver's position is closed on
        its first bar after leaving (order kind ``UNIVERSE_EXIT``) or, when its data has ended,
        at its last close (``DELISTED``). ``None``: every symbol is always a member.
    window : ``(start, stop)`` rows of the merged timeline: trade only those (see ``simulate``).

    Size mode ``all`` gives each entry the free cash divided by the number of flat symbols (flat
    members, with a universe); ``vol_target`` sizes each entry by its own symbol's trailing
    volatility.
    """
    bt_cfg = {} if bt_cfg is None else bt_cfg
    bars = bar_tables(bars)
    entries, exits, short_entries, short_exits, size_scale = (
        per_symbol(k, v, bars)
        for k, v in (
            ("entries", entries),
            ("exits", exits),
            ("short_entries", short_entries),
            ("short_exits", short_exits),
            ("size_scale", size_scale),
        )
    )
    opts = {**options_from_config(bt_cfg), **overrides}
    one_symbol_only(opts, "a portfolio")
    vol_window = int(opts.pop("vol_window"))
    p = build_params(**opts)
    tl = timeline(bars, funding if _get(bt_cfg, "funding", False) else None)
    if p[Param.IMPACT] > 0 and tl.volume.shape[0] == 0:
        raise ValueError("simulate_portfolio: slippage impact needs a `volume` column in every bar table")
    direction = getattr(opts.get("direction", "long"), "value", opts.get("direction", "long"))
    le, lx, se, sx = direction_signals(
        direction,
        _signal_grid("entries", entries, tl),
        _signal_grid("exits", exits, tl),
        _signal_grid("short_entries", short_entries, tl),
        _signal_grid("short_exits", short_exits, tl),
        short_entries is not None or short_exits is not None,
    )
    scale = np.zeros((0, 0))
    if size_scale is not None:
        scale = tl.per_symbol(
            {
                s: bet_sizes(size_scale.get(s), len(tl.arrs[s]["close"]), f"size_scale[{s!r}]")
                if size_scale.get(s) is not None
                else None
                for s in tl.symbols
            },
            np.float64,
            1.0,
        )
    vol_est = tl.vol_target(vol_window) if p[Param.SIZE_MODE] == SizeMode.VOL_TARGET else np.zeros((0, 0))
    member = member_grid(universe, tl.symbols, tl.ts)
    return _run(tl, le, lx, se, sx, vol_est, scale, member, p, window)


def _run(tl: Timeline, le, lx, se, sx, vol_est, scale, member, p, window=None) -> BacktestResult:
    if window is not None:
        w = window_slice(window, len(tl.ts))
        tl = dataclasses.replace(
            tl, ts=tl.ts[w], **{k: getattr(tl, k)[w] for k in ("has", *BAR_PRICES, "volume", "funding")}
        )
        le, lx, se, sx, vol_est, scale, member = (a[w] for a in (le, lx, se, sx, vol_est, scale, member))
    T, K = len(tl.ts), len(tl.symbols)
    eq = np.empty(T)
    cash = np.empty(T)
    pos = np.empty((T, K))
    orders = np.empty(3 * T * K + 2, dtype=order_dt)
    trades = np.empty(T * K + K, dtype=trade_dt)
    m = np.empty(N_METRICS)
    n_ord, n_tr = _nb.portfolio_nb(
        tl.ts,
        tl.has,
        tl.open,
        tl.high,
        tl.low,
        tl.close,
        tl.volume,
        le,
        lx,
        se,
        sx,
        tl.funding,
        vol_est,
        scale,
        member,
        p,
        True,
        eq,
        cash,
        pos,
        orders,
        trades,
        m,
        np.zeros(0),
    )
    return make_result(
        ts=tl.ts,
        equity=eq,
        cash=cash,
        position=pos,
        order_records=orders[:n_ord].copy(),
        trade_records=trades[:n_tr].copy(),
        metric_vector=m,
        close=tl.close,
        init_cash=float(p[Param.INIT_CASH]),
        symbols=tl.symbols,
    )


def simulate_cross_sectional(
    bars: Mapping[str, pd.DataFrame],
    scores: Mapping[str, Any],
    top_n: int,
    bottom_n: int,
    rebalance_every: Union[int, str],
    bt_cfg: Any = None,
    funding: Optional[Mapping] = None,
    universe: Optional[pd.DataFrame] = None,
    window=None,
    **overrides,
) -> BacktestResult:
    """Rank symbols by score, long the top ``top_n``, short the bottom ``bottom_n``, rebalance on a
    schedule.

    At each rebalance time t (every ``rebalance_every`` rows of the merged timeline, or the first
    time of each new pandas period such as ``"1D"``), each symbol's latest score from a bar closing
    at or before t is ranked (NaN scores are left out). The orders are placed on each symbol's
    first bar closing at or after t (no look-ahead): selected symbols enter (or reverse into) their
    side, the others are flattened; a symbol that stays selected on the same side is held, not
    resized. With size mode ``all``, each position gets ``1 / (top_n + bottom_n)`` of equity as
    margin (other size modes size each position as configured). The direction is always ``both``.
    With a ``universe`` (as in :func:`simulate_portfolio`), only the symbols that are members at t
    are ranked, and a symbol that leaves between two rebalances is closed then.
    """
    if top_n < 0 or bottom_n < 0 or top_n + bottom_n == 0:
        raise ValueError(f"simulate_cross_sectional: need top_n + bottom_n > 0, got {top_n}, {bottom_n}")
    bt_cfg = {} if bt_cfg is None else bt_cfg
    bars = bar_tables(bars, "simulate_cross_sectional")
    scores = per_symbol("scores", scores, bars, "simulate_cross_sectional")
    tl = timeline(bars, funding if _get(bt_cfg, "funding", False) else None)
    if top_n + bottom_n > len(tl.symbols):
        raise ValueError(
            f"simulate_cross_sectional: top_n + bottom_n = {top_n + bottom_n} exceeds "
            f"{len(tl.symbols)} symbols"
        )
    for s in tl.symbols:
        if s not in scores:
            raise KeyError(f"simulate_cross_sectional: no scores for symbol {s!r}")
        if np.shape(scores[s]) != (len(tl.arrs[s]["close"]),):
            raise ValueError(
                f"simulate_cross_sectional: scores[{s!r}] has shape {np.shape(scores[s])}, "
                f"bars[{s!r}] has {len(tl.arrs[s]['close'])} rows"
            )
    sc = tl.per_symbol({s: np.asarray(scores[s], np.float64) for s in tl.symbols}, np.float64, np.nan)
    member = member_grid(universe, tl.symbols, tl.ts)
    sig = [np.zeros(tl.has.shape, dtype=np.bool_) for _ in range(4)]
    snb.xs_momentum_signals_nb(
        tl.has, sc, member, rebalance_rows(tl.ts, rebalance_every), top_n, bottom_n, *sig
    )
    opts = {**options_from_config(bt_cfg), **overrides}
    one_symbol_only(opts, "a portfolio")
    vol_window = int(opts.pop("vol_window"))
    p = build_params(**opts)
    _nb.xs_params_nb(p, top_n, bottom_n)
    if p[Param.IMPACT] > 0 and tl.volume.shape[0] == 0:
        raise ValueError("simulate_portfolio: slippage impact needs a `volume` column in every bar table")
    vol_est = tl.vol_target(vol_window) if p[Param.SIZE_MODE] == SizeMode.VOL_TARGET else np.zeros((0, 0))
    return _run(tl, *sig, vol_est, np.zeros((0, 0)), member, p, window)


def rebalance_rows(ts: np.ndarray, every: Union[int, str]) -> np.ndarray:
    """Rebalance mask of a merged timeline: every ``every`` rows from the first, or the first row
    of each new pandas period (``"1D"``, ``"6h"``)."""
    if isinstance(every, str):
        per = pd.to_datetime(ts, unit="us", utc=True).floor(every).asi8
        return np.r_[True, per[1:] != per[:-1]]
    if isinstance(every, bool) or int(every) != every or int(every) < 1:
        raise ValueError(f"simulate_cross_sectional: rebalance_every must be an integer >= 1, got {every!r}")
    reb = np.zeros(ts.shape[0], dtype=np.bool_)
    reb[:: int(every)] = True
    return reb
