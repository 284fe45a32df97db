"""Binance ingest as a Spark job: source zips -> verified, validated Parquet tick lake.

The driver only *lists* files (:func:`btsys.data.binance.plan_files`: monthly for complete
months, daily for the rest). Spark runs one task per file
(``sparkContext.parallelize(files, len(files)).mapPartitions``); each task rebuilds the storage
from ``store.to_dict()`` and does everything itself with pyarrow (:func:`ingest_file`):

1. fetch the ``.CHECKSUM``; if the file's manifest says it was ingested with that SHA-256 and the
   same parser settings and its partitions exist, skip it (reruns are idempotent);
2. fetch the zip (retries with back-off on timeouts and 5xx; 404 = missing day), verify SHA-256
   (one re-download on mismatch, then quarantine under ``quarantine/<binance path>``);
3. inflate the single CSV member safely, parse it (:func:`btsys.data.binance.parse_csv`),
   validate (:func:`btsys.data.validate.validate_ticks`), split by UTC date;
4. write ``lake/market=<m>/symbol=<S>/date=<D>/part-<stem>.parquet`` (atomic per file), then the
   file's manifest ``lake/_manifest/<m>/<S>/<dataset>/<zip name>.json`` (atomic, written last:
   a killed task leaves no manifest, so the rerun redoes the file and overwrites the same part
   names - no duplicate rows).

Funding files (``fundingRate``, monthly, futures) go to
``funding/market=<m>/symbol=<S>/month=<YYYY-MM>/part-<stem>.parquet``.

After the tasks the driver drops trade ids duplicated *across* files
(:func:`dedupe_across_files`), writes ``<listing_prefix>/listing.json`` and logs a summary table.
Files that failed or were quarantined make the job raise :class:`IngestError` (after everything
else was written), so the pipeline does not cache an incomplete listing and the rerun retries
exactly those files; missing days are an error only with ``data.require_complete=true``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from typing import Any, Iterable, Iterator, Mapping, Optional

import numpy as np
import pyarrow as pa

from btsys.config import to_plain
from btsys.data import binance as bn
from btsys.data.download import (
    ChecksumMismatch,
    DownloadError,
    MissingFile,
    UnsafeArchive,
    extract_single_csv,
    fetch_bytes,
    fetch_verified,
    parse_checksum,
)
from btsys.data.validate import split_by_date, validate_ticks
from btsys.storage import Storage, storage_from_dict

log = logging.getLogger("btsys.data.ingest")

LAKE = "lake"
MANIFEST = f"{LAKE}/_manifest"
FUNDING_ROOT = "funding"


class IngestError(RuntimeError):
    """The ingest finished but some files failed (or were missing with ``require_complete``).

    ``report`` holds the full listing dict (manifests included) for inspection.
    """

    def __init__(self, msg: str, report: Optional[dict] = None):
        super().__init__(msg)
        self.report = report or {}


# --------------------------------------------------------------------------- keys
def partition_key(market: str, symbol: str, date: str, stem: str) -> str:
    return f"{LAKE}/market={market}/symbol={symbol}/date={date}/part-{stem}.parquet"


def funding_key(market: str, symbol: str, month: str, stem: str) -> str:
    return f"{FUNDING_ROOT}/market={market}/symbol={symbol}/month={month}/part-{stem}.parquet"


def manifest_key(sf: bn.SourceFile) -> str:
    return f"{MANIFEST}/{sf.market}/{sf.symbol}/{sf.dataset}/{sf.name}.json"


def listing_is_current(store: Storage, listing: Mapping[str, Any]) -> bool:
    """True when every source file of a listing is still in the lake as the listing saw it.

    The lake holds one version of each source file; ingesting another source with the same file
    names into the same store (say, a synthetic mirror with another seed) replaces parts that an
    older listing points to. A listing is trusted only while each ingested file's manifest still
    has the SHA-256 it recorded.
    """
    for f in listing.get("files", []):
        if f.get("status") != "ok":
            continue
        if not all(k in f for k in ("market", "symbol", "dataset", "file")):
            return False  # a listing from before these fields were recorded
        key = f"{MANIFEST}/{f['market']}/{f['symbol']}/{f['dataset']}/{f['file']}.json"
        cur = _read_manifest(store, key)
        if cur is None or cur.get("sha256") != f.get("sha256") or cur.get("status") != "ok":
            return False
    return True


def task_settings(data: Mapping[str, Any], base_url: str) -> dict:
    """The plain settings every task needs (picklable, no config objects)."""
    src = data.get("source") or {}
    return {
        "base_url": base_url,
        "timeout_s": float(src.get("timeout_s", 30.0)),
        "retries": int(src.get("retries", 4)),
        "backoff_s": float(src.get("backoff_s", 0.5)),
        "contract_size": dict(data.get("contract_size") or bn.DEFAULT_CONTRACT_SIZE),
        "max_uncompressed_bytes": int(data.get("max_uncompressed_bytes", 8 * 1024**3)),
        "max_compression_ratio": float(data.get("max_compression_ratio", 250.0)),
        "archive_raw": bool(data.get("archive_raw", False)),
    }


def _fingerprint(sf: bn.SourceFile, settings: Mapping[str, Any]) -> dict:
    """What, besides the source bytes, determines a file's lake output."""
    fp = {"parser": bn.PARSER_VERSION}
    if sf.market == "cm" and sf.dataset != bn.FUNDING:
        fp["contract_size"] = bn.contract_size(sf.symbol, settings["contract_size"])
    return fp


# --------------------------------------------------------------------------- one file (runs in a task)
def _read_manifest(store: Storage, key: str) -> Optional[dict]:
    try:
        return json.loads(store.read_text(key))
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def _quarantine(store: Storage, sf: bn.SourceFile, path: str) -> str:
    key = f"quarantine/{sf.rel}"
    try:
        store.put_file(path, key)
    except Exception as e:  # quarantine is best effort; the manifest still records the failure
        log.warning("could not quarantine %s: %s", sf.name, e)
        return ""
    return key


def ingest_file(
    sf: bn.SourceFile, store: Storage, settings: Mapping[str, Any], tmp_dir: Optional[str] = None
) -> dict:
    """Ingest one source file; returns its manifest (also written to the store unless reused).

    Never raises for bad input: the manifest's ``status`` is ``ok``, ``missing`` (404),
    ``quarantined`` (checksum mismatch twice) or ``failed`` (download error, unsafe or corrupt
    archive, unreadable CSV), and ``error`` says why, naming the file and row.
    """
    t0 = time.perf_counter()
    url = sf.url(settings["base_url"])
    mkey = manifest_key(sf)
    fp = _fingerprint(sf, settings)
    man: dict = {
        "file": sf.name,
        "url": url,
        "rel": sf.rel,
        **sf.to_dict(),
        "status": "failed",
        "error": None,
        "size": None,
        "sha256": None,
        "rows": 0,
        "partitions": [],
        "fingerprint": fp,
        "reused": False,
        "attempts": 0,
    }
    net = dict(timeout=settings["timeout_s"], retries=settings["retries"], backoff=settings["backoff_s"])

    def finish(status: str, error: Optional[str] = None) -> dict:
        man["status"], man["error"] = status, error
        man["seconds"] = round(time.perf_counter() - t0, 3)
        man["ingested_at"] = time.time()
        store.write_text(mkey, json.dumps(man, sort_keys=True))
        level = logging.INFO if status == "ok" else logging.WARNING
        log.log(
            level,
            "%s: %s, %d rows, %s bytes%s",
            sf.name,
            status,
            man["rows"],
            man["size"],
            f": {error}" if error else "",
        )
        return man

    try:
        expected = parse_checksum(
            fetch_bytes(url + ".CHECKSUM", **net), expected_name=sf.name, source=f"{sf.name}.CHECKSUM"
        )
    except MissingFile as e:
        return finish("missing", str(e))
    except (DownloadError, ValueError) as e:
        return finish("failed", str(e))

    old = _read_manifest(store, mkey)
    if (
        old
        and old.get("status") == "ok"
        and old.get("sha256") == expected
        and old.get("fingerprint") == fp
        and all(store.exists(p["path"]) for p in old.get("partitions", []))
    ):
        old["reused"] = True
        log.info("%s: already in the lake (sha256 %s..), skipped", sf.name, expected[:12])
        return old

    try:
        fetched, sha = fetch_verified(url, sf.name, tmp_dir, checksum=expected, **net)
    except MissingFile as e:
        return finish("missing", str(e))
    except ChecksumMismatch as e:
        got = e.fetched
        man.update(size=got.size, sha256=got.sha256)
        man["quarantine"] = _quarantine(store, sf, got.path)
        if got.temporary:
            os.remove(got.path)
        return finish("quarantined", str(e))
    except DownloadError as e:
        return finish("failed", str(e))

    man.update(size=fetched.size, sha256=sha, attempts=fetched.attempts)
    try:
        try:
            data = extract_single_csv(
                fetched.path, sf.name, settings["max_uncompressed_bytes"], settings["max_compression_ratio"]
            )
            csv_name = sf.stem + ".csv"
            if sf.dataset == bn.FUNDING:
                _ingest_funding(sf, store, data, csv_name, man)
            else:
                _ingest_ticks(sf, store, data, csv_name, settings, man)
        except (UnsafeArchive, bn.FormatError, KeyError) as e:
            man["quarantine"] = _quarantine(store, sf, fetched.path)
            msg = str(e) if not isinstance(e, KeyError) else str(e.args[0])
            return finish("failed", msg)
        if settings.get("archive_raw"):
            store.put_file(fetched.path, f"raw/{sf.rel}")
            man["raw"] = f"raw/{sf.rel}"
    finally:
        if fetched.temporary and os.path.exists(fetched.path):
            os.remove(fetched.path)
    return finish("ok")


def _ingest_ticks(sf, store, data: bytes, csv_name: str, settings, man: dict) -> None:
    table, info = bn.parse_csv(data, sf.market, sf.dataset, sf.symbol, csv_name, settings["contract_size"])
    del data
    clean, rep = validate_ticks(
        table,
        csv_name,
        sf.first,
        sf.last,
        row_base=2 if info.header else 1,
        cut_last_line=info.malformed_rows > 0,
    )
    dropped = dict(rep.dropped)
    if info.malformed_rows:
        dropped["malformed"] = info.malformed_rows
    if info.unparseable_rows:
        dropped["unparseable"] = info.unparseable_rows
    examples = [f"{csv_name} {x}" for x in (info.examples or [])] + rep.examples
    parts = []
    for date, part in split_by_date(clean):
        key = partition_key(sf.market, sf.symbol, date, sf.stem)
        store.write_parquet(part, key)
        ids = part["trade_id"].to_numpy()
        ts = part["ts"].to_numpy()
        parts.append(
            {
                "date": date,
                "path": key,
                "rows": part.num_rows,
                "min_id": int(ids.min()),
                "max_id": int(ids.max()),
                "first_ts": int(ts[0]),
                "last_ts": int(ts[-1]),
            }
        )
    flags = [
        f
        for f, on in [("truncated", rep.truncated), ("unsorted", rep.unsorted), ("id_gaps", rep.id_gaps > 0)]
        if on
    ]
    man.update(
        rows=clean.num_rows,
        rows_in=rep.rows_in + info.malformed_rows + info.unparseable_rows,
        partitions=parts,
        header=info.header,
        time_unit=info.time_unit,
        dropped=dropped,
        examples=examples[:10],
        id_gaps=rep.id_gaps,
        gap_events=rep.gap_events,
        unsorted=rep.unsorted,
        truncated=rep.truncated,
        empty_days=rep.empty_days,
        min_id=rep.min_id,
        max_id=rep.max_id,
        flags=flags,
        cross_file_duplicates=0,
    )


def _ingest_funding(sf, store, data: bytes, csv_name: str, man: dict) -> None:
    table, info = bn.parse_funding_csv(data, sf.market, csv_name)
    key = funding_key(sf.market, sf.symbol, sf.label, sf.stem)
    store.write_parquet(table, key)
    dropped = {}
    if info.malformed_rows:
        dropped["malformed"] = info.malformed_rows
    if info.unparseable_rows:
        dropped["unparseable"] = info.unparseable_rows
    man.update(
        rows=table.num_rows,
        partitions=[{"month": sf.label, "path": key, "rows": table.num_rows}],
        header=info.header,
        time_unit=info.time_unit,
        dropped=dropped,
        examples=[f"{csv_name} {x}" for x in (info.examples or [])][:10],
        flags=[],
    )


# --------------------------------------------------------------------------- the Spark job
def _task_fn(store_dict: dict, settings: dict, acc_files, acc_bytes, acc_rows):
    def run(it: Iterator[dict]) -> Iterator[str]:
        from btsys.logs import setup_logging

        setup_logging()  # the Python worker logs in btsys's one format
        store = storage_from_dict(store_dict)
        with tempfile.TemporaryDirectory(prefix="btsys-ingest-") as tmp:
            for task in it:
                sf = bn.SourceFile(**task)
                try:
                    man = ingest_file(sf, store, settings, tmp)
                except Exception as e:  # storage outage etc.: report, never lose the file silently
                    man = {
                        "file": sf.name,
                        **sf.to_dict(),
                        "url": sf.url(settings["base_url"]),
                        "status": "failed",
                        "error": f"{type(e).__name__}: {e}",
                        "rows": 0,
                        "partitions": [],
                        "size": None,
                        "reused": False,
                    }
                acc_files.add(1)
                acc_bytes.add(int(man.get("size") or 0))
                acc_rows.add(int(man.get("rows") or 0))
                yield json.dumps(man)

    return run


def dedupe_across_files(store: Storage, manifests: list[dict]) -> dict:
    """Drop trade ids that a file shares with an earlier file of the same market/symbol/dataset.

    Only parts whose id ranges overlap are read; the later file's part is rewritten atomically
    without the shared ids and its manifest records ``cross_file_duplicates``. Returns
    ``{"duplicates": n, "id_gaps_between_files": g}`` (ids missing between consecutive files).
    """
    groups: dict[tuple, list[tuple[int, dict, dict]]] = {}
    for m in manifests:
        if m.get("status") != "ok" or m.get("dataset") == bn.FUNDING:
            continue
        for p in m.get("partitions", []):
            groups.setdefault((m["market"], m["symbol"], m["dataset"]), []).append((0, p, m))
    total_dups = total_gaps = 0
    for key, parts in groups.items():
        parts.sort(key=lambda x: (x[2]["first"], x[2]["period"] != "monthly", x[1]["date"]))
        mins = np.array([p["min_id"] for _, p, _ in parts], dtype=np.int64)
        maxs = np.array([p["max_id"] for _, p, _ in parts], dtype=np.int64)
        src = np.array([m["file"] for _, _, m in parts], dtype=object)
        dirty = set()
        for i in range(1, len(parts)):
            over = np.flatnonzero((mins[:i] <= maxs[i]) & (maxs[:i] >= mins[i]) & (src[:i] != src[i]))
            if not over.size:
                continue
            _, p, m = parts[i]
            tab = store.read_parquet(p["path"])
            ids = tab["trade_id"].to_numpy()
            earlier = np.concatenate(
                [
                    store.read_parquet(parts[j][1]["path"], columns=["trade_id"])["trade_id"].to_numpy()
                    for j in over
                ]
            )
            dup = np.isin(ids, earlier)
            n = int(dup.sum())
            if not n:
                continue
            log.warning(
                "%s: %d trade ids of %s already in %s; dropped",
                m["file"],
                n,
                p["path"],
                sorted({parts[j][2]["file"] for j in over}),
            )
            keep = tab.filter(pa.array(~dup))
            if keep.num_rows:
                store.write_parquet(keep, p["path"])
                kid, kts = keep["trade_id"].to_numpy(), keep["ts"].to_numpy()
                p.update(
                    rows=keep.num_rows,
                    min_id=int(kid.min()),
                    max_id=int(kid.max()),
                    first_ts=int(kts[0]),
                    last_ts=int(kts[-1]),
                )
                mins[i], maxs[i] = p["min_id"], p["max_id"]
            else:
                store.delete_prefix(p["path"])
                p["rows"] = 0
            m["rows"] -= n
            m["cross_file_duplicates"] = m.get("cross_file_duplicates", 0) + n
            m.setdefault("dropped", {})["duplicate_across_files"] = (
                m["dropped"].get("duplicate_across_files", 0) + n
            )
            total_dups += n
            dirty.add(id(m))
        for _, _, m in parts:
            if id(m) in dirty:
                m["partitions"] = [p for p in m["partitions"] if p["rows"] > 0]
                store.write_text(
                    manifest_key(
                        bn.SourceFile(
                            **{
                                k: m[k]
                                for k in ("market", "dataset", "symbol", "period", "label", "first", "last")
                            }
                        )
                    ),
                    json.dumps({k: v for k, v in m.items() if k != "reused"}, sort_keys=True),
                )
                dirty.discard(id(m))
        live = sorted((p["min_id"], p["max_id"]) for _, p, _ in parts if p["rows"] > 0)
        for (a0, a1), (b0, b1) in zip(live, live[1:]):
            if b0 > a1 + 1:
                total_gaps += int(b0 - a1 - 1)
    # cross-file duplicates are reported per file; keep a total for the summary
    return {"duplicates": total_dups, "id_gaps_between_files": total_gaps}


def _summary(manifests: list[dict], extra: dict, seconds: float) -> dict:
    st = {
        s: sum(1 for m in manifests if m.get("status") == s)
        for s in ("ok", "missing", "quarantined", "failed")
    }
    dropped: dict[str, int] = {}
    for m in manifests:
        for k, v in (m.get("dropped") or {}).items():
            dropped[k] = dropped.get(k, 0) + int(v)
    rows = sum(int(m.get("rows") or 0) for m in manifests)
    fresh_rows = sum(int(m.get("rows") or 0) for m in manifests if not m.get("reused"))
    return {
        "files": len(manifests),
        **st,
        "reused": sum(1 for m in manifests if m.get("reused")),
        "rows": rows,
        "bytes": sum(int(m.get("size") or 0) for m in manifests if not m.get("reused")),
        "dropped": dropped,
        "id_gaps": sum(int(m.get("id_gaps") or 0) for m in manifests),
        "id_gaps_between_files": extra.get("id_gaps_between_files", 0),
        "duplicates_across_files": extra.get("duplicates", 0),
        "unsorted_files": sum(1 for m in manifests if m.get("unsorted")),
        "truncated_files": sorted(m["file"] for m in manifests if m.get("truncated")),
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
        f"{s['quarantined']} quarantined, {s['failed']} failed), {s['rows']:,} rows, "
        f"{s['bytes'] / 1e6:.1f} MB fetched, dropped {s['dropped'] or 0}, "
        f"{s['duplicates_across_files']} cross-file duplicates, {s['seconds']:.1f}s "
        f"({s['rows_per_s'] or 0:,.0f} rows/s)"
    )
    return "\n".join(lines)


def run_ingest(spark, data_cfg: Any, store: Storage, base_url: str, listing_prefix: str) -> dict:
    """The ingest Spark job (see the module docstring). Returns the listing dict.

    Returns
    -------
    dict
        ``partitions``: ``[{market, symbol, date, path, rows, dataset, source}]`` sorted by
        (symbol, date); ``funding``: ``[{market, symbol, month, path, rows}]``; ``files``: one
        manifest per source file; ``summary``: counts. Also written to
        ``<listing_prefix>/listing.json``.

    Raises
    ------
    ValueError
        bad ``data`` settings (symbol, market, dates), before anything is fetched.
    IngestError
        some files failed or were quarantined, or (``data.require_complete``) were missing.
    """
    t0 = time.perf_counter()
    data = to_plain(data_cfg)
    market = bn.check_market(data.get("market", "spot"))
    dataset = bn.check_dataset(data.get("dataset", "aggTrades"))
    symbols = list(data.get("symbols") or [])
    if not symbols:
        raise ValueError("data.symbols is empty")
    for s in symbols:
        bn.check_symbol(s)
    files = bn.plan_files(market, dataset, symbols, data.get("start"), data.get("end"))
    if data.get("funding"):
        if market == "spot":
            raise ValueError("data.funding=true needs a futures market (data.market=um or cm)")
        files += bn.plan_funding(market, symbols, data.get("start"), data.get("end"))
    if market == "cm":
        for s in symbols:
            bn.contract_size(s, data.get("contract_size") or bn.DEFAULT_CONTRACT_SIZE)
    settings = task_settings(data, base_url)
    tasks = [sf.to_dict() for sf in files]
    log.info(
        "ingest: %d files (%s %s %s %s..%s) from %s",
        len(tasks),
        market,
        dataset,
        ",".join(symbols),
        data.get("start"),
        data.get("end"),
        base_url,
    )

    sc = spark.sparkContext
    acc_files, acc_bytes, acc_rows = sc.accumulator(0), sc.accumulator(0), sc.accumulator(0)
    rdd = sc.parallelize(tasks, len(tasks)).mapPartitions(
        _task_fn(store.to_dict(), settings, acc_files, acc_bytes, acc_rows)
    )
    sc.setJobDescription(f"btsys ingest: {len(tasks)} files")
    box: dict = {}

    def collect():
        try:
            box["out"] = rdd.collect()
        except BaseException as e:  # re-raised in the driver thread
            box["err"] = e

    th = threading.Thread(target=collect, name="btsys-ingest-collect", daemon=True)
    th.start()
    while th.is_alive():
        th.join(timeout=2.0)
        if th.is_alive():
            log.info(
                "ingest progress: %d/%d files, %.1f MB, %s rows",
                acc_files.value,
                len(tasks),
                acc_bytes.value / 1e6,
                f"{acc_rows.value:,}",
            )
    if "err" in box:
        raise box["err"]
    manifests = [json.loads(x) for x in box["out"]]
    extra = dedupe_across_files(store, manifests)

    partitions, funding = [], []
    for m in manifests:
        if m.get("status") != "ok":
            continue
        for p in m.get("partitions", []):
            if m["dataset"] == bn.FUNDING:
                funding.append(
                    {
                        "market": m["market"],
                        "symbol": m["symbol"],
                        "month": p["month"],
                        "path": p["path"],
                        "rows": p["rows"],
                    }
                )
            else:
                partitions.append(
                    {
                        "market": m["market"],
                        "symbol": m["symbol"],
                        "date": p["date"],
                        "path": p["path"],
                        "rows": p["rows"],
                        "dataset": m["dataset"],
                        "source": m["file"],
                        "first_ts": p.get("first_ts"),
                        "last_ts": p.get("last_ts"),
                        "min_id": p.get("min_id"),
                        "max_id": p.get("max_id"),
                    }
                )
    partitions.sort(key=lambda p: (p["symbol"], p["date"], p["path"]))
    funding.sort(key=lambda p: (p["symbol"], p["month"]))
    manifests.sort(key=lambda m: (m["symbol"], m["dataset"], m["first"], m["period"]))
    report = {
        "market": market,
        "dataset": dataset,
        "symbols": symbols,
        "start": data.get("start"),
        "end": data.get("end"),
        "base_url": base_url,
        "partitions": partitions,
        "funding": funding,
        "files": manifests,
        "summary": _summary(manifests, extra, time.perf_counter() - t0),
    }
    store.write_text(f"{listing_prefix.rstrip('/')}/listing.json", json.dumps(report, sort_keys=True))
    log.info("ingest summary\n%s", format_summary(report))

    s = report["summary"]
    problems = [f"{f['file']}: {f['status']}: {f['error']}" for f in s["failed_files"]]
    if data.get("require_complete") and s["missing_files"]:
        problems += [f"{f}: missing (data.require_complete=true)" for f in s["missing_files"]]
    if problems:
        raise IngestError(
            f"ingest incomplete: {len(problems)} of {len(manifests)} files not ingested "
            "(rerun retries only these):\n  " + "\n  ".join(problems),
            report,
        )
    return {
        k: report[k]
        for k in (
            "partitions",
            "funding",
            "summary",
            "market",
            "dataset",
            "symbols",
            "start",
            "end",
            "base_url",
        )
    } | {"files": [_brief(m) for m in manifests]}


def _brief(m: dict) -> dict:
    """The manifest fields worth keeping in the cache marker (the full ones are in listing.json)."""
    keys = (
        "file",
        "market",
        "symbol",
        "dataset",
        "url",
        "status",
        "error",
        "size",
        "sha256",
        "rows",
        "reused",
        "dropped",
        "id_gaps",
        "flags",
        "cross_file_duplicates",
    )
    return {k: m.get(k) for k in keys if k in m}


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
    tables = [store.read_parquet(p).select(bn.TICK_SCHEMA.names).cast(bn.TICK_SCHEMA) for p in paths]
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
