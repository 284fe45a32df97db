"""In-kernel parameter sweeps: every combination of a grid in one parallel numba call.

A sweep evaluates what a run evaluates. Each combination's signals come from its strategy's one
kernel (``btsys.signals._strategies_nb``, over indicator series computed once per distinct
window) and its backtest from the engine's own event loop: ``simulate_nb`` for one symbol,
``portfolio_nb`` (shared cash) for several symbols and for ``xs_momentum`` — exactly what the
backtest stage (``btsys.stages.backtest``) runs for that config, members only with a dynamic
universe. So each row equals the run of its parameters, every metric of the run
(``METRIC_NAMES`` and the benchmark metrics) included (``tests/test_sweep_equals_run.py``).
Memory: the bars, one row per distinct indicator series, per-thread signal, equity and
daily-return buffers and one metrics row per combination.

Every value and every combination of the grid is checked before anything is computed
(:func:`plan_from_config`): strategy constraints (``strategy.fast < strategy.slow``), ranges of
the backtest options (the table in :mod:`btsys.backtest.options`), sizing, windows longer than the
data, symbols for ``xs_momentum``; messages name the key.

* :func:`sweep_frames` — a config (``cfg.strategy``, ``cfg.backtest``), bar/feature frames per
  symbol and a grid of dotted config keys (``sweep.grid``);
* :func:`sweep` — arrays of one symbol and a grid of ``simulate`` keywords and strategy parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numba
import numpy as np
import pandas as pd

from btsys.backtest import _sweep_nb as swnb
from btsys.backtest.engine import (
    _bars_arrays,
    _funding_arrays,
    bar_times,
    funding_per_bar,
    ohlc_arrays,
    realised_vol,
    volume_array,
    window_slice,
)
from btsys.backtest.enums import DAY_US, METRIC_NAMES, N_METRICS, SIZE_MODE_NAMES, order_dt, trade_dt
from btsys.backtest.inputs import prices_and_clock
from btsys.backtest.metrics import BENCHMARK_METRICS, CALENDAR_METRICS, buy_and_hold
from btsys.backtest.metrics import daily_returns as daily_returns_of
from btsys.backtest.options import (
    BY_KEY,
    BY_KW,
    KW_DEFAULTS,
    SWEEPABLE,
    _get,
    build_params,
    config_values,
    one_symbol_only,
    options_from_config,
)
from btsys.backtest.portfolio import Timeline, member_grid, rebalance_rows, timeline
from btsys.backtest.sweep_runs import evaluate_runs, runs_each
from btsys.backtest.ticks import TradeSource, trade_source
from btsys.errors import ConfigError
from btsys.signals.specs import SPECS, Spec, check_grid, check_value, indicators


class SweepError(ConfigError):
    """A bad sweep grid; the message names the key (and the combination)."""


@dataclass(frozen=True)
class Axis:
    """One key of a grid: its column name, the values as given, and what they set."""

    key: str  # column of the result table
    shown: list  # values as given (config units for config keys)
    checked: list  # checked values: ints for integer parameters, kernel units for options
    param: Optional[str] = None  # strategy parameter, or
    option: Optional[str] = None  # backtest option config key

    @property
    def kernel(self) -> np.ndarray:
        return np.asarray(self.checked, dtype=np.float64)


@dataclass
class Plan:
    """A checked grid: strategy, base values and axes (``itertools.product`` order)."""

    spec: Spec
    strategy: Dict[str, Any]  # checked strategy values (the axes replace theirs)
    kw: Dict[str, Any]  # checked ``simulate`` keyword options, kernel units
    charge_funding: bool
    axes: List[Axis] = field(default_factory=list)

    @property
    def n_combinations(self) -> int:
        return int(np.prod([len(a.shown) for a in self.axes], dtype=np.int64))

    def values(self, name: str, option: bool = False) -> list:
        """The checked values a strategy parameter (or, ``option``, a backtest option config key:
        kernel units, choice codes) takes over the grid."""
        for a in self.axes:
            if (a.option if option else a.param) == name:
                return list(a.checked)
        if option:
            o = BY_KEY[name]
            v = self.kw[o.kw]
            return [float(o.choices[v]) if o.choices else v]
        return [self.strategy[name]]


# --------------------------------------------------------------------------- planning (checks)
def grid_axes(grid: Mapping[str, Any], where: str = "sweep.grid") -> Tuple[List[str], List[list]]:
    """Keys and value lists of a grid (clear errors for an empty grid or a scalar)."""
    if not grid:
        raise SweepError(
            f"{where} is empty: give dotted keys with lists of values, e.g. "
            "sweep.grid={strategy.fast:[5,10],strategy.slow:[50,100]}"
        )
    keys, values = [], []
    for k, v in grid.items():
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise SweepError(f"{where}.{k} must be a list of values, got {v!r}")
        v = list(v)
        if not v:
            raise SweepError(f"{where}.{k} is an empty list")
        keys.append(str(k))
        values.append(v)
    return keys, values


def _strategy_spec(name: Any) -> Spec:
    if name not in SPECS:
        raise SweepError(
            f"strategy.name={name!r} cannot be swept in the kernel (sweep.mode=kernel|spark sweep the "
            f"rule strategies {sorted(SPECS)}); use sweep.mode=hydra"
        )
    return SPECS[name]


def _option_axis(key: str, vals: list, kw_units: bool, where: str) -> Axis:
    o = BY_KEY[key]
    checked = [o.check(v, "simulate" if kw_units else where) for v in vals]
    if o.choices is not None or not kw_units:
        checked = [o.kernel(v) for v in checked]
    return Axis(o.kw if kw_units else key, vals, checked, option=key)


def _plan(spec, strategy, kw, charge, items, kw_units: bool, where: str) -> Plan:
    plan = Plan(spec, strategy, kw, charge)
    allowed = [f"strategy.{p}" for p in spec.param_names] + list(SWEEPABLE)
    for key, vals in items:
        name = key.split(".", 1)[1] if key.startswith("strategy.") else key
        if kw_units and key in spec.param_names:
            name, key = key, f"strategy.{key}"
        if key.startswith("strategy.") and name in spec.param_names:
            checked = [check_value(spec, name, v, where) for v in vals]
            plan.axes.append(Axis(name if kw_units else key, vals, checked, param=name))
            continue
        opt = BY_KW.get(key) if kw_units else BY_KEY.get(key)
        if opt is None or not opt.sweepable:
            why = (
                "cannot be swept (it changes nothing until limit orders exist)"
                if opt
                else "is not a sweepable key"
            )
            raise SweepError(
                f"{where}{key} {why}; strategy {spec.name} sweeps {', '.join(allowed[: len(spec.params)])} "
                f"and the backtest options {', '.join(SWEEPABLE)}"
            )
        plan.axes.append(_option_axis(opt.key, vals, kw_units, where))
    if len({a.key for a in plan.axes}) != len(plan.axes):
        raise SweepError(f"{where}a key appears twice: {[a.key for a in plan.axes]}")
    _check_combinations(plan, where)
    return plan


def _check_combinations(plan: Plan, where: str) -> None:
    """Checks across keys, for every combination of the grid."""
    spec = plan.spec
    check_grid(spec, {p: plan.values(p) for p in spec.param_names}, where)
    modes = plan.values("backtest.size.mode", option=True)
    sizes = plan.values("backtest.size.value", option=True)
    names = {float(c): n for n, c in SIZE_MODE_NAMES.items()}
    for m in modes:
        if names[m] != "all" and any(math.isinf(s) for s in sizes):
            raise SweepError(f"{where}backtest.size.value must be finite with backtest.size.mode={names[m]}")
    if any(a.option == "backtest.size.value" for a in plan.axes) and all(names[m] == "all" for m in modes):
        raise SweepError(f"{where}backtest.size.value has no effect with backtest.size.mode=all")


def plan_from_config(cfg: Any, grid: Mapping[str, Any], where: str = "sweep.grid: ") -> Plan:
    """Check a config and every combination of a grid of dotted config keys; the :class:`Plan`.

    Nothing is computed; errors name the key (``sweep.grid: strategy.fast (50) must be smaller
    than strategy.slow (20)``)."""
    from btsys.signals import strategy_params

    spec = _strategy_spec(_get(cfg, "strategy.name", None))
    keys, values = grid_axes(grid, where.rstrip(": ") or "sweep.grid")
    swept = {k.split(".", 1)[1] for k in keys if k.startswith("strategy.")}
    base = strategy_params(_get(cfg, "strategy", None))
    strategy = {p: base[p] if p in swept else check_value(spec, p, base[p]) for p in spec.param_names}
    bt = _get(cfg, "backtest", None)
    if bt is None:
        raise SweepError("the config has no `backtest` section")
    kw = options_from_config(bt)
    kw["size"] = config_values(bt)["backtest.size.value"]  # the value a swept size.mode would use
    charge = bool(_get(bt, "funding", False))
    return _plan(spec, strategy, kw, charge, list(zip(keys, values, strict=True)), False, where)


def check_frames(plan: Plan, frames: Mapping[str, pd.DataFrame], where: str = "sweep.grid: ") -> None:
    """Checks that need the data: windows longer than every symbol's bars, impact without volume,
    ``xs_momentum``'s symbols."""
    if not frames:
        raise SweepError("no symbol has bars to sweep")
    if len(frames) > 1 or plan.spec.code < 0:
        one_symbol_only(plan.kw, "a portfolio sweep")
    n_max = max(len(f) for f in frames.values())
    windows = [w for _, w in plan.spec.indicators] + (["lookback"] if plan.spec.code < 0 else [])
    for p in dict.fromkeys(windows):
        w = max(plan.values(p))
        if w >= n_max:
            raise SweepError(
                f"{where}strategy.{p} = {int(w)} needs more than the {n_max} bars of the longest symbol "
                "(no signal could ever fire)"
            )
    if max(plan.values("backtest.slippage.impact", option=True)) > 0:
        missing = [s for s, f in frames.items() if "volume" not in f.columns]
        if missing:
            raise SweepError(
                f"{where}backtest.slippage.impact > 0 needs a volume column; {missing} have none"
            )
    if plan.spec.code < 0:
        from btsys.signals.strategies import check_symbols

        top = {k: max(plan.values(k)) for k in ("top_n", "bottom_n")}
        check_symbols(top, len(frames), sorted(frames), where)


# --------------------------------------------------------------------------- kernel inputs
def _encode(plan: Plan, series: Dict[str, list]):
    """Axis arrays for the kernels: kinds, targets, value counts, values, indicator row maps.

    ``series``: ``"rows"`` -> the (family, window) of each indicator row, ``"vol"`` -> the
    vol_target windows, ``"reb"`` -> the rebalance schedules (``xs_momentum``)."""
    spec = plan.spec
    n_slots = max(len(spec.indicators), 1)
    A = len(plan.axes)
    jmax = max((len(a.shown) for a in plan.axes), default=1)
    kinds = np.zeros(A, np.int64)
    targets = np.zeros(A, np.int64)
    nvals = np.array([len(a.shown) for a in plan.axes], np.int64)
    vals = np.zeros((A, jmax))
    rowmap = np.full((A, jmax, n_slots), -1, np.int64)
    for i, a in enumerate(plan.axes):
        vals[i, : len(a.kernel)] = a.kernel
        if a.option == "backtest.size.vol_window":
            kinds[i] = swnb.AX_VOL
            vals[i, : len(a.kernel)] = [series["vol"].index(int(v)) for v in a.kernel]
        elif a.option is not None:
            kinds[i], targets[i] = swnb.AX_PARAM, BY_KEY[a.option].slot
        elif a.param == "rebalance_every":
            kinds[i] = swnb.AX_REB
            vals[i, : len(a.kernel)] = [series["reb"].index(int(v)) for v in a.kernel]
        elif a.param in spec.scalars:
            kinds[i], targets[i] = swnb.AX_SCALAR, spec.scalars.index(a.param)
        else:
            kinds[i] = swnb.AX_ROWS
            for s, (family, wp) in enumerate(spec.indicators):
                if wp == a.param:
                    rowmap[i, : len(a.kernel), s] = [series["rows"].index((family, int(v))) for v in a.kernel]
    rows0 = np.zeros(n_slots, np.int64)
    for s, (family, wp) in enumerate(spec.indicators):
        rows0[s] = series["rows"].index((family, int(plan.values(wp)[0])))
    sp0 = np.array([float(plan.strategy[k]) for k in spec.scalars] or [0.0])
    aux0 = np.zeros(2, np.int64)
    aux0[0] = series["vol"].index(int(plan.values("backtest.size.vol_window", option=True)[0]))
    if spec.code < 0:
        aux0[1] = series["reb"].index(int(plan.values("rebalance_every")[0]))
    p0 = build_params(**plan.kw)
    return kinds, targets, nvals, vals, rowmap, p0, rows0, sp0, aux0


def _series(plan: Plan) -> Dict[str, list]:
    rows = []
    for family, wp in plan.spec.indicators:
        for w in plan.values(wp):
            if (family, int(w)) not in rows:
                rows.append((family, int(w)))
    vol = list(dict.fromkeys(int(v) for v in plan.values("backtest.size.vol_window", option=True)))
    reb = list(dict.fromkeys(int(v) for v in plan.values("rebalance_every"))) if plan.spec.code < 0 else []
    return {"rows": rows, "vol": vol, "reb": reb}


def _needs_vol(plan: Plan) -> bool:
    return float(SIZE_MODE_NAMES["vol_target"]) in plan.values("backtest.size.mode", option=True)


def _table(
    plan: Plan, out: np.ndarray, benchmark_return: float, extra: Optional[dict] = None
) -> pd.DataFrame:
    n = out.shape[0]
    cols: Dict[str, Any] = {}
    inner = 1
    for a in reversed(plan.axes):
        v = np.asarray(a.shown, dtype=object if any(isinstance(x, str) for x in a.shown) else None)
        cols[a.key] = np.tile(np.repeat(v, inner), n // (len(v) * inner))
        inner *= len(v)
    df = pd.DataFrame({a.key: cols[a.key] for a in plan.axes})
    for j, name in enumerate(METRIC_NAMES):
        df[name] = out[:, j]
    df[BENCHMARK_METRICS[0]] = benchmark_return
    for j, name in enumerate(BENCHMARK_METRICS[1:]):
        df[name] = out[:, N_METRICS + j]
    for name, col in (extra or {}).items():
        df[name] = col
    return df


def _days(ts: np.ndarray, daily_returns: bool) -> Tuple[int, int]:
    first = int(ts[0] // DAY_US)
    return first, (int(ts[-1] // DAY_US) - first + 1 if daily_returns else 0)


def _buffers(plan: Plan, ts: np.ndarray, close: np.ndarray, daily_returns: bool):
    """``(out, daily, bench, benchmark_return)`` of a sweep over the traded bars ``ts``/``close``
    (one price per bar, or time x symbol): the result buffers, and buy-and-hold of the same
    bars as every run's benchmark (``metrics.benchmark_metrics``: its daily returns, its return)."""
    init = float(plan.kw["init_cash"])
    hold = buy_and_hold(close, init)
    out = np.empty((plan.n_combinations, N_METRICS + swnb.N_BENCH))
    daily = np.zeros((plan.n_combinations, _days(ts, daily_returns)[1]))
    return out, daily, daily_returns_of(ts, hold, init), float(hold[-1] / init - 1.0)


def evaluate(
    plan: Plan,
    frames: Mapping[str, pd.DataFrame],
    funding: Optional[Mapping[str, pd.DataFrame]] = None,
    daily_returns: bool = False,
    window: Optional[Tuple[int, int]] = None,
    universe: Optional[pd.DataFrame] = None,
    trades: Optional[Mapping[str, TradeSource]] = None,
):
    """Run a checked :class:`Plan` on ``frames`` (symbol -> bar/feature frame); the metrics table
    (one row per combination: the grid's columns, then ``enums.METRIC_NAMES`` and
    ``metrics.BENCHMARK_METRICS``, as in a run's ``metrics``; with ``intrabar=ticks`` then
    ``INTRABAR_METRICS``, with limit entries ``orders_expired``) and, with ``daily_returns``, the
    daily returns (index: UTC day start in µs, one column per row).

    ``window``: ``(start, stop)`` bars (one symbol) or merged-timeline rows (several, or with a
    universe) to trade. ``universe``: a dynamic universe's membership table (as
    :func:`btsys.backtest.portfolio.simulate_portfolio` takes it): members trade, on the portfolio
    path, as the run does. ``trades``: ``{symbol: trade source}`` for ``intrabar=ticks``
    (:mod:`btsys.backtest.sweep_runs` runs each combination; the trades of a bar are read once)."""
    extra = None
    if plan.spec.code >= 0 and len(frames) == 1 and universe is None:
        out, daily, ts, bench_return, extra = _evaluate_single(
            plan, frames, funding, daily_returns, window, trades
        )
    else:
        out, daily, ts, bench_return = _evaluate_portfolio(
            plan, frames, funding, daily_returns, window, universe
        )
    df = _table(plan, out, bench_return, extra)
    if not daily_returns:
        return df
    first, n_days = _days(ts, True)
    days = (first + np.arange(n_days, dtype=np.int64)) * DAY_US
    return df, pd.DataFrame(daily.T, index=pd.Index(days, name="ts"))


def _evaluate_single(plan, frames, funding, daily_returns, window, trades=None):
    ((sym, frame),) = frames.items()
    a = _bars_arrays(frame, f"bars of {sym}")
    c, o, h, lo = ohlc_arrays(a["close"], a["open"], a["high"], a["low"], "sweep")
    n = c.shape[0]
    t = bar_times(a["ts_close"], n)
    w = window_slice(window if window is not None else (0, n), n)
    if runs_each(plan.kw):
        out, daily, bench, bench_return = _buffers(plan, t[w], c[w], daily_returns)
        f = funding.get(sym) if funding else None
        out, extra = evaluate_runs(plan, sym, frame, f, w, daily, (trades or {}).get(sym))
        return out, daily, t[w], bench_return, extra
    vol = volume_array(a["volume"], n)
    fts, frate = _funding_arrays(funding.get(sym) if funding else None)
    fund = funding_per_bar(t, fts, frate) if plan.charge_funding else np.zeros(0)
    series = _series(plan)
    ind = np.empty((max(len(series["rows"]), 1), n))
    indicators(series["rows"], c, ind)
    vol_all = np.zeros((len(series["vol"]), 0))
    if _needs_vol(plan):
        vol_all = np.stack([realised_vol(c, t, v) for v in series["vol"]])
    enc = _encode(plan, series)
    out, daily, bench, bench_return = _buffers(plan, t[w], c[w], daily_returns)
    swnb.sweep_single_nb(
        t, o, h, lo, c, vol, fund, vol_all, plan.spec.code, ind, *enc, w.start, w.stop,
        numba.get_num_threads(), bench, np.zeros(0, order_dt), np.zeros(0, trade_dt), out, daily,
    )  # fmt: skip
    return out, daily, t[w], bench_return, None


def _padded(tl: Timeline, key: str, fill, dtype) -> np.ndarray:
    nmax = max(len(a["close"]) for a in tl.arrs.values())
    out = np.full((len(tl.symbols), nmax), fill, dtype=dtype)
    for k, s in enumerate(tl.symbols):
        v = tl.rows[s] if key == "rows" else np.asarray(tl.arrs[s][key], np.float64)
        out[k, : len(v)] = v
    return out


def _evaluate_portfolio(plan, frames, funding, daily_returns, window, universe=None):
    one_symbol_only(plan.kw, "a portfolio sweep")
    tl = timeline(frames, funding if plan.charge_funding else None)
    member = member_grid(universe, tl.symbols, tl.ts)
    if max(plan.values("backtest.slippage.impact", option=True)) > 0 and tl.volume.shape[0] == 0:
        raise SweepError("backtest.slippage.impact > 0 needs a `volume` column in every bar table")
    T, K = len(tl.ts), len(tl.symbols)
    w = window_slice(window if window is not None else (0, T), T)
    closes = _padded(tl, "close", 1.0, np.float64)
    rowsof = _padded(tl, "rows", 0, np.int64)
    nbars = np.array([len(tl.rows[s]) for s in tl.symbols], np.int64)
    blo = np.array([np.searchsorted(tl.rows[s], w.start) for s in tl.symbols], np.int64)
    bhi = np.array([np.searchsorted(tl.rows[s], w.stop) for s in tl.symbols], np.int64)
    series = _series(plan)
    ind = np.full((K, max(len(series["rows"]), 1), closes.shape[1]), np.nan)
    for k in range(K):
        indicators(series["rows"], closes[k, : nbars[k]], ind[k, :, : nbars[k]])
    vol_all = np.zeros((len(series["vol"]), 0, 0))
    if _needs_vol(plan):
        vol_all = np.stack([tl.vol_target(v) for v in series["vol"]])
    reb_all = np.zeros((1, T), np.bool_)
    if series["reb"]:
        reb_all = np.stack([rebalance_rows(tl.ts, r) for r in series["reb"]])
    enc = _encode(plan, series)
    out, daily, bench, bench_return = _buffers(plan, tl.ts[w], tl.close[w], daily_returns)
    swnb.sweep_portfolio_nb(
        tl.ts, tl.has, tl.open, tl.high, tl.low, tl.close, tl.volume, tl.funding, vol_all, member,
        plan.spec.code, closes, nbars, rowsof, blo, bhi, ind, reb_all, *enc, w.start, w.stop,
        numba.get_num_threads(), bench, np.zeros(0, order_dt), np.zeros(0, trade_dt), out, daily,
    )  # fmt: skip
    return out, daily, tl.ts[w], bench_return


# --------------------------------------------------------------------------- entry points
def sweep_frames(
    cfg: Any,
    frames: Mapping[str, pd.DataFrame],
    grid: Mapping[str, Sequence],
    funding: Optional[Mapping[str, pd.DataFrame]] = None,
    daily_returns: bool = False,
    window: Optional[Tuple[int, int]] = None,
    universe: Optional[pd.DataFrame] = None,
    trades: Optional[Mapping[str, TradeSource]] = None,
):
    """Sweep ``grid`` (dotted config keys -> lists, as ``sweep.grid`` holds them, e.g.
    ``{"strategy.fast": [5, 10], "backtest.risk.stop_loss": [0, 0.02]}``) over the run config
    ``cfg`` on ``frames`` (symbol -> frame, as the backtest stage loads them). Keys not in the grid
    keep their config values. Each row equals the backtest stage's backtest of ``cfg`` with that
    combination set (``universe``: the run's membership table; ``trades``: the trade sources of
    ``backtest.intrabar=ticks``); parameter columns are in the config's units. See :func:`evaluate`."""
    plan = plan_from_config(cfg, grid)
    check_frames(plan, frames)
    return evaluate(plan, frames, funding, daily_returns, window, universe, trades)


def sweep(
    close,
    grid: Mapping[str, Sequence],
    open=None,
    high=None,
    low=None,
    strategy: str = "ma_cross",
    *,
    ts=None,
    freq=None,
    volume=None,
    funding_ts=None,
    funding_rate=None,
    daily_returns: bool = False,
    window: Optional[Tuple[int, int]] = None,
    ticks: Any = None,
    **fixed: Any,
):
    """Sweep one symbol's arrays: ``grid`` maps strategy parameters (``fast``, ``window``, ...) and
    :func:`~btsys.backtest.simulate` keywords (``fees``, ``stop_loss``, ``direction``, ...) to
    lists; ``fixed`` sets the others (defaults: the strategy's schema and ``simulate``'s).

    ``close``, ``open``, ``high``, ``low`` and ``volume`` take pandas inputs as ``simulate`` does (a
    DatetimeIndex gives ``ts``; ``freq=`` spaces bars without times; with neither, the calendar
    metrics are NaN and ``daily_returns``, funding and ``vol_target`` sizing are refused).

    ``intrabar="ticks"`` (with ``ticks``: a tick table, ``close`` then the bar table, or a trade
    source, as ``simulate`` takes them) and ``order_type="limit"`` run each combination through
    ``simulate`` (:mod:`btsys.backtest.sweep_runs`), the trades of a bar read once.

    Row ``i`` equals ``simulate`` of the strategy's signals (``generate_signals``) with that
    combination. Returns the table (and the daily returns) as :func:`evaluate`."""
    close_in = close
    from btsys.signals import strategy_params

    close, arrs, ts = prices_and_clock(
        close,
        dict(open=open, high=high, low=low, volume=volume),
        ts,
        freq,
        "sweep",
        needs_times="daily_returns=True" if daily_returns else None,
    )
    open, high, low, volume = arrs["open"], arrs["high"], arrs["low"], arrs["volume"]
    spec = _strategy_spec(strategy)
    if not isinstance(grid, Mapping):
        raise SweepError("sweep: `grid` must be a mapping of name -> list of values")
    keys, values = grid_axes(grid, "sweep grid")
    base = strategy_params({"name": strategy, **{k: fixed.pop(k) for k in spec.param_names if k in fixed}})
    unknown = set(fixed) - set(KW_DEFAULTS)
    if unknown:
        raise SweepError(f"sweep: unknown option(s) {sorted(unknown)}")
    kw = {**KW_DEFAULTS, **fixed}
    if kw["size_mode"] is None:
        kw["size_mode"] = "all" if math.isinf(float(kw["size"])) else "qty"
    build_params(**kw)  # checks the fixed options (simulate's messages)
    bars_table = close_in if isinstance(close_in, pd.DataFrame) else None
    src = trade_source(BY_KW["intrabar"].check(kw["intrabar"], "simulate"), ticks, bars_table)
    strat = {p: base[p] if p in keys else check_value(spec, p, base[p]) for p in spec.param_names}
    plan = _plan(
        spec, strat, kw, funding_ts is not None, list(zip(keys, values, strict=True)), True, "sweep: "
    )
    if ts is None and (_needs_vol(plan) or funding_ts is not None or funding_rate is not None):
        what = "size_mode='vol_target'" if _needs_vol(plan) else "funding"
        raise SweepError(f"sweep: {what} needs bar times; give `ts`, a DatetimeIndex or `freq=`")
    c = np.asarray(close, dtype=np.float64)
    n = c.shape[0]
    frame = pd.DataFrame(
        {
            "ts_close": bar_times(ts, n),
            "open": c if open is None else open,
            "high": c if high is None else high,
            "low": c if low is None else low,
            "close": c,
        }
    )
    if volume is not None:
        frame["volume"] = volume
    if src is not None and bars_table is not None and "n_ticks" in bars_table.columns:
        frame["n_ticks"] = bars_table["n_ticks"].to_numpy()  # the trade cache's batches
    frames = {"": frame}
    check_frames(plan, frames, "sweep: ")
    fund = None
    if funding_ts is not None or funding_rate is not None:
        if funding_ts is None or funding_rate is None:
            raise SweepError("sweep: give both `funding_ts` and `funding_rate`, or neither")
        fund = {"": pd.DataFrame({"ts": np.asarray(funding_ts), "rate": np.asarray(funding_rate)})}
    out = evaluate(plan, frames, fund, daily_returns, window, trades={"": src} if src else None)
    if ts is None:  # a zero clock is one "day": no calendar metric may be computed from it
        out[[k for k in CALENDAR_METRICS if k in out.columns]] = np.nan
    return out
