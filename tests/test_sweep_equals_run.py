"""A sweep's row is the run it stands for.

Random grids (hypothesis) for every sweepable strategy, over stops, trailing stops, take profit,
all three directions, both fills, leverage, sizing modes and funding, on one symbol and on
shared-cash portfolios, with or without a dynamic universe (members only, leavers and delisted
symbols closed): every row equals the pipeline's backtest (``backtest_frames``, what the backtest
stage runs on the same frames) with that combination set, the benchmark metrics included. The
top-K child runs logged after a kernel sweep (real sqlite MLflow store) equal their rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import CONF_DIR
from hypothesis import example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from btsys.backtest.enums import METRIC_NAMES, OrderKind
from btsys.backtest.grid import trial_config
from btsys.backtest.metrics import BENCHMARK_METRICS
from btsys.backtest.sweep import sweep_frames
from btsys.config import BacktestConfig
from btsys.stages.backtest import backtest_frames

H = 3_600_000_000
T0 = 1_735_689_600_000_000


def _frame(n: int, seed: int, offset: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.012, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.002, n))
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.005, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.005, n)))
    ts = T0 + offset + np.cumsum(rng.integers(1, 4, n)) * H // 2  # irregular, like dollar bars
    return pd.DataFrame(
        {"ts_close": ts, "open": o, "high": h, "low": lo, "close": c, "volume": rng.uniform(1, 20, n)}
    )


FRAMES = {"AAAUSDT": _frame(360, 1), "BBBUSDT": _frame(330, 2, H // 4), "CCCUSDT": _frame(300, 3, H // 3)}
FUNDING = {
    s: pd.DataFrame(
        {"ts": T0 + np.arange(0, 400, 8) * H, "rate": np.random.default_rng(i).normal(2e-4, 5e-4, 50)}
    )
    for i, s in enumerate(FRAMES)
}

# strategy -> (base parameters, {parameter: function(rng) -> one valid value})
STRATEGIES = {
    "ma_cross": (
        {"fast": 5, "slow": 30},
        {"fast": lambda r: int(r.integers(2, 13)), "slow": lambda r: int(r.integers(15, 61))},
    ),
    "ema_cross": (
        {"fast": 5, "slow": 30},
        {"fast": lambda r: int(r.integers(2, 13)), "slow": lambda r: int(r.integers(15, 61))},
    ),
    "rsi_reversion": (
        {"window": 14, "lower": 35.0, "upper": 65.0, "exit": 50.0},
        {
            "window": lambda r: int(r.integers(3, 21)),
            "lower": lambda r: round(float(r.uniform(15, 48)), 2),
            "exit": lambda r: round(float(r.uniform(48, 52)), 2),
            "upper": lambda r: round(float(r.uniform(52, 85)), 2),
        },
    ),
    "bollinger_breakout": (
        {"window": 20, "k": 2.0},
        {"window": lambda r: int(r.integers(5, 41)), "k": lambda r: round(float(r.uniform(0.3, 3.0)), 2)},
    ),
    "momentum": (
        {"lookback": 20, "threshold": 0.0},
        {
            "lookback": lambda r: int(r.integers(2, 41)),
            "threshold": lambda r: round(float(r.uniform(0, 0.03)), 4),
        },
    ),
    "xs_momentum": (  # top_n + bottom_n stays within 1..2 (two symbols at least)
        {"lookback": 30, "skip": 0, "top_n": 1, "bottom_n": 1, "rebalance_every": 20},
        {
            "lookback": lambda r: int(r.integers(5, 51)),
            "skip": lambda r: int(r.integers(0, 5)),
            "rebalance_every": lambda r: int(r.integers(3, 41)),
        },
    ),
}

OPTIONS = {
    "backtest.risk.stop_loss": [0.0, 0.005, 0.02, 0.05],
    "backtest.risk.take_profit": [0.0, 0.01, 0.04],
    "backtest.risk.trailing_stop": [0.0, 0.01, 0.03],
    "backtest.direction": ["long", "short", "both"],
    "backtest.fill": ["next_open", "close"],
    "backtest.leverage": [1.0, 2.0, 10.0],
    "backtest.size.mode": ["all", "qty", "notional", "percent", "vol_target"],
    "backtest.size.vol_window": [5, 20],
    "backtest.fees.taker": [0.0, 0.0004, 0.002],
    "backtest.slippage.bps": [0.0, 2.5],
    "backtest.risk.time_stop_bars": [0, 7],
    "backtest.risk.cooldown_bars": [0, 3],
    "backtest.risk.max_drawdown": [0.0, 0.15],
}
SIZE_VALUES = [0.3, 0.8, 2.0, 700.0]
ALL_METRICS = METRIC_NAMES + BENCHMARK_METRICS


def random_universe(frames, seed: int) -> pd.DataFrame:
    """A membership table (``Membership.wide()``'s layout) over ``frames``: a random member set
    at every rebalance, every 5-30 hours from before the first bar to after the last (so a symbol
    whose data ends early, CCCUSDT, leaves as a delisted symbol)."""
    r = np.random.default_rng(seed)
    every = int(r.integers(5, 31)) * H
    ts = np.arange(T0 - H, T0 + 380 * H, every, dtype=np.int64)
    return pd.DataFrame({"ts": ts, **{s: r.random(len(ts)) < 0.65 for s in frames}})


def build_case(seed: int):
    """A random valid case: strategy, its base parameters, a backtest config, a grid of one or two
    strategy keys and one to three option keys (one or two values each), the number of symbols."""
    r = np.random.default_rng(seed)
    name = sorted(STRATEGIES)[seed % len(STRATEGIES)]  # every strategy as often
    base, params = STRATEGIES[name]
    pick = lambda seq, k: [seq[i] for i in r.choice(len(seq), size=k, replace=False)]  # noqa: E731
    grid = {}
    for p in pick(sorted(params), int(r.integers(1, min(2, len(params)) + 1))):
        grid[f"strategy.{p}"] = list(dict.fromkeys(params[p](r) for _ in range(int(r.integers(1, 3)))))
    for k in pick(sorted(OPTIONS), int(r.integers(1, 4))):
        grid[k] = pick(OPTIONS[k], int(r.integers(1, 3)))
    bt = {
        "direction": pick(OPTIONS["backtest.direction"], 1)[0],
        "fill": pick(OPTIONS["backtest.fill"], 1)[0],
        "funding": bool(r.integers(0, 2)),
        "size": {
            "mode": pick(OPTIONS["backtest.size.mode"], 1)[0],
            "value": pick(SIZE_VALUES, 1)[0],
            "vol_window": 10,
        },
    }
    if set(grid.get("backtest.size.mode", [bt["size"]["mode"]])) != {"all"} and r.integers(0, 2):
        grid["backtest.size.value"] = pick(SIZE_VALUES, int(r.integers(1, 3)))
    with_universe = bool(r.integers(0, 2))
    if name == "xs_momentum":
        base = {**base, "top_n": int(r.integers(0, 2)), "bottom_n": 1}
        return name, base, bt, grid, int(r.integers(2, 4)), with_universe
    return name, base, bt, grid, int(r.integers(1, 4)), with_universe


def _config(name, base, bt):
    backtest = OmegaConf.merge(OmegaConf.structured(BacktestConfig), bt)
    return OmegaConf.create({"strategy": {"name": name, **base}, "backtest": backtest})


def assert_row_equals_run(table, i, cfg, keys, frames, funding, universe=None):
    params = {k: table[k].iloc[i] for k in keys}
    run = backtest_frames(trial_config(cfg, params), frames, funding, universe=universe).result
    assert list(table.columns[len(keys) :]) == list(ALL_METRICS) == list(run.metrics)
    for k in ALL_METRICS:
        a, b = float(table[k].iloc[i]), run.metrics[k]
        if np.isnan(b) or np.isinf(b):
            assert a == b or (np.isnan(a) and np.isnan(b)), (k, params)
        else:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (k, params, a, b)


@pytest.mark.slow
@settings(max_examples=48, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 2**31 - 1))
@example(seed=0)
def test_every_row_equals_the_run_of_its_parameters(seed):
    name, base, bt, grid, n_symbols, with_universe = build_case(seed)
    cfg = _config(name, base, bt)
    frames = dict(list(FRAMES.items())[:n_symbols])
    universe = random_universe(frames, seed) if with_universe else None
    table = sweep_frames(cfg, frames, grid, funding=FUNDING, universe=universe)
    assert len(table) == int(np.prod([len(v) for v in grid.values()]))
    for i in range(len(table)):
        assert_row_equals_run(table, i, cfg, list(grid), frames, FUNDING, universe)


def test_the_issues_example_stop_loss_ma_cross_row_equals_run():
    """The case of the issue: a long ma_cross with a 2 % stop (levels and edges then differ)."""
    cfg = _config("ma_cross", {"fast": 5, "slow": 30}, {"direction": "long", "risk": {"stop_loss": 0.02}})
    grid = {"strategy.fast": [3, 5, 8], "strategy.slow": [20, 30]}
    frames = {"AAAUSDT": FRAMES["AAAUSDT"]}
    table = sweep_frames(cfg, frames, grid)
    assert (table["n_trades"] > 3).all()
    for i in range(len(table)):
        assert_row_equals_run(table, i, cfg, list(grid), frames, None)


@pytest.mark.parametrize("name", ["ma_cross", "xs_momentum"])
def test_a_row_with_a_dynamic_universe_equals_its_run(name):
    """Members only: the rows trade what the run trades, leavers and delisted closes included
    (a universe over one symbol takes the portfolio path, as the run does)."""
    base = STRATEGIES[name][0]
    cfg = _config(name, base, {"direction": "both", "risk": {"stop_loss": 0.02}})
    universe = random_universe(FRAMES, 5)
    ccc_data = universe["ts"] < FRAMES["CCCUSDT"]["ts_close"].iloc[-1]
    universe["CCCUSDT"] = ccc_data  # a member while it trades; it leaves after its data ended
    grid = {"backtest.fill": ["next_open", "close"], "backtest.fees.taker": [0.0, 0.001]}
    grid.update({"strategy.fast": [3, 8]} if name == "ma_cross" else {"strategy.lookback": [10, 30]})
    table = sweep_frames(cfg, FRAMES, grid, funding=FUNDING, universe=universe)
    kinds = set()
    for i in range(len(table)):
        assert_row_equals_run(table, i, cfg, list(grid), FRAMES, FUNDING, universe)
        params = {k: table[k].iloc[i] for k in grid}
        run = backtest_frames(trial_config(cfg, params), FRAMES, FUNDING, universe=universe).result
        kinds |= set(run.order_records["kind"].tolist())
    assert {OrderKind.UNIVERSE_EXIT, OrderKind.DELISTED} <= kinds  # not vacuous
    static = sweep_frames(cfg, FRAMES, grid, funding=FUNDING)
    assert not np.allclose(static["final_value"], table["final_value"])  # the universe matters
    one = {"AAAUSDT": FRAMES["AAAUSDT"]}
    if name == "ma_cross":
        t1 = sweep_frames(cfg, one, grid, universe=universe[["ts", "AAAUSDT"]])
        for i in range(len(t1)):
            assert_row_equals_run(t1, i, cfg, list(grid), one, None, universe[["ts", "AAAUSDT"]])


def test_every_strategy_trades_in_the_property_test_data():
    """The data above make every strategy trade (else equality would be vacuous)."""
    for name, (base, _) in STRATEGIES.items():
        cfg = _config(name, base, {"direction": "both"})
        res = backtest_frames(cfg, FRAMES).result
        assert res.metrics["n_trades"] >= 5, name


# --------------------------------------------------------------------------- logged child runs
@pytest.mark.slow
def test_top_k_child_runs_logged_after_a_kernel_sweep_equal_their_rows(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from btsys.report import mlflow_log as ml
    from btsys.stages.cache import CacheEntry
    from btsys.stages.sweep import run as run_grid
    from btsys.storage import LocalStorage

    monkeypatch.chdir(tmp_path)
    store = LocalStorage(str(tmp_path / "store"))
    meta = {"symbols": {}}
    for s in ("AAAUSDT", "BBBUSDT"):
        path = f"feat/symbol={s}/features.parquet"
        store.write_parquet(pa.Table.from_pandas(FRAMES[s], preserve_index=False), path)
        meta["symbols"][s] = {"path": path, "n_bars": len(FRAMES[s])}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+experiment=demo",
                "data.symbols=[AAAUSDT,BBBUSDT]",
                f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                f"mlflow.artifact_location={tmp_path}/artifacts",
                "mlflow.charts=false",
                "sweep.mode=kernel",
                "sweep.top_k=3",
                "backtest.risk.stop_loss=0.02",  # with stops, levels and edges differ: edges it is
                "+sweep.grid={strategy.fast:[3,6],strategy.slow:[20,40],backtest.direction:[long,both]}",
            ],
        )
    g = run_grid(cfg, store, CacheEntry("features", "k", "feat", meta), CacheEntry("ingest", "i", "x", {}))
    rid = ml.log_sweep_table(cfg, g.table, g.param_cols, g.objective, g.top_results, returns=g.returns)
    client = ml.client_for(cfg)
    kids = client.search_runs(
        [client.get_run(rid).info.experiment_id], f"tags.`mlflow.parentRunId` = '{rid}'"
    )
    assert len(kids) == 3
    for kid in kids:
        row = g.table
        for k in g.param_cols:
            row = row[row[k].astype(str) == kid.data.params[k]]
        assert len(row) == 1, kid.data.params
        for k in METRIC_NAMES:
            a, b = float(row[k].iloc[0]), kid.data.metrics[k]
            if np.isfinite(a):
                assert b == pytest.approx(a, rel=1e-9, abs=1e-9), k
