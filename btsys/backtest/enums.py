"""Enums, parameter slots, metric slots and record dtypes of the backtest engine, declared once.

The numba kernels take every scalar option through one float64 parameter vector (so a sweep can
vary any of them per combination) and return metrics in one float64 vector; the slot indices
below are the only place where those layouts are defined.
"""

from __future__ import annotations

import numpy as np


class FillMode:
    NEXT_OPEN = 0  # a signal on bar i fills at bar i+1's open (default, no look-ahead)
    CLOSE = 1  # a signal on bar i fills at bar i's close


class Direction:
    LONG = 0
    SHORT = 1
    BOTH = 2


class SizeMode:
    ALL = 0  # all available cash, fees included: notional = cash / (1/leverage + fee)
    QTY = 1  # fixed base quantity
    NOTIONAL = 2  # fixed quote notional
    PERCENT = 3  # fraction of equity used as margin (notional = value * equity * leverage)
    VOL_TARGET = 4  # notional = equity * target_vol / realised annualised vol


class OrderKind:
    """Why an order was placed (``orders['kind']``)."""

    ENTRY = 0
    EXIT = 1  # exit signal (or the exit half of a reversal)
    STOP_LOSS = 2
    TRAILING_STOP = 3
    TAKE_PROFIT = 4
    LIQUIDATION = 5
    TIME_STOP = 6
    KILL_SWITCH = 7  # maximum-drawdown kill switch
    UNIVERSE_EXIT = 8  # left the dynamic universe: closed on its first bar after leaving
    DELISTED = 9  # left the universe after its data ended: closed at its last close


#: Names of the integer codes of the order and trade records (readable result frames).
ORDER_KIND_LABELS = {
    OrderKind.ENTRY: "entry",
    OrderKind.EXIT: "exit_signal",
    OrderKind.STOP_LOSS: "stop_loss",
    OrderKind.TRAILING_STOP: "trailing_stop",
    OrderKind.TAKE_PROFIT: "take_profit",
    OrderKind.LIQUIDATION: "liquidation",
    OrderKind.TIME_STOP: "time_stop",
    OrderKind.KILL_SWITCH: "kill_switch",
    OrderKind.UNIVERSE_EXIT: "universe_exit",
    OrderKind.DELISTED: "delisted",
    -1: "open",  # trade_dt.exit_kind of a position still open at the end
}
SIDE_LABELS = {1: "buy", -1: "sell"}
TRADE_DIRECTION_LABELS = {1: "long", -1: "short"}


FILL_NAMES = {"next_open": FillMode.NEXT_OPEN, "close": FillMode.CLOSE}
DIRECTION_NAMES = {"long": Direction.LONG, "short": Direction.SHORT, "both": Direction.BOTH}
SIZE_MODE_NAMES = {
    "all": SizeMode.ALL,
    "qty": SizeMode.QTY,
    "notional": SizeMode.NOTIONAL,
    "percent": SizeMode.PERCENT,
    "vol_target": SizeMode.VOL_TARGET,
}

# --------------------------------------------------------------------------- parameter vector
P_INIT_CASH = 0
P_FEE = 1  # taker fee fraction (market orders)
P_FEE_FIXED = 2  # quote per order
P_MIN_FEE = 3  # quote per order
P_SLIPPAGE = 4  # fraction of price, against the order
P_IMPACT = 5  # impact coefficient: extra slippage = impact * (qty / volume) ** exponent
P_IMPACT_EXP = 6
P_FILL = 7
P_SIZE_MODE = 8
P_SIZE = 9
P_MIN_QTY = 10
P_STEP = 11
P_LEVERAGE = 12
P_MMR = 13  # maintenance margin rate
P_STOP_LOSS = 14
P_TAKE_PROFIT = 15
P_TRAILING_STOP = 16
P_TIME_STOP = 17  # bars; 0 = off
P_COOLDOWN = 18  # bars; 0 = off
P_MAX_POSITION = 19  # quote notional; inf = off
P_MAX_LEVERAGE = 20  # notional / equity; inf = off
P_MAX_DRAWDOWN = 21  # fraction; 0 = off
P_DIRECTION = 22  # Direction: which sides may be opened
P_MAKER_FEE = 23  # accepted and validated; only market orders exist today (they pay taker)
N_PARAMS = 24

# --------------------------------------------------------------------------- metric vector
METRIC_NAMES = (
    "total_return",
    "annual_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "win_rate",
    "profit_factor",
    "n_trades",
    "exposure",
    "fees_paid",
    "funding_paid",
    "max_drawdown_duration",
    "expectancy",
    "turnover",
    "final_value",
    "open_position",
)
M = {name: i for i, name in enumerate(METRIC_NAMES)}
N_METRICS = len(METRIC_NAMES)

# --------------------------------------------------------------------------- records
order_dt = np.dtype(
    [
        ("idx", np.int64),  # bar index of the fill
        ("ts", np.int64),  # µs, the fill bar's ts (its ts_close)
        ("col", np.int64),  # symbol index (0 for a single-asset backtest)
        ("side", np.int8),  # +1 buy, -1 sell
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
        ("direction", np.int8),
        ("is_open", np.int8),
        ("exit_kind", np.int8),
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

# --------------------------------------------------------------------------- fused input checks
# bits of simulate_nb's ``check``: which inputs the event loop validates in its single pass
CHECK_CLOSE = 1
CHECK_OPEN = 2
CHECK_HIGH = 4
CHECK_LOW = 8
CHECK_TS = 16
