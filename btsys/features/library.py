"""The feature library: named feature functions over the bar table, each configured by a spec.

A *spec* is ``{name, fn, window, params}`` (:class:`btsys.config.FeatureSpec`): ``fn`` selects a
function of :data:`FEATURES`, ``window`` is its look-back in bars and ``params`` its extra float
parameters (for example ``{k: 2.0}`` for Bollinger bands). The output column is ``name``.

Every feature at bar ``t`` uses bars ``<= t`` only (no look-ahead); values are NaN during the
warm-up. Bars are irregular in time (dollar bars), so volatilities are *per bar* unless a spec
passes ``periods_per_year`` (bars per 365-day year) to annualise them.

=================  =========================================================  ==================
fn                 value at bar t                                             params (default)
=================  =========================================================  ==================
log_return         ln(C_t / C_{t-w})
realized_vol       sqrt(mean of r^2 over the last w 1-bar log returns)        periods_per_year
parkinson_vol      sqrt(mean(ln(H/L)^2) / (4 ln 2))                           periods_per_year
garman_klass_vol   sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2))         periods_per_year
sma                mean of C over w bars
ema                EMA of C, alpha = 2/(w+1), seeded with the SMA of w bars
bb_mid/upper/lower SMA_w(C), +/- k * population std of C over w bars          k (2)
bb_pctb            (C - lower) / (upper - lower)                              k (2)
bb_width           (upper - lower) / mid                                      k (2)
rsi                Wilder RSI over w changes (0..100)
macd               EMA_fast(C) - EMA_w(C)  (w is the slow span)               fast (12)
macd_signal        EMA_signal(macd)                                           fast (12), signal (9)
macd_hist          macd - macd_signal                                         fast (12), signal (9)
atr                Wilder average true range                                  relative (0: price, 1: / C)
vwap_dev           C / (sum quote_volume / sum volume over w) - 1
taker_buy_ratio    sum buy_volume / sum volume over w
ofi                order-flow imbalance sum(B - S) / sum(B + S), S = V - B
vpin               sum |B - S| / sum V over w bars (taker-side classification)
kyle_lambda        OLS slope of dC on signed volume (B - S) over w bars
amihud             mean |r| / quote_volume over w bars, times scale           scale (1e6)
roll_spread        2 sqrt(max(-cov(dC_t, dC_{t-1}), 0)) over w pairs
=================  =========================================================  ==================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping

import numpy as np
import pandas as pd

from btsys.bars.api import BAR_SCHEMA
from btsys.errors import ConfigError
from btsys.features import _nb

#: What the bars stage writes (the bar table and its extras): never model inputs by default.
NON_FEATURE_COLUMNS = list(BAR_SCHEMA.names)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FeatureError(ConfigError):
    """A bad feature spec or bar table; the message names the spec, key or column."""


@dataclass(frozen=True)
class FeatureDef:
    fn: Callable[[Mapping[str, np.ndarray], int, Dict[str, float]], np.ndarray]
    columns: tuple  # bar columns it reads
    params: Dict[str, float]  # allowed params and their defaults
    min_window: int = 1


def _ann(x: np.ndarray, p: Dict[str, float]) -> np.ndarray:
    ppy = p["periods_per_year"]
    return x * math.sqrt(ppy) if ppy > 0 else x


def _bb(c, w, p):
    mid = _nb.rolling_mean_nb(c, w)
    sd = _nb.rolling_std_nb(c, w, 0)
    return mid, mid + p["k"] * sd, mid - p["k"] * sd


def _bb_memo(b, w, p):
    """Bollinger bands, shared by the bb_* specs of one compute_features call."""
    key = ("_bb", w, p["k"])
    if key not in b:
        b[key] = _bb(b["close"], w, p)
    return b[key]


def _macd(c, w, p):
    fast = int(p["fast"])
    if not 1 <= fast < w:
        raise FeatureError(f"macd: params.fast={fast} must be >= 1 and < window (slow) = {w}")
    return _nb.ema_nb(c, fast) - _nb.ema_nb(c, w)


def _macd_signal(c, w, p):
    return _nb.ema_nb(_macd(c, w, p), int(p["signal"]))


def _pctb(b, w, p):
    c = b["close"]
    mid, up, lo = _bb_memo(b, w, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (c - lo) / (up - lo)
    out[~np.isfinite(out)] = np.nan
    return out


def _width(b, w, p):
    mid, up, lo = _bb_memo(b, w, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (up - lo) / mid


def _signed_volume(b):
    return 2.0 * b["buy_volume"] - b["volume"]


def _amihud(b, w, p):
    r = np.abs(_nb.log_return_nb(b["close"], 1))
    qv = b["quote_volume"]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(qv > 0, r / qv, np.nan)
    return _nb.rolling_mean_nb(x, w) * p["scale"]


def _kyle(b, w, p):
    c = b["close"]
    dp = np.full(c.shape[0], np.nan)
    dp[1:] = np.diff(c)
    return _nb.rolling_slope_nb(dp, _signed_volume(b), w)


def _atr(b, w, p):
    a = _nb.atr_nb(b["high"], b["low"], b["close"], w)
    return a / b["close"] if p["relative"] else a


_ANN = {"periods_per_year": 0.0}

#: fn name -> definition. Add a feature by adding a kernel in ``_nb.py`` and an entry here.
FEATURES: Dict[str, FeatureDef] = {
    "log_return": FeatureDef(lambda b, w, p: _nb.log_return_nb(b["close"], w), ("close",), {}),
    "realized_vol": FeatureDef(
        lambda b, w, p: _ann(_nb.realized_vol_nb(b["close"], w), p), ("close",), dict(_ANN)
    ),
    "parkinson_vol": FeatureDef(
        lambda b, w, p: _ann(_nb.parkinson_vol_nb(b["high"], b["low"], w), p), ("high", "low"), dict(_ANN)
    ),
    "garman_klass_vol": FeatureDef(
        lambda b, w, p: _ann(_nb.garman_klass_vol_nb(b["open"], b["high"], b["low"], b["close"], w), p),
        ("open", "high", "low", "close"),
        dict(_ANN),
    ),
    "sma": FeatureDef(lambda b, w, p: _nb.rolling_mean_nb(b["close"], w), ("close",), {}),
    "ema": FeatureDef(lambda b, w, p: _nb.ema_nb(b["close"], w), ("close",), {}),
    "bb_mid": FeatureDef(lambda b, w, p: _bb_memo(b, w, p)[0], ("close",), {"k": 2.0}),
    "bb_upper": FeatureDef(lambda b, w, p: _bb_memo(b, w, p)[1], ("close",), {"k": 2.0}),
    "bb_lower": FeatureDef(lambda b, w, p: _bb_memo(b, w, p)[2], ("close",), {"k": 2.0}),
    "bb_pctb": FeatureDef(_pctb, ("close",), {"k": 2.0}),
    "bb_width": FeatureDef(_width, ("close",), {"k": 2.0}),
    "rsi": FeatureDef(lambda b, w, p: _nb.rsi_nb(b["close"], w), ("close",), {}),
    "macd": FeatureDef(lambda b, w, p: _macd(b["close"], w, p), ("close",), {"fast": 12.0}, 2),
    "macd_signal": FeatureDef(
        lambda b, w, p: _macd_signal(b["close"], w, p), ("close",), {"fast": 12.0, "signal": 9.0}, 2
    ),
    "macd_hist": FeatureDef(
        lambda b, w, p: _macd(b["close"], w, p) - _macd_signal(b["close"], w, p),
        ("close",),
        {"fast": 12.0, "signal": 9.0},
        2,
    ),
    "atr": FeatureDef(_atr, ("high", "low", "close"), {"relative": 0.0}),
    "vwap_dev": FeatureDef(
        lambda b, w, p: b["close"] / _nb.ratio_of_sums_nb(b["quote_volume"], b["volume"], w) - 1.0,
        ("close", "quote_volume", "volume"),
        {},
    ),
    "taker_buy_ratio": FeatureDef(
        lambda b, w, p: _nb.ratio_of_sums_nb(b["buy_volume"], b["volume"], w), ("buy_volume", "volume"), {}
    ),
    "ofi": FeatureDef(
        lambda b, w, p: _nb.ratio_of_sums_nb(_signed_volume(b), b["volume"], w), ("buy_volume", "volume"), {}
    ),
    "vpin": FeatureDef(
        lambda b, w, p: _nb.ratio_of_sums_nb(np.abs(_signed_volume(b)), b["volume"], w),
        ("buy_volume", "volume"),
        {},
    ),
    "kyle_lambda": FeatureDef(_kyle, ("close", "buy_volume", "volume"), {}, 2),
    "amihud": FeatureDef(_amihud, ("close", "quote_volume"), {"scale": 1e6}),
    "roll_spread": FeatureDef(lambda b, w, p: _nb.roll_spread_nb(b["close"], w), ("close",), {}, 2),
}


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class Spec:
    name: str
    fn: str
    window: int
    params: Dict[str, float]


def _get(spec: Any, key: str, default: Any = None) -> Any:
    if isinstance(spec, Mapping):
        return spec.get(key, default)
    try:
        return spec[key]  # DictConfig
    except (LookupError, TypeError):  # no such key; not subscriptable (a dataclass)
        return getattr(spec, key, default)


def normalize_spec(spec: Any, where: str = "spec") -> Spec:
    """Validate one spec (config node, dataclass or dict) and fill the default params."""
    name, fn = _get(spec, "name"), _get(spec, "fn")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FeatureError(f"features.specs {where}: name must be an identifier, got {name!r}")
    where = f"{where} ({name})"
    if name in NON_FEATURE_COLUMNS:
        raise FeatureError(f"features.specs {where}: name {name!r} clashes with a bar-table column")
    if fn not in FEATURES:
        raise FeatureError(f"features.specs {where}: unknown fn {fn!r}; known: {sorted(FEATURES)}")
    d = FEATURES[fn]
    window = _get(spec, "window", 14)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < d.min_window:
        raise FeatureError(
            f"features.specs {where}: window must be an integer >= {d.min_window}, got {window!r}"
        )
    given = _get(spec, "params", None) or {}
    given = dict(given.items()) if hasattr(given, "items") else given
    unknown = set(given) - set(d.params)
    if unknown:
        raise FeatureError(
            f"features.specs {where}: unknown params {sorted(unknown)} for fn {fn!r}; "
            f"allowed: {sorted(d.params) or 'none'}"
        )
    params = dict(d.params)
    for k, v in given.items():
        try:
            params[k] = float(v)
        except (TypeError, ValueError):
            raise FeatureError(f"features.specs {where}: params.{k} must be a number, got {v!r}") from None
    for k in ("fast", "signal"):
        if k in params and (params[k] < 1 or params[k] != int(params[k])):
            raise FeatureError(
                f"features.specs {where}: params.{k} must be a positive integer, got {params[k]!r}"
            )
    return Spec(name, fn, int(window), params)


def normalize_specs(specs: Iterable[Any]) -> List[Spec]:
    out = [normalize_spec(s, f"[{i}]") for i, s in enumerate(specs or [])]
    seen = set()
    for s in out:
        if s.name in seen:
            raise FeatureError(f"features.specs: duplicate name {s.name!r}")
        seen.add(s.name)
    return out


def _bar_arrays(bars: pd.DataFrame, columns: Iterable[str], what: str) -> Dict[str, np.ndarray]:
    arrays = {}
    for c in columns:
        if c not in bars.columns:
            raise FeatureError(f"{what}: the bar table has no column {c!r} (columns: {list(bars.columns)})")
        a = np.ascontiguousarray(bars[c].to_numpy(dtype=np.float64))
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise FeatureError(f"{what}: column {c!r} has a non-finite value at row {int(bad[0])}")
        if c in ("open", "high", "low", "close") and (a <= 0).any():
            raise FeatureError(
                f"{what}: column {c!r} has a non-positive price at row {int(np.flatnonzero(a <= 0)[0])}"
            )
        arrays[c] = a
    return arrays


def compute_feature(
    bars: pd.DataFrame,
    fn: str,
    window: int,
    params: Mapping[str, float] | None = None,
    name: str | None = None,
) -> np.ndarray:
    """One feature as a float64 array aligned to ``bars`` (validated like a spec)."""
    spec = normalize_spec(
        {"name": name or f"{fn}_{window}", "fn": fn, "window": window, "params": dict(params or {})}
    )
    return _compute(bars, spec)


def _compute(bars: pd.DataFrame, spec: Spec, cache: Dict[Any, Any] | None = None) -> np.ndarray:
    d = FEATURES[spec.fn]
    arrays = _bar_arrays(bars, d.columns, f"feature {spec.name!r} (fn {spec.fn})") if cache is None else cache
    if cache is not None:
        for c in d.columns:
            if c not in arrays:
                arrays.update(_bar_arrays(bars, [c], f"feature {spec.name!r} (fn {spec.fn})"))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(d.fn(arrays, spec.window, spec.params), dtype=np.float64)
    return out


def compute_features(bars: pd.DataFrame, specs: Iterable[Any]) -> pd.DataFrame:
    """The bar table plus one float64 column per spec (named ``spec.name``).

    Parameters
    ----------
    bars : pandas.DataFrame
        Bar table of one symbol, ordered by ``ts_open`` (docs/DESIGN.md columns).
    specs : iterable
        ``features.specs``: config nodes or dicts with ``name``, ``fn``, ``window``, ``params``.
    """
    norm = normalize_specs(specs)
    if "ts_open" in bars.columns and len(bars) > 1:
        ts = bars["ts_open"].to_numpy()
        bad = np.flatnonzero(np.diff(ts) < 0)
        if bad.size:
            raise FeatureError(f"bar table is not ordered by ts_open at row {int(bad[0]) + 1}")
    cache: Dict[Any, Any] = {}
    out = bars.copy()
    for s in norm:  # column inserts: ~20x faster than one pd.concat of the new columns (pandas 2.3)
        out[s.name] = _compute(bars, s, cache)
    return out


_AUTO_RE = re.compile(r"^([a-z_]+?)_(\d+)$")


def parse_feature_name(name: str) -> Spec | None:
    """``"<fn>_<window>"`` (e.g. ``sma_200``, ``bb_upper_20``) as a spec with default params, else None."""
    m = _AUTO_RE.match(name)
    if not m or m.group(1) not in FEATURES:
        return None
    try:
        return normalize_spec({"name": name, "fn": m.group(1), "window": int(m.group(2))})
    except FeatureError:
        return None
