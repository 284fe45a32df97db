"""simulate's input checks run inside the kernel (or beside it, on a second thread): the same
errors as the separate checks, and the same results whichever path runs."""

from __future__ import annotations

import numpy as np
import pytest

from btsys.backtest import engine, simulate


def _bars(n=3000, seed=5):
    rng = np.random.default_rng(seed)
    c = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) * (1.0 + np.abs(rng.normal(0, 0.001, n)))
    lo = np.minimum(o, c) * (1.0 - np.abs(rng.normal(0, 0.001, n)))
    ts = np.arange(n, dtype=np.int64) * 3_600_000_000
    e = rng.random(n) < 0.05
    x = rng.random(n) < 0.05
    return ts, o, h, lo, c, e, x


KW = dict(fees=0.001, stop_loss=0.01, take_profit=0.02, trailing_stop=0.01)


@pytest.mark.parametrize("direction", ["long", "short", "both"])
def test_parallel_and_single_thread_paths_agree(direction):
    ts, o, h, lo, c, e, x = _bars()
    a = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, direction=direction, **KW)
    with engine._PAR_LOCK:  # lock taken: the loop checks in its own pass
        b = simulate(c, e, x, open=o, high=h, low=lo, ts=ts, direction=direction, **KW)
    assert len(a.orders) > 10
    for k in ("equity", "cash", "position", "order_records", "trade_records"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    np.testing.assert_equal(a.metrics, b.metrics)  # NaN == NaN here


@pytest.mark.parametrize("locked", [False, True])
@pytest.mark.parametrize(
    "name,row,bad,pattern",
    [
        ("close", 7, np.nan, "`close` must be finite and > 0; row 7"),
        ("open", 11, -1.0, "`open` must be finite and > 0; row 11"),
        ("high", 2999, np.inf, "`high` must be finite and > 0; row 2999"),
        ("low", 0, 0.0, "`low` must be finite and > 0; row 0"),
        ("ts", 5, 0, r"`ts` must be non-decreasing; row 5"),
    ],
)
def test_bad_inputs_name_argument_and_row(name, row, bad, pattern, locked):
    ts, o, h, lo, c, e, x = _bars()
    arrs = dict(close=c.copy(), open=o.copy(), high=h.copy(), low=lo.copy(), ts=ts.copy())
    arrs[name][row] = bad
    kw = dict(arrs, entries=e, exits=x, **KW)
    if locked:
        with engine._PAR_LOCK:
            with pytest.raises(ValueError, match=pattern):
                simulate(**kw)
    else:
        with pytest.raises(ValueError, match=pattern):
            simulate(**kw)
