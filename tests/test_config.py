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
from btsys.backtest.validate import validate_config
from btsys.errors import ConfigError
from btsys.signals import STRATEGIES

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
    assert cfg.backtest.fill == "next_open"
    assert cfg.mlflow.tracking_uri == "sqlite:///mlflow.db"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = _compose([f"+experiment={name}"])
    assert cfg.name == name  # experiments name themselves (the MLflow tag and run names)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # nothing left MISSING
    assert str(cfg.strategy.name) in STRATEGIES


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
        ("bars.interval=1h", "interval"),  # a time-bar setting; the demo's bars are dollar bars
        ("data.market=mars", "market"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as ei:
        _compose(["+experiment=demo", override])
    text = str(ei.value) + str(ei.value.__cause__ or "")
    assert key in text


@pytest.mark.parametrize(
    "override,key",
    [
        ("backtest.fill=tomorrow", "backtest.fill"),
        ("backtest.direction=sideways", "backtest.direction"),
        ("backtest.size.mode=all_in", "backtest.size.mode"),
    ],
)
def test_bad_choice_is_refused_before_anything_runs(override, key):
    """Backtest choices are names of the kernel's one table (btsys.backtest.options): checked with
    every backtest option before Spark or numba starts, the message naming the key."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(_compose(["+experiment=demo", override]))


def test_every_strategy_has_a_schema_and_a_config_file():
    files = {
        os.path.splitext(os.path.basename(p))[0]
        for p in glob.glob(os.path.join(CONF_DIR, "strategy", "*.yaml"))
    }
    assert set(STRATEGIES) == set(C.strategy_schemas()) == files
    for name, s in STRATEGIES.items():
        cfg = _compose([f"strategy={name}"])
        assert OmegaConf.get_type(cfg.strategy) is s.schema


def test_cli_misspelt_key_fails_with_message():
    r = subprocess.run(
        [sys.executable, "-m", "btsys", "+experiment=demo", "strategy.fsat=5", "--cfg", "job"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(CONF_DIR),
    )
    assert r.returncode != 0
    assert "fsat" in r.stderr


# --------------------------------------------------------------------------- documented groups
def _leaf_keys(schema, prefix: str = "") -> list[str]:
    """Dotted keys of a schema's leaves (nested dataclasses recursed, dicts and lists are leaves)."""
    import dataclasses

    out = []
    for f in dataclasses.fields(schema):
        t = f.type if isinstance(f.type, type) else getattr(C, str(f.type), None)
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            out += _leaf_keys(t, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _commented_keys(path: str) -> dict[str, bool]:
    """``{dotted key: has a comment}`` of a block-style YAML file: the comment at the end of the
    key's line or on the line just above it (the defaults list is skipped)."""
    import re

    out, stack, prev = {}, [], ""
    for line in open(path, encoding="utf-8").read().splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w.]*):(.*)$", line)
        if m and not line.lstrip().startswith("-"):
            indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
            dotted = ".".join(k for _, k in stack)
            if dotted != "defaults":
                out[dotted] = " # " in rest or rest.lstrip().startswith("#") or prev.startswith("#")
        prev = line.strip()
    return out


def _schema_of(path: str):
    """The schema an option file lists first in its defaults (``- /<name>_schema@_here_``)."""
    import re

    name = re.search(r"^  - /(\w+)@_here_$", open(path, encoding="utf-8").read(), re.M).group(1)
    return {C.schema_name(g, n): node for g, nodes in C.group_schemas().items() for n, node in nodes.items()}[
        name
    ]


def _documented_options() -> list[str]:
    """Every group's default option; every option of the groups with a schema per option."""
    from btsys.help import group_defaults

    defaults = group_defaults(CONF_DIR)
    out = []
    for group, schemas in C.group_schemas().items():
        opts = sorted(glob.glob(os.path.join(CONF_DIR, group, "*.yaml")))
        out += opts if len(schemas) > 1 else [os.path.join(CONF_DIR, group, f"{defaults[group]}.yaml")]
    return [os.path.relpath(p, CONF_DIR) for p in out]


@pytest.mark.parametrize("option", _documented_options())
def test_every_schema_key_is_in_the_option_file_with_a_comment(option):
    """A group's default option (and, where each option has its own schema, every option) lists
    every key of its schema with a one-line comment: the file is the group's documentation."""
    path = os.path.join(CONF_DIR, option)
    keys = _commented_keys(path)
    missing = [k for k in _leaf_keys(_schema_of(path)) if k not in keys]
    assert not missing, f"{option}: schema keys not in the file: {missing}"
    bare = [k for k in _leaf_keys(_schema_of(path)) if not keys[k]]
    assert not bare, f"{option}: keys without a comment: {bare}"


def test_the_documentation_check_can_fail(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(
        "defaults:\n  - /mlflow_schema@_here_\n  - _self_\n# the store\ntracking_uri: a\nenabled: true\n"
    )
    keys = _commented_keys(str(p))
    assert keys == {"tracking_uri": True, "enabled": False}
    assert "charts" not in keys
