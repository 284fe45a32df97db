"""The table of backtest options: the one place that knows each option of the ``backtest`` config.

Every row of :data:`OPTIONS` names an option's config path (``backtest.fees.taker``), its kernel
parameter slot (``enums.Param``), its :func:`~btsys.backtest.simulate` keyword (``fees``), its unit,
its bounds, whether a kernel/Spark sweep may vary it, and its one default. From the table come:

* the config -> keyword mapping (:func:`options_from_config`) and the keyword -> kernel mapping
  (:func:`build_params`);
* the input checks and their messages, which name the config key (or the keyword, for direct
  :func:`simulate` calls) and the unit;
* the sweepable set (:data:`SWEEPABLE`);
* the defaults: the config schema (``btsys.config``), ``conf/backtest/default.yaml`` and
  ``simulate``'s keyword defaults agree with :data:`OPTIONS` (``tests/test_options.py``).

Keyword values are in kernel units; config values in the config's units (``slippage.bps`` is in
basis points, the keyword ``slippage`` a fraction: kernel value = config value / ``divisor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np

from btsys.backtest.enums import (
    DIRECTION_NAMES,
    FILL_NAMES,
    FILL_RULE_NAMES,
    INTRABAR_NAMES,
    N_PARAMS,
    ORDER_TYPE_NAMES,
    SIZE_MODE_NAMES,
    Param,
)
from btsys.errors import ConfigError

INF = math.inf


class OptionError(ConfigError):
    """A bad backtest option; the message names the config key (or the ``simulate`` keyword)."""


@dataclass(frozen=True)
class Option:
    """One backtest option (a row of the table).

    ``lo``/``hi`` bound the config value (``lo_open``: ``lo`` excluded; ``inf_ok``: ``inf`` means
    "off" and is allowed); ``integer`` options take whole numbers; ``choices`` maps the names of
    an enumerated option to their kernel codes. ``slot`` is None for options that are not in the
    kernel's parameter vector (``vol_window`` selects a volatility series, ``funding`` whether
    funding rates are passed).
    """

    key: str
    kw: Optional[str]
    slot: Optional[int]
    unit: str
    default: Any
    lo: float = 0.0
    hi: float = INF
    lo_open: bool = False
    inf_ok: bool = False
    integer: bool = False
    choices: Optional[Mapping[str, int]] = None
    divisor: float = 1.0
    sweepable: bool = True

    def name(self, where: str) -> str:
        """How an error names the option: the config key, or the keyword for ``simulate``."""
        if where == "simulate":
            return f"simulate: `{self.kw}` (config {self.key})"
        return f"{where}{self.key}"

    def check(self, value: Any, where: str = "") -> Any:
        """The validated value (a choice name, a bool, or a float in the units of ``where``).

        ``where`` is ``"simulate"`` for keyword values (kernel units), else a prefix for the
        config key in messages (``""``, ``"sweep.grid: "``, ``"hydra override "``).
        """
        value = getattr(value, "value", value)  # enums by value
        if self.choices is not None:
            if value not in self.choices:
                raise OptionError(f"{self.name(where)} must be one of {sorted(self.choices)}, got {value!r}")
            return value
        if isinstance(self.default, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise OptionError(f"{self.name(where)} must be true or false, got {value!r}")
            return bool(value)
        if isinstance(value, (bool, np.bool_)):
            raise OptionError(f"{self.name(where)} must be a number ({self.unit}), got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{self.name(where)} must be a number ({self.unit}), got {value!r}") from None
        d = self.divisor if where == "simulate" else 1.0
        lo, hi = self.lo / d, self.hi / d
        if math.isnan(f) or (math.isinf(f) and not (self.inf_ok and f > 0)):
            raise OptionError(f"{self.name(where)} must be finite, got {value!r} ({self.unit})")
        if f < lo or (self.lo_open and f == lo) or f > hi:
            lb = "(" if self.lo_open else "["
            rb = "]" if (self.inf_ok or hi < INF) else ")"
            raise OptionError(
                f"{self.name(where)} = {value!r} is out of range {lb}{lo:g}, {hi:g}{rb} ({self.unit})"
            )
        if self.integer and f != int(f):
            raise OptionError(f"{self.name(where)} must be a whole number ({self.unit}), got {value!r}")
        return f

    def kernel(self, config_value: Any) -> float:
        """Kernel parameter value of a checked config value."""
        if self.choices is not None:
            return float(self.choices[config_value])
        return float(config_value) / self.divisor if self.divisor != 1.0 else float(config_value)


_FRACTION = "fraction (0.001 = 0.1 %)"
#: The backtest options; ``backtest.split`` (walk-forward windows) is not an option of one backtest.
OPTIONS: tuple[Option, ...] = (
    Option("backtest.init_cash", "init_cash", Param.INIT_CASH, "quote currency", 10_000.0, lo_open=True),
    Option("backtest.fill", "fill", Param.FILL, "next_open | close", "next_open", choices=FILL_NAMES),
    # the trades of the bars (engine.simulate's ``ticks``) are given or not: no kernel slot
    Option(
        "backtest.intrabar", "intrabar", None, "ohlc | ticks", "ohlc", choices=INTRABAR_NAMES, sweepable=False
    ),
    Option(
        "backtest.orders.type",
        "order_type",
        Param.ORDER_TYPE,
        "market | limit",
        "market",
        choices=ORDER_TYPE_NAMES,
        sweepable=False,  # limit entries: single-symbol runs only
    ),
    Option(
        "backtest.orders.offset_bps",
        "limit_offset",
        Param.LIMIT_OFFSET,
        "basis points of the signal close",
        0.0,
        hi=1e4,
        divisor=1e4,
        sweepable=False,  # limit entries: single-symbol runs only
    ),
    Option(
        "backtest.orders.time_in_force_bars",
        "time_in_force",
        Param.TIME_IN_FORCE,
        "bars",
        1,
        lo=1.0,
        integer=True,
        sweepable=False,  # limit entries: single-symbol runs only
    ),
    Option(
        "backtest.orders.fill_rule",
        "fill_rule",
        Param.FILL_RULE,
        "through | touch",
        "through",
        choices=FILL_RULE_NAMES,
        sweepable=False,  # a fill convention, not a strategy parameter
    ),
    Option(
        "backtest.direction",
        "direction",
        Param.DIRECTION,
        "long | short | both",
        "long",
        choices=DIRECTION_NAMES,
    ),
    Option("backtest.fees.taker", "fees", Param.FEE, _FRACTION + " of notional", 0.0005, hi=1.0),
    # resting limits pay it: the take profit and limit entries
    Option(
        "backtest.fees.maker",
        "maker_fee",
        Param.MAKER_FEE,
        _FRACTION,
        0.0002,
        lo=-1.0,
        hi=1.0,
        sweepable=False,
    ),
    Option("backtest.fees.fixed", "fee_fixed", Param.FEE_FIXED, "quote currency per order", 0.0),
    Option("backtest.fees.min_fee", "min_fee", Param.MIN_FEE, "quote currency per order", 0.0),
    Option(
        "backtest.slippage.bps", "slippage", Param.SLIPPAGE, "basis points of price", 1.0, hi=1e4, divisor=1e4
    ),
    Option(
        "backtest.slippage.impact", "slippage_impact", Param.IMPACT, "coefficient of (qty / bar volume)", 0.0
    ),
    Option(
        "backtest.slippage.impact_exponent",
        "impact_exponent",
        Param.IMPACT_EXP,
        "exponent",
        0.5,
        lo_open=True,
    ),
    Option("backtest.size.mode", "size_mode", Param.SIZE_MODE, "sizing mode", "all", choices=SIZE_MODE_NAMES),
    Option(
        "backtest.size.value",
        "size",
        Param.SIZE,
        "qty | notional | fraction | annual vol, by mode",
        1.0,
        lo_open=True,
        inf_ok=True,
    ),
    Option("backtest.size.min_qty", "min_qty", Param.MIN_QTY, "base quantity", 0.0),
    Option("backtest.size.step", "step", Param.STEP, "base quantity", 0.0),
    Option("backtest.size.vol_window", "vol_window", None, "bars", 50, lo=2.0, integer=True),
    Option("backtest.leverage", "leverage", Param.LEVERAGE, "x (notional / margin)", 1.0, lo_open=True),
    Option("backtest.maintenance_margin", "maintenance_margin", Param.MMR, _FRACTION, 0.005, hi=0.999),
    Option(
        "backtest.risk.stop_loss",
        "stop_loss",
        Param.STOP_LOSS,
        _FRACTION + " from entry; 0 = off",
        0.0,
        hi=1.0,
    ),
    Option(
        "backtest.risk.take_profit", "take_profit", Param.TAKE_PROFIT, _FRACTION + " from entry; 0 = off", 0.0
    ),
    Option(
        "backtest.risk.trailing_stop",
        "trailing_stop",
        Param.TRAILING_STOP,
        _FRACTION + " from the best price; 0 = off",
        0.0,
        hi=1.0,
    ),
    Option("backtest.risk.time_stop_bars", "time_stop", Param.TIME_STOP, "bars; 0 = off", 0, integer=True),
    Option("backtest.risk.cooldown_bars", "cooldown", Param.COOLDOWN, "bars; 0 = off", 0, integer=True),
    Option(
        "backtest.risk.max_position",
        "max_position",
        Param.MAX_POSITION,
        "quote notional; inf = off",
        INF,
        lo_open=True,
        inf_ok=True,
    ),
    Option(
        "backtest.risk.max_leverage",
        "max_leverage",
        Param.MAX_LEVERAGE,
        "x (notional / equity); inf = off",
        INF,
        lo_open=True,
        inf_ok=True,
    ),
    Option(
        "backtest.risk.max_drawdown",
        "max_drawdown",
        Param.MAX_DRAWDOWN,
        _FRACTION + " from the peak; 0 = off",
        0.0,
        hi=1.0,
    ),
    Option("backtest.funding", None, None, "charge the ingested funding rates", False, sweepable=False),
)

BY_KEY: Dict[str, Option] = {o.key: o for o in OPTIONS}
BY_KW: Dict[str, Option] = {o.kw: o for o in OPTIONS if o.kw}
#: Config keys a kernel or Spark sweep may vary (``sweep.grid``).
SWEEPABLE = tuple(o.key for o in OPTIONS if o.sweepable)
#: ``backtest`` config keys that are not single-backtest options.
OTHER_KEYS = ("split",)


def _get(node: Any, dotted: str, default: Any = None) -> Any:
    """``node.a.b`` for OmegaConf nodes, dataclasses and dicts alike (enums by value)."""
    cur = node
    for part in dotted.split("."):
        if cur is None:
            break
        cur = cur.get(part) if isinstance(cur, Mapping) else getattr(cur, part, None)
    v = default if cur is None else cur
    return getattr(v, "value", v)


def _unknown_keys(bt_cfg: Any) -> None:
    if not isinstance(bt_cfg, Mapping):
        return
    known: Dict[str, set] = {}
    for o in OPTIONS:
        parts = o.key.split(".")[1:]
        known.setdefault(parts[0], set())
        if len(parts) > 1:
            known[parts[0]].add(parts[1])
    for k, v in bt_cfg.items():
        if k in OTHER_KEYS:
            continue
        if k not in known:
            raise OptionError(
                f"backtest.{k} is not a backtest option; known: {sorted(known) + list(OTHER_KEYS)}"
            )
        if known[k] and isinstance(v, Mapping):
            bad = set(v) - known[k]
            if bad:
                raise OptionError(
                    f"backtest.{k}.{sorted(bad)[0]} is not a backtest option; known: {sorted(known[k])}"
                )


def config_values(bt_cfg: Any, where: str = "") -> Dict[str, Any]:
    """Every option's checked config value, ``{config key: value}`` (defaults for missing keys)."""
    _unknown_keys(bt_cfg)
    return {o.key: o.check(_get(bt_cfg, o.key.split(".", 1)[1], o.default), where) for o in OPTIONS}


def check_combination(values: Mapping[str, Any], where: str = "") -> None:
    """Checks that involve several options (one combination of checked config values)."""
    mode = values["backtest.size.mode"]
    if mode != "all" and math.isinf(values["backtest.size.value"]):
        raise OptionError(f"{where}backtest.size.value must be finite with backtest.size.mode={mode}")


def keywords(values: Mapping[str, Any]) -> dict:
    """``simulate`` keyword options (kernel units) of checked config values."""
    out = {}
    for o in OPTIONS:
        if o.kw is None:
            continue
        v = values[o.key]
        out[o.kw] = v if (o.choices is not None or o.integer) else o.kernel(v)
    if values["backtest.size.mode"] == "all":
        out["size"] = INF  # all available cash: the value is not used
    return out


def options_from_config(bt_cfg: Any, where: str = "") -> dict:
    """The :func:`~btsys.backtest.simulate` keyword options of a ``backtest`` config node.

    Every value is checked here with the config key in the message. ``funding`` (bool) is not a
    keyword: the caller passes the funding table or not.
    """
    values = config_values(bt_cfg, where)
    check_combination(values, where)
    return keywords(values)


#: ``simulate``/``build_params`` keyword defaults (kernel units), from the table.
KW_DEFAULTS: Dict[str, Any] = keywords({o.key: o.default for o in OPTIONS})
KW_DEFAULTS["size_mode"] = None  # inferred from size: inf -> "all" (as config size.mode=all)


def one_symbol_only(opts: Mapping[str, Any], who: str) -> None:
    """Refuse what only single-symbol runs (and their sweeps) simulate, limit entries and
    ``intrabar=ticks``, where ``who`` (a portfolio, its sweep) takes market orders by the bar rules."""
    if getattr(opts.get("order_type"), "value", opts.get("order_type")) == "limit":
        raise OptionError(
            f"backtest.orders.type=limit: limit entries are simulated by single-symbol runs (and sweeps "
            f"of them); {who} takes market orders (set backtest.orders.type=market)"
        )
    if getattr(opts.get("intrabar"), "value", opts.get("intrabar")) == "ticks":
        raise OptionError(
            "backtest.intrabar=ticks resolves the bars of one symbol from its trades (single-symbol runs "
            f"and sweeps of them); {who} uses the bar rules: set backtest.intrabar=ohlc"
        )


def build_params(**kw: Any) -> np.ndarray:
    """Check keyword options (``simulate``'s names, kernel units) and pack the kernel's parameter
    vector (``enums.Param``). Missing keywords take their table default; ``size_mode=None`` means
    ``"all"`` when ``size`` is infinite and ``"qty"`` otherwise."""
    unknown = set(kw) - set(KW_DEFAULTS)
    if unknown:
        raise TypeError(f"build_params: unknown option(s) {sorted(unknown)}; known: {sorted(KW_DEFAULTS)}")
    vals = {**KW_DEFAULTS, **kw}
    size = BY_KW["size"].check(vals["size"], "simulate")
    if vals["size_mode"] is None:
        vals["size_mode"] = "all" if math.isinf(size) else "qty"
    p = np.zeros(N_PARAMS)
    for o in OPTIONS:
        if o.slot is not None:
            v = o.check(vals[o.kw], "simulate")
            p[o.slot] = float(o.choices[v]) if o.choices is not None else v
    mode = getattr(vals["size_mode"], "value", vals["size_mode"])
    if mode != "all" and math.isinf(size):
        raise OptionError(f"simulate: `size` must be finite with size_mode={mode!r}")
    BY_KW["vol_window"].check(vals["vol_window"], "simulate")
    return p
