"""Data quality per symbol and UTC day, from the tick lake and the ingest manifests.

One row per candidate symbol and day of ``[data.start, data.end]``, days without data included:

============== =========================================================================
``rows``        ticks in the lake that day (0: a missing day)
``first_ts``    first / last trade time (µs; null on a missing day)
``last_ts``
``volume``      sum of ``qty`` / ``quote_qty`` (the daily sums the universe ranks on)
``quote_volume``
``max_gap_s``   longest time without a trade inside the day, counting the stretch from 00:00
                to the first trade and from the last trade to 24:00 (86,400 on a missing day)
``n_gaps``      how many of those stretches are longer than ``data.quality.gap_s``
``coverage``    1 - (total length of those long stretches) / 24 h: the share of the day with
                trading at least every ``gap_s`` seconds
``id_gaps``     trade ids missing inside the day's id range; ``duplicates``: ids seen twice
``id_gap_prev`` ids missing between the previous traded day's last id and this day's first
``dropped``     rows the ingest dropped from the day, by reason in ``dropped_<reason>``: a daily
                file's drops (all of them), or the day's share of a monthly file's drops (its
                manifest counts them per day; rows of a monthly file that belong to no day --
                malformed, unparseable, out of the month -- are in its manifest only); null when
                the manifest does not count them per day. ``duplicate_across_days``: ids an
                earlier day holds (kept there)
``source``      the file the day came from (the listing entry's ``source``; for a day without
                data, the file asked for it, a daily file before the monthly one) and
                ``source_status`` (ok, missing = 404, failed, quarantined)
``status``      ``ok``, ``truncated`` (data starts later than 01:00 or ends before 23:00 UTC, or
                the ingest marked the day incomplete: its file was cut inside it) or ``missing``
============== =========================================================================

The lake is read through the ingest listing's entries (:func:`btsys.data.lake.read_day`, which
checks each day's rows and version): the quality stage (:mod:`btsys.stages.quality`) runs Spark
tasks over the symbol-day files (:func:`day_rows`, pyarrow inside the tasks; no tick reaches the
driver); :func:`quality_table` joins the small per-day rows with the manifests of the days' source
files (the listing's, else the store's).

Policy (``data.quality.min_coverage``, ``max_gap_s``; default: report only): :func:`apply_policy`
marks days with coverage below ``min_coverage`` or a longest gap above ``max_gap_s`` as
``excluded`` (with the reason); the bars job then does not build bars across them.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pandas as pd

from btsys.data.lake import Series, read_day, read_json
from btsys.errors import ConfigError, DataError
from btsys.failpoint import failpoint
from btsys.storage import Storage, storage_from_dict

log = logging.getLogger("btsys.data.quality")

DAY_US = 86_400_000_000
TRUNCATED_EDGE_S = 3600.0  # the ingest's edge tolerance, applied per day
READ_COLUMNS = ["ts", "trade_id", "qty", "quote_qty"]
_DATE_IN_NAME = re.compile(r"-(\d{4}-\d{2}(?:-\d{2})?)\.zip$")


# --------------------------------------------------------------------------- settings
def policy_from_config(quality_cfg: Any) -> dict:
    """``{"gap_s", "min_coverage", "max_gap_s"}`` from ``data.quality`` (validated, names the key)."""
    from btsys.config import to_plain

    q = dict(to_plain(quality_cfg) or {})
    gap_s = float(q.get("gap_s", 300.0))
    min_cov = float(q.get("min_coverage", 0.0))
    max_gap = float(q.get("max_gap_s", math.inf))
    if not (math.isfinite(gap_s) and gap_s > 0):
        raise ConfigError(f"data.quality.gap_s must be a number of seconds > 0, got {gap_s!r}")
    if not 0.0 <= min_cov <= 1.0:
        raise ConfigError(f"data.quality.min_coverage must be a fraction in [0, 1], got {min_cov!r}")
    if not max_gap > 0:
        raise ConfigError(f"data.quality.max_gap_s must be > 0 seconds (inf: off), got {max_gap!r}")
    return {"gap_s": gap_s, "min_coverage": min_cov, "max_gap_s": max_gap}


# --------------------------------------------------------------------------- one day
def day_stats(ts: np.ndarray, ids: np.ndarray, day_start: int, gap_us: int) -> dict:
    """Gap, coverage and id statistics of one day's ticks (``ts`` sorted, µs; ``ids`` trade ids)."""
    edges = np.concatenate([[day_start], ts, [day_start + DAY_US]])
    gaps = np.diff(edges)
    long = gaps > gap_us
    out = {
        "max_gap_s": float(gaps.max()) / 1e6,
        "n_gaps": int(long.sum()),
        "coverage": 1.0 - float(gaps[long].sum()) / DAY_US,
        "id_gaps": 0,
        "duplicates": 0,
        "min_id": None,
        "max_id": None,
    }
    if ids.size:
        d = np.diff(ids)
        if not (d > 0).all():
            d = np.diff(np.sort(ids))
        out["id_gaps"] = int((d[d > 1] - 1).sum())
        out["duplicates"] = int((d == 0).sum())
        out["min_id"], out["max_id"] = int(ids.min()), int(ids.max())
    return out


def day_row(store: Storage, part: Mapping[str, Any], gap_us: int) -> dict:
    """The per-day row of one lake day (an ingest listing entry)."""
    symbol, date = str(part["symbol"]), str(part["date"])
    day_start = (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days * DAY_US
    tbl = read_day(store, part, READ_COLUMNS)
    ts = tbl["ts"].to_numpy()
    ids = tbl["trade_id"].to_numpy()
    if ts.size > 1 and (np.diff(ts) < 0).any():  # a day written by hand may be unsorted
        order = np.lexsort((ids, ts))
        ts, ids = ts[order], ids[order]
    if ts.size and (ts[0] < day_start or ts[-1] >= day_start + DAY_US):
        bad = int(ts[0] if ts[0] < day_start else ts[-1])
        raise DataError(
            f"quality: {symbol} {date}: tick at ts {bad} lies outside its date partition "
            f"({store.uri(part['path'])})",
            hint="ingest the day again (force=true)",
        )
    row = {
        "symbol": symbol,
        "date": date,
        "rows": int(ts.size),
        "first_ts": int(ts[0]) if ts.size else None,
        "last_ts": int(ts[-1]) if ts.size else None,
        "volume": float(np.sum(tbl["qty"].to_numpy())),
        "quote_volume": float(np.sum(tbl["quote_qty"].to_numpy())),
    }
    row.update(day_stats(ts, ids, day_start, gap_us))
    return row


def day_rows(parts: Iterable[dict], store_dict: dict, gap_us: int):
    """The function a Spark task maps over its partition of the listing's symbol-day entries:
    :func:`day_row` of each."""
    store = storage_from_dict(store_dict)
    failpoint("quality.task.read")
    for part in parts:
        yield day_row(store, part, gap_us)


# --------------------------------------------------------------------------- the job
def _dates(start: str, end: str) -> list[str]:
    d0, d1 = dt.date.fromisoformat(str(start)), dt.date.fromisoformat(str(end))
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def _file_dates(m: Mapping[str, Any]) -> list[str]:
    """The UTC dates a source file covers (from its manifest, else from its name)."""
    if m.get("first") and m.get("last"):
        return _dates(m["first"], m["last"])
    found = _DATE_IN_NAME.search(str(m.get("file", "")))
    if not found:
        return []
    label = found.group(1)
    if len(label) == 10:
        return [label]
    y, mo = (int(x) for x in label.split("-"))
    last = (dt.date(y + mo // 12, mo % 12 + 1, 1) - dt.timedelta(days=1)).isoformat()
    return _dates(f"{label}-01", last)


def _source(m: Mapping[str, Any], date: str, complete: bool = True) -> dict:
    """One day's source-file columns from the file's manifest (drops: see the module docstring)."""
    r = {
        "symbol": m.get("symbol"),
        "date": date,
        "source": m.get("file"),
        "source_status": m.get("status"),
        "source_cut": not complete,
    }
    if m.get("status") != "ok":
        return r
    if len(_file_dates(m)) == 1:  # a daily file: every drop is the day's
        drops = m.get("dropped") or {}
    elif "dropped_by_day" in m:
        drops = (m.get("dropped_by_day") or {}).get(date) or {}
    else:
        return r  # the month's drops cannot be split by day
    r.update({f"dropped_{k}": int(v) for k, v in drops.items()}, dropped=sum(int(v) for v in drops.values()))
    return r


def source_rows(
    partitions: list[Mapping[str, Any]], files: list[Mapping[str, Any]], store: Optional[Storage] = None
) -> pd.DataFrame:
    """Per (symbol, date): the file the day came from, its status, whether the day was cut, drops.

    A lake day names its file (the listing entry's ``source``; its manifest from ``files``, else
    read from ``store``: a day the lake already held from a monthly file of another run). A day
    without data names the file asked for it: a daily file before the monthly one (the daily file
    was asked because the monthly one did not cover the day).
    """
    tick_files = [m for m in files if m.get("dataset") != "fundingRate"]
    by_name = {m.get("file"): m for m in tick_files}
    out: dict[tuple, dict] = {}
    for m in sorted(tick_files, key=lambda m: len(_file_dates(m)) == 1):  # daily files last: they win
        for d in _file_dates(m):
            out[(m.get("symbol"), d)] = _source(m, d)
    for p in partitions:
        m = by_name.get(p.get("source"))
        if m is None and store is not None and p.get("source"):
            series = Series(p["market"], p["dataset"], p["symbol"])
            m = read_json(store, series.manifest_key(p["source"]))
        m = {"symbol": p["symbol"], "file": p.get("source"), "status": "ok", **(m or {})}
        out[(p["symbol"], p["date"])] = _source(m, p["date"], bool(p.get("complete", True)))
    reasons = sorted({k for r in out.values() for k in r if k.startswith("dropped_")})
    cols = ["symbol", "date", "source", "source_status", "source_cut", "dropped", *reasons]
    return pd.DataFrame(list(out.values())).reindex(columns=cols)


def listing_days(listing: Mapping[str, Any]) -> list[dict]:
    """The listing's symbol-day entries in (symbol, date) order; a symbol-day listed twice is an
    error (one file per day)."""
    parts = sorted(listing.get("partitions") or [], key=lambda p: (str(p["symbol"]), str(p["date"])))
    days = [(p["symbol"], p["date"]) for p in parts]
    if len(set(days)) != len(days):
        raise DataError(
            "quality: the ingest listing names a symbol-day twice (one file per day expected)",
            hint="run the ingest again (force=true) to list the lake as it is now",
        )
    return parts


def quality_table(
    rows: list[dict], listing: Mapping[str, Any], store: Storage, symbols: Optional[list] = None
) -> pd.DataFrame:
    """The symbol x day table from the tasks' per-day rows (:func:`day_rows`) and the listing's
    manifests. ``symbols`` (default: the listing's) are the day grid's rows."""
    parts = listing_days(listing)
    syms = list(symbols or listing.get("symbols") or sorted({p["symbol"] for p in parts}))
    sources = source_rows(parts, list(listing.get("files") or []), store)
    return assemble(rows, sources, syms, listing["start"], listing["end"])


#: per-day statistics of the tasks and their value on a day without data
_STATS = {
    "rows": 0,
    "volume": 0.0,
    "quote_volume": 0.0,
    "max_gap_s": DAY_US / 1e6,
    "n_gaps": 1,
    "coverage": 0.0,
    "id_gaps": 0,
    "duplicates": 0,
}
_NULLABLE = ("first_ts", "last_ts", "min_id", "max_id")
COLUMNS = [
    "symbol",
    "date",
    "day",
    "status",
    "rows",
    "first_ts",
    "last_ts",
    "volume",
    "quote_volume",
    "max_gap_s",
    "n_gaps",
    "coverage",
    "id_gaps",
    "duplicates",
    "id_gap_prev",
    "source",
    "source_status",
    "dropped",
]


def assemble(rows: list[dict], manifests: pd.DataFrame, symbols: list, start: str, end: str) -> pd.DataFrame:
    """The full symbol x day table from the tasks' per-day rows and the manifest rows."""
    dates = _dates(start, end)
    grid = pd.DataFrame([(s, d) for s in symbols for d in dates], columns=["symbol", "date"])
    stats = pd.DataFrame(rows, columns=["symbol", "date", *_STATS, *_NULLABLE])
    t = grid.merge(stats, on=["symbol", "date"], how="left").merge(
        manifests, on=["symbol", "date"], how="left"
    )
    missing = t["rows"].isna().to_numpy()
    for c, fill in _STATS.items():
        t[c] = t[c].astype(np.float64).fillna(fill).astype(np.int64 if isinstance(fill, int) else np.float64)
    for c in _NULLABLE:
        t[c] = t[c].astype(np.float64).astype("Int64")
    t["day"] = (
        np.array([(dt.date.fromisoformat(d) - dt.date(1970, 1, 1)).days for d in t["date"]], np.int64)
        * DAY_US
    )
    t["id_gap_prev"] = _id_gap_prev(t)
    edge = int(TRUNCATED_EDGE_S * 1e6)
    late = (t["first_ts"] - t["day"] > edge) | (t["day"] + DAY_US - 1 - t["last_ts"] > edge)
    cut = late.fillna(False).to_numpy(bool) | t["source_cut"].eq(True).to_numpy()
    t["status"] = np.where(missing, "missing", np.where(cut, "truncated", "ok"))
    t["source_status"] = t["source_status"].fillna("not_planned").astype(object)
    drop_cols = sorted(c for c in t.columns if c.startswith("dropped_"))
    daily = t["dropped"].notna()
    for c in ["dropped", *drop_cols]:
        t[c] = t[c].astype(np.float64).astype("Int64")
        t.loc[daily & t[c].isna(), c] = 0  # a reason another daily file had
    return t[COLUMNS + drop_cols].sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)


def _id_gap_prev(t: pd.DataFrame) -> np.ndarray:
    """Ids missing between a symbol's previous traded day and this one (0 on the first traded day)."""
    out = np.zeros(len(t), dtype=np.int64)
    for _, g in t.sort_values(["symbol", "date"]).groupby("symbol", sort=False):
        traded = g[g["rows"] > 0]
        prev_max = traded["max_id"].shift(1)
        gap = (traded["min_id"] - prev_max - 1).fillna(0).clip(lower=0)
        out[traded.index.to_numpy()] = gap.astype(np.int64).to_numpy()
    return out


# --------------------------------------------------------------------------- policy and summary
def apply_policy(table: pd.DataFrame, policy: Mapping[str, float]) -> pd.DataFrame:
    """The table with ``excluded`` (bool) and ``exclude_reason`` (text naming the key) columns."""
    t = table.copy()
    low = t["coverage"] < policy["min_coverage"]
    long = t["max_gap_s"] > policy["max_gap_s"]
    reason = np.full(len(t), "", dtype=object)
    for i in np.flatnonzero(low.to_numpy() | long.to_numpy()):
        why = []
        if low.iat[i]:
            why.append(
                f"coverage {t['coverage'].iat[i]:.3f} < data.quality.min_coverage {policy['min_coverage']:g}"
            )
        if long.iat[i]:
            why.append(
                f"longest gap {t['max_gap_s'].iat[i]:,.0f}s > data.quality.max_gap_s {policy['max_gap_s']:g}"
            )
        if t["status"].iat[i] == "missing":
            why.insert(0, "missing day")
        reason[i] = "; ".join(why)
    t["excluded"] = low.to_numpy() | long.to_numpy()
    t["exclude_reason"] = reason
    return t


def excluded_days(table: pd.DataFrame) -> dict[str, list[str]]:
    """``{symbol: [date, ...]}`` of the excluded days of a policy-applied table."""
    if "excluded" not in table:
        return {}
    ex = table[table["excluded"]]
    return {s: sorted(g["date"].tolist()) for s, g in ex.groupby("symbol")}


def summarize(table: pd.DataFrame) -> dict:
    """Counts over the whole table (JSON-able)."""
    return {
        "symbols": int(table["symbol"].nunique()),
        "days": int(len(table)),
        "ok": int((table["status"] == "ok").sum()),
        "truncated": int((table["status"] == "truncated").sum()),
        "missing": int((table["status"] == "missing").sum()),
        "rows": int(table["rows"].sum()),
        "id_gaps": int(table["id_gaps"].sum() + table["id_gap_prev"].sum()),
        "duplicates": int(table["duplicates"].sum()),
        "dropped": int(table["dropped"].fillna(0).sum()),
        "min_coverage": float(table["coverage"].min()) if len(table) else float("nan"),
        "excluded": int(table["excluded"].sum()) if "excluded" in table else 0,
    }


def format_summary(table: pd.DataFrame) -> str:
    """A fixed-width table: one line per symbol, the totals, then every excluded day and why."""
    head = (
        f"{'symbol':<14} {'days':>5} {'ok':>4} {'trunc':>5} {'miss':>5} {'excl':>5} {'rows':>12} "
        f"{'min cov':>8} {'max gap s':>10} {'gaps':>6} {'id gaps':>8} {'dups':>5} {'dropped':>8}"
    )
    lines = [head]
    has_ex = "excluded" in table
    for sym, g in table.groupby("symbol", sort=True):
        lines.append(
            f"{sym:<14} {len(g):>5} {(g['status'] == 'ok').sum():>4} {(g['status'] == 'truncated').sum():>5} "
            f"{(g['status'] == 'missing').sum():>5} {int(g['excluded'].sum()) if has_ex else 0:>5} "
            f"{int(g['rows'].sum()):>12,} {g['coverage'].min():>8.3f} {g['max_gap_s'].max():>10,.0f} "
            f"{int(g['n_gaps'].sum()):>6} {int(g['id_gaps'].sum() + g['id_gap_prev'].sum()):>8} "
            f"{int(g['duplicates'].sum()):>5} {int(g['dropped'].fillna(0).sum()):>8}"
        )
    s = summarize(table)
    lines.append(
        f"total: {s['days']} symbol-days of {s['symbols']} symbols: {s['ok']} ok, "
        f"{s['truncated']} truncated, {s['missing']} missing, {s['excluded']} excluded; {s['rows']:,} rows, "
        f"{s['id_gaps']:,} missing ids, {s['duplicates']} duplicates, {s['dropped']:,} dropped"
    )
    if has_ex and s["excluded"]:
        lines.append("excluded days (bars restart after each):")
        for r in table[table["excluded"]].itertuples(index=False):
            lines.append(f"  {r.symbol} {r.date}: {r.exclude_reason}")
    return "\n".join(lines)
