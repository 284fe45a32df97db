"""Labels and sample weights (López de Prado, *Advances in Financial Machine Learning*, ch. 3-4).

* :func:`ewm_vol` — the volatility target: EWMA standard deviation of 1-bar log returns (causal).
* :func:`triple_barrier_labels` — for each event bar ``t0``: the first of an upper barrier
  ``+pt * target``, a lower barrier ``-sl * target`` (returns from ``close[t0]``) and a vertical
  barrier ``vertical_bars`` later; the label is the barrier's sign (the return's sign, or 0 with
  ``zero_vertical``, at the vertical barrier). ``t1`` is the bar at which the label becomes known.
* :func:`meta_labels` — given a primary model's side, 1 if acting on that side paid, else 0.
* :func:`num_concurrent_events`, :func:`average_uniqueness`, :func:`return_attribution_weights`
  — sample weights by label uniqueness.

Events whose barriers are not reached before the data ends have no label yet (``t1 = -1``) and are
dropped by :func:`triple_barrier_labels`; they still matter for concurrency, so callers that
weight samples pass them with ``t1 = n_bars - 1`` (see :func:`open_spans`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from btsys.signals import _nb


class LabelError(ValueError):
    pass


def _close(close) -> np.ndarray:
    c = np.ascontiguousarray(np.asarray(close, dtype=np.float64))
    if c.ndim != 1:
        raise LabelError(f"close must be one-dimensional, got shape {c.shape}")
    bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
    if bad.size:
        raise LabelError(f"close must be finite and > 0; row {int(bad[0])} is {c[bad[0]]!r}")
    return c


def ewm_vol(close, span: int) -> np.ndarray:
    """EWMA standard deviation (pandas ``ewm(span).std()``) of 1-bar log returns; NaN for ``span`` bars.

    Causal: the value at bar ``t`` uses returns up to ``t``.
    """
    if int(span) < 2:
        raise LabelError(f"vol_span must be >= 2, got {span!r}")
    c = _close(close)
    r = pd.Series(np.r_[np.nan, np.diff(np.log(c))])
    return r.ewm(span=int(span), min_periods=int(span)).std().to_numpy(dtype=np.float64)


def triple_barrier(close, t0, target, pt: float = 1.0, sl: float = 1.0, vertical_bars: int = 20, side=None):
    """Raw kernel call with validation: ``(t1, ret, barrier)`` per event (``t1 = -1``: unknown yet)."""
    c = _close(close)
    t0 = np.ascontiguousarray(np.asarray(t0, dtype=np.int64))
    if t0.size and (t0.min() < 0 or t0.max() >= c.shape[0]):
        raise LabelError(f"event index out of range [0, {c.shape[0]}): {int(t0.min())}..{int(t0.max())}")
    target = np.ascontiguousarray(np.broadcast_to(np.asarray(target, dtype=np.float64), t0.shape))
    side_a = (
        np.ones(t0.shape[0])
        if side is None
        else np.ascontiguousarray(np.broadcast_to(np.asarray(side, dtype=np.float64), t0.shape))
    )
    if int(vertical_bars) < 1:
        raise LabelError(f"vertical_bars must be >= 1, got {vertical_bars!r}")
    if pt < 0 or sl < 0:
        raise LabelError(f"pt and sl must be >= 0 (0 = barrier off), got pt={pt}, sl={sl}")
    return _nb.triple_barrier_nb(c, t0, target, float(pt), float(sl), int(vertical_bars), side_a)


def triple_barrier_labels(
    close,
    events=None,
    target=None,
    pt: float = 1.0,
    sl: float = 1.0,
    vertical_bars: int = 20,
    vol_span: int = 50,
    min_ret: float = 0.0,
    zero_vertical: bool = False,
    side=None,
) -> pd.DataFrame:
    """Triple-barrier labels of the events whose label is known within the data.

    Parameters
    ----------
    close : array of float64
        Closes in bar order.
    events : array of int, optional
        Event bars (default: every bar).
    target : array of float64, optional
        Per-bar volatility target (default :func:`ewm_vol` with ``vol_span``); barriers are
        ``pt * target[t0]`` and ``-sl * target[t0]``.
    side : array, optional
        Per-bar side (+1 / -1) of a primary model; returns are taken in that direction.

    Returns
    -------
    pandas.DataFrame
        ``t0``, ``t1`` (int64 bars), ``ret`` (return at ``t1``), ``target``, ``barrier`` (1 upper,
        -1 lower, 0 vertical), ``label`` (-1, 0, 1), ``side`` — one row per event with a finite
        target ``>= min_ret`` and a barrier reached inside the data.
    """
    c = _close(close)
    n = c.shape[0]
    ev = np.arange(n, dtype=np.int64) if events is None else np.asarray(events, dtype=np.int64)
    tgt_bar = ewm_vol(c, vol_span) if target is None else np.asarray(target, dtype=np.float64)
    if tgt_bar.shape != (n,):
        raise LabelError(f"target must have one value per bar ({n}), got shape {tgt_bar.shape}")
    sd_bar = np.ones(n) if side is None else np.asarray(side, dtype=np.float64)
    if sd_bar.shape != (n,):
        raise LabelError(f"side must have one value per bar ({n}), got shape {sd_bar.shape}")
    tgt = tgt_bar[ev] if ev.size else np.empty(0)
    keep = np.isfinite(tgt) & (tgt > 0) & (tgt >= min_ret) & (sd_bar[ev] != 0) & np.isfinite(sd_bar[ev])
    ev, tgt, sd = ev[keep], tgt[keep], sd_bar[ev][keep]
    t1, ret, barrier = triple_barrier(c, ev, tgt, pt, sl, vertical_bars, sd)
    ok = t1 >= 0
    label = np.sign(ret[ok]).astype(np.int64)
    if zero_vertical:
        label[barrier[ok] == 0] = 0
    return pd.DataFrame(
        {
            "t0": ev[ok],
            "t1": t1[ok],
            "ret": ret[ok],
            "target": tgt[ok],
            "barrier": barrier[ok].astype(np.int64),
            "label": label,
            "side": sd[ok],
        }
    )


def meta_labels(
    close,
    side,
    events=None,
    target=None,
    pt: float = 1.0,
    sl: float = 1.0,
    vertical_bars: int = 20,
    vol_span: int = 50,
    min_ret: float = 0.0,
) -> pd.DataFrame:
    """Meta-labels (AFML 3.6): for bars where the primary model takes a side, 1 if that bet paid.

    Returns the :func:`triple_barrier_labels` frame (events with ``side != 0``) with ``label``
    replaced by ``1 if side * return > 0 else 0``; a secondary model learns whether to act on
    (and how much to bet on) the primary signal.
    """
    side = np.asarray(side, dtype=np.float64)
    out = triple_barrier_labels(close, events, target, pt, sl, vertical_bars, vol_span, min_ret, side=side)
    out["label"] = (out["ret"].to_numpy() > 0).astype(np.int64)
    return out


def open_spans(t1, n_bars: int) -> np.ndarray:
    """Label ends with unknown ones (``-1``) replaced by the last bar: they cover the rest of the data."""
    t1 = np.asarray(t1, dtype=np.int64).copy()
    t1[t1 < 0] = n_bars - 1
    return t1


def _spans(n_bars: int, t0, t1):
    t0 = np.ascontiguousarray(np.asarray(t0, dtype=np.int64))
    t1 = np.ascontiguousarray(np.asarray(t1, dtype=np.int64))
    if t0.shape != t1.shape:
        raise LabelError(f"t0 and t1 differ in shape: {t0.shape} vs {t1.shape}")
    if t0.size:
        bad = np.flatnonzero((t0 < 0) | (t1 < t0) | (t1 >= n_bars))
        if bad.size:
            i = int(bad[0])
            raise LabelError(f"event {i}: span [{t0[i]}, {t1[i]}] is not inside [0, {n_bars})")
    return t0, t1


def num_concurrent_events(n_bars: int, t0, t1) -> np.ndarray:
    """``c_t``: how many event spans ``[t0, t1]`` cover bar ``t`` (AFML snippet 4.1)."""
    t0, t1 = _spans(n_bars, t0, t1)
    return _nb.num_concurrent_nb(int(n_bars), t0, t1)


def average_uniqueness(t0, t1, concurrency) -> np.ndarray:
    """Average uniqueness of each event: mean of ``1 / c_t`` over its span (AFML snippet 4.2)."""
    conc = np.ascontiguousarray(np.asarray(concurrency, dtype=np.int64))
    t0, t1 = _spans(conc.shape[0], t0, t1)
    return _nb.average_uniqueness_nb(t0, t1, conc)


def return_attribution_weights(close, t0, t1, concurrency=None) -> np.ndarray:
    """AFML snippet 4.10: ``|sum_{t in (t0, t1]} r_t / c_t|``, scaled to sum to the number of events."""
    c = _close(close)
    conc = num_concurrent_events(c.shape[0], t0, t1) if concurrency is None else np.asarray(concurrency)
    t0, t1 = _spans(c.shape[0], t0, t1)
    r = np.r_[np.nan, np.diff(np.log(c))]
    w = _nb.return_attribution_nb(r, t0, t1, np.ascontiguousarray(conc, dtype=np.int64))
    s = w.sum()
    return w * (w.shape[0] / s) if s > 0 else np.ones_like(w)


def uniqueness_weights(n_bars: int, t0, t1, open_t0: Optional[np.ndarray] = None) -> np.ndarray:
    """Average-uniqueness weights of labelled events, counting still-open events in the concurrency.

    ``open_t0`` are the starts of events whose label is not known yet (span to the last bar).
    """
    t0 = np.asarray(t0, dtype=np.int64)
    t1 = np.asarray(t1, dtype=np.int64)
    all0, all1 = t0, t1
    if open_t0 is not None and len(open_t0):
        o = np.asarray(open_t0, dtype=np.int64)
        all0 = np.r_[t0, o]
        all1 = np.r_[t1, np.full(o.shape[0], n_bars - 1, dtype=np.int64)]
    conc = num_concurrent_events(n_bars, all0, all1)
    return average_uniqueness(t0, t1, conc)
