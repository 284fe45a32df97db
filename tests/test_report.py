"""Charts, tearsheet, walk-forward split and MLflow logging (real sqlite store, real backtests)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import CONF_DIR
from test_report_helpers import T0, make_result, prices

import btsys.config  # noqa: F401  (registers the schemas)
from btsys.backtest.enums import DAY_US
from btsys.backtest.split import split_metrics, split_table, walk_forward_windows
from btsys.report import charts
from btsys.report import mlflow_log as ml
from btsys.report.tearsheet import render_tearsheet

DESIGN_METRICS = {
    "total_return",
    "annual_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "win_rate",
    "profit_factor",
    "n_trades",
    "exposure",
    "fees_paid",
    "funding_paid",
}


def compose(tmp_path, *overrides):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return _compose(
            "config",
            overrides=[
                "+experiment=demo",
                f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                f"mlflow.artifact_location={tmp_path}/artifacts",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def result():
    return make_result(10, 50, n=24 * 75, seed=2)


def _png_ok(data: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.shape[0] > 100 and img.shape[1] > 300
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    return img


# --------------------------------------------------------------------------- charts / tearsheet
def test_render_charts_non_blank_pngs(result):
    out = charts.render_charts(result, title="t")  # no prices: every chart but the price chart
    assert tuple(out) == charts.CHART_NAMES[1:]
    for png in out.values():
        _png_ok(png)
    ts, close = prices(24 * 75, 2)
    out = charts.render_charts(result, title="t", prices={"BTCUSDT": (ts, close)})
    assert tuple(out) == charts.CHART_NAMES
    for png in out.values():
        _png_ok(png)


def test_charts_handle_no_trades_and_short_series():
    ts = T0 + np.arange(30, dtype=np.int64) * 3_600_000_000
    from types import SimpleNamespace

    flat = SimpleNamespace(ts=ts, equity=np.full(30, 1e4), init_cash=1e4, trades=pd.DataFrame(), metrics={})
    out = charts.render_charts(flat, prices={"X": (ts, np.full(30, 5.0))})
    assert set(out) == set(charts.CHART_NAMES)
    assert all(p[:4] == b"\x89PNG" for p in out.values())


def test_monthly_returns_table_known_values():
    # equity 100 -> 110 at the end of January, 99 at the end of February, 99 in March:
    # January +10 %, February -10 %, March 0 %.
    days = pd.to_datetime(["2025-01-01", "2025-01-31", "2025-02-28", "2025-03-15"], utc=True)
    ts = days.asi8 // 1000 + 3_600_000_000
    tab = charts.monthly_returns_table(ts, np.array([100.0, 110.0, 99.0, 99.0]), 100.0)
    assert list(tab.index) == [2025]
    np.testing.assert_allclose(tab.loc[2025, [1, 2, 3]].to_numpy(), [0.10, -0.10, 0.0], atol=1e-12)
    assert tab.loc[2025, [4, 12]].isna().all()


def test_rolling_sharpe_uses_only_past_returns():
    ts = T0 + np.arange(100, dtype=np.int64) * DAY_US
    eq = 100 * np.cumprod(1 + np.random.default_rng(1).normal(0.001, 0.02, 100))
    full = charts.rolling_sharpe_series(ts, eq, 100.0, 10)
    cut = charts.rolling_sharpe_series(ts[:60], eq[:60], 100.0, 10)
    np.testing.assert_allclose(full.iloc[:60].to_numpy(), cut.to_numpy())  # the future changes nothing
    assert full.iloc[:9].isna().all() and full.iloc[9:].notna().all()


def test_sweep_heatmap_png():
    t = pd.DataFrame(
        [(f, s, f / s) for f in (5, 10, 20) for s in (50, 100)], columns=["fast", "slow", "sharpe"]
    )
    _png_ok(charts.sweep_heatmap_png(t, "fast", "slow", "sharpe"))


def test_tearsheet_is_self_contained(result):
    pngs = charts.render_charts(result)
    page = render_tearsheet(
        result,
        pngs,
        title="demo <x>",
        params={"strategy.fast": 10},
        extra_metrics={"oos_sharpe": 0.5},
        config_yaml="a: 1\n",
    )
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('src="data:image/png;base64,') == 5
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "demo &lt;x&gt;" in page  # escaped
    for k in ("sharpe", "max_drawdown", "oos_sharpe", "profit_factor"):
        assert f">{k}<" in page
    n = len(result.trades)
    assert f"Trades ({n:,})" in page
    assert page.count("<tr>") >= n  # every trade has a row


# --------------------------------------------------------------------------- walk-forward split
def test_walk_forward_windows_rolling_expanding_gap_step():
    w = walk_forward_windows(100, {"train_bars": 40, "test_bars": 20})
    assert [(a.start, a.stop, b.start, b.stop) for a, b in w] == [
        (0, 40, 40, 60),
        (20, 60, 60, 80),
        (40, 80, 80, 100),
    ]
    w = walk_forward_windows(100, {"scheme": "expanding", "train_bars": 40, "test_bars": 20})
    assert [(a.start, a.stop, b.start, b.stop) for a, b in w] == [
        (0, 40, 40, 60),
        (0, 60, 60, 80),
        (0, 80, 80, 100),
    ]
    w = walk_forward_windows(100, {"train_bars": 30, "test_bars": 20, "gap_bars": 5, "step_bars": 30})
    assert [(a.start, a.stop, b.start, b.stop) for a, b in w] == [(0, 30, 35, 55), (30, 60, 65, 85)]
    for cfg, key in [
        ({"train_bars": 0, "test_bars": 5}, "train_bars"),
        ({"train_bars": 5, "test_bars": 0}, "test_bars"),
        ({"train_bars": 5, "test_bars": 5, "scheme": "bogus"}, "scheme"),
        ({"train_bars": 5, "test_bars": 5, "gap_bars": -1}, "gap_bars"),
        ({"train_bars": 80, "test_bars": 30}, "no complete window"),
    ]:
        with pytest.raises(ValueError, match=key):
            walk_forward_windows(100, cfg)


def test_split_metrics_known_values():
    # 10 daily bars; windows train 4 / test 2 (rolling): IS [0,4) OOS [4,6), IS [2,6) OOS [6,8),
    # IS [4,8) OOS [8,10). Equity is flat except +10 % on bars 4 and 5 and -50 % on bar 9, so
    # window 0 OOS = 1.1^2 - 1 = 0.21, window 1 OOS = 0, window 2 OOS = -0.5; the chained OOS
    # track record (bars 4..9) = 1.21 * 0.5 - 1 = -0.395, its max drawdown 0.5.
    from types import SimpleNamespace

    eq = np.array([100, 100, 100, 100, 110, 121, 121, 121, 121, 60.5])
    res = SimpleNamespace(ts=T0 + np.arange(10, dtype=np.int64) * DAY_US, equity=eq)
    m = split_metrics(res, {"train_bars": 4, "test_bars": 2})
    assert m["wf_n_windows"] == 3
    assert not any("_w0" in k for k in m)  # per-window figures are in the table (MLflow steps)
    assert m["oos_total_return"] == pytest.approx(-0.395)
    assert m["oos_max_drawdown"] == pytest.approx(0.5)
    assert m["is_total_return"] == pytest.approx(0.21)  # union of IS bars 0..7
    tab = split_table(res, {"train_bars": 4, "test_bars": 2})
    assert list(tab["test_start"]) == [4, 6, 8]
    with pytest.raises(ValueError, match="have no times"):  # bars without times are no days
        split_metrics(SimpleNamespace(ts=None, equity=eq), {"train_bars": 4, "test_bars": 2})
    np.testing.assert_allclose(tab["oos_total_return"], [0.21, 0.0, -0.5])
    assert tab["is_total_return"][1] == pytest.approx(0.21)  # IS [2,6) holds bars 4 and 5


# --------------------------------------------------------------------------- MLflow
@pytest.mark.slow
def test_log_run_params_metrics_tags_artifacts(tmp_path, monkeypatch, result):
    monkeypatch.chdir(tmp_path)
    long_syms = [f"SYM{i:04d}USDT" for i in range(60)]  # a list param far over 500 characters
    syms = f"data.symbols=[{','.join(long_syms)}]"
    cfg = compose(tmp_path, syms)
    keys = {"ingest": "ing123", "bars": "bar456", "features": "fea789"}
    rid = ml.log_run(cfg, result, keys=keys)
    rid2 = ml.log_run(cfg, result, keys=keys)
    client = ml.client_for(cfg)
    run = client.get_run(rid)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["strategy.fast"] == "10" and p["strategy.slow"] == "50"
    assert p["backtest.fees.taker"] == "0.0005"
    full = json.dumps(long_syms, sort_keys=True)
    assert p["data.symbols"].startswith("sha256:") and f"len {len(full)}" in p["data.symbols"]
    assert DESIGN_METRICS <= set(run.data.metrics)
    assert run.data.metrics["sharpe"] == pytest.approx(result.metrics["sharpe"])
    t = run.data.tags
    assert (
        t["btsys.ingest_key"] == "ing123"
        and t["btsys.bars_key"] == "bar456"
        and t["btsys.features_key"] == "fea789"
    )
    assert t["btsys.config_hash"] == ml.config_hash(cfg) and t["btsys.run_kind"] == "trial"
    assert len(t["btsys.git_commit"]) in (40, 7) or t["btsys.git_commit"] == "unknown"
    arts = {a.path for a in client.list_artifacts(rid)}
    assert {
        "config.yaml",
        "tearsheet.html",
        "returns.parquet",
        "trades.parquet",
        "metrics.json",
        "charts",
    } <= arts
    assert {a.path for a in client.list_artifacts(rid, "charts")} == {
        f"charts/{n}.png"
        for n in charts.CHART_NAMES
        if n != "price_trades"  # the result has no prices
    }
    d = client.download_artifacts(rid, "config.yaml", str(tmp_path / "dl"))
    text = open(d).read()
    assert (
        "SYM0059USDT" in text and not text.startswith("hydra:") and "\nhydra:" not in text
    )  # full value kept in config.yaml
    ret = pd.read_parquet(client.download_artifacts(rid, "returns.parquet", str(tmp_path / "dl")))
    pd.testing.assert_frame_equal(ret, ml.returns_frame(result))
    # the experiment is created once
    exps = [e for e in client.search_experiments() if e.name == "demo"]
    assert len(exps) == 1 and client.get_run(rid2).info.experiment_id == exps[0].experiment_id
    # the run is found again by its config hash; another config is not
    assert ml.find_logged_run(cfg) == rid2
    assert ml.find_logged_run(compose(tmp_path, syms, "strategy.fast=11")) is None
    # the hash ignores where things are stored and logged
    assert ml.config_hash(compose(tmp_path, syms, "storage.root=elsewhere", "force=true")) == ml.config_hash(
        cfg
    )


def test_log_run_disabled_touches_nothing(tmp_path, monkeypatch, result):
    monkeypatch.chdir(tmp_path)
    cfg = compose(tmp_path, "mlflow.enabled=false")
    assert ml.log_run(cfg, result, {}) is None
    assert ml.find_logged_run(cfg) is None
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_log_run_failure_is_recorded_and_run_closed(tmp_path, monkeypatch, result):
    monkeypatch.chdir(tmp_path)
    cfg = compose(tmp_path, "name=broken")
    from dataclasses import replace

    broken = replace(result, ts=result.ts[::-1].copy())  # decreasing times: daily_returns refuses
    with pytest.raises(ValueError, match="non-decreasing"):
        ml.log_run(cfg, broken, {})
    client = ml.client_for(cfg)
    runs = client.search_runs([ml.experiment_id(cfg)], "tags.`btsys.name` = 'broken'")
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FAILED"
    assert "non-decreasing" in r.data.tags["btsys.error"] and r.data.tags["btsys.error_type"] == "ValueError"
    assert "error.txt" in {a.path for a in client.list_artifacts(r.info.run_id)}
    assert ml.find_logged_run(cfg) is None  # a failed run is never reused


@pytest.mark.slow
def test_log_run_walk_forward_metrics(tmp_path, monkeypatch, result):
    monkeypatch.chdir(tmp_path)
    cfg = compose(
        tmp_path,
        "backtest.split.enabled=true",
        "backtest.split.train_bars=480",
        "backtest.split.test_bars=240",
    )
    rid = ml.log_run(cfg, result, {})
    client = ml.client_for(cfg)
    m = client.get_run(rid).data.metrics
    exp = split_metrics(result, cfg.backtest.split)
    for k in ("is_sharpe", "oos_sharpe", "oos_total_return", "wf_n_windows"):
        assert m[k] == pytest.approx(exp[k], nan_ok=True)
    tab = split_table(result, cfg.backtest.split)
    steps = {
        h.step: h.value for h in client.get_metric_history(rid, "wf.oos_sharpe")
    }  # one key, step = window
    assert steps == pytest.approx(dict(enumerate(tab["oos_sharpe"])), nan_ok=True)
    assert not any("_w0" in k for k in m)
    assert "walk_forward.csv" in {a.path for a in client.list_artifacts(rid)}


@pytest.mark.slow
def test_log_sweep_table_one_run_plus_top_k_children(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose(tmp_path, "sweep.mode=kernel", "sweep.top_k=3")
    rows, results, rets = [], {}, {}
    for fast in (5, 10, 20):
        for slow in (40, 80):
            r = make_result(fast, slow, n=24 * 40, seed=4)
            i = len(rows)
            rows.append({"strategy.fast": fast, "strategy.slow": slow, **r.metrics})
            results[i] = ({"strategy.fast": fast, "strategy.slow": slow}, r)
            f = ml.returns_frame(r)
            rets[i] = pd.Series(f["ret"].to_numpy(), index=f["ts"].to_numpy())
    table = pd.DataFrame(rows)
    top = table["sharpe"].sort_values(ascending=False).index[:3]
    rid = ml.log_sweep_table(
        cfg,
        table,
        ["strategy.fast", "strategy.slow"],
        "sharpe",
        [results[i] for i in top],
        returns=pd.DataFrame(rets),
        keys={"bars": "bk"},
    )
    client = ml.client_for(cfg)
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["btsys.run_kind"] == "sweep_table"
    m = run.data.metrics
    assert m["n_trials"] == 6
    assert m["best_sharpe"] == pytest.approx(table["sharpe"].max())
    assert 0.0 <= m["dsr"] <= 1.0 and 0.0 <= m["pbo"] <= 1.0
    assert run.data.params["best.strategy.fast"] == str(table.loc[top[0], "strategy.fast"])
    arts = {a.path for a in client.list_artifacts(rid)}
    assert {
        "sweep_trials.parquet",
        "sweep_trials.csv",
        "sweep_heatmap.png",
        "pbo_cscv.csv",
        "config.yaml",
    } <= arts
    back = pd.read_parquet(client.download_artifacts(rid, "sweep_trials.parquet", str(tmp_path / "dl")))
    assert len(back) == 6
    kids = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{rid}'")
    assert len(kids) == 3
    fasts = sorted(int(k.data.params["strategy.fast"]) for k in kids)
    assert fasts == sorted(int(table.loc[i, "strategy.fast"]) for i in top)
    for k in kids:
        assert k.info.status == "FINISHED" and k.data.tags["btsys.bars_key"] == "bk"
        assert "tearsheet.html" in {a.path for a in client.list_artifacts(k.info.run_id)}
    top1 = next(k for k in kids if "top1" in k.info.run_name.split())  # the link to the best child
    assert run.data.tags["btsys.best_run_id"] == top1.info.run_id
    assert run.data.tags["btsys.best_run_name"] == top1.info.run_name
    assert top1.info.run_id in run.data.tags["mlflow.note.content"]
    with pytest.raises(KeyError, match="param_cols"):
        ml.log_sweep_table(cfg, table, ["strategy.nope"], "sharpe", [])


def test_param_items_hash_long_keys_and_values():
    cfg = {"a": {"b" * 300: 1}, "c": "x" * 600, "d": [1, 2], "e": None}
    p = ml.param_items(cfg)
    assert all(len(k) <= 250 for k in p)
    assert p["c"].startswith("sha256:") and "len 600" in p["c"]
    assert p["d"] == "[1, 2]" and p["e"] == "None"
    # two long keys with one prefix stay distinct
    p2 = ml.param_items({"a": {"b" * 300: 1, "b" * 299 + "c": 2}})
    assert len(p2) == 2
