"""Binance public bulk data: URLs, file plans and the real CSV layouts.

Paths follow https://data.binance.vision exactly, e.g.::

    data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-01.zip      (+ .CHECKSUM)
    data/futures/um/monthly/trades/BTCUSDT/BTCUSDT-trades-2025-01.zip
    data/futures/cm/monthly/fundingRate/BTCUSD_PERP/BTCUSD_PERP-fundingRate-2025-01.zip

A ``base_url`` is the site root (``https://data.binance.vision``), a ``file://`` mirror root or a
loopback ``http://127.0.0.1:PORT``; the relative path above is appended to it.

Parsing (:func:`parse_csv`) turns one CSV member into the tick table of DESIGN.md with
``pyarrow.csv`` (column types forced, never pandas row loops): header present or not, ``True`` /
``true`` booleans, ms or µs timestamps detected per file and normalised to µs, float64 prices.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from btsys.errors import ConfigError

MARKETS = {"spot": "spot", "um": "futures/um", "cm": "futures/cm"}
TICK_DATASETS = ("trades", "aggTrades")
FUNDING = "fundingRate"
DEFAULT_CONTRACT_SIZE = {"BTC": 100.0, "default": 10.0}  # USD per COIN-M contract
SYMBOL_RE = re.compile(r"^[A-Z0-9_]{2,32}$")

#: Parser version: bump when parsing/validation changes what lands in the lake (re-ingests files).
PARSER_VERSION = 1

#: Tick table schema (DESIGN.md).
TICK_SCHEMA = pa.schema(
    [
        ("ts", pa.int64()),
        ("trade_id", pa.int64()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("quote_qty", pa.float64()),
        ("is_buyer_maker", pa.bool_()),
    ]
)
FUNDING_SCHEMA = pa.schema([("ts", pa.int64()), ("interval_hours", pa.int64()), ("rate", pa.float64())])

# Real layouts: (column names, arrow types). Names are ours (stable); the file's header, if any,
# only has to have the same number of columns.
_I, _F, _B = pa.int64(), pa.float64(), pa.bool_()
LAYOUTS: dict[tuple[str, str], list[tuple[str, pa.DataType]]] = {
    ("spot", "aggTrades"): [
        ("agg_id", _I),
        ("price", _F),
        ("qty", _F),
        ("first_id", _I),
        ("last_id", _I),
        ("time", _I),
        ("is_buyer_maker", _B),
        ("is_best_match", _B),
    ],
    ("spot", "trades"): [
        ("id", _I),
        ("price", _F),
        ("qty", _F),
        ("quote_qty", _F),
        ("time", _I),
        ("is_buyer_maker", _B),
        ("is_best_match", _B),
    ],
    ("um", "aggTrades"): [
        ("agg_trade_id", _I),
        ("price", _F),
        ("quantity", _F),
        ("first_trade_id", _I),
        ("last_trade_id", _I),
        ("transact_time", _I),
        ("is_buyer_maker", _B),
    ],
    ("um", "trades"): [
        ("id", _I),
        ("price", _F),
        ("qty", _F),
        ("quote_qty", _F),
        ("time", _I),
        ("is_buyer_maker", _B),
    ],
    ("cm", "trades"): [
        ("id", _I),
        ("price", _F),
        ("qty", _F),
        ("base_qty", _F),
        ("time", _I),
        ("is_buyer_maker", _B),
    ],
    ("um", "fundingRate"): [("calc_time", _I), ("funding_interval_hours", _I), ("last_funding_rate", _F)],
}
LAYOUTS[("cm", "aggTrades")] = LAYOUTS[("um", "aggTrades")]
LAYOUTS[("cm", "fundingRate")] = LAYOUTS[("um", "fundingRate")]

#: Which layout column is the id / time / qty of the tick table.
_ROLES = {
    "aggTrades": {"id": 0, "price": 1, "qty": 2, "time": 5, "ibm": 6},
    "trades": {"id": 0, "price": 1, "qty": 2, "time": 4, "ibm": 5},
}
TRUE_VALUES = ["true", "True", "TRUE"]
FALSE_VALUES = ["false", "False", "FALSE"]
US_THRESHOLD = 10**14  # a ms timestamp below this is before year 5138; a µs one after 1973


class FormatError(ValueError):
    """A file that does not match its market's layout (message names the file and row)."""


# --------------------------------------------------------------------------- names and URLs
def check_symbol(symbol: str) -> str:
    """Return ``symbol`` if it matches ``^[A-Z0-9_]{2,32}$``; raise ``ValueError`` naming it otherwise.

    This is what keeps a symbol like ``../etc`` out of URLs and storage keys.
    """
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
        raise ConfigError(
            f"data.symbols: invalid symbol {symbol!r}: must match {SYMBOL_RE.pattern} "
            "(upper-case letters, digits, underscore)"
        )
    return symbol


def check_market(market: str) -> str:
    market = str(getattr(market, "value", market))
    if market not in MARKETS:
        raise ValueError(f"data.market must be one of {sorted(MARKETS)}, got {market!r}")
    return market


def check_dataset(dataset: str) -> str:
    dataset = str(getattr(dataset, "value", dataset))
    if dataset not in TICK_DATASETS + (FUNDING,):
        raise ValueError(f"data.dataset must be one of {list(TICK_DATASETS)}, got {dataset!r}")
    return dataset


def parse_date(value, key: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: expected a YYYY-MM-DD date, got {value!r}") from None


@dataclass(frozen=True)
class SourceFile:
    """One Binance zip: where it lives and which period it covers (``first``..``last`` inclusive)."""

    market: str
    dataset: str
    symbol: str
    period: str  # daily | monthly
    label: str  # 2025-01-01 | 2025-01
    first: str  # first date covered (inclusive)
    last: str  # last date covered (inclusive)

    @property
    def stem(self) -> str:
        return f"{self.symbol}-{self.dataset}-{self.label}"

    @property
    def name(self) -> str:
        return f"{self.stem}.zip"

    @property
    def rel(self) -> str:
        """Path relative to the site root, as on data.binance.vision."""
        return f"data/{MARKETS[self.market]}/{self.period}/{self.dataset}/{self.symbol}/{self.name}"

    def url(self, base_url: str) -> str:
        return join_url(base_url, self.rel)

    def to_dict(self) -> dict:
        return asdict(self)


def join_url(base_url: str, rel: str) -> str:
    return base_url.rstrip("/") + "/" + rel.lstrip("/")


def source_file(market: str, dataset: str, symbol: str, period: str, label: str) -> SourceFile:
    check_market(market), check_dataset(dataset), check_symbol(symbol)
    if period == "daily":
        d = parse_date(label, "date")
        return SourceFile(market, dataset, symbol, "daily", d.isoformat(), d.isoformat(), d.isoformat())
    if period == "monthly":
        y, m = (int(x) for x in label.split("-"))
        last = dt.date(y, m, calendar.monthrange(y, m)[1])
        return SourceFile(
            market, dataset, symbol, "monthly", f"{y:04d}-{m:02d}", f"{y:04d}-{m:02d}-01", last.isoformat()
        )
    raise ValueError(f"period must be daily or monthly, got {period!r}")


def _months(start: dt.date, end: dt.date) -> Iterable[tuple[int, int]]:
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        yield y, m
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def plan_files(market: str, dataset: str, symbols: Iterable[str], start, end) -> list[SourceFile]:
    """Files covering ``[start, end]``: monthly for complete calendar months, daily for the rest."""
    market, dataset = check_market(market), check_dataset(dataset)
    s, e = parse_date(start, "data.start"), parse_date(end, "data.end")
    if e < s:
        raise ConfigError(f"data.end {e} is before data.start {s}")
    out = []
    for sym in symbols:
        check_symbol(sym)
        for y, m in _months(s, e):
            first = dt.date(y, m, 1)
            last = dt.date(y, m, calendar.monthrange(y, m)[1])
            if s <= first and last <= e:
                out.append(source_file(market, dataset, sym, "monthly", f"{y:04d}-{m:02d}"))
            else:
                d = max(first, s)
                while d <= min(last, e):
                    out.append(source_file(market, dataset, sym, "daily", d.isoformat()))
                    d += dt.timedelta(days=1)
    return out


def plan_funding(market: str, symbols: Iterable[str], start, end) -> list[SourceFile]:
    """Monthly fundingRate files of every month touching ``[start, end]`` (futures only)."""
    market = check_market(market)
    if market == "spot":
        return []
    s, e = parse_date(start, "data.start"), parse_date(end, "data.end")
    return [
        source_file(market, FUNDING, sym, "monthly", f"{y:04d}-{m:02d}")
        for sym in symbols
        for y, m in _months(s, e)
    ]


def contract_size(symbol: str, table: Mapping[str, float]) -> float:
    """USD value of one COIN-M contract: ``table[base asset]`` else ``table['default']``.

    ``BTCUSD_PERP`` and ``BTCUSD_250627`` have base asset ``BTC``.
    """
    base = re.sub(r"USD[A-Z]*$", "", symbol.split("_")[0]) or symbol
    if base in table:
        return float(table[base])
    if "default" in table:
        return float(table["default"])
    raise KeyError(f"data.contract_size has no entry for {base!r} (symbol {symbol}) and no 'default'")


# --------------------------------------------------------------------------- parsing
@dataclass
class ParseInfo:
    header: bool = False
    time_unit: str = "ms"
    rows_read: int = 0
    malformed_rows: int = 0  # wrong column count (e.g. a cut last line), skipped and counted
    unparseable_rows: int = 0  # a value that is not a number / boolean, skipped and counted
    examples: Optional[list] = None  # first few bad rows: "row N: why"


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\n", 0, 1 << 16)
    return (data if end < 0 else data[:end]).strip(b"\r")


def _has_header(first: bytes) -> bool:
    field = first.split(b",", 1)[0].strip()
    return not (field.lstrip(b"-").isdigit())


def read_layout(
    data: bytes | pa.Buffer, layout: list[tuple[str, pa.DataType]], name: str, block_size: int = 1 << 24
) -> tuple[pa.Table, ParseInfo]:
    """Read one CSV (bytes) with a known layout; header detected; bad rows skipped *and counted*.

    Wrong column counts go through pyarrow's ``invalid_row_handler``; a value that does not
    convert (``abc`` as a price) makes pyarrow fail the whole read, and then the file is re-read
    as strings and the offending rows are found, counted and dropped (slow path, errors only).
    """
    raw = data.to_pybytes()[: 1 << 16] if isinstance(data, pa.Buffer) else bytes(data[: 1 << 16])
    first = _first_line(raw)
    info = ParseInfo(header=bool(first) and _has_header(first), examples=[])
    names = [c for c, _ in layout]
    if info.header:
        got = first.decode("utf-8", "replace").split(",")
        if len(got) != len(names):
            raise FormatError(
                f"{name}: header has {len(got)} columns {got}, expected {len(names)} ({','.join(names)})"
            )
    skip = 1 if info.header else 0

    def on_invalid(row) -> str:
        info.malformed_rows += 1
        if len(info.examples) < 5:
            info.examples.append(
                f"row {row.number}: {row.actual_columns} columns, expected "
                f"{row.expected_columns}: {row.text[:80]!r}"
            )
        return "skip"

    ropts = pacsv.ReadOptions(column_names=names, skip_rows=skip, block_size=block_size)
    popts = pacsv.ParseOptions(invalid_row_handler=on_invalid)
    copts = pacsv.ConvertOptions(
        column_types=dict(layout),
        true_values=TRUE_VALUES,
        false_values=FALSE_VALUES,
        null_values=[],
        strings_can_be_null=False,
    )
    buf = pa.BufferReader(data)
    try:
        table = pacsv.read_csv(buf, read_options=ropts, parse_options=popts, convert_options=copts)
    except pa.ArrowInvalid as e:
        if "conversion error" not in str(e).lower() and "empty" not in str(e).lower():
            raise FormatError(f"{name}: unreadable CSV: {e}") from None
        if "empty" in str(e).lower():
            table = pa.table({c: pa.array([], t) for c, t in layout})
        else:
            info.malformed_rows, info.examples = 0, []
            table = _read_slow(data, layout, names, skip, ropts, popts, info, name)
    info.rows_read = table.num_rows
    return table, info


_PATTERNS = {
    pa.int64(): r"^-?[0-9]+$",
    pa.float64(): r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$",
    pa.bool_(): r"^(true|True|TRUE|false|False|FALSE)$",
}


def _read_slow(data, layout, names, skip, ropts, popts, info: ParseInfo, name: str) -> pa.Table:
    copts = pacsv.ConvertOptions(column_types={c: pa.string() for c in names}, strings_can_be_null=False)
    table = pacsv.read_csv(
        pa.BufferReader(data), read_options=ropts, parse_options=popts, convert_options=copts
    )
    ok = np.ones(table.num_rows, dtype=bool)
    for col, typ in layout:
        good = pc.match_substring_regex(table[col], _PATTERNS[typ]).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(ok & ~good)[: max(0, 5 - len(info.examples))]:
            info.examples.append(
                f"row {i + 1 + skip}: column {col}={table[col][int(i)].as_py()!r} is not {typ}"
            )
        ok &= good
    info.unparseable_rows = int((~ok).sum())
    table = table.filter(pa.array(ok))
    cols = {}
    for col, typ in layout:
        arr = table[col]
        if typ == pa.bool_():
            arr = pc.is_in(arr, value_set=pa.array(TRUE_VALUES))
        else:
            arr = pc.cast(arr, typ)
        cols[col] = arr
    return pa.table(cols)


def detect_time_unit(t: np.ndarray, name: str) -> str:
    """``"us"`` or ``"ms"`` for a whole file, from the magnitude of its timestamps."""
    if t.size == 0:
        return "ms"
    lo, hi = int(t.min()), int(t.max())
    if hi < US_THRESHOLD:
        return "ms"
    if lo >= US_THRESHOLD:
        return "us"
    raise FormatError(
        f"{name}: timestamps mix milliseconds and microseconds (min {lo}, max {hi}); cannot normalise"
    )


def parse_csv(
    data: bytes | pa.Buffer,
    market: str,
    dataset: str,
    symbol: str,
    name: str,
    contract_sizes: Mapping[str, float],
) -> tuple[pa.Table, ParseInfo]:
    """One trades/aggTrades CSV member -> tick table (DESIGN.md columns, file order, µs timestamps).

    ``quote_qty`` is ``price * qty`` for spot and USD-M and ``qty * contract_size`` for COIN-M
    (``qty`` is in contracts there).
    """
    market, dataset = check_market(market), check_dataset(dataset)
    layout = LAYOUTS[(market, dataset)]
    table, info = read_layout(data, layout, name)
    roles = _ROLES[dataset]
    t = table.column(roles["time"]).to_numpy()
    info.time_unit = detect_time_unit(t, name)
    ts = t if info.time_unit == "us" else t * 1000
    price = table.column(roles["price"]).to_numpy()
    qty = table.column(roles["qty"]).to_numpy()
    if market == "cm":
        quote = qty * contract_size(symbol, contract_sizes)
    else:
        quote = price * qty
    out = pa.table(
        {
            "ts": pa.array(ts, pa.int64()),
            "trade_id": table.column(roles["id"]).combine_chunks(),
            "price": table.column(roles["price"]).combine_chunks(),
            "qty": table.column(roles["qty"]).combine_chunks(),
            "quote_qty": pa.array(quote, pa.float64()),
            "is_buyer_maker": table.column(roles["ibm"]).combine_chunks(),
        },
        schema=TICK_SCHEMA,
    )
    return out, info


def parse_funding_csv(data: bytes | pa.Buffer, market: str, name: str) -> tuple[pa.Table, ParseInfo]:
    """A fundingRate CSV -> ``ts`` (µs), ``interval_hours``, ``rate``, sorted by ``ts``, duplicates dropped."""
    market = check_market(market)
    table, info = read_layout(data, LAYOUTS[(market, FUNDING)], name)
    t = table["calc_time"].to_numpy()
    info.time_unit = detect_time_unit(t, name)
    ts = t if info.time_unit == "us" else t * 1000
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    keep = np.ones(ts.size, dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]
    idx = order[keep]
    out = pa.table(
        {
            "ts": pa.array(ts[keep], pa.int64()),
            "interval_hours": pa.array(table["funding_interval_hours"].to_numpy()[idx], pa.int64()),
            "rate": pa.array(table["last_funding_rate"].to_numpy()[idx], pa.float64()),
        },
        schema=FUNDING_SCHEMA,
    )
    return out, info
