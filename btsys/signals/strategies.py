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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np
import pandas as pd

from btsys.errors import ConfigError
from btsys.features import FeatureError, compute_feature, parse_feature_name
from btsys.signals.rules import RuleError, evaluate_rule, parse_rule, rule_names


class StrategyError(ConfigError):
    """A bad strategy config or frame; the message names the key or column."""


@dataclass
class Signals:
    """Signals aligned to the rows of the frame they were generated from.

    ``entries``/``exits`` (and the optional short pair) are bool arrays: True = act on the
    information at that bar's close. ``size`` is an optional per-bar bet size in [0, 1] (fraction
    of the configured size), ``model_info`` what an ML strategy fitted (see
    :func:`btsys.signals.ml.log_model_info`).
    """

    entries: np.ndarray
    exits: np.ndarray
    short_entries: Optional[np.ndarray] = None
    short_exits: Optional[np.ndarray] = None
    size: Optional[np.ndarray] = None
    model_info: Optional[dict] = None
    indicators: Dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.entries.shape[0])


# --------------------------------------------------------------------------- config access
def strategy_params(strategy_cfg: Any) -> Dict[str, Any]:
    """A plain dict of the strategy config, defaults filled from its schema, keys validated.

    Accepts a Hydra node, a schema dataclass or a plain dict with ``name``.
    """
    from btsys.config import STRATEGY_SCHEMAS, to_plain

    strategy_cfg = to_plain(strategy_cfg)
    if not isinstance(strategy_cfg, Mapping):
        raise StrategyError(
            f"strategy config must be a mapping with 'name', got {type(strategy_cfg).__name__}"
        )
    name = strategy_cfg.get("name")
    if name not in STRATEGY_SCHEMAS:
        raise StrategyError(
            f"strategy.name {name!r} is not a known strategy; known: {sorted(STRATEGY_SCHEMAS)}"
        )
    schema = STRATEGY_SCHEMAS[name]
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


def _int(p: Mapping, key: str, lo: int = 1) -> int:
    v = p[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise StrategyError(f"strategy {p['name']}: {key} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _num(p: Mapping, key: str) -> float:
    v = p[key]
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise StrategyError(f"strategy {p['name']}: {key} must be a number, got {v!r}") from None
    if not np.isfinite(f):
        raise StrategyError(f"strategy {p['name']}: {key} must be finite, got {v!r}")
    return f


def _feature(
    frame: pd.DataFrame, fn: str, window: int, params: Optional[dict] = None, who: str = "strategy"
) -> np.ndarray:
    try:
        return compute_feature(frame, fn, window, params)
    except FeatureError as e:
        raise StrategyError(f"{who}: {e}") from None


# --------------------------------------------------------------------------- helpers
def rising(cond: np.ndarray) -> np.ndarray:
    """True where ``cond`` becomes True (False -> True; a True first bar counts)."""
    cond = np.asarray(cond, dtype=bool)
    out = cond.copy()
    out[1:] &= ~cond[:-1]
    return out


def _gt(a: np.ndarray, b) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(a > b) & ~np.isnan(a) & ~np.isnan(np.asarray(b, dtype=np.float64))


def _state_signals(long_state: np.ndarray, short_state: np.ndarray, **ind) -> Signals:
    """Edges of a long and a short state (a falling long state is a long exit)."""
    return Signals(
        entries=rising(long_state),
        exits=rising(~long_state) & _was(long_state),
        short_entries=rising(short_state),
        short_exits=rising(~short_state) & _was(short_state),
        indicators=ind,
    )


def _was(state: np.ndarray) -> np.ndarray:
    prev = np.zeros_like(state)
    prev[1:] = state[:-1]
    return prev


# --------------------------------------------------------------------------- strategies
def _cross(p: Mapping, frame: pd.DataFrame, fn: str) -> Signals:
    fast, slow = _int(p, "fast"), _int(p, "slow")
    if fast >= slow:
        raise StrategyError(f"strategy {p['name']}: fast ({fast}) must be smaller than slow ({slow})")
    f = _feature(frame, fn, fast, who=f"strategy {p['name']}")
    s = _feature(frame, fn, slow, who=f"strategy {p['name']}")
    return _state_signals(_gt(f, s), _gt(s, f), fast=f, slow=s)


def ma_cross(p: Mapping, frame: pd.DataFrame) -> Signals:
    """Long while SMA(fast) > SMA(slow) of close; short while below."""
    return _cross(p, frame, "sma")


def ema_cross(p: Mapping, frame: pd.DataFrame) -> Signals:
    """Long while EMA(fast) > EMA(slow) of close; short while below."""
    return _cross(p, frame, "ema")


def rsi_reversion(p: Mapping, frame: pd.DataFrame) -> Signals:
    """Buy when RSI falls below ``lower``, sell when it rises above ``exit``; shorts mirrored at ``upper``."""
    w = _int(p, "window")
    lower, upper, ex = _num(p, "lower"), _num(p, "upper"), _num(p, "exit")
    if not 0 <= lower <= ex <= upper <= 100:
        raise StrategyError(
            f"strategy rsi_reversion: need 0 <= lower ({lower}) <= exit ({ex}) <= upper ({upper}) <= 100"
        )
    r = _feature(frame, "rsi", w, who="strategy rsi_reversion")
    return Signals(
        entries=rising(_gt(lower, r)),
        exits=rising(_gt(r, ex)),
        short_entries=rising(_gt(r, upper)),
        short_exits=rising(_gt(ex, r)),
        indicators={"rsi": r},
    )


def bollinger_breakout(p: Mapping, frame: pd.DataFrame) -> Signals:
    """Long on a close above the upper band until a close below the middle band; shorts mirrored."""
    w, k = _int(p, "window", 2), _num(p, "k")
    if k <= 0:
        raise StrategyError(f"strategy bollinger_breakout: k must be > 0, got {k}")
    who = "strategy bollinger_breakout"
    mid = _feature(frame, "bb_mid", w, {"k": k}, who)
    up = _feature(frame, "bb_upper", w, {"k": k}, who)
    lo = _feature(frame, "bb_lower", w, {"k": k}, who)
    c = _close(frame, who)
    return Signals(
        entries=rising(_gt(c, up)),
        exits=rising(_gt(mid, c)),
        short_entries=rising(_gt(lo, c)),
        short_exits=rising(_gt(c, mid)),
        indicators={"bb_mid": mid, "bb_upper": up, "bb_lower": lo},
    )


def momentum(p: Mapping, frame: pd.DataFrame) -> Signals:
    """Long while the ``lookback``-bar log return exceeds ``threshold``; short below ``-threshold``."""
    lb, th = _int(p, "lookback"), _num(p, "threshold")
    if th < 0:
        raise StrategyError(f"strategy momentum: threshold must be >= 0, got {th}")
    r = _feature(frame, "log_return", lb, who="strategy momentum")
    return _state_signals(_gt(r, th), _gt(-th, r), momentum=r)


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


def _close(frame: pd.DataFrame, who: str) -> np.ndarray:
    if "close" not in frame.columns:
        raise StrategyError(f"{who}: the frame has no 'close' column")
    return frame["close"].to_numpy(dtype=np.float64)


def _ml(p: Mapping, frame: pd.DataFrame) -> Signals:
    from btsys.signals.ml import ml_signals

    return ml_signals(p, frame)


def _xs(p: Mapping, frame: pd.DataFrame) -> Signals:
    raise StrategyError(
        "strategy xs_momentum is cross-sectional: call btsys.signals.generate_scores("
        "strategy_cfg, {symbol: frame}) and btsys.backtest simulate_cross_sectional"
    )


STRATEGIES = {
    "ma_cross": ma_cross,
    "ema_cross": ema_cross,
    "rsi_reversion": rsi_reversion,
    "bollinger_breakout": bollinger_breakout,
    "momentum": momentum,
    "rule": rule,
    "ml_classifier": _ml,
    "xs_momentum": _xs,
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
    sig = STRATEGIES[p["name"]](p, frame)
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
    lb, skip = _int(p, "lookback"), _int(p, "skip", 0)
    _int(p, "top_n", 0), _int(p, "bottom_n", 0), _int(p, "rebalance_every")
    if skip >= lb:
        raise StrategyError(f"strategy xs_momentum: skip ({skip}) must be smaller than lookback ({lb})")
    if not frames:
        raise StrategyError("strategy xs_momentum: no symbols given")
    if p["top_n"] + p["bottom_n"] > len(frames):
        raise StrategyError(
            f"strategy xs_momentum: top_n + bottom_n = {p['top_n'] + p['bottom_n']} exceeds "
            f"the {len(frames)} symbols {sorted(frames)}"
        )
    out = {}
    for sym, frame in frames.items():
        c = _close(frame, f"strategy xs_momentum ({sym})")
        if (c <= 0).any() or not np.isfinite(c).all():
            raise StrategyError(
                f"strategy xs_momentum ({sym}): close must be finite and > 0 "
                f"(row {int(np.flatnonzero(~(c > 0) | ~np.isfinite(c))[0])})"
            )
        s = np.full(c.shape[0], np.nan)
        if c.shape[0] > lb:
            s[lb:] = np.log(c[lb - skip : c.shape[0] - skip] / c[: c.shape[0] - lb])
        out[sym] = s
    return out
