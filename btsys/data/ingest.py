"""Binance ingest: source zips -> verified, validated Parquet tick lake.

Memory is bounded by one day of one symbol, never by a file. The driver plans the files
(:func:`plan_request`, :func:`btsys.data.binance.plan_files`: monthly for complete months, daily
for the rest); the ingest stage (:mod:`btsys.stages.ingest`) runs one Spark task per file
(:func:`file_task` over :func:`ingest_file`), in two waves:

1. the planned files. A task fetches the ``.CHECKSUM`` (missing while the zip exists: the file
   *failed*, it is not a missing day); if the file's manifest has that SHA-256 and the parser
   settings and its days are still in the lake, it is reused without downloading. Otherwise it
   streams the zip to local disk (Range resume, retries, per-file deadline), verifies the SHA-256
   (one re-download, then quarantine under ``quarantine/``), inflates the CSV member chunk by chunk
   (:class:`~btsys.data.download.MemberStream`), parses it block by block
   (:class:`~btsys.data.binance.CsvReader`), validates it across blocks
   (:class:`~btsys.data.validate.TickValidator`) and writes each finished UTC day as a *staged*
   Parquet file under ``tmp/ingest/<run>/``. Nothing of a file that fails (CRC at the end of the
   member, too many bad rows, ...) ever reaches the lake.
2. daily files for the days a monthly file did not cover: a monthly 404 (Binance publishes months
   late) or a monthly that is short or cut (it once held only a month's first days).

Then, per (market, dataset, symbol), :func:`btsys.data.lake.commit_series` moves the staged days
into the lake under the series lock: one file per day, the best source per day, trade ids
duplicated across days kept once, every affected manifest rewritten. :func:`publish_listing`
writes ``<listing_prefix>/listing.json`` (with each day's version) and logs a summary table.

Files that failed make :func:`publish_listing` raise :class:`IngestError` after everything else
was committed, so no incomplete listing is cached and the rerun retries exactly those files; missing
days are an error only with ``data.require_complete=true``; a run where every file asked for is
missing stops at once with one line naming what was asked for and the first URL tried.

Funding files (``fundingRate``, monthly, futures) go to
``funding/market=<m>/symbol=<S>/month=<YYYY-MM>/part-<stem>.parquet``.

URLs are redacted (:mod:`btsys.redact`) in everything this module stores or logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from typing import Any, Iterable, Iterator, Mapping, Optional

import numpy as np
import pyarrow as pa

from btsys.config import to_plain
from btsys.data import binance as bn
from btsys.data import lake
from btsys.data.download import (
    ChecksumMismatch,
    DownloadError,
    MissingFile,
    UnsafeArchive,
    exists,
    fetch_bytes,
    fetch_verified,
    open_member,
    parse_checksum,
)
from btsys.data.lake import Series
from btsys.data.progress import TaskProgress
from btsys.data.validate import TickValidator, day_number, day_string
from btsys.errors import ConfigError, DataError
from btsys.failpoint import failpoint
from btsys.redact import redact, redact_text, redact_url
from btsys.storage import Storage, storage_from_dict

log = logging.getLogger("btsys.data.ingest")

FUNDING_ROOT = "funding"
TMP = "tmp/ingest"
STALE_RUN_S = 6 * 3600  # staging left by a killed run is deleted by the runs after this


class IngestError(DataError):
    """The ingest finished but some files failed (or were missing with ``require_complete``), or
    every file asked for was missing: a :class:`~btsys.errors.DataError` (one line naming the files,
    exit status 2 from the entry points). ``report`` holds the listing dict (manifests included)."""

    def __init__(self, msg: str, report: Optional[dict] = None, *, hint: Optional[str] = None):
        super().__init__(msg, hint=hint)
        self.report = report or {}


# --------------------------------------------------------------------------- keys and settings
def funding_key(market: str, symbol: str, month: str, stem: str) -> str:
    return f"{FUNDING_ROOT}/market={market}/symbol={symbol}/month={month}/part-{stem}.parquet"


def series_of(sf: bn.SourceFile) -> Series:
    return Series(sf.market, sf.dataset, sf.symbol)


def manifest_key(sf: bn.SourceFile) -> str:
    return series_of(sf).manifest_key(sf.name)


def task_settings(data: Mapping[str, Any], base_url: str, s3_endpoint: Optional[str] = None) -> dict:
    """The plain settings every task needs (picklable, no config objects)."""
    src = data.get("source") or {}
    return {
        "base_url": base_url,
        "base": redact_url(base_url.rstrip("/")),
        "timeout_s": float(src.get("timeout_s", 30.0)),
        "retries": int(src.get("retries", 4)),
        "backoff_s": float(src.get("backoff_s", 0.5)),
        "file_deadline_s": float(src.get("file_deadline_s", 3600.0)),
        "contract_size": dict(data.get("contract_size") or bn.DEFAULT_CONTRACT_SIZE),
        "max_uncompressed_bytes": int(data.get("max_uncompressed_bytes", 64 * 1024**3)),
        "max_compression_ratio": float(data.get("max_compression_ratio", 250.0)),
        "max_bad_row_fraction": float(data.get("max_bad_row_fraction", 0.001)),
        "archive_raw": bool(data.get("archive_raw", False)),
        "block_size": int(data.get("block_size", bn.BLOCK_SIZE)),
        "s3_endpoint": s3_endpoint,
        "staging": f"{TMP}/local",
        "progress": f"{TMP}/local/progress",
        "force": False,
    }


def _fingerprint(sf: bn.SourceFile, settings: Mapping[str, Any]) -> dict:
    """What, besides the source bytes, determines a file's lake output."""
    fp = {"parser": bn.PARSER_VERSION}
    if sf.market == "cm" and sf.dataset != bn.FUNDING:
        fp["contract_size"] = bn.contract_size(sf.symbol, settings["contract_size"])
    return fp


def _net(settings: Mapping[str, Any]) -> dict:
    return {
        "timeout": settings["timeout_s"],
        "retries": settings["retries"],
        "backoff": settings["backoff_s"],
        "deadline_s": settings["file_deadline_s"],
        "s3_endpoint": settings.get("s3_endpoint"),
    }


# --------------------------------------------------------------------------- one file (runs in a task)
class _StagingSink:
    """Finished days of one file, written as staged Parquet files in the store."""

    def __init__(self, store: Storage, prefix: str):
        self.store, self.prefix = store, prefix

    def write(self, date: str, table: pa.Table, version: str) -> str:
        key = f"{self.prefix}/{date}.parquet"
        lake.write_day(self.store, key, table, version)
        failpoint("ingest.stage.day")
        _release_memory()
        return key

    def read(self, date: str) -> pa.Table:
        return self.store.read_parquet(f"{self.prefix}/{date}.parquet")

    def clear(self) -> None:
        self.store.delete_prefix(self.prefix)


def _release_memory() -> None:
    """Give the memory of a finished day back to the OS (allocators keep freed blocks otherwise,
    and the peak would creep up over the days of a month)."""
    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _quarantine(store: Storage, sf: bn.SourceFile, path: str) -> str:
    key = f"quarantine/{sf.rel}"
    try:
        store.put_file(path, key)
    except Exception as e:  # noqa: BLE001 - best effort; the manifest still records the failure
        log.warning("could not quarantine %s: %s", sf.name, e)
        return ""
    return key


def _reusable(store: Storage, sf: bn.SourceFile, sha: str, fp: dict) -> Optional[dict]:
    """The file's manifest when the lake still holds exactly what it recorded, else None."""
    old = lake.read_json(store, manifest_key(sf))
    if not old or old.get("status") != "ok" or old.get("sha256") != sha or old.get("fingerprint") != fp:
        return None
    if sf.dataset == bn.FUNDING:
        return old if all(store.exists(p["path"]) for p in old.get("partitions", [])) else None
    idx = lake.read_index(store, series_of(sf))
    for d in old.get("days", []):
        e = lake.day_state(idx, d["date"])
        if e is None or e.get("source") != sf.name or e.get("version") != d["version"]:
            return None
    return old


def ingest_file(
    sf: bn.SourceFile, store: Storage, settings: Mapping[str, Any], tmp_dir: Optional[str] = None
) -> dict:
    """Fetch, verify, parse and stage one source file; returns its manifest (not yet written).

    Never raises for bad input: the manifest's ``status`` is ``ok``, ``missing`` (404),
    ``quarantined`` (checksum mismatch twice) or ``failed`` (download error, missing CHECKSUM,
    unsafe or corrupt archive, unreadable CSV or too many bad rows), and ``error`` says why,
    naming the file and line. ``candidates`` lists the staged days for the lake commit
    (:func:`commit_files`).
    """
    job = _FileJob(sf, store, settings)
    failpoint("ingest.task.checksum")
    try:
        expected = _fetch_checksum(sf, job.url, settings)
    except MissingFile as e:
        return job.finish("missing", str(e))
    except (DownloadError, ValueError) as e:
        return job.finish("failed", str(e))
    old = None if settings.get("force") else _reusable(store, sf, expected, job.man["fingerprint"])
    if old is not None:
        old.update(reused=True, candidates=_reused_candidates(old, settings))
        log.info("%s: already in the lake (sha256 %s..), skipped", sf.name, expected[:12])
        job.prog.update(phase="done", rows=int(old.get("rows") or 0))
        return old
    fetched = job.download(expected, tmp_dir)
    if fetched is None:
        return job.man
    try:
        return job.parse(fetched, tmp_dir)
    finally:
        if fetched.temporary and os.path.exists(fetched.path):
            os.remove(fetched.path)


class _FileJob:
    """The manifest and progress of one file while :func:`ingest_file` works on it."""

    def __init__(self, sf: bn.SourceFile, store: Storage, settings: Mapping[str, Any]):
        self.sf, self.store, self.settings = sf, store, settings
        self.t0 = time.perf_counter()
        self.url = sf.url(settings["base_url"])
        self.prog = TaskProgress(store, f"{settings['progress']}/{sf.stem}.json", sf.name)
        self.man: dict = {
            "file": sf.name,
            "url": redact_url(self.url),
            "rel": sf.rel,
            **sf.to_dict(),
            "base": settings["base"],
            "status": "failed",
            "error": None,
            "size": None,
            "sha256": None,
            "rows": 0,
            "fingerprint": _fingerprint(sf, settings),
            "reused": False,
            "attempts": 0,
            "candidates": [],
        }

    def finish(self, status: str, error: Optional[str] = None) -> dict:
        man = self.man
        man["status"], man["error"] = status, redact_text(error) if error else None
        man["seconds"] = round(time.perf_counter() - self.t0, 3)
        man["ingested_at"] = time.time()
        level = logging.INFO if status == "ok" else logging.WARNING
        log.log(
            level,
            "%s: %s, %d rows%s",
            self.sf.name,
            status,
            man["rows"],
            f": {man['error']}" if error else "",
        )
        self.prog.update(phase="done", rows=man["rows"])
        return man

    def download(self, expected: str, tmp_dir: Optional[str]):
        """The verified zip on local disk, or None when the file is finished (missing, failed...)."""
        self.prog.update(phase="download")
        try:
            fetched, sha = fetch_verified(
                self.url,
                self.sf.name,
                tmp_dir,
                checksum=expected,
                progress=self.prog.download,
                **_net(self.settings),
            )
        except MissingFile as e:
            self.finish("missing", str(e))
            return None
        except ChecksumMismatch as e:
            got = e.fetched
            self.man.update(size=got.size, sha256=got.sha256)
            self.man["quarantine"] = _quarantine(self.store, self.sf, got.path)
            if got.temporary:
                os.remove(got.path)
            self.finish("quarantined", str(e))
            return None
        except DownloadError as e:
            self.finish("failed", str(e))
            return None
        self.man.update(size=fetched.size, sha256=sha, attempts=fetched.attempts, resumed=fetched.resumed)
        failpoint("ingest.task.downloaded")
        self.prog.update(phase="parse", dl=fetched.size, size=fetched.size)
        return fetched

    def parse(self, fetched, tmp_dir: Optional[str]) -> dict:
        sf, store, settings = self.sf, self.store, self.settings
        try:
            if sf.dataset == bn.FUNDING:
                _ingest_funding(sf, store, fetched.path, settings, self.man)
            else:
                _ingest_ticks(sf, store, fetched.path, settings, self.man, self.prog, tmp_dir)
        except (UnsafeArchive, bn.FormatError, KeyError) as e:
            self.man["quarantine"] = _quarantine(store, sf, fetched.path)
            return self.finish("failed", str(e) if not isinstance(e, KeyError) else str(e.args[0]))
        if settings.get("archive_raw"):
            store.put_file(fetched.path, f"raw/{sf.rel}")
            self.man["raw"] = f"raw/{sf.rel}"
        return self.finish("ok")


def _fetch_checksum(sf: bn.SourceFile, url: str, settings: Mapping[str, Any]) -> str:
    """The zip's expected SHA-256. A missing ``.CHECKSUM`` next to a published zip is a failure
    (the zip cannot be verified), not a missing day."""
    try:
        raw = fetch_bytes(url + ".CHECKSUM", **_net(settings))
    except MissingFile as e:
        if exists(url, timeout=settings["timeout_s"], s3_endpoint=settings.get("s3_endpoint")):
            raise DownloadError(
                f"{sf.name}: the zip is published but its .CHECKSUM is missing ({e}); "
                "it cannot be verified, so it is not ingested"
            ) from None
        raise
    return parse_checksum(raw, expected_name=sf.name, source=f"{sf.name}.CHECKSUM")


def _reused_candidates(man: Mapping[str, Any], settings: Mapping[str, Any]) -> list[dict]:
    """Commit candidates of a reused file: its days as the lake holds them (nothing staged)."""
    return [
        {
            **d,
            "source": man["file"],
            "period": man["period"],
            "sha256": man["sha256"],
            "base": settings["base"],
            "staged": None,
        }
        for d in man.get("days", [])
    ]


def _ingest_ticks(sf, store, path: str, settings, man: dict, prog: TaskProgress, tmp_dir) -> None:
    sink = _StagingSink(store, f"{settings['staging']}/days/{sf.market}/{sf.dataset}/{sf.symbol}/{sf.stem}")
    csv_name = sf.stem + ".csv"
    layout = bn.LAYOUTS[(sf.market, sf.dataset)]
    mode = "fast"
    while True:
        member = open_member(
            path, sf.name, settings["max_uncompressed_bytes"], settings["max_compression_ratio"]
        )
        try:
            reader = bn.CsvReader(
                member,
                layout,
                csv_name,
                block_size=settings["block_size"],
                mode=mode,
                max_bad_fraction=settings["max_bad_row_fraction"],
                expected_bytes=member.info.file_size,
            )
            val = TickValidator(
                csv_name,
                sf.first,
                sf.last,
                sink,
                late_spill_bytes=int(settings.get("late_spill_bytes", 256 << 20)),
                tmp_dir=tmp_dir,
            )
            rows = 0
            for table, lines in bn.tick_batches(
                reader, sf.market, sf.dataset, sf.symbol, settings["contract_size"]
            ):
                val.feed(table, lines)
                rows += table.num_rows
                prog.update(parsed=member.consumed, rows=rows)
            rep = val.finish()
            break
        except bn.ReadAgain as e:
            log.info("%s", e)
            sink.clear()
            mode = e.mode
        except BaseException:
            sink.clear()
            raise
        finally:
            member.close()
    _tick_manifest(man, csv_name, reader.info, rep, settings)


def _tick_manifest(man: dict, csv_name: str, info: bn.ParseInfo, rep, settings) -> None:
    dropped = dict(rep.dropped)
    for reason, n in (("malformed", info.malformed_rows), ("unparseable", info.unparseable_rows)):
        if n:
            dropped[reason] = n
    days = [rep.days[d] for d in sorted(rep.days) if rep.days[d].rows]
    flags = [
        f
        for f, on in [("truncated", rep.truncated), ("unsorted", rep.unsorted), ("id_gaps", rep.id_gaps > 0)]
        if on
    ]
    man.update(
        rows=rep.rows_out,
        rows_valid=rep.rows_out,
        rows_in=rep.rows_in + info.bad_rows,
        header=info.header,
        bom=info.bom,
        time_unit=info.time_unit,
        empty_lines=info.empty_lines,
        dropped=dropped,
        dropped_by_day=rep.dropped_by_day,
        examples=(info.example_lines(csv_name) + rep.examples)[:10],
        id_gaps=rep.id_gaps,
        gap_events=rep.gap_events,
        unsorted=rep.unsorted,
        truncated=rep.truncated,
        empty_days=rep.empty_days,
        min_id=rep.min_id,
        max_id=rep.max_id,
        flags=flags,
        covers=[d.date for d in days if d.complete],
        candidates=[
            {
                **d.to_dict(),
                "staged": d.key,
                "source": man["file"],
                "period": man["period"],
                "sha256": man["sha256"],
                "base": settings["base"],
            }
            for d in days
        ],
    )


def _ingest_funding(sf, store, path: str, settings, man: dict) -> None:
    with open_member(
        path, sf.name, settings["max_uncompressed_bytes"], settings["max_compression_ratio"]
    ) as m:
        data = m.read()
    table, info = bn.parse_funding(
        data, sf.market, sf.stem + ".csv", max_bad_fraction=settings["max_bad_row_fraction"]
    )
    key = funding_key(sf.market, sf.symbol, sf.label, sf.stem)
    store.write_parquet(table, key)
    dropped = {
        k: n for k, n in (("malformed", info.malformed_rows), ("unparseable", info.unparseable_rows)) if n
    }
    man.update(
        rows=table.num_rows,
        partitions=[{"month": sf.label, "path": key, "rows": table.num_rows}],
        header=info.header,
        time_unit=info.time_unit,
        dropped=dropped,
        examples=info.example_lines(sf.stem + ".csv"),
        flags=[],
    )


# --------------------------------------------------------------------------- the tasks
def file_task(store_dict: dict, settings: dict):
    """The function a Spark task maps over its partition of file tasks (``SourceFile`` dicts):
    each file through :func:`ingest_file`, yielding its manifest as JSON; a file that raises is
    reported ``failed`` with the error, never lost."""

    def run(it: Iterator[dict]) -> Iterator[str]:
        from btsys.logs import setup_logging

        setup_logging()  # the Python worker logs in btsys's one format
        store = storage_from_dict(store_dict)
        # Spark starts Python workers with OMP_NUM_THREADS=spark.task.cpus (1), which pyarrow's
        # thread pool follows: give the CSV parser the cores this task may use
        old_threads = pa.cpu_count()
        pa.set_cpu_count(max(1, min(int(settings.get("threads", 1)), os.cpu_count() or 1)))
        with tempfile.TemporaryDirectory(prefix="btsys-ingest-") as tmp:
            for task in it:
                sf = bn.SourceFile(**task)
                try:
                    man = ingest_file(sf, store, settings, tmp)
                except Exception as e:  # noqa: BLE001 - storage outage etc.: report, never lose a file
                    man = {
                        "file": sf.name,
                        **sf.to_dict(),
                        "url": redact_url(sf.url(settings["base_url"])),
                        "status": "failed",
                        "error": redact_text(f"{type(e).__name__}: {e}"),
                        "rows": 0,
                        "size": None,
                        "reused": False,
                        "candidates": [],
                    }
                yield json.dumps(man)
        pa.set_cpu_count(old_threads)

    return run


def _days(first: str, last: str) -> list[str]:
    return [day_string(d) for d in range(day_number(first), day_number(last) + 1)]


def _served_by_monthly(store: Storage, files: list[bn.SourceFile], base: str, indexes: dict) -> set:
    """Daily files whose day the lake already holds from a complete monthly file of this source."""
    out = set()
    for sf in files:
        if sf.period != "daily" or sf.dataset == bn.FUNDING:
            continue
        s = series_of(sf)
        if s not in indexes:
            indexes[s] = lake.read_index(store, s)
        e = lake.day_state(indexes[s], sf.first)
        if (
            e is not None
            and e.get("period") == "monthly"
            and e.get("complete", True)
            and e.get("base") == base
        ):
            out.add(sf)
    return out


def _uncovered_dailies(results: list[dict], start: str, end: str) -> list[bn.SourceFile]:
    """Daily files for the days a monthly file did not cover (404, short or cut)."""
    out = []
    for m in results:
        if m.get("period") != "monthly" or m.get("dataset") == bn.FUNDING:
            continue
        if m["status"] == "missing":
            covered: set = set()
        elif m["status"] == "ok":
            covered = set(m.get("covers") or [])
        else:
            continue  # failed or quarantined: reported, not papered over
        for d in _days(max(m["first"], start), min(m["last"], end)):
            if d not in covered:
                out.append(bn.source_file(m["market"], m["dataset"], m["symbol"], "daily", d))
    return out


def commit_files(store: Storage, manifests: list[dict], staging: str) -> dict[Series, dict]:
    """Commit the staged days of the given task results, series by series, and write every
    manifest (tick files under their series lock). Returns the final index of each series."""
    by_series: dict[Series, list[dict]] = {}
    for m in manifests:
        if m.get("dataset") != bn.FUNDING:
            by_series.setdefault(Series(m["market"], m["dataset"], m["symbol"]), []).append(m)
    indexes = {}
    for series, mans in sorted(by_series.items(), key=lambda kv: (kv[0].symbol, kv[0].dataset)):
        cands = [c for m in mans if m.get("status") == "ok" for c in m.get("candidates", [])]

        def write_manifests(old: dict, changes: dict, days: dict, series=series, mans=mans) -> None:
            _write_manifests(store, series, mans, old, changes, days)

        indexes[series] = lake.commit_series(store, series, cands, staging, on_commit=write_manifests)
    for m in manifests:
        if m.get("dataset") == bn.FUNDING and not m.get("reused"):
            _store_manifest(store, Series(m["market"], m["dataset"], m["symbol"]).manifest_key(m["file"]), m)
    return indexes


def _store_manifest(store: Storage, key: str, man: Mapping[str, Any]) -> None:
    keep = {k: v for k, v in man.items() if k not in ("reused", "candidates")}
    store.write_text(key, json.dumps(redact(keep), sort_keys=True))


def _write_manifests(
    store, series: Series, run_mans: list[dict], old: dict, changes: dict, days: dict
) -> None:
    """Manifests of this run's fresh files and of every file whose days changed, true to the index."""
    fresh = {m["file"]: m for m in run_mans if not m.get("reused")}
    touched = {e["source"] for d, e in old.items() if d in changes} | {
        e["source"] for e in changes.values() if e
    }
    for name in sorted(set(fresh) | touched):
        m = fresh.get(name) or lake.read_json(store, series.manifest_key(name))
        if m is None or m.get("status") != "ok":
            if name in fresh:
                _store_manifest(store, series.manifest_key(name), m)
            continue
        mine = {d: e for d, e in days.items() if e.get("source") == name}
        m["days"] = [
            {"date": d, **{k: e.get(k) for k in ("rows", "version", "complete", "min_id", "max_id")}}
            for d, e in sorted(mine.items())
        ]
        m["superseded"] = sorted(
            d for d, e in old.items() if e.get("source") == name and days.get(d, {}).get("source") != name
        )
        m["rows"] = sum(int(e["rows"]) for e in mine.values())
        _count_across_days(m, mine)
        _store_manifest(store, series.manifest_key(name), m)


def _count_across_days(man: dict, mine: Mapping[str, Mapping[str, Any]]) -> None:
    """Set a manifest's ``duplicate_across_days`` drops (file total and, when it counts drops per
    day, per day) from the index entries of the days the lake holds from it (``mine``); they
    change when earlier days do."""
    across = sum(int(e.get("dropped_across_days") or 0) for e in mine.values())
    if "dropped_by_day" in man:
        by_day = man["dropped_by_day"]
        for per in by_day.values():
            per.pop("duplicate_across_days", None)
        for date, e in mine.items():
            if int(e.get("dropped_across_days") or 0):
                by_day.setdefault(date, {})["duplicate_across_days"] = int(e["dropped_across_days"])
        man["dropped_by_day"] = {d: per for d, per in sorted(by_day.items()) if per}
    dropped = man.setdefault("dropped", {})
    if across:
        dropped["duplicate_across_days"] = across
    else:
        dropped.pop("duplicate_across_days", None)


def _summary(manifests: list[dict], partitions: list[dict], served: int, seconds: float) -> dict:
    st = {
        s: sum(1 for m in manifests if m.get("status") == s)
        for s in ("ok", "missing", "quarantined", "failed")
    }
    dropped: dict[str, int] = {}
    for m in manifests:
        for k, v in (m.get("dropped") or {}).items():
            dropped[k] = dropped.get(k, 0) + int(v)
    rows = sum(int(p["rows"]) for p in partitions)
    fresh_rows = sum(int(m.get("rows_valid") or 0) for m in manifests if not m.get("reused"))
    between = 0
    by_sym: dict = {}
    for p in partitions:
        by_sym.setdefault((p["symbol"], p["dataset"]), []).append((p["min_id"], p["max_id"]))
    for ranges in by_sym.values():
        ranges.sort()
        between += sum(max(0, b0 - a1 - 1) for (_, a1), (b0, _) in zip(ranges, ranges[1:], strict=False))
    return {
        "files": len(manifests),
        **st,
        "reused": sum(1 for m in manifests if m.get("reused")),
        "served_from_lake": served,
        "rows": rows,
        "bytes": sum(int(m.get("size") or 0) for m in manifests if not m.get("reused")),
        "dropped": dropped,
        "id_gaps": sum(int(m.get("id_gaps") or 0) for m in manifests),
        "id_gaps_between_days": between,
        "duplicates_across_days": dropped.get("duplicate_across_days", 0),
        "unsorted_files": sum(1 for m in manifests if m.get("unsorted")),
        "truncated_files": sorted(m["file"] for m in manifests if m.get("truncated")),
        "incomplete_days": sorted(
            f"{p['symbol']} {p['date']}" for p in partitions if not p.get("complete", True)
        ),
        "missing_files": sorted(m["file"] for m in manifests if m.get("status") == "missing"),
        "failed_files": [
            {"file": m["file"], "status": m["status"], "error": m.get("error")}
            for m in manifests
            if m.get("status") in ("failed", "quarantined")
        ],
        "seconds": round(seconds, 3),
        "rows_per_s": round(fresh_rows / seconds, 1) if seconds > 0 else None,
    }


def format_summary(report: dict) -> str:
    """A fixed-width table: one line per source file, then the totals."""
    lines = [f"{'file':<44} {'status':<11} {'rows':>11} {'MB':>8} {'dropped':>8} {'gaps':>6} flags"]
    for m in report["files"]:
        drop = sum((m.get("dropped") or {}).values())
        status = m["status"] + ("*" if m.get("reused") else "")
        lines.append(
            f"{m['file'][:44]:<44} {status:<11} {int(m.get('rows') or 0):>11,} "
            f"{(m.get('size') or 0) / 1e6:>8.1f} {drop:>8} {int(m.get('id_gaps') or 0):>6} "
            f"{','.join(m.get('flags') or [])}"
        )
    s = report["summary"]
    lines.append(
        f"total: {s['files']} files ({s['ok']} ok, {s['reused']} reused*, {s['missing']} missing, "
        f"{s['quarantined']} quarantined, {s['failed']} failed; {s['served_from_lake']} daily files not "
        f"needed, their days in the lake from monthly files), {s['rows']:,} rows, "
        f"{s['bytes'] / 1e6:.1f} MB fetched, dropped {s['dropped'] or 0}, {s['seconds']:.1f}s "
        f"({s['rows_per_s'] or 0:,.0f} rows/s)"
    )
    return "\n".join(lines)


def _check_request(data: Mapping[str, Any]) -> tuple[str, str, list[str]]:
    market = bn.check_market(data.get("market", "spot"))
    dataset = bn.check_dataset(data.get("dataset", "aggTrades"))
    symbols = list(data.get("symbols") or [])
    if not symbols:
        raise ConfigError("is empty", key="data.symbols", hint="list the symbols to ingest, e.g. [BTCUSDT]")
    for s in symbols:
        bn.check_symbol(s)
    if data.get("funding") and market == "spot":
        raise ConfigError("data.funding=true needs a futures market (data.market=um or cm)")
    if market == "cm":
        for s in symbols:
            try:
                bn.contract_size(s, data.get("contract_size") or bn.DEFAULT_CONTRACT_SIZE)
            except KeyError as e:
                raise ConfigError(str(e.args[0])) from None
    return market, dataset, symbols


def _clean_old_runs(store: Storage) -> None:
    now = time.time()
    runs = {k.split("/")[2] for k in store.list(TMP) if k.count("/") >= 3}
    for run in runs:
        try:
            started = time.mktime(time.strptime(run.split("-")[0], "%Y%m%dT%H%M%S"))
        except ValueError:
            continue
        if now - started > STALE_RUN_S:
            store.delete_prefix(f"{TMP}/{run}")


def _all_missing(market, dataset, symbols, data, base_url, manifests, partitions) -> Optional[str]:
    asked = list(manifests)
    if not asked or partitions or any(m["status"] != "missing" for m in asked):
        return None
    first = sorted(asked, key=lambda m: (m["symbol"], m["first"], m["period"] != "monthly"))[0]
    return (
        f"ingest: none of the {len(asked)} files asked for exists: {market} {dataset} {','.join(symbols)} "
        f"{data.get('start')}..{data.get('end')} from {redact_url(base_url)} (first tried "
        f"{first['url']}: {first.get('error')})"
    )


class Request:
    """One ingest request, planned on the driver (:func:`plan_request`): what to fetch, the task
    settings, the lake indexes read so far, the files the lake already serves and the files of a
    trusted earlier listing. The stage runs the waves of files as Spark tasks
    (:func:`file_task`), :func:`commit_files` and :func:`publish_listing`."""

    def __init__(self, data: dict, base_url: str, market: str, dataset: str, symbols: list, files: list):
        self.data, self.base_url = data, base_url
        self.market, self.dataset, self.symbols, self.files = market, dataset, symbols, files
        self.settings: dict = {}
        self.indexes: dict = {}
        self.served: set = set()
        self.trusted: dict[str, dict] = {}
        self.t0 = time.perf_counter()

    @property
    def staging(self) -> str:
        return self.settings["staging"]

    def first_wave(self) -> list[bn.SourceFile]:
        """The planned files the lake does not serve and no trusted listing holds."""
        return [f for f in self.files if f not in self.served and f.name not in self.trusted]

    def second_wave(self, manifests: list[dict]) -> list[bn.SourceFile]:
        """Daily files for the days the first wave's monthly files did not cover."""
        start, end = self.data.get("start"), self.data.get("end")
        return [f for f in _uncovered_dailies(manifests, start, end) if f.name not in self.trusted]


def plan_request(
    data_cfg: Any,
    store: Storage,
    base_url: str,
    force: bool = False,
    trust: Optional[Mapping[str, Any]] = None,
) -> Request:
    """Check the ``data`` settings and plan the files (monthly for complete months, daily for the
    rest, funding with ``data.funding``) before anything is fetched.

    ``force``: every file again. ``trust``: a previous listing of the same request; its files that
    were ``ok`` and whose days are unchanged in the lake are taken as they are (a rerun then asks
    only for the files that were missing or failed). Staging left by runs killed long ago is
    removed. Raises :class:`~btsys.errors.ConfigError` naming the bad ``data`` key.
    """
    data = to_plain(data_cfg)
    market, dataset, symbols = _check_request(data)
    start, end = data.get("start"), data.get("end")
    files = bn.plan_files(market, dataset, symbols, start, end)
    if data.get("funding"):
        files += bn.plan_funding(market, symbols, start, end)
    req = Request(data, base_url, market, dataset, symbols, files)
    req.settings = task_settings(data, base_url, getattr(store, "endpoint_url", None))
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    req.settings.update(staging=f"{TMP}/{run_id}", force=bool(force))
    _clean_old_runs(store)
    log.info(
        "ingest: %d files (%s %s %s %s..%s) from %s",
        len(files),
        market,
        dataset,
        ",".join(symbols),
        start,
        end,
        redact_url(base_url),
    )
    if not force:
        req.served = _served_by_monthly(store, files, req.settings["base"], req.indexes)
        req.trusted = _trusted(store, trust, req.indexes) if trust else {}
    return req


def publish_listing(store: Storage, req: Request, manifests: list[dict], listing_prefix: str) -> dict:
    """After the commit: the listing of the request written to ``<listing_prefix>/listing.json``
    and the summary table logged. Returns the listing with brief manifests (what the cache
    marker keeps).

    Raises
    ------
    IngestError
        every file asked for was missing; some files failed or were quarantined; or
        (``data.require_complete``) files were missing.
    """
    data = req.data
    report = _listing(
        store,
        data,
        req.market,
        req.dataset,
        req.symbols,
        req.base_url,
        manifests,
        req.indexes,
        len(req.served),
        req.t0,
    )
    problem = _all_missing(
        req.market, req.dataset, req.symbols, data, req.base_url, manifests, report["partitions"]
    )
    if problem:
        raise IngestError(
            problem,
            report,
            hint="check data.symbols, data.market, data.dataset, data.start/end and data.source.base_url",
        )
    failpoint("ingest.listing")
    uri = store.uri(f"{listing_prefix.rstrip('/')}/listing.json")
    store.write_text(f"{listing_prefix.rstrip('/')}/listing.json", json.dumps(report, sort_keys=True))
    log.info("ingest summary\n%s", format_summary(report))
    _raise_problems(report, data, uri)
    return {**report, "files": [_brief(m) for m in report["files"]]}


def _brief(m: dict) -> dict:
    """The manifest fields kept in the cache marker (the full ones are in listing.json)."""
    keys = (
        "file",
        "market",
        "symbol",
        "dataset",
        "period",
        "label",
        "first",
        "last",
        "url",
        "status",
        "error",
        "size",
        "sha256",
        "rows",
        "reused",
        "dropped",
        "dropped_by_day",
        "id_gaps",
        "flags",
        "days",
        "covers",
    )
    return {k: m[k] for k in keys if k in m}


def published_since(listing: Mapping[str, Any], data_cfg: Any, base_url: str, store: Storage) -> list[str]:
    """The files a listing recorded as missing that the source publishes now (a ``HEAD`` per file
    on the driver, a few at a time; no Spark). A file whose probe fails counts as published, so the
    ingest runs and its retries and messages apply."""
    from concurrent.futures import ThreadPoolExecutor

    settings = task_settings(to_plain(data_cfg), base_url, getattr(store, "endpoint_url", None))
    missing = [
        bn.source_file(m["market"], m["dataset"], m["symbol"], m["period"], m["label"])
        for m in listing.get("files", [])
        if m.get("status") == "missing"
    ]

    def probe(sf: bn.SourceFile) -> bool:
        url = sf.url(base_url)
        try:
            kw = {"timeout": settings["timeout_s"], "s3_endpoint": settings["s3_endpoint"]}
            return exists(url + ".CHECKSUM", **kw) or exists(url, **kw)
        except Exception:  # noqa: BLE001 - unknown: let the ingest ask properly
            return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [sf.name for sf, yes in zip(missing, pool.map(probe, missing), strict=True) if yes]


def _trusted(store: Storage, trust: Mapping[str, Any], indexes: dict) -> dict[str, dict]:
    """Files of a previous listing still ``ok`` with every one of their days unchanged."""
    out = {}
    for m in trust.get("files", []):
        if m.get("status") != "ok" or m.get("dataset") == bn.FUNDING:
            continue
        s = Series(m["market"], m["dataset"], m["symbol"])
        if s not in indexes:
            indexes[s] = lake.read_index(store, s)
        days = m.get("days", [])
        if all(
            (e := lake.day_state(indexes[s], d["date"])) is not None
            and e.get("source") == m["file"]
            and e.get("version") == d["version"]
            for d in days
        ):
            out[m["file"]] = {**m, "reused": True, "candidates": []}
    return out


def _listing(store, data, market, dataset, symbols, base_url, manifests, indexes, served, t0) -> dict:
    start, end = data.get("start"), data.get("end")
    partitions = []
    for sym in symbols:
        s = Series(market, dataset, sym)
        partitions += lake.partitions(store, s, _days(str(start), str(end)), indexes.get(s))
    funding = [
        {
            "market": m["market"],
            "symbol": m["symbol"],
            "month": p["month"],
            "path": p["path"],
            "rows": p["rows"],
            "file": m["file"],
            "sha256": m["sha256"],
        }
        for m in manifests
        if m.get("status") == "ok" and m.get("dataset") == bn.FUNDING
        for p in m.get("partitions", [])
    ]
    partitions.sort(key=lambda p: (p["symbol"], p["date"]))
    funding.sort(key=lambda p: (p["symbol"], p["month"]))
    files = sorted(
        (redact({k: v for k, v in m.items() if k != "candidates"}) for m in manifests),
        key=lambda m: (m["symbol"], m["dataset"], m["first"], m["period"]),
    )
    digest = json.dumps(
        [(p["path"], p["version"]) for p in partitions] + [(f["path"], f["sha256"]) for f in funding]
    )
    return {
        "market": market,
        "dataset": dataset,
        "symbols": symbols,
        "start": start,
        "end": end,
        "base_url": redact_url(base_url),
        "partitions": partitions,
        "funding": funding,
        "files": files,
        "lake_version": hashlib.sha256(digest.encode()).hexdigest()[:20],
        "summary": _summary(files, partitions, served, time.perf_counter() - t0),
    }


#: Failed files named in the error line; the listing has every one.
MAX_NAMED_PROBLEMS = 5


def _raise_problems(report: dict, data: Mapping[str, Any], listing_uri: str) -> None:
    s = report["summary"]
    problems = [f"{f['file']}: {f['status']}: {f['error']}" for f in s["failed_files"]]
    if data.get("require_complete") and s["missing_files"]:
        monthly_first = sorted(
            (m for m in report["files"] if m.get("status") == "missing"),
            key=lambda m: (m.get("period") != "monthly", m["file"]),
        )
        problems += [f"{m['file']}: missing (data.require_complete=true)" for m in monthly_first]
    if problems:
        named = "; ".join(problems[:MAX_NAMED_PROBLEMS])
        more = len(problems) - MAX_NAMED_PROBLEMS
        raise IngestError(
            f"ingest incomplete: {len(problems)} of {s['files']} files not ingested: {named}"
            + (f"; and {more} more (every file in {listing_uri})" if more > 0 else ""),
            report,
            hint="run again: the rerun retries only these files",
        )


# --------------------------------------------------------------------------- readers
def read_ticks(store: Storage, paths: Iterable[str]) -> pa.Table:
    """The tick table of the given lake parts, concatenated in the given order.

    Pass the ``path`` values of one symbol's listing entries (sorted by date) to get that
    symbol's ticks ordered by (ts, trade_id); the result is re-sorted only if the parts
    overlap in time.
    """
    paths = list(paths)
    if not paths:
        return bn.TICK_SCHEMA.empty_table()
    tables = [
        store.read_parquet(p).select(bn.TICK_SCHEMA.names).cast(bn.TICK_SCHEMA).replace_schema_metadata(None)
        for p in paths
    ]
    table = pa.concat_tables(tables).combine_chunks()
    ts = table["ts"].to_numpy()
    if ts.size > 1 and (np.diff(ts) < 0).any():
        ids = table["trade_id"].to_numpy()
        table = table.take(pa.array(np.lexsort((ids, ts))))
    return table


def read_funding(store: Storage, paths: Iterable[str]):
    """Funding rates of the given ``funding`` parts as a DataFrame: ``ts`` (int64 µs), ``rate`` (f64),
    ``interval_hours``; sorted by ``ts``, duplicate times dropped."""
    import pandas as pd

    paths = list(paths)
    if not paths:
        return pd.DataFrame(
            {
                "ts": np.array([], np.int64),
                "rate": np.array([], np.float64),
                "interval_hours": np.array([], np.int64),
            }
        )
    t = pa.concat_tables([store.read_parquet(p) for p in paths])
    df = t.to_pandas()[["ts", "rate", "interval_hours"]]
    df = df.sort_values("ts", kind="stable").drop_duplicates("ts").reset_index(drop=True)
    return df.astype({"ts": "int64", "rate": "float64", "interval_hours": "int64"})
