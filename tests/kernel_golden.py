"""Seeded kernel cases whose outputs are pinned in ``tests/data/kernel_golden.npz``.

The stored arrays were computed once by the kernels *before* their refactor into shared helpers
and named phases (``python tests/kernel_golden.py`` on the commit named in the file's ``source``
entry); ``tests/test_kernel_golden.py`` recomputes every case with the current code and requires
the same bits. Cases cover every rule of the event loops (fills, directions, stops, trailing
stops, targets, liquidation, time stop, cooldown, kill switch, every sizing mode, impact,
funding, bet sizes, windows, bars without times), portfolios (shared cash, universe leavers and
delisted symbols, cross-sectional momentum), kernel sweeps of every rule strategy (one symbol and
portfolios), the bar kernels (every kind, fed in pieces into tiny output buffers, and their
error stops) and the feature kernels.

Rerun the generator only when a result is meant to change, and say why in the commit message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kernel_golden.npz")
H = 3_600_000_000
T0 = 1_735_689_600_000_000


# --------------------------------------------------------------------------- inputs
def bars(n: int, seed: int, offset: int = 0, vol: float = 0.012) -> pd.DataFrame:
    """Irregularly spaced bars (0.5-1.5 h) with gaps, high/low around open/close and volumes."""
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    o = np.r_[c[0], c[:-1]] * (1 + rng.normal(0, 0.002, n))
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.005, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.005, n)))
    ts = T0 + offset + np.cumsum(rng.integers(1, 4, n)) * H // 2
    return pd.DataFrame(
        {"ts_close": ts, "open": o, "high": h, "low": lo, "close": c, "volume": rng.uniform(1, 20, n)}
    )


def funding_events(seed: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"ts": T0 + np.arange(0, 400, 8) * H, "rate": np.random.default_rng(seed).normal(2e-4, 5e-4, 50)}
    )


def signals(n: int, seed: int, p: float = 0.06):
    rng = np.random.default_rng(seed)
    return [rng.random(n) < p for _ in range(4)]


SIM_N = 240

#: simulate cases: keyword options (``signals``: which signal arrays are passed)
SIM_CASES = {
    "default": {},
    "close_fill_stops_both": dict(
        fill="close", direction="both", stop_loss=0.02, take_profit=0.04, trailing_stop=0.015, shorts=True
    ),
    "next_open_stops_both": dict(direction="both", stop_loss=0.01, take_profit=0.03, trailing_stop=0.02),
    "short_liquidation": dict(direction="short", leverage=20.0, maintenance_margin=0.01, fees=0.001),
    "long_liquidation_close": dict(fill="close", leverage=15.0, maintenance_margin=0.02, stop_loss=0.1),
    "qty_step_fees": dict(size=3.7, size_mode="qty", step=0.5, min_qty=1.0, fee_fixed=0.3, min_fee=0.5),
    "notional_caps_time_cooldown": dict(
        size=4000.0, size_mode="notional", max_position=3000.0, time_stop=7, cooldown=3, fill="close"
    ),
    "percent_maxlev_kill": dict(
        size=0.5, size_mode="percent", leverage=3.0, max_leverage=1.2, max_drawdown=0.08, direction="both"
    ),
    "kill_close_fill": dict(max_drawdown=0.05, fill="close", direction="both", shorts=True),
    "vol_target": dict(size=0.4, size_mode="vol_target", vol_window=12, direction="both"),
    "impact": dict(
        slippage=0.0005, slippage_impact=0.002, impact_exponent=0.7, volume=True, size=50.0, size_mode="qty"
    ),
    "impact_close": dict(slippage_impact=0.001, volume=True, fill="close", stop_loss=0.015, direction="both"),
    "funding_both": dict(funding=True, direction="both", leverage=2.0, trailing_stop=0.03),
    "bet_sizes": dict(scale=True, direction="both", shorts=True, take_profit=0.02),
    "window": dict(window=(50, 200), size_mode="vol_target", size=0.3, vol_window=20, funding=True),
    "no_times": dict(ts=False, stop_loss=0.03),
    "tsl_only_close": dict(trailing_stop=0.01, fill="close", direction="short", shorts=True),
    "time_stop_next_open": dict(time_stop=4, cooldown=2, direction="both"),
}


def sim_case(name: str):
    """``simulate``'s result for one case."""
    from btsys.backtest import simulate

    kw = dict(SIM_CASES[name])
    b = bars(SIM_N, 11)
    le, lx, se, sx = signals(SIM_N, 12)
    rng = np.random.default_rng(13)
    args = dict(open=b["open"].to_numpy(), high=b["high"].to_numpy(), low=b["low"].to_numpy())
    if kw.pop("ts", True):
        args["ts"] = b["ts_close"].to_numpy()
    if kw.pop("volume", False):
        args["volume"] = b["volume"].to_numpy()
    if kw.pop("shorts", False):
        args.update(short_entries=se, short_exits=sx)
    if kw.pop("funding", False):
        f = funding_events(3)
        args.update(funding_ts=f["ts"].to_numpy(), funding_rate=f["rate"].to_numpy())
    if kw.pop("scale", False):
        args["size_scale"] = rng.uniform(0.0, 1.0, SIM_N)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simulate(b["close"].to_numpy(), le, lx, **args, **kw)


PF_SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")


def pf_frames():
    return {"AAAUSDT": bars(200, 21), "BBBUSDT": bars(170, 22, H // 4), "CCCUSDT": bars(130, 23, H // 3)}


def pf_universe(frames) -> pd.DataFrame:
    """Random membership every 9 h; CCCUSDT leaves after its data ended (delisted)."""
    r = np.random.default_rng(24)
    ts = np.arange(T0 - H, T0 + 480 * H, 9 * H, dtype=np.int64)
    u = pd.DataFrame({"ts": ts, **{s: r.random(len(ts)) < 0.7 for s in frames}})
    u["CCCUSDT"] = u["CCCUSDT"] & (u["ts"] < frames["CCCUSDT"]["ts_close"].iloc[-1])
    return u


PF_CASES = {
    "next_open_stops": dict(
        cfg={
            "direction": "both",
            "leverage": 2.0,
            "risk": {"stop_loss": 0.02, "take_profit": 0.05, "trailing_stop": 0.03},
        }
    ),
    "close_all_cash": dict(cfg={"fill": "close", "fees": {"taker": 0.001}}, shorts=True),
    "vol_target_funding": dict(
        cfg={
            "size": {"mode": "vol_target", "value": 0.5, "vol_window": 10},
            "funding": True,
            "direction": "both",
        }
    ),
    "universe_next_open": dict(cfg={"direction": "both", "risk": {"stop_loss": 0.02}}, universe=True),
    "universe_close_time": dict(
        cfg={"fill": "close", "risk": {"time_stop_bars": 6, "cooldown_bars": 2}}, universe=True, shorts=True
    ),
    "kill_percent": dict(
        cfg={
            "size": {"mode": "percent", "value": 0.3},
            "leverage": 4.0,
            "risk": {"max_drawdown": 0.1},
            "direction": "both",
        }
    ),
    "liquidation_impact": dict(cfg={"leverage": 25.0, "slippage": {"impact": 0.001}, "direction": "short"}),
    "bet_sizes_window": dict(
        cfg={"direction": "both", "risk": {"take_profit": 0.02}}, scale=True, window=(30, 250)
    ),
}


def pf_case(name: str):
    from btsys.backtest.portfolio import simulate_portfolio

    case = PF_CASES[name]
    frames = pf_frames()
    sig = {s: signals(len(f), 30 + k, 0.05) for k, (s, f) in enumerate(frames.items())}
    kw = {}
    if case.get("shorts"):
        kw.update(
            short_entries={s: v[2] for s, v in sig.items()}, short_exits={s: v[3] for s, v in sig.items()}
        )
    if case.get("scale"):
        kw["size_scale"] = {s: np.random.default_rng(7).uniform(0, 1, len(f)) for s, f in frames.items()}
    if case.get("universe"):
        kw["universe"] = pf_universe(frames)
    if "window" in case:
        kw["window"] = case["window"]
    funding = {s: funding_events(k) for k, s in enumerate(frames)}
    return simulate_portfolio(
        frames,
        {s: v[0] for s, v in sig.items()},
        {s: v[1] for s, v in sig.items()},
        case["cfg"],
        funding=funding,
        **kw,
    )


XS_CASES = {
    "xs_next_open": dict(cfg={"risk": {"stop_loss": 0.03}}, top_n=1, bottom_n=1, every=15),
    "xs_close_universe": dict(
        cfg={"fill": "close", "leverage": 2.0}, top_n=1, bottom_n=1, every="1D", universe=True
    ),
}


def xs_case(name: str):
    from btsys.backtest.portfolio import simulate_cross_sectional

    case = XS_CASES[name]
    frames = pf_frames()
    scores = {}
    for s, f in frames.items():
        c = f["close"].to_numpy()
        sc = np.full(len(c), np.nan)
        sc[20:] = np.log(c[20:] / c[:-20])
        scores[s] = sc
    u = pf_universe(frames) if case.get("universe") else None
    return simulate_cross_sectional(
        frames, scores, case["top_n"], case["bottom_n"], case["every"], case["cfg"], universe=u
    )


#: array-level sweeps (``btsys.backtest.sweep.sweep``): strategy, grid, fixed options
SWEEP_CASES = {
    "ma_cross_options": (
        "ma_cross",
        {
            "fast": [3, 5, 8],
            "slow": [20, 30],
            "stop_loss": [0.0, 0.02],
            "direction": ["long", "both"],
            "fill": ["next_open", "close"],
        },
        {},
    ),
    "ma_cross_sizes": (
        "ma_cross",
        {
            "size_mode": ["all", "qty", "percent", "vol_target"],
            "trailing_stop": [0.0, 0.02],
            "leverage": [1.0, 5.0],
        },
        dict(size=0.5, fast=5, slow=30, vol_window=10, direction="both"),
    ),
    "ema_cross": (
        "ema_cross",
        {"fast": [4, 9], "slow": [25, 40], "take_profit": [0.0, 0.03]},
        dict(direction="short", time_stop=9),
    ),
    "rsi_reversion": (
        "rsi_reversion",
        {"window": [7, 14], "lower": [30.0, 40.0], "max_drawdown": [0.0, 0.1]},
        dict(direction="both", cooldown=2),
    ),
    "bollinger_breakout": (
        "bollinger_breakout",
        {"window": [10, 20], "k": [1.0, 2.0], "fees": [0.0, 0.002]},
        dict(direction="both", fill="close"),
    ),
    "momentum": (
        "momentum",
        {"lookback": [5, 20], "threshold": [0.0, 0.01], "slippage": [0.0, 0.001]},
        dict(direction="both", stop_loss=0.03),
    ),
    "ma_cross_window": (
        "ma_cross",
        {"fast": [3, 6], "slow": [20, 40]},
        dict(window=(80, 230), stop_loss=0.02),
    ),
}


def sweep_case(name: str):
    """``(table, daily returns)`` of an array-level sweep."""
    from btsys.backtest.sweep import sweep

    strategy, grid, fixed = SWEEP_CASES[name]
    fixed = dict(fixed)
    b = bars(SIM_N, 41)
    f = funding_events(4)
    window = fixed.pop("window", None)
    return sweep(
        b["close"].to_numpy(),
        grid,
        b["open"].to_numpy(),
        b["high"].to_numpy(),
        b["low"].to_numpy(),
        strategy,
        ts=b["ts_close"].to_numpy(),
        volume=b["volume"].to_numpy(),
        funding_ts=f["ts"].to_numpy(),
        funding_rate=f["rate"].to_numpy(),
        daily_returns=True,
        window=window,
        **fixed,
    )


#: config sweeps over several symbols (portfolio path): strategy, base, backtest, grid, universe
FRAME_SWEEP_CASES = {
    "pf_ma_cross": (
        "ma_cross",
        {"fast": 5, "slow": 30},
        {"direction": "both", "funding": True},
        {
            "strategy.fast": [3, 8],
            "backtest.risk.stop_loss": [0.0, 0.02],
            "backtest.fill": ["next_open", "close"],
        },
        False,
    ),
    "pf_rsi_universe": (
        "rsi_reversion",
        {"window": 14, "lower": 35.0, "upper": 65.0, "exit": 50.0},
        {"direction": "both"},
        {"strategy.window": [6, 12], "backtest.size.mode": ["all", "percent"], "backtest.size.value": [0.4]},
        True,
    ),
    "xs_momentum": (
        "xs_momentum",
        {"lookback": 30, "skip": 0, "top_n": 1, "bottom_n": 1, "rebalance_every": 20},
        {"funding": True},
        {"strategy.lookback": [10, 30], "strategy.rebalance_every": [7, 20], "backtest.leverage": [1.0, 3.0]},
        False,
    ),
    "xs_momentum_universe": (
        "xs_momentum",
        {"lookback": 20, "skip": 1, "top_n": 1, "bottom_n": 1, "rebalance_every": 10},
        {"fill": "close"},
        {"strategy.skip": [0, 2], "backtest.risk.trailing_stop": [0.0, 0.02]},
        True,
    ),
}


def frame_sweep_case(name: str):
    from omegaconf import OmegaConf

    from btsys.backtest.sweep import sweep_frames
    from btsys.config import BacktestConfig

    strategy, base, bt, grid, with_universe = FRAME_SWEEP_CASES[name]
    frames = pf_frames()
    cfg = OmegaConf.create(
        {
            "strategy": {"name": strategy, **base},
            "backtest": OmegaConf.merge(OmegaConf.structured(BacktestConfig), bt),
        }
    )
    funding = {s: funding_events(k) for k, s in enumerate(frames)}
    u = pf_universe(frames) if with_universe else None
    return sweep_frames(cfg, frames, grid, funding=funding, daily_returns=True, universe=u)


# --------------------------------------------------------------------------- bar kernels
TICK_N = 3000


def ticks(seed: int = 51):
    """Tick columns with ties in ``ts``, repeated prices (tick size 0.01) and unknown sides."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.integers(0, 3_000_000, TICK_N)).astype(np.int64)  # ties: steps of 0
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 3e-4, TICK_N))), 2)
    qty = rng.lognormal(-1.0, 1.0, TICK_N)
    side = rng.choice(np.array([0, 1, 2], np.uint8), TICK_N, p=[0.4, 0.4, 0.2])
    return dict(
        ts=ts,
        tid=np.arange(1000, 1000 + TICK_N, dtype=np.int64),
        price=price,
        qty=qty,
        quote=price * qty,
        side=side,
    )


def cuts(n: int, seed: int, k: int) -> list:
    """``k`` random piece boundaries of ``[0, n)`` (the stream fed in pieces)."""
    r = np.random.default_rng(seed)
    return [0, *sorted(int(x) for x in r.choice(np.arange(1, n), k, replace=False)), n]


def drive(kernel, extra_fn, t, cap: int, pieces: list, ist=None, fst=None):
    """Feed ``t`` to a resumable bar kernel piece by piece with an output buffer of ``cap`` rows,
    draining it whenever it is full. ``extra_fn(piece)`` gives the kernel's arguments between the
    tick columns and ``start`` (they may change per piece, as dynamic thresholds do). Returns the
    bars, the final state and the ``(row, n_out, err)`` of an error stop (or None)."""
    from btsys.bars import _nb as bnb

    if ist is None:
        ist, fst = bnb.new_state()
    out_i = np.zeros((cap, bnb.N_OUT_I), np.int64)
    out_f = np.zeros((cap, bnb.N_OUT_F), np.float64)
    got_i, got_f, n_out, stop = [], [], 0, None
    cols = (t["ts"], t["tid"], t["price"], t["qty"], t["quote"], t["side"])
    for j in range(len(pieces) - 1):
        i, end = pieces[j], pieces[j + 1]
        while i < end:
            i, n_out, err = kernel(*cols, *extra_fn(j), i, end, ist, fst, out_i, out_f, n_out)
            if err:
                stop = (i, n_out, err)
                break
            if n_out == cap:
                got_i.append(out_i.copy())
                got_f.append(out_f.copy())
                n_out = 0
        if stop:
            break
    got_i.append(out_i[:n_out].copy())
    got_f.append(out_f[:n_out].copy())
    return np.concatenate(got_i), np.concatenate(got_f), ist.copy(), fst.copy(), stop


def _bar_kernels():
    from btsys.bars import _nb as bnb

    thr = {bnb.M_TICK: 37.0, bnb.M_VOLUME: 15.0, bnb.M_DOLLAR: 1500.0}
    cases = {}
    for m, name in ((bnb.M_TICK, "tick"), (bnb.M_VOLUME, "volume"), (bnb.M_DOLLAR, "dollar")):
        # thresholds change per piece, as a dynamic threshold changes per day
        cases[f"threshold_{name}"] = (bnb.threshold_bars_nb, lambda j, m=m: (m, thr[m] * (1 + 0.1 * (j % 3))))
        cases[f"threshold_par_{name}"] = (
            bnb.threshold_bars_par_nb,
            lambda j, m=m: (m, thr[m] * (1 + 0.1 * (j % 3))),
        )
        for run in (False, True):
            label = f"flow_{name}_{'run' if run else 'imbalance'}"
            cases[label] = (bnb.flow_bars_nb, lambda j, m=m, run=run: (m, run, 60.0, 2 / 21, 2 / 11, 12, 300))
    empty = np.zeros(0, np.int64)
    cases["time_fixed"] = (bnb.time_bars_nb, lambda j: (300_000_000, empty, 300e6))
    return cases


def bar_case(name: str, t=None):
    """Bars, final state and error stop of one bar-kernel case (pieces and a 7-row buffer; the
    two-pass kernel gets a larger buffer and fewer pieces, so that it takes its parallel path)."""
    t = ticks() if t is None else t
    if name == "time_calendar":  # caller-computed bins (irregular, as calendar months are)
        from btsys.bars import _nb as bnb

        bins = (t["ts"] // 1_000_000) ** 2 // 700_000_000_000  # caller-made bin ids
        return drive(bnb.time_bars_nb, lambda j: (0, bins, np.nan), t, 7, cuts(TICK_N, 8, 9))
    kernel, extra = _bar_kernels()[name]
    if "par" in name:
        return drive(kernel, extra, t, 64, cuts(TICK_N, 5, 3))
    return drive(kernel, extra, t, 7, cuts(TICK_N, 6, 9))


def warm_flow_case():
    """Imbalance bars whose expectations are set up front (``imbalance_init``)."""
    from btsys.bars import _nb as bnb

    ist, fst = bnb.new_state()
    ist[bnb.I_WARM] = 1
    fst[bnb.F_E_T] = 30.0
    fst[bnb.F_E_A] = 0.4
    fst[bnb.F_E_B] = 0.4
    return drive(
        bnb.flow_bars_nb,
        lambda j: (bnb.M_VOLUME, False, 30.0, 0.1, 0.2, 3, 200),
        ticks(),
        7,
        cuts(TICK_N, 9, 5),
        ist,
        fst,
    )


def bar_names() -> list:
    return [*_bar_kernels(), "time_calendar"]


#: invalid ticks: (column, row, value) -> every kernel stops at that row with its error code
BAD_TICKS = {
    "price_nan": ("price", 777, np.nan),
    "qty_zero": ("qty", 1500, 0.0),
    "quote_inf": ("quote", 2300, np.inf),
    "side_3": ("side", 2600, 3),
    "order": ("ts", 2900, T0),
}


def bad_tick_case(bad: str, kernel: str):
    t = ticks()
    col, row, value = BAD_TICKS[bad]
    t = {k: v.copy() for k, v in t.items()}
    t[col][row] = value
    return bar_case(kernel, t)


# --------------------------------------------------------------------------- feature kernels
def feature_case():
    from btsys.features import _nb as fnb

    b = bars(250, 61)
    c = b["close"].to_numpy()
    o, h, lo = (b[k].to_numpy() for k in ("open", "high", "low"))
    v = b["volume"].to_numpy()
    cn = c.copy()
    cn[[50, 51, 200]] = np.nan
    return {
        "rolling_sum": fnb.rolling_sum_nb(cn, 9),
        "rolling_mean": fnb.rolling_mean_nb(c, 20),
        "rolling_std": fnb.rolling_std_nb(cn * 1000, 15, 1),
        "rolling_cov": fnb.rolling_cov_nb(c, v, 12, 1),
        "rolling_slope": fnb.rolling_slope_nb(c, v, 12),
        "log_return": fnb.log_return_nb(c, 5),
        "realized_vol": fnb.realized_vol_nb(c, 10),
        "parkinson_vol": fnb.parkinson_vol_nb(h, lo, 10),
        "garman_klass_vol": fnb.garman_klass_vol_nb(o, h, lo, c, 10),
        "ema": fnb.ema_nb(cn, 10),
        "rsi": fnb.rsi_nb(c, 14),
        "atr": fnb.atr_nb(h, lo, c, 14),
        "ratio_of_sums": fnb.ratio_of_sums_nb(c * v, v, 10),
        "roll_spread": fnb.roll_spread_nb(c, 20),
    }


# --------------------------------------------------------------------------- all results, flat
def _result_arrays(prefix: str, r) -> dict:
    out = {
        f"{prefix}/equity": np.asarray(r.equity),
        f"{prefix}/cash": np.asarray(r.cash),
        f"{prefix}/position": np.asarray(r.position),
        f"{prefix}/orders": np.asarray(r.order_records),
        f"{prefix}/trades": np.asarray(r.trade_records),
        f"{prefix}/metrics": np.array([r.metrics[k] for k in r.metrics], dtype=np.float64),
    }
    return out


def _table_arrays(prefix: str, table, daily=None) -> dict:
    out = {f"{prefix}/columns": np.array([str(c) for c in table.columns])}
    for c in table.columns:
        v = table[c].to_numpy()
        out[f"{prefix}/col/{c}"] = v.astype(str) if v.dtype == object else v
    if daily is not None:
        out[f"{prefix}/daily"] = daily.to_numpy()
        out[f"{prefix}/daily_index"] = daily.index.to_numpy()
    return out


def compute_all() -> dict:
    """Every case's arrays, keyed ``kind/case/what``."""
    out = {}
    out["metric_names"] = np.array(list(sim_case("default").metrics))
    for name in SIM_CASES:
        out.update(_result_arrays(f"simulate/{name}", sim_case(name)))
    for name in PF_CASES:
        out.update(_result_arrays(f"portfolio/{name}", pf_case(name)))
    for name in XS_CASES:
        out.update(_result_arrays(f"cross_sectional/{name}", xs_case(name)))
    for name in SWEEP_CASES:
        out.update(_table_arrays(f"sweep/{name}", *sweep_case(name)))
    for name in FRAME_SWEEP_CASES:
        out.update(_table_arrays(f"sweep_frames/{name}", *frame_sweep_case(name)))
    for name in bar_names():
        out.update(_bar_arrays(f"bars/{name}", bar_case(name)))
    out.update(_bar_arrays("bars/flow_warm", warm_flow_case()))
    for bad in BAD_TICKS:
        for kernel in ("threshold_dollar", "threshold_par_tick", "flow_volume_run", "time_fixed"):
            _, _, ist, fst, stop = bad_tick_case(bad, kernel)
            out.update({f"bad_ticks/{bad}/{kernel}/{k}": v for k, v in (("ist", ist), ("fst", fst))})
            out[f"bad_ticks/{bad}/{kernel}/stop"] = np.array(stop, np.int64)
    for k, v in feature_case().items():
        out[f"features/{k}"] = v
    return out


def _bar_arrays(prefix: str, res) -> dict:
    oi, of, ist, fst, stop = res
    return {
        f"{prefix}/out_i": oi,
        f"{prefix}/out_f": of,
        f"{prefix}/ist": ist,
        f"{prefix}/fst": fst,
        f"{prefix}/stop": np.array(stop if stop else (-1, -1, 0), np.int64),
    }


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "../btsys"], cwd=here, capture_output=True, text=True
    ).stdout.strip()
    if dirty:
        sys.exit(f"btsys/ has uncommitted changes: golden outputs come from a committed tree\n{dirty}")
    out = compute_all()
    out["source"] = np.array(f"btsys at {commit}")
    tmp = GOLDEN + ".tmp.npz"
    np.savez_compressed(tmp, **out)
    os.replace(tmp, GOLDEN)
    print(f"{len(out)} arrays from {commit} -> {GOLDEN} ({os.path.getsize(GOLDEN) / 1e3:.0f} kB)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
