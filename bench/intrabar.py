"""Benchmark: ``backtest.intrabar=ticks`` against ``ohlc`` end to end, in the same run.

    .venv/bin/python bench/intrabar.py                       # 30 days x 2 M ticks a day
    .venv/bin/python bench/intrabar.py --days 10 --ticks-per-day 1e6

One synthetic month of one perpetual (``btsys.data.synthetic``: intraday seasonality, calm and
turbulent regimes, fat-tailed moves) is written to a tick lake, one Parquet file per day as the
ingest writes it, and cut into dollar bars (``--bars-per-day``) by :class:`BarStream`, day by day.
A tight stop/target strategy (MA cross, both directions, 10,000 notional at 3x leverage, stop 0.15 %,
target 0.2 %, trailing 0.3 %, funding every 8 h) is then backtested twice over the same bars:

* ``ohlc``: ``simulate`` over the bar table (signals included in the time);
* ``ticks``: the same call with ``intrabar="ticks"`` and the lake as the trade source
  (``btsys.stages.bar_trades.LakeTrades``): the reads of the bars that needed trades are included.

Prints both times, their ratio (goal: ticks within 3x of ohlc), the share of bars whose trades
were read, the trades and day files read, the passes of the engine, ``intrabar_disagreements``
and the PnL difference, and the peak RSS of each run over the resident bars (sampled every 10 ms).

Then (``--sweep``, default on) a sweep of the same strategy over 48 combinations (fast x slow x
stop loss, ``btsys.backtest.sweep``): ``ohlc`` in the sweep kernel against ``ticks`` (each
combination through ``simulate``, the trades of a bar read once for the whole grid), with the
trades and day files read, against the trades the 48 runs would read one by one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)
from bars import PeakRSS  # noqa: E402

from btsys.backtest import simulate  # noqa: E402
from btsys.backtest.sweep import sweep  # noqa: E402
from btsys.bars.api import TICK_COLUMNS, BarSpec, BarStream  # noqa: E402
from btsys.data import lake  # noqa: E402
from btsys.data.lake import Series, write_day  # noqa: E402
from btsys.data.synthetic import simulate_ticks  # noqa: E402
from btsys.data.validate import table_version  # noqa: E402
from btsys.stages.bar_trades import LakeTrades  # noqa: E402
from btsys.storage import LocalStorage  # noqa: E402

DAY_US = 86_400_000_000
DAY0 = 20_089  # 2025-01-01
SERIES = Series("um", "trades", "BTCUSDT")
RULES = dict(
    init_cash=1_000_000.0,
    fees=0.0004,
    maker_fee=0.0002,
    slippage=0.0001,
    direction="both",
    size=10_000.0,  # a fixed notional per trade: the PnL difference is a sum over trades
    size_mode="notional",
    leverage=3.0,
    stop_loss=0.0015,
    take_profit=0.002,
    trailing_stop=0.003,
)


def make_lake(store, days: int, per_day: int) -> float:
    """Write the lake day by day; returns the mean quote volume of a day."""
    p0, tid0, quote = None, 1, 0.0
    for d in range(days):
        a = simulate_ticks(SERIES.symbol, "um", DAY0 + d, 1, per_day, seed=11, p0=p0)
        q = a["qty"] * a["price"]
        tbl = pa.table(
            {
                "ts": a["ts"],
                "trade_id": np.arange(tid0, tid0 + per_day, dtype=np.int64),
                "price": a["price"],
                "qty": a["qty"],
                "quote_qty": q,
                "is_buyer_maker": a["is_buyer_maker"],
            }
        )
        p0, tid0, quote = float(a["price"][-1]), tid0 + per_day, quote + float(q.sum())
        write_day(store, SERIES.day_key(str(np.datetime64(DAY0 + d, "D"))), tbl, table_version(tbl))
    return quote / days


def bars_from_lake(store, days: int, threshold: float):
    """Dollar bars of the whole lake, day file by day file (what the bars stage does per symbol)."""
    stream = BarStream(BarSpec.from_config(None, kind="dollar", threshold=threshold))
    for d in range(days):
        key = SERIES.day_key(str(np.datetime64(DAY0 + d, "D")))
        stream.feed(pq.read_table(store.arrow_path(key), columns=TICK_COLUMNS))
    return stream.to_pandas()


def signals(close: np.ndarray, fast: int = 5, slow: int = 20):
    """MA cross decided at each close (no look-ahead: means of closes up to the bar)."""
    c = np.cumsum(np.concatenate([[0.0], close]))
    ma = lambda w: np.concatenate([np.full(w - 1, np.nan), (c[w:] - c[:-w]) / w])  # noqa: E731
    f, s = ma(fast), ma(slow)
    up = f > s
    prev = np.concatenate([[False], up[:-1]])
    dn = (f < s) & ~np.isnan(s)
    prev_dn = np.concatenate([[False], dn[:-1]])
    return up & ~prev, dn & ~prev_dn


def run(bars, funding, mode: str, source=None):
    le, se = signals(bars["close"].to_numpy())
    kw = dict(intrabar="ticks", ticks=source) if mode == "ticks" else {}
    f_ts, f_rate = funding
    return simulate(
        bars, le, se, short_entries=se, short_exits=le, funding_ts=f_ts, funding_rate=f_rate, **RULES, **kw
    )


#: the sweep: 4 x 3 x 4 = 48 combinations
GRID = {"fast": [3, 5, 8, 12], "slow": [20, 40, 80], "stop_loss": [0.001, 0.0015, 0.002, 0.003]}


def sweeps(bars, funding, store, one_run_trades: int) -> None:
    """The 48-combination sweep with ``ohlc`` (sweep kernel) and ``ticks`` (runs sharing a trade
    cache), timed with their peak RSS."""
    me = psutil.Process()
    rules = {k: v for k, v in RULES.items() if k != "stop_loss"}
    kw = dict(strategy="ma_cross", funding_ts=funding[0], funding_rate=funding[1], **rules)
    sweep(bars, {k: v[:1] for k, v in GRID.items()}, **kw)  # compile
    out = {}
    for mode in ("ohlc", "ticks"):
        src = LakeTrades(store, SERIES, bars) if mode == "ticks" else None
        extra = dict(intrabar="ticks", ticks=src) if mode == "ticks" else {}
        with PeakRSS(lambda: [me]) as pk:
            t = time.perf_counter()
            table = sweep(bars, GRID, **kw, **extra)
            out[mode] = (time.perf_counter() - t, pk.peak, table, src)
    (t_o, m_o, tab_o, _), (t_t, m_t, tab_t, src) = out["ohlc"], out["ticks"]
    n = len(tab_t)
    print(
        f"sweep of {n} combinations: ohlc (kernel) {t_o:.2f}s, peak RSS {m_o / 1e6:,.0f} MB; ticks "
        f"{t_t:.2f}s ({t_t / n * 1e3:.0f} ms a combination), peak RSS {m_t / 1e6:,.0f} MB: "
        f"{t_t / t_o:.0f} x"
    )
    print(
        f"ticks sweep read {src.trades_read:,} trades in {src.reads} day reads (the bars {n} runs "
        f"needed, each once; one run of the base strategy alone reads {one_run_trades:,}); "
        f"intrabar_share {tab_t['intrabar_share'].min():.1%}-{tab_t['intrabar_share'].max():.1%}, "
        f"disagreements {tab_t['intrabar_disagreements'].sum():,.0f}; the best row by final value: "
        f"{int(tab_o['final_value'].idxmax())} (ohlc), {int(tab_t['final_value'].idxmax())} (ticks)"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--ticks-per-day", type=float, default=2e6)
    ap.add_argument("--bars-per-day", type=float, default=2000.0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each mode (the best is shown)")
    ap.add_argument("--dir", default=None, help="lake directory (default: a temporary one, removed)")
    ap.add_argument("--row-group", type=int, default=lake.ROW_GROUP_ROWS, help="rows per Parquet row group")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the 48-combination sweeps")
    a = parse_args(ap, argv, quick={"days": 2, "ticks_per_day": 50_000, "bars_per_day": 200.0, "repeat": 1})
    per_day = int(a.ticks_per_day)
    lake.ROW_GROUP_ROWS = a.row_group
    root = a.dir or tempfile.mkdtemp(prefix="btsys-bench-intrabar-")
    store = LocalStorage(root)
    me = psutil.Process()
    try:
        t = time.perf_counter()
        threshold = make_lake(store, a.days, per_day) / a.bars_per_day
        gen_s = time.perf_counter() - t
        bars_from_lake(store, 1, threshold)  # compile
        t = time.perf_counter()
        bars = bars_from_lake(store, a.days, threshold)
        bars_s = time.perf_counter() - t
        n_ticks = a.days * per_day
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"bench/intrabar.py: {a.days} days x {per_day:,} ticks = {n_ticks:,} ticks (lake written in "
            f"{gen_s:.1f}s, row groups of {a.row_group:,}); {os.cpu_count()} cores; load {load}\n"
            f"bars from the lake: {len(bars):,} dollar bars in {bars_s:.2f}s "
            f"({n_ticks / bars_s / 1e6:.1f} M ticks/s)"
        )
        f_ts = (DAY0 * DAY_US + np.arange(0, a.days * 3) * (DAY_US // 3)).astype(np.int64)
        f_rate = np.where(np.arange(f_ts.size) % 2 == 0, 1e-4, -5e-5)
        funding = (f_ts, f_rate)
        run(bars, funding, "ohlc")  # compile
        run(bars, funding, "ticks", LakeTrades(store, SERIES, bars))
        best = {}
        for mode in ("ohlc", "ticks"):
            for _ in range(a.repeat):
                src = LakeTrades(store, SERIES, bars) if mode == "ticks" else None
                with PeakRSS(lambda: [me]) as pk:
                    t = time.perf_counter()
                    res = run(bars, funding, mode, src)
                    dt = time.perf_counter() - t
                if mode not in best or dt < best[mode][0]:
                    best[mode] = (dt, res, src, pk.peak)
        (t_o, r_o, _, m_o), (t_t, r_t, src, m_t) = best["ohlc"], best["ticks"]
        ib = r_t.intrabar
        for name, (dt, mem) in (("ohlc", (t_o, m_o)), ("ticks", (t_t, m_t))):
            rate, mb = len(bars) / dt / 1e6, mem / 1e6
            print(
                f"{name:5s}: backtest {dt * 1e3:8.1f} ms ({rate:6.2f} M bars/s, peak RSS {mb:,.0f} MB); "
                f"bars from the lake + backtest {bars_s + dt:.2f}s"
            )
        print(
            f"ticks / ohlc: {(bars_s + t_t) / (bars_s + t_o):.2f} x end to end (goal: <= 3 x); "
            f"{t_t / t_o:.1f} x for the backtest alone"
        )
        print(
            f"bars that read trades: {ib['intrabar_bars']:,.0f} of {len(bars):,} "
            f"({ib['intrabar_share']:.1%}); trades read {src.trades_read:,} "
            f"({src.trades_read / n_ticks:.1%} of all) in {src.reads} day reads; "
            f"engine passes {ib['passes']}"
        )
        print(
            f"trades {r_o.metrics['n_trades']:.0f} (ohlc) / {r_t.metrics['n_trades']:.0f} (ticks); "
            f"intrabar_disagreements {ib['intrabar_disagreements']:.0f}; final value "
            f"ohlc {r_o.final_value:,.2f}, ticks {r_t.final_value:,.2f}: "
            f"intrabar_pnl_diff {ib['intrabar_pnl_diff']:+,.2f}"
        )
        if a.sweep:
            sweeps(bars, funding, store, src.trades_read)
    finally:
        if a.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
