"""Streaming validation of one source file's ticks, finalised one UTC day at a time.

:class:`TickValidator` takes the parsed batches of a file in file order (with their CSV lines) and
keeps its state across batches, so the result does not depend on where blocks were cut. Every row
that is dropped is counted by reason, and the first few are named by CSV line in ``examples``;
nothing is dropped silently. Reasons:

``bad_price``      price not finite or ``<= 0``
``bad_qty``        qty not finite or ``<= 0``
``out_of_period``  timestamp outside the dates the file covers (a daily file holds one UTC day)
``duplicate``      trade id seen on an earlier line of the same file and day (the first is kept)

The drops are also counted per UTC day (``ValidationReport.dropped_by_day``: rows with a bad price
or qty whose timestamp lies in that day, duplicates within the day), so each day of a monthly file
has exact drop counts; rows that belong to no day of the file (``out_of_period``, and the CSV
reader's ``malformed``/``unparseable`` rows) are counted for the file only.

Rows go to their UTC day. A day is finalised (deduplicated, sorted by (ts, trade_id), handed to a
:class:`DaySink`) as soon as a row of a later day arrives, so memory holds one day, not the file.
A row that arrives for a day already finalised (an unsorted monthly file) is kept aside (spilled
to local disk past ``late_spill_bytes``) and merged into its day at the end. Duplicate trade ids
*across* days are resolved when the lake is written (:mod:`btsys.data.lake`: the earlier day wins).

Also reported (not dropped): ``id_gaps`` (ids missing between the file's smallest and largest id)
and ``gap_events``, ``unsorted`` (the rows were not in (ts, trade_id) order; each day is sorted),
``truncated`` (the data starts or ends more than ``edge_tolerance_us`` inside the file's period),
``empty_days`` and, per day, ``complete``: False for the day of a truncated daily file, and for a
day of a monthly file next to a day of the month without data that starts or ends more than
``edge_tolerance_us`` inside it (the file may have been cut there: a short monthly upload).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from btsys.data.binance import TICK_SCHEMA

US_PER_DAY = 86_400_000_000
EPOCH = dt.date(1970, 1, 1)
EXAMPLES_PER_REASON = 3
_LINE = "__line"
_MAX_RUNS = 1_000_000  # id runs kept for exact gap counts; beyond, gaps between days use day ranges


def day_number(date: str) -> int:
    return (dt.date.fromisoformat(date) - EPOCH).days


def day_string(day: int) -> str:
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()


TICK_COLUMNS = tuple(TICK_SCHEMA.names)


def columns_version(cols: Mapping[str, np.ndarray]) -> str:
    """Content address of a day's ticks: SHA-256 of its column values (not of any file's bytes),
    so the same ticks from a daily or a monthly file have the same version."""
    h = hashlib.sha256()
    for c in TICK_COLUMNS:
        h.update(memoryview(np.ascontiguousarray(cols[c])).cast("B"))
    h.update(str(len(cols["ts"])).encode())
    return h.hexdigest()[:32]


def table_version(table: pa.Table) -> str:
    """:func:`columns_version` of a tick table."""
    return columns_version({c: table[c].to_numpy(zero_copy_only=False) for c in TICK_COLUMNS})


def sort_order(ts: np.ndarray, ids: np.ndarray) -> Optional[np.ndarray]:
    """The permutation that sorts rows by (ts, trade_id), or None when they already are.

    One stable argsort of a packed (ts, id) key when both spans fit in 63 bits (fast on nearly
    sorted input), else a lexsort.
    """
    if ts.size < 2:
        return None
    dts = np.diff(ts)
    if not ((dts < 0).any() or ((dts == 0) & (np.diff(ids) < 0)).any()):
        return None
    t0, i0 = int(ts.min()), int(ids.min())
    if int(ts.max()) - t0 < (1 << 37) and int(ids.max()) - i0 < (1 << 26):
        return np.argsort(((ts - t0) << 26) | (ids - i0), kind="stable")
    return np.lexsort((ids, ts))


def _table(cols: Mapping[str, np.ndarray]) -> pa.Table:
    return pa.table([pa.array(cols[f.name], f.type) for f in TICK_SCHEMA], schema=TICK_SCHEMA)


class DaySink(Protocol):
    """Where finalised days go (staging files in the ingest; a dict in tests)."""

    def write(self, date: str, table: pa.Table, version: str) -> str: ...

    def read(self, date: str) -> pa.Table: ...


class MemorySink:
    """A :class:`DaySink` holding the days in a dict (tests, small files)."""

    def __init__(self):
        self.days: dict[str, pa.Table] = {}

    def write(self, date: str, table: pa.Table, version: str) -> str:
        self.days[date] = table
        return date

    def read(self, date: str) -> pa.Table:
        return self.days[date]


@dataclass
class DayResult:
    date: str
    key: str  # where the sink put it
    rows: int
    min_id: Optional[int]
    max_id: Optional[int]
    first_ts: Optional[int]
    last_ts: Optional[int]
    version: str
    complete: bool = True
    runs: Optional[np.ndarray] = None  # (k, 2) runs of consecutive unique ids, or None when too many

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("date", "key", "rows", "min_id", "max_id", "first_ts", "last_ts", "version", "complete")
        }


@dataclass
class ValidationReport:
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict = field(default_factory=dict)
    dropped_by_day: dict = field(default_factory=dict)  # date -> reason -> rows (module docstring)
    examples: list = field(default_factory=list)  # ["<name> line N: reason (what)"]
    id_gaps: int = 0
    gap_events: int = 0
    unsorted: bool = False
    truncated: bool = False
    empty_days: list = field(default_factory=list)
    first_ts: Optional[int] = None
    last_ts: Optional[int] = None
    min_id: Optional[int] = None
    max_id: Optional[int] = None
    days: dict = field(default_factory=dict)  # date -> DayResult


def _runs(sorted_unique: np.ndarray) -> np.ndarray:
    if not sorted_unique.size:
        return np.empty((0, 2), np.int64)
    cut = np.flatnonzero(np.diff(sorted_unique) > 1) + 1
    starts = sorted_unique[np.concatenate([[0], cut])]
    ends = sorted_unique[np.concatenate([cut - 1, [sorted_unique.size - 1]])]
    return np.stack([starts, ends], axis=1)


def _gaps(runs: np.ndarray) -> tuple[int, int]:
    """(missing ids, holes) between the runs' min and max (runs may overlap)."""
    if not len(runs):
        return 0, 0
    runs = runs[np.argsort(runs[:, 0], kind="stable")]
    reach = np.maximum.accumulate(runs[:, 1])
    holes = runs[1:, 0] - reach[:-1] - 1
    holes = holes[holes > 0]
    return int(holes.sum()), int(holes.size)


class TickValidator:
    """Validate one file's tick batches as they stream; see the module docstring.

    Parameters
    ----------
    name : file name used in messages.
    first_date, last_date : the UTC dates (inclusive) the file covers.
    sink : receives each finalised day.
    edge_tolerance_us : how far inside its period the data may start/end before ``truncated``.
    late_spill_bytes : rows of already finalised days kept in memory up to this size, then spilled.
    tmp_dir : where late rows spill (a temporary directory by default).
    """

    def __init__(
        self,
        name: str,
        first_date: str,
        last_date: str,
        sink: DaySink,
        edge_tolerance_us: int = 3_600_000_000,
        late_spill_bytes: int = 256 << 20,
        tmp_dir: Optional[str] = None,
    ):
        self.name, self.first_date, self.last_date, self.sink = name, first_date, last_date, sink
        self.lo = day_number(first_date) * US_PER_DAY
        self.hi = (day_number(last_date) + 1) * US_PER_DAY
        self.edge_tolerance_us = edge_tolerance_us
        self.late_spill_bytes, self.tmp_dir = late_spill_bytes, tmp_dir
        self.rep = ValidationReport()
        self._examples: dict[str, list] = {}
        self._last: Optional[tuple[int, int]] = None
        self._current: Optional[int] = None
        self._open: list[pa.Table] = []
        self._late: dict[int, list] = {}  # day -> [table | spilled path]
        self._late_bytes = 0
        self._runs_total = 0

    # ----------------------------------------------------------------- rows
    def _note(self, reason: str, mask: np.ndarray, lines: np.ndarray, what) -> None:
        n = int(mask.sum())
        if not n:
            return
        self.rep.dropped[reason] = self.rep.dropped.get(reason, 0) + n
        ex = self._examples.setdefault(reason, [])
        for i in np.flatnonzero(mask)[: max(0, EXAMPLES_PER_REASON - len(ex))]:
            ex.append((int(lines[i]), f"{reason} ({what(int(i))})"))

    def _note_days(self, reason: str, days: np.ndarray) -> None:
        """Count dropped rows against the UTC days (epoch day numbers) they belong to."""
        for d, n in zip(*np.unique(days, return_counts=True), strict=True):
            per = self.rep.dropped_by_day.setdefault(day_string(int(d)), {})
            per[reason] = per.get(reason, 0) + int(n)

    def feed(self, table: pa.Table, lines: np.ndarray) -> None:
        """One batch of the file (tick-table columns, file order) and the CSV line of each row."""
        self.rep.rows_in += table.num_rows
        cols = {c: table[c].to_numpy(zero_copy_only=False) for c in TICK_COLUMNS}
        ts, price, qty = cols["ts"], cols["price"], cols["qty"]
        bad_price = ~(np.isfinite(price) & (price > 0))
        bad_qty = ~(np.isfinite(qty) & (qty > 0)) & ~bad_price
        out = ((ts < self.lo) | (ts >= self.hi)) & ~bad_price & ~bad_qty
        self._note("bad_price", bad_price, lines, lambda i: f"price {float(price[i])!r}")
        self._note("bad_qty", bad_qty, lines, lambda i: f"qty {float(qty[i])!r}")
        self._note(
            "out_of_period",
            out,
            lines,
            lambda i: f"ts {int(ts[i])} outside {self.first_date}..{self.last_date}",
        )
        for reason, mask in (("bad_price", bad_price), ("bad_qty", bad_qty)):
            if mask.any():  # the rows of the file's days
                self._note_days(reason, ts[mask & (ts >= self.lo) & (ts < self.hi)] // US_PER_DAY)
        cols[_LINE] = lines
        keep = ~(bad_price | bad_qty | out)
        if not keep.all():
            cols = {k: v[keep] for k, v in cols.items()}
        if not cols["ts"].size:
            return
        self._check_order(cols["ts"], cols["trade_id"])
        days = cols["ts"] // US_PER_DAY
        if (days == days[0]).all():
            self._add(int(days[0]), cols)
            return
        for d in np.unique(days):
            m = days == d
            self._add(int(d), {k: v[m] for k, v in cols.items()})

    def _check_order(self, ts: np.ndarray, ids: np.ndarray) -> None:
        r = self.rep
        if not r.unsorted:
            dts = np.diff(ts)
            if (dts < 0).any() or ((dts == 0) & (np.diff(ids) < 0)).any():
                r.unsorted = True
            elif self._last is not None and (int(ts[0]), int(ids[0])) < self._last:
                r.unsorted = True
        self._last = (int(ts[-1]), int(ids[-1]))
        r.first_ts = int(ts.min()) if r.first_ts is None else min(r.first_ts, int(ts.min()))
        r.last_ts = int(ts.max()) if r.last_ts is None else max(r.last_ts, int(ts.max()))

    def _add(self, day: int, cols: dict) -> None:
        if self._current is None or day > self._current:
            if self._current is not None:
                self._finalise(self._current, self._open)
            self._current, self._open = day, []
        if day == self._current:
            self._open.append(cols)
            return
        self._late.setdefault(day, []).append(cols)  # rows for a day already finalised
        self._late_bytes += sum(v.nbytes for v in cols.values())
        if self._late_bytes > self.late_spill_bytes:
            self._spill()

    def _spill(self) -> None:
        if self.tmp_dir is None:
            self.tmp_dir = tempfile.mkdtemp(prefix="btsys-late-")
        for day, parts in self._late.items():
            keep = []
            for p in parts:
                if isinstance(p, dict):
                    path = os.path.join(self.tmp_dir, f"late-{day}-{uuid.uuid4().hex[:8]}.arrow")
                    feather.write_feather(pa.table(p), path, compression="lz4")
                    p = path
                keep.append(p)
            self._late[day] = keep
        self._late_bytes = 0

    # ----------------------------------------------------------------- days
    def _finalise(self, day: int, parts: list) -> None:
        """Dedupe (first line wins), sort and hand one day to the sink (numpy, one copy of the day)."""
        date = day_string(day)
        cols = _concat(parts)  # empties ``parts`` column by column: one day in memory, not two
        ids = cols["trade_id"]
        if ids.size > 1 and not (np.diff(ids) > 0).all():
            order = np.argsort(ids, kind="stable")  # stable: among equal ids the earliest line first
            same = ids[order][1:] == ids[order][:-1]
            if same.any():
                dup = np.zeros(ids.size, dtype=bool)
                dup[order[1:][same]] = True
                self._note("duplicate", dup, cols[_LINE], lambda i: f"trade id {int(ids[i])}")
                self._note_days("duplicate", np.full(int(dup.sum()), day))
                for k in list(cols):
                    cols[k] = cols[k][~dup]
        del cols[_LINE]
        order = sort_order(cols["ts"], cols["trade_id"])
        if order is not None:
            for k in list(cols):  # one column at a time: one column of extra memory
                cols[k] = cols[k][order]
        ids, ts = cols["trade_id"], cols["ts"]
        uniq = np.sort(ids) if ids.size > 1 and not (np.diff(ids) > 0).all() else ids
        runs = _runs(uniq)
        old = self.rep.days.get(date)
        self._runs_total += len(runs) - (len(old.runs) if old is not None and old.runs is not None else 0)
        version = columns_version(cols)
        key = self.sink.write(date, _table(cols), version)
        self.rep.days[date] = DayResult(
            date=date,
            key=key,
            rows=int(ts.size),
            min_id=int(uniq[0]) if uniq.size else None,
            max_id=int(uniq[-1]) if uniq.size else None,
            first_ts=int(ts[0]) if ts.size else None,
            last_ts=int(ts[-1]) if ts.size else None,
            version=version,
            runs=runs if self._runs_total <= _MAX_RUNS else None,
        )

    def _merge_late(self, day: int, parts: list) -> None:
        date = day_string(day)
        chunks = [_numpy(feather.read_table(p)) if isinstance(p, str) else p for p in parts]
        if date in self.rep.days:  # its finalised rows all come from earlier lines than the late ones
            base = _numpy(self.sink.read(date))
            base[_LINE] = np.zeros(base["ts"].size, np.int64)
            chunks.insert(0, base)
        self._finalise(day, chunks)
        for p in parts:
            if isinstance(p, str):
                os.remove(p)

    def finish(self) -> ValidationReport:
        """Finalise the last day and the late rows; file-level statistics."""
        if self._current is not None:
            self._finalise(self._current, self._open)
            self._open = []
        for day in sorted(self._late):
            self._merge_late(day, self._late.pop(day))
        r = self.rep
        r.examples = [
            f"{self.name} line {ln}: {msg}"
            for ln, msg in sorted(x for ex in self._examples.values() for x in ex)
        ]
        days = [r.days[d] for d in sorted(r.days) if r.days[d].rows]
        r.rows_out = sum(d.rows for d in days)
        if days:
            r.min_id = min(d.min_id for d in days)
            r.max_id = max(d.max_id for d in days)
            if all(d.runs is not None for d in days):
                r.id_gaps, r.gap_events = _gaps(np.concatenate([d.runs for d in days]))
            else:  # too many runs to keep: gaps inside each day plus gaps between day ranges
                inside = [_gaps(_runs_of(self.sink.read(d.date))) for d in days]
                between = _gaps(np.array([[d.min_id, d.max_id] for d in days], np.int64))
                r.id_gaps = sum(g for g, _ in inside) + between[0]
                r.gap_events = sum(e for _, e in inside) + between[1]
        tol = self.edge_tolerance_us
        late_start = r.first_ts is not None and r.first_ts - self.lo > tol
        early_end = r.last_ts is not None and self.hi - 1 - r.last_ts > tol
        r.truncated = not days or late_start or early_end
        seen = {d.date for d in days}
        n0, n1 = day_number(self.first_date), day_number(self.last_date)
        for d in days:  # may the file have been cut inside this day?
            n = day_number(d.date)
            if n0 == n1:
                d.complete = not r.truncated
                continue
            # a day of a longer file: only next to a day of the period without data
            cut_start = n > n0 and day_string(n - 1) not in seen and d.first_ts - n * US_PER_DAY > tol
            cut_end = n < n1 and day_string(n + 1) not in seen and (n + 1) * US_PER_DAY - 1 - d.last_ts > tol
            d.complete = not (cut_start or cut_end)
        r.empty_days = [
            day_string(x)
            for x in range(day_number(self.first_date), day_number(self.last_date) + 1)
            if day_string(x) not in seen
        ]
        return r


def _concat(parts: list[dict]) -> dict:
    """One array per column from a day's parts, releasing each part's column once copied."""
    if len(parts) == 1:
        return parts.pop()
    out = {}
    for k in list(parts[0]):
        out[k] = np.concatenate([p[k] for p in parts])
        for p in parts:
            del p[k]
    parts.clear()
    return out


def _numpy(table: pa.Table) -> dict:
    return {c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names}


def _runs_of(table: pa.Table) -> np.ndarray:
    return _runs(np.unique(table["trade_id"].to_numpy()))
