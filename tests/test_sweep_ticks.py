"""Sweeps with ``backtest.intrabar=ticks`` and limit entries: every row equals the run of its
parameters (all metrics, the intrabar metrics and ``orders_expired`` included), the combinations
of a chunk read each bar's trades once, and a Spark sweep reading the lake in its tasks gives the
kernel sweep's table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CONF_DIR
from omegaconf import OmegaConf

from btsys.backtest import simulate
from btsys.backtest.engine import INTRABAR_METRICS
from btsys.backtest.enums import METRIC_NAMES
from btsys.backtest.grid import trial_config
from btsys.backtest.metrics import BENCHMARK_METRICS
from btsys.backtest.metrics import daily_returns as daily_returns_of
from btsys.backtest.options import OptionError
from btsys.backtest.sweep import sweep, sweep_frames
from btsys.backtest.ticks import FrameTrades
from btsys.bars import build_bars
from btsys.config import BacktestConfig
from btsys.signals import generate_signals
from btsys.stages.backtest import backtest_frames
from tests.test_intrabar_trades import DAY, T0, tick_table

ALL_METRICS = list(METRIC_NAMES + BENCHMARK_METRICS)
TICKS = tick_table(n=8000, days=2, seed=7)
BARS = build_bars(TICKS, kind="tick", threshold=25)
SYM = "BTCUSDT"
FRAMES = {SYM: BARS}
FUNDING = {
    SYM: pd.DataFrame({"ts": T0 + np.arange(1, 6) * DAY // 3, "rate": [3e-4, -2e-4, 1e-4, 5e-4, -4e-4]})
}
STOPS = {"stop_loss": 0.002, "take_profit": 0.003, "trailing_stop": 0.004}


class Counting:
    """A trade source that records the bars it is asked for."""

    def __init__(self, source):
        self.source, self.asked = source, []

    def __call__(self, idx):
        self.asked.append(np.array(idx))
        return self.source(idx)


def config(bt: dict, strategy=None) -> OmegaConf:
    backtest = OmegaConf.merge(OmegaConf.structured(BacktestConfig), bt)
    return OmegaConf.create(
        {"strategy": strategy or {"name": "ma_cross", "fast": 3, "slow": 12}, "backtest": backtest}
    )


def row_params(table, i, grid) -> dict:
    return {k: (v.item() if isinstance(v := table[k].iloc[i], np.generic) else v) for k in grid}


def assert_rows_equal_runs(table, cfg, grid, funding, trades_of, extra):
    assert list(table.columns) == [*grid, *ALL_METRICS, *extra]
    for i in range(len(table)):
        params = row_params(table, i, grid)
        trades = trades_of()
        run = backtest_frames(trial_config(cfg, params), FRAMES, funding, trades=trades).result
        got = table.iloc[i][ALL_METRICS + extra].to_numpy(float)
        want = np.array([run.metrics[k] for k in ALL_METRICS + extra])
        np.testing.assert_array_equal(got, want, err_msg=str(params))


def test_ma_cross_with_stops_rows_equal_runs_and_bars_are_read_once():
    cfg = config({"direction": "both", "funding": True, "intrabar": "ticks", "risk": STOPS})
    grid = {"strategy.fast": [2, 4], "strategy.slow": [10, 16], "backtest.risk.stop_loss": [0.0015, 0.003]}
    src = Counting(FrameTrades(TICKS, BARS))
    table = sweep_frames(cfg, FRAMES, grid, funding=FUNDING, trades={SYM: src})
    assert len(table) == 8
    assert_rows_equal_runs(
        table, cfg, grid, FUNDING, lambda: {SYM: FrameTrades(TICKS, BARS)}, list(INTRABAR_METRICS)
    )
    # not vacuous: the rows trade, read trades and the trades changed exits
    assert (table["n_trades"] >= 5).all() and (table["intrabar_bars"] > 0).all()
    assert table["intrabar_disagreements"].sum() > 0 and table["final_value"].nunique() == 8
    # each bar's trades read once for the whole grid, in a few rounds (one call each)
    asked = np.concatenate(src.asked)
    assert asked.size == np.unique(asked).size and len(src.asked) <= 3
    each = 0  # what the runs would read on their own
    for i in range(len(table)):
        own = Counting(FrameTrades(TICKS, BARS))
        params = row_params(table, i, grid)
        backtest_frames(trial_config(cfg, params), FRAMES, FUNDING, trades={SYM: own})
        each += sum(a.size for a in own.asked)
    assert asked.size < each


@pytest.mark.parametrize("intrabar", ["ohlc", "ticks"])
def test_limit_entry_rows_equal_runs(intrabar):
    orders = {"type": "limit", "offset_bps": 8.0, "time_in_force_bars": 2}
    cfg = config({"direction": "both", "intrabar": intrabar, "orders": orders, "risk": {"stop_loss": 0.003}})
    grid = {
        "strategy.fast": [2, 4],
        "backtest.risk.take_profit": [0.0, 0.004],
        "backtest.fill": ["next_open", "close"],
    }
    table = sweep_frames(cfg, FRAMES, grid, trades={SYM: FrameTrades(TICKS, BARS)})
    extra = (list(INTRABAR_METRICS) if intrabar == "ticks" else []) + ["orders_expired"]
    trades = (lambda: {SYM: FrameTrades(TICKS, BARS)}) if intrabar == "ticks" else (lambda: None)
    assert_rows_equal_runs(table, cfg, grid, None, trades, extra)
    assert (table["n_trades"] >= 5).all() and (table["orders_expired"] > 0).all()


def test_the_python_sweep_takes_ticks_and_its_rows_equal_simulate():
    grid = {"fast": [2, 5], "stop_loss": [0.0015, 0.003]}
    kw = dict(direction="both", take_profit=0.003, fees=0.0004, intrabar="ticks")
    table = sweep(BARS, grid, strategy="ma_cross", slow=12, ticks=TICKS, **kw)
    for i in range(len(table)):
        g = generate_signals({"name": "ma_cross", "fast": int(table.fast[i]), "slow": 12}, BARS)
        sig = dict(short_entries=g.short_entries, short_exits=g.short_exits)
        r = simulate(BARS, g.entries, g.exits, **sig, stop_loss=table.stop_loss[i], ticks=TICKS, **kw)
        want = np.array([r.metrics[k] for k in ALL_METRICS + list(INTRABAR_METRICS)])
        np.testing.assert_array_equal(
            table.iloc[i][ALL_METRICS + list(INTRABAR_METRICS)].to_numpy(float), want
        )


def test_the_daily_returns_of_a_ticks_sweep_are_its_runs():
    """What PBO reads: each row's daily returns equal those of the run of its parameters."""
    cfg = config({"direction": "both", "intrabar": "ticks", "risk": STOPS})
    grid = {"strategy.fast": [2, 4], "backtest.risk.stop_loss": [0.0015, 0.003]}
    table, daily = sweep_frames(cfg, FRAMES, grid, daily_returns=True, trades={SYM: FrameTrades(TICKS, BARS)})
    assert daily.shape == (2, len(table)) and daily.abs().to_numpy().sum() > 0
    for i in range(len(table)):
        run = backtest_frames(
            trial_config(cfg, row_params(table, i, grid)),
            FRAMES,
            None,
            trades={SYM: FrameTrades(TICKS, BARS)},
        ).result
        want = daily_returns_of(BARS["ts_close"].to_numpy(), run.equity, cfg.backtest.init_cash)
        np.testing.assert_array_equal(daily[i].to_numpy(), want)


def test_what_a_ticks_or_limit_sweep_refuses():
    two = {SYM: BARS, "ETHUSDT": BARS}
    grid = {"strategy.fast": [2, 4]}
    with pytest.raises(OptionError, match="intrabar=ticks .* a portfolio sweep uses the bar rules"):
        sweep_frames(config({"intrabar": "ticks"}), two, grid)
    with pytest.raises(OptionError, match="orders.type=limit: .* a portfolio sweep takes market orders"):
        sweep_frames(config({"orders": {"type": "limit"}}), two, grid)
    with pytest.raises(ValueError, match="intrabar=ticks needs the bars' trades"):
        sweep_frames(config({"intrabar": "ticks", "risk": STOPS}), FRAMES, grid)


def test_kernel_and_spark_sweeps_read_the_lake_and_equal_the_runs(tmp_path, spark):
    """The stage: the kernel sweep reads the trades from the lake (one LakeTrades), a Spark sweep
    in 3 tasks reads them in its tasks; same table, each row the run of the backtest stage."""
    import pyarrow as pa
    from hydra import compose, initialize_config_dir

    from btsys.data.lake import Series
    from btsys.stages.backtest import lake_trades
    from btsys.stages.cache import CacheEntry
    from btsys.stages.sweep import run as run_grid
    from btsys.stages.sweep import spark_sweep
    from tests.test_intrabar_trades import write_lake

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+experiment=demo", f"data.symbols=[{SYM}]", "sweep.mode=kernel", "sweep.top_k=1",
                "sweep.chunk_size=3", "strategy.slow=12", "backtest.intrabar=ticks",
                "backtest.direction=both",
                "backtest.risk.stop_loss=0.002", "backtest.risk.take_profit=0.003",
                "+sweep.grid={strategy.fast:[2,3,4],backtest.risk.trailing_stop:[0.0,0.004]}",
            ],
        )  # fmt: skip
    series = Series(str(cfg.data.market.value), str(cfg.data.dataset.value), SYM)
    store = write_lake(tmp_path / "store", TICKS, series)
    path = f"feat/symbol={SYM}/features.parquet"
    store.write_parquet(pa.Table.from_pandas(BARS, preserve_index=False), path)
    meta = {"symbols": {SYM: {"path": path, "n_bars": len(BARS)}}}
    g = run_grid(cfg, store, CacheEntry("features", "k", "feat", meta), CacheEntry("ingest", "i", "x", {}))
    grid = dict(cfg.sweep.grid)
    assert_rows_equal_runs(
        g.table, cfg, grid, None, lambda: lake_trades(cfg, store, FRAMES), list(INTRABAR_METRICS)
    )
    assert (g.table["intrabar_bars"] > 0).all()
    table, _ = spark_sweep(spark, store, [(SYM, path)], cfg, list(grid), [list(v) for v in grid.values()])
    pd.testing.assert_frame_equal(table, g.table)


def test_the_trade_cache_loads_in_batches_of_whole_bars():
    """With the bars' trade counts, a load asks for batches of about ``batch`` trades; what the
    runs read is the same as from one load."""
    from btsys.backtest.ticks import BarsNotCached, TradeCache

    src = Counting(FrameTrades(TICKS, BARS))
    cache = TradeCache(src, len(BARS), BARS["n_ticks"].to_numpy(), batch=500)
    want = np.arange(3, len(BARS), 4)
    with pytest.raises(BarsNotCached):
        cache(want)
    assert cache.load() == want.size and cache.load() == 0
    sizes = [int(BARS["n_ticks"].to_numpy()[a].sum()) for a in src.asked]
    assert len(src.asked) > 3 and max(sizes) < 500 + BARS["n_ticks"].max()
    np.testing.assert_array_equal(np.concatenate(src.asked), want)
    for got, exp in zip(cache(want), FrameTrades(TICKS, BARS)(want), strict=True):
        np.testing.assert_array_equal(got, exp)
