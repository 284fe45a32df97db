"""Reporting overheads: logging one run, a Hydra job's whole overhead, a 10,000-combination sweep.

    python bench/report.py [--repeat 10] [--jobs 9] [--days 365] [--grid 100] [--quick]

Prints, each next to a reference measured in the same run:

1. ``log_run`` of one backtest (params, metrics, tags, config.yaml, returns/trades Parquet, six
   charts, HTML tearsheet with the drawdown periods) into a sqlite store — reference: a bare
   fluent MLflow run with the same params and metrics and no artifacts;
2. the whole per-job overhead of a Hydra multirun with the MLflow callback (basic launcher):
   ``(wall(9 jobs) - wall(1 job)) / 8`` (``--jobs``) minus the backtest itself, measured on the test app of
   tests/test_multirun.py (what ``btsys.pipeline.run`` does after the cached stages);
3. ``log_sweep_table`` of a real 100 x 100 kernel sweep (``btsys.backtest.sweep``) with the top 5
   as child runs — reference: the sweep's own compute time.
Peak RSS of this process is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, "tests")
sys.path[:0] = [ROOT, TESTS]
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
from _common import parse_args  # noqa: E402  (bench/ is the script folder)


def compose(tmp, *overrides):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    import btsys.config  # noqa: F401

    with initialize_config_dir(os.path.join(ROOT, "conf"), version_base="1.3"):
        return _compose(
            "config",
            overrides=[
                "+experiment=demo",
                f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
                f"mlflow.artifact_location={tmp}/artifacts",
                *overrides,
            ],
        )


def bench_log_run(tmp: str, n: int = 10, days: int = 365) -> None:
    from test_report_helpers import make_result, prices

    from btsys.report import mlflow_log as ml
    from btsys.report.charts import render_charts
    from btsys.report.tearsheet import render_tearsheet
    from btsys.stages.backtest import StageResult

    cfg = compose(tmp)
    t0 = time.perf_counter()
    r = make_result(10, 50, n=24 * days, seed=1, tick=0.01)  # one year of hourly bars by default
    t_bt = time.perf_counter() - t0
    # as the pipeline hands it over: with the close prices (price chart, instrument decimals)
    r = StageResult(r, ["BTCUSDT"], prices={"BTCUSDT": prices(24 * days, 1, tick=0.01)})
    t0 = time.perf_counter()
    ml.log_run(cfg, r, {"ingest": "i", "bars": "b", "features": "f"})  # warm-up: import, db, experiment
    t_first = time.perf_counter() - t0
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        ml.log_run(cfg, r, {"ingest": "i", "bars": "b", "features": "f"})
        ts.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n):
        pngs = render_charts(r, prices=r.prices)
    t_charts = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        render_tearsheet(r, pngs, prices=r.prices)
    t_html = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        ml.find_logged_run(cfg)
    t_find = (time.perf_counter() - t0) / n
    # reference: the bare fluent API, same params and metrics, no artifacts
    import mlflow

    mlflow.set_tracking_uri(str(cfg.mlflow.tracking_uri))
    mlflow.set_experiment("bench_reference")
    params = ml.param_items(cfg)
    metrics = {k: float(v) for k, v in r.metrics.items()}
    ref = []
    for _ in range(n):
        t0 = time.perf_counter()
        with mlflow.start_run():
            items = list(params.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
            mlflow.log_metrics(metrics)
        ref.append(time.perf_counter() - t0)
    print(
        f"[1] log_run, one run ({len(r.equity):,} bars, {len(r.trades)} trades, {len(params)} params): "
        f"median {np.median(ts) * 1000:.0f} ms (min {min(ts) * 1000:.0f}, max {max(ts) * 1000:.0f}); "
        f"first in process {t_first:.2f} s (mlflow import + db + experiment)"
    )
    print(
        f"    of which charts {t_charts * 1000:.0f} ms, tearsheet {t_html * 1000:.0f} ms; "
        f"find_logged_run {t_find * 1000:.1f} ms"
    )
    print(
        f"    reference: bare fluent mlflow run, same params+metrics, no artifacts: "
        f"median {np.median(ref) * 1000:.0f} ms;  backtest itself {t_bt * 1000:.0f} ms"
    )


APP = textwrap.dedent("""
    import math, sys, time
    import hydra
    import btsys.config  # noqa: F401
    from test_report_helpers import make_result
    from btsys.report.mlflow_log import find_logged_run, log_run, logged_metrics

    @hydra.main(config_path=CONF, config_name="config", version_base="1.3")
    def main(cfg):
        t0 = time.perf_counter()
        r = make_result(int(cfg.strategy.fast), int(cfg.strategy.slow), n=24 * DAYS, seed=5)
        with open(BT_LOG, "a") as f:
            f.write(f"{time.perf_counter() - t0}\\n")
        log_run(cfg, r, keys={"ingest": "ing", "bars": "bars", "features": "feat"})
        return r.metrics["sharpe"] if math.isfinite(r.metrics["sharpe"]) else -1e9

    if __name__ == "__main__":
        main()
""")


def bench_hydra_job(tmp: str, jobs: int = 9, days: int = 365, smoke: bool = False) -> None:
    app = os.path.join(tmp, "app.py")
    bt_log = os.path.join(tmp, "bt.txt")
    with open(app, "w") as f:
        f.write(f"CONF = {os.path.join(ROOT, 'conf')!r}\nBT_LOG = {bt_log!r}\nDAYS = {days}\n" + APP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT]))

    def run(name, fasts):
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                sys.executable,
                app,
                "-m",
                "+experiment=demo",
                f"strategy.fast={fasts}",
                "strategy.slow=50",
                f"mlflow.tracking_uri=sqlite:///{tmp}/hydra.db",
                f"mlflow.artifact_location={tmp}/hydra_artifacts",
                f"hydra.sweep.dir={tmp}/multirun/{name}",
            ],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        if p.returncode:
            raise RuntimeError(p.stderr[-3000:])
        return time.perf_counter() - t0

    if smoke:  # --quick: one two-job multirun, no figure
        print(f"[2] smoke: a 2-job multirun of the test app took {run('smoke', '5,6'):.2f} s")
        return
    run("warm", "5")  # creates the db
    open(bt_log, "w").close()
    t1 = run("one", "6")
    t9 = run("many", ",".join(str(f) for f in range(7, 7 + jobs)))
    bts = [float(x) for x in open(bt_log).read().split()]
    bt = float(np.mean(bts))
    per_job = (t9 - t1) / (jobs - 1)
    print(
        f"[2] Hydra multirun with the MLflow callback: 1 job {t1:.2f} s, {jobs} jobs {t9:.2f} s -> "
        f"{per_job:.3f} s per extra job, of which the backtest {bt:.3f} s -> overhead "
        f"{per_job - bt:.3f} s per job (target <= 0.5 s); fixed cost per sweep (process start, "
        f"imports, parent run, summary) {t1 - per_job:.2f} s"
    )


def bench_pipeline_job(tmp: str, jobs: int = 9, data: tuple = (), smoke: bool = False) -> None:
    """The same figure for the real ``python -m btsys -m +experiment=demo`` on cached bars
    (``data``: overrides of the demo's data, e.g. fewer symbols)."""
    from btsys.stages import backtest, bars, features, ingest
    from btsys.stages.context import RunContext

    work = os.path.join(tmp, "pipeline")
    os.makedirs(work, exist_ok=True)
    base = [
        "+experiment=demo",
        "strategy.slow=50",
        f"storage.root={work}/data",
        f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
        *data,
    ]

    def run(name, fasts):
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "btsys",
                "-m",
                *base,
                f"strategy.fast={fasts}",
                f"hydra.sweep.dir={work}/multirun/{name}",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        if p.returncode:
            raise RuntimeError(p.stderr[-3000:])
        return time.perf_counter() - t0

    if smoke:  # --quick: one two-job multirun of the real pipeline, no figure
        print(
            f"[2b] smoke: python -m btsys -m, 2 jobs, ingest and bars included: {run('smoke', '5,6'):.2f} s"
        )
        return
    run("warm", "5")  # ingest, bars, features: cached from here on
    t1 = run("one", "6")
    t9 = run("many", ",".join(str(f) for f in range(7, 7 + jobs)))
    per_job = (t9 - t1) / (jobs - 1)
    cfg = compose(work, "strategy.slow=50", f"storage.root={work}/data", "strategy.fast=7", *data)
    ctx = RunContext(cfg)
    listing = ingest.run(ctx)
    feats = features.run(ctx, bars.run(ctx, listing))
    backtest.run(cfg, ctx.store, feats, listing)
    t0 = time.perf_counter()
    for _ in range(5):
        backtest.run(cfg, ctx.store, feats, listing)
    bt = (time.perf_counter() - t0) / 5
    print(
        f"[2b] python -m btsys -m +experiment=demo on cached bars: {per_job:.3f} s per extra job, of which "
        f"loading the cached features + signals + backtest {bt:.3f} s -> overhead {per_job - bt:.3f} s per "
        f"job (target <= 0.5 s)"
    )


def bench_kernel_sweep(tmp: str, side: int = 100, days: int = 365) -> None:
    import pandas as pd
    from test_report_helpers import prices

    from btsys.backtest import simulate
    from btsys.backtest.sweep import sweep
    from btsys.report import mlflow_log as ml
    from btsys.signals import generate_signals

    ts, close = prices(24 * days, 3)
    # fast < slow in every pair (the strategy's constraint is checked before the sweep runs)
    grid = {"fast": list(range(2, 2 + side)), "slow": list(range(side + 10, side + 10 + 4 * side, 4))}
    t0 = time.perf_counter()
    table, daily = sweep(close, grid, ts=ts, fees=0.0005, daily_returns=True)
    t_sweep = time.perf_counter() - t0
    table = table.rename(columns={"fast": "strategy.fast", "slow": "strategy.slow"})
    cfg = compose(tmp, "sweep.mode=kernel", "sweep.top_k=5")
    ml.experiment_id(cfg)
    top = []
    for i in table["sharpe"].sort_values(ascending=False).index[:5]:
        f, s = int(table.loc[i, "strategy.fast"]), int(table.loc[i, "strategy.slow"])
        sig = generate_signals({"name": "ma_cross", "fast": f, "slow": s}, pd.DataFrame({"close": close}))
        res = simulate(close, sig.entries, sig.exits, ts=ts, fees=0.0005)
        top.append(({"strategy.fast": f, "strategy.slow": s}, res))
    t0 = time.perf_counter()
    rid = ml.log_sweep_table(
        cfg, table, ["strategy.fast", "strategy.slow"], "sharpe", top, returns=daily, keys={"bars": "b"}
    )
    t_log = time.perf_counter() - t0
    m = ml.client_for(cfg).get_run(rid).data.metrics
    print(
        f"[3] log_sweep_table of {len(table):,} combinations (PBO by CSCV over all of them) + top 5 "
        f"child runs: {t_log:.2f} s (target <= 30 s); reference: the kernel sweep itself, with daily "
        f"returns, {t_sweep:.2f} s. best sharpe {m['best_sharpe']:.2f}, DSR {m['dsr']:.3f}, "
        f"PBO {m.get('pbo', float('nan')):.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10, help="log_run calls timed")
    ap.add_argument("--jobs", type=int, default=9, help="jobs of the timed multiruns (>= 2)")
    ap.add_argument("--days", type=int, default=365, help="days of hourly bars per backtest")
    ap.add_argument("--grid", type=int, default=100, help="kernel sweep of grid x grid combinations")
    ap.add_argument("--demo-symbols", type=int, default=2, help="symbols of the demo multirun (1 or 2)")
    ap.add_argument("--demo-days", type=int, default=10, help="days of the demo multirun (1..31)")
    quick = {"repeat": 2, "jobs": 2, "days": 20, "grid": 10, "demo_symbols": 1, "demo_days": 2}
    a = parse_args(ap, quick=quick)
    symbols = ",".join(["BTCUSDT", "ETHUSDT"][: a.demo_symbols])
    data = (f"data.symbols=[{symbols}]", f"data.end=2025-01-{a.demo_days:02d}")
    with tempfile.TemporaryDirectory(prefix="btsys-bench-report-") as tmp:
        os.chdir(tmp)
        bench_log_run(tmp, a.repeat, a.days)
        bench_pipeline_job(tmp, a.jobs, data, smoke=a.quick)
        bench_kernel_sweep(tmp, a.grid, a.days)
        bench_hydra_job(tmp, a.jobs, a.days, smoke=a.quick)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the bench process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
