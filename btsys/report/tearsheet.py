"""Self-contained HTML tearsheet of one backtest: charts inlined as base64 PNG, metrics and trades.

The page has no scripts and no external resources (CSS inline), so it renders the same from a
``file://`` URL, in a browser offline, and in the MLflow UI's artifact viewer (a sandboxed iframe).
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from btsys.report.charts import CHART_NAMES

MAX_TRADE_ROWS = 500

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;font-size:12px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f4f4} td.k,th.k{text-align:left}
.metrics{display:flex;flex-wrap:wrap;gap:8px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card .v{font-size:18px;font-weight:600} .card .n{font-size:11px;color:#666}
.pos{color:#1a7f37} .neg{color:#cf222e}
img{max-width:100%;display:block;margin:8px 0}
pre{background:#f6f8fa;padding:10px;font-size:11px;overflow:auto}
"""

_PCT = {"total_return", "annual_return", "max_drawdown", "win_rate", "exposure", "return"}
_HEADLINE = (
    "total_return",
    "annual_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "win_rate",
    "profit_factor",
    "n_trades",
    "exposure",
    "fees_paid",
    "funding_paid",
)


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "n/a")
        if key in _PCT:
            return f"{v * 100:.2f}%"
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return html.escape(str(v))


def _metric_cards(metrics: Mapping[str, Any]) -> str:
    out = []
    for k in _HEADLINE:
        if k not in metrics:
            continue
        v = metrics[k]
        cls = ""
        if isinstance(v, (int, float, np.number)) and k in ("total_return", "annual_return", "sharpe"):
            cls = " pos" if float(v) > 0 else (" neg" if float(v) < 0 else "")
        out.append(
            f'<div class="card"><div class="v{cls}">{_fmt(k, v)}</div>'
            f'<div class="n">{html.escape(k)}</div></div>'
        )
    return '<div class="metrics">' + "".join(out) + "</div>"


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="k">{html.escape(str(k))}</td><td>{_fmt(str(k), v)}</td></tr>' for k, v in d.items()
    )
    return f'<table><tr><th class="k">name</th><th>value</th></tr>{rows}</table>'


def _df_table(df: pd.DataFrame, max_rows: int = MAX_TRADE_ROWS) -> str:
    note = ""
    if len(df) > max_rows:
        half = max_rows // 2
        note = f'<div class="sub">{len(df):,} rows: first and last {half} shown (all in trades.parquet)</div>'
        df = pd.concat([df.head(half), df.tail(half)])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for rec in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, rec):
            s = _fmt(str(c), v)
            if c in ("pnl", "return") and isinstance(v, (int, float, np.number)) and math.isfinite(float(v)):
                s = f'<span class="{"pos" if float(v) > 0 else "neg"}">{s}</span>' if float(v) != 0 else s
            cells.append(f"<td>{s}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return note + f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _trades_view(trades: Optional[pd.DataFrame]) -> pd.DataFrame:
    if trades is None or len(trades) == 0:
        return pd.DataFrame()
    t = trades.copy()
    for c in ("entry_time", "exit_time"):
        if c in t:
            t[c] = t[c].dt.strftime("%Y-%m-%d %H:%M:%S")
    return t


def render_tearsheet(
    result: Any,
    charts: Mapping[str, bytes],
    title: str = "btsys backtest",
    subtitle: str = "",
    params: Optional[Mapping[str, Any]] = None,
    extra_metrics: Optional[Mapping[str, Any]] = None,
    config_yaml: Optional[str] = None,
    walk_forward: Optional[pd.DataFrame] = None,
    tables: Optional[Mapping[str, pd.DataFrame]] = None,
) -> str:
    """The tearsheet as one HTML string.

    Parameters
    ----------
    result : a ``BacktestResult`` (``metrics``, ``trades``; ``ts``/``equity`` only via ``charts``).
    charts : ``{name: png bytes}`` from :func:`btsys.report.charts.render_charts`.
    params : key strategy/backtest parameters shown under the title.
    extra_metrics : further metrics (e.g. walk-forward ``is_*``/``oos_*``) listed with the others.
    config_yaml : the resolved config, shown folded at the end.
    walk_forward : per-window table from :func:`btsys.backtest.split.split_table`.
    tables : further sections, title -> table (PnL by symbol, universe changes, data quality).
    """
    metrics = dict(getattr(result, "metrics", {}) or {})
    parts = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<div class="sub">{html.escape(subtitle)}</div>')
    if params:
        parts.append(
            '<div class="sub">'
            + " &middot; ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in params.items())
            + "</div>"
        )
    parts.append(_metric_cards(metrics))
    order = [n for n in CHART_NAMES if n in charts] + [n for n in charts if n not in CHART_NAMES]
    for name in order:
        b64 = base64.b64encode(charts[name]).decode("ascii")
        parts.append(
            f"<h2>{html.escape(name.replace('_', ' ').capitalize())}</h2>"
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">'
        )
    allm = dict(metrics)
    allm.update(extra_metrics or {})
    parts.append("<h2>Metrics</h2>" + _kv_table({k: allm[k] for k in sorted(allm)}))
    if walk_forward is not None and len(walk_forward):
        wf = walk_forward.copy()
        for c in ("train_ts_start", "test_ts_start", "test_ts_end"):
            if c in wf:
                wf[c] = pd.to_datetime(wf[c].astype("int64"), unit="us", utc=True).dt.strftime(
                    "%Y-%m-%d %H:%M"
                )
        parts.append("<h2>Walk-forward windows</h2>" + _df_table(wf))
    for name, table in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + _df_table(table))
    trades = _trades_view(getattr(result, "trades", None))
    parts.append(f"<h2>Trades ({len(trades):,})</h2>")
    parts.append(_df_table(trades) if len(trades) else '<div class="sub">no trades</div>')
    if config_yaml:
        parts.append(
            "<h2>Config</h2><details><summary>config.yaml</summary><pre>"
            f"{html.escape(config_yaml)}</pre></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
