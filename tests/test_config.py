"""Compose the real configs with Hydra's compose API; typed schemas reject bad keys and types."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import btsys.config as C

EXPERIMENTS = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(CONF_DIR, "experiment", "*.yaml"))
)


def _compose(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_defaults_compose_to_typed_schema():
    cfg = _compose()
    assert OmegaConf.get_type(cfg) is C.Config
    assert OmegaConf.get_type(cfg.backtest) is C.BacktestConfig
    assert cfg.backtest.fill == C.Fill.next_open
    assert cfg.mlflow.tracking_uri == "sqlite:///mlflow.db"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = _compose([f"+experiment={name}"])
    assert cfg.name == name or cfg.name  # experiments name themselves
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # nothing left MISSING
    assert str(cfg.strategy.name) in C.STRATEGY_SCHEMAS


def test_demo_is_offline():
    cfg = _compose(["+experiment=demo"])
    assert cfg.data.name == "synthetic"


@pytest.mark.slow
def test_every_group_option_composes():
    groups = [
        g
        for g in os.listdir(CONF_DIR)
        if os.path.isdir(os.path.join(CONF_DIR, g)) and g not in ("experiment", "hydra")
    ]
    n = 0
    for g in groups:
        for p in sorted(glob.glob(os.path.join(CONF_DIR, g, "*.yaml"))):
            opt = os.path.splitext(os.path.basename(p))[0]
            cfg = _compose([f"{g}={opt}"])
            OmegaConf.to_container(cfg[g], resolve=True)
            n += 1
    assert n >= 15


@pytest.mark.parametrize(
    "override,key",
    [
        ("strategy.fsat=5", "fsat"),
        ("backtest.fees.takr=0.1", "takr"),
        ("bars.threshold=abc", "threshold"),
        ("backtest.fill=tomorrow", "fill"),
        ("data.market=mars", "market"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as ei:
        _compose(["+experiment=demo", override])
    text = str(ei.value) + str(ei.value.__cause__ or "")
    assert key in text


def test_cli_misspelt_key_fails_with_message():
    r = subprocess.run(
        [sys.executable, "-m", "btsys", "+experiment=demo", "strategy.fsat=5", "--cfg", "job"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(CONF_DIR),
    )
    assert r.returncode != 0
    assert "fsat" in r.stderr
