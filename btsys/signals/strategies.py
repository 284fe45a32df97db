"""Rule strategies: from a strategy config and a feature frame to entry/exit signals.

Conventions shared by every strategy:

* A signal at bar ``t`` is computed from information available at the close of bar ``t`` (the
  frame's rows ``<= t``). The backtest fills at the next open by default, so nothing here looks
  ahead; the look-ahead tests truncate and perturb the frame after ``t`` for every strategy.
* Crossover-style strategies emit *edges*: ``entries[t]`` is True on the bar where the long
  condition becomes true (a condition that is already true when its indicators finish warming up
  counts as becoming true), ``exits[t]`` on the bar where it stops being true. Short signals are
  the mirror image; whether they are traded is ``backtest.direction``.
* The ``rule`` strategy emits its expressions' values bar by bar (levels, not edges).
* Indicators a strategy needs are computed on the fly from the bar columns (not cached).
* The signals of ``ma_cross``, ``ema_cross``, ``rsi_reversion``, ``bollinger_breakout``,
  ``momentum`` (and the ranking of ``xs_momentum``) come from one numba kernel per strategy
  (``btsys.signals._strategies_nb``, described by ``btsys.signals.specs``): the kernel and Spark
  sweeps call the same kernels, so a sweep row trades exactly the run's signals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import pandas as pd

from btsys import config as C
from btsys.config import to_plain
from btsys.features import FeatureError, compute_feature, parse_feature_name
from btsys.signals import _strategies_nb as snb
from btsys.signals.base import Signals
from btsys.signals.ml import ml_signals
from btsys.signals.rules import RuleError, evaluate_rule, parse_rule, rule_names
from btsys.signals.specs import SPECS, StrategyError, check_params, close_array, rule_signals


# --------------------------------------------------------------------------- config access
def strategy_params(strategy_cfg: Any) -> Dict[str, Any]:
    """A plain dict of the strategy config, defaults filled from its schema, keys validated.

    Accepts a Hydra node, a schema dataclass or a plain dict with ``name``.
    """
    strategy_cfg = to_plain(strategy_cfg)
    if not isinstance(strategy_cfg, Mapping):
        raise StrategyError(
            f"strategy config must be a mapping with 'name', got {type(strategy_cfg).__name__}"
        )
    name = strategy_cfg.get("name")
    if name not in STRATEGIES:
        raise StrategyError(f"strategy.name {name!r} is not a known strategy; known: {sorted(STRATEGIES)}")
    schema = STRATEGIES[name].schema
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = set(strategy_cfg) - set(fields)
    if unknown:
        raise StrategyError(f"strategy {name}: unknown keys {sorted(unknown)}; allowed: {sorted(fields)}")
    out: Dict[str, Any] = {}
    for k, f in fields.items():
        if k in strategy_cfg:
            v = strategy_cfg[k]
        elif f.default is not dataclasses.MISSING and f.default != "???":
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            v = f.default_factory()  # type: ignore[misc]
            if dataclasses.is_dataclass(v):
                v = dataclasses.asdict(v)
        else:
            raise StrategyError(f"strategy {name}: missing required key {k!r}")
        if v == "???":
            raise StrategyError(f"strategy {name}: missing required key {k!r}")
        out[k] = getattr(v, "value", v)
    return out


def _feature(
    frame: pd.DataFrame, fn: str, window: int, params: Optional[dict] = None, who: str = "strategy"
) -> np.ndarray:
    try:
        return compute_feature(frame, fn, window, params)
    except FeatureError as e:
        raise StrategyError(f"{who}: {e}") from None


# --------------------------------------------------------------------------- strategies
def _rule_kernel(p: Mapping, frame: pd.DataFrame) -> Signals:
    """A rule strategy's signals from its kernel (``btsys.signals._strategies_nb``), the same
    kernel the kernel and Spark sweeps call; the parameters are checked first (config keys in
    the messages)."""
    spec = SPECS[p["name"]]
    vals = check_params(spec, p)
    (le, lx, se, sx), ind = rule_signals(spec, vals, close_array(frame, f"strategy {p['name']}"))
    return Signals(entries=le, exits=lx, short_entries=se, short_exits=sx, indicators=ind)


def rule(p: Mapping, frame: pd.DataFrame) -> Signals:
    """Signals from the ``entry``/``exit`` (and optional short) expressions of :mod:`btsys.signals.rules`."""
    exprs = {k: p.get(k) or "" for k in ("entry", "exit", "short_entry", "short_exit")}
    for k in ("entry", "exit"):
        if not str(exprs[k]).strip():
            raise StrategyError(f"strategy rule: {k} must be a non-empty expression")
    env = rule_columns(frame, [e for e in exprs.values() if str(e).strip()])
    n = len(frame)
    out = {}
    for k, e in exprs.items():
        if str(e).strip():
            try:
                out[k] = evaluate_rule(str(e), env, n)
            except RuleError as err:
                raise StrategyError(f"strategy rule: {k}: {err}") from None
        else:
            out[k] = None
    return Signals(
        entries=out["entry"],
        exits=out["exit"],
        short_entries=out["short_entry"],
        short_exits=out["short_exit"],
    )


def rule_columns(frame: pd.DataFrame, exprs) -> Dict[str, np.ndarray]:
    """The arrays a set of rules refers to: numeric frame columns, or library features computed on the fly.

    Raises :class:`StrategyError` naming the rule and the unknown name.
    """
    numeric = {
        c
        for c in frame.columns
        if isinstance(c, str)
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    }
    env: Dict[str, np.ndarray] = {}
    for e in exprs:
        try:
            parse_rule(
                str(e),
                lambda nm: nm in numeric or parse_feature_name(nm) is not None or nm in ("True", "False"),
            )
            names = rule_names(str(e))
        except RuleError as err:
            raise StrategyError(f"strategy rule: {err}") from None
        for nm in names:
            if nm in env:
                continue
            if nm in numeric:
                env[nm] = frame[nm].to_numpy(dtype=np.float64)
            else:
                s = parse_feature_name(nm)
                env[nm] = _feature(frame, s.fn, s.window, s.params, who=f"strategy rule ({nm})")
    return env


def _xs(p: Mapping, frame: pd.DataFrame) -> Signals:
    raise StrategyError(
        "strategy xs_momentum is cross-sectional: call btsys.signals.generate_scores("
        "strategy_cfg, {symbol: frame}) and btsys.backtest simulate_cross_sectional"
    )


@dataclass(frozen=True)
class Strategy:
    """One strategy: its config schema (``btsys.config``, registered as ``strategy=<name>`` with
    ``conf/strategy/<name>.yaml``) and its signal function ``(params, frame) -> Signals``."""

    schema: type
    signals: Callable[[Mapping[str, Any], pd.DataFrame], Signals]

    @property
    def name(self) -> str:
        return self.schema.name


#: Every strategy, by name: the one table (``strategy.name`` -> schema and signal function).
STRATEGIES: Dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(C.MaCrossConfig, _rule_kernel),  # long while SMA(fast) > SMA(slow); short while below
        Strategy(C.EmaCrossConfig, _rule_kernel),  # the same with EMAs
        Strategy(
            C.RsiReversionConfig, _rule_kernel
        ),  # buy below `lower`, sell above `exit`; shorts at `upper`
        Strategy(C.BollingerBreakoutConfig, _rule_kernel),  # long above the upper band until the middle
        Strategy(C.MomentumConfig, _rule_kernel),  # long while the lookback log return > threshold
        Strategy(C.RuleConfig, rule),
        Strategy(C.MlClassifierConfig, ml_signals),
        Strategy(C.XsMomentumConfig, _xs),
    )
}


def generate_signals(strategy_cfg: Any, frame: pd.DataFrame) -> Signals:
    """Signals of a (single-symbol) strategy over a feature frame (bar table + feature columns).

    Parameters
    ----------
    strategy_cfg : DictConfig, dataclass or dict
        The ``strategy`` config node; ``name`` selects the strategy.
    frame : pandas.DataFrame
        One symbol's rows in bar order.
    """
    p = strategy_params(strategy_cfg)
    if not isinstance(frame, pd.DataFrame):
        raise StrategyError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    sig = STRATEGIES[p["name"]].signals(p, frame)
    n = len(frame)
    for k in ("entries", "exits", "short_entries", "short_exits"):
        v = getattr(sig, k)
        if v is not None:
            v = np.ascontiguousarray(v, dtype=bool)
            assert v.shape == (n,), f"{p['name']}: {k} has shape {v.shape}, expected ({n},)"
            setattr(sig, k, v)
    return sig


def generate_scores(strategy_cfg: Any, frames: Mapping[str, pd.DataFrame]) -> Dict[str, np.ndarray]:
    """Cross-sectional scores (``xs_momentum``): per symbol, a float array aligned to its frame.

    ``score[t] = ln(close[t - skip] / close[t - lookback])`` (NaN during the warm-up): the ranking
    at bar ``t`` uses closes up to ``t`` only. Frames of different symbols may have different bar
    times (dollar bars); aligning them in time is the cross-sectional simulator's job.
    """
    p = strategy_params(strategy_cfg)
    if p["name"] != "xs_momentum":
        raise StrategyError(
            f"generate_scores is for cross-sectional strategies (xs_momentum), got {p['name']!r}"
        )
    vals = check_params(SPECS["xs_momentum"], p)
    if not frames:
        raise StrategyError("strategy xs_momentum: no symbols given")
    check_symbols(vals, len(frames), sorted(frames))
    out = {}
    for sym, frame in frames.items():
        c = close_array(frame, f"strategy xs_momentum ({sym})")
        s = np.empty(c.shape[0])
        snb.xs_scores_nb(c, vals["lookback"], vals["skip"], s)
        out[sym] = s
    return out


def check_symbols(vals: Mapping[str, Any], n_symbols: int, symbols=None, where: str = "") -> None:
    """``xs_momentum`` ranks ``top_n + bottom_n`` of the symbols: no more than there are."""
    if vals["top_n"] + vals["bottom_n"] > n_symbols:
        raise StrategyError(
            f"{where}strategy.top_n + strategy.bottom_n = {vals['top_n'] + vals['bottom_n']} exceeds "
            f"the {n_symbols} symbols {symbols or ''}".rstrip()
        )
