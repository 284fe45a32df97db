"""Real BacktestResults for the report tests (no test functions here): ``make_result`` runs
``btsys.backtest.simulate`` (an MA cross with fees) on a seeded random-walk price path."""

from __future__ import annotations

import numpy as np

from btsys.backtest import simulate

HOUR_US = 3_600_000_000
T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z


def prices(n: int, seed: int, bar_us: int = HOUR_US, vol: float = 0.01, tick: float = 0.0):
    """A seeded random-walk close around 100 (on a ``tick`` price grid when ``tick`` > 0)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    if tick > 0:
        close = np.round(close / tick) * tick
    ts = T0 + np.arange(n, dtype=np.int64) * bar_us
    return ts, close


def _sma(x, w):
    c = np.cumsum(np.r_[0.0, x])
    out = np.full(len(x), np.nan)
    out[w - 1 :] = (c[w:] - c[:-w]) / w
    return out


def make_result(
    fast: int = 10, slow: int = 50, n: int = 24 * 120, seed: int = 1, bar_us: int = HOUR_US, tick: float = 0.0
):
    """A real backtest of an MA cross over ``n`` bars (default 120 days of hourly bars) of
    :func:`prices`."""
    ts, close = prices(n, seed, bar_us, tick=tick)
    f, s = _sma(close, fast), _sma(close, slow)
    above = np.nan_to_num(f > s, nan=0).astype(bool) & ~np.isnan(s)
    prev = np.r_[False, above[:-1]]
    return simulate(close, above & ~prev, ~above & prev, ts=ts, fees=0.0005)
