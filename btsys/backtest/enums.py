"""Enums, parameter and metric slots and record dtypes of the backtest engine, declared once.

Enums and slot layouts are ``NamedTuple`` instances (vectorbt's pattern): numba reads a global
named tuple as a compile-time constant, so kernels use them directly (``OrderKind.STOP_LOSS``,
``p[Param.FEE]``, ``out[Metric.SHARPE]``), and the Python-side name tables (config choices, labels
of result frames, metric names) are derived from their field names below.

The kernels take every scalar option through one float64 parameter vector (so a sweep can vary
any of them per combination) and return metrics in one float64 vector: :data:`Param` and
:data:`Metric` are the only definitions of those layouts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FillModeT(NamedTuple):
    NEXT_OPEN: int = 0  # a signal on bar i fills at bar i+1's open (default, no look-ahead)
    CLOSE: int = 1  # a signal on bar i fills at bar i's close


FillMode = FillModeT()


class DirectionT(NamedTuple):
    """Which sides a backtest may open."""

    LONG: int = 0
    SHORT: int = 1
    BOTH: int = 2


Direction = DirectionT()


class SizeModeT(NamedTuple):
    ALL: int = 0  # all available cash, fees included: notional = cash / (1/leverage + fee)
    QTY: int = 1  # fixed base quantity
    NOTIONAL: int = 2  # fixed quote notional
    PERCENT: int = 3  # fraction of equity used as margin (notional = value * equity * leverage)
    VOL_TARGET: int = 4  # notional = equity * target_vol / realised annualised vol


SizeMode = SizeModeT()


class OrderKindT(NamedTuple):
    """Why an order was placed (``orders['kind']``, ``trades['exit_kind']``)."""

    ENTRY: int = 0
    EXIT_SIGNAL: int = 1  # exit signal (or the exit half of a reversal)
    STOP_LOSS: int = 2
    TRAILING_STOP: int = 3
    TAKE_PROFIT: int = 4
    LIQUIDATION: int = 5
    TIME_STOP: int = 6
    KILL_SWITCH: int = 7  # maximum-drawdown kill switch
    UNIVERSE_EXIT: int = 8  # left the dynamic universe: closed on its first bar after leaving
    DELISTED: int = 9  # left the universe after its data ended: closed at its last close


OrderKind = OrderKindT()
#: ``trades['exit_kind']`` of a position still open at the end
OPEN_TRADE = -1


class SideT(NamedTuple):
    """``orders['side']``."""

    BUY: int = 1
    SELL: int = -1


Side = SideT()


class TradeDirectionT(NamedTuple):
    """``trades['direction']``."""

    LONG: int = 1
    SHORT: int = -1


TradeDirection = TradeDirectionT()


class FillRuleT(NamedTuple):
    """When a resting limit (the take profit) fills: on a trade strictly beyond it, or at it."""

    THROUGH: int = 0
    TOUCH: int = 1


FillRule = FillRuleT()


class OrderTypeT(NamedTuple):
    """Entries as market orders at the next open, or as limits (``backtest.orders.type``)."""

    MARKET: int = 0
    LIMIT: int = 1


OrderType = OrderTypeT()


class IntrabarT(NamedTuple):
    """How a bar's inside is resolved (``backtest.intrabar``)."""

    OHLC: int = 0  # from open/high/low, the worse case first
    TICKS: int = 1  # from the bar's trades (bars where a level lies in the range)


Intrabar = IntrabarT()


class CheckT(NamedTuple):
    """Bits of ``simulate_nb``'s ``check``: the inputs its single pass validates."""

    CLOSE: int = 1
    OPEN: int = 2
    HIGH: int = 4
    LOW: int = 8
    TS: int = 16


Check = CheckT()


def choices(enum: NamedTuple) -> dict:
    """``{name: code}`` of an enum, names in lower case (config values such as ``"next_open"``)."""
    return {name.lower(): code for name, code in enum._asdict().items()}


def labels(enum: NamedTuple) -> dict:
    """``{code: name}`` of an enum, names in lower case (labels of result frames)."""
    return {code: name for name, code in choices(enum).items()}


FILL_NAMES = choices(FillMode)
DIRECTION_NAMES = choices(Direction)
SIZE_MODE_NAMES = choices(SizeMode)
FILL_RULE_NAMES = choices(FillRule)
INTRABAR_NAMES = choices(Intrabar)
ORDER_TYPE_NAMES = choices(OrderType)
ORDER_KIND_LABELS = {**labels(OrderKind), OPEN_TRADE: "open"}
SIDE_LABELS = labels(Side)
TRADE_DIRECTION_LABELS = labels(TradeDirection)


# --------------------------------------------------------------------------- parameter vector
class ParamT(NamedTuple):
    """Slots of the kernels' float64 parameter vector ``p``."""

    INIT_CASH: int = 0
    FEE: int = 1  # taker fee fraction (market orders)
    FEE_FIXED: int = 2  # quote per order
    MIN_FEE: int = 3  # quote per order
    SLIPPAGE: int = 4  # fraction of price, against the order
    IMPACT: int = 5  # impact coefficient: extra slippage = impact * (qty / volume) ** exponent
    IMPACT_EXP: int = 6
    FILL: int = 7  # FillMode
    SIZE_MODE: int = 8  # SizeMode
    SIZE: int = 9
    MIN_QTY: int = 10
    STEP: int = 11
    LEVERAGE: int = 12
    MMR: int = 13  # maintenance margin rate
    STOP_LOSS: int = 14
    TAKE_PROFIT: int = 15
    TRAILING_STOP: int = 16
    TIME_STOP: int = 17  # bars; 0 = off
    COOLDOWN: int = 18  # bars; 0 = off
    MAX_POSITION: int = 19  # quote notional; inf = off
    MAX_LEVERAGE: int = 20  # notional / equity; inf = off
    MAX_DRAWDOWN: int = 21  # fraction; 0 = off
    DIRECTION: int = 22  # Direction: which sides may be opened
    MAKER_FEE: int = 23  # resting limits: the take profit (intrabar=ticks)
    FILL_RULE: int = 24  # FillRule: when a resting limit fills
    ORDER_TYPE: int = 25  # OrderType of entries
    LIMIT_OFFSET: int = 26  # fraction of the signal close: a limit's distance from it
    TIME_IN_FORCE: int = 27  # bars a limit entry stays active


Param = ParamT()
N_PARAMS = len(Param)


# --------------------------------------------------------------------------- metric vector
class MetricT(NamedTuple):
    """Slots of the kernels' float64 metric vector; the names (lower case) are the metric keys."""

    TOTAL_RETURN: int = 0
    ANNUAL_RETURN: int = 1
    SHARPE: int = 2
    SORTINO: int = 3
    MAX_DRAWDOWN: int = 4
    CALMAR: int = 5
    WIN_RATE: int = 6
    PROFIT_FACTOR: int = 7
    N_TRADES: int = 8
    EXPOSURE: int = 9
    FEES_PAID: int = 10
    FUNDING_PAID: int = 11
    MAX_DRAWDOWN_DURATION: int = 12
    EXPECTANCY: int = 13
    TURNOVER: int = 14
    FINAL_VALUE: int = 15
    OPEN_POSITION: int = 16


Metric = MetricT()
METRIC_NAMES = tuple(choices(Metric))
N_METRICS = len(Metric)

# --------------------------------------------------------------------------- records
order_dt = np.dtype(
    [
        ("idx", np.int64),  # bar index of the fill
        ("ts", np.int64),  # µs, the fill bar's ts (its ts_close)
        ("col", np.int64),  # symbol index (0 for a single-asset backtest)
        ("side", np.int8),  # Side
        ("kind", np.int8),  # OrderKind
        ("size", np.float64),  # base quantity, positive
        ("price", np.float64),  # fill price including slippage
        ("fees", np.float64),  # quote
    ]
)

trade_dt = np.dtype(
    [
        ("col", np.int64),
        ("entry_idx", np.int64),
        ("exit_idx", np.int64),
        ("direction", np.int8),  # TradeDirection
        ("is_open", np.int8),
        ("exit_kind", np.int8),  # OrderKind, OPEN_TRADE while open
        ("size", np.float64),
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("pnl", np.float64),
        ("return", np.float64),
        ("fees", np.float64),  # entry + exit fees
        ("funding", np.float64),  # funding paid while open (positive = paid)
    ]
)

DAY_US = 86_400_000_000
