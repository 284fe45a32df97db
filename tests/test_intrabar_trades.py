"""The trades inside bars: bars carry their first/last trade id, and the lake returns a bar's
trades (only the row groups it needs); missing trades stop with the bar and the day named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btsys.backtest.ticks import FrameTrades
from btsys.bars.api import BarSpec, BarStream, build_bars
from btsys.data import lake
from btsys.data.lake import Series, read_trade_ranges, write_day
from btsys.errors import TradesMissing
from btsys.stages.bar_trades import LakeTrades
from btsys.storage import LocalStorage

DAY = 86_400_000_000
T0 = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC


def tick_table(n=6000, days=2, seed=0):
    """Ticks over ``days`` UTC days with repeated time stamps and gaps in the trade ids."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.integers(0, days * DAY, n)) // 1000 * 1000  # ms stamps: many ties
    ids = 1000 + np.cumsum(rng.integers(1, 4, n))
    price = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    qty = rng.exponential(1.0, n) + 1e-3
    return pd.DataFrame(
        dict(
            ts=ts,
            trade_id=ids,
            price=price,
            qty=qty,
            quote_qty=qty * price,
            is_buyer_maker=rng.random(n) < 0.5,
        )
    )


SPECS = [
    dict(kind="tick", threshold=37),
    dict(kind="dollar", threshold=4000.0),
    dict(kind="volume", threshold=25.0),
    dict(kind="time", interval="15min"),
    dict(kind="tick_imbalance"),
    dict(kind="volume_run"),
    dict(kind="dollar", threshold_mode="dynamic", threshold=3000.0, bars_per_day=40, lookback_days=1),
]


@pytest.mark.parametrize(
    "spec", SPECS, ids=[s["kind"] + ("_dyn" if "bars_per_day" in s else "") for s in SPECS]
)
def test_bars_carry_their_trade_ids(spec, monkeypatch):
    """Fed in random pieces through tiny output buffers (and the parallel kernel), every bar's
    first/last trade id bound exactly its n_ticks trades, from its open to its close tick."""
    ticks = tick_table(seed=len(str(spec)))
    rng = np.random.default_rng(1)
    monkeypatch.setattr(BarStream, "PAR_MIN", 64)
    monkeypatch.setattr(BarStream, "BUF", 5)
    st = BarStream(BarSpec.from_config(None, **spec))
    cuts = [0, *np.sort(rng.choice(len(ticks), 12, replace=False)), len(ticks)]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        st.feed(ticks.iloc[a:b])
    bars = st.to_pandas(keep_partial=True)
    ids, ts, px = ticks.trade_id.to_numpy(), ticks.ts.to_numpy(), ticks.price.to_numpy()
    lo = np.searchsorted(ids, bars.first_trade_id)
    hi = np.searchsorted(ids, bars.last_trade_id)
    np.testing.assert_array_equal(ids[lo], bars.first_trade_id)
    np.testing.assert_array_equal(hi - lo + 1, bars.n_ticks)
    np.testing.assert_array_equal(lo[1:], hi[:-1] + 1)  # no gap, no overlap
    assert lo[0] == 0 and hi[-1] == len(ticks) - 1
    np.testing.assert_array_equal(ts[lo], bars.ts_open)
    np.testing.assert_array_equal(px[hi], bars.close)
    one = build_bars(ticks, keep_partial=True, **spec)  # one piece: the same bars
    pd.testing.assert_frame_equal(one, bars)


def write_lake(root, ticks, series):
    store = LocalStorage(str(root))
    day = ticks.ts.to_numpy() // DAY
    for d in np.unique(day):
        date = str(np.datetime64(int(d), "D"))
        tbl = __import__("pyarrow").Table.from_pandas(ticks[day == d], preserve_index=False)
        write_day(store, series.day_key(date), tbl, "v1")
    return store


SER = Series("um", "trades", "BTCUSDT")


def test_read_trade_ranges_reads_only_the_row_groups_it_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "ROW_GROUP_ROWS", 100)
    ticks = tick_table(n=3000, days=1)
    store = write_lake(tmp_path, ticks, SER)
    ids = ticks.trade_id.to_numpy()
    lo = np.array([ids[10], ids[1500]])
    hi = np.array([ids[40], ids[1510]])
    got = read_trade_ranges(store, SER, "2025-01-01", lo, hi)
    want = ticks.iloc[np.r_[10:41, 1500:1511]]
    np.testing.assert_array_equal(got["trade_id"].to_numpy(), want.trade_id)
    np.testing.assert_array_equal(got["price"].to_numpy(), want.price)
    np.testing.assert_array_equal(got["ts"].to_numpy(), want.ts)
    pf = __import__("pyarrow.parquet").parquet.ParquetFile(store.arrow_path(SER.day_key("2025-01-01")))
    assert pf.metadata.num_row_groups == 30
    assert lake._groups_in_ranges(pf, 1, lo, hi) == [0, 15]


def test_lake_trades_equal_the_ticks_in_memory(tmp_path, monkeypatch):
    """Random sets of bars (some over midnight) read from a 2-day lake equal the in-memory slices."""
    monkeypatch.setattr(lake, "ROW_GROUP_ROWS", 256)
    ticks = tick_table(n=8000, days=2, seed=3)
    store = write_lake(tmp_path, ticks, SER)
    bars = build_bars(ticks, kind="tick", threshold=97)
    assert ((bars.ts_open // DAY) != (bars.ts_close // DAY)).any()
    src, mem = LakeTrades(store, SER, bars), FrameTrades(ticks, bars)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = np.sort(rng.choice(len(bars), 7, replace=False))
        for a, b in zip(src(idx), mem(idx), strict=True):
            np.testing.assert_array_equal(a, b)
    off, ts, px = src(np.arange(len(bars)))
    np.testing.assert_array_equal(px, ticks.price.to_numpy()[: off[-1]])
    assert src.reads > 0


def test_missing_trades_name_the_bar_and_the_day(tmp_path):
    ticks = tick_table(n=4000, days=2, seed=5)
    store = write_lake(tmp_path, ticks, SER)
    bars = build_bars(ticks, kind="tick", threshold=50)
    i = len(bars) - 3  # a bar of the second day
    (tmp_path / SER.day_key("2025-01-02")).unlink()
    with pytest.raises(
        TradesMissing, match=rf"bar {i} \(closed 2025-01-02 .* UTC\) of BTCUSDT: its trades on 2025-01-02"
    ):
        LakeTrades(store, SER, bars)(np.array([0, i]))
    other = tick_table(n=4000, days=2, seed=6)  # another lake: other ids under the same names
    store2 = write_lake(tmp_path / "other", other, SER)
    with pytest.raises(
        TradesMissing, match=r"bar 0 \(closed 2025-01-01 .*\) of BTCUSDT: the lake .* holds \d+ of its 50"
    ):
        LakeTrades(store2, SER, bars)(np.array([0]))
    with pytest.raises(TradesMissing, match=r"bar 1 .*: the ticks hold 0 of its 50 trades"):
        FrameTrades(ticks.iloc[:50], bars)(np.array([0, 1]))
