"""Scaling of the bars job over executors of a real multi-process Spark cluster.

Builds (once, cached) a synthetic tick lake of several symbols with the real ingest job, then runs
the bars job (``btsys.stages.bars.build``, the same code as ``jobs/bars.py``) on
``local-cluster[N,1,MB]`` for N = 1 and 2 executors (one core each) over the same lake, and prints
ticks/s and the speed-up. Each cluster runs in its own process (one SparkContext per process).

    .venv/bin/python bench/cluster.py [--symbols 4] [--days 5] [--ticks-per-day 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from _common import parse_args  # noqa: E402  (bench/ is the script folder)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT"]


def overrides(a, root: str) -> list[str]:
    end = f"2025-01-{a.days:02d}"
    return [
        "+experiment=demo",
        f"data.symbols=[{','.join(SYMBOLS[: a.symbols])}]",
        f"data.end={end}",
        f"data.synthetic.ticks_per_day={a.ticks_per_day}",
        f"storage.root={root}",
        "bars.threshold_mode=fixed",
        "bars.threshold=5e6",
    ]


def child(a) -> None:
    """One cluster: run the bars job (cold, then warm) and print a JSON line."""
    from btsys.config import compose
    from btsys.spark import get_spark
    from btsys.stages import bars, ingest
    from btsys.stages.context import RunContext

    cfg = compose(overrides(a, a.root))
    ctx = RunContext(cfg)
    listing = ingest.run(ctx)  # cache hit: built by the parent
    n_ticks = sum(p["rows"] for p in listing.meta["partitions"])
    t0 = time.perf_counter()
    ctx._spark = get_spark({"master": a.master, "conf": {"spark.ui.enabled": "false"}})
    start = time.perf_counter() - t0
    times = []
    for i in range(a.repeat):
        t0 = time.perf_counter()
        bars.build(ctx.spark, cfg.bars, ctx.store, listing, f"bench/bars-{a.executors}-{i}")
        times.append(time.perf_counter() - t0)
    print(json.dumps({"executors": a.executors, "ticks": n_ticks, "start_s": start, "times": times}))
    ctx.spark.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--ticks-per-day", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--executor-mb", type=int, default=2048)
    ap.add_argument("--root", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--master", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--executors", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--clusters", default="1,2", help="executor counts to compare, e.g. 1,2")
    quick = {
        "symbols": 1,
        "days": 1,
        "ticks_per_day": 5_000,
        "repeat": 1,
        "executor_mb": 1024,
        "clusters": "2",
    }
    a = parse_args(ap, quick=quick)
    if a.child:
        return child(a)
    a.root = a.root or os.path.join(tempfile.gettempdir(), "btsys-bench-cluster")
    cwd = a.root + "-work"
    os.makedirs(cwd, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, os.path.join(REPO, "jobs", "ingest.py"), *overrides(a, a.root)],
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    print(
        f"lake: {a.symbols} symbols x {a.days} days x {a.ticks_per_day:,} ticks under {a.root} "
        f"(ingest or cache hit: {time.perf_counter() - t0:.1f}s); {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for n in (int(x) for x in a.clusters.split(",")):
        master = f"local-cluster[{n},1,{a.executor_mb}]"
        p = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--master",
                master,
                "--executors",
                str(n),
                "--symbols",
                str(a.symbols),
                "--days",
                str(a.days),
                "--ticks-per-day",
                str(a.ticks_per_day),
                "--repeat",
                str(a.repeat),
                "--root",
                a.root,
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            sys.exit(p.stderr[-3000:])
        r = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
        rows.append(r)
        warm = min(r["times"][1:] or r["times"])
        print(
            f"{master:<26} cluster start {r['start_s']:5.1f}s  first job {r['times'][0]:6.2f}s  "
            f"warm {warm:6.2f}s  {r['ticks'] / warm / 1e6:6.1f} M ticks/s"
        )
    if len(rows) == 2:
        w1 = min(rows[0]["times"][1:] or rows[0]["times"])
        w2 = min(rows[1]["times"][1:] or rows[1]["times"])
        print(f"speed-up {rows[1]['executors']} executors vs {rows[0]['executors']}: {w1 / w2:.2f}x")


if __name__ == "__main__":
    main()
