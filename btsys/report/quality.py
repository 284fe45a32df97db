"""Data-quality views for a run: the symbol x day coverage heatmap and a per-symbol summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from btsys.report.charts import _figure, _png


def quality_by_symbol(table: pd.DataFrame) -> pd.DataFrame:
    """One row per symbol: days by status, excluded days, rows, worst coverage and gap, id gaps."""
    g = table.groupby("symbol", sort=True)
    out = pd.DataFrame(
        {
            "days": g.size(),
            "ok": g["status"].apply(lambda s: int((s == "ok").sum())),
            "truncated": g["status"].apply(lambda s: int((s == "truncated").sum())),
            "missing": g["status"].apply(lambda s: int((s == "missing").sum())),
            "excluded": g["excluded"].sum().astype(np.int64) if "excluded" in table else 0,
            "rows": g["rows"].sum(),
            "min_coverage": g["coverage"].min(),
            "max_gap_s": g["max_gap_s"].max(),
            "id_gaps": g["id_gaps"].sum() + g["id_gap_prev"].sum(),
            "dropped": g["dropped"].apply(lambda s: int(s.fillna(0).sum())),
        }
    )
    return out.reset_index()


def quality_heatmap_png(table: pd.DataFrame) -> bytes:
    """Coverage per symbol (rows) and UTC day (columns): red = no trading, green = full coverage;
    ``x`` marks a day excluded by the policy, ``t`` a truncated day."""
    piv = table.pivot(index="symbol", columns="date", values="coverage").sort_index()
    syms, dates = list(piv.index), list(piv.columns)
    ns, nd = len(syms), len(dates)
    fig = _figure(min(4 + 0.3 * nd, 18), min(2 + 0.28 * ns, 16))
    ax = fig.add_axes((0.14, 0.16, 0.74, 0.74))
    cax = fig.add_axes((0.9, 0.16, 0.02, 0.74))
    im = ax.imshow(
        piv.to_numpy(np.float64), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    fig.colorbar(im, cax=cax, label="coverage")
    pos = {(s, d): (i, j) for i, s in enumerate(syms) for j, d in enumerate(dates)}
    for col, mark in (("excluded", "x"), ("status", "t")):
        if col not in table:
            continue
        sel = table[table[col]] if col == "excluded" else table[table[col] == "truncated"]
        for s, d in zip(sel["symbol"], sel["date"], strict=True):
            i, j = pos[(s, d)]
            ax.text(j, i, mark, ha="center", va="center", fontsize=7, color="k")
    step = max(1, nd // 20)
    ax.set_xticks(range(0, nd, step))
    ax.set_xticklabels([d[5:] for d in dates[::step]], rotation=60, fontsize=7)
    ystep = max(1, ns // 40)
    ax.set_yticks(range(0, ns, ystep))
    ax.set_yticklabels(syms[::ystep], fontsize=7)
    ax.set_title("data coverage by symbol and UTC day (x: excluded, t: truncated)")
    return _png(fig)
