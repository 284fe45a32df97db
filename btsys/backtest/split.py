"""Walk-forward evaluation: in-sample (IS) and out-of-sample (OOS) windows over the bars.

``backtest.split`` (:class:`btsys.config.SplitConfig`) defines the windows in **bars**:

* ``scheme: rolling`` — every training window has ``train_bars`` bars and slides forward;
* ``scheme: expanding`` — every training window starts at bar 0 and grows;
* each test window has ``test_bars`` bars and starts ``gap_bars`` after its training window ends
  (an embargo against leakage through overlapping labels/indicators);
* consecutive windows move by ``step_bars`` (0 means ``test_bars``: test windows tile without
  overlap). Only complete test windows are produced.

:func:`split_metrics` restricts one backtest's equity curve to those windows and reports the metrics
of each (``is_sharpe_w000``, ``oos_sharpe_w000``, ...) and aggregated (``is_sharpe``, ``oos_sharpe``,
...). The aggregated OOS figures chain the bar returns of the union of all test windows, i.e. the
track record an investor following the walk-forward would have seen. Nothing looks ahead: a bar's
return ``equity[t] / equity[t-1] - 1`` is attributed to the window holding bar ``t``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from btsys.backtest.metrics import compute_metrics
from btsys.errors import ConfigError


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def check_split(split_cfg: Any) -> tuple:
    """``(scheme, train_bars, test_bars, gap_bars, step_bars)`` checked (step 0 -> test_bars)."""
    scheme = str(getattr(_get(split_cfg, "scheme", "rolling"), "value", _get(split_cfg, "scheme", "rolling")))
    train = int(_get(split_cfg, "train_bars", 0) or 0)
    test = int(_get(split_cfg, "test_bars", 0) or 0)
    gap = int(_get(split_cfg, "gap_bars", 0) or 0)
    step = int(_get(split_cfg, "step_bars", 0) or 0)
    if scheme not in ("rolling", "expanding"):
        raise ConfigError(f"backtest.split.scheme must be 'rolling' or 'expanding', got {scheme!r}")
    if train <= 0:
        raise ConfigError(f"backtest.split.train_bars must be > 0, got {train}")
    if test <= 0:
        raise ConfigError(f"backtest.split.test_bars must be > 0, got {test}")
    if gap < 0:
        raise ConfigError(f"backtest.split.gap_bars must be >= 0, got {gap}")
    if step < 0:
        raise ConfigError(f"backtest.split.step_bars must be >= 0, got {step}")
    return scheme, train, test, gap, step or test


def walk_forward_windows(n_bars: int, split_cfg: Any) -> list[tuple[slice, slice]]:
    """IS/OOS bar windows ``[(train_slice, test_slice), ...]`` for a series of ``n_bars`` bars.

    Raises
    ------
    ConfigError
        naming the ``backtest.split.*`` key that is invalid, or when not even one window fits.
    """
    scheme, train, test, gap, step = check_split(split_cfg)
    if n_bars < 0:
        raise ValueError(f"n_bars must be >= 0, got {n_bars}")
    out = []
    k = 0
    while True:
        train_end = train + k * step
        test_start = train_end + gap
        test_end = test_start + test
        if test_end > n_bars:
            break
        train_start = 0 if scheme == "expanding" else train_end - train
        out.append((slice(train_start, train_end), slice(test_start, test_end)))
        k += 1
    if not out:
        raise ConfigError(
            f"backtest.split: no complete window fits in {n_bars} bars (train_bars={train}, "
            f"gap_bars={gap}, test_bars={test} need {train + gap + test})"
        )
    return out


def _bar_returns(equity: np.ndarray) -> np.ndarray:
    """Return of each bar; bar 0 has none (0)."""
    eq = np.asarray(equity, dtype=np.float64)
    r = np.zeros(len(eq))
    if len(eq) > 1:
        prev = eq[:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            r[1:] = np.where(prev != 0, eq[1:] / prev - 1.0, 0.0)
    return r


#: the figures of a window (the backtest's own metric definitions, :mod:`btsys.backtest.metrics`)
SEGMENT_METRICS = ("sharpe", "sortino", "total_return", "annual_return", "max_drawdown")


def _segment_metrics(ts: np.ndarray, bar_ret: np.ndarray, idx: np.ndarray) -> dict:
    """Metrics of the curve compounded from the returns of bars ``idx`` (sorted, unique), starting
    at 1 just before the first of them: :func:`~btsys.backtest.metrics.compute_metrics` of that
    curve, so a window's Sharpe is the Sharpe of a run over the window's bars (daily returns, a
    calendar day between two windows without bars of the union counting as a flat day)."""
    if len(idx) == 0:
        return {**dict.fromkeys(SEGMENT_METRICS, float("nan")), "n_bars": 0}
    curve = np.cumprod(1.0 + bar_ret[idx])
    m = compute_metrics(ts[idx], curve, 1.0)
    return {**{k: m[k] for k in SEGMENT_METRICS}, "n_bars": int(len(idx))}


def _ts_of(result: Any, n: int) -> np.ndarray:
    ts = getattr(result, "ts", None)
    if ts is None:  # never one bar per day: the figures would be silently wrong
        raise ValueError(
            "backtest.split: the result's bars have no times (simulate without `ts`, a DatetimeIndex "
            "or `freq=`); the walk-forward figures are daily (Sharpe, annual return) and need them"
        )
    ts = np.asarray(ts, dtype=np.int64)
    if len(ts) != n:
        raise ValueError(f"result.ts has {len(ts)} values but result.equity has {n}")
    return ts


def split_table(result: Any, split_cfg: Any) -> pd.DataFrame:
    """One row per walk-forward window: bar ranges, times and IS/OOS metrics."""
    eq = np.asarray(result.equity, dtype=np.float64)
    ts = _ts_of(result, len(eq))
    r = _bar_returns(eq)
    rows = []
    for i, (tr, te) in enumerate(walk_forward_windows(len(eq), split_cfg)):
        m_is = _segment_metrics(ts, r, np.arange(tr.start, tr.stop))
        m_oos = _segment_metrics(ts, r, np.arange(te.start, te.stop))
        row = {
            "window": i,
            "train_start": tr.start,
            "train_stop": tr.stop,
            "test_start": te.start,
            "test_stop": te.stop,
            "train_ts_start": int(ts[tr.start]),
            "test_ts_start": int(ts[te.start]),
            "test_ts_end": int(ts[te.stop - 1]),
        }
        row.update({f"is_{k}": v for k, v in m_is.items() if k != "n_bars"})
        row.update({f"oos_{k}": v for k, v in m_oos.items() if k != "n_bars"})
        rows.append(row)
    return pd.DataFrame(rows)


def walk_forward_report(result: Any, split_cfg: Any):
    """``(per-window table or None, aggregate metrics)`` a run reports for ``backtest.split``: the
    table of a walk-forward optimisation (``result.walk_forward``), else the IS/OOS windows of the
    run's own equity (:func:`split_table`, :func:`split_metrics`). The table's figures are logged
    as metric steps (one key per figure, step = window), not one key per window."""
    table = getattr(result, "walk_forward", None)
    if table is not None:
        return table, dict(getattr(result, "extra_metrics", {}) or {})
    if split_cfg is None or not bool(_get(split_cfg, "enabled", False)):
        return None, {}
    return split_table(result, split_cfg), split_metrics(result, split_cfg)


def split_metrics(result: Any, split_cfg: Any) -> dict:
    """IS and OOS metrics of ``result``'s equity over all walk-forward windows.

    Keys: aggregated ``is_<m>`` / ``oos_<m>`` for ``m`` in sharpe, sortino, total_return,
    annual_return, max_drawdown over the union of the IS / OOS bars (returns chained),
    ``is_sharpe_mean`` / ``oos_sharpe_mean`` (mean over windows), ``wf_n_windows`` and
    ``wf_efficiency`` (``oos_sharpe / is_sharpe``, NaN when undefined). Per-window figures:
    :func:`split_table`.
    """
    eq = np.asarray(result.equity, dtype=np.float64)
    ts = _ts_of(result, len(eq))
    r = _bar_returns(eq)
    wins = walk_forward_windows(len(eq), split_cfg)
    out: dict = {"wf_n_windows": len(wins)}
    is_idx, oos_idx = [], []
    per_is, per_oos = [], []
    for tr, te in wins:
        a, b = np.arange(tr.start, tr.stop), np.arange(te.start, te.stop)
        is_idx.append(a)
        oos_idx.append(b)
        per_is.append(_segment_metrics(ts, r, a)["sharpe"])
        per_oos.append(_segment_metrics(ts, r, b)["sharpe"])
    agg_is = _segment_metrics(ts, r, np.unique(np.concatenate(is_idx)))
    agg_oos = _segment_metrics(ts, r, np.unique(np.concatenate(oos_idx)))
    for k in SEGMENT_METRICS:
        out[f"is_{k}"] = agg_is[k]
        out[f"oos_{k}"] = agg_oos[k]

    def _nanmean(v):
        v = np.asarray(v, dtype=np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else float("nan")

    out["is_sharpe_mean"] = _nanmean(per_is)
    out["oos_sharpe_mean"] = _nanmean(per_oos)
    s_is, s_oos = out["is_sharpe"], out["oos_sharpe"]
    out["wf_efficiency"] = (
        float(s_oos / s_is) if (math.isfinite(s_is) and math.isfinite(s_oos) and s_is != 0) else float("nan")
    )
    return out
