"""A plain single-pass Python reference for every bar kind, random tick streams, and lake layouts.

The reference is deliberately naive (one loop over a list of ticks, one dict per bar) and is checked
here against hand-computed bars; tests/test_bars.py and tests/test_bars_spark.py compare the
kernels and the Spark job with it bit for bit.
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

DAY_US = 86_400_000_000
BINANCE_CM_DAY = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "data",
    "binance",
    "futures",
    "cm",
    "daily",
    "aggTrades",
    "BTCUSD_PERP",
    "BTCUSD_PERP-aggTrades-2026-05-08.zip",
)
T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z in µs
COLS = [
    "ts_open",
    "ts_close",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "buy_volume",
    "n_ticks",
    "vwap",
    "threshold",
    "is_partial",
]


def ref_bars(
    ticks: pd.DataFrame,
    kind: str,
    threshold=None,
    threshold_mode="fixed",
    bars_per_day=50.0,
    lookback_days=7,
    warmup="first_day",
    interval_us=None,
    expected_ticks_init=1000.0,
    ewma_span=20,
    imbalance_init=None,
    imbalance_span=None,
    min_ticks=10,
    max_ticks=1_000_000,
    keep_partial=False,
):
    """Bars of one pass over ``ticks`` (rows in order). Returns (DataFrame, {day: threshold})."""
    ref = _Reference(
        kind,
        threshold,
        threshold_mode,
        bars_per_day,
        lookback_days,
        warmup,
        interval_us,
        expected_ticks_init,
        ewma_span,
        imbalance_init,
        imbalance_span,
        min_ticks,
        max_ticks,
    )
    ibm = ticks["is_buyer_maker"].tolist() if "is_buyer_maker" in ticks else [None] * len(ticks)
    cols = [ticks[c].tolist() for c in ("ts", "price", "qty", "quote_qty")]
    for t, p, q, d, m in zip(*cols, ibm, strict=True):
        ref.tick(t, p, q, d, m)
    rows = [dict(b, is_partial=False) for b in ref.bars]
    if keep_partial and ref.cur is not None:
        rows.append(dict(ref.cur, is_partial=True))
    for r in rows:
        r["vwap"] = r["pv"] / r["volume"]
    df = pd.DataFrame(rows, columns=COLS) if rows else pd.DataFrame({c: [] for c in COLS})
    df = df.astype(
        {
            "ts_open": "int64",
            "ts_close": "int64",
            "n_ticks": "int64",
            "is_partial": bool,
            **{c: "float64" for c in COLS if c not in ("ts_open", "ts_close", "n_ticks", "is_partial")},
        }
    )
    return df, ref.thresholds


class _Reference:
    """The state of :func:`ref_bars`' one pass, tick by tick (one dict per bar)."""

    def __init__(
        self,
        kind,
        threshold,
        threshold_mode,
        bars_per_day,
        lookback_days,
        warmup,
        interval_us,
        expected_ticks_init,
        ewma_span,
        imbalance_init,
        imbalance_span,
        min_ticks,
        max_ticks,
    ):
        self.kind, self.base = kind, kind.split("_")[0]
        self.flow = kind.endswith("_imbalance") or kind.endswith("_run")
        self.is_run = kind.endswith("_run")
        self.dynamic = threshold_mode == "dynamic" and kind in ("tick", "volume", "dollar")
        self.threshold, self.bars_per_day, self.lookback_days = threshold, bars_per_day, lookback_days
        self.warmup, self.interval_us = warmup, interval_us
        self.min_ticks, self.max_ticks = min_ticks, max_ticks
        self.alpha_t = 2.0 / (ewma_span + 1.0)
        self.alpha_a = 2.0 / ((imbalance_span if imbalance_span is not None else ewma_span) + 1.0)
        self.warm_len = min(max(int(expected_ticks_init + 0.5), min_ticks), max_ticks)
        self.warm = imbalance_init is not None
        self.e_t = expected_ticks_init
        self.e_a = self.e_b = imbalance_init if self.warm else 0.0
        self.bars: list[dict] = []
        self.cur = None
        self.trs, self.lastp = 1, None
        self.day = self.first_day = None
        self.day_total = 0.0
        self.totals: dict = {}
        self.thresholds: dict = {}
        self.thr_now = threshold

    def sign(self, p, m) -> int:
        """+1 taker buy, -1 taker sell; the tick rule where the side is unknown."""
        if self.lastp is not None and p != self.lastp:
            self.trs = 1 if p > self.lastp else -1
        self.lastp = p
        if m is None or (isinstance(m, float) and math.isnan(m)) or m is pd.NA:
            return self.trs
        return -1 if m else 1

    def enter_day(self, t) -> None:
        """Dynamic thresholds: the mean daily measure of the earlier days / bars_per_day."""
        if self.day is not None:
            self.totals[self.day] = self.day_total
        self.day, self.day_total = t // DAY_US, 0.0
        if self.first_day is None:
            self.first_day = self.day
        lo = max(self.day - self.lookback_days, self.first_day)
        n_hist = self.day - lo
        if n_hist <= 0 or (self.warmup == "fixed" and n_hist < self.lookback_days):
            self.thr_now = self.threshold
        else:
            tot = 0.0
            for k in range(lo, self.day):
                tot += self.totals.get(k, 0.0)
            self.thr_now = tot / n_hist / self.bars_per_day
            if not self.thr_now > 0:
                self.thr_now = self.threshold
        self.thresholds[self.day] = self.thr_now

    def open_bar(self, t, p) -> dict:
        cur = dict(
            ts_open=t,
            open=p,
            high=p,
            low=p,
            volume=0.0,
            quote_volume=0.0,
            buy_volume=0.0,
            n_ticks=0,
            pv=0.0,
            acc=0.0,
            theta=0.0,
            sell=0.0,
        )
        if self.kind == "time":
            cur["bin"], cur["threshold"] = t // self.interval_us, float(self.interval_us)
        elif self.flow:
            if self.warm:
                et = min(max(self.e_t, float(self.min_ticks)), float(self.max_ticks))
                cur["threshold"] = et * max(self.e_a, self.e_b) if self.is_run else et * abs(self.e_a)
            else:
                cur["threshold"] = float("nan")
        else:
            cur["threshold"] = self.thr_now
        return cur

    def flow_closes(self, cur, v, sign) -> bool:
        """Imbalance/run bars: add the signed flow; close on the guards or the expectation (and
        update the expectations when a bar closes)."""
        if self.is_run:
            if sign > 0:
                cur["theta"] += v
            else:
                cur["sell"] += v
        else:
            cur["theta"] += v if sign > 0 else -v
        n = cur["n_ticks"]
        if n >= self.max_ticks:
            done = True
        elif n < self.min_ticks:
            done = False
        elif not self.warm:
            done = n >= self.warm_len
        elif self.is_run:
            done = max(cur["theta"], cur["sell"]) >= cur["threshold"]
        else:
            done = abs(cur["theta"]) >= cur["threshold"]
        if done and not self.warm:
            self.warm, self.e_t, self.e_a, self.e_b = True, float(n), cur["theta"] / n, cur["sell"] / n
        elif done:
            self.e_t += self.alpha_t * (n - self.e_t)
            self.e_a += self.alpha_a * (cur["theta"] / n - self.e_a)
            self.e_b += self.alpha_a * (cur["sell"] / n - self.e_b)
        return done

    def tick(self, t, p, q, d, m) -> None:
        sign = self.sign(p, m)
        if self.dynamic and t // DAY_US != self.day:
            self.enter_day(t)
        if self.kind == "time" and self.cur is not None and t // self.interval_us != self.cur["bin"]:
            self.bars.append(self.cur)
            self.cur = None
        if self.cur is None:
            self.cur = self.open_bar(t, p)
        cur = self.cur
        cur["high"] = max(cur["high"], p)
        cur["low"] = min(cur["low"], p)
        cur["close"], cur["ts_close"] = p, t
        cur["n_ticks"] += 1
        cur["volume"] += q
        cur["quote_volume"] += d
        cur["pv"] += p * q
        if sign > 0:
            cur["buy_volume"] += q
        v = 1.0 if self.base == "tick" else q if self.base == "volume" else d
        if self.dynamic:
            self.day_total += v
        done = False
        if self.kind in ("tick", "volume", "dollar"):
            cur["acc"] += v
            done = cur["acc"] >= cur["threshold"]
        elif self.flow:
            done = self.flow_closes(cur, v, sign)
        if done:
            self.bars.append(cur)
            self.cur = None


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame, what: str = ""):
    """Bit-for-bit equality (NaN == NaN), with a message pointing at the first differing bar."""
    got = got.reset_index(drop=True)[COLS]
    want = want.reset_index(drop=True)[COLS]
    assert len(got) == len(want), f"{what}: {len(got)} bars, reference has {len(want)}"
    for c in COLS:
        a, b = got[c].to_numpy(), want[c].to_numpy()
        if a.dtype.kind == "f":
            same = (a == b) | (np.isnan(a) & np.isnan(b))
        else:
            same = a == b
        if not same.all():
            k = int(np.flatnonzero(~same)[0])
            raise AssertionError(f"{what}: column {c} differs first at bar {k}: {a[k]!r} != {b[k]!r}")
        assert a.dtype == b.dtype, f"{what}: column {c} dtype {a.dtype} != {b.dtype}"


# --------------------------------------------------------------------------- random streams
def gen_ticks(
    seed: int,
    n: int,
    days: float = 3.0,
    equal_ts: float = 0.2,
    big: float = 0.01,
    null_side: float = 0.0,
    gap_days: int = 0,
    start: int = T0,
) -> pd.DataFrame:
    """A random, valid tick stream: equal timestamps, occasional huge trades, optional null sides
    and an optional run of empty days."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return pd.DataFrame(
            {
                "ts": np.empty(0, np.int64),
                "trade_id": np.empty(0, np.int64),
                "price": np.empty(0),
                "qty": np.empty(0),
                "quote_qty": np.empty(0),
                "is_buyer_maker": np.empty(0, bool),
            }
        )
    step = rng.exponential(days * DAY_US / max(n, 1), n).astype(np.int64)
    step[rng.random(n) < equal_ts] = 0
    step[0] = int(rng.integers(0, DAY_US // 4))
    if gap_days and n > 2:
        step[int(rng.integers(1, n - 1))] += gap_days * DAY_US
    ts = start + np.cumsum(step)
    price = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    price = np.round(price, 2)  # repeated prices: the tick rule must carry its sign
    qty = rng.lognormal(0.0, 1.0, n)
    qty[rng.random(n) < big] *= 200.0
    side = rng.random(n) < 0.5
    df = pd.DataFrame(
        {
            "ts": ts.astype(np.int64),
            "trade_id": np.arange(n, dtype=np.int64) + 1000,
            "price": price,
            "qty": qty,
            "quote_qty": price * qty,
            "is_buyer_maker": side,
        }
    )
    if null_side:
        s = pd.array(side, dtype="boolean")
        s[rng.random(n) < null_side] = pd.NA
        df["is_buyer_maker"] = s
    return df


def to_arrow(df: pd.DataFrame) -> pa.Table:
    schema = pa.schema(
        [
            ("ts", pa.int64()),
            ("trade_id", pa.int64()),
            ("price", pa.float64()),
            ("qty", pa.float64()),
            ("quote_qty", pa.float64()),
            ("is_buyer_maker", pa.bool_()),
        ]
    )
    return pa.Table.from_pandas(df.reset_index(drop=True), schema=schema, preserve_index=False)


def split_rows(df: pd.DataFrame, how: str, seed: int = 0) -> list[tuple[str, pd.DataFrame]]:
    """Cut a stream into lake files (date, piece): by day, random row counts within days, one row
    per file; ``+empty`` variants add zero-row files."""
    rng = np.random.default_rng(seed)
    dates = pd.to_datetime(df["ts"], unit="us").dt.strftime("%Y-%m-%d").to_numpy()
    out: list[tuple[str, pd.DataFrame]] = []
    for date in sorted(set(dates)):
        day = df[dates == date]
        if how.startswith("day"):
            pieces = [day]
        elif how.startswith("rows"):
            cuts = np.sort(rng.integers(0, len(day) + 1, int(rng.integers(0, 6))))
            edges = [0, *cuts.tolist(), len(day)]
            pieces = [day.iloc[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
        elif how.startswith("one"):
            pieces = [day.iloc[i : i + 1] for i in range(len(day))]
        else:
            raise ValueError(how)
        if how.endswith("+empty"):
            pieces.insert(int(rng.integers(0, len(pieces) + 1)), day.iloc[:0])
        out += [(date, p) for p in pieces]
    return out


def read_cm_day(path: str) -> pd.DataFrame:
    """The real COIN-M aggTrades day as tick columns (ms -> µs, quote_qty = contracts * 100 USD)."""
    with zipfile.ZipFile(path) as zf:
        with zf.open(zf.namelist()[0]) as f:
            raw = pd.read_csv(f)
    return pd.DataFrame(
        {
            "ts": raw["transact_time"].astype(np.int64) * 1000,
            "trade_id": raw["agg_trade_id"].astype(np.int64),
            "price": raw["price"].astype(np.float64),
            "qty": raw["quantity"].astype(np.float64),
            "quote_qty": raw["quantity"].astype(np.float64) * 100.0,
            "is_buyer_maker": raw["is_buyer_maker"].astype(bool),
        }
    )


# --------------------------------------------------------------------------- the reference itself
def _ticks(rows):
    return pd.DataFrame(rows, columns=["ts", "trade_id", "price", "qty", "quote_qty", "is_buyer_maker"])


def test_reference_dollar_bars_by_hand():
    # quote_qty 4, 4, 10, 1, 2, 3 with threshold 8: bars close at 8 (ticks 0-1) and at 10 (tick 2,
    # overflow discarded), then 1+2+3 = 6 stays open.
    t = _ticks(
        [
            (1, 1, 10.0, 0.4, 4.0, False),
            (2, 2, 11.0, 0.4, 4.0, True),
            (2, 3, 9.0, 1.0, 10.0, False),
            (3, 4, 9.5, 0.1, 1.0, True),
            (4, 5, 9.0, 0.2, 2.0, True),
            (5, 6, 9.9, 0.3, 3.0, False),
        ]
    )
    bars, _ = ref_bars(t, "dollar", threshold=8.0, keep_partial=True)
    assert bars["n_ticks"].tolist() == [2, 1, 3]
    assert bars["open"].tolist() == [10.0, 9.0, 9.5]
    assert bars["high"].tolist() == [11.0, 9.0, 9.9]
    assert bars["buy_volume"].tolist() == [0.4, 1.0, 0.3]
    assert bars["is_partial"].tolist() == [False, False, True]
    assert bars["vwap"][0] == (10.0 * 0.4 + 11.0 * 0.4) / 0.8


def test_reference_dynamic_threshold_by_hand():
    # day 0: 3 ticks of 1 (fixed threshold 2 -> one bar + partial), day 1: threshold = 3 / 1 / 1.
    d = DAY_US
    t = _ticks(
        [
            (T0, 1, 1.0, 1.0, 1.0, False),
            (T0 + 1, 2, 1.0, 1.0, 1.0, False),
            (T0 + 2, 3, 1.0, 1.0, 1.0, False),
            (T0 + d, 4, 1.0, 1.0, 1.0, False),
            (T0 + d + 1, 5, 1.0, 1.0, 1.0, False),
            (T0 + d + 2, 6, 1.0, 1.0, 1.0, False),
        ]
    )
    bars, thr = ref_bars(
        t, "tick", threshold=2.0, threshold_mode="dynamic", bars_per_day=1.0, lookback_days=1
    )
    assert list(thr.values()) == [2.0, 3.0]
    # bar 2 opened on day 0 (threshold 2) and closes with the first tick of day 1
    assert bars["n_ticks"].tolist() == [2, 2]
    assert bars["threshold"].tolist() == [2.0, 2.0]


def test_reference_tick_rule_fallback():
    t = _ticks(
        [
            (1, 1, 10.0, 1.0, 10.0, None),
            (2, 2, 11.0, 1.0, 11.0, None),
            (3, 3, 11.0, 1.0, 11.0, None),
            (4, 4, 10.0, 1.0, 10.0, None),
        ]
    )
    bars, _ = ref_bars(t, "tick", threshold=4.0)
    # signs: +1 (initial), +1 (up), +1 (unchanged: carried), -1 (down)
    assert bars["buy_volume"].tolist() == [3.0]


def test_reference_imbalance_warmup_then_threshold():
    t = _ticks([(i, i, 10.0, 1.0, 10.0, False) for i in range(1, 13)])
    bars, _ = ref_bars(t, "tick_imbalance", expected_ticks_init=4, min_ticks=1, max_ticks=100, ewma_span=1)
    # warm-up bar of 4 ticks: E[T] = 4, E[b] = 1 -> threshold 4, all buys: bars of 4 ticks
    assert bars["n_ticks"].tolist() == [4, 4, 4]
    assert math.isnan(bars["threshold"][0]) and bars["threshold"].tolist()[1:] == [4.0, 4.0]


@pytest.mark.parametrize("how", ["day", "rows", "one+empty"])
def test_split_rows_partitions_the_stream(how):
    df = gen_ticks(3, 200 if how != "one+empty" else 30, days=2.5)
    parts = split_rows(df, how, seed=1)
    pd.testing.assert_frame_equal(pd.concat([p for _, p in parts]), df)
