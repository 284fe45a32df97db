"""Benchmark: ticks -> bars, in memory and as the Spark job over a Parquet tick lake.

    .venv/bin/python bench/bars.py                  # 50 M synthetic ticks
    .venv/bin/python bench/bars.py --ticks 5e6      # smaller

Prints, from one run over the same synthetic data (one stream per symbol, one Parquet file per
symbol-day in the ingest's lake layout, each with its version in the Parquet metadata):

* peers: a bare pyarrow read of the tick columns of every lake file; a bare numba pass (dollar-bar
  boundaries over ``quote_qty``); the two together (read each file, then the numba pass); a pandas
  groupby version (approximate bar ids from ``cumsum // threshold``, as often done);
* ``build_bars`` in memory (dollar bars, dollar imbalance bars) on the same ticks;
* the Spark job (``run_bars``) end to end: lake read, bars, Parquet write, cold (first job of the
  session: Python workers start, numba caches load) and warm; its rate against the bare
  read+numba rate; warm again without the listing's versions (what the version check costs);
* peak memory (RSS sampled every 10 ms): the driver during ``build_bars`` (extra over the resident
  ticks) and the Spark Python workers during the job, against the tick data's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import numba as nb
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)

from btsys.bars import TICK_COLUMNS, build_bars  # noqa: E402
from btsys.data.lake import Series, write_day  # noqa: E402
from btsys.data.validate import table_version  # noqa: E402
from btsys.stages.bars import build as run_bars  # noqa: E402
from btsys.storage import LocalStorage  # noqa: E402

DAY_US = 86_400_000_000
T0 = 1_735_689_600_000_000
BYTES_PER_TICK = 8 * 5 + 1  # ts, trade_id, price, qty, quote_qty (8 B) + is_buyer_maker (1 B) in numpy


class PeakRSS:
    """Peak RSS (bytes) of a set of processes, sampled on a thread.

    Cheap on purpose (it shares 2 cores with what it measures): the process list is refreshed
    every ``refresh`` seconds only, and each sample reads one ``/proc/PID/statm`` per process.
    """

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, procs_fn, interval: float = 0.01, refresh: float = 0.2):
        self.procs_fn, self.interval, self.refresh, self.peak = procs_fn, interval, refresh, 0
        self._stop = threading.Event()

    @classmethod
    def _rss(cls, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * cls.PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def _run(self):
        pids, t_list = [], -1e9
        while not self._stop.is_set():
            now = time.perf_counter()
            if now - t_list >= self.refresh:
                try:
                    pids = [p.pid for p in self.procs_fn()]
                except psutil.Error:
                    pass
                t_list = now
            self.peak = max(self.peak, sum(self._rss(pid) for pid in pids))
            time.sleep(self.interval)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def gen_day(rng, n: int, day: int, tid0: int, p0: float):
    ts = T0 + day * DAY_US + np.sort(rng.integers(0, DAY_US, n)).astype(np.int64)
    price = p0 * np.exp(np.cumsum(rng.normal(0.0, 2e-5, n)))
    qty = rng.lognormal(-3.0, 1.2, n)
    return pa.table(
        {
            "ts": ts,
            "trade_id": np.arange(tid0, tid0 + n, dtype=np.int64),
            "price": price,
            "qty": qty,
            "quote_qty": price * qty,
            "is_buyer_maker": rng.random(n) < 0.5,
        }
    )


@nb.njit(cache=True, nogil=True)
def bare_dollar_nb(quote, threshold, acc):
    """The least a dollar-bar pass can do: count closes of ``acc >= threshold`` with reset."""
    n_bars = 0
    for i in range(quote.shape[0]):
        acc += quote[i]
        if acc >= threshold:
            n_bars += 1
            acc = 0.0
    return n_bars, acc


def pandas_groupby_bars(df: pd.DataFrame, threshold: float) -> pd.DataFrame:
    bar = (df["quote_qty"].cumsum() // threshold).astype(np.int64)
    g = df.groupby(bar.to_numpy(), sort=False)
    out = g.agg(
        ts_open=("ts", "first"),
        ts_close=("ts", "last"),
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("qty", "sum"),
        quote_volume=("quote_qty", "sum"),
        n_ticks=("ts", "size"),
    )
    return out


def fmt_rate(n, s):
    return f"{n / s / 1e6:8.1f} M ticks/s  ({s:7.3f} s)"


def write_lake(store, a, per_file: int) -> tuple[list, float]:
    """The synthetic lake as the ingest's commit writes it: ``(listing entries, dollar threshold
    giving about ``--bars-per-day`` bars a day)``."""
    rng = np.random.default_rng(1)
    parts = []
    day_quote = 0.0
    for s in range(a.symbols):
        sym = f"SYM{s}"
        p0 = 100.0 * (s + 1)
        for d in range(a.days):
            tbl = gen_day(rng, per_file, d, d * per_file, p0)
            p0 = float(tbl["price"][-1].as_py())
            day_quote += float(pa.compute.sum(tbl["quote_qty"]).as_py())
            date = pd.Timestamp(T0 + d * DAY_US, unit="us").strftime("%Y-%m-%d")
            series = Series("spot", "aggTrades", sym)
            version = table_version(tbl)
            write_day(store, series.day_key(date), tbl, version)  # as the ingest's lake commit writes it
            parts.append(
                {
                    "market": "spot",
                    "dataset": "aggTrades",
                    "symbol": sym,
                    "date": date,
                    "path": series.day_key(date),
                    "rows": per_file,
                    "version": version,
                }
            )
    return parts, day_quote / (a.symbols * a.days) / a.bars_per_day


def bench_spark_job(
    store, parts: list, threshold: float, a, per_file: int, n_total: int, t_readnb, data_gb
) -> None:
    """The bars stage's Spark job on the lake: cold, warm, warm without versions, imbalance bars."""
    me = psutil.Process()
    print("\n-- Spark job run_bars: lake -> bars Parquet (read + bars + write)")
    from btsys.spark import get_spark

    t = time.perf_counter()
    spark = get_spark(
        {
            "master": "local[2]",
            "app_name": "bench-bars",
            "conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"},
        }
    )
    print(f"SparkSession start: {time.perf_counter() - t:.1f}s (not counted)")
    cfg = {"kind": "dollar", "threshold": threshold}

    def workers():
        return [c for c in me.children(recursive=True) if "java" not in c.name().lower()]

    for label in ("cold", "warm"):
        base = sum(c.memory_info().rss for c in workers())
        with PeakRSS(workers) as pk:
            t = time.perf_counter()
            meta = run_bars(spark, cfg, store, {"partitions": parts}, f"out/{label}")
            dt = time.perf_counter() - t
        nb_ = sum(m["n_bars"] for m in meta["symbols"].values())
        print(
            f"run_bars dollar ({label})              {fmt_rate(n_total, dt)}  {nb_:,} bars; "
            f"{n_total / dt / (n_total / t_readnb):.0%} of bare read+numba; "
            f"Python workers' peak RSS {pk.peak / 1e9:.2f} GB (before: {base / 1e9:.2f} GB; "
            f"peak = {pk.peak / 1e9 / data_gb:.2f} x tick data)"
        )
    # the same warm job without the listing's versions: what checking them costs
    t = time.perf_counter()
    unversioned = [{k: v for k, v in p.items() if k != "version"} for p in parts]
    run_bars(spark, cfg, store, {"partitions": unversioned}, "out/unversioned")
    dt = time.perf_counter() - t
    print(f"run_bars dollar (warm, no version check) {fmt_rate(n_total, dt)}")
    t = time.perf_counter()
    meta = run_bars(
        spark,
        {
            "kind": "dollar_imbalance",
            "expected_ticks_init": per_file / a.bars_per_day,
            "max_ticks": 20_000,
        },
        store,
        {"partitions": parts},
        "out/imb",
    )
    dt = time.perf_counter() - t
    print(
        f"run_bars dollar_imbalance (warm)       {fmt_rate(n_total, dt)}  "
        f"{sum(m['n_bars'] for m in meta['symbols'].values()):,} bars"
    )
    spark.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=float, default=50e6)
    ap.add_argument("--symbols", type=int, default=1)
    ap.add_argument("--days", type=int, default=20, help="days (lake files) per symbol")
    ap.add_argument("--bars-per-day", type=float, default=2000.0, help="sets the dollar threshold")
    ap.add_argument("--pandas-max", type=float, default=10e6, help="ticks given to the pandas peer")
    ap.add_argument("--dir", default=None, help="lake directory (default: a temporary one, removed)")
    ap.add_argument("--no-spark", action="store_true")
    a = parse_args(ap, argv, quick={"ticks": 200_000, "days": 2, "pandas_max": 100_000})
    n_total = int(a.ticks)
    per_file = max(1, n_total // (a.symbols * a.days))
    n_total = per_file * a.symbols * a.days
    root = a.dir or tempfile.mkdtemp(prefix="btsys-bench-bars-")
    store = LocalStorage(root)
    me = psutil.Process()
    print(
        f"bench/bars.py: {n_total:,} ticks = {a.symbols} symbol(s) x {a.days} days x {per_file:,}; "
        f"{os.cpu_count()} cores; lake at {root}"
    )

    # ---------------------------------------------------------------- the lake
    t = time.perf_counter()
    parts, threshold = write_lake(store, a, per_file)
    lake_mb = sum(os.path.getsize(store.uri(p["path"])) for p in parts) / 1e6
    data_gb = n_total * BYTES_PER_TICK / 1e9
    print(
        f"generated and wrote the lake in {time.perf_counter() - t:.1f}s: {lake_mb:,.0f} MB Parquet, "
        f"{data_gb:.2f} GB as numpy columns; dollar threshold {threshold:,.0f}"
    )

    # ---------------------------------------------------------------- peers
    print("\n-- peers (same data, this run)")
    bare_dollar_nb(np.ones(10), 5.0, 0.0)  # compile outside the timings
    for p in parts:  # one untimed pass: every reader below sees the same warm page cache
        store.read_parquet(p["path"], columns=TICK_COLUMNS)
    t = time.perf_counter()
    for p in parts:  # decode into Arrow memory; numpy views of its chunks are free
        tb = store.read_parquet(p["path"], columns=TICK_COLUMNS)
        del tb
    t_read = time.perf_counter() - t
    print(f"bare pyarrow read (6 columns)          {fmt_rate(n_total, t_read)}")
    t = time.perf_counter()
    nbars, acc = 0, 0.0
    for p in parts:
        tb = store.read_parquet(p["path"], columns=TICK_COLUMNS)
        for chunk in tb.column("quote_qty").chunks:
            k, acc = bare_dollar_nb(chunk.to_numpy(), threshold, acc)
            nbars += k
        del tb
    t_readnb = time.perf_counter() - t
    print(f"bare pyarrow read + numba pass        {fmt_rate(n_total, t_readnb)}")

    # in memory: the whole lake as one chunked table per symbol (zero-copy numpy per batch)
    tables = {}
    for s in range(a.symbols):
        sym = f"SYM{s}"
        tables[sym] = pa.concat_tables(
            [store.read_parquet(p["path"], columns=TICK_COLUMNS) for p in parts if p["symbol"] == sym]
        )
    quote = np.concatenate([tables[sym].column("quote_qty").to_numpy() for sym in tables])
    t = time.perf_counter()
    bare_dollar_nb(quote, threshold, 0.0)
    t_nb = time.perf_counter() - t
    print(f"bare numba pass (in memory)            {fmt_rate(n_total, t_nb)}")
    del quote

    n_pd = min(n_total, int(a.pandas_max))
    first = tables["SYM0"].slice(0, n_pd).to_pandas()
    t = time.perf_counter()
    pdb = pandas_groupby_bars(first, threshold)
    t_pd = time.perf_counter() - t
    print(f"pandas groupby (approx. ids, {n_pd / 1e6:.0f} M)   {fmt_rate(n_pd, t_pd)}  {len(pdb):,} bars")
    del first, pdb

    # ---------------------------------------------------------------- build_bars in memory
    print("\n-- build_bars in memory (same ticks, one stream per symbol)")
    build_bars(tables["SYM0"].slice(0, 1000), "dollar", threshold=threshold)  # JIT/cache load
    build_bars(tables["SYM0"].slice(0, 1000), "dollar_imbalance")
    for kind, kw in [
        ("dollar", dict(threshold=threshold)),
        ("dollar_imbalance", dict(expected_ticks_init=per_file / a.bars_per_day, max_ticks=20_000)),
        ("time", dict(interval="1min")),
    ]:
        base = me.memory_info().rss
        with PeakRSS(lambda: [me]) as pk:
            t = time.perf_counter()
            n_bars = sum(len(build_bars(tables[sym], kind, **kw)) for sym in tables)
            dt = time.perf_counter() - t
        print(
            f"build_bars {kind:17s}          {fmt_rate(n_total, dt)}  {n_bars:,} bars; "
            f"peak extra RSS {(pk.peak - base) / 1e9:.3f} GB"
        )
    del tables

    # ---------------------------------------------------------------- the Spark job
    if not a.no_spark:
        bench_spark_job(store, parts, threshold, a, per_file, n_total, t_readnb, data_gb)
    if a.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
