"""Names and tags that make runs findable in the MLflow UI.

A run is named after what was tested, not after the experiment file::

    ma_cross fast=10 slow=50 BTCUSDT dollar                 one run
    ma_cross fast=10 slow=50 BTCUSDT dollar taker=0.001 #3  a multirun job (swept keys, job number)
    ma_cross fast=5,10 slow=50,100 BTCUSDT dollar sweep     the multirun's parent

Names never carry paths, URLs or infrastructure settings (tracking URI, storage root, Spark). The
strategy, symbols and bar kind are also tags (``btsys.strategy``, ``btsys.symbols``, ``btsys.bars``)
and a sweep's varied keys are tagged ``btsys.swept`` (names) and ``swept.<key>`` (this run's value),
so the runs table can show them as columns.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

#: Strategy parameters shown in run names; a strategy not listed shows all its scalar parameters.
KEY_PARAMS = {"ml_classifier": ("model", "threshold"), "rule": ("entry", "exit")}

#: Override keys that never name a run (where things are stored or logged, how they run).
INFRA_PREFIXES = ("hydra", "mlflow", "storage", "spark", "sweep", "force", "stage", "name", "experiment")

MAX_NAME = 250
MAX_VALUE = 40


def _short(value: Any) -> str:
    s = str(value)
    return s if len(s) <= MAX_VALUE else s[: MAX_VALUE - 3] + "..."


def _is_path(value: str) -> bool:
    return "://" in value or "/" in value or "\\" in value


def strategy_label(strategy: Mapping[str, Any], values: Optional[Mapping[str, str]] = None) -> str:
    """``ma_cross fast=10 slow=50``: the strategy's name and key parameters (``values`` replaces
    some, e.g. a sweep's ``fast=5,10``)."""
    name = str(strategy.get("name", "strategy"))
    values = values or {}
    keys = KEY_PARAMS.get(name)
    if keys is None:
        keys = [k for k, v in strategy.items() if k != "name" and not isinstance(v, (dict, list))]
    parts = [name]
    for k in keys:
        if k in values:
            parts.append(f"{k}={_short(values[k])}")
        elif k in strategy:
            parts.append(f"{k}={_short(strategy[k])}")
    return " ".join(parts)


def symbols_label(symbols: Sequence[str], shown: int = 3) -> str:
    """``BTCUSDT,ETHUSDT``; more than ``shown`` symbols: ``BTCUSDT,ETHUSDT +3``."""
    syms = [str(s) for s in symbols or []]
    if len(syms) <= shown:
        return ",".join(syms)
    return ",".join(syms[: shown - 1]) + f" +{len(syms) - shown + 1}"


def bars_label(bars: Mapping[str, Any]) -> str:
    """The bar kind (``dollar``); time bars with their interval (``time 1h``)."""
    kind = str(bars.get("kind", ""))
    return f"{kind} {bars.get('interval')}" if kind == "time" else kind


def sweep_values(overrides: Iterable[str]) -> dict[str, str]:
    """``{key: value}`` of the overrides that Hydra sweeps over (``strategy.fast=5,10``,
    ``strategy.slow=range(40,200)``; Hydra's own parser, :func:`btsys.backtest.validate.sweep_values`),
    infrastructure keys and paths left out."""
    from btsys.backtest.validate import sweep_values as parsed

    return {k: v for k, v in parsed([str(o) for o in overrides]).items() if _nameable(k, v)}


def _nameable(key: str, value: str) -> bool:
    return not key.startswith(INFRA_PREFIXES) and not _is_path(value)


def describe(
    plain: Mapping[str, Any], values: Optional[Mapping[str, str]] = None, extra: Sequence[str] = ()
) -> str:
    """Run name of a plain config: strategy (key params, ``values`` overriding them), symbols,
    bar kind, then ``extra`` words."""
    strategy = plain.get("strategy") or {}
    values = values or {}
    strat_values = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("strategy.")}
    others = [
        f"{k.rsplit('.', 1)[-1]}={_short(v)}"
        for k, v in values.items()
        if not k.startswith("strategy.") and k not in ("strategy", "bars")
    ]
    words = [
        strategy_label(strategy, strat_values),
        symbols_label((plain.get("data") or {}).get("symbols") or []),
        bars_label(plain.get("bars") or {}),
        *others,
        *extra,
    ]
    from btsys.redact import redact_text

    return redact_text(" ".join(w for w in words if w))[:MAX_NAME]


def job_values(job_overrides: Iterable[str], swept: Optional[Sequence[str]]) -> dict[str, str]:
    """This job's values of the swept keys (all nameable overrides when ``swept`` is unknown)."""
    out = {}
    for o in job_overrides:
        key, sep, value = str(o).partition("=")
        key = key.lstrip("+~")
        if sep and _nameable(key, value) and (swept is None or key in swept):
            out[key] = value
    return out


def tags(plain: Mapping[str, Any], swept: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """``btsys.strategy``, ``btsys.symbols``, ``btsys.bars`` and, in a sweep, ``btsys.swept`` plus
    ``swept.<key>`` per varied key."""
    out = {
        "btsys.strategy": str((plain.get("strategy") or {}).get("name", "")),
        "btsys.symbols": ",".join(str(s) for s in (plain.get("data") or {}).get("symbols") or []),
        "btsys.bars": bars_label(plain.get("bars") or {}),
    }
    if swept:
        out["btsys.swept"] = ",".join(swept)
        out.update({f"swept.{k}": str(v) for k, v in swept.items()})
    return out
