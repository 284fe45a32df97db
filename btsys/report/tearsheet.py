"""Self-contained HTML tearsheet of one backtest: charts inlined as base64 PNG, metrics and tables.

The page has no scripts and no external resources (CSS inline), so it renders the same from a
``file://`` URL, in a browser offline, and in the MLflow UI's artifact viewer (a sandboxed iframe).

Numbers are written as a reader expects them: returns and drawdowns in percent, money with two
decimals and thousands separators, prices with their instrument's own decimals (inferred from its
price grid, so BTC reads ``86,321.45`` and a 5-decimal coin ``0.12345``), counts as integers, and
codes as names (``long``/``short``, ``stop loss``). When the result carries the buy-and-hold
benchmark (``benchmark_return``, ``alpha``, ``beta``, ``information_ratio`` metrics), those get
their own row of cards.
"""

from __future__ import annotations

import base64
import html
import math
import re
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from btsys.backtest.enums import ORDER_KIND_LABELS
from btsys.report.charts import CHART_NAMES, CHART_TITLES, price_decimals
from btsys.report.drawdowns import drawdown_periods

MAX_TRADE_ROWS = 500
TOP_DRAWDOWNS = 5

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
.sub{color:#57606a;font-size:13px;margin-bottom:12px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}
td,th{padding:3px 8px;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
th{background:#f6f8fa;font-weight:600} td.k,th.k{text-align:left}
.metrics{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;min-width:120px}
.card .v{font-size:18px;font-weight:600} .card .n{font-size:11px;color:#57606a}
.bench .card{background:#f6f8fa}
.pos{color:#1a7f37} .neg{color:#cf222e}
img{max-width:100%;display:block;margin:8px 0}
pre{background:#f6f8fa;padding:10px;font-size:11px;overflow:auto}
"""

HEADLINE = (
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
#: Buy-and-hold comparison, shown when the result has them (``btsys.backtest.metrics``).
BENCHMARK = ("benchmark_return", "alpha", "beta", "information_ratio")
LABELS = {
    "total_return": "total return",
    "annual_return": "annual return",
    "max_drawdown": "max drawdown",
    "win_rate": "win rate",
    "profit_factor": "profit factor",
    "n_trades": "trades",
    "fees_paid": "fees paid",
    "funding_paid": "funding paid",
    "benchmark_return": "buy and hold return",
    "information_ratio": "information ratio",
}

_PERCENT = {
    "total_return",
    "annual_return",
    "max_drawdown",
    "win_rate",
    "exposure",
    "benchmark_return",
    "alpha",
    "return",
}
_MONEY = {"fees_paid", "funding_paid", "final_value", "expectancy", "init_cash", "pnl", "fees", "funding"}
_RATIO = {"sharpe", "sortino", "calmar", "profit_factor", "beta", "information_ratio", "dsr", "pbo"}
_COUNT = {"n_trades", "wf_n_windows", "n_trials", "n_failed", "n_reused", "duration_bars"}
_SIGNED = {"total_return", "annual_return", "sharpe", "sortino", "benchmark_return", "alpha", "pnl", "return"}


def _base_key(key: str) -> str:
    """``BTCUSDT.oos_sharpe_w003`` -> ``sharpe``: the metric a prefixed/windowed key is about."""
    k = key.rsplit(".", 1)[-1]
    k = re.sub(r"_w\d+$", "", k)
    return re.sub(r"^(is_|oos_|best_)", "", k)


def fmt_value(key: str, v: Any) -> str:
    """A metric or table value as text, by what the key measures (see the module docstring)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if not isinstance(v, (int, float, np.integer, np.floating)):
        return html.escape(str(v))
    v = float(v)
    if not math.isfinite(v):
        return "inf" if v > 0 else "-inf"
    return _fmt_number(_base_key(key), v)


def _fmt_number(k: str, v: float) -> str:
    if k in _PERCENT:
        return f"{v:+.2%}" if k in _SIGNED else f"{v:.2%}"
    if k in _MONEY:
        return f"{v:+,.2f}" if k in _SIGNED else f"{v:,.2f}"
    if k in _COUNT or k.startswith("n_"):
        return f"{v:,.0f}"
    if k == "max_drawdown_duration":
        return f"{v:,.1f} days"
    if k == "open_position":
        return "yes" if v else "no"
    if k in _RATIO:
        return f"{v:,.2f}"
    return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"


def _sign_class(key: str, v: Any) -> str:
    if _base_key(key) not in _SIGNED or not isinstance(v, (int, float, np.number)):
        return ""
    v = float(v)
    return "pos" if v > 0 else ("neg" if v < 0 else "")


def _cards(metrics: Mapping[str, Any], keys, css: str = "") -> str:
    out = []
    for k in keys:
        if k not in metrics:
            continue
        cls = _sign_class(k, metrics[k])
        out.append(
            f'<div class="card"><div class="v {cls}">{fmt_value(k, metrics[k])}</div>'
            f'<div class="n">{html.escape(LABELS.get(k, k.replace("_", " ")))}</div></div>'
        )
    return f'<div class="metrics {css}">' + "".join(out) + "</div>" if out else ""


def _table(df: pd.DataFrame, left: tuple = (), classes: Optional[pd.DataFrame] = None) -> str:
    """An HTML table of already formatted strings (``left``: left-aligned columns)."""
    head = "".join(f'<th class="{"k" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = []
    for i, rec in enumerate(df.itertuples(index=False)):
        cells = []
        for j, (c, v) in enumerate(zip(df.columns, rec, strict=True)):
            cls = ["k"] if c in left else []
            if classes is not None and classes.iat[i, j]:
                cls.append(classes.iat[i, j])
            cells.append(f'<td class="{" ".join(cls)}">{v}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _kv_table(d: Mapping[str, Any]) -> str:
    df = pd.DataFrame(
        {"metric": [html.escape(k) for k in d], "value": [fmt_value(k, v) for k, v in d.items()]}
    )
    cls = pd.DataFrame({"metric": "", "value": [_sign_class(k, v) for k, v in d.items()]})
    return _table(df, left=("metric",), classes=cls)


def _datetime_text(us: Any) -> str:
    return pd.Timestamp(int(us), unit="us", tz="UTC").strftime("%Y-%m-%d %H:%M")


def _times(col: pd.Series) -> pd.Series:
    """µs integers or datetimes -> UTC timestamps."""
    if pd.api.types.is_numeric_dtype(col):
        return pd.to_datetime(col.astype("int64"), unit="us", utc=True)
    return pd.to_datetime(col, utc=True)


def duration_text(seconds: float) -> str:
    """``3d 04:20``, ``5h 20m``, ``45m``, ``12s``."""
    s = int(round(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h:02d}:{m:02d}"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m" if m else f"{sec}s"


_KIND_NAMES = {code: label.replace("_", " ") for code, label in ORDER_KIND_LABELS.items()}


def kind_name(v: Any) -> str:
    """An order/exit kind as its name (codes of :class:`btsys.backtest.enums.OrderKind`)."""
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()):
        return _KIND_NAMES.get(int(v), str(v))
    return str(v).replace("_", " ")


def direction_name(v: Any) -> str:
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "long" if v > 0 else "short"
    return str(v)


def _qty_decimals(sizes: np.ndarray) -> int:
    """About six significant digits for the typical trade size."""
    a = np.abs(np.asarray(sizes, dtype=np.float64))
    a = a[np.isfinite(a) & (a > 0)]
    if not len(a):
        return 4
    return int(np.clip(5 - math.floor(math.log10(float(np.median(a)))), 0, 8))


def trades_view(
    trades: Optional[pd.DataFrame], decimals: Optional[Mapping[str, int]] = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trades as formatted text (and a frame of CSS classes): times, named values, prices with
    each instrument's decimals (``decimals``: ``{symbol: decimals}``; one entry for one asset)."""
    if trades is None or len(trades) == 0:
        return pd.DataFrame(), pd.DataFrame()
    t = trades.reset_index(drop=True)
    out: dict = {}
    if "symbol" in t:
        out["symbol"] = t["symbol"].astype(str).map(html.escape)
    if "direction" in t:
        out["side"] = t["direction"].map(direction_name)
    out.update(_time_columns(t))
    out.update(_size_price_columns(t, dict(decimals or {})))
    cls = {}
    for c in ("pnl", "return", "fees", "funding"):
        if c in t:
            out[c] = [fmt_value(c, v) for v in t[c]]
            cls[c] = [_sign_class(c, v) for v in t[c]]
    if "exit_reason" in t or "is_open" in t:
        kinds = t["exit_reason"].map(kind_name) if "exit_reason" in t else pd.Series([""] * len(t))
        is_open = t["is_open"].astype(bool) if "is_open" in t else pd.Series([False] * len(t))
        out["exit"] = np.where(is_open, "open (marked at the last close)", kinds)
    view = pd.DataFrame(out, index=t.index)
    return view, pd.DataFrame(cls, index=t.index).reindex(columns=view.columns).fillna("")


def _time_columns(t: pd.DataFrame) -> dict:
    out = {}
    entry, exit_ = (_times(t[c]) if c in t else None for c in ("entry_time", "exit_time"))
    if entry is not None:
        out["entry (UTC)"] = entry.dt.strftime("%Y-%m-%d %H:%M")
    if exit_ is not None:
        out["exit (UTC)"] = exit_.dt.strftime("%Y-%m-%d %H:%M")
    if entry is not None and exit_ is not None:
        out["held"] = [duration_text(s) for s in (exit_ - entry).dt.total_seconds()]
    if "duration_bars" in t:
        out["bars"] = [fmt_value("duration_bars", v) for v in t["duration_bars"]]
    return out


def _size_price_columns(t: pd.DataFrame, decimals: dict) -> dict:
    out = {}
    if "size" in t:
        qd = _qty_decimals(t["size"])
        out["size"] = [f"{float(v):,.{qd}f}" for v in t["size"]]
    syms = t["symbol"].astype(str) if "symbol" in t else pd.Series([None] * len(t))
    for c, name in (("entry_price", "entry price"), ("exit_price", "exit price")):
        if c in t:
            out[name] = [
                _price_text(v, decimals.get(s, decimals.get(None))) for v, s in zip(t[c], syms, strict=True)
            ]
    return out


def _price_text(v: Any, decimals: Optional[int]) -> str:
    v = float(v)
    if not math.isfinite(v):
        return "n/a"
    if decimals is None:  # no price grid known: about seven significant digits
        decimals = int(np.clip(6 - math.floor(math.log10(abs(v))) if v else 2, 2, 8))
    return f"{v:,.{decimals}f}"


def drawdowns_view(result: Any, top: int = TOP_DRAWDOWNS) -> pd.DataFrame:
    """The deepest drawdown periods as formatted text."""
    ts = getattr(result, "ts", None)
    eq = np.asarray(result.equity, dtype=np.float64)
    if ts is None or len(eq) == 0:
        return pd.DataFrame()
    d = drawdown_periods(ts, eq, getattr(result, "init_cash", None), top=top)
    return pd.DataFrame(
        {
            "peak (UTC)": [_datetime_text(v) for v in d["peak"]],
            "trough (UTC)": [_datetime_text(v) for v in d["trough"]],
            "recovered (UTC)": [
                _datetime_text(v) if ok else "not recovered"
                for v, ok in zip(d["recovery"], d["recovered"], strict=True)
            ],
            "depth": [f"{v:.2%}" for v in d["depth"]],
            "length": [duration_text(v * 86400) for v in d["days"]],
            "peak to trough": [duration_text(v * 86400) for v in d["days_to_trough"]],
        }
    )


def instrument_decimals(prices: Optional[Mapping[str, tuple]]) -> dict:
    """``{symbol: price decimals}`` from each symbol's close prices; one symbol also under ``None``."""
    out: dict = {s: price_decimals(np.asarray(p[1])) for s, p in (prices or {}).items()}
    if len(out) == 1:
        out[None] = next(iter(out.values()))
    return out


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
    prices: Optional[Mapping[str, tuple]] = None,
) -> str:
    """The tearsheet as one HTML string.

    Parameters
    ----------
    result : a ``BacktestResult`` (``ts``, ``equity``, ``metrics``, ``trades``; ``init_cash``).
    charts : ``{name: png bytes}`` from :func:`btsys.report.charts.render_charts`.
    params : key strategy/backtest parameters shown under the title.
    extra_metrics : further metrics (e.g. walk-forward ``is_*``/``oos_*``) listed with the others.
    config_yaml : the resolved config, shown folded at the end.
    walk_forward : per-window table from :func:`btsys.backtest.split.split_table`.
    tables : further sections, title -> table (PnL by symbol, universe changes, data quality).
    prices : ``{symbol: (ts µs, close)}``: each instrument's price decimals for the trades table.
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
    parts.append(_cards(metrics, HEADLINE))
    parts.append(_cards(metrics, BENCHMARK, "bench"))
    parts += _chart_sections(charts)
    dd = drawdowns_view(result)
    parts.append(f"<h2>Drawdown periods (deepest {TOP_DRAWDOWNS})</h2>")
    parts.append(_table(dd, left=("recovered (UTC)",)) if len(dd) else '<div class="sub">no drawdown</div>')
    allm = dict(metrics)
    allm.update(extra_metrics or {})
    parts.append("<h2>Metrics</h2>" + _kv_table({k: allm[k] for k in sorted(allm)}))
    if walk_forward is not None and len(walk_forward):
        parts.append("<h2>Walk-forward windows</h2>" + _table(_walk_forward_view(walk_forward)))
    for name, table in (tables or {}).items():
        shown = pd.DataFrame({c: [fmt_value(str(c), v) for v in table[c]] for c in table.columns})
        parts.append(f"<h2>{html.escape(name)}</h2>" + _table(shown))
    parts += _trades_section(getattr(result, "trades", None), prices)
    if config_yaml:
        parts.append(
            "<h2>Config</h2><details><summary>config.yaml</summary><pre>"
            f"{html.escape(config_yaml)}</pre></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _chart_sections(charts: Mapping[str, bytes]) -> list[str]:
    """Each chart as a titled inline PNG, the known charts first in ``CHART_NAMES`` order."""
    order = [n for n in CHART_NAMES if n in charts] + [n for n in charts if n not in CHART_NAMES]
    out = []
    for name in order:
        b64 = base64.b64encode(charts[name]).decode("ascii")
        out.append(
            f"<h2>{html.escape(CHART_TITLES.get(name, name.replace('_', ' ').capitalize()))}</h2>"
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">'
        )
    return out


def _walk_forward_view(walk_forward: pd.DataFrame) -> pd.DataFrame:
    """The walk-forward windows with their times as UTC dates and every figure formatted."""
    wf = walk_forward.copy()
    for c in ("train_ts_start", "test_ts_start", "test_ts_end"):
        if c in wf:
            wf[c] = [_datetime_text(v) for v in wf[c].astype("int64")]
    return pd.DataFrame({c: [fmt_value(str(c), v) for v in wf[c]] for c in wf.columns})


def _trades_section(trades: Optional[pd.DataFrame], prices: Optional[Mapping[str, tuple]]) -> list[str]:
    """The trades table (the first and last ``MAX_TRADE_ROWS / 2`` of a long run)."""
    n = 0 if trades is None else len(trades)
    out = [f"<h2>Trades ({n:,})</h2>"]
    if not n:
        return out + ['<div class="sub">no trades</div>']
    shown = trades
    if n > MAX_TRADE_ROWS:
        half = MAX_TRADE_ROWS // 2
        out.append(
            f'<div class="sub">{n:,} trades: first and last {half} shown (all in trades.parquet)</div>'
        )
        shown = pd.concat([trades.head(half), trades.tail(half)])
    view, cls = trades_view(shown, instrument_decimals(prices))
    return out + [_table(view, left=("symbol", "side", "exit"), classes=cls)]
