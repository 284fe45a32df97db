"""Everything a run or a sweep asks for is checked before Spark or numba starts; messages name the key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import CONF_DIR, TESTS
from hydra import compose, initialize_config_dir

import btsys.config  # noqa: F401  (registers the schemas)
from btsys.backtest.validate import sweep_axes, validate_config
from btsys.errors import USER_ERROR_EXIT, ConfigError

ROOT = os.path.dirname(TESTS)
WF = ["backtest.split.enabled=true", "backtest.split.reoptimize=true", "backtest.split.train_bars=100"]
WF += ["backtest.split.test_bars=50"]


def cfg_of(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=["+experiment=demo", *overrides])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["strategy.fast=60"], r"strategy.fast \(60\) must be smaller than strategy.slow \(50\)"),
        (["backtest.fees.taker=1.5"], r"backtest.fees.taker = 1.5 is out of range \[0, 1\]"),
        (["backtest.size.mode=qty", "backtest.size.value=inf"], "backtest.size.value must be finite"),
        (
            ["strategy=rsi_reversion", "strategy.exit=80"],
            r"strategy.lower \(30.0\) <= strategy.exit \(80.0\)",
        ),
        (
            ["strategy=xs_momentum", "strategy.top_n=2", "strategy.bottom_n=1"],
            "strategy.top_n \\+ strategy.bottom_n = 3 exceeds the 2 symbols",
        ),
        (
            ["backtest.split.enabled=true", "backtest.split.train_bars=100"],
            "backtest.split.test_bars must be > 0",
        ),
        (
            ["sweep.mode=kernel", "+sweep.grid={strategy.fast:[5,50],strategy.slow:[20,50]}"],
            r"sweep.grid: strategy.fast \(50\) must be smaller than strategy.slow \(20\)",
        ),
        (
            ["sweep.mode=spark", "+sweep.grid={strategy.fast:[5],backtest.risk.stop_loss:[0,2]}"],
            r"sweep.grid: backtest.risk.stop_loss = 2 is out of range \[0, 1\]",
        ),
        (
            ["sweep.mode=kernel", "+sweep.grid={strategy.window:[5]}"],
            "strategy.window is not a sweepable key",
        ),
        (
            ["sweep.mode=kernel", "+sweep.grid={backtest.size.value:[1,2]}"],
            "has no effect with backtest.size.mode=all",
        ),
        (
            ["sweep.mode=kernel", "sweep.objective=shape", "+sweep.grid={strategy.fast:[5]}"],
            "sweep.objective='shape'",
        ),
        (
            ["sweep.mode=kernel", "strategy=rule", "+sweep.grid={strategy.entry:[x]}"],
            "cannot be swept in the kernel",
        ),
        ([*WF, "backtest.split.step_bars=10"], "re-optimised out-of-sample windows must not overlap"),
        ([*WF, "sweep.mode=kernel", "+sweep.grid={strategy.fast:[5]}"], "use it with sweep.mode=hydra"),
        (WF, "sweep.grid is empty"),
    ],
)
def test_bad_configs_and_grids_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):  # a user error: the entry point prints one line
        validate_config(cfg_of(*overrides))


def test_good_configs_pass():
    validate_config(cfg_of())
    validate_config(
        cfg_of("sweep.mode=kernel", "+sweep.grid={strategy.fast:[5,10],backtest.direction:[long,both]}")
    )


def test_pipeline_checks_before_computing_anything(tmp_path):
    from btsys.pipeline import run

    cfg = cfg_of(f"storage.root={tmp_path}/store", "sweep.mode=kernel", "+sweep.grid={strategy.fast:[5,80]}")
    with pytest.raises(ValueError, match=r"strategy.fast \(80\) must be smaller than strategy.slow \(50\)"):
        run(cfg)
    assert not os.path.exists(tmp_path / "store")  # no mirror, no lake, no Spark job


def test_sweep_axes_of_hydra_overrides():
    axes = sweep_axes(
        [
            "+experiment=demo",
            "strategy.fast=5,10",
            "strategy.slow=range(40,70,10)",
            "backtest.risk.stop_loss=interval(0.01,0.05)",
            "backtest.direction=choice(long,'both')",
            "hydra.sweep.dir=x,y",
        ]
    )
    assert axes == {
        "strategy.fast": [5, 10],
        "strategy.slow": [40, 50, 60],
        "backtest.risk.stop_loss": [0.01, 0.05],
        "backtest.direction": ["long", "both"],
    }


@pytest.mark.slow
def test_multirun_with_one_bad_job_stops_before_any_job(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    cmd = [
        sys.executable,
        "-m",
        "btsys",
        "-m",
        "+experiment=demo",
        "strategy.fast=5,60",
        "strategy.slow=30,80",
        "backtest.risk.stop_loss=0,0.02",
        f"storage.root={tmp_path}/store",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"hydra.sweep.dir={tmp_path}/multirun",
    ]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == USER_ERROR_EXIT  # one line, no traceback: a user error
    assert "strategy.fast (60) must be smaller than strategy.slow (30)" in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert not os.path.exists(tmp_path / "store") and not os.path.exists(tmp_path / "mlflow.db")
    assert not os.path.exists(tmp_path / "multirun" / "0")  # no job started
