"""Ingest throughput vs a bare pyarrow CSV -> Parquet pass over the same zips (same run).

    python bench/ingest.py             # >= 1 GB of CSV (generated once into a temp dir)
    python bench/ingest.py --gb 0.2    # smaller
    python bench/ingest.py --spark     # also the full Spark job (local[2]) over the same files

Measured, each in a fresh process (so peak RSS is per phase):

* ``bare``:   for each zip, inflate the member, ``pyarrow.csv.read_csv`` with forced types,
              ``pyarrow.parquet.write_table``. No checks at all: the reference.
* ``ingest``: :func:`btsys.data.ingest.ingest_file` for each file through a ``file://`` mirror:
              CHECKSUM fetch + SHA-256 of the zip, bounded safe unzip, parse (ms/µs, header
              detection), validation (prices, quantities, ids, order, duplicates), split by date,
              atomic Parquet writes, manifest.
* ``spark``:  (``--spark``) :func:`btsys.data.ingest.run_ingest` over the same mirror, local[2].

Target: ``ingest`` at >= 60 % of ``bare`` rows/s.
"""

from __future__ import annotations

import argparse
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


def _files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(os.path.join(root, "data")):
        out += [os.path.join(dirpath, n) for n in names if n.endswith(".zip")]
    return sorted(out)


def _peak_mb() -> float:
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


def phase_bare(root: str, out: str, q) -> None:
    import io
    import zipfile

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from btsys.data import binance as bn

    layout = bn.LAYOUTS[("spot", "aggTrades")]
    t0 = time.perf_counter()
    rows = 0
    for i, path in enumerate(_files(root)):
        with zipfile.ZipFile(path) as zf:
            data = zf.read(zf.namelist()[0])
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=[c for c, _ in layout], block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(column_types=dict(layout)),
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        with open(os.path.join(out, f"bare-{i}.parquet"), "wb") as f:
            f.write(buf.getvalue())
        rows += table.num_rows
        del data, table, buf
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "rows": rows,
            "peak_rss_mb": _peak_mb(),
            "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
        }
    )


def phase_ingest(root: str, out: str, q) -> None:
    import pyarrow as pa

    from btsys.data import binance as bn
    from btsys.data.ingest import ingest_file, task_settings
    from btsys.storage import LocalStorage

    store = LocalStorage(out)
    settings = task_settings({}, pathlib.Path(root).as_uri())
    files = []
    for path in _files(root):
        parts = os.path.relpath(path, root).split(os.sep)  # data/spot/daily/aggTrades/SYM/name
        label = parts[-1][:-4].split("-", 2)[2]
        files.append(bn.source_file("spot", parts[3], parts[4], parts[2], label))
    t0 = time.perf_counter()
    rows, statuses = 0, {}
    for sf in files:
        man = ingest_file(sf, store, settings)
        rows += man["rows"]
        statuses[man["status"]] = statuses.get(man["status"], 0) + 1
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "rows": rows,
            "peak_rss_mb": _peak_mb(),
            "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
            "statuses": statuses,
        }
    )


def phase_spark(root: str, out: str, symbols, start, end, q) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from btsys.data.ingest import run_ingest
    from btsys.spark import get_spark
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
            "peak_rss_mb": _peak_mb(),
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
    args = parse_args(ap, quick={"gb": 0.002, "ticks_per_day": 5_000, "repeat": 1})

    from btsys.data.synthetic import generate_mirror

    work = args.workdir or tempfile.mkdtemp(prefix="btsys-bench-ingest-")
    root = os.path.join(work, "mirror")
    bytes_per_row = 78.0  # spot aggTrades, µs timestamps
    days = max(1, round(args.gb * 1e9 / bytes_per_row / args.ticks_per_day))
    symbols, start = ["BTCUSDT"], "2025-01-01"
    import datetime as dt

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
    zip_bytes = sum(os.path.getsize(p) for p in _files(root))
    print(
        f"mirror: {len(_files(root))} zips, {inv['rows']:,} rows, {inv['csv_bytes'] / 1e9:.2f} GB CSV, "
        f"{zip_bytes / 1e9:.2f} GB zipped (generated in {inv['generate_seconds']:.1f}s) at {root}"
    )

    results: dict[str, dict] = {}
    phases = [("bare", phase_bare, ()), ("ingest", phase_ingest, ())]
    if args.spark:
        phases.append(("spark", phase_spark, (symbols, start, end)))
    for rep in range(args.repeat):
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
        f"ingest / bare throughput: {ratio:.0%} (target >= 60%)"
        + (f"; statuses {results['ingest'].get('statuses')}" if results["ingest"].get("statuses") else "")
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
