"""Streaming validation of one source file's ticks, finalised one UTC day at a time.

:class:`TickValidator` takes the parsed batches of a file in file order (with their CSV lines) and
keeps its state across batches, so the result does not depend on where blocks were cut. Every row
that is dropped is counted by reason, and the first few are named by CSV line in ``examples``;
nothing is dropped silently. Reasons:

``bad_price``      price not finite or ``<= 0``
``bad_qty``        qty not finite or ``<= 0``
``out_of_period``  timestamp outside the dates the file covers (a daily file holds one UTC day)
``duplicate``      trade id seen on an earlier line of the same file and day (the first is kept)

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
from typing import Optional, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

US_PER_DAY = 86_400_000_000
EPOCH = dt.date(1970, 1, 1)
EXAMPLES_PER_REASON = 3
_LINE = "__line"
_MAX_RUNS = 1_000_000  # id runs kept for exact gap counts; beyond, gaps between days use day ranges


def day_number(date: str) -> int:
    return (dt.date.fromisoformat(date) - EPOCH).days


def day_string(day: int) -> str:
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()


def table_version(table: pa.Table) -> str:
    """Content address of a tick table: SHA-256 of its column values (not of any file's bytes),
    so the same ticks from a daily or a monthly file have the same version."""
    h = hashlib.sha256()
    for col in table.columns:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        h.update(np.ascontiguousarray(arr.to_numpy(zero_copy_only=False)).view(np.uint8).tobytes())
    h.update(str(table.num_rows).encode())
    return h.hexdigest()[:32]


def sort_ticks(table: pa.Table) -> tuple[pa.Table, bool]:
    """``table`` sorted by (ts, trade_id) and whether it had to be sorted.

    One stable argsort of a packed (ts, id) key when both spans fit in 63 bits (fast on nearly
    sorted input), else a lexsort.
    """
    ts = table["ts"].to_numpy()
    ids = table["trade_id"].to_numpy()
    if ts.size < 2:
        return table, False
    dts = np.diff(ts)
    if not ((dts < 0).any() or ((dts == 0) & (np.diff(ids) < 0)).any()):
        return table, False
    t0, i0 = int(ts.min()), int(ids.min())
    tspan, ispan = int(ts.max()) - t0, int(ids.max()) - i0
    if tspan < (1 << 37) and ispan < (1 << 26):
        order = np.argsort(((ts - t0) << 26) | (ids - i0), kind="stable")
    else:
        order = np.lexsort((ids, ts))
    return table.take(pa.array(order)), True


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

    def feed(self, table: pa.Table, lines: np.ndarray) -> None:
        """One batch of the file (tick-table columns, file order) and the CSV line of each row."""
        self.rep.rows_in += table.num_rows
        ts = table["ts"].to_numpy()
        ids = table["trade_id"].to_numpy()
        price = table["price"].to_numpy()
        qty = table["qty"].to_numpy()
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
        keep = ~(bad_price | bad_qty | out)
        if not keep.all():
            table, ts, ids, lines = table.filter(pa.array(keep)), ts[keep], ids[keep], lines[keep]
        if not ts.size:
            return
        self._check_order(ts, ids)
        table = table.append_column(_LINE, pa.array(lines, pa.int64()))
        days = ts // US_PER_DAY
        if (days == days[0]).all():
            self._add(int(days[0]), table)
            return
        for d in np.unique(days):
            self._add(int(d), table.filter(pa.array(days == d)))

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

    def _add(self, day: int, table: pa.Table) -> None:
        if self._current is None or day > self._current:
            if self._current is not None:
                self._finalise(self._current, self._open)
            self._current, self._open = day, []
        if day == self._current:
            self._open.append(table)
            return
        self._late.setdefault(day, []).append(table)  # a row for a day already finalised
        self._late_bytes += table.nbytes
        if self._late_bytes > self.late_spill_bytes:
            self._spill()

    def _spill(self) -> None:
        if self.tmp_dir is None:
            self.tmp_dir = tempfile.mkdtemp(prefix="btsys-late-")
        for day, parts in self._late.items():
            keep = []
            for p in parts:
                if isinstance(p, pa.Table):
                    path = os.path.join(self.tmp_dir, f"late-{day}-{uuid.uuid4().hex[:8]}.arrow")
                    feather.write_feather(p, path, compression="lz4")
                    p = path
                keep.append(p)
            self._late[day] = keep
        self._late_bytes = 0

    # ----------------------------------------------------------------- days
    def _finalise(self, day: int, parts: list) -> None:
        """Dedupe (first line wins), sort and hand one day to the sink."""
        date = day_string(day)
        t = pa.concat_tables(parts).combine_chunks() if len(parts) > 1 else parts[0].combine_chunks()
        parts.clear()  # the batches are copied into ``t``: hold one day, not two
        ids = t["trade_id"].to_numpy()
        if ids.size > 1 and not (np.diff(ids) > 0).all():
            order = np.argsort(ids, kind="stable")  # stable: among equal ids the earliest line first
            same = ids[order][1:] == ids[order][:-1]
            dup = np.zeros(ids.size, dtype=bool)
            dup[order[1:][same]] = True
            if dup.any():
                lines = t[_LINE].to_numpy()
                self._note("duplicate", dup, lines, lambda i: f"trade id {int(ids[i])}")
                t = t.filter(pa.array(~dup))
        t, _ = sort_ticks(t.drop_columns([_LINE]))
        ids = t["trade_id"].to_numpy()
        ts = t["ts"].to_numpy()
        uniq = np.sort(ids) if ids.size > 1 and not (np.diff(ids) > 0).all() else ids
        runs = _runs(uniq)
        old = self.rep.days.get(date)
        self._runs_total += len(runs) - (len(old.runs) if old is not None and old.runs is not None else 0)
        version = table_version(t)
        key = self.sink.write(date, t, version)
        self.rep.days[date] = DayResult(
            date=date,
            key=key,
            rows=t.num_rows,
            min_id=int(uniq[0]) if uniq.size else None,
            max_id=int(uniq[-1]) if uniq.size else None,
            first_ts=int(ts[0]) if ts.size else None,
            last_ts=int(ts[-1]) if ts.size else None,
            version=version,
            runs=runs if self._runs_total <= _MAX_RUNS else None,
        )

    def _merge_late(self, day: int, parts: list) -> None:
        date = day_string(day)
        tables = [feather.read_table(p) if isinstance(p, str) else p for p in parts]
        if date in self.rep.days:  # its finalised rows all come from earlier lines than the late ones
            base = self.sink.read(date)
            base = base.append_column(_LINE, pa.array(np.zeros(base.num_rows, np.int64)))
            tables.insert(0, base)
        self._finalise(day, tables)
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


def _runs_of(table: pa.Table) -> np.ndarray:
    return _runs(np.unique(table["trade_id"].to_numpy()))
