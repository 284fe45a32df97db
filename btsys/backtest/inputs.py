"""pandas in, numpy out: the input prologue of ``simulate``, ``simulate_portfolio`` and ``sweep``.

* Prices given as a Series (or a bar table with a ``close`` column) carry their bar times in a
  DatetimeIndex (UTC; a naive index is taken as UTC); a bar table's ``ts_close`` column wins.
* ``freq="1h"`` (any fixed pandas offset) gives evenly spaced bar times when there are none.
* Neither: the bars have no calendar time. The metrics that need it
  (:data:`btsys.backtest.metrics.CALENDAR_METRICS`) are then NaN, with a :class:`NoCalendarWarning`,
  and options that need it (``vol_target`` sizing, funding) are refused; nothing is silently
  computed per bar.
* Signals and other per-bar inputs given as pandas objects must carry the prices' index: they
  are never realigned or filled silently.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
from pandas.api.types import is_datetime64_any_dtype

from btsys.backtest.metrics import CALENDAR_METRICS

__all__ = ["NoCalendarWarning", "prices_and_clock", "bar_tables", "per_symbol", "to_us"]


class NoCalendarWarning(UserWarning):
    """Bars without times: the metrics that need calendar time are NaN."""


def to_us(x: Any, who: str, name: str = "ts") -> np.ndarray:
    """int64 µs UTC from datetime-like values (DatetimeIndex, datetime Series, datetime64 array);
    integers are taken as µs already."""
    if isinstance(x, (pd.DatetimeIndex, pd.Series)) and is_datetime64_any_dtype(x.dtype):
        idx = pd.DatetimeIndex(x)
        if idx.hasnans:
            i = int(np.flatnonzero(idx.isna())[0])
            raise ValueError(f"{who}: `{name}` has NaT at row {i}; every bar needs a time")
        if idx.tz is not None:
            idx = idx.tz_convert("UTC").tz_localize(None)
        return idx.as_unit("us").asi8
    if isinstance(x, (pd.Series, pd.Index)):
        x = x.to_numpy()
    a = np.asarray(x)
    if np.issubdtype(a.dtype, np.datetime64):
        if np.isnat(a).any():
            i = int(np.flatnonzero(np.isnat(a))[0])
            raise ValueError(f"{who}: `{name}` has NaT at row {i}; every bar needs a time")
        return a.astype("datetime64[us]").astype(np.int64)
    return a


def freq_us(freq: Any, who: str) -> int:
    """A fixed bar spacing (``"1h"``, ``"15min"``, ``"1D"``, a Timedelta) in µs."""
    try:
        td = pd.to_timedelta(freq)
    except (ValueError, TypeError):
        raise ValueError(
            f"{who}: freq={freq!r} is not a fixed bar spacing; use e.g. '1min', '1h' or '1D' "
            "(calendar offsets such as 'MS' have no fixed length: give bar times instead)"
        ) from None
    us = int(td // pd.Timedelta(1, "us"))
    if us <= 0:
        raise ValueError(f"{who}: freq={freq!r} must be a positive bar spacing")
    return us


def _values(who: str, name: str, v: Any, index: Optional[pd.Index]) -> Any:
    """A per-bar input as numpy; pandas objects must carry the prices' index."""
    if isinstance(v, pd.DataFrame):
        if v.shape[1] != 1:
            raise ValueError(f"{who}: `{name}` must be one column, got {v.shape[1]}")
        v = v.iloc[:, 0]
    if not isinstance(v, pd.Series):
        return v
    if index is not None and v.index is not index and not v.index.equals(index):
        n = min(len(v.index), len(index))
        diff = np.flatnonzero(np.asarray(v.index[:n]) != np.asarray(index[:n]))
        where = f"row {int(diff[0])}" if diff.size else f"length {len(v.index)} vs {len(index)}"
        raise ValueError(
            f"{who}: `{name}` is indexed differently from `close` ({where}); align it first, "
            f"e.g. {name}.reindex(close.index)"
        )
    return v.to_numpy()


def _unpack_frame(close: pd.DataFrame, named: dict, ts: Any, freq: Any, who: str):
    """A bar table or one-column DataFrame -> (close Series, named inputs filled, ts)."""
    if "close" in close.columns:
        for k in ("open", "high", "low", "volume"):
            if k in named and named[k] is None and k in close.columns:
                named[k] = close[k]
        if ts is None and freq is None and "ts_close" in close.columns:
            ts = close["ts_close"]
        return close["close"], named, ts
    if close.shape[1] == 1:
        return close.iloc[:, 0], named, ts
    raise ValueError(
        f"{who}: `close` is a DataFrame with columns {list(close.columns)[:6]}: give one Series, "
        "or a bar table with a `close` column (several symbols: simulate_portfolio)"
    )


def _clock(ts: Any, freq: Any, index: Optional[pd.Index], n: int, who: str) -> Optional[np.ndarray]:
    if ts is not None or isinstance(index, pd.DatetimeIndex):
        if freq is not None:
            raise ValueError(
                f"{who}: the bars already have times (`ts` or a DatetimeIndex); drop `freq={freq!r}`"
            )
        return to_us(index if ts is None else ts, who)
    if freq is not None:
        return np.arange(n, dtype=np.int64) * freq_us(freq, who)
    return None


def prices_and_clock(
    close: Any, named: Mapping[str, Any], ts: Any, freq: Any, who: str, needs_times: Optional[str] = None
):
    """``(close, arrays, ts)``: prices and the named per-bar inputs as numpy arrays (numpy inputs
    pass through untouched) and the bar times as int64 µs, or ``None`` without calendar time
    (with a :class:`NoCalendarWarning`; an error naming ``needs_times`` when that is given).

    ``close`` may be a Series, a one-column DataFrame or a bar table (``close`` column; its
    ``open``/``high``/``low``/``volume`` fill the named inputs left ``None``, ``ts_close`` the times).
    """
    named = dict(named)
    if isinstance(close, pd.DataFrame):
        close, named, ts = _unpack_frame(close, named, ts, freq, who)
    index = None
    if isinstance(close, pd.Series):
        index = close.index
        close = close.to_numpy()
    arrays = {k: _values(who, k, v, index) for k, v in named.items()}
    clock = _clock(ts, freq, index, np.shape(close)[0], who)
    if clock is None and needs_times:
        raise ValueError(f"{who}: {needs_times} needs bar times; give `ts`, a DatetimeIndex or `freq=`")
    if clock is None:
        warnings.warn(
            f"{who}: the bars have no times (no `ts`, DatetimeIndex or `freq=`), so "
            f"{', '.join(CALENDAR_METRICS)} are NaN; pass prices with a DatetimeIndex or the bar "
            "spacing, e.g. freq='1h'",
            NoCalendarWarning,
            stacklevel=3,
        )
    return close, arrays, clock


# --------------------------------------------------------------------------- several symbols
def bar_tables(bars: Any, who: str = "simulate_portfolio") -> Any:
    """symbol -> bar table (``ts_close``, ``open``, ``high``, ``low``, ``close`` ...) from

    * a dict of bar tables, of bar tables indexed by time (no ``ts_close``), or of close Series
      indexed by time (open/high/low default to the close), or
    * one wide DataFrame of closes (DatetimeIndex x symbols; NaN where a symbol has no bar).
    """
    if isinstance(bars, pd.DataFrame):
        if not isinstance(bars.index, pd.DatetimeIndex):
            raise ValueError(
                f"{who}: a DataFrame of closes needs a DatetimeIndex (one column per symbol); "
                "or pass a dict symbol -> bar table"
            )
        bars = {str(s): bars[s].dropna() for s in bars.columns}
    if not isinstance(bars, Mapping):
        return bars
    return {s: _timed_table(s, df, who) for s, df in bars.items()}


def _timed_table(s: str, df: Any, who: str) -> Any:
    """A symbol's bars with ``ts_close`` (from a DatetimeIndex) and open/high/low (the close)."""
    if isinstance(df, pd.Series):
        df = df.to_frame("close")
    if not isinstance(df, pd.DataFrame) or "close" not in df.columns:
        return df
    add = {}
    if "ts_close" not in df.columns and isinstance(df.index, pd.DatetimeIndex):
        add["ts_close"] = to_us(df.index, who, f"bars[{s!r}] index")
    for k in ("open", "high", "low"):
        if k not in df.columns:
            add[k] = df["close"]
    return df.assign(**add) if add else df


def per_symbol(name: str, sig: Any, tables: Mapping[str, pd.DataFrame], who: str = "simulate_portfolio"):
    """symbol -> per-bar array aligned to that symbol's bars.

    ``sig`` is a dict (values: arrays, or Series indexed by time), or a wide DataFrame (DatetimeIndex
    x symbols). A pandas input is matched to each symbol's bar times by its DatetimeIndex; every
    bar time must be present."""
    if sig is None:
        return None
    if isinstance(sig, pd.DataFrame):
        sig = {str(s): sig[s] for s in sig.columns}
    if not isinstance(sig, Mapping):
        raise ValueError(f"{who}: `{name}` must be a dict symbol -> array or a DataFrame of symbols")
    out = {}
    for s, v in sig.items():
        if isinstance(v, pd.Series) and isinstance(v.index, pd.DatetimeIndex) and s in tables:
            t = np.asarray(tables[s]["ts_close"], dtype=np.int64)
            pos = pd.Index(to_us(v.index, who, f"{name}[{s!r}] index")).get_indexer(t)
            if (pos < 0).any():
                i = int(np.flatnonzero(pos < 0)[0])
                when = pd.Timestamp(int(t[i]), unit="us", tz="UTC")
                raise ValueError(f"{who}: `{name}[{s!r}]` has no value for bar {i} ({when})")
            v = v.to_numpy()[pos]
        elif isinstance(v, pd.Series):
            v = v.to_numpy()
        out[s] = v
    return out
