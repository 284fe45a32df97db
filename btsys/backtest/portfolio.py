"""Multi-asset backtests with shared cash, and a cross-sectional long/short strategy.

The symbols' bars are merged on the union of their close times (``BacktestResult.ts``); at each
time every symbol with a bar closing then is processed (in symbol order) by ``_nb.portfolio_nb``,
which applies the same rules as the single-asset engine. Order ``idx`` and trade
``entry_idx``/``exit_idx`` are rows of that merged timeline; ``orders['col']`` indexes
``result.symbols``; ``position`` is a (time x symbol) array.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np
import pandas as pd

from btsys.backtest import _nb
from btsys.backtest.engine import (
    BacktestResult,
    _bars_arrays,
    _funding_arrays,
    _get,
    bet_sizes,
    build_params,
    metrics_dict,
    options_from_config,
)
from btsys.backtest.enums import N_METRICS, P_INIT_CASH, order_dt, trade_dt
from btsys.signals import _strategies_nb as snb


def _opts(bt_cfg: Any) -> dict:
    opts = options_from_config(bt_cfg)
    opts.pop("vol_window", None)
    if opts["size_mode"] == "vol_target":
        raise ValueError("simulate_portfolio: size.mode=vol_target is not supported for portfolios")
    return opts


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


def _grid(symbols, rows, T, per_symbol, dtype, fill):
    out = np.full((T, len(symbols)), fill, dtype=dtype)
    for k, s in enumerate(symbols):
        if per_symbol.get(s) is not None:
            out[rows[s], k] = per_symbol[s]
    return out


def _signal_grid(name, sig: Optional[Mapping], symbols, arrs, rows, T):
    out = np.zeros((T, len(symbols)), dtype=np.bool_)
    if sig is None:
        return out
    unknown = set(sig) - set(symbols)
    if unknown:
        raise KeyError(f"simulate_portfolio: `{name}` has symbols without bars: {sorted(unknown)}")
    for k, s in enumerate(symbols):
        if s in sig and sig[s] is not None:
            a = np.asarray(sig[s])
            if a.shape != (len(arrs[s]["close"]),):
                raise ValueError(
                    f"simulate_portfolio: `{name}[{s!r}]` has shape {a.shape}, "
                    f"bars[{s!r}] has {len(arrs[s]['close'])} rows"
                )
            out[rows[s], k] = a.astype(np.bool_)
    return out


def simulate_portfolio(
    bars: Mapping[str, pd.DataFrame],
    entries: Mapping,
    exits: Mapping,
    bt_cfg: Any,
    funding: Optional[Mapping[str, pd.DataFrame]] = None,
    short_entries: Optional[Mapping] = None,
    short_exits: Optional[Mapping] = None,
    size_scale: Optional[Mapping] = None,
    **overrides,
) -> BacktestResult:
    """Backtest several symbols with one cash balance.

    Parameters
    ----------
    bars : symbol -> bar table (``ts_close, open, high, low, close[, volume]``).
    entries, exits : symbol -> boolean array aligned to that symbol's bars (direction semantics as
        in :func:`btsys.backtest.engine.signal_arrays`, per symbol).
    bt_cfg : the ``backtest`` config node (or dict); ``overrides`` replace single simulate options.
    funding : symbol -> DataFrame (``ts`` µs, ``rate``), charged when ``bt_cfg.funding``.
    size_scale : symbol -> per-bar bet size (>= 0, aligned to that symbol's bars) scaling its entries.

    Size mode ``all`` gives each entry the free cash divided by the number of flat symbols.
    """
    opts = {**_opts(bt_cfg), **overrides}
    p = build_params(**opts)
    symbols, arrs, ts, rows = _merge(bars)
    T, K = len(ts), len(symbols)
    g = {
        k: _grid(symbols, rows, T, {s: arrs[s][k] for s in symbols}, np.float64, np.nan)
        for k in ("open", "high", "low", "close")
    }
    has = _grid(symbols, rows, T, {s: True for s in symbols}, np.bool_, False)
    if all(arrs[s]["volume"] is not None for s in symbols):
        vol = _grid(symbols, rows, T, {s: arrs[s]["volume"] for s in symbols}, np.float64, 0.0)
    else:
        if float(opts.get("slippage_impact", 0.0)) > 0:
            raise ValueError("simulate_portfolio: slippage impact needs a `volume` column in every bar table")
        vol = np.zeros((0, 0))
    direction = getattr(opts.get("direction", "long"), "value", opts.get("direction", "long"))
    e = _signal_grid("entries", entries, symbols, arrs, rows, T)
    x = _signal_grid("exits", exits, symbols, arrs, rows, T)
    se = _signal_grid("short_entries", short_entries, symbols, arrs, rows, T)
    sx = _signal_grid("short_exits", short_exits, symbols, arrs, rows, T)
    empty = np.zeros((T, K), dtype=np.bool_)
    if direction == "long":
        le, lx, se_, sx_ = e, x, empty, empty
    elif direction == "short":
        le, lx = empty, empty
        se_, sx_ = (e, x) if short_entries is None and short_exits is None else (se, sx)
    else:
        le, lx = e, x
        se_, sx_ = (x, e) if short_entries is None and short_exits is None else (se, sx)
    fund = np.zeros((0, 0))
    if funding is not None and _get(bt_cfg, "funding", False):
        fund = np.zeros((T, K))
        for k, s in enumerate(symbols):
            if s not in funding or funding[s] is None:
                continue
            fts, fr = _funding_arrays(funding[s], f"funding[{s!r}]")
            sym_ts = np.asarray(arrs[s]["ts_close"], np.int64)
            idx = np.searchsorted(sym_ts, np.asarray(fts, np.int64), side="left")
            keep = idx < sym_ts.shape[0]
            np.add.at(fund[:, k], rows[s][idx[keep]], np.asarray(fr, np.float64)[keep])
    scale = np.zeros((0, 0))
    if size_scale is not None:
        scale = _grid(
            symbols,
            rows,
            T,
            {
                s: bet_sizes(size_scale.get(s), len(arrs[s]["close"]), f"size_scale[{s!r}]")
                if size_scale.get(s) is not None
                else None
                for s in symbols
            },
            np.float64,
            1.0,
        )
    eq = np.empty(T)
    cash = np.empty(T)
    pos = np.empty((T, K))
    orders = np.empty(3 * T * K + 2, dtype=order_dt)
    trades = np.empty(T * K + K, dtype=trade_dt)
    n_ord, n_tr, fees_paid, funding_paid, traded = _nb.portfolio_nb(
        ts,
        has,
        g["open"],
        g["high"],
        g["low"],
        g["close"],
        vol,
        le,
        lx,
        se_,
        sx_,
        fund,
        scale,
        p,
        eq,
        cash,
        pos,
        orders,
        trades,
    )
    tr = trades[:n_tr]
    m = np.empty(N_METRICS)
    _nb.equity_metrics_nb(
        ts,
        eq,
        p[P_INIT_CASH],
        (pos != 0).any(axis=1),
        tr["pnl"].copy(),
        tr["is_open"].astype(np.bool_),
        fees_paid,
        funding_paid,
        traded,
        m,
    )
    return BacktestResult(
        ts=ts,
        equity=eq,
        cash=cash,
        position=pos,
        orders=orders[:n_ord].copy(),
        trade_records=tr.copy(),
        metrics=metrics_dict(m),
        final_value=float(eq[-1]),
        init_cash=float(p[P_INIT_CASH]),
        symbols=symbols,
    )


def simulate_cross_sectional(
    bars: Mapping[str, pd.DataFrame],
    scores: Mapping[str, Any],
    top_n: int,
    bottom_n: int,
    rebalance_every: Union[int, str],
    bt_cfg: Any,
    funding: Optional[Mapping] = None,
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
    margin.
    """
    if top_n < 0 or bottom_n < 0 or top_n + bottom_n == 0:
        raise ValueError(f"simulate_cross_sectional: need top_n + bottom_n > 0, got {top_n}, {bottom_n}")
    symbols, arrs, ts, rows = _merge(bars)
    if top_n + bottom_n > len(symbols):
        raise ValueError(
            f"simulate_cross_sectional: top_n + bottom_n = {top_n + bottom_n} exceeds {len(symbols)} symbols"
        )
    T, K = len(ts), len(symbols)
    sc = np.full((T, K), np.nan)
    for k, s in enumerate(symbols):
        if s not in scores:
            raise KeyError(f"simulate_cross_sectional: no scores for symbol {s!r}")
        a = np.asarray(scores[s], dtype=np.float64)
        if a.shape != (len(arrs[s]["close"]),):
            raise ValueError(
                f"simulate_cross_sectional: scores[{s!r}] has shape {a.shape}, "
                f"bars[{s!r}] has {len(arrs[s]['close'])} rows"
            )
        sc[rows[s], k] = a
    has = _grid(symbols, rows, T, {s: True for s in symbols}, np.bool_, False)
    sig = [np.zeros((T, K), dtype=np.bool_) for _ in range(4)]
    snb.xs_momentum_signals_nb(has, sc, rebalance_rows(ts, rebalance_every), top_n, bottom_n, *sig)
    ent, ex, sen, sex = ({s: g[rows[s], k] for k, s in enumerate(symbols)} for g in sig)
    opts = {**_opts(bt_cfg), **overrides}
    opts["direction"] = "both"
    if opts["size_mode"] == "all":
        opts["size_mode"] = "percent"
        opts["size"] = 1.0 / (top_n + bottom_n)
    charged = {"funding": bool(_get(bt_cfg, "funding", False))}
    return simulate_portfolio(
        bars, ent, ex, charged, funding=funding, short_entries=sen, short_exits=sex, **opts
    )


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
