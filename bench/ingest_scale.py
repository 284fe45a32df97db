"""Scale benchmark of the ingest (not a test): a month of ~100 M USD-M trades through the Spark job,
the peak memory of every process, a bare streaming pipeline on the same file, then bars, backtest
and MLflow on that month.

    python bench/ingest_scale.py                      # 31 days x 3.3 M rows (~102 M rows, ~6 GB CSV)
    python bench/ingest_scale.py --rows-per-day 1e6   # smaller
    python bench/ingest_scale.py --quick              # tiny: checks that every step runs
    python bench/ingest_scale.py --workdir /big/disk  # mirror and stores go there (deleted unless --keep)

Steps, each its own process tree; the peak RSS (``VmHWM``) of every process in the tree is sampled
from ``/proc`` and reported per kind (driver Python, JVM, Spark Python workers):

1. ``generate``: :func:`btsys.data.synthetic.write_month` streams the monthly zip of January 2025
   (USD-M ``trades`` layout, ``--days`` days) and a short monthly file of ``--small-days`` days at
   the same rows per day (Binance's early uploads look like that), one day in memory at a time.
2. ``bare``: zip member inflated as a stream -> pyarrow streaming CSV -> ``ParquetWriter`` on the big
   file (``bench/ingest.py``'s reference), one process.
3. ``ingest``: ``jobs/ingest.py`` (Spark ``local[2]``) on each month, each into its own store.
   Goals: peak RSS of any ingest process <= 1.5 GB; the same within 20 % for both months (memory
   follows the day, not the file); rows/s >= 80 % of ``bare``.
4. ``bars``, ``backtest``, ``report``: ``python -m btsys`` with ``stage=bars``, ``stage=backtest``
   and ``stage=all`` on the big month (each later stage reuses the cached ones).

Prints a table and writes ``results.json`` in the work directory. ``--quick`` runs steps 1-3 on a
tiny month and ``stage=all`` once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from _common import parse_args  # noqa: E402  (bench/ is the script folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _children(root: int) -> list[int]:
    """``root`` and its descendants, from ``/proc/*/stat`` (no extra dependency)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [root], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreeMemory:
    """Peak RSS (VmHWM) of every process of a tree, by kind, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.root, self.interval = pid, interval
        self.peak: dict[int, tuple[str, float]] = {}
        self.cmds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _kind(self, pid: int) -> str:
        cmd = _cmdline(pid)
        if pid == self.root:
            return "driver"
        if os.path.basename(cmd.split(" ")[0]) == "java" or "org.apache.spark" in cmd:
            return "JVM"
        if "pyspark" in cmd or "daemon" in cmd or "worker" in cmd:
            return "python worker"
        return "other"

    @staticmethod
    def _hwm_mb(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _run(self) -> None:
        while not self._stop.is_set() and os.path.exists(f"/proc/{self.root}"):
            for pid in _children(self.root):
                mb = self._hwm_mb(pid)
                kind, old = self.peak.get(pid, (None, 0.0))
                if mb >= old:
                    self.peak[pid] = (kind or self._kind(pid), mb)
                    self.cmds.setdefault(pid, _cmdline(pid)[:100])
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        out: dict[str, float] = {}
        for kind, mb in self.peak.values():
            out[kind] = max(out.get(kind, 0.0), mb)
        return out


def run(cmd: list[str], cwd: str, log_path: str) -> dict:
    """Run one command, sampling its process tree; wall time, peak RSS by kind, output."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env())
        mem = TreeMemory(proc.pid)
        out, _ = proc.communicate()
    peaks = mem.stop()
    if os.environ.get("BTSYS_BENCH_PIDS"):
        for pid, (kind, mb) in sorted(mem.peak.items()):
            print(f"  {pid} {kind:<14} {mb:8.0f} MB  {mem.cmds.get(pid, '')}")
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{open(log_path).read()[-3000:]}")
    return {"seconds": time.perf_counter() - t0, "rss_mb": peaks, "stdout": out, "log": log_path}


def _env() -> dict:
    return dict(os.environ, PYSPARK_PYTHON=PY, PYSPARK_DRIVER_PYTHON=PY, PYTHONPATH=REPO)


def generate(root: str, days: int, rows_per_day: int, work: str, tag: str) -> dict:
    code = (
        "import json; from btsys.data.synthetic import write_month; "
        f"inv = write_month({root!r}, 'um', 'trades', 'BTCUSDT', '2025-01', {rows_per_day}, days={days}); "
        "print(json.dumps(inv))"
    )
    r = run([PY, "-c", code], work, os.path.join(work, f"generate-{tag}.log"))
    r["inventory"] = json.loads(r["stdout"].strip().splitlines()[-1])
    return r


def bare(root: str, work: str) -> dict:
    code = (
        "import glob, json, sys; sys.path.insert(0, 'bench'); from ingest import bare_stream; "
        f"z = glob.glob({root!r} + '/data/futures/um/monthly/trades/BTCUSDT/*.zip')[0]; "
        f"n = bare_stream(z, {os.path.join(work, 'bare.parquet')!r}, 'um', 'trades'); "
        "print(json.dumps({'rows': n}))"
    )
    t0 = time.perf_counter()
    r = run([PY, "-c", "import pandas, pyarrow.parquet; " + code], REPO, os.path.join(work, "bare.log"))
    r["rows"] = json.loads(r["stdout"].strip().splitlines()[-1])["rows"]
    r["seconds"] = time.perf_counter() - t0
    os.remove(os.path.join(work, "bare.parquet"))
    return r


def overrides(root: str, store: str, work: str) -> list[str]:
    return [
        "data=binance",
        "data.market=um",
        "data.dataset=trades",
        "data.symbols=[BTCUSDT]",
        "data.start=2025-01-01",
        "data.end=2025-01-31",
        f"data.source.base_url=file://{root}",
        f"storage.root={store}",
        "spark.master='local[2]'",
        "bars=dollar",
        "bars.threshold_mode=dynamic",
        "bars.bars_per_day=200",
        "bars.lookback_days=3",
        f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
        "mlflow.experiment_name=ingest_scale",
        f"hydra.run.dir={work}/outputs",
    ]


def ingest(root: str, store: str, work: str, tag: str) -> dict:
    args = [a for a in overrides(root, store, work) if not a.startswith(("bars", "mlflow", "hydra"))]
    r = run(
        [PY, os.path.join(REPO, "jobs", "ingest.py"), *args], work, os.path.join(work, f"ingest-{tag}.log")
    )
    r["summary"] = json.loads([ln for ln in r["stdout"].splitlines() if ln.startswith("{")][-1])["summary"]
    return r


def stage(root: str, store: str, work: str, name: str) -> dict:
    r = run(
        [PY, "-m", "btsys", *overrides(root, store, work), f"stage={name}"],
        work,
        os.path.join(work, f"{name}.log"),
    )
    log = open(r["log"]).read() + r["stdout"]
    r["committed"] = {m[0]: float(m[1]) for m in re.findall(r"committed (\w+) \w+ in ([\d.]+)s", log)}
    return r


def fmt_mem(m: dict) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(m.items()) if v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-day", type=float, default=3.3e6)
    ap.add_argument("--days", type=int, default=31, help="days in the big monthly file (<= 31)")
    ap.add_argument("--small-days", type=int, default=9, help="days in the short monthly file")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = parse_args(ap, quick={"rows_per_day": 2_000, "days": 3})
    work = os.path.abspath(a.workdir or tempfile.mkdtemp(prefix="btsys-bench-scale-"))
    os.makedirs(work, exist_ok=True)
    free = shutil.disk_usage(work).free / 1e9
    print(f"work directory {work}; load average {os.getloadavg()}; free disk {free:.0f} GB")
    res: dict = {"load_avg_start": os.getloadavg(), "rows_per_day": int(a.rows_per_day)}
    big, small = os.path.join(work, "mirror-big"), os.path.join(work, "mirror-small")
    try:
        months = (("big", big, a.days), ("small", small, a.small_days))
        for tag, root, days in months[:1] if a.quick else months:  # --quick ingests the big one only
            g = generate(root, days, int(a.rows_per_day), work, tag)
            res[f"generate_{tag}"] = {k: g[k] for k in ("seconds", "rss_mb", "inventory")}
            inv = g["inventory"]
            print(
                f"generate {tag}: {inv['rows']:,} rows, {inv['csv_bytes'] / 1e9:.2f} GB CSV in "
                f"{g['seconds']:.0f}s, peak RSS {fmt_mem(g['rss_mb'])} MB"
            )
        b = bare(big, work)
        res["bare"] = {"seconds": b["seconds"], "rows": b["rows"], "rss_mb": b["rss_mb"]}
        print(
            f"bare streaming: {b['rows'] / b['seconds'] / 1e6:.2f} M rows/s, "
            f"peak RSS {fmt_mem(b['rss_mb'])} MB"
        )
        steps = [("big", big), ("small", small)] if not a.quick else [("big", big)]
        for tag, root in steps:
            r = ingest(root, os.path.join(work, f"store-{tag}"), work, tag)
            s = r["summary"]
            res[f"ingest_{tag}"] = {"seconds": r["seconds"], "rss_mb": r["rss_mb"], "summary": s}
            print(
                f"ingest {tag}: {s['rows']:,} rows, job {s['seconds']:.0f}s "
                f"({s['rows'] / s['seconds'] / 1e6:.2f} M rows/s), process {r['seconds']:.0f}s, "
                f"peak RSS {fmt_mem(r['rss_mb'])} MB"
            )
        store = os.path.join(work, "store-big")
        for name in ("all",) if a.quick else ("bars", "backtest", "all"):
            r = stage(big, store, work, name)
            res[f"stage_{name}"] = {
                "seconds": r["seconds"],
                "rss_mb": r["rss_mb"],
                "committed": r["committed"],
            }
            print(
                f"stage={name}: {r['seconds']:.0f}s (stages {r['committed']}), "
                f"peak RSS {fmt_mem(r['rss_mb'])} MB"
            )
        if not a.quick:
            ib, is_ = res["ingest_big"], res["ingest_small"]
            rate = ib["summary"]["rows"] / ib["summary"]["seconds"]
            res["ingest_vs_bare"] = rate / (res["bare"]["rows"] / res["bare"]["seconds"])
            res["peak_rss_big_vs_small"] = max(ib["rss_mb"].values()) / max(is_["rss_mb"].values())
            print(
                f"ingest job / bare: {res['ingest_vs_bare']:.0%} (goal >= 80%); peak RSS big / small month: "
                f"{res['peak_rss_big_vs_small']:.2f} (goal within 20%); largest ingest process "
                f"{max(ib['rss_mb'].values()):,.0f} MB (goal <= 1,500)"
            )
        res["load_avg_end"] = os.getloadavg()
        print(f"load average at the end {res['load_avg_end']}")
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        print(json.dumps(res, default=str))
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
