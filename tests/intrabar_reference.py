"""A plain tick-by-tick reference of the README's "Intrabar fills" rules (no numba, no bars logic).

It walks every trade of one symbol in (ts, trade_id) order and knows bars only as runs of trades
(``starts[k]`` is the first trade of bar k): signals are decided at bar closes, orders fill at the
next bar's first trade. It covers what ``intrabar="ticks"`` implements: market entries and exits
(``fill="next_open"``), stop loss, take profit (``through`` / ``touch``), trailing stop,
isolated-margin liquidation, funding at instants and limit entry orders, long and short, with
``size_mode="all"`` and no fixed fees, impact, time stop, cooldown or kill switch. The tests
compare it with :func:`btsys.backtest.simulate` to 1e-9.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ENTRY, EXIT, STOP_LOSS, TRAILING_STOP, TAKE_PROFIT, LIQUIDATION = 0, 1, 2, 3, 4, 5


@dataclass
class Rules:
    init_cash: float = 10_000.0
    taker: float = 0.0005
    maker: float = 0.0002
    slippage: float = 0.0001  # fraction
    leverage: float = 1.0
    mmr: float = 0.005
    stop_loss: float = 0.0
    take_profit: float = 0.0
    trailing_stop: float = 0.0
    fill_rule: str = "through"  # take profit and limit orders
    order_type: str = "market"  # entries
    offset_bps: float = 0.0
    time_in_force_bars: int = 1


@dataclass
class Outcome:
    orders: list = field(default_factory=list)  # (bar, side, kind, size, price, fee)
    equity: np.ndarray = None
    cash: np.ndarray = None
    position: np.ndarray = None
    funding_paid: float = 0.0
    expired: int = 0


def _beyond(side: int, a: float, b: float) -> bool:
    """``a`` at or beyond ``b`` in the adverse direction of a ``side`` position (long: a <= b)."""
    return a <= b if side > 0 else a >= b


class _Book:
    """Cash and one position, with the fills of the rules."""

    def __init__(self, r: Rules):
        self.r = r
        self.cash = r.init_cash
        self.size = 0.0
        self.margin = 0.0
        self.pe = 0.0
        self.extreme = 0.0
        self.liq = 0.0
        self.active = False  # levels armed (from the trade after the entry fill)
        self.out = Outcome()

    def side(self) -> int:
        return 1 if self.size > 0 else -1

    def open(self, bar: int, side: int, px: float, fee_rate: float) -> None:
        r = self.r
        qty = self.cash / (1.0 / r.leverage + fee_rate) / px
        if not qty > 0.0:
            return
        notional = qty * px
        fee = notional * fee_rate
        self.margin = notional / r.leverage
        self.cash -= self.margin + fee
        self.size = side * qty
        self.pe = px
        self.extreme = px
        lev, mmr = r.leverage, r.mmr
        self.liq = px * (1 - 1 / lev) / (1 - mmr) if side > 0 else px * (1 + 1 / lev) / (1 + mmr)
        self.active = False
        self.out.orders.append((bar, side, ENTRY, qty, px, fee))

    def close(self, bar: int, kind: int, px: float, fee_rate: float) -> None:
        qty = abs(self.size)
        fee = qty * px * fee_rate
        self.cash += self.margin + self.size * (px - self.pe) - fee
        self.out.orders.append((bar, -self.side(), kind, qty, px, fee))
        self.size = 0.0
        self.margin = 0.0

    def liquidate(self, bar: int) -> None:
        self.out.orders.append((bar, -self.side(), LIQUIDATION, abs(self.size), self.liq, 0.0))
        self.size = 0.0
        self.margin = 0.0  # the whole isolated margin is lost: nothing returns to cash

    def market(self, side: int, p: float) -> float:
        return p * (1.0 + side * self.r.slippage)

    def levels(self):
        """(protective stop level, its kind, target) of the open position."""
        r, s, pe = self.r, self.side(), self.pe
        stop = pe * (1 - s * r.stop_loss) if r.stop_loss > 0 else -s * np.inf
        kind = STOP_LOSS
        if r.trailing_stop > 0:
            trail = self.extreme * (1 - s * r.trailing_stop)
            if (trail > stop) if s > 0 else (trail < stop):
                stop, kind = trail, TRAILING_STOP
        tgt = pe * (1 + s * r.take_profit) if r.take_profit > 0 else s * np.inf
        return stop, kind, tgt

    def on_trade(self, bar: int, p: float) -> None:
        """The armed position's rules at one trade: liquidation, stop, target, then trailing."""
        if self.size == 0.0:
            return
        if not self.active:
            self.active = True  # the entry's own trade never triggers its levels
            return
        s, r = self.side(), self.r
        stop, kind, tgt = self.levels()
        if self.liq > 0 and _beyond(s, p, self.liq):
            self.liquidate(bar)
        elif _beyond(s, p, stop):
            self.close(bar, kind, self.market(-s, p), r.taker)
        elif (p > tgt if s > 0 else p < tgt) or (r.fill_rule == "touch" and p == tgt):
            self.close(bar, TAKE_PROFIT, tgt, r.maker)
        else:
            self.extreme = max(self.extreme, p) if s > 0 else min(self.extreme, p)


class _Run(_Book):
    """The whole stream: funding instants, orders decided at closes, limit orders."""

    def __init__(self, r: Rules, funding_ts, funding_rate):
        super().__init__(r)
        fts = np.asarray(funding_ts if funding_ts is not None else [], dtype=np.int64)
        order = np.argsort(fts, kind="stable")  # instants in time order
        self.fts = fts[order]
        self.frate = np.asarray(funding_rate if funding_rate is not None else [], dtype=np.float64)[order]
        self.fi = 0
        self.prev_p = np.nan  # the price of the trade before
        self.pend_exit, self.pend_side = False, 0
        self.limit = None  # (side, price, last bar)

    def fund(self, t: int) -> None:
        """Funding instants up to this trade's time (a trade at the instant counts after it)."""
        while self.fi < len(self.fts) and self.fts[self.fi] <= t:
            if self.size != 0.0:
                pay = self.size * self.prev_p * self.frate[self.fi]
                self.cash -= pay
                self.out.funding_paid += pay
            self.fi += 1

    def open_orders(self, k: int, p: float) -> bool:
        """The orders decided at the previous close, at the bar's first trade; True when a limit
        was placed here (its marketability was checked)."""
        r, side = self.r, self.pend_side
        placed = False
        if self.pend_exit and self.size != 0.0:
            self.close(k, EXIT, self.market(-self.side(), p), r.taker)
        if side != 0 and self.size == 0.0:
            if r.order_type == "market":
                self.open(k, side, self.market(side, p), r.taker)
            else:
                lim = self.prev_p * (1 - side * r.offset_bps / 1e4)
                self.limit, placed = (side, lim, k - 1 + r.time_in_force_bars), True
                if _beyond(side, p, lim):  # marketable on activation: taker at p
                    self.open(k, side, p, r.taker)
                    self.limit = None
        self.pend_exit, self.pend_side = False, 0
        return placed

    def limit_fill(self, k: int, p: float) -> None:
        side, lim, _ = self.limit
        through = p < lim if side > 0 else p > lim
        if through or (self.r.fill_rule == "touch" and p == lim):
            self.open(k, side, lim, self.r.maker)
            self.limit = None

    def decide(self, k: int, b_le: bool, b_lx: bool, b_se: bool, b_sx: bool) -> None:
        """At bar k's close: expiry of the limit, then the signals (an entry and an exit on the
        same bar cancel each other)."""
        if self.limit is not None and self.limit[2] <= k:
            self.limit = None
            self.out.expired += 1
        if b_le and b_lx:
            b_le = b_lx = False
        if b_se and b_sx:
            b_se = b_sx = False
        if self.size > 0:
            self.pend_exit, self.pend_side = b_lx or b_se, (-1 if b_se else 0)
        elif self.size < 0:
            self.pend_exit, self.pend_side = b_sx or b_le, (1 if b_le else 0)
        elif b_le != b_se:
            self.pend_side = 1 if b_le else -1
        if self.pend_side != 0:
            self.limit = None  # replaced by the new decision

    def bar(self, k: int, price, ts, j0: int, j1: int) -> None:
        for j in range(j0, j1):
            p, t = float(price[j]), int(ts[j])
            self.fund(t)
            fresh = self.open_orders(k, p) if j == j0 else False
            if self.limit is not None and not fresh and self.size == 0.0:
                self.limit_fill(k, p)
            self.on_trade(k, p)
            self.prev_p = p


def simulate_ticks(
    price, ts, starts, le=None, lx=None, se=None, sx=None, funding_ts=None, funding_rate=None, rules=None
) -> Outcome:
    """Run the rules over the trades ``price``/``ts`` cut into bars at ``starts``.

    ``le``/``lx``/``se``/``sx`` are per-bar booleans decided at each bar's close (None: never);
    funding events (``funding_ts`` µs, ``funding_rate``) are charged at their instants.
    """
    run = _Run(rules or Rules(), funding_ts, funding_rate)
    n_bars = len(starts)
    ends = [*starts[1:], len(price)]
    out = run.out
    out.equity, out.cash, out.position = np.empty(n_bars), np.empty(n_bars), np.empty(n_bars)
    flags = [np.zeros(n_bars, bool) if a is None else np.asarray(a, bool) for a in (le, lx, se, sx)]
    for k in range(n_bars):
        run.bar(k, price, ts, starts[k], ends[k])
        run.decide(k, *(bool(a[k]) for a in flags))
        c = float(price[ends[k] - 1])
        out.equity[k] = run.cash + run.margin + run.size * (c - run.pe) if run.size else run.cash
        out.cash[k] = run.cash
        out.position[k] = run.size
    return out
