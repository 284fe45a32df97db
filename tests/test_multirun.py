"""Hydra multiruns through the MLflow sweep callback, in real subprocesses and a real sqlite store.

``APP`` is a small Hydra app over the project's ``conf/`` (so ``hydra.callbacks`` from
``conf/config.yaml`` is what is tested) whose task does what ``btsys.pipeline.run`` does at its
end — skip a trial already logged, else backtest (the real engine) and ``log_run`` — and fails on
purpose for ``strategy.fast=13``. The last test runs the real ``python -m btsys`` end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from conftest import CONF_DIR, TESTS

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = os.path.dirname(TESTS)
DESIGN_METRICS = {
    "total_return",
    "annual_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "win_rate",
    "profit_factor",
    "n_trades",
    "exposure",
    "fees_paid",
    "funding_paid",
}

APP = textwrap.dedent(f"""
    import math
    import hydra
    import btsys.config  # noqa: F401
    from test_report_helpers import make_result
    from btsys.report.mlflow_log import find_logged_run, log_run, logged_metrics

    @hydra.main(config_path={CONF_DIR!r}, config_name="config", version_base="1.3")
    def main(cfg):
        if int(cfg.strategy.fast) == 13:
            raise RuntimeError("injected failure for fast=13")
        if not cfg.force:
            rid = find_logged_run(cfg)
            if rid:
                return logged_metrics(cfg, rid)["sharpe"]
        r = make_result(int(cfg.strategy.fast), int(cfg.strategy.slow), n=24 * 40, seed=5)
        log_run(cfg, r, keys={{"ingest": "ing", "bars": "bars", "features": "feat"}})
        v = r.metrics["sharpe"]
        return v if math.isfinite(v) else -1e9

    if __name__ == "__main__":
        main()
""")


def run_app(tmp_path, sweep_name, *overrides, timeout=300):
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT]), MPLBACKEND="Agg")
    cmd = [
        sys.executable,
        str(app),
        "-m",
        "+experiment=demo",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"mlflow.artifact_location={tmp_path}/artifacts",
        f"hydra.sweep.dir={tmp_path}/multirun/{sweep_name}",
        *overrides,
    ]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return p


def client_and_exp(tmp_path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return c, c.get_experiment_by_name("demo").experiment_id


def parents(c, exp):
    return c.search_runs(
        [exp], "tags.`btsys.run_kind` = 'sweep_parent'", order_by=["attributes.start_time ASC"]
    )


def children(c, exp, pid):
    return c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{pid}'")


def test_grid_multirun_parent_children_summary_and_rerun_skips(tmp_path):
    p = run_app(tmp_path, "first", "strategy.fast=5,10", "strategy.slow=40,80")
    c, exp = client_and_exp(tmp_path)
    ps = parents(c, exp)
    assert len(ps) == 1
    parent = ps[0]
    pid = parent.info.run_id
    assert parent.info.status == "FINISHED"
    kids = children(c, exp, pid)
    assert len(kids) == 4
    combos = set()
    for k in kids:
        assert k.info.status == "FINISHED"
        assert DESIGN_METRICS <= set(k.data.metrics)
        assert k.data.tags["btsys.bars_key"] == "bars" and "btsys.git_commit" in k.data.tags
        arts = {a.path for a in c.list_artifacts(k.info.run_id)}
        assert {"config.yaml", "tearsheet.html", "returns.parquet", "charts"} <= arts
        assert len(c.list_artifacts(k.info.run_id, "charts")) == 5
        combos.add((k.data.params["strategy.fast"], k.data.params["strategy.slow"]))
    assert combos == {("5", "40"), ("5", "80"), ("10", "40"), ("10", "80")}
    # the summary on the parent
    arts = {a.path for a in c.list_artifacts(pid)}
    assert {
        "config.yaml",
        "sweep_trials.parquet",
        "sweep_trials.csv",
        "sweep_heatmap.png",
        "sweep_summary.json",
    } <= arts
    table = pd.read_parquet(c.download_artifacts(pid, "sweep_trials.parquet", str(tmp_path / "dl")))
    assert len(table) == 4 and set(table["status"]) == {"FINISHED"}
    assert {"strategy.fast", "strategy.slow", "sharpe", "run_id"} <= set(table.columns)
    m = parent.data.metrics
    assert m["n_trials"] == 4 and m["best_sharpe"] == pytest.approx(table["sharpe"].max())
    assert 0 <= m["dsr"] <= 1 and 0 <= m["pbo"] <= 1
    best = table.loc[table["sharpe"].idxmax()]
    assert parent.data.tags["btsys.best_run_id"] == best["run_id"]
    assert parent.data.tags["btsys.best_run_name"] == c.get_run(best["run_id"]).info.run_name
    assert best["run_id"] in parent.data.tags["mlflow.note.content"]
    assert parent.data.params["best.strategy.fast"] == str(best["strategy.fast"])
    # the parent shows the grid, not the base values of the swept keys
    assert parent.data.params["sweep.grid.strategy.fast"] == "5,10"
    assert "strategy.fast" not in parent.data.params and "strategy.slow" not in parent.data.params
    assert parent.data.params["strategy.name"] == "ma_cross"
    # and the terminal shows the best trial and its parameters
    assert (
        f"strategy.fast={best['strategy.fast']} strategy.slow={best['strategy.slow']}" in p.stdout + p.stderr
    )

    # a second, smaller sweep in the SAME sweep dir: its summary holds its own three trials only;
    # two were logged by the first sweep (found by config hash, linked, not recomputed), one is new
    n_before = len(c.search_runs([exp], "tags.`btsys.run_kind` = 'trial'"))
    run_app(tmp_path, "first", "strategy.fast=5,10,20", "strategy.slow=40")
    assert len(c.search_runs([exp], "tags.`btsys.run_kind` = 'trial'")) == n_before + 1
    ps = parents(c, exp)
    assert len(ps) == 2
    p2 = ps[1]
    kids2 = children(c, exp, p2.info.run_id)
    assert p2.info.status == "FINISHED" and len(kids2) == 3  # every trial of its grid under it
    assert p2.data.metrics["n_reused"] == 2 and p2.data.metrics["n_trials"] == 3
    links = [k for k in kids2 if k.data.tags["btsys.run_kind"] == "trial_link"]
    assert len(links) == 2
    for k in links:
        orig = c.get_run(k.data.tags["btsys.reused_run_id"])
        assert orig.info.run_id in set(table["run_id"]) and orig.data.metrics == k.data.metrics
        assert k.data.params["strategy.fast"] == orig.data.params["strategy.fast"]
    t2 = pd.read_parquet(c.download_artifacts(p2.info.run_id, "sweep_trials.parquet", str(tmp_path / "dl2")))
    assert sorted(t2["strategy.fast"]) == [5, 10, 20] and set(t2["strategy.slow"].astype(int)) == {40}
    assert t2["reused"].sum() == 2
    assert int(p2.data.params["best.strategy.fast"]) in (5, 10, 20)
    assert p2.data.tags["btsys.best_run_id"] in {k.info.run_id for k in kids2}

    # force=true reruns them (four new children)
    run_app(tmp_path, "third", "strategy.fast=5,10", "strategy.slow=40,80", "force=true")
    p3 = parents(c, exp)[2]
    assert len(children(c, exp, p3.info.run_id)) == 4


def test_failing_job_is_recorded_and_the_sweep_goes_on_joblib(tmp_path):
    # three jobs on two loky workers; fast=13 raises inside the task
    p = run_app(tmp_path, "fail", "strategy.fast=5,13,20", "strategy.slow=40", "hydra/launcher=btsys_joblib")
    c, exp = client_and_exp(tmp_path)
    ps = parents(c, exp)
    assert len(ps) == 1 and ps[0].info.status == "FINISHED"
    kids = children(c, exp, ps[0].info.run_id)
    by_fast = {k.data.params["strategy.fast"]: k for k in kids}
    assert set(by_fast) == {"5", "13", "20"}
    failed = by_fast["13"]
    assert failed.info.status == "FAILED"
    assert "injected failure for fast=13" in failed.data.tags["btsys.error"]
    assert failed.data.tags["btsys.error_type"] == "RuntimeError"
    assert {"config.yaml", "error.txt"} <= {a.path for a in c.list_artifacts(failed.info.run_id)}
    for f in ("5", "20"):
        assert by_fast[f].info.status == "FINISHED" and DESIGN_METRICS <= set(by_fast[f].data.metrics)
    m = ps[0].data.metrics
    assert m["n_trials"] == 3 and m["n_failed"] == 1
    table = pd.read_parquet(
        c.download_artifacts(ps[0].info.run_id, "sweep_trials.parquet", str(tmp_path / "dl"))
    )
    row = table[table["strategy.fast"] == 13].iloc[0]
    assert row["status"] == "FAILED" and "injected failure" in row["error"]
    assert "injected failure for fast=13" in p.stdout + p.stderr  # and the user sees it


def test_end_to_end_python_m_btsys_demo_multirun(tmp_path):
    """The real pipeline: ``python -m btsys -m +experiment=demo`` over a 2 x 2 grid."""
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    cmd = [
        sys.executable,
        "-m",
        "btsys",
        "-m",
        "+experiment=demo",
        "strategy.fast=5,10",
        "strategy.slow=30,60",
        "data.end=2025-01-02",
        f"storage.root={tmp_path}/data",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"mlflow.artifact_location={tmp_path}/artifacts",
        f"hydra.sweep.dir={tmp_path}/multirun/e2e",
        "spark.master='local[2]'",
    ]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    c, exp = client_and_exp(tmp_path)
    ps = parents(c, exp)
    assert len(ps) == 1 and ps[0].info.status == "FINISHED"
    kids = children(c, exp, ps[0].info.run_id)
    assert len(kids) == 4
    for k in kids:
        assert k.info.status == "FINISHED" and DESIGN_METRICS <= set(k.data.metrics)
        assert k.data.tags["btsys.bars_key"] and k.data.tags["btsys.ingest_key"]
        assert {"config.yaml", "tearsheet.html", "charts"} <= {
            a.path for a in c.list_artifacts(k.info.run_id)
        }
    # the bars are computed once for the sweep and every other job logs the cache hit
    assert len({k.data.tags["btsys.bars_key"] for k in kids}) == 1
    text = p.stdout + p.stderr
    assert text.count("computing bars") == 1 and text.count("cache hit: bars") == 3, text[-3000:]
