"""Benchmark: the quality stage (Spark, per symbol-day) and the universe membership on its daily sums.

    .venv/bin/python bench/universe.py           # 50 symbols x 30 days x 10,000 ticks/day (demo-sized)
    .venv/bin/python bench/universe.py --quick   # 4 symbols x 3 days x 500 ticks (seconds)

Setup (not timed): a synthetic Binance mirror (some symbols listed late or delisted early, trade
sizes spread over two orders of magnitude) ingested by the real Spark ingest into a lake of one
Parquet file per symbol-day. Then, from one run over the same lake:

* reference: one process running the job's own per-day code (``day_row``: pyarrow read of four
  columns, the per-day statistics) over every symbol-day in a loop -- the single-pass rate;
* the quality job (``btsys.stages.quality.build``: Spark tasks over the symbol-day files, manifests
  joined on the driver, the table written), cold (first job of the session) and warm, with its rate
  against the reference and the peak RSS of the Spark Python workers and of the driver;
* the ``top_n`` membership (n=10, 7-day lookback, daily rebalance) ranked on the driver from the
  table's daily sums, and the heatmap/membership charts of a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)
from bars import PeakRSS  # noqa: E402  (bench/bars.py: the same RSS sampler)

from btsys.data.quality import day_row  # noqa: E402
from btsys.data.synthetic import generate_mirror  # noqa: E402
from btsys.stages.ingest import build as run_ingest  # noqa: E402
from btsys.stages.quality import build as run_quality  # noqa: E402
from btsys.storage import LocalStorage  # noqa: E402
from btsys.universe import UniverseSpec, compute_membership  # noqa: E402


def profiles(symbols: list, days: int, rng) -> dict:
    out = {}
    for s in symbols:
        p = {
            "volume_scale": float(np.exp(rng.normal(0, 1.2))),
            "volume_trend": float(np.exp(rng.normal(0, 0.7))),
        }
        u = rng.random()
        if u < 0.1 and days > 2:
            p["listing"] = f"2025-01-{int(rng.integers(2, days)):02d}"
        elif u < 0.2 and days > 2:
            p["delisting"] = f"2025-01-{int(rng.integers(1, days - 1)):02d}"
        out[s] = p
    return out


def reference(store, parts, gap_us) -> tuple[int, float]:
    """Single process, no Spark: the job's own per-day code over every symbol-day, in a loop."""
    t = time.perf_counter()
    n = sum(day_row(store, p, gap_us)["rows"] for p in parts)
    return n, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=50)
    ap.add_argument("--days", type=int, default=30, help="days from 2025-01-01 (at most 31)")
    ap.add_argument("--ticks-per-day", type=int, default=10_000)
    ap.add_argument("--dir", default=None, help="work directory, kept (default: a temporary one, removed)")
    a = parse_args(ap, argv, quick={"symbols": 4, "days": 3, "ticks_per_day": 500})
    root = a.dir or tempfile.mkdtemp(prefix="btsys-bench-universe-")
    symbols = [f"S{k:03d}USDT" for k in range(a.symbols)]
    end = f"2025-01-{a.days:02d}"
    load = os.getloadavg()
    print(
        f"bench/universe.py: {a.symbols} symbols x {a.days} days x {a.ticks_per_day:,} ticks/day; "
        f"{os.cpu_count()} cores; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; work dir {root}"
    )

    from btsys.spark import get_spark

    spark = get_spark(
        {
            "master": "local[2]",
            "app_name": "bench-universe",
            "conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"},
        }
    )
    t = time.perf_counter()
    rng = np.random.default_rng(3)
    prof = profiles(symbols, a.days, rng)
    mirror = os.path.join(root, f"mirror-{a.symbols}-{a.days}-{a.ticks_per_day}")
    if not os.path.exists(os.path.join(mirror, "_DONE")):  # kept with --dir: a rerun re-ingests nothing
        generate_mirror(
            mirror, symbols=symbols, start="2025-01-01", end=end, ticks_per_day=a.ticks_per_day, profiles=prof
        )
        open(os.path.join(mirror, "_DONE"), "w").close()
    store = LocalStorage(os.path.join(root, "store"))
    data = {"market": "spot", "dataset": "aggTrades", "symbols": symbols, "start": "2025-01-01", "end": end}
    listing = run_ingest(
        spark, data, store, base_url="file://" + os.path.abspath(mirror), listing_prefix="listing"
    )
    parts = listing["partitions"]
    n_ticks = sum(int(p["rows"]) for p in parts)
    print(
        f"setup (not timed): mirror + Spark ingest in {time.perf_counter() - t:.1f}s: {len(parts):,} "
        f"symbol-day files, {n_ticks:,} ticks"
    )

    gap_us = 300 * 1_000_000
    reference(store, parts[: min(20, len(parts))], gap_us)  # warm the page cache path
    reference(store, parts, gap_us)  # every file once: the same warm cache for all below
    n_ref, t_ref = reference(store, parts, gap_us)
    print("\n-- reference (same lake, this run)")
    print(f"one process, day_row over every file     {n_ref / t_ref / 1e6:8.1f} M ticks/s  ({t_ref:7.3f} s)")

    print("\n-- quality job (Spark local[2]: tasks over symbol-day files; table written)")
    me = psutil.Process()

    def workers():
        return [c for c in me.children(recursive=True) if "java" not in c.name().lower()]

    table = None
    for label in ("cold", "warm"):
        with PeakRSS(workers) as pk, PeakRSS(lambda: [me]) as drv:
            t = time.perf_counter()
            meta = run_quality(spark, store, listing, 300.0, f"bench/quality-{label}", symbols=symbols)
            dt = time.perf_counter() - t
        table = store.read_parquet(meta["path"]).to_pandas()
        print(
            f"run_quality ({label})                     {n_ticks / dt / 1e6:8.1f} M ticks/s  ({dt:7.3f} s)  "
            f"{len(table):,} symbol-days ({meta['summary']['missing']} missing); "
            f"{n_ticks / dt / (n_ref / t_ref):.0%} of the reference; "
            f"workers' peak RSS {pk.peak / 1e9:.2f} GB, driver {drv.peak / 1e9:.2f} GB"
        )

    print("\n-- universe membership on the driver (from the table's daily sums)")
    spec = UniverseSpec("top_n", n=min(10, a.symbols), lookback_days=7, rebalance="1d", min_history_days=2)
    daily = table[table["rows"] > 0]
    t = time.perf_counter()
    m = compute_membership(daily, spec, symbols, "2025-01-01", end)
    dt = time.perf_counter() - t
    mt = m.metrics()
    print(
        f"compute_membership top {spec.n} of {a.symbols}, {len(m.times)} rebalances   {dt * 1e3:8.1f} ms  "
        f"turnover {mt['universe_turnover']:.3f}, {mt['universe_size_mean']:.1f} members on average"
    )
    from btsys.report.quality import quality_heatmap_png
    from btsys.report.universe import membership_png

    quality_heatmap_png(table.head(4))  # matplotlib import and first figure: not timed
    t = time.perf_counter()
    quality_heatmap_png(table)
    membership_png(m)
    print(f"quality heatmap + membership chart      {(time.perf_counter() - t) * 1e3:8.1f} ms")
    spark.stop()
    if a.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
