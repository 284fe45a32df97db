"""``btsys.load`` from a config or an MLflow run id, and examples/quickstart.ipynb executed.

One small demo pipeline (Spark, MLflow sqlite in a temporary folder) serves the module.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import TESTS

import btsys
from btsys import pipeline as P
from btsys.config import compose

SMALL = ["data.end=2025-01-03", "data.synthetic.ticks_per_day=3000", "mlflow.charts=false"]
NOTEBOOK = os.path.join(os.path.dirname(TESTS), "examples", "quickstart.ipynb")


def _overrides(root) -> list:
    return [
        "+experiment=demo",
        f"storage.root={root}/data",
        f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
        *SMALL,
    ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, spark, new_mlflow_db):
    """The demo pipeline, small, run once: (project folder, its overrides, what run() returned)."""
    root = tmp_path_factory.mktemp("project")
    new_mlflow_db(root)
    out = P.run(compose(_overrides(root)))
    return root, _overrides(root), out


def test_load_is_lazy_and_the_function():
    import btsys.loader

    assert btsys.load is btsys.loader.load


def test_load_of_an_uncached_config_names_the_missing_stage(tmp_path):
    with pytest.raises(LookupError, match=r"no cached ingest for this config under .*stage=backtest"):
        btsys.load(["+experiment=demo", f"storage.root={tmp_path}"])


def test_load_from_config_gives_the_runs_bars_features_and_result(demo):
    root, overrides, out = demo
    assert P.stage_keys(compose(overrides)) == {k: out[f"{k}_key"] for k in ("ingest", "bars", "features")}
    run = btsys.load(" ".join(overrides))
    assert run.symbols == ["BTCUSDT", "ETHUSDT"] and run.run_id is None
    for k, v in run.result.metrics.items():
        assert v == pytest.approx(out[k], rel=0, abs=0, nan_ok=True), k
    for s in run.symbols:
        b, f = run.bars[s], run.features[s]
        assert len(b) == len(f) > 20 and not b["is_partial"].any()
        pd.testing.assert_frame_equal(b, f[b.columns])  # the features frame extends the bars
    # the pipeline's result equals simulate_portfolio on the loaded frames with the strategy's signals
    assert run.result.symbols == run.symbols
    np.testing.assert_array_equal(
        run.result.ts, np.unique(np.concatenate([run.bars[s]["ts_close"].to_numpy() for s in run.symbols]))
    )


def test_load_from_a_run_id_equals_the_logged_run(demo):
    root, overrides, out = demo
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recomputed metrics equal the logged ones: no warning
        run = btsys.load(
            out["mlflow_run_id"], f"storage.root={root}/data", tracking_uri=f"sqlite:///{root}/mlflow.db"
        )
    assert run.run_id == out["mlflow_run_id"]
    assert run.keys == btsys.load(overrides).keys
    for k in ("total_return", "sharpe", "benchmark_return", "alpha", "beta", "information_ratio"):
        assert run.logged_metrics[k] == pytest.approx(run.result.metrics[k], rel=1e-12), k


@pytest.mark.slow
def test_quickstart_notebook_runs_on_the_demo(demo):
    """examples/quickstart.ipynb from top to bottom against the demo's store and MLflow runs."""
    import nbformat
    from nbclient import NotebookClient

    root, _, out = demo
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"BTSYS_PROJECT": str(root), "BTSYS_NOTEBOOK_OVERRIDES": " ".join(SMALL)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)
    text = [o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {})]
    assert any(t.startswith("<LoadedRun demo") for t in text)
    assert any("Benchmark Return [%]" in t and "Sharpe Ratio" in t for t in text)
    # the last cell: the run loaded by id recomputes the logged Sharpe exactly
    assert text[-1].count(repr(out["sharpe"])) == 2
