"""Stage glue for ``backtest.intrabar=ticks``: the trades of chosen bars, read from the tick lake.

:class:`LakeTrades` is the trade source (see :mod:`btsys.backtest.ticks`) the backtest stage
gives the engine: asked for some bars, it reads each UTC day those bars touch once, only the
row groups whose ``trade_id`` statistics overlap the bars' id ranges
(:func:`btsys.data.lake.read_trade_ranges`), and checks that every bar gets exactly its
``n_ticks`` trades. The engine never sees files (it imports neither ``data`` nor ``storage``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from btsys.backtest.ticks import bar_ids, bar_label, bar_slices, gather
from btsys.data.lake import Series, read_trade_ranges
from btsys.errors import TradesMissing
from btsys.storage import Storage

DAY_US = 86_400_000_000


def _date(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


class LakeTrades:
    """The trades of a symbol's bars (a bar table with ``ts_open``, ``ts_close`` and trade ids)
    from the lake series ``series`` of ``store``. ``reads`` counts the day files opened and
    ``trades_read`` the trades returned (what a benchmark reports)."""

    def __init__(self, store: Storage, series: Series, bars: pd.DataFrame):
        self.store = store
        self.series = series
        self.bars = bar_ids(bars, f"{series.symbol} bars")
        self.day0 = bars["ts_open"].to_numpy(np.int64) // DAY_US
        self.day1 = self.bars["ts_close"] // DAY_US
        self.reads = 0
        self.trades_read = 0

    def __call__(self, idx: np.ndarray):
        idx = np.asarray(idx, dtype=np.int64)
        b = self.bars
        first, last = b["first_trade_id"][idx], b["last_trade_id"][idx]
        d0, d1 = self.day0[idx], self.day1[idx]
        span = int((d1 - d0).max(initial=0))  # a bar may run over midnight (rarely over a whole day)
        days = np.unique(np.concatenate([d0 + k for k in range(span + 1)]))
        ts, ids, price = [], [], []
        for day in days:
            on = (d0 <= day) & (d1 >= day)
            if not on.any():
                continue
            try:
                t = read_trade_ranges(self.store, self.series, _date(day), first[on], last[on])
            except TradesMissing as e:
                i = int(idx[np.flatnonzero(on)[0]])
                raise TradesMissing(
                    f"{bar_label(i, b['ts_close'])} of {self.series.symbol}: its trades on {_date(day)} are "
                    f"missing: {e.message}",
                    hint=e.hint,
                ) from None
            self.reads += 1
            ts.append(t["ts"].to_numpy())
            ids.append(t["trade_id"].to_numpy())
            price.append(t["price"].to_numpy())
        cat = lambda a, dt: np.concatenate(a) if a else np.zeros(0, dt)  # noqa: E731
        ts, ids, price = cat(ts, np.int64), cat(ids, np.int64), cat(price, np.float64)
        try:
            lo, hi = bar_slices(ids, ts, price, b, idx)
        except IndexError as e:
            k, got = e.args
            i = int(idx[k])
            days_i = ", ".join(_date(d) for d in range(int(d0[k]), int(d1[k]) + 1))
            raise TradesMissing(
                f"{bar_label(i, b['ts_close'])} of {self.series.symbol}: the lake "
                f"({self.store.uri(self.series.day_key(_date(d0[k])))}) holds {got} of its {b['n_ticks'][i]} "
                f"trades (trade ids {first[k]}..{last[k]}) on {days_i}, or not the bar's first and last",
                hint="the lake changed since the bars were built, or the bars come from another lake or "
                "dataset: build the bars again from this lake",
            ) from None
        self.trades_read += int((hi - lo).sum())
        return gather(ts, price, lo, hi)
