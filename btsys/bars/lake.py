"""Bars from the tick lake: one symbol's day files streamed in order -> its bar table in the store.

Design (exact by construction): a bar may cross day, file and partition boundaries, and where a
threshold bar closes depends on where the previous one closed (``>=`` with overflow discarded), so
per-piece partial sums cannot be merged exactly without the carried state. Each symbol is one task
(:func:`symbol_task`; the bars stage, :mod:`btsys.stages.bars`, runs one Spark task per symbol,
in parallel) that streams its lake files in order through one :class:`~btsys.bars.api.BarStream`,
carrying the kernel state from file to file. Files are read with pyarrow inside the
Python worker (the Parquet decode dominates the cost; Spark's own reader is several times slower
here) while the next file is prefetched on a thread, and the symbol's bar table is written by the
task itself through the :class:`~btsys.storage.Storage`, so no tick ever reaches the driver.

Each written table holds the completed bars plus, if the stream ended inside a bar, that trailing
bar flagged ``is_partial=True``; :func:`load_bars` drops it unless ``keep_partial=True``. So the
output does not depend on ``bars.keep_partial`` (which is why the stage leaves it out of the key).

**Excluded days** (the data-quality policy, :mod:`btsys.data.quality`): bars are not built across
an excluded day. The symbol's stream is cut into segments at its excluded days, whose ticks are
left out; each segment is streamed by a fresh :class:`BarStream` (threshold, dynamic-threshold
history and imbalance expectations start again, exactly as if the symbol's data began on the
segment's first day), and the unfinished bar at the end of a segment before an excluded day is
discarded (counted in the meta's ``segments``). The bars of a segment equal the bars of one pass
over that segment's ticks alone.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Mapping, Optional

import pandas as pd
import pyarrow as pa

from btsys.bars.api import DAY_US, TICK_COLUMNS, BarsInputError, BarSpec, BarStream
from btsys.data.lake import read_day
from btsys.failpoint import failpoint
from btsys.storage import Storage, storage_from_dict


def bars_key(out_prefix: str, symbol: str) -> str:
    """Storage key of a symbol's bar table under a bars entry prefix."""
    return f"{out_prefix}/symbol={symbol}/bars.parquet"


def plan_symbols(partitions: list[Mapping[str, Any]]) -> dict[str, list[dict]]:
    """Group lake partitions by symbol, each list in stream order.

    Order: by ``date``, then by ``first_ts`` and ``min_id`` when the ingest listing gives them
    (it does), then in listing order. A wrong order is not silently accepted: the kernels check
    (ts, trade_id) across file boundaries and the error names the file.

    Raises :class:`BarsInputError` on a partition without ``symbol``/``path`` or a symbol listed
    under two markets (two different streams would be merged).
    """
    groups: dict[str, list[dict]] = {}
    markets: dict[str, str] = {}
    for k, p in enumerate(partitions):
        if "symbol" not in p or "path" not in p:
            raise BarsInputError(f"ingest partition #{k} lacks 'symbol' or 'path': {dict(p)!r}")
        sym = str(p["symbol"])
        m = str(p.get("market", ""))
        if markets.setdefault(sym, m) != m:
            raise BarsInputError(
                f"symbol {sym!r} appears in markets {markets[sym]!r} and {m!r}; "
                "bars need one stream per symbol"
            )
        groups.setdefault(sym, []).append(dict(p))
    for sym in groups:
        groups[sym].sort(key=_order_key)  # stable: listing order where the keys tie
    return groups


def split_segments(parts: list[dict], excluded: Optional[Iterable[str]]) -> list[list[dict]]:
    """A symbol's ordered lake files cut at its excluded dates (whose files are left out)."""
    skip = set(excluded or ())
    segments: list[list[dict]] = [[]]
    for p in parts:
        if p["date"] in skip:
            if segments[-1]:
                segments.append([])
            continue
        if segments[-1] and any(segments[-1][-1]["date"] < d < p["date"] for d in skip):
            segments.append([])
        segments[-1].append(p)
    return [seg for seg in segments if seg]


def _order_key(p: Mapping[str, Any]) -> tuple:
    """Stream order of a lake file: date, then (when the listing has them) first ts and first id."""
    return (
        str(p.get("date", "")),
        int(p.get("first_ts", -1) if p.get("first_ts") is not None else -1),
        int(p.get("min_id", -1) if p.get("min_id") is not None else -1),
    )


def stream_symbol(
    store: Storage, spec: BarSpec, parts: list[Mapping[str, Any]], prefetch: bool = True
) -> BarStream:
    """Stream one symbol's lake files, in order, through one BarStream (next file read ahead)."""
    stream = BarStream(spec)
    if not parts:
        return stream
    if not prefetch or len(parts) == 1:
        for p in parts:
            stream.feed(read_day(store, p, TICK_COLUMNS), source=store.uri(p["path"]))
        return stream
    # the prefetch thread's Parquet decode keeps the other cores busy: the one-pass kernels use
    # less CPU in total than the two-pass parallel one, so they finish first here (measured)
    stream.parallel = False
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bars-prefetch") as pool:
        fut = pool.submit(read_day, store, parts[0], TICK_COLUMNS)
        for k, p in enumerate(parts):
            tbl = fut.result()
            if k + 1 < len(parts):
                fut = pool.submit(read_day, store, parts[k + 1], TICK_COLUMNS)
            stream.feed(tbl, source=store.uri(p["path"]))
            del tbl
    return stream


def _day_str(day: int) -> str:
    return pd.Timestamp(day * DAY_US, unit="us").strftime("%Y-%m-%d")


@contextlib.contextmanager
def _arrow_threads(n: int):
    """pyarrow's CPU thread pool at ``n`` threads for the block, then as before.

    Spark starts Python workers with ``OMP_NUM_THREADS=spark.task.cpus`` (1 by default), and
    pyarrow sizes its pool from that variable: without this, every Parquet decode in a task runs
    on one thread even when the task is alone on its executor's cores.
    """
    old = pa.cpu_count()
    n = max(1, min(int(n), os.cpu_count() or 1))
    if n != old:
        pa.set_cpu_count(n)
    try:
        yield
    finally:
        if n != old:
            pa.set_cpu_count(old)


def symbol_task(
    item: tuple[str, list[list[dict]]], spec_dict: dict, store_dict: dict, out_prefix: str, threads: int = 1
) -> dict:
    """The bars stage's Spark task: bars of one symbol, written to the store; returns that symbol's
    small meta (``symbol``, ``path``, ``n_bars``, ``partial``, ``n_ticks``, ``n_files``, ``seconds``,
    and ``segments``/``thresholds`` when there are several segments / dynamic thresholds).

    ``item`` is ``(symbol, segments)``: its lake files in stream order, cut at excluded days (one
    segment without exclusions; see the module docstring). ``threads``: cores this task may use
    (pyarrow decode, prefetch) -- the driver's estimate of the cores per concurrently running
    symbol task.
    """
    symbol, segments = item
    t0 = time.perf_counter()
    store = storage_from_dict(store_dict)
    spec = BarSpec.from_config(spec_dict)
    streams, tables = [], []
    with _arrow_threads(threads):
        failpoint("bars.task.read")
        for k, parts in enumerate(segments):
            stream = stream_symbol(store, spec, parts)
            tables.append(stream.table(keep_partial=k == len(segments) - 1))
            streams.append(stream)
        key = bars_key(out_prefix, symbol)
        tbl = (
            pa.concat_tables(tables)
            if len(tables) > 1
            else (tables[0] if tables else BarStream(spec).table())
        )
        failpoint("bars.task.write")
        store.write_parquet(tbl, key)
    meta = {
        "symbol": symbol,
        "path": key,
        "n_bars": sum(st.n_bars for st in streams),
        "partial": bool(streams and streams[-1].has_partial),
        "n_ticks": sum(st.n_ticks for st in streams),
        "n_files": sum(len(p) for p in segments),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if len(segments) > 1:
        meta["segments"] = [
            {
                "first": p[0]["date"],
                "last": p[-1]["date"],
                "n_bars": st.n_bars,
                "partial_dropped": st.has_partial,
            }
            for p, st in zip(segments[:-1], streams[:-1], strict=True)
        ] + [
            {"first": segments[-1][0]["date"], "last": segments[-1][-1]["date"], "n_bars": streams[-1].n_bars}
        ]
    if spec.dynamic:
        days = {d: v for st in streams for d, v in st.day_thresholds.items()}
        meta["thresholds"] = {_day_str(d): v for d, v in sorted(days.items())}
    return meta


def load_bars(store: Storage, entry: Any, symbol: str, keep_partial: bool = False) -> pd.DataFrame:
    """Read a symbol's bars back.

    ``entry`` is the bars CacheEntry, its ``meta`` dict (``{"symbols": {...}}``) or the entry's
    storage prefix. The trailing partial bar (``is_partial``) is dropped unless ``keep_partial``.
    """
    path: Optional[str] = None
    meta = (
        getattr(entry, "meta", None)
        if not isinstance(entry, (str, Mapping))
        else (entry if isinstance(entry, Mapping) else None)
    )
    if isinstance(meta, Mapping) and "symbols" in meta:
        syms = meta["symbols"]
        if symbol not in syms:
            raise KeyError(f"no bars for symbol {symbol!r}; this entry has {sorted(syms)}")
        path = syms[symbol]["path"]
    elif isinstance(entry, str):
        path = bars_key(entry.rstrip("/"), symbol)
    elif hasattr(entry, "prefix"):
        path = bars_key(entry.prefix, symbol)
    else:
        raise TypeError(
            f"entry must be a CacheEntry, a bars meta dict or a prefix, got {type(entry).__name__}"
        )
    df = store.read_parquet(path).to_pandas()
    if not keep_partial and "is_partial" in df.columns and len(df) and df["is_partial"].iloc[-1]:
        df = df.iloc[:-1].reset_index(drop=True)
    return df
