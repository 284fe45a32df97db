"""Run names, tags and params that make runs findable (real sqlite MLflow store)."""

from __future__ import annotations

import pytest
from test_report import compose
from test_report_helpers import make_result

from btsys.config import compose as compose_config
from btsys.report import mlflow_log as ml
from btsys.report import naming


@pytest.fixture(scope="module")
def result():
    return make_result(10, 50, n=24 * 20, seed=3)


def _plain(tmp_path, *overrides):
    return ml.plain_config(compose(tmp_path, *overrides))


def test_run_name_is_strategy_params_symbols_and_bar_kind(tmp_path):
    assert (
        naming.describe(_plain(tmp_path, "data.symbols=[BTCUSDT]"))
        == "ma_cross fast=10 slow=50 BTCUSDT dollar"
    )
    time_bars = ml.plain_config(compose_config(["strategy=rsi_reversion", "bars=time"]))  # not the demo's
    assert (
        naming.describe(time_bars)
        == "rsi_reversion window=14 lower=30.0 upper=70.0 exit=50.0 BTCUSDT,ETHUSDT time 1h"
    )
    syms = "data.symbols=[AAAUSDT,BBBUSDT,CCCUSDT,DDDUSDT,EEEUSDT]"
    assert naming.describe(_plain(tmp_path, syms)) == "ma_cross fast=10 slow=50 AAAUSDT,BBBUSDT +3 dollar"
    ml_name = naming.describe(_plain(tmp_path, "strategy=ml_classifier", "features=ml"))
    assert (
        ml_name.startswith("ml_classifier model=random_forest threshold=0.55 ") and "min_train" not in ml_name
    )


def test_sweep_values_keep_what_varies_and_never_paths_or_uris():
    ov = [
        "+experiment=demo",
        "strategy.fast=5,10",
        "strategy.slow=range(40,200,step=20)",
        "backtest.fees.taker=0.0004,0.001",
        "mlflow.tracking_uri=sqlite:////a/b,c/mlflow.db",
        "hydra.sweep.dir=/tmp/x,y",
        "data.source.base_url=https://u:p@h/a,b",
        "storage.root=s3://b/p",
        "bars.threshold=5e6",
    ]
    assert naming.sweep_values(ov) == {
        "strategy.fast": "5,10",
        "strategy.slow": "range(40,200,step=20)",
        "backtest.fees.taker": "0.0004,0.001",
    }
    job = [
        "+experiment=demo",
        "strategy.fast=5",
        "backtest.fees.taker=0.001",
        "mlflow.tracking_uri=sqlite:///x.db",
    ]
    assert naming.job_values(job, ["strategy.fast", "backtest.fees.taker"]) == {
        "strategy.fast": "5",
        "backtest.fees.taker": "0.001",
    }
    assert naming.job_values(job, None) == {"strategy.fast": "5", "backtest.fees.taker": "0.001"}


def test_sweep_names_show_the_swept_values(tmp_path):
    plain = _plain(tmp_path, "data.symbols=[BTCUSDT]", "strategy.fast=5")
    parent = naming.describe(
        plain, {"strategy.fast": "5,10", "backtest.fees.taker": "0.0004,0.001"}, ["sweep"]
    )
    assert parent == "ma_cross fast=5,10 slow=50 BTCUSDT dollar taker=0.0004,0.001 sweep"
    child = naming.describe(plain, {"strategy.fast": "5", "backtest.fees.taker": "0.001"}, ["#3"])
    assert child == "ma_cross fast=5 slow=50 BTCUSDT dollar taker=0.001 #3"
    tags = naming.tags(plain, {"strategy.fast": "5"})
    assert tags == {
        "btsys.strategy": "ma_cross",
        "btsys.symbols": "BTCUSDT",
        "btsys.bars": "dollar",
        "btsys.swept": "strategy.fast",
        "swept.strategy.fast": "5",
    }


@pytest.mark.slow
def test_logged_run_name_tags_and_params(tmp_path, monkeypatch, result):
    monkeypatch.chdir(tmp_path)
    cfg = compose(tmp_path, "data.symbols=[BTCUSDT]", "mlflow.charts=false")
    rid = ml.log_run(cfg, result, {})
    run = ml.client_for(cfg).get_run(rid)
    assert run.info.run_name == "ma_cross fast=10 slow=50 BTCUSDT dollar"
    t = run.data.tags
    assert (t["btsys.strategy"], t["btsys.symbols"], t["btsys.bars"]) == ("ma_cross", "BTCUSDT", "dollar")
    p = run.data.params
    # synthetic data: the real site's URL (and download settings) are not params; the generator's are
    assert not any(k.startswith("data.source.") for k in p) and p["data.synthetic.seed"] == "7"
    real_cfg = compose(tmp_path, "data=binance", 'data.source.base_url="https://user:pw@host/x?token=t"')
    real = ml.param_items(real_cfg)
    assert real["data.source.base_url"] == "https://***@host/x?token=***"
    assert "base_url: https://***@host/x?token=***" in ml.config_yaml(real_cfg)
    assert not any(k.startswith("data.synthetic.") for k in real)


def test_kernel_sweep_run_names_show_the_grid(tmp_path):
    import pandas as pd

    cfg = compose(tmp_path, "data.symbols=[BTCUSDT]")
    table = pd.DataFrame({"strategy.fast": [5, 10, 20, 5], "strategy.slow": [50, 50, 100, 100]})
    assert (
        ml._grid_run_name(cfg, table, ["strategy.fast", "strategy.slow"])
        == "ma_cross fast=5..20 slow=50..100 BTCUSDT dollar kernel sweep (4)"
    )
