"""What each rule strategy is made of: its parameters (types, bounds, constraints), the indicator
series its kernel reads and the scalars it takes (``btsys.signals._strategies_nb``).

One description serves the single run (:func:`rule_signals`), the checks of a config or of every
combination of a sweep grid (:func:`check_params`, :func:`check_grid`: messages name the config
key, ``strategy.fast``) and the sweeps, which compute each distinct indicator series once
(:func:`indicator`) and hand the kernel a row index per slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from btsys.errors import ConfigError
from btsys.signals import _strategies_nb as snb


class StrategyError(ConfigError):
    """A bad strategy config or frame; the message names the key or column."""


@dataclass(frozen=True)
class Param:
    """A numeric strategy parameter: ``integer`` or float, within ``[lo, hi]``."""

    name: str
    integer: bool
    lo: float
    hi: float = math.inf
    lo_open: bool = False


@dataclass(frozen=True)
class Constraint:
    """A check across parameters: ``bad(values) -> bool mask`` (vectorised), ``message(values)``."""

    keys: Tuple[str, ...]
    bad: Callable[..., Any]
    message: Callable[..., str]


@dataclass(frozen=True)
class Spec:
    """A rule strategy: ``code`` of its kernel, parameters, indicator slots ``(family, window
    parameter)``, scalar parameters in kernel order, constraints. ``xs_momentum`` (code -1) is
    cross-sectional: its kernels work on the merged timeline of all symbols."""

    name: str
    code: int
    params: Tuple[Param, ...]
    indicators: Tuple[Tuple[str, str], ...] = ()
    scalars: Tuple[str, ...] = ()
    constraints: Tuple[Constraint, ...] = ()

    @property
    def param_names(self) -> Tuple[str, ...]:
        return tuple(p.name for p in self.params)


def _cross(name: str, family: str) -> Spec:
    return Spec(
        name,
        snb.CROSS,
        (Param("fast", True, 1), Param("slow", True, 1)),
        indicators=((family, "fast"), (family, "slow")),
        constraints=(
            Constraint(
                ("fast", "slow"),
                lambda fast, slow: fast >= slow,
                lambda fast, slow: f"strategy.fast ({fast}) must be smaller than strategy.slow ({slow})",
            ),
        ),
    )


def _ordered(lower, exit, upper):  # noqa: A002 - the config key is `exit`
    return (lower > exit) | (exit > upper)


SPECS: Dict[str, Spec] = {
    "ma_cross": _cross("ma_cross", "sma"),
    "ema_cross": _cross("ema_cross", "ema"),
    "rsi_reversion": Spec(
        "rsi_reversion",
        snb.RSI_REVERSION,
        (
            Param("window", True, 1),
            Param("lower", False, 0.0, 100.0),
            Param("upper", False, 0.0, 100.0),
            Param("exit", False, 0.0, 100.0),
        ),
        indicators=(("rsi", "window"),),
        scalars=("lower", "upper", "exit"),
        constraints=(
            Constraint(
                ("lower", "exit", "upper"),
                _ordered,
                lambda lower, exit, upper: (
                    f"strategy.lower ({lower}) <= strategy.exit ({exit}) <= strategy.upper ({upper}) "
                    "must hold"
                ),
            ),
        ),
    ),
    "bollinger_breakout": Spec(
        "bollinger_breakout",
        snb.BOLLINGER,
        (Param("window", True, 2), Param("k", False, 0.0, lo_open=True)),
        indicators=(("sma", "window"), ("std", "window")),
        scalars=("k",),
    ),
    "momentum": Spec(
        "momentum",
        snb.MOMENTUM,
        (Param("lookback", True, 1), Param("threshold", False, 0.0)),
        indicators=(("log_return", "lookback"),),
        scalars=("threshold",),
    ),
    "xs_momentum": Spec(
        "xs_momentum",
        -1,
        (
            Param("lookback", True, 1),
            Param("skip", True, 0),
            Param("top_n", True, 0),
            Param("bottom_n", True, 0),
            Param("rebalance_every", True, 1),
        ),
        scalars=("lookback", "skip", "top_n", "bottom_n"),  # the sweep kernel's; rebalance: a schedule
        constraints=(
            Constraint(
                ("skip", "lookback"),
                lambda skip, lookback: skip >= lookback,
                lambda skip, lookback: (
                    f"strategy.skip ({skip}) must be smaller than strategy.lookback ({lookback})"
                ),
            ),
            Constraint(
                ("top_n", "bottom_n"),
                lambda top_n, bottom_n: top_n + bottom_n < 1,
                lambda top_n, bottom_n: (
                    f"strategy.top_n + strategy.bottom_n must be >= 1, got {top_n} + {bottom_n}"
                ),
            ),
        ),
    ),
}


# --------------------------------------------------------------------------- checks
def check_value(spec: Spec, name: str, value: Any, where: str = "") -> Any:
    """A checked parameter value (int or float); the message names ``strategy.<name>``."""
    p = next(q for q in spec.params if q.name == name)
    value = value.item() if isinstance(value, np.generic) else value
    key = f"{where}strategy.{name}"
    if p.integer:
        if isinstance(value, bool) or not isinstance(value, int) or value < p.lo or value > p.hi:
            raise StrategyError(f"{key} must be an integer >= {p.lo:g}, got {value!r}")
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise StrategyError(f"{key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(f):
        raise StrategyError(f"{key} must be a finite number, got {value!r}")
    if f < p.lo or (p.lo_open and f == p.lo) or f > p.hi:
        lb = "(" if p.lo_open else "["
        raise StrategyError(f"{key} = {value!r} is out of range {lb}{p.lo:g}, {p.hi:g}]")
    return f


def check_params(spec: Spec, params: Mapping[str, Any], where: str = "") -> Dict[str, Any]:
    """Checked values of every parameter of ``spec`` (one combination)."""
    out = {k: check_value(spec, k, params[k], where) for k in spec.param_names}
    check_grid(spec, {k: [v] for k, v in out.items()}, where)
    return out


def check_grid(spec: Spec, axes: Mapping[str, Sequence], where: str = "") -> None:
    """Check the constraints of ``spec`` for every combination of ``axes`` (name -> checked
    values, one list per parameter); raises naming the first bad combination."""
    for c in spec.constraints:
        arrays = np.meshgrid(*[np.asarray(axes[k]) for k in c.keys], indexing="ij", sparse=True)
        bad = np.broadcast_to(c.bad(*arrays), tuple(len(axes[k]) for k in c.keys))
        if bad.any():
            idx = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            vals = [axes[k][i] for k, i in zip(c.keys, idx, strict=True)]
            raise StrategyError(where + c.message(*vals))


# --------------------------------------------------------------------------- indicators
def close_array(frame: Any, who: str) -> np.ndarray:
    """The frame's close as contiguous float64, checked finite and > 0 (row named)."""
    if "close" not in getattr(frame, "columns", ()):
        raise StrategyError(f"{who}: the frame has no 'close' column")
    c = np.ascontiguousarray(frame["close"].to_numpy(dtype=np.float64))
    bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
    if bad.size:
        raise StrategyError(f"{who}: close must be finite and > 0; row {int(bad[0])} is {c[bad[0]]!r}")
    return c


#: indicator families by their code in ``_strategies_nb.indicator_nb``
FAMILIES = ("sma", "ema", "rsi", "std", "log_return")


def _family_code(family: str) -> int:
    if family not in FAMILIES:
        raise KeyError(f"unknown indicator family {family!r}")
    return FAMILIES.index(family)


def indicator(family: str, close: np.ndarray, window: int) -> np.ndarray:
    """One indicator series of close (the feature library's kernels)."""
    return snb.indicator_nb(close, _family_code(family), window)


def indicators(series: Sequence[Tuple[str, int]], close: np.ndarray, out: np.ndarray) -> None:
    """The indicator series ``[(family, window), ...]`` of close into the rows of ``out``, in parallel
    (each as :func:`indicator`)."""
    families = np.array([_family_code(f) for f, _ in series], dtype=np.int64)
    windows = np.array([w for _, w in series], dtype=np.int64)
    snb.indicators_nb(close, families, windows, out)


def rule_signals(spec: Spec, params: Mapping[str, Any], close: np.ndarray):
    """The four signal arrays (long entry/exit, short entry/exit) of a single-symbol rule strategy
    for checked ``params``, and its indicator series by name."""
    n = close.shape[0]
    ind = np.empty((len(spec.indicators), n))
    for j, (family, wparam) in enumerate(spec.indicators):
        ind[j] = indicator(family, close, int(params[wparam]))
    rows = np.arange(len(spec.indicators), dtype=np.int64)
    sp = np.array([float(params[k]) for k in spec.scalars] or [0.0])
    out = [np.zeros(n, dtype=np.bool_) for _ in range(4)]
    snb.rule_signals_nb(spec.code, close, ind, rows, sp, 0, n, *out)
    names = [f"{family}_{wparam}" for family, wparam in spec.indicators]
    return out, dict(zip(names, ind, strict=True))
