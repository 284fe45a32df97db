"""In-kernel parameter sweeps: every combination of a grid in one parallel numba call.

Each distinct moving-average window is computed once and shared by all combinations; each
combination then runs the same event loop as :func:`btsys.backtest.simulate` with ``store=False``
(metrics only, streamed), so a sweep row equals the metrics of the corresponding ``simulate``
call. Memory is the bars, one row per distinct window, two boolean buffers per thread and one
metrics row per combination: nothing of size combinations x bars.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Optional, Sequence

import numba
import numpy as np
import pandas as pd

from btsys.backtest import _nb
from btsys.backtest.engine import (
    _bars_arrays,
    _f64,
    _funding_arrays,
    _get,
    bar_times,
    build_params,
    funding_per_bar,
    ohlc_arrays,
    options_from_config,
    realised_vol,
)
from btsys.backtest.enums import (
    DAY_US,
    METRIC_NAMES,
    N_METRICS,
    P_IMPACT,
    P_SIZE_MODE,
    SizeMode,
    order_dt,
    trade_dt,
)
from btsys.backtest.options import OPTIONS

SWEEPABLE = {o.kw: o.slot for o in OPTIONS if o.sweepable and o.slot is not None}
STRATEGIES = {"ma_cross": 0, "ema_cross": 1}
STRATEGY_PARAMS = ("fast", "slow")


def _check_window(name: str, w: Any) -> int:
    if isinstance(w, bool) or not float(w).is_integer() or int(w) < 1:
        raise ValueError(f"sweep: `{name}` windows must be positive integers, got {w!r}")
    return int(w)


def ma_cross_signals(close, fast: int, slow: int, kind: str = "ma_cross"):
    """Signals of a moving-average cross: ``entries = ma_fast > ma_slow``, ``exits = ma_fast <=
    ma_slow`` (both False while a window is warming up). ``kind``: ``ma_cross`` (SMA) or
    ``ema_cross`` (EMA seeded with the SMA of its first window). Uses the sweep's kernels, so
    ``simulate`` over these signals reproduces a ``sweep`` row exactly."""
    if kind not in STRATEGIES:
        raise ValueError(f"ma_cross_signals: `kind` must be one of {sorted(STRATEGIES)}, got {kind!r}")
    c = _f64("close", close, None, positive=True)
    wins = np.array([_check_window("fast", fast), _check_window("slow", slow)], dtype=np.int64)
    mas = _nb.mas_nb(c, wins, STRATEGIES[kind])
    en = np.empty(c.shape[0], dtype=np.bool_)
    ex = np.empty(c.shape[0], dtype=np.bool_)
    _nb.cross_signals_nb(mas[0], mas[1], en, ex)
    return en, ex


def sweep(
    close,
    grid: Mapping[str, Sequence],
    open=None,
    high=None,
    low=None,
    strategy: str = "ma_cross",
    *,
    ts=None,
    volume=None,
    funding_ts=None,
    funding_rate=None,
    daily_returns: bool = False,
    **fixed: Any,
):
    """Evaluate every combination of ``grid`` (cartesian product, keys in the given order).

    Parameters
    ----------
    close, open, high, low : float64 bars (open/high/low default to close).
    grid : ``{"fast": [...], "slow": [...], <backtest option>: [...]}``; strategy windows default to
        ``fixed["fast"]``/``fixed["slow"]`` when absent. Backtest options that may vary:
        ``enums.SWEEPABLE`` (fees, slippage, stop_loss, take_profit, trailing_stop, leverage, ...).
    strategy : ``ma_cross`` (SMA) or ``ema_cross``; long when fast > slow (see ``ma_cross_signals``).
    fixed : any other :func:`simulate` keyword option, applied to all combinations
        (``direction``, ``fill``, ``size_mode``, ...).

    daily_returns : also return each combination's daily returns (the series its Sharpe is
        computed from; for PBO over the whole grid).

    Returns
    -------
    DataFrame with one row per combination: the grid's columns then ``enums.METRIC_NAMES``; with
    ``daily_returns``, also a DataFrame (index: UTC day start in µs, one column per table row).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"sweep: `strategy` must be one of {sorted(STRATEGIES)}, got {strategy!r}")
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("sweep: `grid` must be a non-empty mapping of name -> list of values")
    c, o, h, lo = ohlc_arrays(close, open, high, low, "sweep")
    n = c.shape[0]
    t = bar_times(ts, n)
    fixed = dict(fixed)
    fast0 = fixed.pop("fast", None)
    slow0 = fixed.pop("slow", None)
    vol_window = int(fixed.pop("vol_window", 50))
    for k in ("entries", "exits", "short_entries", "short_exits"):
        if k in fixed:
            raise ValueError(f"sweep: `{k}` cannot be given; signals come from `strategy`")
    keys = list(grid)
    values = []
    for k in keys:
        v = list(grid[k]) if not isinstance(grid[k], (str, bytes)) else None
        if not v:
            raise ValueError(f"sweep: grid[{k!r}] must be a non-empty list of values")
        if k not in STRATEGY_PARAMS and k not in SWEEPABLE:
            raise ValueError(
                f"sweep: grid key {k!r} is not a strategy window ({STRATEGY_PARAMS}) "
                f"nor a sweepable backtest option ({sorted(SWEEPABLE)})"
            )
        values.append(v)
    for k, dflt in (("fast", fast0), ("slow", slow0)):
        if k not in grid and dflt is None:
            raise ValueError(f"sweep: give `{k}` in the grid or as a fixed option")
    base = build_params(**fixed)
    direction = getattr(fixed.get("direction", "long"), "value", fixed.get("direction", "long"))
    dir_code = {"long": 0, "short": 1, "both": 2}[direction]
    # validate every grid value once through the same checks simulate applies
    slot_values = {}
    for k, vs in zip(keys, values):
        if k in STRATEGY_PARAMS:
            slot_values[k] = [_check_window(k, v) for v in vs]
        else:
            slot_values[k] = [build_params(**{**fixed, k: v})[SWEEPABLE[k]] for v in vs]
    combos = list(itertools.product(*[range(len(v)) for v in values]))
    n_comb = len(combos)
    fast_ws = slot_values["fast"] if "fast" in grid else [_check_window("fast", fast0)]
    slow_ws = slot_values["slow"] if "slow" in grid else [_check_window("slow", slow0)]
    windows = sorted(set(fast_ws) | set(slow_ws))
    row_of = {w: r for r, w in enumerate(windows)}
    fast_row = np.empty(n_comb, dtype=np.int64)
    slow_row = np.empty(n_comb, dtype=np.int64)
    params = np.repeat(base[None, :], n_comb, axis=0)
    table = {k: [] for k in keys}
    for ci, combo in enumerate(combos):
        f_w = _check_window("fast", fast0) if "fast" not in grid else None
        s_w = _check_window("slow", slow0) if "slow" not in grid else None
        for k, j in zip(keys, combo):
            v = slot_values[k][j]
            table[k].append(values[keys.index(k)][j])
            if k == "fast":
                f_w = v
            elif k == "slow":
                s_w = v
            else:
                params[ci, SWEEPABLE[k]] = v
        fast_row[ci] = row_of[f_w]
        slow_row[ci] = row_of[s_w]
    volume_a = np.zeros(0) if volume is None else _f64("volume", volume, n)
    if volume is None and (params[:, P_IMPACT] > 0).any():
        raise ValueError("sweep: `slippage_impact` > 0 needs `volume`")
    fund = funding_per_bar(t, funding_ts, funding_rate)
    vol_est = realised_vol(c, t, vol_window) if base[P_SIZE_MODE] == SizeMode.VOL_TARGET else np.zeros(0)
    mas = _nb.mas_nb(c, np.asarray(windows, dtype=np.int64), STRATEGIES[strategy])
    out = np.empty((n_comb, N_METRICS))
    first_day = int(t[0] // DAY_US)
    n_days = int(t[-1] // DAY_US) - first_day + 1 if daily_returns else 0
    daily = np.zeros((n_comb, n_days))
    _nb.sweep_cross_nb(
        t,
        o,
        h,
        lo,
        c,
        volume_a,
        fund,
        vol_est,
        mas,
        fast_row,
        slow_row,
        params,
        dir_code,
        numba.get_num_threads(),
        np.zeros(0, dtype=order_dt),
        np.zeros(0, dtype=trade_dt),
        out,
        daily,
    )
    df = pd.DataFrame(table)
    for j, name in enumerate(METRIC_NAMES):
        df[name] = out[:, j]
    if not daily_returns:
        return df
    days = (first_day + np.arange(n_days, dtype=np.int64)) * DAY_US
    return df, pd.DataFrame(daily.T, index=pd.Index(days, name="ts"))


# --------------------------------------------------------------------------- config-driven sweeps
#: dotted ``backtest.*`` config key -> (sweep option, scale applied to the config value)
CONFIG_KEYS = {
    "backtest.init_cash": ("init_cash", 1.0),
    "backtest.fees.taker": ("fees", 1.0),
    "backtest.fees.fixed": ("fee_fixed", 1.0),
    "backtest.fees.min_fee": ("min_fee", 1.0),
    "backtest.slippage.bps": ("slippage", 1e-4),
    "backtest.slippage.impact": ("slippage_impact", 1.0),
    "backtest.slippage.impact_exponent": ("impact_exponent", 1.0),
    "backtest.size.value": ("size", 1.0),
    "backtest.size.min_qty": ("min_qty", 1.0),
    "backtest.size.step": ("step", 1.0),
    "backtest.leverage": ("leverage", 1.0),
    "backtest.maintenance_margin": ("maintenance_margin", 1.0),
    "backtest.risk.stop_loss": ("stop_loss", 1.0),
    "backtest.risk.take_profit": ("take_profit", 1.0),
    "backtest.risk.trailing_stop": ("trailing_stop", 1.0),
    "backtest.risk.time_stop_bars": ("time_stop", 1.0),
    "backtest.risk.cooldown_bars": ("cooldown", 1.0),
    "backtest.risk.max_position": ("max_position", 1.0),
    "backtest.risk.max_leverage": ("max_leverage", 1.0),
    "backtest.risk.max_drawdown": ("max_drawdown", 1.0),
}


def sweep_from_config(
    bars: pd.DataFrame,
    cfg: Any,
    grid: Mapping[str, Sequence],
    funding: Optional[pd.DataFrame] = None,
    daily_returns: bool = False,
):
    """Sweep a bar table with the composed run config ``cfg`` (``cfg.strategy``, ``cfg.backtest``)
    over ``grid`` given with dotted config keys, e.g. ``{"strategy.fast": [5, 10],
    "strategy.slow": [50, 100], "backtest.risk.stop_loss": [0, 0.02]}`` (as ``sweep.grid`` holds
    them). Keys not in the grid keep their config values. Returns the metrics table with the
    dotted keys as parameter columns (and, with ``daily_returns``, the daily returns as in :func:`sweep`)."""
    strategy = _get(cfg, "strategy.name", None)
    if strategy not in STRATEGIES:
        raise ValueError(
            f"sweep_from_config: strategy.name must be one of {sorted(STRATEGIES)} "
            f"for a kernel sweep, got {strategy!r}"
        )
    bt = _get(cfg, "backtest", None)
    if bt is None:
        raise KeyError("sweep_from_config: config has no `backtest` section")
    fixed = options_from_config(bt)
    if fixed["size_mode"] != "all":
        fixed["size"] = float(fixed["size"])
    fixed["fast"] = _get(cfg, "strategy.fast", None)
    fixed["slow"] = _get(cfg, "strategy.slow", None)
    inner, rename, scale = {}, {}, {}
    for key, vals in grid.items():
        if key in ("strategy.fast", "strategy.slow"):
            name, s = key.split(".", 1)[1], 1.0
        elif key in CONFIG_KEYS:
            name, s = CONFIG_KEYS[key]
        else:
            raise KeyError(
                f"sweep_from_config: grid key {key!r} cannot be swept in the kernel; "
                f"use strategy.fast/slow or one of {sorted(CONFIG_KEYS)}"
            )
        if name in ("size",) and fixed["size_mode"] == "all":
            raise ValueError("sweep_from_config: backtest.size.value has no effect with size.mode=all")
        inner[name] = [v * s if s != 1.0 else v for v in vals]
        rename[name] = key
        scale[key] = list(vals)
    a = _bars_arrays(bars, "sweep_from_config bars")
    fts, frate = _funding_arrays(funding) if _get(bt, "funding", False) else (None, None)
    res = sweep(
        a["close"],
        inner,
        open=a["open"],
        high=a["high"],
        low=a["low"],
        strategy=strategy,
        ts=a["ts_close"],
        volume=a["volume"],
        funding_ts=fts,
        funding_rate=frate,
        daily_returns=daily_returns,
        **fixed,
    )
    df, daily = res if daily_returns else (res, None)
    df = df.rename(columns=rename)
    for key, vals in scale.items():  # report the config's own units (e.g. bps, not a fraction)
        combos = itertools.product(*[grid[k] for k in grid])
        df[key] = [combo[list(grid).index(key)] for combo in combos]
    return (df, daily) if daily_returns else df
