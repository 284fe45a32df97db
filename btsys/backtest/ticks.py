"""The trades inside bars, for ``intrabar="ticks"``: sources and the per-bar slices the kernel reads.

A *trade source* is a callable ``source(bars) -> (offsets, ts, price)``: for ascending bar
indices ``bars`` it returns the trades of each bar in (ts, trade_id) order, bar ``bars[k]``'s at
``ts[offsets[k]:offsets[k + 1]]``. The engine asks only for the bars it needs (see
``engine.simulate``); where the trades come from is the source's business:

* :class:`FrameTrades`: trades in memory (a tick table), e.g. in notebooks and tests;
* ``btsys.stages.bar_trades.LakeTrades``: the tick lake the bars were built from (the pipeline).

Both find a bar's trades by its ``first_trade_id`` / ``last_trade_id`` (bar-table columns) and
check that they are exactly ``n_ticks`` trades: a bar whose trades are not all there stops the
run with :class:`~btsys.errors.TradesMissing` naming the bar and its time, never a silent
fallback to the bar's open/high/low.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from btsys.errors import TradesMissing

TradeSource = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray, np.ndarray]"]
#: bar-table columns a trade source needs
TRADE_ID_COLUMNS = ("first_trade_id", "last_trade_id", "n_ticks")


def bar_label(i: int, ts_close: Optional[np.ndarray]) -> str:
    """``bar 12 (closed 2025-01-02 03:04:05.678901 UTC)`` for messages."""
    if ts_close is None:
        return f"bar {i}"
    when = pd.Timestamp(int(ts_close[i]), unit="us", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"bar {i} (closed {when} UTC)"


def bar_slices(ids: np.ndarray, ts: np.ndarray, price: np.ndarray, bars: dict, idx: np.ndarray):
    """``(lo, hi)``: bar ``idx[k]``'s trades are ``ids[lo[k]:hi[k]]`` (``ids`` ascending), checked
    against the bar: exactly ``n_ticks`` trades, the first at ``ts_open`` and ``open``, the last at
    ``ts_close`` and ``close`` (when the bar table has them). Raises :class:`IndexError`
    ``(k, found)`` at the first bar that fails (the caller names the bar)."""
    lo = np.searchsorted(ids, bars["first_trade_id"][idx], side="left")
    hi = np.searchsorted(ids, bars["last_trade_id"][idx], side="right")
    bad = (hi - lo) != bars["n_ticks"][idx]
    a, z = np.minimum(lo, max(ids.size - 1, 0)), np.maximum(hi - 1, 0)
    for col, arr, at in (("ts_open", ts, a), ("open", price, a), ("ts_close", ts, z), ("close", price, z)):
        if bars.get(col) is not None and ids.size:
            bad |= arr[at] != bars[col][idx]
    k = np.flatnonzero(bad)
    if k.size:
        raise IndexError(int(k[0]), int(hi[k[0]] - lo[k[0]]))
    return lo, hi


def gather(ts: np.ndarray, price: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """``(offsets, ts, price)`` of the trade runs ``[lo[k], hi[k])`` concatenated."""
    n = hi - lo
    off = np.zeros(n.size + 1, dtype=np.int64)
    np.cumsum(n, out=off[1:])
    if n.size == 0:
        return off, ts[:0].copy(), price[:0].copy()
    take = np.repeat(lo - off[:-1], n) + np.arange(off[-1])
    return off, ts[take], price[take]


def bar_ids(bars: pd.DataFrame, who: str) -> dict:
    """The trade-id columns of a bar table as int64 arrays (an error names what is missing)."""
    missing = [c for c in TRADE_ID_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(
            f"{who}: intrabar='ticks' needs the bar columns {list(TRADE_ID_COLUMNS)}; missing {missing} "
            "(bars built before trade ids were recorded: build them again)"
        )
    out = {c: bars[c].to_numpy(np.int64) for c in TRADE_ID_COLUMNS}
    for c, dt in (("ts_open", np.int64), ("ts_close", np.int64), ("open", np.float64), ("close", np.float64)):
        out[c] = bars[c].to_numpy(dt) if c in bars.columns else None
    return out


def trade_source(intrabar: str, ticks: Any, bars: Optional[pd.DataFrame]) -> Optional[TradeSource]:
    """The trade source of a ``simulate`` call: None for ``intrabar="ohlc"``; ``ticks`` itself when
    it is a source (callable); a :class:`FrameTrades` over a tick table and the bar table."""
    if intrabar != "ticks":
        if ticks is not None:
            raise ValueError("simulate: `ticks` is only read with intrabar='ticks'")
        return None
    if callable(ticks):
        return ticks
    if ticks is None:
        raise ValueError(
            "simulate: intrabar='ticks' needs `ticks`: the bars' trades (a tick table with ts, trade_id, "
            "price) or a trade source such as btsys.stages.bar_trades.LakeTrades"
        )
    if bars is None:
        raise ValueError(
            "simulate: intrabar='ticks' with a tick table needs `close` to be the bar table (with "
            f"{', '.join(TRADE_ID_COLUMNS)}) to find each bar's trades"
        )
    return FrameTrades(ticks, bars)


def funding_instants(ts_close: np.ndarray, ft: Optional[np.ndarray], fr: Optional[np.ndarray]):
    """Funding events as per-bar instants ``(offsets n+1, times, rates)``: bar i's are
    ``times[offsets[i]:offsets[i+1]]``, an event belonging to the first bar whose close is at or
    after it (its trade at or after the instant); events after the last bar are dropped."""
    n = ts_close.shape[0]
    if ft is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.argsort(ft, kind="stable")
    ft, fr = ft[order], fr[order]
    bar = np.searchsorted(ts_close, ft, side="left")
    keep = bar < n
    ft, fr, bar = ft[keep], fr[keep], bar[keep]
    off = np.searchsorted(bar, np.arange(n + 1), side="left").astype(np.int64)
    return off, np.ascontiguousarray(ft, dtype=np.int64), np.ascontiguousarray(fr, dtype=np.float64)


class FrameTrades:
    """A trade source over a tick table in memory (``ts``, ``trade_id``, ``price``; sorted by
    (ts, trade_id), ids increasing) for the bars of ``bars`` (a bar table with trade ids)."""

    def __init__(self, ticks: Any, bars: pd.DataFrame):
        cols = {c: np.asarray(ticks[c]) for c in ("ts", "trade_id", "price")}
        self.ts = np.ascontiguousarray(cols["ts"], dtype=np.int64)
        self.ids = np.ascontiguousarray(cols["trade_id"], dtype=np.int64)
        self.price = np.ascontiguousarray(cols["price"], dtype=np.float64)
        if self.ids.size > 1:
            d = np.flatnonzero(np.diff(self.ids) <= 0)
            if d.size:
                raise ValueError(
                    f"ticks: trade_id must increase with (ts, trade_id); row {int(d[0]) + 1} "
                    f"({self.ids[d[0] + 1]}) follows {self.ids[d[0]]}"
                )
        self.bars = bar_ids(bars, "simulate")

    def __call__(self, idx: np.ndarray):
        b = self.bars
        try:
            lo, hi = bar_slices(self.ids, self.ts, self.price, b, idx)
        except IndexError as e:
            k, got = e.args
            i = int(idx[k])
            raise TradesMissing(
                f"{bar_label(i, b['ts_close'])}: the ticks hold {got} of its {b['n_ticks'][i]} trades "
                f"(trade ids {b['first_trade_id'][i]}..{b['last_trade_id'][i]}), or not the bar's "
                "first and last",
                hint="pass the ticks the bars were built from",
            ) from None
        return gather(self.ts, self.price, lo, hi)


class BarsNotCached(Exception):
    """A :class:`TradeCache` was asked for bars it does not hold (they are now wanted)."""


class TradeCache:
    """A trade source over ``source`` for ``n_bars`` bars that serves only the bars it holds and
    keeps what it loads: the cache shared by the runs of a sweep's combinations, so that a bar's
    trades are read once. Asked for a bar it lacks, it notes it in ``wanted`` and raises
    :class:`BarsNotCached` (the run stops); :meth:`load` then reads the wanted bars.

    Memory: 16 bytes a trade held. With ``n_ticks`` (the bars' trade counts) a load asks the
    source for batches of about ``batch`` trades (whole bars, ascending) written into arrays sized
    once, so what a source builds while reading stays bounded by a batch, not by the sweep."""

    def __init__(self, source: TradeSource, n_bars: int, n_ticks=None, batch: int = 2_000_000):
        self.source = source
        self.n_ticks = None if n_ticks is None else np.asarray(n_ticks, dtype=np.int64)
        self.batch = int(batch)
        self.lo = np.full(n_bars, -1, dtype=np.int64)
        self.hi = np.full(n_bars, -1, dtype=np.int64)
        self.ts, self.price = np.zeros(0, dtype=np.int64), np.zeros(0)
        self.wanted = np.zeros(n_bars, dtype=np.bool_)
        self.loads = 0  # calls of ``source``

    def __call__(self, idx: np.ndarray):
        idx = np.asarray(idx, dtype=np.int64)
        miss = self.lo[idx] < 0
        if miss.any():
            self.wanted[idx[miss]] = True
            raise BarsNotCached(int(miss.sum()))
        return gather(self.ts, self.price, self.lo[idx], self.hi[idx])

    def _batches(self, idx: np.ndarray) -> list:
        if self.n_ticks is None:
            return [idx]
        ends = np.cumsum(self.n_ticks[idx]) // max(self.batch, 1)
        return np.split(idx, np.flatnonzero(np.diff(ends)) + 1)

    def load(self) -> int:
        """Read the wanted bars (in batches, see the class); returns how many."""
        idx = np.flatnonzero(self.wanted)
        if idx.size == 0:
            return 0
        pos = self.ts.size
        if self.n_ticks is not None:  # room for all of them, filled batch by batch
            self._grow(int(self.n_ticks[idx].sum()))
        for b in self._batches(idx):
            off, ts, price = self.source(b)
            self.loads += 1
            n = int(off[-1])
            if self.n_ticks is None:
                self._grow(n)
            self.ts[pos : pos + n] = ts
            self.price[pos : pos + n] = price
            self.lo[b], self.hi[b] = pos + off[:-1], pos + off[1:]
            pos += n
        if pos != self.ts.size:
            raise AssertionError("TradeCache: the source returned other trade counts than n_ticks")
        self.wanted[:] = False
        return int(idx.size)

    def _grow(self, n: int) -> None:
        self.ts = np.concatenate([self.ts, np.empty(n, dtype=np.int64)])
        self.price = np.concatenate([self.price, np.empty(n)])

    def run_all(self, run: Callable[[int], Any], n: int) -> list:
        """``[run(k) for k in range(n)]`` with every run reading its trades from this cache: the
        runs that asked for bars it lacked run again once all the bars those runs asked for are
        loaded, until none lacks any (as many rounds as the runs' passes, each round one read)."""
        out: list = [None] * n
        todo = list(range(n))
        while todo:
            again = []
            for k in todo:
                try:
                    out[k] = run(k)
                except BarsNotCached:
                    again.append(k)
            if again and self.load() == 0:
                raise AssertionError("TradeCache: runs asked for bars they then did not name")
            todo = again
        return out
