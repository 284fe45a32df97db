"""Interactive chart of a :class:`~btsys.backtest.result.BacktestResult` (plotly, imported on use).

Three panels on one time axis: the price with the fills (entries as triangles, exits as crosses
coloured by reason), equity against buy-and-hold of the same symbols, and the drawdown.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: Above this many points a panel uses WebGL traces (a 1 M-bar run stays responsive).
WEBGL_POINTS = 20_000

_EXIT_COLOURS = {
    "exit_signal": "#1f77b4",
    "stop_loss": "#d62728",
    "trailing_stop": "#ff7f0e",
    "take_profit": "#2ca02c",
    "liquidation": "#7f0000",
    "time_stop": "#9467bd",
    "kill_switch": "#000000",
}


def _hover(orders) -> list:
    return [
        f"{r.reason} {r.side} {r.size:.6g} @ {r.price:.8g}<br>fees {r.fees:.4g}"
        for r in orders.itertuples(index=False)
    ]


def result_figure(res: Any, symbol: Optional[str] = None, height: int = 760):
    """The figure behind ``BacktestResult.plot()``."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = res.index
    n = len(x)
    line = go.Scattergl if n > WEBGL_POINTS else go.Scatter
    close = np.asarray(res.close, dtype=np.float64)
    orders = res.orders
    name = "price"
    if close.ndim == 2:
        k = 0 if symbol is None else list(res.symbols).index(symbol)
        name = res.symbols[k]
        close = close[:, k]
        orders = orders[orders["col"] == k]
    elif symbol is not None:
        raise ValueError("plot: `symbol` applies to portfolios only")
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=[0.45, 0.35, 0.2],
        subplot_titles=(f"{name} and fills", "Equity vs buy-and-hold", "Drawdown"),
    )
    have = np.isfinite(close)
    fig.add_trace(line(x=x[have], y=close[have], name=name, line=dict(color="#444", width=1)), 1, 1)
    entries = orders[orders["reason"] == "entry"]
    for side, symbol_, colour in (("buy", "triangle-up", "#2ca02c"), ("sell", "triangle-down", "#d62728")):
        sel = entries[entries["side"] == side]
        if len(sel):
            fig.add_trace(
                go.Scatter(
                    x=x[sel["idx"].to_numpy()],
                    y=sel["price"],
                    mode="markers",
                    name=f"entry ({side})",
                    marker=dict(symbol=symbol_, size=9, color=colour),
                    hovertext=_hover(sel),
                    hoverinfo="text+x",
                ),
                1,
                1,
            )
    exits = orders[orders["reason"] != "entry"]
    for reason, colour in _EXIT_COLOURS.items():
        sel = exits[exits["reason"] == reason]
        if len(sel):
            fig.add_trace(
                go.Scatter(
                    x=x[sel["idx"].to_numpy()],
                    y=sel["price"],
                    mode="markers",
                    name=f"exit ({reason})",
                    marker=dict(symbol="x", size=8, color=colour),
                    hovertext=_hover(sel),
                    hoverinfo="text+x",
                ),
                1,
                1,
            )
    fig.add_trace(line(x=x, y=res.equity, name="strategy", line=dict(color="#1f77b4", width=1.5)), 2, 1)
    fig.add_trace(
        line(x=x, y=res.benchmark_equity, name="buy & hold", line=dict(color="#888", width=1, dash="dot")),
        2,
        1,
    )
    fig.add_trace(
        line(
            x=x,
            y=res.drawdown * 100.0,
            name="drawdown",
            fill="tozeroy",
            line=dict(color="#d62728", width=1),
        ),
        3,
        1,
    )
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="value", row=2, col=1)
    fig.update_yaxes(title_text="%", row=3, col=1)
    fig.update_layout(
        height=height,
        template="plotly_white",
        hovermode="x unified",
        legend=dict(orientation="h", yanchor="bottom", y=1.03, x=0),
        margin=dict(l=60, r=20, t=60, b=40),
    )
    return fig
