"""Point-in-time universe membership from daily per-symbol sums (no survivorship, no look-ahead).

``top_n``: at each rebalance instant ``t`` (UTC midnight of day ``D``: ``data.start`` and every
``rebalance`` after it, up to ``data.end``) the candidates (``data.symbols``) are ranked by their
``measure`` summed over the ``lookback_days`` UTC days ``D-lookback_days .. D-1`` (a day without
trades counts 0), and the top ``n`` eligible ones are the members from ``t`` until the next
rebalance. A candidate is eligible when

* it has traded before ``D`` (otherwise ``not_listed``),
* its first trade day is at least ``min_history_days`` days before ``D`` (``short_history``),
* it traded on day ``D-1`` (``inactive``: a delisted symbol, or one whose last day is missing,
  leaves at the first rebalance after its data ends).

Only days strictly before ``D`` enter any of these, so changing data on or after a rebalance
instant cannot change that rebalance, and a symbol that first trades later cannot change earlier
memberships. Ties rank by symbol name. The daily sums come from the distributed quality job
(:mod:`btsys.data.quality`); ranking them here on the driver is a few thousand numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

DAY_US = 86_400_000_000
KINDS = ("static", "top_n")
MEASURES = {"quote_volume": "quote_volume", "volume": "volume", "trades": "rows"}
REASONS = ("member", "rank", "inactive", "short_history", "not_listed")


def _day(date: str, key: str) -> int:
    try:
        return (dt.date.fromisoformat(str(date)) - dt.date(1970, 1, 1)).days
    except ValueError as e:
        raise ValueError(f"{key}: expected a date YYYY-MM-DD, got {date!r}") from e


@dataclass(frozen=True)
class UniverseSpec:
    """Validated ``universe`` settings (field meanings: :class:`btsys.config.TopNUniverseConfig`)."""

    kind: str = "static"
    n: int = 10
    lookback_days: int = 30
    rebalance: str = "7d"
    min_history_days: int = 0
    measure: str = "quote_volume"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"universe: unknown universe {self.kind!r}; options: {list(KINDS)}")
        if self.kind == "static":
            return
        if int(self.n) < 1:
            raise ValueError(f"universe.n must be >= 1, got {self.n!r}")
        if int(self.lookback_days) < 1:
            raise ValueError(f"universe.lookback_days must be >= 1, got {self.lookback_days!r}")
        if int(self.min_history_days) < 0:
            raise ValueError(f"universe.min_history_days must be >= 0, got {self.min_history_days!r}")
        if self.measure not in MEASURES:
            raise ValueError(f"universe.measure must be one of {list(MEASURES)}, got {self.measure!r}")
        self.rebalance_days  # noqa: B018 - validates

    @property
    def dynamic(self) -> bool:
        return self.kind != "static"

    @property
    def rebalance_days(self) -> int:
        """``rebalance`` as a whole number of days (``1d``, ``7d``, ``2w``...)."""
        try:
            td = pd.Timedelta(str(self.rebalance))
        except ValueError as e:
            raise ValueError(
                f"universe.rebalance: {self.rebalance!r} is not a duration (e.g. 1d, 7d, 2w)"
            ) from e
        days, rest = divmod(td.value, DAY_US * 1000)
        if rest or days < 1:
            raise ValueError(
                f"universe.rebalance must be a whole number of days (e.g. 1d, 7d), got {self.rebalance!r}: "
                "membership is ranked from whole UTC days before each rebalance"
            )
        return int(days)

    @classmethod
    def from_config(cls, cfg: Any) -> "UniverseSpec":
        """From the ``universe`` config node (or a mapping); ``None`` is the static universe."""
        from btsys.config import to_plain

        d = dict(to_plain(cfg) or {})
        kind = d.pop("name", "static")
        fields = {
            k: d[k] for k in ("n", "lookback_days", "rebalance", "min_history_days", "measure") if k in d
        }
        return cls(kind=kind, **fields)


@dataclass(frozen=True)
class Membership:
    """Membership over time: ``member[i, k]`` holds from ``times[i]`` to ``times[i + 1]``.

    ``table`` is the long record of every decision: ``ts`` (rebalance instant, µs), ``date``,
    ``symbol``, ``score`` (the measure summed over the lookback), ``rank`` (among eligible
    candidates, 1 = best; 0 when not eligible), ``history_days``, ``eligible``, ``member``,
    ``reason`` (one of ``REASONS``).
    """

    symbols: list
    times: np.ndarray
    member: np.ndarray
    table: pd.DataFrame
    spec: UniverseSpec

    def wide(self) -> pd.DataFrame:
        """``ts`` + one boolean column per symbol: the ``universe=`` input of the portfolio engine."""
        df = pd.DataFrame(self.member, columns=list(self.symbols))
        df.insert(0, "ts", np.asarray(self.times, dtype=np.int64))
        return df

    def turnover(self) -> pd.DataFrame:
        """Per rebalance: ``ts``, ``date``, ``n_members``, ``joined``, ``left`` (symbol lists as
        comma-separated strings), ``turnover`` = (joined + left) / (members before + after)."""
        m = self.member
        prev = np.vstack([np.zeros((1, m.shape[1]), dtype=bool), m[:-1]])
        joined, left = m & ~prev, prev & ~m
        denom = m.sum(axis=1) + prev.sum(axis=1)
        changes = joined.sum(axis=1) + left.sum(axis=1)
        syms = np.asarray(self.symbols, dtype=object)
        return pd.DataFrame(
            {
                "ts": np.asarray(self.times, dtype=np.int64),
                "date": [_date(t) for t in self.times],
                "n_members": m.sum(axis=1).astype(np.int64),
                "joined": [",".join(syms[r]) for r in joined],
                "left": [",".join(syms[r]) for r in left],
                "turnover": np.where(denom > 0, changes / np.maximum(denom, 1), 0.0),
            }
        )

    def metrics(self) -> dict:
        """``universe_turnover`` (mean over rebalances after the first), ``universe_changes`` (joins
        + leaves after the first rebalance), ``universe_size_mean``, ``universe_rebalances``."""
        t = self.turnover()
        later = t.iloc[1:]
        changes = sum(
            len([x for x in s.split(",") if x]) for s in later["joined"].tolist() + later["left"].tolist()
        )
        return {
            "universe_turnover": float(later["turnover"].mean()) if len(later) else 0.0,
            "universe_changes": float(changes),
            "universe_size_mean": float(t["n_members"].mean()) if len(t) else 0.0,
            "universe_rebalances": float(len(t)),
        }


def _date(ts_us: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(ts_us) // DAY_US)).isoformat()


def rebalance_times(start: str, end: str, every_days: int) -> np.ndarray:
    """Rebalance instants (µs, UTC midnights): ``start`` and every ``every_days`` after it, <= ``end``."""
    d0, d1 = _day(start, "data.start"), _day(end, "data.end")
    if d1 < d0:
        raise ValueError(f"data.end {end} is before data.start {start}")
    return np.arange(d0, d1 + 1, int(every_days), dtype=np.int64) * DAY_US


def daily_matrix(
    daily: pd.DataFrame, symbols: Sequence[str], d0: int, n_days: int, column: str
) -> np.ndarray:
    """``(n_days, len(symbols))`` float64 of a daily column (0 where a symbol-day has no row)."""
    out = np.zeros((n_days, len(symbols)))
    if len(daily) == 0:
        return out
    col = {s: k for k, s in enumerate(symbols)}
    k = daily["symbol"].map(col)
    i = (np.asarray(daily["day"], dtype=np.int64) // DAY_US) - d0
    ok = k.notna().to_numpy() & (i >= 0) & (i < n_days)
    np.add.at(
        out, (i[ok], k[ok].astype(np.int64).to_numpy()), np.asarray(daily[column], dtype=np.float64)[ok]
    )
    return out


def compute_membership(
    daily: pd.DataFrame,
    spec: UniverseSpec,
    candidates: Sequence[str],
    start: str,
    end: str,
) -> Membership:
    """Membership of a ``top_n`` universe (see the module docstring).

    Parameters
    ----------
    daily : one row per symbol-day with trades: ``symbol``, ``day`` (int64 µs of the UTC midnight),
        ``rows`` and the measure's column (``quote_volume``, ``volume``); other rows are ignored,
        days without a row count as no trades.
    candidates : the candidate symbols (``data.symbols``), in any order.
    start, end : ``data.start`` / ``data.end`` (inclusive UTC dates).
    """
    if not spec.dynamic:
        raise ValueError("compute_membership: the static universe has no membership to compute")
    for c in ("symbol", "day", "rows", MEASURES[spec.measure]):
        if c not in daily.columns:
            raise ValueError(f"compute_membership: the daily table has no {c!r} column")
    symbols = sorted(dict.fromkeys(candidates))
    times = rebalance_times(start, end, spec.rebalance_days)
    d0 = _day(start, "data.start")
    n_days = int(times[-1] // DAY_US) - d0 + 1 if len(times) else 0
    traded = daily_matrix(daily, symbols, d0, n_days, "rows") > 0
    measure = daily_matrix(daily, symbols, d0, n_days, MEASURES[spec.measure])
    csum = np.vstack([np.zeros((1, len(symbols))), np.cumsum(measure, axis=0)])  # csum[i] = days < i
    first = np.where(traded.any(axis=0), traded.argmax(axis=0), n_days)  # first traded day index
    member = np.zeros((len(times), len(symbols)), dtype=bool)
    rows = []
    for r, t in enumerate(times):
        i = int(t // DAY_US) - d0
        score = csum[i] - csum[max(i - int(spec.lookback_days), 0)]
        listed = first < i
        history = np.where(listed, i - first, 0)
        long_enough = listed & (history >= int(spec.min_history_days))
        active = long_enough & (traded[i - 1] if i > 0 else np.zeros(len(symbols), bool))
        eligible = np.flatnonzero(active)
        order = eligible[np.lexsort((eligible, -score[eligible]))]  # symbols are sorted: ties by name
        rank = np.zeros(len(symbols), dtype=np.int64)
        rank[order] = np.arange(1, order.size + 1)
        member[r, order[: int(spec.n)]] = True
        reason = np.where(
            member[r],
            "member",
            np.where(
                active,
                "rank",
                np.where(long_enough, "inactive", np.where(listed, "short_history", "not_listed")),
            ),
        )
        rows.append(
            pd.DataFrame(
                {
                    "ts": np.full(len(symbols), t, dtype=np.int64),
                    "date": _date(t),
                    "symbol": symbols,
                    "score": score,
                    "rank": rank,
                    "history_days": history.astype(np.int64),
                    "eligible": active,
                    "member": member[r],
                    "reason": reason,
                }
            )
        )
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["ts", "symbol"])
    return Membership(symbols=symbols, times=times, member=member, table=table, spec=spec)


def members_at(m: Membership, ts: int) -> list:
    """The members in effect at instant ``ts`` (µs): those of the latest rebalance at or before it."""
    i = int(np.searchsorted(m.times, int(ts), side="right")) - 1
    return [] if i < 0 else [s for s, on in zip(m.symbols, m.member[i], strict=True) if on]


def membership_from_config(
    universe_cfg: Any, daily: pd.DataFrame, data_cfg: Mapping[str, Any] | Any
) -> Optional[Membership]:
    """The run's membership (``None`` for the static universe) from its ``universe`` and ``data``
    config nodes and the daily table."""
    spec = UniverseSpec.from_config(universe_cfg)
    if not spec.dynamic:
        return None
    return compute_membership(
        daily, spec, list(data_cfg.get("symbols") or []), str(data_cfg.get("start")), str(data_cfg.get("end"))
    )
