"""Ingest throughput and memory vs a bare streaming zip -> CSV -> Parquet pass over the same zips.

    python bench/ingest.py             # >= 1 GB of CSV (generated once into a temp dir)
    python bench/ingest.py --gb 0.2    # smaller
    python bench/ingest.py --spark     # also the full Spark job (local[2]) over the same files
    python bench/ingest.py --quick     # a few seconds (what the tests run)

Measured, each in a fresh process (so peak RSS is per phase):

* ``bare``:   for each zip, inflate the member as a stream (``zipfile``), read it with pyarrow's
              streaming CSV reader (forced types, 4 MiB blocks) and write the batches with a
              ``ParquetWriter``. No checks at all: the reference.
* ``ingest``: :func:`btsys.data.ingest.ingest_file` for each file through a ``file://`` mirror, then
              the lake commit: CHECKSUM + SHA-256 of the zip, bounded streaming unzip with CRC, parse
              (ms/µs, header, BOM, line numbers), validation across blocks (prices, quantities, ids,
              order, duplicates), one sorted Parquet file per UTC day, staged then renamed into the
              lake, manifests and the day index.
* ``spark``:  (``--spark``) the ingest stage's Spark job (:func:`btsys.stages.ingest.build`) over
  the same mirror, local[2].

Target: ``ingest`` at >= 80 % of ``bare`` rows/s, memory bounded by a day, not by a file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

from _common import parse_args  # noqa: E402  (bench/ is the script folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def zips(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(os.path.join(root, "data")):
        out += [os.path.join(dirpath, n) for n in names if n.endswith(".zip")]
    return sorted(out)


def peak_mb() -> float:
    """Peak RSS of this process (VmHWM: reset at exec, unlike ru_maxrss which a spawned child
    inherits from the parent that generated the mirror)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_stream(zip_path: str, out_path: str, market: str, dataset: str, block_size: int = 1 << 22) -> int:
    """The reference: zip member inflated as a stream -> pyarrow streaming CSV -> Parquet. Rows."""
    import zipfile

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from btsys.data import binance as bn

    layout = bn.LAYOUTS[(market, dataset)]
    rows = 0
    with zipfile.ZipFile(zip_path) as zf, zf.open(zf.namelist()[0]) as member:
        header = market != "spot"
        reader = pacsv.open_csv(
            member,
            read_options=pacsv.ReadOptions(
                column_names=[c for c, _ in layout], skip_rows=int(header), block_size=block_size
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(layout), true_values=bn.TRUE_VALUES, false_values=bn.FALSE_VALUES
            ),
        )
        with pq.ParquetWriter(out_path, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)
                rows += batch.num_rows
    return rows


def phase_bare(root: str, out: str, q) -> None:
    import pyarrow as pa

    t0 = time.perf_counter()
    rows = sum(
        bare_stream(p, os.path.join(out, f"bare-{i}.parquet"), "spot", "aggTrades")
        for i, p in enumerate(zips(root))
    )
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "rows": rows,
            "peak_rss_mb": peak_mb(),
            "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
        }
    )


def source_files(root: str):
    from btsys.data import binance as bn

    out = []
    for path in zips(root):
        parts = os.path.relpath(path, root).split(os.sep)  # data/spot/daily/aggTrades/SYM/name
        label = parts[-1][:-4].split("-", 2)[2]
        out.append(bn.source_file("spot", parts[3], parts[4], parts[2], label))
    return out


def phase_ingest(root: str, out: str, q) -> None:
    import pyarrow as pa

    from btsys.data.ingest import commit_files, ingest_file, task_settings
    from btsys.storage import LocalStorage

    store = LocalStorage(out)
    settings = task_settings({}, pathlib.Path(root).as_uri())
    t0 = time.perf_counter()
    mans = [ingest_file(sf, store, settings) for sf in source_files(root)]
    commit_files(store, mans, settings["staging"])
    statuses: dict = {}
    for m in mans:
        statuses[m["status"]] = statuses.get(m["status"], 0) + 1
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "rows": sum(m["rows"] for m in mans),
            "peak_rss_mb": peak_mb(),
            "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
            "statuses": statuses,
        }
    )


def phase_spark(root: str, out: str, symbols, start, end, q) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from btsys.spark import get_spark
    from btsys.stages.ingest import build as run_ingest
    from btsys.storage import LocalStorage

    spark = get_spark({"master": "local[2]", "conf": {"spark.ui.enabled": "false"}})
    spark.range(1).count()  # JVM warm-up not timed
    t0 = time.perf_counter()
    rep = run_ingest(
        spark,
        {"market": "spot", "dataset": "aggTrades", "symbols": symbols, "start": start, "end": end},
        LocalStorage(out),
        pathlib.Path(root).as_uri(),
        "cache/bench",
    )
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "rows": rep["summary"]["rows"],
            "peak_rss_mb": peak_mb(),
            "arrow_pool_peak_mb": float("nan"),
        }
    )
    spark.stop()


def run_phase(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="GB of CSV to generate (default 1.0)")
    ap.add_argument("--ticks-per-day", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None, help="keep/reuse the generated mirror here")
    ap.add_argument("--repeat", type=int, default=2, help="runs per phase; the best is reported")
    ap.add_argument("--spark", action="store_true", help="also time the Spark job (local[2])")
    args = parse_args(ap, quick={"gb": 0.005, "ticks_per_day": 20_000, "repeat": 1})

    from btsys.data.synthetic import generate_mirror

    work = args.workdir or tempfile.mkdtemp(prefix="btsys-bench-ingest-")
    root = os.path.join(work, "mirror")
    bytes_per_row = 78.0  # spot aggTrades, µs timestamps
    days = max(1, round(args.gb * 1e9 / bytes_per_row / args.ticks_per_day))
    symbols, start = ["BTCUSDT"], "2025-01-01"
    end = (dt.date(2025, 1, 1) + dt.timedelta(days=days - 1)).isoformat()
    inv_path = os.path.join(work, "inventory.json")
    if not os.path.exists(inv_path):
        t0 = time.perf_counter()
        inv = generate_mirror(
            root,
            markets=["spot"],
            datasets=["aggTrades"],
            symbols=symbols,
            start=start,
            end=end,
            ticks_per_day=args.ticks_per_day,
            monthly=False,
            daily="all",
            compresslevel=1,
        )
        inv["generate_seconds"] = time.perf_counter() - t0
        json.dump({k: inv[k] for k in ("rows", "csv_bytes", "generate_seconds")}, open(inv_path, "w"))
    inv = json.load(open(inv_path))
    zip_bytes = sum(os.path.getsize(p) for p in zips(root))
    print(
        f"mirror: {len(zips(root))} zips, {inv['rows']:,} rows, {inv['csv_bytes'] / 1e9:.2f} GB CSV, "
        f"{zip_bytes / 1e9:.2f} GB zipped (generated in {inv['generate_seconds']:.1f}s) at {root}"
    )
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

    results: dict[str, dict] = {}
    phases = [("bare", phase_bare, ()), ("ingest", phase_ingest, ())]
    if args.spark:
        phases.append(("spark", phase_spark, (symbols, start, end)))
    for _ in range(args.repeat):
        for name, fn, extra in phases:
            out = os.path.join(work, f"out-{name}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            r = run_phase(fn, root, out, *extra)
            shutil.rmtree(out, ignore_errors=True)
            if name not in results or r["seconds"] < results[name]["seconds"]:
                results[name] = r
    print(
        f"{'phase':<8} {'seconds':>8} {'rows':>13} {'M rows/s':>9} {'CSV MB/s':>9} {'peak RSS MB':>12} "
        f"{'arrow peak MB':>14}"
    )
    for name, r in results.items():
        print(
            f"{name:<8} {r['seconds']:>8.2f} {r['rows']:>13,} {r['rows'] / r['seconds'] / 1e6:>9.2f} "
            f"{inv['csv_bytes'] / 1e6 / r['seconds']:>9.0f} {r['peak_rss_mb']:>12.0f} "
            f"{r['arrow_pool_peak_mb']:>14.0f}"
        )
    ratio = (results["ingest"]["rows"] / results["ingest"]["seconds"]) / (
        results["bare"]["rows"] / results["bare"]["seconds"]
    )
    print(
        f"ingest / bare throughput: {ratio:.0%} (target >= 80%)"
        + (f"; statuses {results['ingest'].get('statuses')}" if results["ingest"].get("statuses") else "")
    )
    assert results["ingest"]["rows"] == inv["rows"], "the ingest lost or invented rows"
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
