"""Validation of one parsed source file (tick table), vectorised with numpy.

Every row that is dropped is counted by reason, with the first few row numbers named in
``examples``; nothing is dropped silently. Reasons:

``bad_price``      price not finite or ``<= 0``
``bad_qty``        qty not finite or ``<= 0``
``out_of_period``  timestamp outside the dates the file covers (a daily file holds one UTC day)
``duplicate``      trade id seen earlier in the same file (the first occurrence is kept)

Also reported (not dropped): ``id_gaps`` (ids missing inside the file's id range) and
``gap_events``, ``unsorted`` (the file was not in (ts, id) order; it is sorted), and ``truncated``
(the data starts or ends more than ``edge_tolerance_us`` inside the file's period, or the last line
was cut). Duplicates *across* files are handled by :func:`btsys.data.ingest.dedupe_across_files`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

US_PER_DAY = 86_400_000_000
EPOCH = dt.date(1970, 1, 1)


def day_number(date: str) -> int:
    return (dt.date.fromisoformat(date) - EPOCH).days


def day_string(day: int) -> str:
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()


@dataclass
class ValidationReport:
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    id_gaps: int = 0
    gap_events: int = 0
    unsorted: bool = False
    truncated: bool = False
    empty_days: list = field(default_factory=list)
    first_ts: int | None = None
    last_ts: int | None = None
    min_id: int | None = None
    max_id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _note(rep: ValidationReport, reason: str, mask: np.ndarray, name: str, row_base: int, what) -> None:
    n = int(mask.sum())
    if not n:
        return
    rep.dropped[reason] = rep.dropped.get(reason, 0) + n
    for i in np.flatnonzero(mask)[:3]:
        rep.examples.append(f"{name} row {int(i) + row_base}: {reason} ({what(int(i))})")


def validate_ticks(
    table: pa.Table,
    name: str,
    first_date: str,
    last_date: str,
    row_base: int = 1,
    edge_tolerance_us: int = 3_600_000_000,
    cut_last_line: bool = False,
) -> tuple[pa.Table, ValidationReport]:
    """Validate, dedupe and sort one file's ticks; returns the clean table and the report.

    Parameters
    ----------
    table : tick table in file order (DESIGN.md columns).
    name : file name used in messages.
    first_date, last_date : the UTC dates (inclusive) the file covers.
    row_base : CSV line number of the first data row (2 when the file has a header).
    edge_tolerance_us : how far inside its period the data may start/end before ``truncated``.
    cut_last_line : the parser skipped a malformed row (a cut last line also means truncation).
    """
    rep = ValidationReport(rows_in=table.num_rows)
    n = table.num_rows
    ts = table["ts"].to_numpy()
    ids = table["trade_id"].to_numpy()
    price = table["price"].to_numpy()
    qty = table["qty"].to_numpy()
    lo = day_number(first_date) * US_PER_DAY
    hi = (day_number(last_date) + 1) * US_PER_DAY

    bad_price = ~(np.isfinite(price) & (price > 0))
    bad_qty = ~(np.isfinite(qty) & (qty > 0)) & ~bad_price
    out = ((ts < lo) | (ts >= hi)) & ~bad_price & ~bad_qty
    _note(rep, "bad_price", bad_price, name, row_base, lambda i: f"price {float(price[i])!r}")
    _note(rep, "bad_qty", bad_qty, name, row_base, lambda i: f"qty {float(qty[i])!r}")
    _note(
        rep,
        "out_of_period",
        out,
        name,
        row_base,
        lambda i: f"ts {int(ts[i])} outside {first_date}..{last_date}",
    )
    keep = ~(bad_price | bad_qty | out)

    # ids: contiguity over every parsed row (a bad row still used its id), duplicates dropped.
    d = np.diff(ids)
    if n and np.all(d > 0):
        sorted_ids, dup = ids, None
    else:
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        same = sorted_ids[1:] == sorted_ids[:-1]
        dup = np.zeros(n, dtype=bool)
        dup[order[1:][same]] = True
        d = np.diff(sorted_ids)
    if n:
        steps = d[d > 1]
        rep.id_gaps, rep.gap_events = int((steps - 1).sum()), int(steps.size)
        rep.min_id, rep.max_id = int(sorted_ids[0]), int(sorted_ids[-1])
    if dup is not None:
        dmask = dup & keep
        _note(rep, "duplicate", dmask, name, row_base, lambda i: f"trade id {int(ids[i])}")
        keep &= ~dup

    if not keep.all():
        table = table.filter(pa.array(keep))
        ts, ids = ts[keep], ids[keep]
    # sort by (ts, trade_id) when the file is not already in that order
    if ts.size > 1:
        dts = np.diff(ts)
        if (dts < 0).any() or ((dts == 0) & (np.diff(ids) < 0)).any():
            rep.unsorted = True
            order = np.lexsort((ids, ts))
            table = table.take(pa.array(order))
            ts, ids = ts[order], ids[order]
    rep.rows_out = table.num_rows
    if ts.size:
        rep.first_ts, rep.last_ts = int(ts[0]), int(ts[-1])
        rep.truncated = bool(
            cut_last_line or ts[0] - lo > edge_tolerance_us or hi - 1 - ts[-1] > edge_tolerance_us
        )
        days = ts // US_PER_DAY  # ts is sorted here
        seen = set(days[np.concatenate([[True], days[1:] != days[:-1]])].tolist())
        rep.empty_days = [
            day_string(x) for x in range(day_number(first_date), day_number(last_date) + 1) if x not in seen
        ]
    else:
        rep.truncated = True
        rep.empty_days = [day_string(x) for x in range(day_number(first_date), day_number(last_date) + 1)]
    return table, rep


def split_by_date(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """Split a ts-sorted tick table into (UTC date, rows) slices (zero-copy)."""
    ts = table["ts"].to_numpy()
    if not ts.size:
        return []
    days = ts // US_PER_DAY
    cuts = np.flatnonzero(np.diff(days)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [ts.size]])
    return [(day_string(days[s]), table.slice(int(s), int(e - s))) for s, e in zip(starts, ends)]
