"""Numba kernels of the feature library.

Every kernel takes float64 numpy arrays (one value per bar, in bar order) and returns a float64
array of the same length. Values are NaN until the window is full (the *warm-up*). Each output
value at bar ``t`` is a function of inputs at bars ``<= t`` only: kernels run one forward pass
and never look at a later bar, so truncating or altering the data after ``t`` leaves every value
at or before ``t`` bit-for-bit unchanged (the look-ahead tests check this).

Rolling sums are kept with add/subtract updates and recomputed exactly every ``_RESYNC`` bars to
bound floating-point drift; the recomputation depends only on the bar index, so it stays causal.
Rolling (co)variances do the same on deviations from the window mean of the last exact
recomputation, which keeps them accurate at large price offsets (BTC at 1e5 with a standard
deviation of 10) while costing O(n) instead of O(n * window).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_RESYNC = 4096
_RESYNC_MOMENTS = 256  # the reference point drifts away with the price; re-centre often


@njit(cache=True)
def rolling_sum_nb(x, window):
    """Rolling sum over ``window`` bars; NaN if any value in the window is NaN or it is not full."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    s = 0.0
    n_nan = 0
    for i in range(n):
        v = x[i]
        if np.isnan(v):
            n_nan += 1
        else:
            s += v
        if i >= window:
            old = x[i - window]
            if np.isnan(old):
                n_nan -= 1
            else:
                s -= old
        if i >= window - 1:
            if i % _RESYNC == 0:
                s = 0.0
                for j in range(i - window + 1, i + 1):
                    if not np.isnan(x[j]):
                        s += x[j]
            if n_nan == 0:
                out[i] = s
    return out


@njit(cache=True)
def rolling_mean_nb(x, window):
    out = rolling_sum_nb(x, window)
    return out / window


@njit(cache=True)
def _window_moments_nb(x, y, lo, hi):
    """Exact (two-pass) means and centred sums of one window [lo, hi]: mx, my, sxx, sxy."""
    w = hi - lo + 1
    mx = 0.0
    my = 0.0
    for j in range(lo, hi + 1):
        mx += x[j]
        my += y[j]
    mx /= w
    my /= w
    sxx = 0.0
    sxy = 0.0
    for j in range(lo, hi + 1):
        dx = x[j] - mx
        sxx += dx * dx
        sxy += dx * (y[j] - my)
    return mx, my, sxx, sxy


@njit(cache=True)
def rolling_moments_nb(x, y, window):
    """Rolling ``sum (x - mean x)^2`` and ``sum (x - mean x)(y - mean y)`` over ``window`` bars.

    O(n): sums of the deviations from a reference point (the window means at the last exact
    resynchronisation) are updated by adding the new and removing the old bar; every ``_RESYNC_MOMENTS``
    bars (and after any NaN leaves the window) they are recomputed exactly with two passes. The
    shift keeps the one-pass formula free of cancellation at price levels like 1e5; resyncing
    depends only on positions, so values stay causal. NaN while a NaN is in the window.
    """
    n = x.shape[0]
    sxx_out = np.full(n, np.nan)
    sxy_out = np.full(n, np.nan)
    last_nan = -1
    rx = 0.0
    ry = 0.0
    a = 0.0  # sum (x - rx)
    b = 0.0  # sum (y - ry)
    aa = 0.0  # sum (x - rx)^2
    ab = 0.0  # sum (x - rx)(y - ry)
    valid = False
    since = 0
    for i in range(n):
        if np.isnan(x[i]) or np.isnan(y[i]):
            last_nan = i
        if i < window - 1 or last_nan > i - window:
            valid = False
            continue
        if not valid or since >= _RESYNC_MOMENTS:
            # re-centre on the (rounded) window means and recompute the shifted sums exactly; a and
            # b are summed, not assumed 0: the rounding of the means matters at 1e5 price levels
            rx, ry, sxx, sxy = _window_moments_nb(x, y, i - window + 1, i)
            a = 0.0
            b = 0.0
            aa = 0.0
            ab = 0.0
            for j in range(i - window + 1, i + 1):
                dx = x[j] - rx
                dy = y[j] - ry
                a += dx
                b += dy
                aa += dx * dx
                ab += dx * dy
            sxx = aa - a * a / window
            sxy = ab - a * b / window
            valid = True
            since = 0
        else:
            dx = x[i] - rx
            dy = y[i] - ry
            ox = x[i - window] - rx
            oy = y[i - window] - ry
            a += dx - ox
            b += dy - oy
            aa += dx * dx - ox * ox
            ab += dx * dy - ox * oy
            since += 1
            sxx = aa - a * a / window
            sxy = ab - a * b / window
            if sxx < 1e-13 * aa:  # rounding noise of a (near) constant window
                sxx = 0.0
        sxx_out[i] = max(sxx, 0.0)
        sxy_out[i] = sxy
    return sxx_out, sxy_out


@njit(cache=True)
def rolling_std_nb(x, window, ddof):
    """Rolling standard deviation; NaN while any window value is NaN."""
    if window - ddof <= 0:
        return np.full(x.shape[0], np.nan)
    sxx, _ = rolling_moments_nb(x, x, window)
    return np.sqrt(sxx / (window - ddof))


@njit(cache=True)
def rolling_cov_nb(x, y, window, ddof):
    """Rolling covariance of two aligned series."""
    if window - ddof <= 0:
        return np.full(x.shape[0], np.nan)
    _, sxy = rolling_moments_nb(x, y, window)
    return sxy / (window - ddof)


@njit(cache=True)
def rolling_slope_nb(y, x, window):
    """Rolling OLS slope of ``y`` on ``x`` (with intercept): cov(x, y) / var(x); NaN if var(x) == 0."""
    sxx, sxy = rolling_moments_nb(x, y, window)
    out = np.full(x.shape[0], np.nan)
    for i in range(x.shape[0]):
        if sxx[i] > 0.0:
            out[i] = sxy[i] / sxx[i]
    return out


@njit(cache=True)
def log_return_nb(close, window):
    """``ln(close[t] / close[t - window])``."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    for i in range(window, n):
        out[i] = math.log(close[i] / close[i - window])
    return out


@njit(cache=True)
def realized_vol_nb(close, window):
    """Root mean square of the 1-bar log returns over ``window`` returns (zero-mean convention)."""
    r = log_return_nb(close, 1)
    return np.sqrt(rolling_mean_nb(r * r, window))


@njit(cache=True)
def parkinson_vol_nb(high, low, window):
    """Parkinson (1980): ``sqrt(mean(ln(H/L)^2) / (4 ln 2))`` per bar."""
    hl = np.log(high / low)
    return np.sqrt(rolling_mean_nb(hl * hl, window) / (4.0 * math.log(2.0)))


@njit(cache=True)
def garman_klass_vol_nb(open_, high, low, close, window):
    """Garman-Klass (1980): ``sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2))`` per bar."""
    hl = np.log(high / low)
    co = np.log(close / open_)
    x = 0.5 * hl * hl - (2.0 * math.log(2.0) - 1.0) * co * co
    m = rolling_mean_nb(x, window)
    out = np.full(m.shape[0], np.nan)
    for i in range(m.shape[0]):
        if not np.isnan(m[i]):
            out[i] = math.sqrt(max(m[i], 0.0))
    return out


@njit(cache=True)
def ema_nb(x, window):
    """Exponential moving average, ``alpha = 2 / (window + 1)``.

    Seeded with the simple mean of the first ``window`` valid values (TA-Lib convention), so the
    first value appears at the ``window``-th valid input; leading NaNs are skipped. A NaN input
    after the seed gives a NaN output and leaves the state unchanged.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    alpha = 2.0 / (window + 1.0)
    count = 0
    s = 0.0
    e = 0.0
    for i in range(n):
        v = x[i]
        if np.isnan(v):
            continue
        if count < window:
            s += v
            count += 1
            if count == window:
                e = s / window
                out[i] = e
        else:
            e = alpha * v + (1.0 - alpha) * e
            out[i] = e
    return out


@njit(cache=True)
def rsi_nb(close, window):
    """Wilder's RSI: averages seeded with the simple mean of the first ``window`` changes."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    ag = 0.0
    al = 0.0
    for i in range(1, n):
        d = close[i] - close[i - 1]
        g = d if d > 0 else 0.0
        lo = -d if d < 0 else 0.0
        if i <= window:
            ag += g
            al += lo
            if i < window:
                continue
            ag /= window
            al /= window
        else:
            ag = (ag * (window - 1) + g) / window
            al = (al * (window - 1) + lo) / window
        if al == 0.0:
            out[i] = 100.0 if ag > 0.0 else 50.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + ag / al)
    return out


@njit(cache=True)
def true_range_nb(high, low, close):
    n = high.shape[0]
    tr = np.empty(n)
    for i in range(n):
        r = high[i] - low[i]
        if i > 0:
            r = max(r, abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        tr[i] = r
    return tr


@njit(cache=True)
def atr_nb(high, low, close, window):
    """Wilder's ATR: first value the mean of the first ``window`` true ranges (TR[0] = H - L)."""
    tr = true_range_nb(high, low, close)
    n = tr.shape[0]
    out = np.full(n, np.nan)
    a = 0.0
    for i in range(n):
        if i < window:
            a += tr[i]
            if i == window - 1:
                a /= window
                out[i] = a
        else:
            a = (a * (window - 1) + tr[i]) / window
            out[i] = a
    return out


@njit(cache=True)
def ratio_of_sums_nb(num, den, window):
    """``sum(num) / sum(den)`` over the window; NaN where the denominator sum is 0."""
    a = rolling_sum_nb(num, window)
    b = rolling_sum_nb(den, window)
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if b[i] != 0.0 and not np.isnan(b[i]) and not np.isnan(a[i]):
            out[i] = a[i] / b[i]
    return out


@njit(cache=True)
def roll_spread_nb(close, window):
    """Roll (1984) spread: ``2 sqrt(max(-cov(dp_t, dp_{t-1}), 0))`` over ``window`` pairs."""
    n = close.shape[0]
    dp = np.full(n, np.nan)
    dp_lag = np.full(n, np.nan)
    for i in range(1, n):
        dp[i] = close[i] - close[i - 1]
    for i in range(2, n):
        dp_lag[i] = dp[i - 1]
    c = rolling_cov_nb(dp, dp_lag, window, 1)
    out = np.full(n, np.nan)
    for i in range(n):
        if not np.isnan(c[i]):
            out[i] = 2.0 * math.sqrt(max(-c[i], 0.0))
    return out
