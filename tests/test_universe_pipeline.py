"""+experiment=demo_universe end to end (small): membership from the lake's daily sums, members-only
trading, the universe/quality artifacts in MLflow and the tearsheet, stage=quality, the policy."""

from __future__ import annotations

import io
import os

import mlflow
import numpy as np
import pandas as pd
import pytest

from btsys import pipeline as P
from btsys.config import compose
from btsys.stages.cache import lookup
from btsys.universe import UniverseSpec, compute_membership, members_at

pytestmark = pytest.mark.slow

SMALL = ["+experiment=demo_universe", "data.synthetic.ticks_per_day=400", "bars.bars_per_day=24"]


def _cfg(tmp, extra=()):
    return compose(
        [*SMALL, f"storage.root={tmp / 'store'}", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", *extra]
    )


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("universe_demo")
    old = os.getcwd()
    os.chdir(tmp)  # the synthetic mirror lives under the working directory
    try:
        out = P.run(_cfg(tmp))
        yield tmp, out
    finally:
        os.chdir(old)


def _artifact(client, rid, path):
    local = client.download_artifacts(rid, path)
    with open(local, "rb") as f:
        return f.read()


def test_run_logs_membership_quality_and_pnl_by_symbol(demo):
    tmp, out = demo
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    run = client.get_run(out["mlflow_run_id"])
    m = run.data.metrics
    assert m["universe_rebalances"] == 16 and 0 < m["universe_turnover"] < 1 and m["universe_changes"] > 0
    assert m["quality_missing_days"] == 38  # AVAX before its listing, LTC after delisting, TRX both
    charts = {a.path for a in client.list_artifacts(run.info.run_id, "charts")}
    assert {
        "charts/universe_membership.png",
        "charts/quality_heatmap.png",
        "charts/pnl_by_symbol.png",
    } <= charts
    quality = pd.read_parquet(io.BytesIO(_artifact(client, run.info.run_id, "quality/quality.parquet")))
    membership = pd.read_parquet(
        io.BytesIO(_artifact(client, run.info.run_id, "universe/membership.parquet"))
    )
    # the logged membership is the one the quality table's daily sums give
    cfg = _cfg(tmp)
    again = compute_membership(
        quality[quality["rows"] > 0],
        UniverseSpec.from_config(cfg.universe),
        list(cfg.data.symbols),
        "2025-01-01",
        "2025-01-31",
    )
    pd.testing.assert_frame_equal(membership, again.table)
    contrib = pd.read_parquet(
        io.BytesIO(_artifact(client, run.info.run_id, "universe/pnl_by_symbol.parquet"))
    )
    assert contrib["pnl"].sum() == pytest.approx(m["final_value"] - 10_000.0, abs=1e-6)
    assert contrib["return_contribution"].sum() == pytest.approx(m["total_return"], abs=1e-12)
    html = _artifact(client, run.info.run_id, "tearsheet.html").decode()
    for section in ("PnL by symbol", "Universe changes", "Data quality by symbol", "universe_membership"):
        assert section in html


def test_only_members_are_entered_and_leavers_are_closed(demo):
    tmp, out = demo
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    rid = out["mlflow_run_id"]
    trades = pd.read_parquet(io.BytesIO(_artifact(client, rid, "trades.parquet")))
    quality = pd.read_parquet(io.BytesIO(_artifact(client, rid, "quality/quality.parquet")))
    cfg = _cfg(tmp)
    mem = compute_membership(
        quality[quality["rows"] > 0],
        UniverseSpec.from_config(cfg.universe),
        list(cfg.data.symbols),
        "2025-01-01",
        "2025-01-31",
    )
    assert len(trades) > 10

    def us(t):  # trades.parquet holds UTC datetimes; membership instants are µs
        return pd.Timestamp(t).value // 1000

    for t in trades.itertuples():
        assert t.symbol in members_at(mem, us(t.entry_time)), (t.symbol, t.entry_time)
        if t.exit_reason in ("universe_exit", "delisted"):
            assert t.symbol not in members_at(mem, us(t.exit_time))
        elif not t.is_open:
            assert t.symbol in members_at(mem, us(t.exit_time))  # any other exit happened while a member
    assert (trades["exit_reason"] == "universe_exit").any()
    # LTC's data ends on Jan 18; it leaves at the Jan 21 rebalance: a position still open then is
    # closed at its last close (DELISTED) on the first bar time at or after that instant
    from btsys.bars.lake import load_bars
    from btsys.storage import LocalStorage

    store = LocalStorage(str(tmp / "store"))
    last_close = load_bars(store, lookup(store, "bars", out["bars_key"]), "LTCUSDT")["close"].iloc[-1]
    late = trades[
        (trades["symbol"] == "LTCUSDT") & (trades["exit_time"] >= pd.Timestamp("2025-01-19", tz="UTC"))
    ]
    for t in late.itertuples():
        assert t.exit_reason == "delisted" and t.exit_price == last_close
        assert (
            pd.Timestamp("2025-01-21", tz="UTC") <= t.exit_time < pd.Timestamp("2025-01-21 01:00", tz="UTC")
        )


def test_kernel_and_spark_sweeps_trade_the_universe_as_the_run_does(demo, monkeypatch):
    """sweep.mode=kernel|spark over the demo's members: the row of the run's own parameters equals
    the run (members only, leavers and delisted closes included), and both modes agree."""
    tmp, out = demo
    monkeypatch.chdir(tmp)
    grid = ["+sweep.grid={strategy.fast:[5,10],backtest.fees.taker:[0.0005,0.001]}", "sweep.top_k=1"]
    runs = {m: P.run(_cfg(tmp, [f"sweep.mode={m}", *grid])) for m in ("kernel", "spark")}
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    tables = {}
    for m, res in runs.items():
        assert res["n_combinations"] == 4 and res["bars_key"] == out["bars_key"]
        path = client.download_artifacts(res["mlflow_run_id"], "sweep_trials.parquet", str(tmp / m))
        tables[m] = pd.read_parquet(path)
    pd.testing.assert_frame_equal(tables["kernel"], tables["spark"])
    t = tables["kernel"]
    row = t[(t["strategy.fast"] == 10) & (t["backtest.fees.taker"] == 0.0005)].iloc[0]  # the demo's own
    for k in ("final_value", "sharpe", "n_trades", "fees_paid", "max_drawdown", "alpha", "benchmark_return"):
        assert row[k] == pytest.approx(out[k], rel=1e-9, abs=1e-12), k


def test_stage_quality_prints_the_summary_table(demo, capsys, monkeypatch):
    tmp, _ = demo
    monkeypatch.chdir(tmp)
    out = P.run(_cfg(tmp, ["stage=quality"]))
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["symbol", "days", "ok"]
    assert "AVAXUSDT" in text and "total: 372 symbol-days of 12 symbols" in text
    assert out["quality_missing"] == 38 and "bars_key" not in out


def _worst_interior_gap(tmp, out) -> pd.Series:
    """The quality row of BTC's interior day with the longest gap (a policy just under it drops it)."""
    from btsys.storage import LocalStorage

    store = LocalStorage(str(tmp / "store"))
    q = store.read_parquet(lookup(store, "quality", out["quality_key"]).meta["path"]).to_pandas()
    btc = q[(q["symbol"] == "BTCUSDT") & ~q["date"].isin(["2025-01-01", "2025-01-31"])]
    return btc.sort_values("max_gap_s", kind="stable").iloc[-1]


def test_policy_excludes_days_and_bars_restart(demo, monkeypatch):
    from btsys.storage import LocalStorage

    tmp, out = demo
    monkeypatch.chdir(tmp)
    store = LocalStorage(str(tmp / "store"))
    worst = _worst_interior_gap(tmp, out)
    res = P.run(_cfg(tmp, [f"data.quality.max_gap_s={worst['max_gap_s'] - 1e-3}", "stage=backtest"]))
    assert res["quality_excluded_days"] >= 1 + 38  # at least that day and every missing day
    assert res["bars_key"] != out["bars_key"]
    segs = lookup(store, "bars", res["bars_key"]).meta["symbols"]["BTCUSDT"]["segments"]
    assert any(a["last"] < worst["date"] < b["first"] for a, b in zip(segs, segs[1:], strict=False))
    assert np.isfinite(res["final_value"])


def _job(name):
    import importlib.util

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"jobs_{name}", os.path.join(repo, "jobs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_jobs_entry_points_share_the_pipelines_quality_and_bars(demo, capsys, monkeypatch):
    """jobs/quality.py prints the summary; jobs/bars.py applies the same policy: the pipeline's keys."""
    tmp, out = demo
    monkeypatch.chdir(tmp)
    args = [*SMALL, f"storage.root={tmp / 'store'}"]
    q = _job("quality").main(args)
    text = capsys.readouterr().out
    assert q["quality_key"] == out["quality_key"] and q["cache_hit"] and "total: 372 symbol-days" in text
    assert _job("bars").main(args)["bars_key"] == out["bars_key"]


def test_load_of_a_universe_run_equals_the_logged_run(demo, monkeypatch):
    """btsys.load recomputes the backtest with the run's membership (members only, leavers closed)
    and its quality policy: the metrics equal the logged ones, from the config and from the run id."""
    import warnings

    import btsys

    tmp, out = demo
    monkeypatch.chdir(tmp)
    overrides = [*SMALL, f"storage.root={tmp / 'store'}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recomputed metric that differs from the logged one warns
        by_id = btsys.load(out["mlflow_run_id"], tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    by_cfg = btsys.load(overrides)
    for run in (by_id, by_cfg):
        assert run.result.metrics["final_value"] == out["final_value"]
        assert run.result.metrics["n_trades"] == out["n_trades"]
        kinds = set(run.result.orders["reason"])
        assert {"universe_exit", "delisted"} <= kinds
    policy = [f"data.quality.max_gap_s={_worst_interior_gap(tmp, out)['max_gap_s'] - 1e-3}", "stage=backtest"]
    res = P.run(_cfg(tmp, policy))
    loaded = btsys.load([*overrides, *policy[:1]])
    assert loaded.keys["bars"] == res["bars_key"] != out["bars_key"]
    assert loaded.result.metrics["final_value"] == res["final_value"]
