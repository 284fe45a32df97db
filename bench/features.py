"""Benchmark: the feature library (numba) against pandas doing the same work, in one run.

    .venv/bin/python bench/features.py [--bars 1000000] [--window 20]

Prints, per feature and for the whole set, bars/s of btsys's kernels next to a pandas
implementation of the same feature where pandas has one (rolling/ewm), the peak extra memory
(tracemalloc, numpy allocations included) and, for reference, a bare numba loop (one pass summing
the close column) on the same data. Also times triple-barrier labels and uniqueness weights.
Compilation is excluded (one warm-up call on small data first; kernels are cache=True).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
import tracemalloc

import numpy as np
import pandas as pd
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)

from btsys.features import FEATURES, compute_feature, compute_features  # noqa: E402
from btsys.signals import labels as L  # noqa: E402


def make_bars(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.001, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.001, n)))
    vol = rng.uniform(1, 10, n)
    ts = np.arange(n, dtype=np.int64) * 60_000_000
    return pd.DataFrame(
        {
            "ts_open": ts,
            "ts_close": ts + 59_999_999,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": vol,
            "quote_volume": vol * close,
            "buy_volume": vol * rng.uniform(0, 1, n),
            "n_ticks": np.ones(n, np.int64),
            "vwap": close,
        }
    )


def _rsi_pandas(c: pd.Series, w: int) -> pd.Series:
    d = c.diff()
    g = d.clip(lower=0).ewm(alpha=1 / w, adjust=False).mean()
    lo = (-d.clip(upper=0)).ewm(alpha=1 / w, adjust=False).mean()
    return 100 - 100 / (1 + g / lo)


def _signed_volume(b: pd.DataFrame) -> pd.Series:
    return 2 * b["buy_volume"] - b["volume"]


#: The features pandas computes directly: ``fn -> (bars, close, log returns, window) -> series``.
PANDAS = {
    "log_return": lambda b, c, r, w: np.log(c / c.shift(w)),
    "realized_vol": lambda b, c, r, w: np.sqrt((r * r).rolling(w).mean()),
    "parkinson_vol": lambda b, c, r, w: np.sqrt(
        (np.log(b["high"] / b["low"]) ** 2).rolling(w).mean() / (4 * math.log(2))
    ),
    "sma": lambda b, c, r, w: c.rolling(w).mean(),
    "bb_mid": lambda b, c, r, w: c.rolling(w).mean(),
    "ema": lambda b, c, r, w: c.ewm(span=w, adjust=False).mean(),
    "bb_upper": lambda b, c, r, w: c.rolling(w).mean() + 2 * c.rolling(w).std(ddof=0),
    "rsi": lambda b, c, r, w: _rsi_pandas(c, w),
    "taker_buy_ratio": lambda b, c, r, w: b["buy_volume"].rolling(w).sum() / b["volume"].rolling(w).sum(),
    "vpin": lambda b, c, r, w: _signed_volume(b).abs().rolling(w).sum() / b["volume"].rolling(w).sum(),
    "roll_spread": lambda b, c, r, w: (
        2 * np.sqrt((-c.diff().rolling(w).cov(c.diff().shift(1))).clip(lower=0))
    ),
    "kyle_lambda": lambda b, c, r, w: (
        c.diff().rolling(w).cov(_signed_volume(b)) / _signed_volume(b).rolling(w).var()
    ),
}


def pandas_feature(b: pd.DataFrame, fn: str, w: int):
    """The same feature with pandas (None where pandas has no direct equivalent)."""
    if fn not in PANDAS:
        return None
    c = b["close"]
    return PANDAS[fn](b, c, np.log(c).diff(), w)


@njit(cache=True)
def _sum_nb(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s


def timed(f, repeat: int = 3):
    best, peak = math.inf, 0
    for _ in range(repeat):
        gc.collect()
        tracemalloc.start()
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--window", type=int, default=20)
    a = parse_args(ap, quick={"bars": 20_000})
    n, w = a.bars, a.window
    small = make_bars(500)
    for fn in FEATURES:  # compile / load the numba cache
        compute_feature(
            small, fn, 5 if fn.startswith("macd") else 3, {"fast": 2.0} if fn.startswith("macd") else {}
        )
    _sum_nb(small["close"].to_numpy())
    bars = make_bars(n)
    mb = 1024**2
    close = bars["close"].to_numpy()
    t_ref, _ = timed(lambda: _sum_nb(close), 5)
    print(f"{n:,} bars, window {w}; machine: {os.cpu_count()} cores")
    print(f"reference: bare numba pass over close  {n / t_ref / 1e6:9.1f} M bars/s")
    print(
        f"{'feature':18s} {'btsys M bars/s':>15s} {'pandas M bars/s':>16s} {'speed-up':>9s} "
        f"{'btsys peak MB':>14s} {'pandas peak MB':>15s}"
    )
    specs = []
    for fn in sorted(FEATURES):
        ww = max(w, 13) + 1 if fn.startswith("macd") else w
        params = {"fast": 12.0} if fn.startswith("macd") else {}
        specs.append({"name": f"f_{fn}", "fn": fn, "window": ww, "params": params})
        tb, mb_b = timed(lambda fn=fn, ww=ww, params=params: compute_feature(bars, fn, ww, params))
        ref = pandas_feature(bars, fn, ww)
        if ref is not None:
            got = compute_feature(bars, fn, ww, params)
            if fn not in ("ema", "rsi"):  # pandas seeds EMA/Wilder differently; they converge
                np.testing.assert_allclose(got[ww + 1 :], np.asarray(ref)[ww + 1 :], rtol=1e-6, atol=1e-9)
            tp, mb_p = timed(lambda fn=fn, ww=ww: pandas_feature(bars, fn, ww))
            print(
                f"{fn:18s} {n / tb / 1e6:15.1f} {n / tp / 1e6:16.1f} {tp / tb:8.1f}x {mb_b / mb:14.0f} "
                f"{mb_p / mb:15.0f}"
            )
        else:
            print(f"{fn:18s} {n / tb / 1e6:15.1f} {'-':>16s} {'':9s} {mb_b / mb:14.0f}")
    t_all, m_all = timed(lambda: compute_features(bars, specs), 2)
    print(
        f"whole set ({len(specs)} features) via compute_features: {t_all:.2f} s = "
        f"{n / t_all / 1e6:.2f} M bars/s "
        f"({n * len(specs) / t_all / 1e6:.0f} M feature values/s), peak {m_all / mb:.0f} MB "
        f"(the frame itself: {n * (11 + len(specs)) * 8 / mb:.0f} MB)"
    )

    vol = L.ewm_vol(close, 50)
    L.triple_barrier_labels(close[:1000], vertical_bars=10, vol_span=20)
    t_tb, m_tb = timed(lambda: L.triple_barrier_labels(close, target=vol, vertical_bars=50), 2)
    lab = L.triple_barrier_labels(close, target=vol, vertical_bars=50)
    t_u, _ = timed(lambda: L.uniqueness_weights(n, lab["t0"].to_numpy(), lab["t1"].to_numpy()), 2)
    print(
        f"triple-barrier labels, every bar an event, vertical 50: {n / t_tb / 1e6:.1f} M events/s "
        f"(peak {m_tb / mb:.0f} MB); uniqueness weights: {n / t_u / 1e6:.1f} M events/s"
    )


if __name__ == "__main__":
    main()
