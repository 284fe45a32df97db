"""The tick lake: one file per (market, dataset, symbol, UTC day), one truth per day.

Layout (under ``storage.root``)::

    lake/market=<m>/dataset=<d>/symbol=<S>/date=<YYYY-MM-DD>/part-0.parquet
    lake/_index/<m>/<d>/<S>.json          which source each day came from, its version, rows, ids
    lake/_manifest/<m>/<S>/<d>/<zip>.json one per source file (see btsys.data.ingest)
    lake/_locks/<m>-<d>-<S>.lock          held while a series is committed

Direct readers (pyarrow ``dataset``, Spark, DuckDB ``read_parquet('lake/*/*/*/*/*.parquet',
hive_partitioning=true)``) can rely on: exactly one Parquet file per day, each trade of a dataset
once (a trade id duplicated across days is kept in the earlier day only), rows sorted by
(ts, trade_id), a day file replaced only as a whole (atomic rename). ``trades`` and ``aggTrades``
are two views of the same trades: select one ``dataset=``. Paths starting with ``_`` are
metadata that those readers skip.

Each day file carries its *version* (a hash of its ticks, :func:`btsys.data.validate.table_version`)
in its Parquet metadata (``btsys.version``), and so does the series index. Listings record the
versions they saw; :func:`listing_is_current` and the bars stage check them, so nothing downstream
is computed from a day that changed under its listing.

:func:`commit_series` is the only writer of a series: under the series lock it picks each day's
source (a complete monthly file beats a daily file, which beats a monthly file cut inside that
day; a different ``base_url`` replaces), drops ids already present in an earlier day, records the
new versions as *pending* in the index, renames the staged files into place (days that lose rows
first, so no trade is ever visible twice), updates the affected manifests and clears the pending
mark. A kill at any point leaves pending days that no listing trusts and no rerun reuses; the
rerun rewrites them and converges to the lake a clean run gives.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from btsys.data.validate import table_version
from btsys.errors import DataError, TradesMissing
from btsys.failpoint import failpoint
from btsys.storage import LocalStorage, Storage

log = logging.getLogger("btsys.data.lake")

LAKE = "lake"
INDEX = f"{LAKE}/_index"
MANIFEST = f"{LAKE}/_manifest"
LOCKS = f"{LAKE}/_locks"
PART = "part-0.parquet"
VERSION_META = b"btsys.version"
MAX_DROPPED_IDS = 10_000  # ids a day dropped as held by earlier days, kept in the index up to this
#: rows per Parquet row group of a day file: the ``trade_id`` statistics of a group let a reader of
#: a few id ranges (:func:`read_trade_ranges`) skip the rest of the day (a 2 M-tick day: 123
#: groups; reading the groups of ~100 bars of such a day took 26-53 ms with 8,192-row groups,
#: 82-102 ms with 32,768 and 123-150 ms with 131,072, whole-day reads within the noise)
ROW_GROUP_ROWS = 16_384


@dataclass(frozen=True)
class Series:
    market: str
    dataset: str
    symbol: str

    def day_key(self, date: str) -> str:
        return f"{LAKE}/market={self.market}/dataset={self.dataset}/symbol={self.symbol}/date={date}/{PART}"

    @property
    def index_key(self) -> str:
        return f"{INDEX}/{self.market}/{self.dataset}/{self.symbol}.json"

    @property
    def lock_key(self) -> str:
        return f"{LOCKS}/{self.market}-{self.dataset}-{self.symbol}.lock"

    def manifest_key(self, file_name: str) -> str:
        return f"{MANIFEST}/{self.market}/{self.symbol}/{self.dataset}/{file_name}.json"


def priority(entry: Mapping[str, Any]) -> int:
    """Which source of a day wins: complete monthly 2, daily 1, monthly cut inside the day 0."""
    if entry.get("period") == "monthly":
        return 2 if entry.get("complete", True) else 0
    return 1


# --------------------------------------------------------------------------- files and index
def write_day(store: Storage, key: str, table: pa.Table, version: str) -> None:
    """Write one day's ticks (atomic) with its version in the Parquet metadata."""
    meta = dict(table.schema.metadata or {})
    meta[VERSION_META] = version.encode()
    store.write_parquet(table.replace_schema_metadata(meta), key, row_group_size=ROW_GROUP_ROWS)


def file_version(table: pa.Table) -> Optional[str]:
    v = (table.schema.metadata or {}).get(VERSION_META)
    return v.decode() if v is not None else None


class LakeChanged(DataError):
    """A lake day no longer holds what the listing entry that points at it recorded."""


_MMAP_FS = pafs.LocalFileSystem(use_mmap=True)


def read_day(store: Storage, part: Mapping[str, Any], columns: Optional[list] = None) -> pa.Table:
    """The ticks of one listing entry (an item of an ingest listing's ``partitions``): the one way
    the stages after the ingest read a lake day.

    The entry's ``rows`` and ``version`` are checked against the file as it is read (the version
    comes from the Parquet footer read with the data, no extra read), so nothing is computed from a
    day that changed under its listing. A local lake is memory-mapped (far fewer page faults than
    reading into fresh buffers).

    Raises
    ------
    DataError : the file cannot be read (named).
    LakeChanged : its row count or version differs from the entry's.
    """
    path = part["path"]
    try:
        if isinstance(store, LocalStorage):
            tbl = pq.read_table(store.arrow_path(path), columns=columns, filesystem=_MMAP_FS)
        else:
            tbl = store.read_parquet(path, columns=columns)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise DataError(f"{store.uri(path)}: cannot read columns {columns}: {e}") from e
    rows, version = part.get("rows"), part.get("version")
    if rows is not None and int(rows) != tbl.num_rows:
        raise LakeChanged(f"{store.uri(path)}: has {tbl.num_rows} rows, the ingest listing says {rows}")
    if version is not None and file_version(tbl) != version:
        raise LakeChanged(
            f"{store.uri(path)}: changed since the ingest listing (version {file_version(tbl)}, listed "
            f"{version})",
            hint="run again: the ingest lists the new day and what depends on it is recomputed",
        )
    return tbl


def _groups_in_ranges(pf: pq.ParquetFile, col: int, lo: np.ndarray, hi: np.ndarray) -> list[int]:
    """Row groups whose ``trade_id`` statistics overlap one of the sorted ranges ``[lo, hi]``
    (a group without statistics is kept)."""
    keep = []
    for g in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(g).column(col).statistics
        if st is None or not st.has_min_max:
            keep.append(g)
            continue
        k = np.searchsorted(lo, st.max, side="right") - 1  # the last range starting at or before max
        if k >= 0 and hi[: k + 1].max() >= st.min:
            keep.append(g)
    return keep


def read_trade_ranges(
    store: Storage,
    series: Series,
    date: str,
    lo: np.ndarray,
    hi: np.ndarray,
    columns: tuple = ("ts", "trade_id", "price"),
) -> pa.Table:
    """The trades of one lake day whose ``trade_id`` lies in one of the ranges ``[lo[k], hi[k]]``
    (ascending ``lo``), in the file's (ts, trade_id) order.

    Only the row groups whose ``trade_id`` statistics overlap a range are read, so a few short
    ranges read a few groups of the day, not the day. Counting what came back against what was
    expected is the caller's check (the lake knows no bars).

    Raises
    ------
    TradesMissing : the day has no file in this lake.
    DataError : the file cannot be read (named).
    """
    key = series.day_key(date)
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    cols = list(dict.fromkeys([*columns, "trade_id"]))
    try:
        if isinstance(store, LocalStorage):
            pf = pq.ParquetFile(store.arrow_path(key), filesystem=_MMAP_FS)
        else:
            fs, _ = store.arrow_fs()
            pf = pq.ParquetFile(store.arrow_path(key), filesystem=fs)
    except FileNotFoundError:
        raise TradesMissing(
            f"{store.uri(key)}: no such lake day ({series.symbol} {series.dataset} {date})",
            hint="ingest the day again, or use the lake the bars were built from",
        ) from None
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise DataError(f"{store.uri(key)}: cannot read: {e}") from e
    col = pf.schema_arrow.get_field_index("trade_id")
    groups = _groups_in_ranges(pf, col, lo, hi) if lo.size else []
    tbl = pf.read_row_groups(groups, columns=cols) if groups else pf.schema_arrow.empty_table().select(cols)
    ids = tbl["trade_id"].to_numpy()
    k = np.searchsorted(lo, ids, side="right") - 1
    mask = (k >= 0) & (ids <= hi[np.maximum(k, 0)])
    return tbl.filter(pa.array(mask))


def read_json(store: Storage, key: str) -> Optional[dict]:
    try:
        return json.loads(store.read_text(key))
    except FileNotFoundError:
        return None
    except ValueError:  # a torn or foreign file: treated as absent, rewritten by the next commit
        log.warning("ignoring unreadable %s", store.uri(key))
        return None


def read_index(store: Storage, series: Series) -> dict:
    idx = read_json(store, series.index_key) or {}
    idx.setdefault("days", {})
    idx.setdefault("pending", {})
    return idx


def _write_index(store: Storage, series: Series, idx: dict) -> None:
    store.write_text(series.index_key, json.dumps(idx, sort_keys=True))


def day_state(idx: Mapping[str, Any], date: str) -> Optional[dict]:
    """The index entry of a day if it can be trusted (not pending, not stale), else None."""
    e = idx["days"].get(date)
    if e is None or date in idx["pending"] or e.get("stale"):
        return None
    return e


def listing_is_current(store: Storage, listing: Mapping[str, Any]) -> bool:
    """True when every tick partition of a listing still has the version the listing recorded
    (one index read per series) and every funding file still has its SHA-256."""
    by_series: dict[Series, list] = {}
    for p in listing.get("partitions", []):
        if "version" not in p or "dataset" not in p:
            return False  # a listing from before versions were recorded
        by_series.setdefault(Series(p["market"], p["dataset"], p["symbol"]), []).append(p)
    for series, parts in by_series.items():
        idx = read_index(store, series)
        for p in parts:
            e = day_state(idx, p["date"])
            if e is None or e.get("version") != p["version"]:
                return False
    for f in listing.get("funding", []):
        man = read_json(store, Series(f["market"], "fundingRate", f["symbol"]).manifest_key(f["file"]))
        if man is None or man.get("sha256") != f.get("sha256") or man.get("status") != "ok":
            return False
    return True


def partitions(
    store: Storage, series: Series, dates: Iterable[str], idx: Optional[dict] = None
) -> list[dict]:
    """Listing entries of the given dates that the lake holds (trusted days only)."""
    idx = read_index(store, series) if idx is None else idx
    out = []
    for date in dates:
        e = day_state(idx, date)
        if e is None or not e.get("rows"):
            continue
        out.append(
            {
                "market": series.market,
                "dataset": series.dataset,
                "symbol": series.symbol,
                "date": date,
                "path": series.day_key(date),
                "rows": int(e["rows"]),
                "version": e["version"],
                "source": e["source"],
                "complete": bool(e.get("complete", True)),
                "first_ts": e.get("first_ts"),
                "last_ts": e.get("last_ts"),
                "min_id": e.get("min_id"),
                "max_id": e.get("max_id"),
            }
        )
    return out


# --------------------------------------------------------------------------- commit
def _stats(table: pa.Table) -> dict:
    ids = table["trade_id"].to_numpy()
    ts = table["ts"].to_numpy()
    if not ids.size:
        return {"rows": 0, "min_id": None, "max_id": None, "first_ts": None, "last_ts": None}
    return {
        "rows": int(ids.size),
        "min_id": int(ids.min()),
        "max_id": int(ids.max()),
        "first_ts": int(ts[0]),
        "last_ts": int(ts[-1]),
    }


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if not a.get("rows") or not b.get("rows"):
        return False
    return a["min_id"] <= b["max_id"] and b["min_id"] <= a["max_id"]


class _Commit:
    """One series commit (see :func:`commit_series`)."""

    def __init__(self, store: Storage, series: Series, staging: str):
        self.store, self.series, self.staging = store, series, staging
        self.idx = read_index(store, series)
        self.days: dict[str, dict] = self.idx["days"]
        self.new: dict[str, dict] = {}  # date -> new entry (with "staged")
        self.shrunk: set[str] = set()  # lake days that only lose rows (renamed first)
        self._tables: dict[str, pa.Table] = {}

    def choose(self, candidates: Iterable[Mapping[str, Any]]) -> None:
        best: dict[str, dict] = {}
        for c in candidates:
            b = best.get(c["date"])
            if b is None or priority(c) >= priority(b):
                best[c["date"]] = dict(c)
        for date, c in sorted(best.items()):
            if not c.get("staged"):
                continue  # the lake already holds this source (reused)
            cur = self.days.get(date)
            trusted = day_state(self.idx, date) is not None
            better = cur is not None and cur.get("base") == c.get("base") and priority(cur) > priority(c)
            if better and trusted and cur["source"] != c["source"]:  # a file's new content replaces its old
                log.info("%s %s: keeping %s (beats %s)", self.series.symbol, date, cur["source"], c["source"])
                continue
            same = cur is not None and (cur["source"], cur["version"]) == (c["source"], c["version"])
            if same and trusted and (not c["rows"] or self.store.exists(self.series.day_key(date))):
                continue  # the same ticks from the same file are in place: nothing to rewrite
            c["stale"] = False
            c["dups_against"] = {}
            c["dropped_across_days"] = 0
            c["dropped_ids"] = []
            self.new[date] = c

    def _table(self, date: str) -> pa.Table:
        if date not in self._tables:
            e = self.new.get(date)
            key = e["staged"] if e is not None and e.get("staged") else self.series.day_key(date)
            self._tables[date] = self.store.read_parquet(key)
        return self._tables[date]

    def _entry(self, date: str) -> dict:
        return self.new.get(date) or self.days[date]

    def dedupe(self) -> None:
        """Drop from each day the trade ids an earlier day of the series holds (in date order).

        A lake day that once dropped ids because of an earlier day that changes now is marked
        stale (those ids may belong to it again): no listing trusts it and the next ingest of its
        source rewrites it.
        """
        dates = sorted(set(self.days) | set(self.new))
        for i, date in enumerate(dates):
            if date not in self.new and not self._touched_by_new(date):
                continue  # O(days changed) per day, not O(days in the series)
            e = self._entry(date)
            if date not in self.new:
                e = self._recheck_drops(date, dates[:i])
            earlier = [d for d in dates[:i] if _overlap(self._entry(d), e)]
            if earlier and (date in self.new or any(d in self.new for d in earlier)):
                self._drop_earlier_ids(date, earlier)

    def _recheck_drops(self, date: str, before: list[str]) -> dict:
        """A lake day that dropped ids because of earlier days that change now: still right if
        every id it dropped is still held by an earlier day, else stale (those ids may belong to
        it again; no listing trusts it until the next ingest of its source rewrites it)."""
        e = self.days[date]
        against = e.get("dups_against") or {}
        changed = [d for d in against if d in self.new and self.new[d]["version"] != against[d]]
        if not changed:
            return e
        dropped = e.get("dropped_ids")
        if dropped is not None and dropped:
            lo, hi = min(dropped), max(dropped)
            near = [d for d in before if _overlap(self._entry(d), {"rows": 1, "min_id": lo, "max_id": hi})]
            held = np.concatenate(
                [self._table(d)["trade_id"].to_numpy() for d in near] or [np.empty(0, np.int64)]
            )
            if np.isin(np.asarray(dropped, np.int64), held).all():
                versions = {d: self._entry(d)["version"] for d in near if d in against or d in changed}
                self.new[date] = dict(e, staged=None, dups_against={**against, **versions})
                return self.new[date]
        log.warning(
            "%s %s: earlier days %s changed; marked stale until its source is ingested again",
            self.series.symbol,
            date,
            changed,
        )
        self.new[date] = dict(e, staged=None, stale=True)
        self.shrunk.add(date)
        return self.new[date]

    def _touched_by_new(self, date: str) -> bool:
        """Whether a lake day may change: it dropped ids because of a changed day, or an earlier
        changed day's ids overlap its own."""
        e = self.days[date]
        if any(d in self.new for d in e.get("dups_against") or {}):
            return True
        return any(d < date and _overlap(n, e) for d, n in self.new.items())

    def _drop_earlier_ids(self, date: str, earlier: list[str]) -> None:
        t = self._table(date)
        ids = t["trade_id"].to_numpy()
        against, dup = {}, np.zeros(ids.size, dtype=bool)
        for d in earlier:
            hit = np.isin(ids, self._table(d)["trade_id"].to_numpy())
            if hit.any():
                against[d] = self._entry(d)["version"]
                dup |= hit
        n = int(dup.sum())
        if not n:
            return
        e = self.new.get(date)
        if e is None:  # a lake day not replaced in this run that loses rows
            e = self.new[date] = dict(self.days[date], staged=None)
            self.shrunk.add(date)
        keep = t.filter(pa.array(~dup))
        version = table_version(keep)
        staged = f"{self.staging}/dedupe/{self.series.dataset}/{self.series.symbol}/{date}.parquet"
        write_day(self.store, staged, keep, version)
        self._tables[date] = keep
        e.update(_stats(keep), version=version, staged=staged)
        e["dups_against"] = {**e.get("dups_against", {}), **against}
        e["dropped_across_days"] = int(e.get("dropped_across_days", 0)) + n
        old = e.get("dropped_ids", [])
        ids_now = None if old is None else sorted(set(old) | set(ids[dup].tolist()))
        e["dropped_ids"] = ids_now if ids_now is not None and len(ids_now) <= MAX_DROPPED_IDS else None
        log.warning(
            "%s %s: %d trade ids already in earlier days %s; dropped (kept in the earlier day)",
            self.series.symbol,
            date,
            n,
            sorted(against),
        )

    def apply(self) -> dict[str, dict]:
        """Write-ahead, rename into place; returns {date: new entry}."""
        if not self.new:
            return {}
        self.idx["pending"].update({d: e["version"] for d, e in self.new.items()})
        _write_index(self.store, self.series, self.idx)
        failpoint("ingest.commit.pending")
        order = sorted(self.new, key=lambda d: (d not in self.shrunk, d))
        out: dict[str, dict] = {}
        for k, date in enumerate(order):
            e = self.new[date]
            if e.get("staged"):
                if e["rows"]:
                    self.store.rename(e["staged"], self.series.day_key(date))
                else:
                    self.store.delete_prefix(self.series.day_key(date))
            if k == 0:
                failpoint("ingest.commit.rename")
            # a day left with no rows (all its ids were in earlier days) keeps its entry: its
            # manifest still counts the drops and the day is re-derived if those days change
            self.days[date] = out[date] = {key: v for key, v in e.items() if key != "staged"}
        return out

    def finish(self) -> None:
        for date in self.new:
            self.idx["pending"].pop(date, None)
        _write_index(self.store, self.series, self.idx)


def commit_series(
    store: Storage,
    series: Series,
    candidates: Iterable[Mapping[str, Any]],
    staging: str,
    on_commit: Optional[Callable[[dict, dict, dict], None]] = None,
    lock_timeout_s: float = 600.0,
) -> dict:
    """Commit one series' candidate days (see the module docstring); returns the final index.

    ``candidates``: ``{date, source, period, sha256, base, complete, version, rows, min_id,
    max_id, first_ts, last_ts, staged}`` (``staged``: a storage key, or None for a day the lake
    already holds from that source). ``on_commit(old_days, changes, days)`` runs under the lock
    after the renames, ``changes`` being ``{date: new entry}`` (the ingest rewrites the
    manifests of this run's files and of every file whose days changed there).
    """
    with store.lock(series.lock_key, timeout_s=lock_timeout_s):
        c = _Commit(store, series, staging)
        old = {d: dict(e) for d, e in c.days.items()}
        c.choose(candidates)
        c.dedupe()
        changes = c.apply()
        if on_commit is not None:
            on_commit(old, changes, c.days)
        failpoint("ingest.commit.manifests")
        if changes:
            c.finish()
        return c.idx
