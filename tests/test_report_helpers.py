"""Real BacktestResults for the report tests (no test functions here).

``make_result`` runs ``btsys.backtest.simulate`` when the engine is available; until then (the
engine is built concurrently) it runs a small, exact long-only MA-cross simulation on a seeded
random-walk price path and returns an object with the ``BacktestResult`` fields the reporting
consumes: ``ts``, ``equity``, ``cash``, ``position``, ``orders``, ``trades``, ``metrics``,
``final_value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from btsys.report.stats import daily_returns, max_drawdown, sharpe, sortino

HOUR_US = 3_600_000_000
T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z


@dataclass(frozen=True)
class _Result:
    ts: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    orders: np.ndarray
    trades: pd.DataFrame
    metrics: dict = field(default_factory=dict)
    final_value: float = 0.0


def prices(n: int, seed: int, bar_us: int = HOUR_US, vol: float = 0.01, tick: float = 0.0):
    """A seeded random-walk close around 100 (on a ``tick`` price grid when ``tick`` > 0)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    if tick > 0:
        close = np.round(close / tick) * tick
    ts = T0 + np.arange(n, dtype=np.int64) * bar_us
    return ts, close


def _sma(x, w):
    c = np.cumsum(np.r_[0.0, x])
    out = np.full(len(x), np.nan)
    out[w - 1 :] = (c[w:] - c[:-w]) / w
    return out


def _own_sim(ts, close, fast, slow, fee=0.0005, cash0=10_000.0):
    f, s = _sma(close, fast), _sma(close, slow)
    want = np.nan_to_num(f > s, nan=0).astype(bool) & ~np.isnan(s)
    n = len(close)
    cash, pos = cash0, 0.0
    eq, cash_a, pos_a, orders, trades = np.empty(n), np.empty(n), np.empty(n), [], []
    entry = None
    for i in range(n):
        # signal at i-1 close, fill at bar i's price (close used as the open of the next bar)
        if i > 0 and want[i - 1] and pos == 0.0:
            px = close[i - 1]
            pos = cash / (px * (1 + fee))
            fees = pos * px * fee
            cash -= pos * px + fees
            orders.append((i, ts[i], 1, pos, px, fees))
            entry = (i, ts[i], px, fees)
        elif i > 0 and not want[i - 1] and pos > 0.0:
            px = close[i - 1]
            fees = pos * px * fee
            cash += pos * px - fees
            orders.append((i, ts[i], -1, pos, px, fees))
            pnl = pos * (px - entry[2]) - entry[3] - fees
            trades.append(
                (
                    entry[0],
                    i,
                    entry[1],
                    ts[i],
                    1,
                    pos,
                    entry[2],
                    px,
                    pnl,
                    pnl / (pos * entry[2]),
                    i - entry[0],
                    entry[3] + fees,
                    0.0,
                    False,
                )
            )
            pos = 0.0
        eq[i], cash_a[i], pos_a[i] = cash + pos * close[i], cash, pos
    if pos > 0.0:
        px = close[-1]
        pnl = pos * (px - entry[2]) - entry[3]
        trades.append(
            (
                entry[0],
                n - 1,
                entry[1],
                ts[-1],
                1,
                pos,
                entry[2],
                px,
                pnl,
                pnl / (pos * entry[2]),
                n - 1 - entry[0],
                entry[3],
                0.0,
                True,
            )
        )
    odt = np.dtype(
        [("idx", "i8"), ("ts", "i8"), ("side", "i1"), ("size", "f8"), ("price", "f8"), ("fees", "f8")]
    )
    cols = [
        "entry_idx",
        "exit_idx",
        "entry_ts",
        "exit_ts",
        "direction",
        "size",
        "entry_price",
        "exit_price",
        "pnl",
        "return",
        "duration_bars",
        "fees",
        "funding",
        "is_open",
    ]
    tr = pd.DataFrame(trades, columns=cols)
    _, dr = daily_returns(ts, eq)
    total = eq[-1] / cash0 - 1
    days = max(len(dr), 1)
    ann = (1 + total) ** (365 / days) - 1
    mdd = max_drawdown(eq)
    wins = tr["pnl"] > 0
    gross_loss = -tr.loc[~wins, "pnl"].sum()
    m = {
        "total_return": total,
        "annual_return": ann,
        "sharpe": sharpe(dr),
        "sortino": sortino(dr),
        "max_drawdown": mdd,
        "calmar": ann / mdd if mdd > 0 else math.nan,
        "win_rate": float(wins.mean()) if len(tr) else math.nan,
        "profit_factor": tr.loc[wins, "pnl"].sum() / gross_loss if gross_loss > 0 else math.inf,
        "n_trades": len(tr),
        "exposure": float((pos_a > 0).mean()),
        "fees_paid": float(sum(o[5] for o in orders)),
        "funding_paid": 0.0,
        "max_drawdown_duration": 0.0,
        "expectancy": float(tr["pnl"].mean()) if len(tr) else 0.0,
        "turnover": 0.0,
        "final_value": float(eq[-1]),
        "open_position": float(pos > 0),
    }
    return _Result(ts, eq, cash_a, pos_a, np.array(orders, dtype=odt), tr, m, float(eq[-1]))


def make_result(
    fast: int = 10, slow: int = 50, n: int = 24 * 120, seed: int = 1, bar_us: int = HOUR_US, tick: float = 0.0
):
    """A real backtest of an MA cross over ``n`` bars (default 120 days of hourly bars) of
    :func:`prices`."""
    ts, close = prices(n, seed, bar_us, tick=tick)
    try:
        from btsys.backtest import simulate  # the real engine, once it has landed
    except ImportError:
        return _own_sim(ts, close, fast, slow)
    f, s = _sma(close, fast), _sma(close, slow)
    above = np.nan_to_num(f > s, nan=0).astype(bool) & ~np.isnan(s)
    prev = np.r_[False, above[:-1]]
    return simulate(close, above & ~prev, ~above & prev, ts=ts, fees=0.0005)


def with_benchmark(result, close, init_cash: float = 10_000.0):
    """``result`` as the api's results will look: ``benchmark_equity`` (buy and hold of ``close``
    from the same start value) and the benchmark metrics set on it (values for display only)."""
    from types import SimpleNamespace

    bench = init_cash * np.asarray(close, dtype=np.float64) / float(close[0])
    metrics = dict(result.metrics)
    metrics.update(
        {
            "benchmark_return": bench[-1] / bench[0] - 1.0,
            "alpha": 0.0123,
            "beta": 0.87,
            "information_ratio": -0.42,
        }
    )
    fields = ("ts", "equity", "cash", "position", "orders", "trades", "final_value", "symbols")
    return SimpleNamespace(
        **{f: getattr(result, f) for f in fields if hasattr(result, f)},
        init_cash=init_cash,
        metrics=metrics,
        benchmark_equity=bench,
    )
