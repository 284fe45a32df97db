"""Backtest engine benchmark: one 1 M-bar backtest and 100-combination x 1 M-bar sweeps.

Prints, in the same run: btsys ``simulate`` (fees + stops on) next to a bare numba loop (the floor
of one backtest), with bar times and without them (``simulate_no_ts``, which must not be slower);
the 100-pair MA sweep (signals from the strategy's kernel + the engine's event loop + metrics, per
combination) next to a bare numba ``prange`` loop doing the same crossings and
fees (its moving averages included); a 100-combination sweep of every other rule strategy
(ema_cross, rsi_reversion, bollinger_breakout, momentum, and xs_momentum on 4 symbols x 250 k bars);
and vectorbt's ``Portfolio.from_signals`` on the same arrays when vectorbt is installed. Peak memory
is the process's peak RSS growth measured in a child process per case (``resource.ru_maxrss``).
The machine may be shared: the load average is printed, and the ratio to the bare loop measured
in the same run is the figure to compare.

    python bench/backtest.py [--bars 1000000] [--no-vectorbt] [--quick] [--cases sweep,ema_cross]
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
#: the 100-combination grid of every other rule strategy (array-level ``sweep`` keys)
GRIDS = {
    "ema_cross": {"fast": FAST, "slow": SLOW},
    "rsi_reversion": {"window": list(range(5, 55, 5)), "lower": [20.0 + 2.5 * i for i in range(10)]},
    "bollinger_breakout": {"window": list(range(10, 110, 10)), "k": [1.0 + 0.25 * i for i in range(10)]},
    "momentum": {"lookback": list(range(10, 110, 10)), "threshold": [0.0005 * i for i in range(10)]},
    "xs_momentum": {
        "strategy.lookback": list(range(50, 550, 50)),
        "strategy.rebalance_every": list(range(20, 220, 20)),
    },
}


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


def _bare_sweep():
    from numba import njit, prange

    @njit(cache=False, parallel=True)
    def bare_sweep_nb(close, windows, fast_row, slow_row, fee, init_cash, n_threads, out):
        """The MA sweep's floor: every distinct SMA once (running sums), then per pair, on a
        thread's own equity buffer as the bare single loop above: the crossings (enter when fast
        rises above slow, leave when it falls back), all in at the close with a fee, the equity
        written per bar (what drawdowns and daily returns are computed from)."""
        n = close.shape[0]
        mas = np.empty((windows.shape[0], n))
        for j in prange(windows.shape[0]):
            w = windows[j]
            s = 0.0
            for i in range(n):
                s += close[i]
                if i >= w:
                    s -= close[i - w]
                mas[j, i] = s / w if i >= w - 1 else np.nan
        n_comb = fast_row.shape[0]
        for t in prange(n_threads):
            equity = np.empty(n)
            for c in range(t, n_comb, n_threads):
                f = mas[fast_row[c]]
                sl = mas[slow_row[c]]
                cash = init_cash
                pos = 0.0
                prev = False
                for i in range(n):
                    state = f[i] > sl[i]
                    if state and not prev and pos == 0.0:
                        pos = cash / (close[i] * (1.0 + fee))
                        cash = 0.0
                    elif prev and not state and pos > 0.0:
                        cash = pos * close[i] * (1.0 - fee)
                        pos = 0.0
                    prev = state
                    equity[i] = cash + pos * close[i]
                out[c, 0] = equity[n - 1]
                out[c, 1] = equity.max()

    return bare_sweep_nb


def _xs_frames(n: int):
    """Four symbols of n/4 bars each (1-minute bars, interleaved close times)."""
    import pandas as pd

    frames = {}
    for k in range(4):
        ts, o, h, lo, c = make_bars(n // 4, seed=10 + k)
        frames[f"S{k}USDT"] = pd.DataFrame(
            {"ts_close": ts * 4 + k * 15_000_000, "open": o, "high": h, "low": lo, "close": c}
        )
    return frames


def _xs_sweep(frames, grid):
    from omegaconf import OmegaConf

    from btsys.backtest.sweep import sweep_frames
    from btsys.config import BacktestConfig

    bt = OmegaConf.merge(
        OmegaConf.structured(BacktestConfig), {"fees": {"taker": 0.001}, "slippage": {"bps": 0.0}}
    )
    strat = {
        "name": "xs_momentum",
        "lookback": 100,
        "skip": 0,
        "top_n": 1,
        "bottom_n": 1,
        "rebalance_every": 50,
    }
    return sweep_frames(OmegaConf.create({"strategy": strat, "backtest": bt}), frames, grid)


def interleaved(fn, floor, k: int):
    """Best times of ``fn`` and of its floor, alternated ``k`` times (same load for both)."""
    best_fn = best_floor = np.inf
    out = None
    for _ in range(k):
        t0 = time.perf_counter()
        out = fn()
        best_fn = min(best_fn, time.perf_counter() - t0)
        t0 = time.perf_counter()
        floor()
        best_floor = min(best_floor, time.perf_counter() - t0)
    return best_fn, best_floor, out


def _floor_sweep(c):
    """The bare MA-sweep loop over ``c``, compiled and warmed: a no-argument callable."""
    import numba

    nb = _bare_sweep()
    windows = np.array(sorted(set(FAST) | set(SLOW)), dtype=np.int64)
    row = {w: i for i, w in enumerate(windows)}
    fr = np.array([row[f] for f in FAST for _ in SLOW], dtype=np.int64)
    sr = np.array([row[s] for _ in FAST for s in SLOW], dtype=np.int64)
    out = np.empty((len(fr), 2))
    th = numba.get_num_threads()
    nb(c[:2000], windows, fr, sr, 0.001, 1e4, th, out)
    return lambda: nb(c, windows, fr, sr, 0.001, 1e4, th, out)


def case(name: str, n: int, q):
    """Run one case in this (child) process; put (name, seconds, info, peak MB growth, floor
    seconds): the floor (bare loop) is timed in this process, alternating with the case."""
    import pandas as pd

    from btsys.backtest import simulate
    from btsys.backtest.sweep import sweep
    from btsys.signals import generate_signals

    ts, o, h, lo, c = make_bars(n)
    sig = generate_signals({"name": "ma_cross", "fast": 10, "slow": 50}, pd.DataFrame({"close": c}))
    e, x = sig.entries, sig.exits
    info, floor = "", float("nan")
    costs = dict(fees=0.001, slippage=0.0)
    if name in ("simulate", "simulate_no_ts"):
        kw = dict(
            open=o, high=h, low=lo, ts=ts, stop_loss=0.02, take_profit=0.04, trailing_stop=0.01, **costs
        )
        if name == "simulate_no_ts":  # bars without times: calendar metrics NaN, nothing per day
            import warnings

            warnings.simplefilter("ignore")
            kw.pop("ts")
        small = {k: v[:1000] if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        simulate(c[:1000], e[:1000], x[:1000], **small)
        nb = _bare_loop()
        eq = np.empty(n)
        nb(c[:10], e[:10], x[:10], 0.001, 1e4, eq[:10])
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        simulate(c, e, x, **kw)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024.0
        sec, floor, r = interleaved(lambda: simulate(c, e, x, **kw), lambda: nb(c, e, x, 0.001, 1e4, eq), 7)
        info = f"{len(r.orders)} orders, final {r.final_value:.6g}"
    elif name in ("sweep", *GRIDS):
        if name == "xs_momentum":
            frames = _xs_frames(n)
            _xs_sweep(
                {s: f.iloc[:3000] for s, f in frames.items()}, {k: v[:2] for k, v in GRIDS[name].items()}
            )
            run = lambda: _xs_sweep(frames, GRIDS[name])  # noqa: E731
        else:
            g = GRIDS.get(name, {"fast": FAST, "slow": SLOW})
            bars = dict(
                open=o, high=h, low=lo, ts=ts, strategy="ma_cross" if name == "sweep" else name, **costs
            )
            sweep(c[:3000], g, **{k: (v[:3000] if isinstance(v, np.ndarray) else v) for k, v in bars.items()})
            run = lambda: sweep(c, g, **bars)  # noqa: E731
        bare = _floor_sweep(c)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024.0
        sec, floor, df = interleaved(run, bare, 3)
        where = f" on 4 symbols x {n // 4:,} bars" if name == "xs_momentum" else ""
        trades = df["n_trades"].median()
        info = (
            f"{len(df)} combinations{where}, best sharpe {df['sharpe'].max():.3f}, median {trades:.0f} trades"
        )
    elif name == "vbt_simulate":
        import vectorbt as vbt

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        vbt.Portfolio.from_signals(
            c[:1000],
            e[:1000],
            x[:1000],
            fees=0.001,
            sl_stop=0.02,
            tp_stop=0.04,
            open=o[:1000],
            high=h[:1000],
            low=lo[:1000],
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
                low=lo,
                init_cash=1e4,
                freq="1min",
            ),
            3,
        )
        info = f"{pf.orders.count()} orders, final {pf.final_value():.6g}"
    elif name == "vbt_sweep":
        import vectorbt as vbt

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

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
    if name.startswith("vbt"):
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024.0
    q.put((name, sec, info, peak, floor))


def run_case(name: str, n: int):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=case, args=(name, n, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        return name, float("nan"), f"failed (exit {p.exitcode})", float("nan"), float("nan")
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--no-vectorbt", action="store_true")
    ap.add_argument("--cases", default="", help="comma-separated cases to run (default: all)")
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
    cases = ["simulate", "simulate_no_ts", "sweep", *GRIDS] + (
        ["vbt_simulate", "vbt_sweep"] if have_vbt else []
    )
    if a.cases:
        wanted = a.cases.split(",")
        unknown = set(wanted) - set(cases)
        if unknown:
            ap.error(f"unknown cases {sorted(unknown)}; known: {', '.join(cases)}")
        cases = [c for c in cases if c in wanted]
    for name in cases:
        name, sec, info, peak, floor = run_case(name, n)
        work = n * (1 if "simulate" in name else 100)
        vs = f"  bare {floor:7.4f} s -> {sec / floor:5.2f} x" if np.isfinite(floor) else ""
        rate = work / sec / 1e6
        print(f"{name:>18}: {sec:8.4f} s  {rate:8.1f} M bar-steps/s  peak +{peak:6.1f} MB{vs}  {info}")
    print(f"load at the end: {os.getloadavg()[0]:.2f}")
    if not have_vbt:
        print("vectorbt not installed: no peer figures")


if __name__ == "__main__":
    main()
