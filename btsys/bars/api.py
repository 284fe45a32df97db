"""Bars from an ordered tick stream: the Python API over the kernels of :mod:`btsys.bars._nb`.

:class:`BarStream` is the one implementation: it is fed the ticks of one symbol in order, in any
number of pieces (record batches, files, days), carries the complete kernel state between pieces,
and so produces exactly the bars of one pass over the whole stream however the stream is cut.
:func:`build_bars` (in memory) and the bars stage (:mod:`btsys.bars.lake`, one stream per symbol)
both use it.

Output: the bar table of docs/DESIGN.md (``ts_open``, ``ts_close``, ``open``, ``high``, ``low``,
``close``, ``volume``, ``quote_volume``, ``buy_volume``, ``n_ticks``, ``vwap``) plus
``threshold`` (the threshold the bar was built with) and ``is_partial`` (True only on a trailing
bar that has not closed; such a row exists only when asked for with ``keep_partial``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Mapping, Optional

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
from omegaconf import MISSING, DictConfig, OmegaConf

from btsys.bars import _nb
from btsys.config import FlowBarsConfig, ThresholdBarsConfig, TimeBarsConfig
from btsys.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000

TICK_COLUMNS = ["ts", "trade_id", "price", "qty", "quote_qty", "is_buyer_maker"]
#: The bar table of docs/DESIGN.md (every bar kind, every reader): the one list of its columns.
BAR_COLUMNS = [
    "ts_open",
    "ts_close",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "buy_volume",
    "n_ticks",
    "vwap",
]
#: What the bars stage writes: the bar table plus ``threshold`` (the bar's threshold; time bars: the
#: bin's length in µs, NaN for calendar bins; flow bars: NaN during the warm-up), ``is_partial`` and
#: ``first_trade_id`` / ``last_trade_id`` (the ids of its first and last tick).
BAR_SCHEMA = pa.schema(
    [(c, pa.int64() if c in ("ts_open", "ts_close", "n_ticks") else pa.float64()) for c in BAR_COLUMNS]
    + [("threshold", pa.float64()), ("is_partial", pa.bool_())]
    # the trade ids of the bar's first and last tick: its trades in the lake (intrabar=ticks)
    + [("first_trade_id", pa.int64()), ("last_trade_id", pa.int64())]
)

THRESHOLD_KINDS = {"tick": _nb.M_TICK, "volume": _nb.M_VOLUME, "dollar": _nb.M_DOLLAR}
FLOW_KINDS = {
    f"{m}_{k}": (_nb.M_TICK if m == "tick" else _nb.M_VOLUME if m == "volume" else _nb.M_DOLLAR, k == "run")
    for m in ("tick", "volume", "dollar")
    for k in ("imbalance", "run")
}
KINDS = ["time", *THRESHOLD_KINDS, *FLOW_KINDS]
WARMUPS = ("first_day", "fixed")


class BarsInputError(DataError):
    """Invalid ticks: names the source (file), the row and the offending values."""


class BarsConfigError(ConfigError):
    """Invalid bar settings: names the key."""


# --------------------------------------------------------------------------- settings
#: The kind family of each kind: its config schema is ``btsys.config.BARS_SCHEMAS[family]``.
KIND_FAMILY = {
    "time": "time",
    **dict.fromkeys(THRESHOLD_KINDS, "threshold"),
    **dict.fromkeys(FLOW_KINDS, "flow"),
}


class BarSpec:
    """Validated bar settings: the fields (and the defaults) of the selected kind's family schema
    in :mod:`btsys.config` (:class:`TimeBarSpec`, :class:`ThresholdBarSpec`, :class:`FlowBarSpec`).
    Build one with :meth:`from_config`."""

    kind: str

    @staticmethod
    def from_config(cfg: Any = None, **overrides: Any) -> "BarSpec":
        """From a ``bars`` config node (DictConfig, dataclass or mapping) plus keyword overrides.

        ``kind`` selects the family; a key that is not a setting of that family (``threshold`` for
        time bars, a misspelt key) raises :class:`BarsConfigError` naming it.
        """
        d = {k: getattr(v, "value", v) for k, v in _plain(cfg).items()}
        d.update(overrides)
        kind = d.get("kind")
        if kind not in KIND_FAMILY:
            raise BarsConfigError(f"bars.kind must be one of {KINDS}, got {kind!r}")
        cls = _SPECS[KIND_FAMILY[kind]]
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            family = KIND_FAMILY[kind]
            raise BarsConfigError(
                f"unknown bars option(s) {bad} for {kind} bars; {family} bars take {sorted(names)}"
            )
        return cls(**d)

    @property
    def dynamic(self) -> bool:
        """A threshold that follows the trailing daily measure (``threshold_mode: dynamic``)."""
        return False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def determining(self) -> dict:
        """The settings the bars depend on: the bars stage's cache key. ``keep_partial`` concerns
        readers only; the dynamic-threshold settings count only in dynamic mode."""
        return {k: v for k, v in self.to_dict().items() if k not in self._not_determining()}

    def _not_determining(self) -> set:
        return {"keep_partial"}

    def _float(self, name: str, lo: float, lo_open: bool = False, required: bool = False) -> None:
        """Check (and cast) a float setting: finite, ``> lo`` (``lo_open``) or ``>= lo``."""
        v = getattr(self, name)
        if v is None and not required:
            return
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if not (np.isfinite(f) and (f > lo if lo_open else f >= lo)):
            bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
            need = "is required and " if v in (None, MISSING) else ""
            raise BarsConfigError(
                f"bars.{name} {need}must be a finite number {bound} for {self.kind} bars, got {v!r}"
            )
        setattr(self, name, f)

    def _int(self, name: str, lo: int) -> None:
        """Check (and cast) an integer setting ``>= lo`` (``None`` stays ``None``)."""
        v = getattr(self, name)
        if v is None:
            return
        try:
            ok = not isinstance(v, bool) and float(v).is_integer() and int(v) >= lo
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise BarsConfigError(f"bars.{name} must be a whole number >= {lo}, got {v!r}")
        setattr(self, name, int(v))


@dataclasses.dataclass
class TimeBarSpec(BarSpec, TimeBarsConfig):
    def __post_init__(self):
        interval_us(self.interval)  # raises on a bad interval


@dataclasses.dataclass
class ThresholdBarSpec(BarSpec, ThresholdBarsConfig):
    def __post_init__(self):
        self.threshold_mode = getattr(self.threshold_mode, "value", self.threshold_mode)
        self._float("threshold", 0.0, lo_open=True, required=True)
        if self.threshold_mode not in ("fixed", "dynamic"):
            raise BarsConfigError(
                f"bars.threshold_mode must be fixed or dynamic, got {self.threshold_mode!r}"
            )
        if self.dynamic:
            self._float("bars_per_day", 0.0, lo_open=True)
            self._int("lookback_days", 1)
            if self.warmup not in WARMUPS:
                raise BarsConfigError(f"bars.warmup must be one of {WARMUPS}, got {self.warmup!r}")

    @property
    def dynamic(self) -> bool:
        return self.threshold_mode == "dynamic"

    def _not_determining(self) -> set:
        fixed_only = set() if self.dynamic else {"bars_per_day", "lookback_days", "warmup"}
        return {"keep_partial"} | fixed_only


@dataclasses.dataclass
class FlowBarSpec(BarSpec, FlowBarsConfig):
    def __post_init__(self):
        self._float("expected_ticks_init", 1.0)
        self._int("ewma_span", 1)
        self._int("imbalance_span", 1)
        self._int("min_ticks", 1)
        self._int("max_ticks", 1)
        if self.min_ticks > self.max_ticks:
            raise BarsConfigError(
                f"bars.min_ticks and bars.max_ticks must satisfy 1 <= min_ticks <= "
                f"max_ticks, got {self.min_ticks!r}, {self.max_ticks!r}"
            )
        self._float("imbalance_init", 0.0, lo_open=True)


_SPECS = {"time": TimeBarSpec, "threshold": ThresholdBarSpec, "flow": FlowBarSpec}


def _plain(cfg: Any) -> dict:
    """A ``bars`` config node (DictConfig, dataclass, mapping or None) as a plain dict."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return dict(cfg)


def interval_us(interval: str):
    """A pandas-style interval as microseconds (fixed intervals) or a pandas offset (calendar ones)."""
    try:
        off = pd.tseries.frequencies.to_offset(interval)
    except (ValueError, TypeError) as e:
        raise BarsConfigError(f"bars.interval: {interval!r} is not a pandas offset ({e})") from None
    if isinstance(off, pd.offsets.Tick):
        ns = int(off.nanos)
        if ns <= 0 or ns % 1000:
            raise BarsConfigError(
                f"bars.interval must be a positive whole number of microseconds, got {interval!r}"
            )
        return ns // 1000
    return off


def _calendar_bins(ts: np.ndarray, off) -> np.ndarray:
    """Bin id (the bin's start in µs) of each tick for a calendar offset such as ``MS`` or ``W``."""
    if len(ts) == 0:
        return np.empty(0, dtype=np.int64)
    lo = pd.Timestamp(int(ts.min()), unit="us")
    hi = pd.Timestamp(int(ts.max()), unit="us")
    start = off.rollback(lo.normalize())
    if start > lo:  # not anchored at midnight: step back once more
        start = start - off
    edges = pd.date_range(start=start, end=hi + off, freq=off).asi8 // 1000
    idx = np.searchsorted(edges, ts, side="right") - 1
    return edges[np.clip(idx, 0, len(edges) - 1)].astype(np.int64)


# --------------------------------------------------------------------------- tick columns
def _side_codes(col) -> np.ndarray:
    """uint8 side codes from an ``is_buyer_maker`` column: 0 taker buy, 1 taker sell, 2 unknown."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        if col.null_count:
            filled = col.fill_null(False).to_numpy(zero_copy_only=False).view(np.uint8)
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            return np.where(valid, filled, np.uint8(2)).astype(np.uint8)
        if not pa.types.is_boolean(col.type):
            raise BarsInputError(f"column 'is_buyer_maker' must be boolean, got {col.type}")
        return col.to_numpy(zero_copy_only=False).view(np.uint8)
    s = pd.Series(col) if not isinstance(col, pd.Series) else col
    if s.dtype == bool:
        return s.to_numpy().view(np.uint8)
    if s.dtype == object or str(s.dtype) == "boolean":
        na = s.isna().to_numpy()
        vals = s.where(~na, False).to_numpy(dtype=bool).view(np.uint8)
        return np.where(na, np.uint8(2), vals).astype(np.uint8)
    raise BarsInputError(f"column 'is_buyer_maker' must be boolean, got {s.dtype}")


def _num(col, name: str, dtype) -> np.ndarray:
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        if col.null_count:
            raise BarsInputError(f"column {name!r} has {col.null_count} null value(s)")
        a = col.to_numpy(zero_copy_only=False) if isinstance(col, pa.ChunkedArray) else col.to_numpy()
    else:
        a = np.asarray(col)
    if a.dtype == np.float32 or a.dtype == np.float16:
        raise BarsInputError(f"column {name!r} is {a.dtype}: prices and quantities must be float64")
    if np.issubdtype(a.dtype, np.datetime64):
        if dtype is not np.int64:
            raise BarsInputError(f"column {name!r} must be numeric, got {a.dtype}")
        a = a.astype("datetime64[us]").view(np.int64)
    if a.dtype == object:
        raise BarsInputError(f"column {name!r} must be numeric, got object (nulls or mixed values?)")
    if dtype is np.int64 and not np.issubdtype(a.dtype, np.integer):
        raise BarsInputError(f"column {name!r} must be int64 microseconds/ids, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def tick_arrays(ticks: Any) -> dict:
    """The tick columns of a DataFrame, pyarrow Table/RecordBatch or mapping, as numpy arrays.

    ``is_buyer_maker`` becomes ``side`` (uint8 codes, see :mod:`btsys.bars._nb`); a missing or
    null ``is_buyer_maker`` means "unknown": the tick rule signs those ticks.
    """
    if isinstance(ticks, (pa.Table, pa.RecordBatch)):
        names = set(ticks.schema.names)
        get = ticks.column
    elif isinstance(ticks, pd.DataFrame):
        names = set(ticks.columns)
        get = ticks.__getitem__
    elif isinstance(ticks, Mapping):
        names = set(ticks)
        get = ticks.__getitem__
    else:
        raise BarsInputError(
            f"ticks must be a DataFrame, a pyarrow Table or a mapping of columns, got {type(ticks).__name__}"
        )
    missing = [c for c in TICK_COLUMNS[:5] if c not in names]
    if missing:
        raise BarsInputError(f"ticks lack column(s) {missing}; tick columns are {TICK_COLUMNS}")
    out = {"ts": _num(get("ts"), "ts", np.int64), "trade_id": _num(get("trade_id"), "trade_id", np.int64)}
    for c in ("price", "qty", "quote_qty"):
        out[c] = _num(get(c), c, np.float64)
    n = len(out["ts"])
    out["side"] = (
        _side_codes(get("is_buyer_maker")) if "is_buyer_maker" in names else np.full(n, 2, dtype=np.uint8)
    )
    return out


# --------------------------------------------------------------------------- the stream
# one parallel kernel launch at a time per process (numba's default workqueue threading layer
# must not be entered from two threads at once); a stream that finds it busy runs one-pass
_PAR_LOCK = threading.Lock()


class BarStream:
    """Bars of one symbol's ordered tick stream, fed piece by piece.

    ``feed`` may be called with any cut of the stream (it does not matter where the cuts are);
    ``table()`` returns the completed bars so far plus, with ``keep_partial=True``, the open bar
    flagged ``is_partial``.

    Dynamic thresholds (tick/volume/dollar with ``threshold_mode='dynamic'``): the threshold of
    UTC day ``d`` is the mean daily measure of the calendar days ``d-lookback_days .. d-1`` (those
    on or after the stream's first day; a day without ticks counts as 0) divided by
    ``bars_per_day``. Warm-up: the first day (no history) uses the fixed ``threshold``; with
    ``warmup='fixed'`` every day with fewer than ``lookback_days`` days of history does. A bar
    keeps the threshold of the day its first tick falls on. Only days strictly before ``d`` are
    used, so there is no look-ahead.
    """

    BUF = 65_536
    #: threshold bars: pieces of at least this many ticks go through the two-pass kernel
    #: (:func:`~btsys.bars._nb.threshold_bars_par_nb`, bars reduced on all numba threads)
    PAR_MIN = 1 << 15
    #: False: one-pass kernels only (e.g. when other threads already keep the cores busy)
    parallel = True

    def __init__(self, spec: BarSpec | None = None, **options: Any):
        self.spec = spec if spec is not None else BarSpec.from_config(None, **options)
        s = self.spec
        self.ist, self.fst = _nb.new_state()
        self._out_i = np.empty((self.BUF, _nb.N_OUT_I), dtype=np.int64)
        self._out_f = np.empty((self.BUF, _nb.N_OUT_F), dtype=np.float64)
        self._n_out = 0
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_ticks = 0
        # first and last trade id of each bar, beside out_i/_chunks (see _trade_ids)
        self._tid_out = np.empty((self.BUF, 2), dtype=np.int64)
        self._tid_chunks: list[np.ndarray] = []
        self._open_first_tid = -1  # first trade id of the open bar
        self._prev_tid = -1  # trade id of the last tick of the previous feed
        # dynamic thresholds
        self.day_totals: dict[int, float] = {}
        self.day_thresholds: dict[int, float] = {}
        self._day: Optional[int] = None
        self._first_day: Optional[int] = None
        self._thr = float(s.threshold) if isinstance(s, ThresholdBarSpec) else np.nan
        self._bin_us = 0
        self._offset = None
        if s.kind == "time":
            iv = interval_us(s.interval)
            if isinstance(iv, int):
                self._bin_us = iv
            else:
                self._offset = iv
        if s.kind in FLOW_KINDS and s.imbalance_init is not None:
            self.ist[_nb.I_WARM] = 1
            self.fst[_nb.F_E_T] = s.expected_ticks_init
            self.fst[_nb.F_E_A] = s.imbalance_init
            self.fst[_nb.F_E_B] = s.imbalance_init

    # ---- dynamic thresholds
    def threshold_for_day(self, day: int) -> float:
        """Threshold of UTC day ``day`` (days since epoch) from the totals of earlier days only."""
        s = self.spec
        if self._first_day is None:
            self._first_day = day
        lo = max(day - int(s.lookback_days), self._first_day)
        n = day - lo
        if n <= 0 or (s.warmup == "fixed" and n < int(s.lookback_days)):
            return float(s.threshold)
        total = 0.0
        for k in range(lo, day):
            total += self.day_totals.get(k, 0.0)
        thr = total / n / float(s.bars_per_day)
        return thr if thr > 0.0 else float(s.threshold)

    def _enter_day(self, day: int) -> None:
        if self._day is not None:
            if day <= self._day:
                return  # same day continues (or out-of-order ticks: the kernel reports them)
            self.day_totals[self._day] = float(self.fst[_nb.F_DAY_TOTAL])
        self.fst[_nb.F_DAY_TOTAL] = 0.0
        self._day = day
        self._thr = self.threshold_for_day(day)
        self.day_thresholds[day] = self._thr

    # ---- feeding
    def feed(self, ticks: Any, source: str = "ticks", row0: int = 0) -> "BarStream":
        """Consume the next ticks (DataFrame, pyarrow Table/RecordBatch or mapping of columns).

        ``source`` and ``row0`` (the row of ``ticks[0]`` within the source) name bad rows in errors.
        """
        if isinstance(ticks, pa.Table):
            r = row0
            for batch in ticks.to_batches():
                self.feed_arrays(tick_arrays(batch), source, r)
                r += batch.num_rows
            return self
        return self.feed_arrays(tick_arrays(ticks), source, row0)

    def feed_arrays(self, a: Mapping[str, np.ndarray], source: str = "ticks", row0: int = 0) -> "BarStream":
        """Consume tick arrays as returned by :func:`tick_arrays` (no copies are made)."""
        n = len(a["ts"])
        if n == 0:
            return self
        if self.spec.dynamic:
            runs = _nb.day_runs_nb(a["ts"], DAY_US)
            for j in range(len(runs) - 1):
                lo, hi = int(runs[j]), int(runs[j + 1])
                self._enter_day(int(a["ts"][lo] // DAY_US))
                self._scan(a, lo, hi, source, row0)
        else:
            self._scan(a, 0, n, source, row0)
        self.n_ticks += n
        self._prev_tid = int(a["trade_id"][n - 1])
        return self

    def _scan(self, a, lo: int, hi: int, source: str, row0: int) -> None:
        s = self.spec
        args = (a["ts"], a["trade_id"], a["price"], a["qty"], a["quote_qty"], a["side"])
        bins = np.empty(0, dtype=np.int64)
        if self._offset is not None:
            bins = np.zeros(len(a["ts"]), dtype=np.int64)
            bins[lo:hi] = _calendar_bins(a["ts"][lo:hi], self._offset)
        i = lo
        while True:
            n0, i0 = self._n_out, i
            if s.kind in THRESHOLD_KINDS:
                kern = _nb.threshold_bars_nb
                par = (
                    self.parallel
                    and hi - i >= self.PAR_MIN
                    and numba.get_num_threads() > 1
                    and _PAR_LOCK.acquire(blocking=False)
                )
                try:
                    if par:
                        kern = _nb.threshold_bars_par_nb
                    i, self._n_out, err = kern(
                        *args,
                        THRESHOLD_KINDS[s.kind],
                        self._thr,
                        i,
                        hi,
                        self.ist,
                        self.fst,
                        self._out_i,
                        self._out_f,
                        self._n_out,
                    )
                finally:
                    if par:
                        _PAR_LOCK.release()
            elif s.kind == "time":
                label = float(self._bin_us) if self._bin_us else np.nan
                i, self._n_out, err = _nb.time_bars_nb(
                    *args,
                    self._bin_us,
                    bins,
                    label,
                    i,
                    hi,
                    self.ist,
                    self.fst,
                    self._out_i,
                    self._out_f,
                    self._n_out,
                )
            else:
                measure, run = FLOW_KINDS[s.kind]
                span_a = s.imbalance_span if s.imbalance_span is not None else s.ewma_span
                i, self._n_out, err = _nb.flow_bars_nb(
                    *args,
                    measure,
                    run,
                    float(s.expected_ticks_init),
                    2.0 / (s.ewma_span + 1.0),
                    2.0 / (span_a + 1.0),
                    int(s.min_ticks),
                    int(s.max_ticks),
                    i,
                    hi,
                    self.ist,
                    self.fst,
                    self._out_i,
                    self._out_f,
                    self._n_out,
                )
            self._trade_ids(a["trade_id"], n0, i0, i)
            if err:
                self._raise(a, i, err, source, row0)
            if self._n_out >= self.BUF:
                self._flush()
            if i >= hi:
                return

    def _trade_ids(self, tid: np.ndarray, n0: int, i0: int, i1: int) -> None:
        """First and last trade id of the bars a kernel call emitted (rows ``n0:_n_out``) after
        consuming ticks ``i0:i1`` of ``tid``.

        Bars cover the stream without gaps, so from the ticks of the bar still open (``I_N``) the
        last emitted bar closed ``I_N`` ticks before the end, and each earlier one ``n_ticks``
        before the next. A bar that opened in an earlier feed takes the remembered first id; a time
        bar closed by this feed's first tick takes the previous feed's last id."""
        n_open = int(self.ist[_nb.I_N]) if self.ist[_nb.I_HAS] else 0
        close = i1 - 1 - n_open  # row of the last emitted bar's closing tick (-1: previous feed)
        for r in range(self._n_out - 1, n0 - 1, -1):
            start = close - int(self._out_i[r, 2]) + 1
            self._tid_out[r, 1] = tid[close] if close >= 0 else self._prev_tid
            self._tid_out[r, 0] = tid[start] if start >= 0 else self._open_first_tid
            close = start - 1
        if n_open and i1 - n_open >= 0:
            self._open_first_tid = int(tid[i1 - n_open])

    def _flush(self) -> None:
        if self._n_out:
            self._chunks.append((self._out_i[: self._n_out].copy(), self._out_f[: self._n_out].copy()))
            self._tid_chunks.append(self._tid_out[: self._n_out].copy())
            self._n_out = 0

    def _raise(self, a, i: int, err: int, source: str, row0: int):
        vals = ", ".join(f"{c}={a[c][i].item()!r}" for c in ("ts", "trade_id", "price", "qty", "quote_qty"))
        extra = ""
        if err == _nb.ERR_ORDER:
            extra = (
                f"; previous tick ts={int(self.ist[_nb.I_LAST_TS])}, trade_id={int(self.ist[_nb.I_LAST_TID])}"
            )
        raise BarsInputError(
            f"{source}: row {row0 + i}: {_nb.ERR_TEXT.get(err, f'error {err}')} ({vals}{extra})"
        )

    # ---- results
    @property
    def has_partial(self) -> bool:
        return bool(self.ist[_nb.I_HAS])

    @property
    def n_bars(self) -> int:
        """Completed bars so far."""
        return sum(len(c[0]) for c in self._chunks) + self._n_out

    def table(self, keep_partial: bool = False) -> pa.Table:
        """The bars so far as a pyarrow Table (schema :data:`BAR_SCHEMA`)."""
        self._flush()
        ci = [c[0] for c in self._chunks]
        cf = [c[1] for c in self._chunks]
        partial = keep_partial and self.has_partial
        if partial:
            ist, fst = self.ist, self.fst
            ci.append(np.array([[ist[_nb.I_TS_OPEN], ist[_nb.I_TS_CLOSE], ist[_nb.I_N]]], dtype=np.int64))
            vol = fst[_nb.F_VOL]
            cf.append(
                np.array(
                    [
                        [
                            fst[_nb.F_OPEN],
                            fst[_nb.F_HIGH],
                            fst[_nb.F_LOW],
                            fst[_nb.F_CLOSE],
                            vol,
                            fst[_nb.F_QVOL],
                            fst[_nb.F_BUY],
                            fst[_nb.F_PV] / vol,
                            fst[_nb.F_THR],
                        ]
                    ]
                )
            )
        tids = list(self._tid_chunks)
        if partial:
            tids.append(np.array([[self._open_first_tid, ist[_nb.I_LAST_TID]]], dtype=np.int64))
        oi = np.concatenate(ci) if ci else np.empty((0, _nb.N_OUT_I), dtype=np.int64)
        of = np.concatenate(cf) if cf else np.empty((0, _nb.N_OUT_F), dtype=np.float64)
        ti = np.concatenate(tids) if tids else np.empty((0, 2), dtype=np.int64)
        n_done = len(oi) - int(partial)
        self._chunks = [(oi[:n_done], of[:n_done])] if n_done else []  # merged, for the next call
        self._tid_chunks = [ti[:n_done]] if n_done else []
        is_partial = np.zeros(len(oi), dtype=bool)
        if partial:
            is_partial[-1] = True
        cols = [oi[:, 0].copy(), oi[:, 1].copy()]
        cols += [of[:, k].copy() for k in range(7)]
        cols += [
            oi[:, 2].copy(),
            of[:, 7].copy(),
            of[:, 8].copy(),
            is_partial,
            ti[:, 0].copy(),
            ti[:, 1].copy(),
        ]
        return pa.Table.from_arrays([pa.array(c) for c in cols], schema=BAR_SCHEMA)

    def to_pandas(self, keep_partial: bool = False) -> pd.DataFrame:
        return self.table(keep_partial).to_pandas()


def build_bars(
    ticks: Any,
    kind: str = "dollar",
    threshold: Optional[float] = None,
    *,
    keep_partial: bool = False,
    spec: Optional[BarSpec] = None,
    **options: Any,
) -> pd.DataFrame:
    """Bars of one symbol's ticks, in memory (the same kernels as the Spark job).

    Parameters
    ----------
    ticks : pandas.DataFrame or pyarrow.Table
        Tick-table columns ``ts`` (int64 µs), ``trade_id``, ``price``, ``qty``, ``quote_qty``,
        ``is_buyer_maker``, sorted by (``ts``, ``trade_id``). Zero or negative quantities, bad
        prices and disorder raise :class:`BarsInputError` naming the row.
    kind : str
        ``time``, ``tick``, ``volume``, ``dollar``, ``{tick,volume,dollar}_{imbalance,run}``.
    threshold : float
        Fixed threshold of tick/volume/dollar bars (ticks, base qty, quote notional); in dynamic
        mode the warm-up threshold.
    keep_partial : bool
        Keep the trailing unfinished bar (flagged ``is_partial=True``). Otherwise it is dropped.
    spec : BarSpec, optional
        Settings object instead of ``kind``/``threshold``/``options``.
    **options
        Any other ``bars`` config key: ``threshold_mode``, ``bars_per_day``, ``lookback_days``,
        ``warmup``, ``interval``, ``expected_ticks_init``, ``ewma_span``, ``imbalance_init``,
        ``imbalance_span``, ``min_ticks``, ``max_ticks``.

    Returns
    -------
    pandas.DataFrame
        One row per bar, the columns of :data:`BAR_SCHEMA` (the bar table and ``threshold``,
        ``is_partial``).
    """
    if spec is None:
        given = {"threshold": threshold} if threshold is not None else {}
        spec = BarSpec.from_config(None, kind=kind, **given, **options)
    stream = BarStream(spec)
    stream.feed(ticks)
    return stream.to_pandas(keep_partial)
