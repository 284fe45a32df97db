"""Whole-grid sweeps: chunking is exact, Spark chunks equal the kernel table, top K re-simulate equal."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir

from btsys.backtest.grid import chunk_grid, chunk_plan
from btsys.backtest.sweep import grid_axes
from btsys.stages.cache import CacheEntry
from btsys.stages.sweep import run as run_grid
from btsys.storage import LocalStorage


@pytest.mark.parametrize(
    "sizes,chunk",
    [
        ([3], 1),
        ([3], 10),
        ([2, 3, 4], 5),
        ([2, 3, 4], 4),
        ([5, 1, 7], 3),
        ([4, 4], 16),
        ([4, 4], 100),
        ([1, 1, 1], 1),
        ([7, 3, 2, 5], 11),
    ],
)
def test_chunks_cover_the_product_in_order(sizes, chunk):
    keys = [f"k{i}" for i in range(len(sizes))]
    values = [[f"{k}v{j}" for j in range(n)] for k, n in zip(keys, sizes, strict=True)]
    plan = chunk_plan(sizes, chunk)
    rows = []
    for c in range(plan[2]):
        sub = chunk_grid(keys, values, plan, c)
        combos = list(itertools.product(*[sub[k] for k in keys]))
        assert 1 <= len(combos) <= chunk
        rows += combos
    assert rows == list(itertools.product(*values))


def test_a_million_combinations_plan_only_chunk_ids():
    plan = chunk_plan([100, 100, 100], 10_000)
    assert plan[2] == 100  # 100 integers on the driver, not 10^6 of anything
    with pytest.raises(IndexError):
        chunk_grid(["a", "b", "c"], [list(range(100))] * 3, plan, 100)


def test_grid_axes_errors():
    with pytest.raises(ValueError, match="sweep.grid is empty"):
        grid_axes({})
    with pytest.raises(ValueError, match="sweep.grid.strategy.fast must be a list"):
        grid_axes({"strategy.fast": 5})
    with pytest.raises(ValueError, match="sweep.grid.strategy.fast is an empty list"):
        grid_axes({"strategy.fast": []})


def _bars(n=3000, seed=3):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.r_[close[0], close[:-1]]
    hi = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    lo = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    ts = 1_735_689_600_000_000 + np.arange(n, dtype=np.int64) * 600_000_000
    return pd.DataFrame(
        {
            "ts_open": ts - 500_000_000,
            "ts_close": ts,
            "open": open_,
            "high": hi,
            "low": lo,
            "close": close,
            "volume": rng.uniform(1, 5, n),
            "quote_volume": close * 3,
            "buy_volume": np.ones(n),
            "n_ticks": np.full(n, 10, np.int64),
            "vwap": close,
        }
    )


def _setup(tmp_path, symbols=("BTCUSDT",)):
    store = LocalStorage(str(tmp_path))
    meta = {"symbols": {}}
    for i, s in enumerate(symbols):
        path = f"feat/symbol={s}/features.parquet"

        store.write_parquet(pa.Table.from_pandas(_bars(seed=3 + i), preserve_index=False), path)
        meta["symbols"][s] = {"path": path, "n_bars": 3000}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+experiment=demo",
                "sweep.mode=kernel",
                "sweep.top_k=3",
                "sweep.chunk_size=4",
                "+sweep.grid={strategy.fast:[5,10,20],strategy.slow:[40,80],backtest.fees.taker:[0.0,0.001]}",
            ],
        )
    return store, CacheEntry("features", "k", "feat", meta), cfg


def test_kernel_grid_top_k_equals_simulate(tmp_path, caplog):
    store, feats, cfg = _setup(tmp_path)
    with caplog.at_level("INFO", logger="btsys.stages.sweep"):
        g = run_grid(cfg, store, feats, CacheEntry("ingest", "i", "x", {}))
    best = g.top_results[0][0]
    assert "sweep best of 12: sharpe=" in caplog.text
    assert " ".join(f"{k}={v}" for k, v in best.items()) in caplog.text
    assert len(g.table) == 12 and g.param_cols == ["strategy.fast", "strategy.slow", "backtest.fees.taker"]
    best = g.table["sharpe"].max()
    assert g.best_metrics["sharpe"] == pytest.approx(best, rel=1e-9, abs=1e-12)
    for params, res in g.top_results:
        row = g.table
        for k, v in params.items():
            row = row[row[k] == v]
        assert len(row) == 1
        for m, v in res.metrics.items():
            assert float(row[m].iloc[0]) == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), m


def test_spark_sweep_equals_kernel(tmp_path, spark):
    store, feats, cfg = _setup(tmp_path, symbols=("BTCUSDT", "ETHUSDT"))
    kernel = run_grid(cfg, store, feats, CacheEntry("ingest", "i", "x", {}))
    dist = run_grid(cfg, store, feats, CacheEntry("ingest", "i", "x", {}), spark=spark)
    # one row per parameter set: the shared-cash portfolio of both symbols, as the run trades it
    assert len(kernel.table) == 12 and "symbol" not in kernel.table
    pd.testing.assert_frame_equal(kernel.table, dist.table)
    pd.testing.assert_frame_equal(kernel.returns, dist.returns)
    assert kernel.returns.shape[1] == 12 and kernel.returns.notna().all().all()
    for params, res in kernel.top_results:  # the top rows re-run as portfolios equal their rows
        assert res.symbols == ["BTCUSDT", "ETHUSDT"]
        row = kernel.table
        for k, v in params.items():
            row = row[row[k] == v]
        assert float(row["final_value"].iloc[0]) == res.final_value
