"""Rule strategies and the rule grammar: no look-ahead for every strategy, grammar rejections, configs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_features import bars_from, random_bars

from btsys.features import compute_features
from btsys.signals import (
    RuleError,
    StrategyError,
    evaluate_rule,
    generate_scores,
    generate_signals,
    parse_rule,
)

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
SPECS = [
    {"name": "ret_1", "fn": "log_return", "window": 1},
    {"name": "rsi_14", "fn": "rsi", "window": 14},
    {"name": "vol_20", "fn": "realized_vol", "window": 20},
    {"name": "vpin_20", "fn": "vpin", "window": 20},
]

ML = {
    "name": "ml_classifier",
    "min_train": 150,
    "retrain_every": 60,
    "embargo_bars": 3,
    "cv_folds": 2,
    "label": {"vertical_bars": 8, "vol_span": 20},
    "threshold": 0.52,
    "exit_threshold": 0.5,
    "bet_sizing": "prob",
    "size_step": 0.1,
}
STRATEGY_CFGS = [
    {"name": "ma_cross", "fast": 5, "slow": 20},
    {"name": "ema_cross", "fast": 5, "slow": 20},
    {"name": "rsi_reversion", "window": 14, "lower": 40, "upper": 60, "exit": 50},
    {"name": "bollinger_breakout", "window": 20, "k": 1.0},
    {"name": "momentum", "lookback": 10, "threshold": 0.005},
    {
        "name": "rule",
        "entry": "rsi_14 < 60 and close > sma_30",
        "exit": "rsi_14 > 55 or vpin_20 > 0.6",
        "short_entry": "not (rsi_14 < 60) and ret_1 * 100 < -0.2",
        "short_exit": "bb_pctb_20 < 0.2",
    },
    {**ML, "model": "logistic"},
    {**ML, "model": "random_forest", "params": {"n_estimators": 15, "max_depth": 3, "min_samples_leaf": 5}},
    {**ML, "model": "hist_gb", "params": {"max_iter": 15}},
]


def _frame(bars):
    return compute_features(bars.reset_index(drop=True), SPECS)


def _perturbed(bars, t, seed=11):
    out = bars.copy()
    other = random_bars(len(bars), seed=seed)
    for c in ["open", "high", "low", "close", "volume", "quote_volume", "buy_volume"]:
        out.loc[t + 1 :, c] = other.loc[t + 1 :, c].to_numpy() * 1.3
    return out


def _arrays(sig):
    out = {
        "entries": sig.entries,
        "exits": sig.exits,
        "short_entries": sig.short_entries,
        "short_exits": sig.short_exits,
        "size": sig.size,
    }
    out.update({f"ind.{k}": v for k, v in sig.indicators.items()})
    return {k: v for k, v in out.items() if v is not None}


#: the gradient-boosted model's refits take seconds: in the full suite only
LOOK_AHEAD_CASES = [
    pytest.param(c, marks=pytest.mark.slow) if c.get("model") == "hist_gb" else c for c in STRATEGY_CFGS
]


@pytest.mark.parametrize("cfg", LOOK_AHEAD_CASES, ids=lambda c: c.get("model", c["name"]))
def test_no_look_ahead(cfg):
    """Drop or change every bar after t: all signals (and sizes, indicators) at or before t are unchanged."""
    bars = random_bars(420, seed=21)
    full = _arrays(generate_signals(cfg, _frame(bars)))
    assert full["entries"].any() and full["exits"].any(), "strategy never trades on the test data"
    for t in (170, 260, 400):
        cut = _arrays(generate_signals(cfg, _frame(bars.iloc[: t + 1])))
        alt = _arrays(generate_signals(cfg, _frame(_perturbed(bars, t))))
        assert set(cut) == set(full) == set(alt)
        for k in full:
            np.testing.assert_array_equal(
                cut[k], full[k][: t + 1], err_msg=f"{k} changed when truncating at {t}"
            )
            np.testing.assert_array_equal(
                alt[k][: t + 1], full[k][: t + 1], err_msg=f"{k} changed by data after {t}"
            )
        assert any(not np.array_equal(alt[k][t + 1 :], full[k][t + 1 :], equal_nan=True) for k in full), (
            "the perturbation after t changed nothing"
        )


def test_xs_momentum_scores_no_look_ahead():
    cfg = {"name": "xs_momentum", "lookback": 30, "skip": 3, "top_n": 1, "bottom_n": 1}
    frames = {s: random_bars(200 + 10 * i, seed=i) for i, s in enumerate(["BTCUSDT", "ETHUSDT", "SOLUSDT"])}
    full = generate_scores(cfg, frames)
    c = frames["ETHUSDT"]["close"].to_numpy()
    np.testing.assert_allclose(full["ETHUSDT"][100], np.log(c[97] / c[70]), rtol=1e-14)
    assert np.isnan(full["ETHUSDT"][29]).all() and np.isfinite(full["ETHUSDT"][30:]).all()
    for t in (50, 150):
        cut = generate_scores(cfg, {s: f.iloc[: t + 1] for s, f in frames.items()})
        alt = generate_scores(cfg, {s: _perturbed(f, t) for s, f in frames.items()})
        for s in frames:
            np.testing.assert_array_equal(cut[s], full[s][: t + 1])
            np.testing.assert_array_equal(alt[s][: t + 1], full[s][: t + 1])
    with pytest.raises(StrategyError, match="generate_scores"):
        generate_signals(cfg, frames["BTCUSDT"])
    with pytest.raises(StrategyError, match="strategy.top_n \\+ strategy.bottom_n = 4 exceeds"):
        generate_scores({**cfg, "top_n": 2, "bottom_n": 2}, frames)
    with pytest.raises(StrategyError, match=r"strategy.skip \(30\) must be smaller than strategy.lookback"):
        generate_scores({**cfg, "skip": 30}, frames)


# --------------------------------------------------------------------------- known signals
def test_ma_cross_edges_by_hand():
    # SMA2 vs SMA3 of [1, 2, 3, 2, 1, 2, 3]: fast [., 1.5, 2.5, 2.5, 1.5, 1.5, 2.5],
    # slow [., ., 2, 7/3, 2, 5/3, 2] -> long state on bars 2-3 and 6, short state on bars 4-5
    sig = generate_signals({"name": "ma_cross", "fast": 2, "slow": 3}, bars_from([1, 2, 3, 2, 1, 2, 3]))
    assert sig.entries.tolist() == [False, False, True, False, False, False, True]
    assert sig.exits.tolist() == [False, False, False, False, True, False, False]
    assert sig.short_entries.tolist() == [False, False, False, False, True, False, False]
    assert sig.short_exits.tolist() == [False, False, False, False, False, False, True]


def test_rsi_reversion_by_hand():
    # RSI(2) of [1, 2, 3, 2, 3, 4] is [., ., 100, 50, 75, 87.5]
    sig = generate_signals(
        {"name": "rsi_reversion", "window": 2, "lower": 55, "upper": 80, "exit": 60},
        bars_from([1, 2, 3, 2, 3, 4]),
    )
    assert sig.entries.tolist() == [False, False, False, True, False, False]
    assert sig.exits.tolist() == [False, False, True, False, True, False]
    assert sig.short_entries.tolist() == [False, False, True, False, False, True]


# --------------------------------------------------------------------------- grammar
@pytest.mark.parametrize(
    "expr,match",
    [
        ("close.real > 1", "attribute access"),
        ("abs(close) > 1", "function calls"),
        ("__import__('os').system('true')", "function calls"),
        ("close[1] > 1", "subscripts"),
        ("close[-1:] > 1", "subscripts"),
        ("().__class__", "attribute access"),
        ("(lambda: 1)() > 0", "function calls"),
        ("[x for x in close]", "comprehensions"),
        ("close if rsi_14 else open", "conditional expressions"),
        ("(y := close) > 1", "assignment expressions"),
        ("close > 'a'", "constant 'a'"),
        ("close in (1, 2)", "comparison In"),
        ("close is 1", "comparison Is"),
        ("close << 2", "operator LShift"),
        ("~close", "unary operator Invert"),
        ("foo > 1", "'foo' is not a feature"),
        ("rsi_14 < 30 and sma_x > close", "'sma_x' is not a feature"),
        ("__builtins__ > 1", "private names"),
        ("close >", "syntax error"),
        ("import os", "syntax error"),
        ("", "non-empty string"),
    ],
)
def test_grammar_rejects(expr, match):
    with pytest.raises(RuleError, match=match):
        parse_rule(expr, {"close", "open", "rsi_14"})


def test_rule_strategy_rejects_unknown_names_with_the_key():
    frame = _frame(random_bars(50))
    with pytest.raises(StrategyError, match="'volume_z' is not a feature"):
        generate_signals({"name": "rule", "entry": "volume_z > 2", "exit": "close < open"}, frame)
    with pytest.raises(StrategyError, match="function calls"):
        generate_signals({"name": "rule", "entry": "rsi_14 < 30", "exit": "max(close, 1) > 2"}, frame)
    with pytest.raises(StrategyError, match="missing required key 'exit'"):
        generate_signals({"name": "rule", "entry": "rsi_14 < 30"}, frame)


def test_grammar_evaluates_elementwise():
    cols = {"a": np.array([1.0, 2.0, np.nan, 4.0]), "b": np.array([2.0, 2.0, 2.0, 1.0])}
    assert evaluate_rule("a < b", cols, 4).tolist() == [True, False, False, False]
    assert evaluate_rule("not a < b", cols, 4).tolist() == [False, True, True, True]
    assert evaluate_rule("1 <= a <= 2 or b * 2 - 1 == 1", cols, 4).tolist() == [True, True, False, True]
    assert evaluate_rule("a / b >= 1 and a % 2 == 0", cols, 4).tolist() == [False, True, False, True]
    assert evaluate_rule("-a ** 2 < -3", cols, 4).tolist() == [False, True, False, True]
    assert evaluate_rule("a", cols, 4).tolist() == [True, True, False, True]  # NaN is False
    assert evaluate_rule("True", cols, 4).tolist() == [True] * 4


def test_rule_uses_on_the_fly_library_features():
    bars = random_bars(300, seed=2)
    frame = _frame(bars)
    sig = generate_signals(
        {"name": "rule", "entry": "close > sma_50 and rsi_14 > 50", "exit": "close < sma_50"}, frame
    )
    from btsys.features import compute_feature

    sma = compute_feature(bars, "sma", 50)
    rsi = frame["rsi_14"].to_numpy()
    c = bars["close"].to_numpy()
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(sig.entries, (c > sma) & (rsi > 50))
        np.testing.assert_array_equal(sig.exits, c < sma)
    assert sig.short_entries is None and sig.entries[:49].sum() == 0


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "name",
    [
        "ma_cross",
        "ema_cross",
        "rsi_reversion",
        "bollinger_breakout",
        "momentum",
        "rule",
        "xs_momentum",
        "ml_classifier",
    ],
)
def test_strategy_yaml_composes(name):
    from hydra import compose, initialize_config_dir

    import btsys.config  # noqa: F401

    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="config", overrides=[f"strategy={name}"])
    assert cfg.strategy.name == name
    frames = {"A": _frame(random_bars(300, 1)), "B": _frame(random_bars(300, 2))}
    if name == "xs_momentum":
        scores = generate_scores(cfg.strategy, frames)
        assert set(scores) == {"A", "B"}
    elif name != "ml_classifier":
        sig = generate_signals(cfg.strategy, frames["A"])
        assert sig.entries.shape == (300,) and sig.entries.dtype == bool
    with initialize_config_dir(config_dir=CONF, version_base=None):
        with pytest.raises(Exception, match="fsat"):
            compose(config_name="config", overrides=[f"strategy={name}", "strategy.fsat=5"])


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"name": "nope"}, "not a known strategy"),
        (
            {"name": "ma_cross", "fast": 50, "slow": 10},
            "strategy.fast \\(50\\) must be smaller than strategy.slow",
        ),
        ({"name": "ma_cross", "fsat": 5}, "unknown keys \\['fsat'\\]"),
        ({"name": "momentum", "lookback": 0}, "strategy.lookback must be an integer >= 1"),
        ({"name": "rsi_reversion", "lower": 80}, "strategy.lower \\(80.0\\) <= strategy.exit"),
        ({"name": "bollinger_breakout", "k": "wide"}, "strategy.k must be a number"),
        ({"name": "bollinger_breakout", "k": 0.0}, r"strategy.k = 0.0 is out of range \(0, inf\]"),
    ],
)
def test_bad_strategy_configs(cfg, match):
    with pytest.raises(StrategyError, match=match):
        generate_signals(cfg, _frame(random_bars(60)))
