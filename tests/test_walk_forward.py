"""Walk-forward optimisation: per window the in-sample best of the grid trades the out-of-sample
bars; the stitched out-of-sample backtest is the headline; nothing looks ahead; MLflow steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from test_sweep_equals_run import FRAMES, FUNDING, _frame, random_universe

from btsys.backtest.grid import trial_config
from btsys.backtest.split import walk_forward_windows
from btsys.config import BacktestConfig
from btsys.stages.backtest import StageResult, backtest_frames, walk_forward

GRID = {"strategy.fast": [3, 6, 10], "strategy.slow": [20, 40], "backtest.risk.stop_loss": [0.0, 0.02]}
SPLIT = {"enabled": True, "reoptimize": True, "train_bars": 120, "test_bars": 50, "gap_bars": 5}


def config(objective="sharpe", direction="both", scheme="rolling", strategy=None):
    bt = OmegaConf.merge(
        OmegaConf.structured(BacktestConfig),
        {"direction": direction, "funding": True, "split": {**SPLIT, "scheme": scheme}},
    )
    return OmegaConf.create(
        {
            "strategy": strategy or {"name": "ma_cross", "fast": 5, "slow": 30},
            "backtest": bt,
            "sweep": {"grid": GRID, "objective": objective, "direction": "maximize", "mode": "hydra"},
        }
    )


@pytest.mark.parametrize(
    "symbols,scheme,universe",
    [
        (("AAAUSDT",), "rolling", None),
        (("AAAUSDT", "BBBUSDT"), "expanding", None),
        (("AAAUSDT", "BBBUSDT"), "rolling", random_universe(FRAMES, 3)[["ts", "AAAUSDT", "BBBUSDT"]]),
    ],
)
def test_each_window_trades_its_in_sample_best_and_the_stitch_is_the_headline(symbols, scheme, universe):
    frames = {s: FRAMES[s] for s in symbols}
    cfg = config(scheme=scheme)
    wf = walk_forward(cfg, frames, FUNDING, universe)
    n_rows = (
        len(frames[symbols[0]])
        if len(symbols) == 1
        else len(np.unique(np.concatenate([f["ts_close"] for f in frames.values()])))
    )
    wins = walk_forward_windows(n_rows, cfg.backtest.split)
    assert len(wf.table) == len(wins) >= 3
    cash = 10_000.0
    eq_parts = []
    for row, (tr, te) in zip(wf.table.to_dict("records"), wins, strict=True):
        # the chosen combination is the best in-sample run, found here by running every combination
        runs = {}
        for f in GRID["strategy.fast"]:
            for s in GRID["strategy.slow"]:
                for sl in GRID["backtest.risk.stop_loss"]:
                    p = {"strategy.fast": f, "strategy.slow": s, "backtest.risk.stop_loss": sl}
                    runs[tuple(p.values())] = backtest_frames(
                        trial_config(cfg, p), frames, FUNDING, window=(tr.start, tr.stop), universe=universe
                    ).result
        best = max(runs, key=lambda k: np.nan_to_num(runs[k].metrics["sharpe"], nan=-np.inf))
        assert tuple(row[f"best.{k}"] for k in GRID) == best
        assert row["is_sharpe"] == pytest.approx(runs[best].metrics["sharpe"], rel=1e-9)
        # the out-of-sample part is that combination's run on the test bars, with the equity so far
        p = dict(zip(GRID, best, strict=True))
        trial = trial_config(cfg, {**p, "backtest.init_cash": cash})
        oos = backtest_frames(trial, frames, FUNDING, window=(te.start, te.stop), universe=universe).result
        assert row["oos_sharpe"] == pytest.approx(oos.metrics["sharpe"], rel=1e-9, nan_ok=True)
        eq_parts.append(oos.equity)
        cash = oos.final_value
    np.testing.assert_allclose(wf.result.equity, np.concatenate(eq_parts), rtol=1e-12)
    assert wf.result.final_value == pytest.approx(cash, rel=1e-12)
    assert wf.result.metrics["total_return"] == pytest.approx(cash / 10_000.0 - 1, rel=1e-9)
    assert wf.result.metrics["n_trades"] == len(wf.result.trades) > 0
    assert wf.metrics["wf_n_windows"] == len(wins)
    assert wf.metrics["wf_degradation"] == pytest.approx(
        wf.table["is_sharpe"].mean() - wf.result.metrics["sharpe"]
    )


def test_walk_forward_has_no_look_ahead():
    """Changing every bar after a window's test part changes neither its choice nor its trading."""
    frames = {"AAAUSDT": FRAMES["AAAUSDT"]}
    full = walk_forward(config(), frames)
    k = int(full.table["test_stop"].iloc[1])  # the end of the second window's test part
    alt = _frame(len(frames["AAAUSDT"]), 77)
    changed = frames["AAAUSDT"].copy()
    for c in ("open", "high", "low", "close", "volume"):
        changed.loc[k:, c] = alt.loc[k:, c].to_numpy() * 1.2
    changed.loc[k:, "ts_close"] = (
        changed["ts_close"].iloc[k - 1] + (changed["ts_close"].iloc[k:] - changed["ts_close"].iloc[k - 1]) * 3
    )
    other = walk_forward(config(), {"AAAUSDT": changed})
    pd.testing.assert_frame_equal(other.table.iloc[:2], full.table.iloc[:2])
    n = int(
        full.table["test_stop"].iloc[1]
        - full.table["test_start"].iloc[1]
        + full.table["test_stop"].iloc[0]
        - full.table["test_start"].iloc[0]
    )
    np.testing.assert_array_equal(other.result.equity[:n], full.result.equity[:n])
    assert not other.table.iloc[2:].equals(full.table.iloc[2:])


@pytest.mark.slow
def test_walk_forward_figures_are_mlflow_steps(tmp_path):
    from btsys.report import mlflow_log as ml

    cfg = config(strategy={"name": "momentum", "lookback": 10, "threshold": 0.0})
    cfg.sweep.grid = {"strategy.lookback": [5, 20], "backtest.direction": ["long", "both"]}
    cfg.name = "wf"
    cfg.mlflow = {
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "experiment_name": "wf",
        "enabled": True,
        "charts": False,
        "artifact_location": f"{tmp_path}/art",
    }
    frames = {s: FRAMES[s] for s in ("AAAUSDT", "BBBUSDT")}
    wf = walk_forward(cfg, frames, FUNDING)
    rid = ml.log_run(
        cfg, StageResult(wf.result, list(frames), extra_metrics=wf.metrics, walk_forward=wf.table)
    )
    client = ml.client_for(cfg)
    run = client.get_run(rid)
    assert run.data.metrics["sharpe"] == pytest.approx(wf.result.metrics["sharpe"], nan_ok=True)
    assert run.data.metrics["wf_n_windows"] == len(wf.table)
    assert not any("_w0" in k for k in run.data.metrics)  # no key per window
    hist = client.get_metric_history(rid, "wf.oos_sharpe")
    assert sorted(m.step for m in hist) == list(range(len(wf.table)))
    by_step = {m.step: m.value for m in client.get_metric_history(rid, "wf.best.strategy.lookback")}
    assert by_step == {i: float(v) for i, v in enumerate(wf.table["best.strategy.lookback"])}
    assert "walk_forward.csv" in {a.path for a in client.list_artifacts(rid)}


def test_the_backtest_stage_runs_the_walk_forward_when_asked(tmp_path):
    import pyarrow as pa
    from conftest import CONF_DIR
    from hydra import compose, initialize_config_dir

    from btsys.stages.backtest import run as run_backtest_stage
    from btsys.stages.cache import CacheEntry
    from btsys.storage import LocalStorage

    store = LocalStorage(str(tmp_path))
    store.write_parquet(pa.Table.from_pandas(FRAMES["AAAUSDT"], preserve_index=False), "f/a.parquet")
    meta = {"symbols": {"AAAUSDT": {"path": "f/a.parquet", "n_bars": len(FRAMES["AAAUSDT"])}}}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+experiment=demo",
                "backtest.split.enabled=true",
                "backtest.split.reoptimize=true",
                "backtest.split.train_bars=150",
                "backtest.split.test_bars=60",
                "+sweep.grid={strategy.fast:[3,8],strategy.slow:[25,45]}",
            ],
        )
    res = run_backtest_stage(
        cfg, store, CacheEntry("features", "k", "f", meta), CacheEntry("ingest", "i", "x", {})
    )
    assert len(res.walk_forward) == 3 and res.extra_metrics["wf_n_windows"] == 3
    assert len(res.equity) == 3 * 60 and res.metrics["n_trades"] > 0
