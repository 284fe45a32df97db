"""Universe and multi-symbol views for a run: membership over time, universe turnover, each
symbol's contribution to PnL, and :func:`attach_run_reports`, which hangs them (with the
data-quality table) on a backtest stage result for MLflow, the tearsheet and ``results/``."""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from btsys.report.charts import _figure, _png
from btsys.report.quality import quality_by_symbol, quality_heatmap_png

DAY_US = 86_400_000_000


def contribution_table(result: Any, symbols: Optional[list] = None) -> pd.DataFrame:
    """Per symbol: ``pnl`` (closed trades + open ones marked at the last close, fees and funding
    included), ``open_pnl``, ``n_trades``, ``fees``, ``funding`` and ``return_contribution`` = pnl /
    initial cash. The contributions add up to the run's total return."""
    tr = result.trades
    syms = list(symbols or getattr(result, "symbols", None) or [])
    if "symbol" in tr.columns:
        sym = tr["symbol"].astype(object)
    else:
        sym = pd.Series([syms[0] if syms else ""] * len(tr), index=tr.index, dtype=object)
    df = tr.assign(symbol=sym, open_pnl=np.where(tr["is_open"], tr["pnl"], 0.0))
    g = df.groupby("symbol")
    out = pd.DataFrame(
        {
            "pnl": g["pnl"].sum(),
            "open_pnl": g["open_pnl"].sum(),
            "n_trades": g.size().astype(np.int64),
            "fees": g["fees"].sum(),
            "funding": g["funding"].sum(),
        }
    )
    out = out.reindex(sorted(set(syms) | set(out.index)), fill_value=0).rename_axis("symbol").reset_index()
    out["n_trades"] = out["n_trades"].astype(np.int64)
    out["return_contribution"] = out["pnl"] / float(result.init_cash)
    return out.sort_values("pnl", ascending=False, kind="stable").reset_index(drop=True)


def member_days(membership: Any, end_ts: int) -> pd.Series:
    """Days each symbol was a member, the last rebalance counting until ``end_ts`` (µs)."""
    t = np.append(np.asarray(membership.times, np.int64), int(end_ts))
    span = np.maximum(np.diff(t), 0) / DAY_US
    return pd.Series((membership.member * span[:, None]).sum(axis=0), index=list(membership.symbols))


def membership_png(membership: Any) -> bytes:
    """Symbols (rows) over rebalances (columns): member, eligible but ranked out, not eligible."""
    tab = membership.table
    state = np.where(tab["member"], 2, np.where(tab["eligible"], 1, 0))
    piv = pd.DataFrame({"symbol": tab["symbol"], "date": tab["date"], "s": state}).pivot(
        index="symbol", columns="date", values="s"
    )
    first = piv.eq(2).to_numpy().argmax(axis=1) + np.where(piv.eq(2).any(axis=1), 0, 10**6)
    piv = piv.iloc[np.lexsort((piv.index.to_numpy(), first))]
    ns, nd = piv.shape
    fig = _figure(min(4 + 0.3 * nd, 18), min(2 + 0.28 * ns, 16))
    ax = fig.add_axes((0.14, 0.16, 0.8, 0.74))
    from matplotlib.colors import ListedColormap

    ax.imshow(
        piv.to_numpy(np.float64),
        cmap=ListedColormap(["#f2f2f2", "#9ecae1", "#08519c"]),
        vmin=0,
        vmax=2,
        aspect="auto",
        interpolation="nearest",
    )
    step = max(1, nd // 20)
    ax.set_xticks(range(0, nd, step))
    ax.set_xticklabels([d[5:] for d in list(piv.columns)[::step]], rotation=60, fontsize=7)
    ystep = max(1, ns // 40)
    ax.set_yticks(range(0, ns, ystep))
    ax.set_yticklabels(list(piv.index)[::ystep], fontsize=7)
    spec = membership.spec
    ax.set_title(
        f"universe top {spec.n} by {spec.measure} ({spec.lookback_days}d lookback, "
        f"rebalance {spec.rebalance}): dark = member, light = eligible, grey = not eligible",
        fontsize=9,
    )
    return _png(fig)


def contribution_png(table: pd.DataFrame) -> bytes:
    """Horizontal bars of each symbol's PnL (quote currency)."""
    t = table.sort_values("pnl", kind="stable")
    fig = _figure(8, min(1.5 + 0.3 * len(t), 14))
    ax = fig.add_axes((0.2, 0.1, 0.75, 0.8))
    ax.barh(t["symbol"], t["pnl"], color=np.where(t["pnl"] >= 0, "#1a7f37", "#cf222e"))
    ax.axvline(0, color="#666", lw=0.8)
    ax.set_xlabel("PnL (quote), fees and funding included; open positions marked at the last close")
    ax.set_title("contribution to PnL by symbol")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def quality_metrics(table: pd.DataFrame) -> dict:
    """Run metrics of the data-quality table (``quality_*``)."""
    traded = table[table["rows"] > 0]
    return {
        "quality_missing_days": float((table["status"] == "missing").sum()),
        "quality_truncated_days": float((table["status"] == "truncated").sum()),
        "quality_excluded_days": float(table["excluded"].sum()) if "excluded" in table else 0.0,
        "quality_min_coverage": float(traded["coverage"].min()) if len(traded) else 0.0,
        "quality_id_gaps": float(table["id_gaps"].sum() + table["id_gap_prev"].sum()),
        "quality_dropped_rows": float(table["dropped"].fillna(0).sum()),
    }


#: the last quality table drawn (its Parquet bytes) and its heatmap
_LAST_HEATMAP: list = [None, None]


def _heatmap(qtable: pd.DataFrame, data: bytes) -> bytes:
    """The quality heatmap of ``qtable`` (``data``: its Parquet bytes), drawn once for the jobs of a
    multirun, which share their quality table (0.2 s a job saved)."""
    if _LAST_HEATMAP[0] != data:
        _LAST_HEATMAP[:] = [data, quality_heatmap_png(qtable)]
    return _LAST_HEATMAP[1]


def attach_run_reports(
    result: Any, qtable: pd.DataFrame, membership: Any = None, charts: bool = True
) -> None:
    """Add the quality table, the universe membership/turnover and the PnL by symbol to a backtest
    stage result: ``extra_metrics`` (``quality_*``, ``universe_*``), ``extra_artifacts``
    (``quality/quality.parquet``, ``universe/membership.parquet``, ``universe/turnover.parquet``,
    ``universe/pnl_by_symbol.parquet``), ``extra_charts`` (``quality_heatmap``,
    ``universe_membership``, ``pnl_by_symbol``; only with ``charts``) and ``extra_tables`` (tearsheet
    sections)."""
    result.extra_metrics.update(quality_metrics(qtable))
    data = parquet_bytes(qtable)
    result.extra_artifacts["quality/quality.parquet"] = data
    result.extra_tables["Data quality by symbol"] = quality_by_symbol(qtable)
    if "excluded" in qtable and qtable["excluded"].any():
        result.extra_tables["Excluded days"] = qtable.loc[
            qtable["excluded"], ["symbol", "date", "exclude_reason"]
        ]
    if charts:
        result.extra_charts["quality_heatmap"] = _heatmap(qtable, data)
    symbols = list(getattr(result, "symbols", None) or [])
    if membership is None and len(symbols) < 2:
        return
    contrib = contribution_table(result, symbols)
    if membership is not None:
        days = member_days(membership, int(qtable["day"].max()) + DAY_US)
        contrib["member_days"] = contrib["symbol"].map(days).fillna(0.0)
        turnover = membership.turnover()
        result.extra_metrics.update(membership.metrics())
        result.extra_artifacts["universe/membership.parquet"] = parquet_bytes(membership.table)
        result.extra_artifacts["universe/turnover.parquet"] = parquet_bytes(turnover)
        changes = turnover[(turnover["joined"] != "") | (turnover["left"] != "")]
        result.extra_tables["Universe changes"] = changes.drop(columns="ts")
        if charts:
            result.extra_charts["universe_membership"] = membership_png(membership)
    result.extra_artifacts["universe/pnl_by_symbol.parquet"] = parquet_bytes(contrib)
    result.extra_tables["PnL by symbol"] = contrib
    if charts:
        result.extra_charts["pnl_by_symbol"] = contribution_png(contrib)
