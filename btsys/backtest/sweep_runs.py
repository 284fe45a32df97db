"""Sweeps of what the sweep kernel does not simulate: ``intrabar="ticks"`` and limit entries.

Each combination is the run of its parameters through the engine's own path: its strategy's
signals (``generate_signals``) and :func:`~btsys.backtest.simulate`, so the row is that run's
metrics (and, with ticks, its ``INTRABAR_METRICS``; with limit entries ``orders_expired``).
The combinations of one call (a kernel sweep, or one Spark chunk) share a
:class:`~btsys.backtest.ticks.TradeCache`: a bar's trades are read once, in rounds that load the
union of the bars the runs asked for (:meth:`~btsys.backtest.ticks.TradeCache.run_all`). One
symbol only (portfolios take market orders by the bar rules). A Python loop over the
combinations: each run is a numba event loop of its own (a few ms per 100 k bars), so the cost is
the trades read, once per chunk, not the loop.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from btsys.backtest.engine import INTRABAR_METRICS, _bars_arrays, _funding_arrays, simulate
from btsys.backtest.enums import METRIC_NAMES
from btsys.backtest.metrics import BENCHMARK_METRICS
from btsys.backtest.metrics import daily_returns as daily_returns_of
from btsys.backtest.options import BY_KEY
from btsys.backtest.ticks import TradeCache, TradeSource


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def runs_each(kw: Mapping[str, Any]) -> bool:
    """Whether a sweep with these ``simulate`` options runs each combination (ticks, limits)."""
    return _value(kw.get("intrabar")) == "ticks" or _value(kw.get("order_type")) == "limit"


def combinations(plan) -> list:
    """``[(strategy parameters, simulate keywords), ...]`` of a plan's grid in table order."""
    out = []
    for idx in itertools.product(*(range(len(a.checked)) for a in plan.axes)):
        strat, kw = dict(plan.strategy), dict(plan.kw)
        for a, j in zip(plan.axes, idx, strict=True):
            if a.param is not None:
                strat[a.param] = a.checked[j]
                continue
            o = BY_KEY[a.option]
            v = a.checked[j]
            kw[o.kw] = {float(c): n for n, c in o.choices.items()}[v] if o.choices else v
        if _value(kw.get("size_mode")) == "all":
            kw["size"] = math.inf  # as a run's options (options.keywords)
        out.append((strat, kw))
    return out


def extra_columns(kw: Mapping[str, Any]) -> tuple:
    """The metrics a run of these options adds to its row (after the benchmark metrics)."""
    ticks = INTRABAR_METRICS if _value(kw.get("intrabar")) == "ticks" else ()
    return ticks + (("orders_expired",) if _value(kw.get("order_type")) == "limit" else ())


def evaluate_runs(
    plan,
    sym: str,
    frame: pd.DataFrame,
    funding: Optional[pd.DataFrame],
    window: slice,
    daily: np.ndarray,
    trades: Optional[TradeSource],
):
    """Run every combination of ``plan`` on one symbol's ``frame``: ``(metrics, extra)``, rows of
    ``METRIC_NAMES`` + ``BENCHMARK_METRICS[1:]`` (as the sweep kernel's ``out``) and of
    :func:`extra_columns`; ``daily`` (rows x days, or 0 columns) receives the daily returns."""
    from btsys.signals import generate_signals

    if _value(plan.kw.get("intrabar")) == "ticks" and trades is None:
        raise ValueError(
            f"sweep over {sym or 'the bars'}: backtest.intrabar=ticks needs the bars' trades (the "
            "pipeline reads them from the tick lake; sweep(..., ticks=) takes a tick table or a trade source)"
        )
    a = _bars_arrays(frame, f"bars of {sym}")
    fts, frate = _funding_arrays(funding) if plan.charge_funding else (None, None)
    combos = combinations(plan)
    cache = None
    if _value(plan.kw.get("intrabar")) == "ticks":
        n_ticks = frame["n_ticks"].to_numpy() if "n_ticks" in frame.columns else None
        cache = TradeCache(trades, len(frame), n_ticks)
    init = float(plan.kw["init_cash"])
    names, extra_names = METRIC_NAMES + BENCHMARK_METRICS[1:], extra_columns(plan.kw)
    ts = a["ts_close"][window]

    def run(k: int):
        """Combination ``k``'s row, extra metrics and daily returns: what the table keeps of its run
        (not the run's equity and records, so memory follows the rows, as in the sweep kernel)."""
        strat, kw = combos[k]
        g = generate_signals({"name": plan.spec.name, **strat}, frame)
        r = simulate(
            a["close"], g.entries, g.exits, open=a["open"], high=a["high"], low=a["low"], ts=a["ts_close"],
            volume=a["volume"], short_entries=g.short_entries, short_exits=g.short_exits,
            funding_ts=fts, funding_rate=frate, size_scale=g.size, window=(window.start, window.stop),
            ticks=cache, **kw,
        )  # fmt: skip
        dret = daily_returns_of(ts, r.equity, init) if daily.shape[1] else None
        return [r.metrics[m] for m in names], [r.metrics[m] for m in extra_names], dret

    results = cache.run_all(run, len(combos)) if cache is not None else [run(k) for k in range(len(combos))]
    out = np.array([row for row, _, _ in results], dtype=np.float64).reshape(len(results), len(names))
    extra = {m: np.array([ext[i] for _, ext, _ in results]) for i, m in enumerate(extra_names)}
    for k, (_, _, dret) in enumerate(results):
        if dret is not None:
            daily[k] = dret
    return out, extra
