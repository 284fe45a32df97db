"""The two-pass threshold kernel (bars reduced on all numba threads) equals the one-pass kernel bit
for bit: outputs, errors and the carried state after every call, for random streams cut at random
places, small output buffers, ties, null sides and injected bad rows."""

import numpy as np
import pytest
from test_bars_reference import assert_bars_equal, gen_ticks, ref_bars

from btsys.bars import _nb, build_bars
from btsys.bars.api import BarStream, tick_arrays

BAD = {"qty": 0.0, "price": np.nan, "quote_qty": -1.0, "trade_id": -7}


def _run(kern, a, measure, thr, cap, cuts):
    ist, fst = _nb.new_state()
    oi = np.zeros((cap, 3), np.int64)
    of = np.zeros((cap, 9))
    res, no, lo = [], 0, 0
    for hi in cuts:
        i = lo
        while True:
            i, no, err = kern(
                a["ts"],
                a["trade_id"],
                a["price"],
                a["qty"],
                a["quote_qty"],
                a["side"],
                measure,
                thr * (1 + 0.1 * (hi % 3)),
                i,
                hi,
                ist,
                fst,
                oi,
                of,
                no,
            )
            res.append(
                (
                    i,
                    no,
                    err,
                    oi[:no].copy(),
                    of[:no].view(np.int64).copy(),
                    ist.copy(),
                    fst.view(np.int64).copy(),
                )
            )
            if err:
                return res
            if no >= cap:
                no = 0
            if i >= hi:
                break
        lo = hi
    return res


@pytest.mark.parametrize("seed", range(60))
def test_two_pass_kernel_equals_one_pass(seed):
    rng = np.random.default_rng(seed)
    df = gen_ticks(seed, int(rng.integers(1, 2500)), equal_ts=float(rng.choice([0.0, 0.3, 1.0])))
    if seed % 3 == 0 and len(df) > 5:
        col = str(rng.choice(list(BAD)))
        df.loc[int(rng.integers(0, len(df))), col] = BAD[col]
    if seed % 4 == 0:
        df["is_buyer_maker"] = df["is_buyer_maker"].astype(object)
        df.loc[df.sample(frac=0.5, random_state=seed).index, "is_buyer_maker"] = None
    a = tick_arrays(df)
    n = len(a["ts"])
    measure = seed % 3
    thr = [float(rng.integers(1, 50)), float(rng.uniform(0.1, 50)), float(rng.uniform(10, 1e5))][measure]
    cap = int(rng.choice([1, 3, 50, 100_000]))
    cuts = sorted(set(rng.integers(0, n + 1, 4).tolist()) | {n})
    want = _run(_nb.threshold_bars_nb, a, measure, thr, cap, cuts)
    got = _run(_nb.threshold_bars_par_nb, a, measure, thr, cap, cuts)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for x, y in zip(g, w, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("dollar", dict(threshold=2e4)),
        ("tick", dict(threshold=7)),
        ("volume", dict(threshold=3.0, threshold_mode="dynamic", bars_per_day=20, lookback_days=2)),
    ],
)
def test_stream_through_the_two_pass_kernel_matches_the_reference(monkeypatch, kind, kw):
    monkeypatch.setattr(BarStream, "PAR_MIN", 1)
    df = gen_ticks(11, 3000, days=4.0)
    want, _ = ref_bars(df, kind, keep_partial=True, **kw)
    assert_bars_equal(build_bars(df, kind, keep_partial=True, **kw), want, kind)
