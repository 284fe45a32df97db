"""Content-addressed cache: keys, hits, force, killed runs and concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir

from btsys import pipeline as P
from btsys.stages import bars, ingest
from btsys.stages.cache import CacheEntry, cached, lookup
from btsys.storage import LocalStorage


def _cfg(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=["+experiment=demo", *overrides])


def _listing(key="in1"):
    """An ingest entry as the bars key sees it (its key and lake version)."""
    return CacheEntry("ingest", key, "p", {"lake_version": "v1"})


def test_same_config_same_key_and_relevant_change_new_key():
    a, b = _cfg(), _cfg()
    assert bars.key(a, _listing()) == bars.key(b, _listing())
    base = bars.key(a, _listing())
    assert bars.key(a, _listing("in2")) != base  # input changed
    assert bars.key(_cfg(["bars.threshold=123"]), _listing()) != base
    assert bars.key(_cfg(["bars=volume"]), _listing()) != base
    # keys of other groups do not move the bars key
    assert bars.key(_cfg(["strategy.fast=3"]), _listing()) == base
    # non-determining settings do not either, nor the same value written otherwise
    assert bars.key(_cfg(["bars.keep_partial=true"]), _listing()) == base
    assert bars.key(_cfg(["bars.threshold=1000000"]), _listing()) == base  # the demo's 1.0e6
    assert ingest.key(_cfg(["data.source.retries=9"])) == ingest.key(a)
    assert ingest.key(_cfg(["data.symbols=[BTCUSDT]"])) != ingest.key(a)
    # the synthetic demo's listing: its mirror is generated, so download settings do not count
    for o in ("data.source.file_deadline_s=5", "data.source.timeout_s=1", "data.quality.gap_s=60"):
        assert ingest.key(_cfg([o])) == ingest.key(a), o
    for o in ("data.max_bad_row_fraction=0.5", "data.synthetic.seed=8"):
        assert ingest.key(_cfg([o])) != ingest.key(a), o


def _plain_cfg(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_bars_key_and_params_hold_only_the_selected_kinds_settings():
    """One schema per kind family: a setting another family uses is refused (so it can change
    neither the bars' key nor the logged params), and fixed thresholds ignore the dynamic ones."""
    from hydra.errors import ConfigCompositionException

    from btsys.bars import BarsConfigError, BarSpec
    from btsys.report.mlflow_log import param_items

    for kind, foreign in (("time", "threshold=2"), ("dollar", "ewma_span=5"), ("tick_run", "interval=1h")):
        with pytest.raises(ConfigCompositionException) as e:
            _plain_cfg([f"bars={kind}", f"bars.{foreign}"])
        assert foreign.split("=")[0] in str(e.value) + str(e.value.__cause__ or "")
    with pytest.raises(BarsConfigError, match=r"unknown bars option\(s\) \['threshold'\] for time bars"):
        BarSpec.from_config({"kind": "time", "interval": "1h", "threshold": 2.0})
    time_bars = _plain_cfg(["bars=time"])
    assert bars.section(time_bars) == {"kind": "time", "interval": "1h"}
    assert {k for k in param_items(time_bars) if k.startswith("bars.")} == {
        "bars.kind",
        "bars.interval",
        "bars.keep_partial",
    }
    fixed = [bars.key(_plain_cfg(["bars=dollar", f"bars.bars_per_day={n}"]), _listing()) for n in (2, 1e6)]
    assert fixed[0] == fixed[1]  # a fixed threshold does not read bars_per_day
    dynamic = [
        bars.key(
            _plain_cfg(["bars=dollar", "bars.threshold_mode=dynamic", f"bars.bars_per_day={n}"]), _listing()
        )
        for n in (2, 1e6)
    ]
    assert dynamic[0] != dynamic[1]


def test_pipeline_keys_chain(tmp_path):
    """The bars key depends on the ingest key: another data range means other bars."""
    cfg, cfg2 = _cfg(), _cfg(["data.end=2025-01-02"])
    assert ingest.key(cfg) != ingest.key(cfg2)
    assert bars.key(cfg, _listing(ingest.key(cfg))) != bars.key(cfg2, _listing(ingest.key(cfg2)))


def _build_writer(value):
    def build(prefix, store):
        store.write_text(f"{prefix}/out.txt", value)
        return {"value": value}

    return build


def test_cached_hit_and_force(tmp_path, caplog):
    store = LocalStorage(str(tmp_path))
    calls = []

    def build(prefix):
        calls.append(prefix)
        store.write_text(f"{prefix}/out.txt", f"run{len(calls)}")
        return {"n": len(calls)}

    e1 = cached(store, "bars", "k1", build)
    assert not e1.hit and e1.meta == {"n": 1}
    with caplog.at_level("INFO", logger="btsys.stages"):
        e2 = cached(store, "bars", "k1", build)
    assert e2.hit and e2.prefix == e1.prefix and len(calls) == 1
    assert "cache hit" in caplog.text
    e3 = cached(store, "bars", "k1", build, force=True)
    assert not e3.hit and len(calls) == 2 and e3.prefix != e1.prefix
    assert store.read_text(f"{e3.prefix}/out.txt") == "run2"
    assert lookup(store, "bars", "k1").prefix == e3.prefix


def test_killed_run_is_never_trusted(tmp_path):
    store = LocalStorage(str(tmp_path))

    def dies(prefix):
        store.write_text(f"{prefix}/half.txt", "half")
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        cached(store, "bars", "k", dies)
    assert lookup(store, "bars", "k") is None  # half-written attempt is not an entry
    e = cached(store, "bars", "k", lambda p: store.write_text(f"{p}/ok.txt", "ok") or {"ok": 1})
    assert not e.hit and store.read_text(f"{e.prefix}/ok.txt") == "ok"


def _race(root, i, q):
    store = LocalStorage(root)

    def build(prefix):
        for j in range(50):
            store.write_text(f"{prefix}/part-{j}.txt", "x" * 1000)
        return {"writer": i}

    e = cached(store, "bars", "same", build)
    q.put(e.prefix)


@pytest.mark.slow
def test_concurrent_writers_leave_one_intact_entry(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), i, q)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = LocalStorage(str(tmp_path))
    entry = lookup(store, "bars", "same")
    assert entry is not None
    files = store.list(entry.prefix)
    assert len(files) == 50 and all(store.read_text(f) == "x" * 1000 for f in files)
    marker = json.loads(store.read_text("cache/bars/same/_COMMITTED"))
    assert marker["prefix"] == entry.prefix
    assert not [f for f in os.listdir(tmp_path / "cache/bars/same") if ".tmp-" in f]


def test_stage_backtest_stops_before_the_report(tmp_path, spark, monkeypatch):
    """stage=backtest writes the results to the store and logs nothing to MLflow; stage=bars stops earlier."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    small = [
        "data.symbols=[BTCUSDT]",
        "data.end=2025-01-02",
        "data.synthetic.ticks_per_day=3000",
        f"storage.root={tmp_path / 'store'}",
        f"mlflow.tracking_uri=sqlite:///{db}",
    ]
    out = P.run(_cfg([*small, "stage=bars"]))
    assert set(out) == {"ingest_key", "quality_key", "bars_key"}
    out = P.run(_cfg([*small, "stage=backtest"]))
    assert "final_value" in out and "mlflow_run_id" not in out
    store = LocalStorage(str(tmp_path / "store"))
    assert any(k.endswith("metrics.json") for k in store.list("results"))
    assert not db.exists()


def test_demo_ml_logs_run_metrics_and_each_symbols_model(tmp_path, spark, monkeypatch):
    """+experiment=demo_ml end to end: out-of-sample ML signals backtested, run + models in MLflow."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+experiment=demo_ml",
                f"storage.root={tmp_path / 'store'}",
                f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            ],
        )
    out = P.run(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "sharpe" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"ml", "tearsheet.html", "config.yaml"} <= arts
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert sorted(m.name for m in models) == ["model_BTCUSDT", "model_ETHUSDT"]
    assert all(m.source_run_id == run.info.run_id for m in models)
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert any(k.startswith(f"{sym}.importance.") for k in run.data.metrics)
    assert hasattr(mlflow.sklearn.load_model(models[0].model_uri), "predict_proba")


STRATEGY_OPTIONS = sorted(
    os.path.splitext(f)[0] for f in os.listdir(os.path.join(CONF_DIR, "strategy")) if f.endswith(".yaml")
)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return tmp_path_factory.mktemp("strategies")


@pytest.mark.parametrize("strategy", STRATEGY_OPTIONS)
def test_every_strategy_runs_through_the_pipeline(strategy, shared_store, spark, monkeypatch):
    """Each conf/strategy option backtests end to end on the demo's two symbols (stage=backtest)."""
    monkeypatch.chdir(shared_store)
    extra = {
        "ml_classifier": ["features=ml", "strategy.min_train=60", "strategy.retrain_every=60"],
        "xs_momentum": [
            "strategy.lookback=20",
            "strategy.rebalance_every=10",
            "backtest.direction=both",
            "strategy.bottom_n=1",
        ],
    }.get(strategy, [])
    out = P.run(
        _cfg(
            [
                f"strategy={strategy}",
                "stage=backtest",
                "data.end=2025-01-04",
                f"storage.root={shared_store / 'store'}",
                *extra,
            ]
        )
    )
    assert np.isfinite(out["final_value"]) and out["final_value"] > 0
    assert set(out) >= {"total_return", "sharpe", "max_drawdown", "n_trades", "results"}
