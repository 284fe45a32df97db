"""Binance public bulk data: URLs, file plans and the real CSV layouts.

Paths follow https://data.binance.vision exactly, e.g.::

    data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-01.zip      (+ .CHECKSUM)
    data/futures/um/monthly/trades/BTCUSDT/BTCUSDT-trades-2025-01.zip
    data/futures/cm/monthly/fundingRate/BTCUSD_PERP/BTCUSD_PERP-fundingRate-2025-01.zip

A ``base_url`` is the site root (``https://data.binance.vision``), a ``file://`` mirror root or a
loopback ``http://127.0.0.1:PORT``; the relative path above is appended to it.

Parsing (:class:`CsvReader`, :func:`tick_batches`) streams one CSV member through
``pyarrow.csv.open_csv`` block by block into tick-table batches (docs/DESIGN.md columns, column types
forced, never pandas row loops): a UTF-8 BOM stripped, header present or not, ``True``/``true``
booleans, CRLF or LF, ms or µs timestamps detected per file and normalised to µs, float64 prices.
Every batch comes with the CSV line number of each row, so messages name real lines. Rows that do
not parse are skipped and counted with their lines; a file where more than
``data.max_bad_row_fraction`` of the rows do not parse fails (:class:`FormatError`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import re
from dataclasses import asdict, dataclass, field
from typing import BinaryIO, Iterable, Iterator, Mapping, Optional

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
PARSER_VERSION = 2

#: Tick table schema (docs/DESIGN.md).
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
    """Return ``symbol`` if it matches ``^[A-Z0-9_]{2,32}$``; raise ``ConfigError`` naming it otherwise.

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
        raise ConfigError(f"data.market must be one of {sorted(MARKETS)}, got {market!r}")
    return market


def check_dataset(dataset: str) -> str:
    dataset = str(getattr(dataset, "value", dataset))
    if dataset not in TICK_DATASETS + (FUNDING,):
        raise ConfigError(f"data.dataset must be one of {list(TICK_DATASETS)}, got {dataset!r}")
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
#: Default CSV block size of the streaming reader (rows arrive in batches of about this many bytes).
BLOCK_SIZE = 1 << 22
MAX_EXAMPLES = 5
_BOM = b"\xef\xbb\xbf"


@dataclass
class ParseInfo:
    """What the reader saw in one CSV member, besides the rows it returned."""

    header: bool = False
    bom: bool = False
    time_unit: Optional[str] = None
    rows_read: int = 0  # rows returned (before validation)
    malformed_rows: int = 0  # wrong column count: skipped, counted, quoted
    unparseable_rows: int = 0  # a value that is not a number / boolean: skipped, counted, quoted
    empty_lines: int = 0  # blank lines: skipped and counted
    examples: list = field(default_factory=list)  # [(line, "why: quote")] of the first bad rows

    @property
    def bad_rows(self) -> int:
        return self.malformed_rows + self.unparseable_rows

    def example_lines(self, name: str) -> list[str]:
        return [f"{name} line {ln}: {why}" for ln, why in sorted(self.examples)[:MAX_EXAMPLES]]


MODES = ("fast", "numbered", "slow")


class ReadAgain(Exception):
    """The member must be read again from the start in ``mode``: ``numbered`` (one thread, so the
    parser can number the rows it skips) after a row with a wrong column count, ``slow`` (string
    columns) after a value that does not convert."""

    def __init__(self, mode: str, why: str):
        super().__init__(f"{why}; reading again ({mode})")
        self.mode = mode


def _has_header(first: bytes) -> bool:
    field_ = first.split(b",", 1)[0].strip()
    return not field_.lstrip(b"-").isdigit()


class _Prefixed(io.RawIOBase):
    """``prefix`` then the rest of ``stream`` (what :class:`CsvReader` peeked at)."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        super().__init__()
        self._prefix, self._stream = memoryview(prefix), stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if len(self._prefix):
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._stream.readinto(b)


class CsvReader:
    """Stream one CSV member of a known layout as pyarrow batches with their CSV line numbers.

    Parameters
    ----------
    stream : a readable binary stream (e.g. :class:`btsys.data.download.MemberStream`).
    layout : ``[(column, arrow type)]`` of the file's columns.
    name : file name used in messages.
    block_size : bytes per parsed block (tests use tiny ones).
    mode : ``fast`` (typed columns, parser threads), ``numbered`` (one thread: skipped rows get their
        line numbers) or ``slow`` (string columns: values that do not convert are found and skipped;
        pyarrow cannot skip such a row and go on). A reader raises :class:`ReadAgain` when the
        member needs a later mode; rows it already returned must then be discarded.
    max_bad_fraction : fail (:class:`FormatError`) when more rows than this fraction do not
        parse; checked at the end, and early once it is certain (``expected_bytes`` bounds the
        number of rows the member can still hold).
    """

    def __init__(
        self,
        stream: BinaryIO,
        layout: list[tuple[str, pa.DataType]],
        name: str,
        block_size: int = BLOCK_SIZE,
        mode: str = "fast",
        max_bad_fraction: float = 0.001,
        expected_bytes: Optional[int] = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.layout, self.name, self.mode = layout, name, mode
        self.slow = mode == "slow"
        self.names = [c for c, _ in layout]
        self.max_bad_fraction = float(max_bad_fraction)
        # a row holds at least one character per column plus separators: at most this many rows
        self.max_rows = None if expected_bytes is None else expected_bytes // (2 * len(layout)) + 1
        self.info = ParseInfo()
        prefix = self._peek(stream)
        self.info.bom = prefix.startswith(_BOM)
        prefix = prefix[len(_BOM) :] if self.info.bom else prefix
        first = prefix.split(b"\n", 1)[0].rstrip(b"\r")
        self.info.header = bool(first) and _has_header(first)
        if self.info.header:
            got = first.decode("utf-8", "replace").split(",")
            if len(got) != len(self.names):
                raise FormatError(
                    f"{name}: header has {len(got)} columns {got}, expected {len(self.names)} "
                    f"({','.join(self.names)})"
                )
        self._first_line = 2 if self.info.header else 1
        self._skipped: list[int] = []  # lines the parser skipped (wrong column count)
        self._good = 0  # rows returned so far
        self._aborted = False
        self._again: Optional[ReadAgain] = None
        self._stream = io.BufferedReader(_Prefixed(prefix, stream), buffer_size=1 << 20)
        # a block must hold the header and the longest row (pyarrow cannot split a row)
        self._block_size = max(int(block_size), 2 * len(first) + 2, 64)

    @staticmethod
    def _peek(stream: BinaryIO) -> bytes:
        out = b""
        while b"\n" not in out and len(out) < (1 << 16):
            b = stream.read(1 << 16)
            if not b:
                break
            out += b
        return out

    def _on_invalid(self, row) -> str:
        if row.number is None:  # parser threads do not number rows: read again, numbered
            self._again = ReadAgain("numbered", f"{self.name}: a row has {row.actual_columns} columns")
            return "error"
        self.info.malformed_rows += 1
        self._skipped.append(int(row.number))
        if len(self.info.examples) < 4 * MAX_EXAMPLES:
            self.info.examples.append(
                (
                    int(row.number),
                    f"{row.actual_columns} columns, expected {row.expected_columns}: {row.text[:120]!r}",
                )
            )
        if self._certain_failure():
            self._aborted = True
            return "error"
        return "skip"

    def _certain_failure(self) -> bool:
        return self.max_rows is not None and self.info.bad_rows > self.max_bad_fraction * self.max_rows

    def _lines(self, n: int) -> np.ndarray:
        """CSV line numbers of the next ``n`` returned rows (skipped lines interleave)."""
        g = self._good + np.arange(n, dtype=np.int64)
        lines = g + self._first_line
        if self._skipped:
            s = np.asarray(self._skipped, dtype=np.int64)
            adjusted = s - np.arange(s.size, dtype=np.int64) - self._first_line
            lines += np.searchsorted(adjusted, g, side="right")
        self._good += n
        return lines

    def _open(self):
        ropts = pacsv.ReadOptions(
            column_names=self.names,
            skip_rows=1 if self.info.header else 0,
            block_size=self._block_size,
            use_threads=self.mode == "fast",
        )
        popts = pacsv.ParseOptions(invalid_row_handler=self._on_invalid, ignore_empty_lines=False)
        copts = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in self.names} if self.slow else dict(self.layout),
            true_values=TRUE_VALUES,
            false_values=FALSE_VALUES,
            null_values=[] if self.slow else [""],
            strings_can_be_null=False,
        )
        return pacsv.open_csv(self._stream, read_options=ropts, parse_options=popts, convert_options=copts)

    def batches(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """Yield ``(batch of the layout's columns, CSV line of each row)``; blank lines and bad
        rows are left out (and counted in :attr:`info`)."""
        try:
            reader = self._open()
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                batch, lines = self._clean(batch, self._lines(batch.num_rows))
                if batch.num_rows:
                    self.info.rows_read += batch.num_rows
                    yield batch, lines
                if self._certain_failure():
                    raise self._failure(certain=True)
        except pa.ArrowInvalid as e:
            if (
                "empty" in str(e).lower()
                and self._good == 0
                and not self.info.bad_rows
                and self._again is None
            ):
                return  # an empty member (or a header only)
            raise self._error(str(e)) from None
        total = self.info.rows_read + self.info.bad_rows
        if self.info.bad_rows and self.info.bad_rows > self.max_bad_fraction * total:
            raise self._failure(certain=False)

    def _error(self, msg: str) -> Exception:
        """What an error of pyarrow's reader means here."""
        if self._again is not None:
            return self._again
        if self._aborted:
            return self._failure(certain=True)
        if "conversion error" in msg.lower() and not self.slow:
            return ReadAgain("slow", f"{self.name}: a value does not convert")
        return FormatError(f"{self.name}: unreadable CSV: {msg}")

    def _clean(self, batch: pa.RecordBatch, lines: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
        """Drop blank lines (counted) and, on the slow path, rows with unconvertible values."""
        n = batch.num_rows
        if not n:
            return batch, lines
        if not self.slow:
            if not any(batch.column(i).null_count for i in range(batch.num_columns)):
                return batch, lines
            # an empty field converts to null: all fields empty is a blank line, some is a bad row
            nulls = [
                batch.column(i).is_null().to_numpy(zero_copy_only=False) for i in range(batch.num_columns)
            ]
            blank = np.logical_and.reduce(nulls)
            bad = np.logical_or.reduce(nulls) & ~blank
            for i in np.flatnonzero(bad)[: 4 * MAX_EXAMPLES]:
                col = self.names[next(k for k, m in enumerate(nulls) if m[i])]
                self.info.examples.append((int(lines[i]), f"column {col} is empty"))
            self.info.empty_lines += int(blank.sum())
            self.info.unparseable_rows += int(bad.sum())
            keep = ~(blank | bad)
            return batch.filter(pa.array(keep)), lines[keep]
        blank = np.ones(n, dtype=bool)
        for col in self.names:
            blank &= pc.equal(batch.column(col), "").to_numpy(zero_copy_only=False)
        ok = ~blank
        for col, typ in self.layout:
            good = pc.match_substring_regex(batch.column(col), _PATTERNS[typ]).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(ok & ~good)[: 4 * MAX_EXAMPLES]:
                self.info.examples.append(
                    (int(lines[i]), f"column {col}={batch.column(col)[int(i)].as_py()!r} is not {typ}")
                )
            ok &= good
        self.info.empty_lines += int(blank.sum())
        self.info.unparseable_rows += int((~ok & ~blank).sum())
        batch = batch.filter(pa.array(ok))
        cols = []
        for col, typ in self.layout:
            arr = batch.column(col)
            cols.append(
                pc.is_in(arr, value_set=pa.array(TRUE_VALUES)) if typ == pa.bool_() else pc.cast(arr, typ)
            )
        return pa.RecordBatch.from_arrays(cols, names=self.names), lines[ok]

    def _failure(self, certain: bool) -> FormatError:
        i = self.info
        seen = i.rows_read + i.bad_rows
        if certain:
            what = (
                f"{i.bad_rows:,} of the first {seen:,} rows do not parse, already more than "
                f"{self.max_bad_fraction:g} of the at most {self.max_rows:,} rows the member can hold"
            )
        else:
            what = f"{i.bad_rows:,} of {seen:,} rows do not parse"
        return FormatError(
            f"{self.name}: {what} (data.max_bad_row_fraction={self.max_bad_fraction:g}); first bad rows: "
            + "; ".join(i.example_lines(self.name))
        )

    def read_all(self) -> pa.Table:
        """The whole member as one table (small files: fundingRate)."""
        batches = [b for b, _ in self.batches()]
        if not batches:
            return pa.table({c: pa.array([], t) for c, t in self.layout})
        return pa.Table.from_batches(batches)


_PATTERNS = {
    pa.int64(): r"^-?[0-9]+$",
    pa.float64(): r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$",
    pa.bool_(): r"^(true|True|TRUE|false|False|FALSE)$",
}


def time_unit_of(t: np.ndarray, name: str) -> Optional[str]:
    """``"us"`` or ``"ms"`` from the magnitude of some timestamps (``None`` for none)."""
    if t.size == 0:
        return None
    lo, hi = int(t.min()), int(t.max())
    if hi < US_THRESHOLD:
        return "ms"
    if lo >= US_THRESHOLD:
        return "us"
    raise FormatError(
        f"{name}: timestamps mix milliseconds and microseconds (min {lo}, max {hi}); cannot normalise"
    )


def _to_us(t: np.ndarray, info: ParseInfo, name: str) -> np.ndarray:
    unit = time_unit_of(t, name)
    if unit is not None and info.time_unit is not None and unit != info.time_unit:
        raise FormatError(
            f"{name}: timestamps mix milliseconds and microseconds (this file started in "
            f"{info.time_unit}, a later block is in {unit}); cannot normalise"
        )
    info.time_unit = info.time_unit or unit
    return t if info.time_unit == "us" else t * 1000


def tick_batches(
    reader: CsvReader, market: str, dataset: str, symbol: str, contract_sizes: Mapping[str, float]
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """A trades/aggTrades :class:`CsvReader` as tick-table batches (docs/DESIGN.md columns, file order,
    µs timestamps) with their CSV lines.

    ``quote_qty`` is ``price * qty`` for spot and USD-M and ``qty * contract_size`` for COIN-M
    (``qty`` is in contracts there).
    """
    market, dataset = check_market(market), check_dataset(dataset)
    roles = _ROLES[dataset]
    cs = contract_size(symbol, contract_sizes) if market == "cm" else None
    for batch, lines in reader.batches():
        ts = _to_us(batch.column(roles["time"]).to_numpy(), reader.info, reader.name)
        price = batch.column(roles["price"])
        qty = batch.column(roles["qty"])
        quote = qty.to_numpy() * cs if cs is not None else price.to_numpy() * qty.to_numpy()
        table = pa.table(
            [
                pa.array(ts, pa.int64()),
                batch.column(roles["id"]),
                price,
                qty,
                pa.array(quote, pa.float64()),
                batch.column(roles["ibm"]),
            ],
            schema=TICK_SCHEMA,
        )
        yield table, lines


def read_ticks_csv(
    data: bytes,
    market: str,
    dataset: str,
    symbol: str,
    name: str,
    contract_sizes: Mapping[str, float],
    **reader_kw,
) -> tuple[pa.Table, ParseInfo]:
    """A whole CSV held in memory as one tick table (tests and notebooks; the ingest streams)."""
    market, dataset = check_market(market), check_dataset(dataset)
    mode = "fast"
    while True:
        reader = CsvReader(io.BytesIO(data), LAYOUTS[(market, dataset)], name, mode=mode, **reader_kw)
        try:
            parts = [t for t, _ in tick_batches(reader, market, dataset, symbol, contract_sizes)]
            break
        except ReadAgain as e:
            mode = e.mode
    table = pa.concat_tables(parts) if parts else TICK_SCHEMA.empty_table()
    return table, reader.info


def parse_funding(data: bytes, market: str, name: str, **reader_kw) -> tuple[pa.Table, ParseInfo]:
    """A fundingRate CSV (a few hundred rows, read whole) -> ``ts`` (µs), ``interval_hours``,
    ``rate``, sorted by ``ts``, duplicate times dropped."""
    market = check_market(market)
    mode = "fast"
    while True:
        reader = CsvReader(io.BytesIO(data), LAYOUTS[(market, FUNDING)], name, mode=mode, **reader_kw)
        try:
            table = reader.read_all()
            break
        except ReadAgain as e:
            mode = e.mode
    t = _to_us(table["calc_time"].to_numpy(), reader.info, name)
    order = np.argsort(t, kind="stable")
    ts = t[order]
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
    return out, reader.info
