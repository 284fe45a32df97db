"""The backtest stage of the pipeline: feature frames -> signals -> numba backtest.

Chooses the engine entry point from the strategy and the data:

* ``xs_momentum`` (cross-sectional): scores per symbol -> :func:`simulate_cross_sectional`;
* one symbol (and no dynamic universe): :func:`simulate_from_config`;
* several symbols: one strategy per symbol on a shared-cash portfolio -> :func:`simulate_portfolio`.

With a dynamic universe (``universe``: the membership table of :mod:`btsys.universe`), the
portfolio and cross-sectional engines trade members only.

Funding (``backtest.funding=true``) comes from the ingested ``fundingRate`` files of the lake.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import pandas as pd

from btsys.backtest.engine import BacktestResult, simulate_from_config
from btsys.signals import generate_scores, generate_signals, strategy_params

log = logging.getLogger("btsys.backtest")


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


def load_frames(store, feats_entry, keep_partial: bool = False) -> Dict[str, pd.DataFrame]:
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


def load_funding(store, ingest_entry, symbols) -> Dict[str, pd.DataFrame]:
    """Funding-rate frames per symbol from the ingest listing (empty frames when none were ingested)."""
    from btsys.data.ingest import read_funding

    parts = (ingest_entry.meta or {}).get("funding", []) or []
    return {s: read_funding(store, [p["path"] for p in parts if p["symbol"] == s]) for s in symbols}


def _per_symbol(sigs: dict, attr: str) -> Optional[dict]:
    """``{symbol: array}`` of one optional Signals field, or None when no symbol has it."""
    d = {s: getattr(g, attr) for s, g in sigs.items()}
    return d if any(v is not None for v in d.values()) else None


def _prices(frames: Dict[str, pd.DataFrame]) -> Dict[str, tuple]:
    """Close prices per symbol for the report's price chart and number formats."""
    return {s: (f["ts_close"].to_numpy("int64"), f["close"].to_numpy("float64")) for s, f in frames.items()}


def load_stage_inputs(cfg: Any, store, feats_entry, ingest_entry):
    """``(frames, funding)`` of the backtest stage: feature frames per symbol and, with
    ``backtest.funding``, the ingested funding rates per symbol (else None)."""
    frames = load_frames(store, feats_entry, bool(cfg.bars.keep_partial))
    funding = load_funding(store, ingest_entry, frames) if bool(cfg.backtest.funding) else None
    if cfg.backtest.funding and not any(len(f) for f in funding.values()):
        raise ValueError(
            "backtest.funding=true but no funding rates were ingested: set data.funding=true "
            f"(futures markets only; data.market={cfg.data.market})"
        )
    return frames, funding


def run_backtest_stage(
    cfg: Any, store, feats_entry, ingest_entry, universe: Optional[pd.DataFrame] = None
) -> StageResult:
    """The backtest stage; with ``backtest.split.reoptimize`` a walk-forward optimisation whose
    stitched out-of-sample backtest is the result."""
    frames, funding = load_stage_inputs(cfg, store, feats_entry, ingest_entry)
    split = cfg.backtest.split
    if bool(split.enabled) and bool(split.get("reoptimize", False)):
        from btsys.backtest.walk_forward import walk_forward

        wf = walk_forward(cfg, frames, funding, universe)
        return StageResult(
            wf.result, sorted(frames), extra_metrics=wf.metrics, prices=_prices(frames), walk_forward=wf.table
        )
    return backtest_frames(cfg, frames, funding, universe=universe)


def backtest_frames(
    cfg: Any,
    frames: Dict[str, pd.DataFrame],
    funding: Optional[Dict[str, pd.DataFrame]] = None,
    window: Optional[tuple] = None,
    universe: Optional[pd.DataFrame] = None,
) -> StageResult:
    """The backtest of ``cfg`` (``strategy``, ``backtest``) on loaded frames: what the pipeline's
    backtest stage runs, and what every sweep row equals. ``window``: ``(start, stop)`` bars (one
    symbol without a universe) or merged-timeline rows (otherwise) to trade, the earlier ones
    warming up. ``universe``: the membership table (``Membership.wide()``; None: static)."""
    from btsys.backtest.portfolio import simulate_cross_sectional, simulate_portfolio

    bt = cfg.backtest
    p = strategy_params(cfg.strategy)
    if p["name"] == "xs_momentum":
        scores = generate_scores(cfg.strategy, frames)
        res = simulate_cross_sectional(
            frames,
            scores,
            top_n=p["top_n"],
            bottom_n=p["bottom_n"],
            rebalance_every=p["rebalance_every"],
            bt_cfg=bt,
            funding=funding,
            universe=universe,
            window=window,
        )
        return StageResult(res, sorted(frames), prices=_prices(frames))
    sigs = {s: generate_signals(cfg.strategy, f) for s, f in frames.items()}
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
