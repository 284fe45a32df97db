"""Backtest engine benchmark: one 1 M-bar backtest and a 100-combination x 1 M-bar MA sweep.

Prints, in the same run: btsys ``simulate`` (fees + stops on; with bar times and without them,
which must not be slower), a bare numba loop (the floor),
btsys ``sweep`` (signals + simulation + metrics for 100 fast/slow pairs), and vectorbt's
``Portfolio.from_signals`` on the same arrays when vectorbt is installed. Peak memory is the
process's peak RSS growth measured in a child process per case (``resource.ru_maxrss``).

    python bench/backtest.py [--bars 1000000] [--no-vectorbt]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import parse_args  # noqa: E402  (bench/ is the script folder)

FAST = list(range(5, 55, 5))  # 10 x 10 = 100 combinations
SLOW = list(range(60, 160, 10))


def make_bars(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    open_ = np.empty(n)
    open_[0] = close[0]
    open_[1:] = close[:-1]
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0, 0.0005, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0, 0.0005, n)))
    ts = np.arange(n, dtype=np.int64) * 60_000_000  # 1-minute bars
    return ts, open_, high, low, close


def best_of(fn, k: int):
    best = np.inf
    out = None
    for _ in range(k):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _bare_loop():
    from numba import njit

    @njit(cache=False)
    def bare_nb(close, entries, exits, fee, init_cash, equity):
        """Long-only all-in loop at the close with a fee, equity per bar: the floor."""
        cash = init_cash
        pos = 0.0
        eq_sum = 0.0
        for i in range(close.shape[0]):
            if pos == 0.0 and entries[i]:
                pos = cash / (close[i] * (1.0 + fee))
                cash = 0.0
            elif pos > 0.0 and exits[i]:
                cash = pos * close[i] * (1.0 - fee)
                pos = 0.0
            equity[i] = cash + pos * close[i]
            eq_sum += equity[i]
        return cash + pos * close[-1], eq_sum

    return bare_nb


def case(name: str, n: int, q):
    """Run one case in this (child) process; put (name, seconds, result, peak MB growth)."""
    ts, o, h, l, c = make_bars(n)
    from btsys.backtest import simulate
    from btsys.backtest.sweep import ma_cross_signals, sweep

    e, x = ma_cross_signals(c, 10, 50)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = ""
    if name in ("simulate", "simulate_no_ts"):
        kw = dict(
            open=o, high=h, low=l, ts=ts, fees=0.001, stop_loss=0.02, take_profit=0.04, trailing_stop=0.01
        )
        if name == "simulate_no_ts":  # bars without times: calendar metrics NaN, nothing per day
            import warnings

            warnings.simplefilter("ignore")
            kw.pop("ts")
        small = {k: v[:1000] if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        simulate(c[:1000], e[:1000], x[:1000], **small)
        sec, r = best_of(lambda: simulate(c, e, x, **kw), 7)
        info = f"{len(r.orders)} orders, final {r.final_value:.6g}"
    elif name == "bare":
        nb = _bare_loop()
        eq = np.empty(n)
        nb(c[:10], e[:10], x[:10], 0.001, 1e4, eq[:10])
        sec, r = best_of(lambda: nb(c, e, x, 0.001, 1e4, eq), 7)
        info = f"final {r[0]:.6g}"
    elif name == "sweep":
        g = {"fast": FAST, "slow": SLOW}
        sweep(c[:2000], g, open=o[:2000], high=h[:2000], low=l[:2000], ts=ts[:2000], fees=0.001)
        sec, df = best_of(lambda: sweep(c, g, open=o, high=h, low=l, ts=ts, fees=0.001), 3)
        info = f"{len(df)} combinations, best sharpe {df['sharpe'].max():.3f}"
    elif name == "vbt_simulate":
        import vectorbt as vbt

        vbt.Portfolio.from_signals(
            c[:1000],
            e[:1000],
            x[:1000],
            fees=0.001,
            sl_stop=0.02,
            tp_stop=0.04,
            open=o[:1000],
            high=h[:1000],
            low=l[:1000],
        )
        sec, pf = best_of(
            lambda: vbt.Portfolio.from_signals(
                c,
                e,
                x,
                fees=0.001,
                sl_stop=0.02,
                tp_stop=0.04,
                open=o,
                high=h,
                low=l,
                init_cash=1e4,
                freq="1min",
            ),
            3,
        )
        info = f"{pf.orders.count()} orders, final {pf.final_value():.6g}"
    elif name == "vbt_sweep":
        import pandas as pd
        import vectorbt as vbt

        close = pd.Series(c, index=pd.date_range("2020-01-01", periods=n, freq="1min"))

        def run():
            fast = vbt.MA.run(close, FAST, short_name="fast")
            slow = vbt.MA.run(close, SLOW, short_name="slow")
            # product of the windows: broadcast every fast against every slow
            fa = fast.ma.values
            sl = slow.ma.values
            ent = np.repeat(fa, len(SLOW), axis=1) > np.tile(sl, (1, len(FAST)))
            ex = ~ent
            pf = vbt.Portfolio.from_signals(
                close.values[:, None], ent, ex, fees=0.001, init_cash=1e4, freq="1min"
            )
            return pf.sharpe_ratio()

        t0 = time.perf_counter()
        sr = run()
        sec = time.perf_counter() - t0
        info = f"{len(sr)} combinations (first call, includes numba warm-up of vectorbt's cache)"
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024.0
    q.put((name, sec, info, peak))


def run_case(name: str, n: int):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=case, args=(name, n, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        return name, float("nan"), f"failed (exit {p.exitcode})", float("nan")
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--no-vectorbt", action="store_true")
    a = parse_args(ap, quick={"bars": 20_000, "no_vectorbt": True})
    n = a.bars
    try:
        import vectorbt  # noqa: F401

        have_vbt = not a.no_vectorbt
    except ImportError:
        have_vbt = False
    import numba

    print(
        f"bars={n:,}  cpus={os.cpu_count()}  numba threads={numba.get_num_threads()}  "
        f"load={os.getloadavg()[0]:.2f}"
    )
    cases = ["bare", "simulate", "simulate_no_ts", "sweep"] + (
        ["vbt_simulate", "vbt_sweep"] if have_vbt else []
    )
    for name in cases:
        name, sec, info, peak = run_case(name, n)
        work = n * (len(FAST) * len(SLOW) if "sweep" in name else 1)
        print(
            f"{name:>13}: {sec:8.4f} s  {work / sec / 1e6:9.1f} M bar-steps/s  peak +{peak:7.1f} MB  {info}"
        )
    if not have_vbt:
        print("vectorbt not installed: no peer figures")


if __name__ == "__main__":
    main()
