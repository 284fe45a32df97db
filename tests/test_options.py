"""The table of backtest options is the one source of the mapping, checks, sweepable set and defaults."""

from __future__ import annotations

import dataclasses
import inspect
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from btsys.backtest import simulate
from btsys.backtest.options import (
    BY_KEY,
    KW_DEFAULTS,
    OPTIONS,
    SWEEPABLE,
    OptionError,
    build_params,
    options_from_config,
)
from btsys.config import BacktestConfig

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def _schema_fields(cls, prefix="backtest"):
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            out.update(_schema_fields(type(default), f"{prefix}.{f.name}"))
        else:
            out[f"{prefix}.{f.name}"] = getattr(default, "value", default)
    return out


def test_every_schema_field_is_a_row_with_the_same_default():
    schema = {k: v for k, v in _schema_fields(BacktestConfig).items() if not k.startswith("backtest.split.")}
    assert set(schema) == set(BY_KEY)
    for key, default in schema.items():
        assert BY_KEY[key].default == default, key


def test_default_yaml_repeats_the_table_defaults():
    node = OmegaConf.load(os.path.join(CONF, "backtest", "default.yaml"))
    for o in OPTIONS:
        v = OmegaConf.select(node, o.key.split(".", 1)[1])
        assert v == o.default, o.key


def test_simulate_keyword_defaults_come_from_the_table():
    sig = inspect.signature(simulate).parameters
    for kw, default in KW_DEFAULTS.items():
        assert sig[kw].default == default, kw
    # the kernel sees the same parameters from simulate's defaults and the config's defaults
    np.testing.assert_array_equal(build_params(), build_params(**options_from_config({})))
    schema = OmegaConf.structured(BacktestConfig)
    np.testing.assert_array_equal(build_params(), build_params(**options_from_config(schema)))
    assert KW_DEFAULTS["fees"] == 0.0005 and KW_DEFAULTS["slippage"] == pytest.approx(1e-4)


def test_config_maps_to_keywords_through_the_table():
    cfg = {"slippage": {"bps": 3.0}, "size": {"mode": "qty", "value": 2.0}, "risk": {"time_stop_bars": 4}}
    kw = options_from_config(cfg)
    assert kw["slippage"] == 3.0 / 1e4 and kw["size"] == 2.0 and kw["size_mode"] == "qty"
    assert kw["time_stop"] == 4 and kw["fees"] == 0.0005
    assert options_from_config({"size": {"mode": "all", "value": 2.0}})["size"] == np.inf


@pytest.mark.parametrize(
    "cfg,message",
    [
        ({"fees": {"taker": -0.1}}, r"backtest.fees.taker = -0.1 is out of range \[0, 1\]"),
        ({"slippage": {"bps": 2e4}}, r"backtest.slippage.bps = 20000.0 is out of range \[0, 10000\]"),
        ({"risk": {"time_stop_bars": 2.5}}, "backtest.risk.time_stop_bars must be a whole number"),
        ({"fill": "open"}, "backtest.fill must be one of"),
        ({"leverage": 0}, r"backtest.leverage = 0 is out of range \(0, inf\)"),
        ({"size": {"mode": "qty", "value": float("inf")}}, "backtest.size.value must be finite"),
        ({"risk": {"stop_los": 0.1}}, "backtest.risk.stop_los is not a backtest option"),
        ({"fees": {"taker": "high"}}, "backtest.fees.taker must be a number"),
    ],
)
def test_config_errors_name_the_config_key(cfg, message):
    with pytest.raises(OptionError, match=message):
        options_from_config(cfg)


def test_simulate_errors_name_the_keyword_and_the_config_key():
    c = np.full(5, 100.0)
    e = np.zeros(5, bool)
    with pytest.raises(OptionError, match=r"`fees` \(config backtest.fees.taker\) = -1 is out of range"):
        simulate(c, e, e, fees=-1)
    with pytest.raises(OptionError, match=r"`slippage` .* is out of range \[0, 1\]"):
        simulate(c, e, e, slippage=2.0)


def test_sweepable_options_have_a_kernel_slot_or_select_a_series():
    assert "backtest.fees.taker" in SWEEPABLE and "backtest.funding" not in SWEEPABLE
    assert "backtest.fees.maker" not in SWEEPABLE  # no limit orders: it would change nothing
    for key in SWEEPABLE:
        o = BY_KEY[key]
        assert o.slot is not None or key == "backtest.size.vol_window", key
