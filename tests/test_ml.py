"""ML strategy: purged K-fold and embargo, walk-forward schedule, out-of-sample learning, bet sizing,
MLflow."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from test_features import random_bars

from btsys.report.models import log_model_info
from btsys.signals import StrategyError, generate_signals
from btsys.signals.labels import triple_barrier
from btsys.signals.ml import PurgedKFold, bet_size, walk_forward_folds, walk_forward_proba
from btsys.signals.strategies import strategy_params


def _events(m=120, n_bars=400, seed=0):
    rng = np.random.default_rng(seed)
    t0 = np.sort(rng.choice(n_bars - 30, m, replace=False)).astype(np.int64)
    t1 = t0 + rng.integers(1, 30, m)
    return t0, t1


@pytest.mark.parametrize("k,embargo", [(3, 0), (5, 4), (4, 12)])
def test_purged_kfold_purges_overlaps_and_respects_embargo(k, embargo):
    t0, t1 = _events()
    n_purged = 0
    seen_test = []
    for train, test in PurgedKFold(k, embargo).split(t0, t1):
        seen_test.append(test)
        assert not set(train) & set(test)
        lo, hi = t0[test].min(), t1[test].max()
        # no training label window [t0, t1] overlaps the test span [lo, hi] ...
        assert ((t1[train] < lo) | (t0[train] > hi)).all()
        # ... and nothing starts within the embargo after the test span
        assert not ((t0[train] > hi) & (t0[train] <= hi + embargo)).any()
        # and only those are removed: every other event is kept for training
        others = np.setdiff1d(np.arange(len(t0)), test)
        keep = others[(t1[others] < lo) | (t0[others] > hi + embargo)]
        np.testing.assert_array_equal(train, keep)
        n_purged += len(others) - len(keep)
    assert n_purged > 0
    np.testing.assert_array_equal(np.concatenate(seen_test), np.arange(len(t0)))


def test_purged_kfold_validates():
    with pytest.raises(ValueError, match="sorted by t0"):
        list(PurgedKFold(2).split([3, 1, 2], [4, 2, 3]))
    with pytest.raises(ValueError, match="n_splits must be >= 2"):
        PurgedKFold(1)


def test_walk_forward_folds_purge_embargo_and_window():
    close = random_bars(600, seed=4)["close"].to_numpy()
    ev = np.arange(0, 600, 2, dtype=np.int64)
    t1, _, _ = triple_barrier(close, ev, 0.01, vertical_bars=15)
    folds = walk_forward_folds(ev, t1, 600, min_train=100, retrain_every=120, embargo=5, train_bars=200)
    assert [(f.start, f.stop) for f in folds] == [(100, 220), (220, 340), (340, 460), (460, 580), (580, 600)]
    for f in folds:
        assert f.train.size > 0
        assert (t1[f.train] >= 0).all() and (t1[f.train] < f.start - 5).all()  # purge + embargo
        assert (ev[f.train] >= f.start - 200).all()  # rolling window
        ok = (t1 >= 0) & (t1 < f.start - 5) & (ev >= f.start - 200)
        np.testing.assert_array_equal(f.train, np.flatnonzero(ok))  # nothing else left out
    # the schedule and training sets of earlier blocks do not depend on later data
    t1_cut, _, _ = triple_barrier(close[:350], ev[ev < 350], 0.01, vertical_bars=15)
    cut = walk_forward_folds(ev[ev < 350], t1_cut, 350, 100, 120, 5, 200)
    for a, b in zip(cut[:2], folds[:2], strict=True):
        assert (a.start, a.stop) == (b.start, b.stop)
        np.testing.assert_array_equal(a.train, b.train)


def _regime_frame(n=1400, seed=1):
    """Prices that drift with a persistent, observable regime (+1/-1) plus two noise features."""
    rng = np.random.default_rng(seed)
    s = np.empty(n)
    s[0] = 1
    for i in range(1, n):
        s[i] = -s[i - 1] if rng.random() < 0.03 else s[i - 1]
    r = 0.004 * s + rng.normal(0, 0.004, n)
    r[0] = 0
    close = 100 * np.exp(np.cumsum(r))
    return pd.DataFrame(
        {
            "ts_open": np.arange(n, dtype=np.int64),
            "close": close,
            "regime": s,
            "noise_a": rng.normal(size=n),
            "noise_b": rng.normal(size=n),
        }
    )


@pytest.mark.parametrize(
    "model,params", [("logistic", {}), ("random_forest", {"n_estimators": 30}), ("hist_gb", {"max_iter": 30})]
)
def test_walk_forward_learns_out_of_sample(model, params):
    cfg = {
        "name": "ml_classifier",
        "model": model,
        "params": params,
        "min_train": 300,
        "retrain_every": 250,
        "label": {"vertical_bars": 10, "vol_span": 20, "pt": 1.0, "sl": 1.0},
        "cv_folds": 3,
    }
    frame = _regime_frame()
    proba, info = walk_forward_proba(strategy_params(cfg), frame)
    assert np.isnan(proba[:300]).all() and np.isfinite(proba[300:]).all()
    assert info["oos"]["accuracy"] > 0.65 and info["oos"]["auc"] > 0.7
    assert len(info["fold_scores"]) == 5 and all(f["n_train"] > 0 for f in info["fold_scores"])
    assert len(info["cv_scores"]) == 3 and all(c["accuracy"] > 0.6 for c in info["cv_scores"])
    imp = info["importances"]
    assert set(imp) == {"regime", "noise_a", "noise_b"} and max(imp, key=imp.get) == "regime"
    sig = generate_signals({**cfg, "threshold": 0.6, "exit_threshold": 0.5, "bet_sizing": "prob"}, frame)
    assert not (sig.entries[:300] | sig.exits[:300] | sig.short_entries[:300]).any()
    assert sig.entries[300:].any() and sig.short_entries[300:].any()
    assert not (sig.entries & sig.exits).any()
    assert sig.size is not None and (sig.size[:300] == 0).all() and (sig.size[300:] > 0).mean() > 0.5


def test_features_that_do_not_predict_do_not_score():
    """On a random walk the out-of-sample AUC is near 0.5 (the pipeline does not leak labels)."""
    bars = random_bars(1400, seed=8)
    from btsys.features import compute_features

    frame = compute_features(
        bars,
        [
            {"name": "r5", "fn": "log_return", "window": 5},
            {"name": "rsi", "fn": "rsi", "window": 14},
            {"name": "vol", "fn": "realized_vol", "window": 20},
        ],
    )
    cfg = {
        "name": "ml_classifier",
        "model": "random_forest",
        "params": {"n_estimators": 30},
        "min_train": 300,
        "retrain_every": 250,
        "label": {"vertical_bars": 10, "vol_span": 20},
    }
    _, info = walk_forward_proba(strategy_params(cfg), frame)
    assert 0.4 < info["oos"]["auc"] < 0.6


def test_bet_size():
    from scipy.stats import norm

    got = bet_size(np.array([0.5, 0.8, 0.2, np.nan, 1.0]))
    assert got[0] == 0 and got[3] == 0 and got[4] == pytest.approx(1.0)
    assert got[1] == pytest.approx(2 * norm.cdf(0.3 / 0.4) - 1) == pytest.approx(got[2])
    assert bet_size(np.array([0.8]), step=0.25)[0] == 0.5  # 0.547 -> 0.5


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"features": ["regime", "missing_col"]}, "features \\['missing_col'\\] are not columns"),
        ({"model": "svm"}, "model must be one of"),
        ({"params": {"n_estimatorz": 3}}, "n_estimatorz.*RandomForestClassifier"),
        ({"threshold": 0.4}, "bad threshold"),
        ({"exit_threshold": 0.9}, "bad exit_threshold"),
        ({"retrain_every": 0}, "bad retrain_every"),
    ],
)
def test_bad_ml_configs(cfg, match):
    with pytest.raises(StrategyError, match=match):
        generate_signals(
            {"name": "ml_classifier", "min_train": 300, "retrain_every": 400, **cfg}, _regime_frame(500)
        )


@pytest.mark.slow
def test_log_model_info_to_mlflow(tmp_path):
    import mlflow
    import mlflow.sklearn

    cfg = {
        "name": "ml_classifier",
        "model": "random_forest",
        "params": {"n_estimators": 10},
        "min_train": 300,
        "retrain_every": 300,
        "label": {"vertical_bars": 10, "vol_span": 20},
        "cv_folds": 2,
    }
    frame = _regime_frame(900)
    sig = generate_signals(cfg, frame)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("ml-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_model_info(sig.model_info)
    with mlflow.start_run(experiment_id=exp) as run:
        log_model_info(sig.model_info)
    client = mlflow.tracking.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.metrics["ml_oos_accuracy"] == pytest.approx(sig.model_info["oos"]["accuracy"])
    assert "ml_cv_accuracy" in data.metrics and "importance.regime" in data.metrics
    hist = client.get_metric_history(run.info.run_id, "ml_fold_oos_accuracy")
    assert [m.step for m in hist] == [0, 1]
    imp = json.loads(
        open(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                artifact_path="ml/feature_importances.json",
                dst_path=str(tmp_path / "dl"),
            )
        ).read()
    )
    assert set(imp) == {"regime", "noise_a", "noise_b"}
    models = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    assert len(models) == 1
    loaded = mlflow.sklearn.load_model(models[0].model_uri)  # trusted types are stored with the model
    X = frame[["regime", "noise_a", "noise_b"]].to_numpy()[-50:]
    np.testing.assert_array_equal(loaded.predict_proba(X), sig.model_info["model"].predict_proba(X))
    mlflow.set_tracking_uri(previous)


def test_demo_ml_experiment_composes_and_runs_on_a_feature_frame():
    """+experiment=demo_ml: features=ml and strategy=ml_classifier fit together and produce OOS signals."""
    from hydra import compose, initialize_config_dir

    import btsys.config  # noqa: F401
    from btsys.features import compute_features

    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        cfg = compose(config_name="config", overrides=["+experiment=demo_ml"])
    assert cfg.strategy.name == "ml_classifier" and len(cfg.features.specs) > 5
    bars = random_bars(340, seed=6)
    bars["threshold"] = 1e6  # the bars stage's extra columns are not model inputs
    bars["is_partial"] = np.arange(340) == 339
    frame = compute_features(bars, cfg.features.specs)
    sig = generate_signals(cfg.strategy, frame)
    mi = sig.model_info
    assert mi["features"] == [s.name for s in cfg.features.specs]
    assert len(mi["fold_scores"]) == 4 and mi["model"] is not None and mi["importances"]
    assert not sig.entries[: cfg.strategy.min_train].any() and sig.entries.any()
    assert sig.size is not None and np.allclose(sig.size * 10, np.round(sig.size * 10))  # size_step 0.1
