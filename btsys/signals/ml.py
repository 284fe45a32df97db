"""Walk-forward ML strategy (``ml_classifier``) with purged K-fold CV and embargo (AFML ch. 7).

How the out-of-sample signals are made
--------------------------------------
1. Events are every ``event_stride``-th bar whose features are all finite and whose volatility
   target is known. Each gets a triple-barrier label (:mod:`btsys.signals.labels`); ``t1`` is the
   bar at which the label becomes known. The class is ``label > 0`` (the upper barrier, or a
   positive return at the vertical barrier).
2. The bars from ``min_train`` on are cut into test blocks of ``retrain_every`` bars. The block
   schedule depends only on bar positions (not on how long the data is), so appending data never
   changes earlier predictions.
3. Before a block starting at bar ``b`` a fresh model is fitted on the events whose label was
   known ``embargo_bars`` before the block: ``t1 < b - embargo_bars`` (purging: no training label
   overlaps the test block; the embargo keeps serially correlated neighbours out). With
   ``train_bars > 0`` only events with ``t0 >= b - train_bars`` are used (rolling window).
   Samples are weighted by average uniqueness computed from the information at ``b``.
4. The model predicts ``P(up)`` for every bar of the block from that bar's features only.
   Bars before the first block have no prediction and no signal.

Signals are levels: long entry while ``P(up) > threshold``, long exit while
``P(up) < exit_threshold``; shorts mirrored around 0.5. With ``bet_sizing: prob`` the size is
AFML 10.1's ``|2 Phi((p - 0.5) / sqrt(p (1 - p))) - 1|``, optionally discretised by ``size_step``.

The final model (fitted on every labelled event, for inspection and MLflow) is never used for the
signals; its purged K-fold scores (:class:`PurgedKFold`, ``cv_folds``) and the walk-forward
fold scores go to ``Signals.model_info``; :func:`btsys.report.models.log_model_info` logs them to
MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from btsys.features import NON_FEATURE_COLUMNS
from btsys.signals import labels as L
from btsys.signals.base import Signals
from btsys.signals.specs import StrategyError

log = logging.getLogger("btsys.signals.ml")

#: A walk-forward block is skipped (no predictions) below this many training events or one class.
MIN_TRAIN_EVENTS = 20

DEFAULT_PARAMS = {
    "logistic": {"C": 1.0, "max_iter": 1000},
    "random_forest": {"n_estimators": 100, "max_depth": 4, "min_samples_leaf": 20, "n_jobs": 1},
    "hist_gb": {"max_iter": 100, "max_depth": 3, "learning_rate": 0.05, "early_stopping": False},
}


# --------------------------------------------------------------------------- cross-validation
class PurgedKFold:
    """K-fold CV over events sorted by ``t0``, purging overlapping labels and embargoing (AFML 7.3-7.4).

    Test folds are contiguous blocks of events. A training event is kept only if its label span
    ``[t0, t1]`` ends before the test span ``[min t0, max t1]`` starts, or starts more than
    ``embargo`` bars after the test span ends.
    """

    def __init__(self, n_splits: int = 3, embargo: int = 0):
        if int(n_splits) < 2:
            raise ValueError(f"n_splits must be >= 2, got {n_splits!r}")
        if int(embargo) < 0:
            raise ValueError(f"embargo must be >= 0 bars, got {embargo!r}")
        self.n_splits, self.embargo = int(n_splits), int(embargo)

    def split(self, t0, t1) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        t0 = np.asarray(t0, dtype=np.int64)
        t1 = np.asarray(t1, dtype=np.int64)
        if t0.shape != t1.shape or (t1 < t0).any():
            raise ValueError("t0 and t1 must have the same shape and t1 >= t0")
        if (np.diff(t0) < 0).any():
            raise ValueError("events must be sorted by t0")
        if t0.shape[0] < self.n_splits:
            raise ValueError(f"{t0.shape[0]} events cannot make {self.n_splits} folds")
        idx = np.arange(t0.shape[0])
        for test in np.array_split(idx, self.n_splits):
            lo, hi = t0[test].min(), t1[test].max()
            mask = (t1 < lo) | (t0 > hi + self.embargo)
            mask[test] = False
            yield np.flatnonzero(mask), test


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: train on ``train`` events, predict bars ``[start, stop)``."""

    start: int
    stop: int
    train: np.ndarray  # indices into the event arrays


def walk_forward_folds(
    t0, t1, n_bars: int, min_train: int, retrain_every: int, embargo: int, train_bars: int = 0
) -> List[Fold]:
    """The walk-forward schedule over ``n_bars`` bars.

    Events are given by their start ``t0`` and label end ``t1`` (``-1`` = not known within the
    data). Test blocks start at ``min_train + k * retrain_every``; block ``[b, e)`` trains on
    events with ``0 <= t1 < b - embargo`` (and ``t0 >= b - train_bars`` when ``train_bars > 0``).
    """
    if min_train < 1 or retrain_every < 1 or embargo < 0 or train_bars < 0:
        raise ValueError(
            f"need min_train >= 1, retrain_every >= 1, embargo >= 0, train_bars >= 0; got "
            f"{min_train}, {retrain_every}, {embargo}, {train_bars}"
        )
    t0 = np.asarray(t0, dtype=np.int64)
    t1 = np.asarray(t1, dtype=np.int64)
    folds = []
    for b in range(min_train, n_bars, retrain_every):
        ok = (t1 >= 0) & (t1 < b - embargo)
        if train_bars:
            ok &= t0 >= b - train_bars
        folds.append(Fold(b, min(b + retrain_every, n_bars), np.flatnonzero(ok)))
    return folds


# --------------------------------------------------------------------------- models
def make_model(name: str, params: Optional[Mapping[str, Any]] = None, seed: int = 0):
    """A fresh scikit-learn classifier: ``logistic`` (standardised), ``random_forest`` or ``hist_gb``."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name not in DEFAULT_PARAMS:
        raise StrategyError(
            f"strategy ml_classifier: model must be one of {sorted(DEFAULT_PARAMS)}, got {name!r}"
        )
    kw = dict(DEFAULT_PARAMS[name])
    kw.update(dict(params or {}))
    cls = {
        "logistic": LogisticRegression,
        "random_forest": RandomForestClassifier,
        "hist_gb": HistGradientBoostingClassifier,
    }[name]
    allowed = set(cls().get_params())
    bad = sorted(set(kw) - allowed)
    if bad:
        raise StrategyError(f"strategy ml_classifier: params {bad} are not parameters of {cls.__name__}")
    if name != "logistic":
        kw.setdefault("random_state", seed)
    est = cls(**kw)
    return make_pipeline(StandardScaler(), est) if name == "logistic" else est


def _importances(model, names: Sequence[str], X, y, w, seed: int) -> Dict[str, float]:
    est = model.steps[-1][1] if hasattr(model, "steps") else model
    if hasattr(est, "feature_importances_"):
        imp = np.asarray(est.feature_importances_, dtype=float)
    elif hasattr(est, "coef_"):
        imp = np.abs(np.asarray(est.coef_, dtype=float)).ravel()
        imp = imp / imp.sum() if imp.sum() > 0 else imp
    else:  # hist_gb: permutation importance (in-sample, on at most 2000 events)
        from sklearn.inspection import permutation_importance

        k = min(len(y), 2000)
        r = permutation_importance(
            model, X[-k:], y[-k:], n_repeats=3, random_state=seed, sample_weight=w[-k:]
        )
        imp = np.asarray(r.importances_mean, dtype=float)
    return {n: float(v) for n, v in zip(names, imp, strict=True)}


def _scores(y_true, proba, weight=None) -> Dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    out = {"n": int(len(y_true))}
    if len(y_true) == 0:
        return out
    out["accuracy"] = float(accuracy_score(y_true, proba > 0.5, sample_weight=weight))
    if len(np.unique(y_true)) == 2:
        out["auc"] = float(roc_auc_score(y_true, proba, sample_weight=weight))
        out["log_loss"] = float(
            log_loss(y_true, np.clip(proba, 1e-12, 1 - 1e-12), sample_weight=weight, labels=[0, 1])
        )
    return out


def _p_up(model, X) -> np.ndarray:
    classes = list(model.classes_)
    return model.predict_proba(X)[:, classes.index(1)]


# --------------------------------------------------------------------------- the strategy
def feature_columns(frame: pd.DataFrame, wanted: Sequence[str] = ()) -> List[str]:
    """Model inputs: ``wanted`` (validated) or every numeric column that is not a bars-stage column."""
    if wanted:
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise StrategyError(
                f"strategy ml_classifier: features {missing} are not columns of the frame "
                f"(add them to features.specs); columns: {list(frame.columns)}"
            )
        return list(wanted)
    cols = [
        c
        for c in frame.columns
        if c not in NON_FEATURE_COLUMNS
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]
    if not cols:
        raise StrategyError(
            "strategy ml_classifier: the frame has no feature columns; configure features.specs"
        )
    return cols


def bet_size(p: np.ndarray, step: float = 0.0) -> np.ndarray:
    """AFML 10.1 for two classes: ``|2 Phi((p - 0.5) / sqrt(p (1 - p))) - 1|``; NaN p -> 0."""
    from scipy.stats import norm

    p = np.asarray(p, dtype=np.float64)
    out = np.zeros_like(p)
    ok = np.isfinite(p)
    q = np.clip(p[ok], 1e-12, 1 - 1e-12)
    out[ok] = np.abs(2.0 * norm.cdf((q - 0.5) / np.sqrt(q * (1 - q))) - 1.0)
    if step > 0:
        out = np.round(out / step) * step
    return np.clip(out, 0.0, 1.0)


def walk_forward_proba(p: Mapping[str, Any], frame: pd.DataFrame) -> Tuple[np.ndarray, dict]:
    """Out-of-sample ``P(up)`` per bar (NaN where no model or no features) and the model info.

    Model fits run single-threaded (OpenMP/BLAS limited to 1 thread): the many small fits of a
    walk-forward spend more time spinning threads than computing (4-5x slower on 2 busy cores),
    and sweeps parallelise across processes instead.
    """
    import sklearn.ensemble  # noqa: F401  (load the OpenMP runtime before limiting it)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _walk_forward_proba(p, frame)


def _walk_forward_proba(p: Mapping[str, Any], frame: pd.DataFrame) -> Tuple[np.ndarray, dict]:
    n = len(frame)
    lab = p["label"] if isinstance(p["label"], Mapping) else {}
    lab = {
        **{"pt": 1.0, "sl": 1.0, "vertical_bars": 20, "vol_span": 50, "min_ret": 0.0, "zero_vertical": False},
        **lab,
    }
    names = feature_columns(frame, list(p.get("features") or []))
    X_all = frame[names].to_numpy(dtype=np.float64)
    if "close" not in frame.columns:
        raise StrategyError("strategy ml_classifier: the frame has no 'close' column")
    close = frame["close"].to_numpy(dtype=np.float64)
    stride = int(p["event_stride"])
    retrain = int(p["retrain_every"])
    embargo, min_train, train_bars = int(p["embargo_bars"]), int(p["min_train"]), int(p["train_bars"])
    thr = float(p["threshold"])
    for k, v, ok in [
        ("event_stride", stride, stride >= 1),
        ("retrain_every", retrain, retrain >= 1),
        ("embargo_bars", embargo, embargo >= 0),
        ("min_train", min_train, min_train >= 1),
        ("train_bars", train_bars, train_bars >= 0),
        ("threshold", thr, 0.5 <= thr < 1),
        ("exit_threshold", float(p["exit_threshold"]), 1 - thr <= float(p["exit_threshold"]) <= thr),
    ]:
        if not ok:
            raise StrategyError(f"strategy ml_classifier: bad {k} = {v!r}")

    finite = np.isfinite(X_all).all(axis=1)
    target = L.ewm_vol(close, int(lab["vol_span"]))
    ev = np.arange(0, n, stride, dtype=np.int64)
    ev = ev[finite[ev] & np.isfinite(target[ev]) & (target[ev] > 0) & (target[ev] >= float(lab["min_ret"]))]
    t1, ret, barrier = L.triple_barrier(
        close, ev, target[ev], float(lab["pt"]), float(lab["sl"]), int(lab["vertical_bars"])
    )
    label = np.sign(np.nan_to_num(ret)).astype(np.int64)
    if lab["zero_vertical"]:
        label[barrier == 0] = 0
    y_ev = (label > 0).astype(np.int64)
    X_ev = X_all[ev]

    proba = np.full(n, np.nan)
    folds = walk_forward_folds(ev, t1, n, min_train, retrain, embargo, train_bars)
    fold_scores = []
    for k, f in enumerate(folds):
        tr = f.train
        info = {"fold": k, "start": f.start, "stop": f.stop, "n_train": int(tr.size)}
        if tr.size < MIN_TRAIN_EVENTS or np.unique(y_ev[tr]).size < 2:
            info["skipped"] = True
            fold_scores.append(info)
            continue
        # concurrency from what is known at bar f.start: open labels span to f.start - 1
        seen = ev < f.start
        ends = np.where((t1 >= 0) & (t1 < f.start), t1, f.start - 1)[seen]
        conc = L.num_concurrent_events(f.start, ev[seen], ends)
        w = L.average_uniqueness(ev[tr], t1[tr], conc)
        model = make_model(p["model"], p.get("params"), int(p["seed"]))
        model.fit(X_ev[tr], y_ev[tr], **_weight_kw(model, w))
        rows = np.arange(f.start, f.stop)
        rows = rows[finite[rows]]
        if rows.size:
            proba[rows] = _p_up(model, X_all[rows])
        test = (ev >= f.start) & (ev < f.stop) & (t1 >= 0)
        info.update({f"oos_{k2}": v for k2, v in _scores(y_ev[test], proba[ev[test]]).items()})
        fold_scores.append(info)

    model_info = _final_model(p, names, ev, t1, X_ev, y_ev, n)
    model_info["fold_scores"] = fold_scores
    scored = np.isfinite(proba[ev]) & (t1 >= 0)
    model_info["oos"] = _scores(y_ev[scored], proba[ev[scored]])
    model_info["n_events"] = int(ev.size)
    model_info["n_predicted_bars"] = int(np.isfinite(proba).sum())
    return proba, model_info


def _weight_kw(model, w) -> dict:
    if hasattr(model, "steps"):
        return {f"{model.steps[-1][0]}__sample_weight": w}
    return {"sample_weight": w}


def _final_model(p, names, ev, t1, X_ev, y_ev, n) -> dict:
    known = t1 >= 0
    info: Dict[str, Any] = {
        "model_name": p["model"],
        "features": list(names),
        "model": None,
        "importances": {},
        "cv_scores": [],
        "params": {
            k: p[k]
            for k in (
                "model",
                "threshold",
                "exit_threshold",
                "retrain_every",
                "embargo_bars",
                "min_train",
                "train_bars",
            )
        },
    }
    if known.sum() < MIN_TRAIN_EVENTS or np.unique(y_ev[known]).size < 2:
        return info
    e0, e1, X, y = ev[known], t1[known], X_ev[known], y_ev[known]
    conc = L.num_concurrent_events(n, ev, L.open_spans(t1, n))
    w = L.average_uniqueness(e0, e1, conc)
    folds = int(p["cv_folds"])
    if folds >= 2 and len(y) >= folds * MIN_TRAIN_EVENTS:
        for tr, te in PurgedKFold(folds, int(p["embargo_bars"])).split(e0, e1):
            if tr.size < MIN_TRAIN_EVENTS or np.unique(y[tr]).size < 2:
                continue
            m = make_model(p["model"], p.get("params"), int(p["seed"]))
            m.fit(X[tr], y[tr], **_weight_kw(m, w[tr]))
            info["cv_scores"].append({"n_train": int(tr.size), **_scores(y[te], _p_up(m, X[te]), w[te])})
    model = make_model(p["model"], p.get("params"), int(p["seed"]))
    model.fit(X, y, **_weight_kw(model, w))
    info["model"] = model
    info["importances"] = _importances(model, names, X, y, w, int(p["seed"]))
    info["input_example"] = pd.DataFrame(X[:5], columns=list(names))
    return info


def ml_signals(p: Mapping[str, Any], frame: pd.DataFrame) -> Signals:
    """``generate_signals`` for ``ml_classifier`` (``p``: validated strategy params)."""
    proba, info = walk_forward_proba(p, frame)
    thr, ex = float(p["threshold"]), float(p["exit_threshold"])
    ok = np.isfinite(proba)
    q = np.where(ok, proba, 0.5)
    size = None
    if str(p["bet_sizing"]) == "prob":
        size = bet_size(proba, float(p["size_step"]))
    return Signals(
        entries=ok & (q > thr),
        exits=ok & (q < ex),
        short_entries=ok & (q < 1 - thr),
        short_exits=ok & (q > 1 - ex),
        size=size,
        model_info=info,
        indicators={"p_up": proba},
    )
