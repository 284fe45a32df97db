"""The backtest stage: ``backtest.*`` (+ ``strategy.*``, ``universe``) + the feature frames ->
signals (:mod:`btsys.stages.signals`) -> :mod:`btsys.backtest` (numba) -> a :class:`StageResult`,
written to ``results/<config hash>/`` (the report stage logs it to MLflow).

Chooses the engine entry point from the strategy and the data:

* ``xs_momentum`` (cross-sectional): scores per symbol -> :func:`simulate_cross_sectional`;
* one symbol (and no dynamic universe): :func:`simulate_from_config`;
* several symbols: one strategy per symbol on a shared-cash portfolio -> :func:`simulate_portfolio`.

With a dynamic universe (the membership table of :mod:`btsys.universe`), the portfolio and
cross-sectional engines trade members only. Funding (``backtest.funding=true``) comes from the
ingested ``fundingRate`` files; with ``backtest.intrabar=ticks`` the trades inside the bars come from
the tick lake (:class:`btsys.stages.bar_trades.LakeTrades`). With ``backtest.split.reoptimize=true``
the result is the stitched out-of-sample backtest of a walk-forward optimisation (:func:`walk_forward`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from btsys.backtest import BacktestResult, simulate_from_config
from btsys.backtest.grid import check_objective, grid_of, ranking, trial_config
from btsys.backtest.portfolio import simulate_cross_sectional, simulate_portfolio
from btsys.backtest.split import walk_forward_windows, window_bounds
from btsys.backtest.sweep import check_frames, evaluate, plan_from_config
from btsys.backtest.walk_forward import WINDOW_METRICS, WalkForward, aggregate, bar_times, stitch
from btsys.config import to_plain
from btsys.data.ingest import read_funding
from btsys.data.lake import Series
from btsys.stages import signals as signals_stage
from btsys.stages.bar_trades import LakeTrades
from btsys.stages.cache import CacheEntry
from btsys.storage import Storage

log = logging.getLogger("btsys.stages.backtest")


@dataclass
class StageResult:
    """A backtest result plus what the reporter logs beside it."""

    result: BacktestResult
    symbols: list
    model_infos: Dict[str, dict] = field(default_factory=dict)  # symbol -> fitted ML model info
    extra_metrics: Dict[str, float] = field(default_factory=dict)
    extra_artifacts: Dict[str, bytes] = field(default_factory=dict)  # relative path -> file bytes
    extra_charts: Dict[str, bytes] = field(default_factory=dict)  # chart name -> PNG
    extra_tables: Dict[str, pd.DataFrame] = field(default_factory=dict)  # tearsheet title -> table
    prices: Dict[str, tuple] = field(default_factory=dict)  # symbol -> (ts_close µs, close): charts
    walk_forward: Optional[pd.DataFrame] = None  # per-window table of a walk-forward optimisation

    # the reporter reads these like a BacktestResult
    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["result"], name)


# --------------------------------------------------------------------------- inputs
def load_frames(
    store: Storage, feats_entry: CacheEntry, keep_partial: bool = False
) -> Dict[str, pd.DataFrame]:
    """Feature frames per symbol from a features cache entry (trailing partial bar dropped unless kept)."""
    frames = {}
    for sym, info in sorted((feats_entry.meta or {}).get("symbols", {}).items()):
        df = store.read_parquet(info["path"]).to_pandas()
        if "is_partial" in df.columns and not keep_partial:
            df = df[~df["is_partial"].to_numpy(bool)].reset_index(drop=True)
        if len(df) == 0:
            log.warning("symbol %s has no bars: left out of the backtest", sym)
            continue
        frames[sym] = df
    if not frames:
        raise ValueError(f"features entry {feats_entry.key} holds no bars for any symbol")
    return frames


def load_funding(store: Storage, ingest_entry: CacheEntry, symbols) -> Dict[str, pd.DataFrame]:
    """Funding-rate frames per symbol from the ingest listing (empty frames when none were ingested)."""
    parts = (ingest_entry.meta or {}).get("funding", []) or []
    return {s: read_funding(store, [p["path"] for p in parts if p["symbol"] == s]) for s in symbols}


def load_inputs(cfg: Any, store: Storage, feats_entry: CacheEntry, ingest_entry: CacheEntry):
    """``(frames, funding)``: feature frames per symbol and, with ``backtest.funding``, the
    ingested funding rates per symbol (else None)."""
    frames = load_frames(store, feats_entry, bool(cfg.bars.keep_partial))
    funding = load_funding(store, ingest_entry, frames) if bool(cfg.backtest.funding) else None
    if cfg.backtest.funding and not any(len(f) for f in funding.values()):
        raise ValueError(
            "backtest.funding=true but no funding rates were ingested: set data.funding=true "
            f"(futures markets only; data.market={cfg.data.market})"
        )
    return frames, funding


def lake_trades(cfg: Any, store: Storage, frames: Dict[str, pd.DataFrame]) -> Optional[dict]:
    """``{symbol: trade source}`` over the tick lake with ``backtest.intrabar=ticks``, else None."""
    if to_plain(cfg.backtest).get("intrabar", "ohlc") != "ticks":
        return None
    data = to_plain(cfg.data)
    market, dataset = data["market"], data.get("dataset", "trades")
    return {s: LakeTrades(store, Series(market, dataset, s), f) for s, f in frames.items()}


def _per_symbol(sigs: dict, attr: str) -> Optional[dict]:
    """``{symbol: array}`` of one optional Signals field, or None when no symbol has it."""
    d = {s: getattr(g, attr) for s, g in sigs.items()}
    return d if any(v is not None for v in d.values()) else None


def _prices(frames: Dict[str, pd.DataFrame]) -> Dict[str, tuple]:
    """Close prices per symbol for the report's price chart and number formats."""
    return {s: (f["ts_close"].to_numpy("int64"), f["close"].to_numpy("float64")) for s, f in frames.items()}


# --------------------------------------------------------------------------- the backtest
def run(
    cfg: Any,
    store: Storage,
    feats_entry: CacheEntry,
    ingest_entry: CacheEntry,
    universe: Optional[pd.DataFrame] = None,
) -> StageResult:
    """The backtest stage; with ``backtest.split.reoptimize`` a walk-forward optimisation whose
    stitched out-of-sample backtest is the result."""
    frames, funding = load_inputs(cfg, store, feats_entry, ingest_entry)
    split = cfg.backtest.split
    if bool(split.enabled) and bool(split.get("reoptimize", False)):
        wf = walk_forward(cfg, frames, funding, universe, lake_trades(cfg, store, frames))
        return StageResult(
            wf.result, sorted(frames), extra_metrics=wf.metrics, prices=_prices(frames), walk_forward=wf.table
        )
    return backtest_frames(cfg, frames, funding, universe=universe, trades=lake_trades(cfg, store, frames))


def backtest_frames(
    cfg: Any,
    frames: Dict[str, pd.DataFrame],
    funding: Optional[Dict[str, pd.DataFrame]] = None,
    window: Optional[tuple] = None,
    universe: Optional[pd.DataFrame] = None,
    trades: Optional[dict] = None,
) -> StageResult:
    """The backtest of ``cfg`` (``strategy``, ``backtest``) on loaded frames: what the backtest
    stage runs, and what every sweep row equals. ``window``: ``(start, stop)`` bars (one symbol
    without a universe) or merged-timeline rows (otherwise) to trade, the earlier ones warming up.
    ``universe``: the membership table (``Membership.wide()``; None: static). ``trades``:
    ``{symbol: trade source}`` for ``backtest.intrabar=ticks`` (:func:`lake_trades`)."""
    bt = cfg.backtest
    if signals_stage.is_cross_sectional(cfg):
        p = signals_stage.params(cfg)
        res = simulate_cross_sectional(
            frames,
            signals_stage.scores(cfg, frames),
            top_n=p["top_n"],
            bottom_n=p["bottom_n"],
            rebalance_every=p["rebalance_every"],
            bt_cfg=bt,
            funding=funding,
            universe=universe,
            window=window,
        )
        return StageResult(res, sorted(frames), prices=_prices(frames))
    sigs = signals_stage.signals(cfg, frames)
    model_infos = {s: g.model_info for s, g in sigs.items() if g.model_info}
    if len(frames) == 1 and universe is None:
        ((sym, frame),) = frames.items()
        g = sigs[sym]
        res = simulate_from_config(
            frame,
            g.entries,
            g.exits,
            bt,
            funding=(funding or {}).get(sym),
            short_entries=g.short_entries,
            short_exits=g.short_exits,
            size_scale=g.size,
            window=window,
            ticks=(trades or {}).get(sym),
        )
    else:
        res = simulate_portfolio(
            frames,
            {s: g.entries for s, g in sigs.items()},
            {s: g.exits for s, g in sigs.items()},
            bt,
            funding=funding,
            short_entries=_per_symbol(sigs, "short_entries"),
            short_exits=_per_symbol(sigs, "short_exits"),
            size_scale=_per_symbol(sigs, "size"),
            universe=universe,
            window=window,
        )
    return StageResult(res, sorted(frames), model_infos=model_infos, prices=_prices(frames))


# --------------------------------------------------------------------------- walk-forward optimisation
def walk_forward(
    cfg: Any,
    frames: Dict[str, pd.DataFrame],
    funding: Optional[dict] = None,
    universe: Optional[pd.DataFrame] = None,
    trades: Optional[dict] = None,
) -> WalkForward:
    """Walk-forward optimisation (``backtest.split.reoptimize=true``).

    For each window of :func:`btsys.backtest.split.walk_forward_windows`: the grid ``sweep.grid``
    is swept (kernel sweep, :func:`btsys.backtest.sweep.evaluate`) on the window's in-sample bars,
    every earlier bar warming the indicators up; the best combination by ``sweep.objective`` trades
    the out-of-sample bars as :func:`backtest_frames` with a trading window, starting flat with the
    equity the previous out-of-sample window ended with (a position still open at a window's end is
    marked at its last close). Windows count bars of the symbol (one symbol) or rows of the merged
    timeline (several symbols); with a dynamic universe both parts trade members only. ``trades``:
    the trade sources of ``backtest.intrabar=ticks`` (:func:`lake_trades`), for both parts.

    The stitched out-of-sample backtest (:func:`btsys.backtest.walk_forward.stitch`) is the
    headline; per window the chosen parameters and the in-sample and out-of-sample figures.
    """
    grid = grid_of(cfg)
    plan = plan_from_config(cfg, grid)
    objective, maximize = check_objective(cfg)
    check_frames(plan, frames)
    ts = bar_times(frames)
    windows = walk_forward_windows(len(ts), cfg.backtest.split)
    cash = float(cfg.backtest.init_cash)
    rows, parts = [], []
    for i, (tr, te) in enumerate(windows):
        table = evaluate(plan, frames, funding, window=(tr.start, tr.stop), universe=universe, trades=trades)
        best_i = int(ranking(table, objective, maximize)[0])
        best = {k: table[k].iloc[best_i] for k in grid}
        best = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.items()}
        trial = trial_config(cfg, {**best, "backtest.init_cash": cash})
        oos = backtest_frames(
            trial, frames, funding, window=(te.start, te.stop), universe=universe, trades=trades
        ).result
        parts.append(oos)
        rows.append(_window_row(i, tr, te, ts, best, table.iloc[best_i], oos, objective))
        log.info(
            "walk-forward window %d: in-sample best %s (%s=%.4g), out of sample %s=%.4g",
            i,
            " ".join(f"{k}={v}" for k, v in best.items()),
            objective,
            rows[-1][f"is_{objective}"],
            objective,
            rows[-1][f"oos_{objective}"],
        )
        cash = oos.final_value
        if not cash > 0:
            log.warning("walk-forward: equity exhausted after window %d; later windows not traded", i)
            break
    result = stitch(parts, float(cfg.backtest.init_cash))
    table = pd.DataFrame(rows)
    return WalkForward(result, table, aggregate(table, result, objective))


def _window_row(i: int, tr: slice, te: slice, ts, best: dict, is_row: pd.Series, oos, objective: str) -> dict:
    """One window's row: bar ranges and times, the chosen parameters, in- and out-of-sample figures."""
    row = window_bounds(i, tr, te, ts)
    row.update({f"best.{k}": v for k, v in best.items()})
    for m in dict.fromkeys((objective, *WINDOW_METRICS)):
        row[f"is_{m}"] = float(is_row[m])
        row[f"oos_{m}"] = float(oos.metrics[m])
    return row


# --------------------------------------------------------------------------- the stage's record
def save_results(store: Storage, config_hash: str, result: Any) -> str:
    """Write a backtest's equity curve, orders, trades and metrics under ``results/<config hash>/``
    (plus the result's extra artifacts: ``quality/`` and ``universe/`` tables). Returns its URI."""
    prefix = f"results/{config_hash}"
    equity = pd.DataFrame({"ts": result.ts, "equity": result.equity, "cash": result.cash})
    pos = np.asarray(result.position)
    if pos.ndim == 1:
        equity["position"] = pos
    else:  # portfolio: one position column per symbol
        for j, sym in enumerate(result.symbols or range(pos.shape[1])):
            equity[f"position.{sym}"] = pos[:, j]
    store.write_parquet(pa.Table.from_pandas(equity, preserve_index=False), f"{prefix}/equity.parquet")
    store.write_parquet(
        pa.Table.from_pandas(pd.DataFrame(result.orders), preserve_index=False), f"{prefix}/orders.parquet"
    )
    store.write_parquet(pa.Table.from_pandas(result.trades, preserve_index=False), f"{prefix}/trades.parquet")
    store.write_text(
        f"{prefix}/metrics.json",
        json.dumps(to_plain(dict(result.metrics)), sort_keys=True, default=float, indent=1),
    )
    for name, data in (getattr(result, "extra_artifacts", None) or {}).items():
        store.write_bytes(f"{prefix}/{name}", data)
    return store.uri(prefix)
