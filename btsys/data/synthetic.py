"""A seeded, Binance-layout mirror of synthetic ticks on local disk.

The mirror has the exact folder and file names of data.binance.vision (``data/spot/daily/
aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-01-01.zip`` + ``.CHECKSUM``), one CSV member per zip and
each market's real column layout, so the offline demo and the tests go through the *real* ingest
code path with a ``file://`` (or loopback HTTP) base URL.

The ticks are meant to look like a market, not like white noise (all vectorised numpy):

* **intraday volume seasonality**: trade intensity peaks around 14-16 UTC and troughs around
  02-04 UTC (a cosine profile per 5-minute block);
* **volatility regimes**: a two-state Markov chain over 5-minute blocks (calm / turbulent, the
  turbulent state has 2.5x the volatility and 1.8x the trading intensity), i.e. clustered vol;
* **heavy tails**: Student-t(3) tick returns; Pareto(1.3) trade sizes (whole contracts on COIN-M);
* **order flow**: ``is_buyer_maker`` (the taker sold) leans with the sign of the tick's return;
* **ids**: contiguous trade ids, and aggregate trades that span 1+ contiguous trade ids.

Timestamps follow Binance: spot in µs from 2025-01-01 (ms before), futures in ms; futures files
have a header, spot files do not. Monthly futures files can be written slightly out of order
(as Binance's sometimes are). Futures markets can also get monthly ``fundingRate`` files.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import io
import json
import os
import pathlib
import shutil
import tempfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from btsys.data import binance as bn
from btsys.data.validate import US_PER_DAY, day_number
from btsys.errors import ConfigError

MIRROR_VERSION = 1
SPOT_US_FROM = "2025-01-01"
BLOCKS_PER_DAY = 288  # 5-minute blocks
_ZIP_TIME = (2025, 1, 1, 0, 0, 0)  # fixed member time: identical bytes for identical settings

_PRICE0 = {"BTC": 90_000.0, "ETH": 3_300.0, "BNB": 650.0, "SOL": 190.0, "XRP": 2.2}


def _base_asset(symbol: str) -> str:
    s = symbol.split("_")[0]
    for q in ("USDT", "USDC", "FDUSD", "BUSD", "USD", "BTC"):
        if s.endswith(q) and len(s) > len(q):
            return s[: -len(q)]
    return s


def _price0(symbol: str) -> float:
    base = _base_asset(symbol)
    if base in _PRICE0:
        return _PRICE0[base]
    h = zlib.crc32(base.encode()) / 2**32
    return float(round(10 ** (h * 4 - 1), 4))  # 0.1 .. 1000


def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(zlib.crc32(p.encode()) for p in parts)])


def simulate_ticks(
    symbol: str,
    market: str,
    first_day: int,
    n_days: int,
    ticks_per_day: int,
    seed: int = 7,
    annual_vol: float = 0.6,
    contract_size: float = 100.0,
    qty_scale: Optional[np.ndarray] = None,
    p0: Optional[float] = None,
) -> dict:
    """Ticks of one (market, symbol) over ``n_days`` days from epoch day ``first_day``.

    Returns numpy arrays: ``ts`` (int64 µs, sorted), ``price``, ``qty`` (contracts on cm),
    ``is_buyer_maker``, ``n_trades`` (trades per aggregate trade), ``agg_id``, ``first_id``.
    Exactly ``ticks_per_day`` ticks per day. The same arguments give the same arrays.
    ``qty_scale`` (one factor per day) multiplies the trade sizes of each day.
    ``p0``: the first price (default: a per-symbol level), to continue a path day by day.
    """
    if ticks_per_day < 1 or n_days < 1:
        raise ValueError(f"ticks_per_day ({ticks_per_day}) and n_days ({n_days}) must be >= 1")
    rng = _rng(seed, market, symbol)
    nb = n_days * BLOCKS_PER_DAY
    # regimes: 2-state Markov chain over 5-minute blocks (expected stays ~8 h calm, ~2 h turbulent)
    p_stay = np.array([1 - 1 / 96, 1 - 1 / 24])
    u = rng.random(nb)
    regime = np.empty(nb, dtype=np.int8)
    state = 0
    for i in range(nb):  # nb is small (288 per day): a plain loop is fine
        if u[i] > p_stay[state]:
            state = 1 - state
        regime[i] = state
    vol_mult = np.where(regime == 1, 2.5, 0.75)
    hours = (np.arange(nb) % BLOCKS_PER_DAY + 0.5) * 24 / BLOCKS_PER_DAY
    intensity = (1 + 0.55 * np.cos(2 * np.pi * (hours - 15) / 24)) * np.where(regime == 1, 1.8, 1.0)
    intensity = intensity.reshape(n_days, BLOCKS_PER_DAY)

    n = n_days * ticks_per_day
    ts = np.empty(n, dtype=np.int64)
    block_of_tick = np.empty(n, dtype=np.int64)
    grid = np.arange(BLOCKS_PER_DAY + 1, dtype=np.float64)
    for d in range(n_days):
        cdf = np.concatenate([[0.0], np.cumsum(intensity[d])])
        cdf /= cdf[-1]
        x = np.interp(np.sort(rng.random(ticks_per_day)), cdf, grid)  # in blocks, 0..288
        sl = slice(d * ticks_per_day, (d + 1) * ticks_per_day)
        ts[sl] = (first_day + d) * US_PER_DAY + np.minimum(
            (x * (US_PER_DAY / BLOCKS_PER_DAY)).astype(np.int64), US_PER_DAY - 1
        )
        block_of_tick[sl] = d * BLOCKS_PER_DAY + np.minimum(x.astype(np.int64), BLOCKS_PER_DAY - 1)

    sigma = annual_vol / np.sqrt(365.0 * ticks_per_day)
    df = 3.0
    shocks = rng.standard_t(df, n) / np.sqrt(df / (df - 2))
    r = sigma * vol_mult[block_of_tick] * shocks
    p0 = _price0(symbol) if p0 is None else float(p0)
    tick = 10.0 ** (np.floor(np.log10(p0)) - 6)
    price = np.round(p0 * np.exp(np.cumsum(r)) / tick) * tick
    price = np.maximum(price, tick)
    price = np.round(price, 8)
    # sides lean with the move: a down-tick is more often a taker sell (buyer is maker)
    ibm = rng.random(n) < (0.5 - 0.25 * np.sign(r))
    scale = 1.0 if qty_scale is None else np.repeat(np.asarray(qty_scale, np.float64), ticks_per_day)
    if market == "cm":
        qty = np.minimum(np.ceil(rng.pareto(1.3, n) * 3 + 1e-9), 50_000).astype(np.float64)
        if qty_scale is not None:
            qty = np.maximum(np.round(qty * scale), 1.0)
    else:
        lot = 10.0 ** min(-2, -int(np.floor(np.log10(p0))) - 1)
        qmin = max(200.0 / p0, lot) * scale  # about 200 USD minimum-ish trade
        qty = np.round(np.minimum(qmin * (1 + rng.pareto(1.3, n)), qmin * 1e4) / lot) * lot
        qty = np.round(np.maximum(qty, lot), 8)
    n_trades = rng.geometric(0.55, n).astype(np.int64)
    agg0 = int(1_000_000 + (zlib.crc32(f"{market}:{symbol}".encode()) % 1_000_000_000))
    agg_id = agg0 + first_day * ticks_per_day + np.arange(n, dtype=np.int64)
    first_id = 3 * agg0 + first_day * ticks_per_day * 3 + np.concatenate([[0], np.cumsum(n_trades)[:-1]])
    return {
        "ts": ts,
        "price": price,
        "qty": qty,
        "is_buyer_maker": ibm,
        "n_trades": n_trades,
        "agg_id": agg_id,
        "first_id": first_id,
    }


def _bool_col(flags: np.ndarray, title: bool) -> pa.Array:
    if not title:
        return pa.array(flags, pa.bool_())
    return pa.DictionaryArray.from_arrays(pa.array(flags.astype(np.int8)), pa.array(["False", "True"])).cast(
        pa.string()
    )


def to_csv(
    ticks: Mapping[str, np.ndarray],
    market: str,
    dataset: str,
    symbol: str,
    time_unit: str,
    header: bool,
    contract_size: float = 100.0,
) -> bytes:
    """Render ticks in a market's real CSV layout (bytes)."""
    ts = ticks["ts"] if time_unit == "us" else ticks["ts"] // 1000
    title = market == "spot"  # spot writes True/False, futures true/false
    price, qty, ibm = ticks["price"], ticks["qty"], ticks["is_buyer_maker"]
    if dataset == "aggTrades":
        cols = [
            ticks["agg_id"],
            price,
            qty,
            ticks["first_id"],
            ticks["first_id"] + ticks["n_trades"] - 1,
            ts,
            _bool_col(ibm, title),
        ]
        if market == "spot":
            cols.append(_bool_col(np.ones(ts.size, bool), True))
    else:
        if market == "cm":
            third = np.round(qty * contract_size / price, 8)  # base_qty: coins
        else:
            third = np.round(price * qty, 8)
        cols = [ticks["agg_id"], price, qty, third, ts, _bool_col(ibm, title)]
        if market == "spot":
            cols.append(_bool_col(np.ones(ts.size, bool), True))
    layout = bn.LAYOUTS[(market, dataset)]
    table = pa.table({name: c for (name, _), c in zip(layout, cols, strict=True)})
    buf = io.BytesIO()
    if header:
        buf.write((",".join(table.column_names) + "\n").encode())
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return buf.getvalue()


def write_zip(path: str, member: str, payload: bytes, compresslevel: int = 6) -> str:
    """Write ``path`` (zip with one member) and ``path.CHECKSUM``; returns the SHA-256."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    info = zipfile.ZipInfo(member, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, payload, compress_type=zipfile.ZIP_DEFLATED, compresslevel=compresslevel)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 22), b""):
            h.update(b)
    sha = h.hexdigest()
    with open(path + ".CHECKSUM", "w") as f:
        f.write(f"{sha}  {os.path.basename(path)}\n")
    return sha


def funding_csv(market: str, symbol: str, year: int, month: int, seed: int) -> bytes:
    """A month of 8-hourly funding rates in Binance's ``fundingRate`` layout (header, ms)."""
    rng = _rng(seed, "funding", market, symbol, f"{year}-{month}")
    days = calendar.monthrange(year, month)[1]
    d0 = day_number(f"{year:04d}-{month:02d}-01")
    n = days * 3
    t_ms = (d0 * US_PER_DAY // 1000) + np.arange(n, dtype=np.int64) * 8 * 3_600_000 + rng.integers(0, 5, n)
    rate = np.round(np.clip(1e-4 + 1.5e-4 * rng.standard_normal(n), -0.003, 0.003), 8)
    lines = ["calc_time,funding_interval_hours,last_funding_rate"]
    lines += [f"{t},8,{r:.8f}" for t, r in zip(t_ms.tolist(), rate.tolist(), strict=True)]
    return ("\n".join(lines) + "\n").encode()


def generate_mirror(
    root: str,
    markets: Iterable[str] = ("spot",),
    datasets: Iterable[str] = ("aggTrades",),
    symbols: Iterable[str] = ("BTCUSDT",),
    start: str = "2025-01-01",
    end: str = "2025-01-03",
    seed: int = 7,
    ticks_per_day: int = 20_000,
    annual_vol: float = 0.6,
    monthly: bool = True,
    daily: str = "needed",
    funding: bool = False,
    contract_sizes: Optional[Mapping[str, float]] = None,
    futures_header: bool = True,
    unsorted_monthly_futures: bool = True,
    spot_us_from: str = SPOT_US_FROM,
    compresslevel: int = 1,
    profiles: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> dict:
    """Write a Binance-layout mirror under ``root`` (``root/data/...``); returns an inventory.

    Parameters
    ----------
    markets, datasets, symbols : what to generate (``spot``/``um``/``cm``; ``trades``/``aggTrades``);
        every symbol is written for every market (give COIN-M names like ``BTCUSD_PERP`` yourself).
    start, end : inclusive UTC dates.
    monthly : write monthly files for complete calendar months.
    daily : ``"needed"`` writes daily files only where no monthly file covers the day (what the
        ingest lists), ``"all"`` writes every day too (as Binance does), ``"none"`` none.
    funding : monthly ``fundingRate`` files for futures markets, every month touching the range.
    futures_header : futures CSVs have a header (Binance's since 2022).
    unsorted_monthly_futures : shuffle ~1% of neighbouring rows in monthly futures files.
    spot_us_from : spot timestamps are µs from this date on, ms before.
    compresslevel : deflate level; 1 (fast) by default: any level is a valid Binance-style zip.
    profiles : per symbol, optional ``listing`` / ``delisting`` (first / last UTC date with trades:
        no file exists outside them, and a monthly file holds only the listed days, as on
        Binance), ``volume_scale`` (trade-size factor) and ``volume_trend`` (the factor reached,
        geometrically, on ``end``): see :func:`symbol_profile`.
    """
    s, e = bn.parse_date(start, "data.start"), bn.parse_date(end, "data.end")
    if e < s:
        raise ConfigError(f"data.end {e} is before data.start {s}")
    if daily not in ("needed", "all", "none"):
        raise ValueError(f"daily must be needed|all|none, got {daily!r}")
    m = _Mirror(
        root=root,
        start=s,
        end=e,
        seed=seed,
        ticks_per_day=ticks_per_day,
        annual_vol=annual_vol,
        monthly=monthly,
        daily=daily,
        futures_header=futures_header,
        unsorted_monthly_futures=unsorted_monthly_futures,
        us_from=day_number(spot_us_from),
        compresslevel=compresslevel,
    )
    cs_table = dict(contract_sizes or {"BTC": 100.0, "default": 10.0})
    files = []
    for market in markets:
        market = bn.check_market(market)
        for symbol in symbols:
            bn.check_symbol(symbol)
            cs = bn.contract_size(symbol, cs_table) if market == "cm" else 1.0
            lo_day, hi_day, qty_scale = symbol_profile(
                symbol, (profiles or {}).get(symbol), m.first_day, m.n_days
            )
            for dataset in datasets if lo_day <= hi_day else ():  # never listed in the range: no files
                files += m.tick_files(
                    market, bn.check_dataset(dataset), symbol, lo_day, hi_day, cs, qty_scale
                )
            if funding and market != "spot":
                files += m.funding_files(market, symbol)
    return {
        "root": os.path.abspath(root),
        "files": files,
        "rows": sum(f["rows"] for f in files if "fundingRate" not in f["rel"]),
        "csv_bytes": sum(f["csv_bytes"] for f in files),
    }


@dataclass
class _Mirror:
    """The settings of one :func:`generate_mirror` call and the phases that write its files."""

    root: str
    start: dt.date
    end: dt.date
    seed: int
    ticks_per_day: int
    annual_vol: float
    monthly: bool
    daily: str
    futures_header: bool
    unsorted_monthly_futures: bool
    us_from: int  # day number from which spot timestamps are µs
    compresslevel: int

    @property
    def first_day(self) -> int:
        return day_number(self.start.isoformat())

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days + 1

    def wanted(self, market: str, dataset: str, symbol: str) -> list[bn.SourceFile]:
        """Monthly files for complete months (``monthly``), daily files as ``daily`` says."""
        planned = bn.plan_files(market, dataset, [symbol], self.start, self.end) if self.monthly else []
        wanted = [f for f in planned if f.period == "monthly"]
        covered = {d for f in wanted for d in _dates(f)}
        for i in range(self.n_days):
            day = (self.start + dt.timedelta(days=i)).isoformat()
            if self.daily == "all" or (self.daily == "needed" and day not in covered):
                wanted.append(bn.source_file(market, dataset, symbol, "daily", day))
        return wanted

    def file_format(self, sf: bn.SourceFile, market: str) -> tuple[str, bool]:
        """``(time unit, header)`` of a file: spot is µs from ``us_from`` (a month straddling the
        switch stays ms) without header; futures are ms with ``futures_header``."""
        if market != "spot":
            return "ms", self.futures_header
        if day_number(sf.first) < self.us_from <= day_number(sf.last):
            return "ms", False
        return ("us" if day_number(sf.first) >= self.us_from else "ms"), False

    def tick_files(self, market, dataset, symbol, lo_day, hi_day, cs, qty_scale) -> list[dict]:
        """The files of the listed days ``lo_day..hi_day`` of one symbol, each with its days' ticks."""
        n_days = hi_day - lo_day + 1
        ticks = simulate_ticks(
            symbol, market, lo_day, n_days, self.ticks_per_day, self.seed, self.annual_vol, cs, qty_scale
        )
        out = []
        for sf in self.wanted(market, dataset, symbol):
            if day_number(sf.first) > hi_day or day_number(sf.last) < lo_day:
                continue
            lo = max(day_number(sf.first), lo_day) - lo_day
            hi = min(day_number(sf.last), hi_day) - lo_day + 1
            sl = slice(lo * self.ticks_per_day, hi * self.ticks_per_day)
            part = {k: v[sl] for k, v in ticks.items()}
            unit, header = self.file_format(sf, market)
            if sf.period == "monthly" and market != "spot" and self.unsorted_monthly_futures:
                part = _jumble(part, _rng(self.seed, "jumble", sf.name))
            payload = to_csv(part, market, dataset, symbol, unit, header, cs)
            out.append(self._write(sf, payload, int(part["ts"].size), unit, header))
        return out

    def funding_files(self, market: str, symbol: str) -> list[dict]:
        """Monthly ``fundingRate`` files of every month touching the range."""
        out = []
        for sf in bn.plan_funding(market, [symbol], self.start, self.end):
            y, m = (int(x) for x in sf.label.split("-"))
            payload = funding_csv(market, symbol, y, m, self.seed)
            out.append(self._write(sf, payload, payload.count(b"\n") - 1, "ms", True))
        return out

    def _write(self, sf: bn.SourceFile, payload: bytes, rows: int, unit: str, header: bool) -> dict:
        path = os.path.join(self.root, *sf.rel.split("/"))
        sha = write_zip(path, sf.stem + ".csv", payload, self.compresslevel)
        return {
            "rel": sf.rel,
            "rows": rows,
            "csv_bytes": len(payload),
            "sha256": sha,
            "time_unit": unit,
            "header": header,
        }


def symbol_profile(
    symbol: str, profile: Optional[Mapping[str, Any]], first_day: int, n_days: int
) -> tuple[int, int, Optional[np.ndarray]]:
    """``(first listed day, last listed day, per-day trade-size factors or None)`` of a symbol in
    a mirror of ``n_days`` days from epoch day ``first_day`` (days since the epoch)."""
    p = dict(profile or {})
    unknown = set(p) - {"listing", "delisting", "volume_scale", "volume_trend"}
    if unknown:
        raise ValueError(f"data.synthetic.profiles.{symbol}: unknown keys {sorted(unknown)}")
    lo, hi = first_day, first_day + n_days - 1
    if p.get("listing"):
        lo = max(
            lo,
            day_number(bn.parse_date(p["listing"], f"data.synthetic.profiles.{symbol}.listing").isoformat()),
        )
    if p.get("delisting"):
        d = bn.parse_date(p["delisting"], f"data.synthetic.profiles.{symbol}.delisting")
        hi = min(hi, day_number(d.isoformat()))
    scale, trend = float(p.get("volume_scale", 1.0)), float(p.get("volume_trend", 1.0))
    if not (scale > 0 and trend > 0 and np.isfinite(scale) and np.isfinite(trend)):
        raise ValueError(
            f"data.synthetic.profiles.{symbol}: volume_scale and volume_trend must be > 0, "
            f"got {scale}, {trend}"
        )
    if (scale == 1.0 and trend == 1.0) or hi < lo:
        return lo, hi, None
    frac = (np.arange(lo, hi + 1) - first_day) / max(n_days - 1, 1)
    return lo, hi, scale * trend**frac


def write_month(
    root: str,
    market: str,
    dataset: str,
    symbol: str,
    month: str,
    ticks_per_day: int,
    days: Optional[int] = None,
    seed: int = 7,
    compresslevel: int = 1,
) -> dict:
    """Write one monthly zip (+ ``.CHECKSUM``) day by day, never holding more than a day.

    For big files (the ingest scale benchmark: a 100 M-row month): each day is simulated with
    :func:`simulate_ticks` (continuing the previous day's last price; ids stay contiguous),
    rendered in the market's real layout (futures months slightly out of order, as Binance's are)
    and streamed into the zip member (zip64). ``days`` < the month's length writes a *short*
    monthly file (the first ``days`` days only, like Binance's early uploads). Returns the
    inventory entry of the file.
    """
    sf = bn.source_file(market, dataset, symbol, "monthly", month)
    n = days or (day_number(sf.last) - day_number(sf.first) + 1)
    path = os.path.join(root, *sf.rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cs = bn.contract_size(symbol, bn.DEFAULT_CONTRACT_SIZE) if market == "cm" else 1.0
    header, unit = market != "spot", "ms"
    info = zipfile.ZipInfo(sf.stem + ".csv", date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    for attr in ("compress_level", "_compresslevel"):  # the attribute's name changed in Python 3.13
        try:
            setattr(info, attr, compresslevel)
        except AttributeError:
            pass
    rows = csv_bytes = 0
    price = None
    with zipfile.ZipFile(path, "w") as zf, zf.open(info, "w", force_zip64=True) as out:
        for k in range(n):
            day = day_number(sf.first) + k
            day_seed = (seed * 1_000_003 + day) & 0xFFFFFFFF  # another path each day, same ids
            part = simulate_ticks(symbol, market, day, 1, ticks_per_day, day_seed, contract_size=cs, p0=price)
            price = float(part["price"][-1])
            if market != "spot":
                part = _jumble(part, _rng(seed, "jumble", sf.name, str(k)))
            payload = to_csv(part, market, dataset, symbol, unit, header and k == 0, cs)
            out.write(payload)
            rows, csv_bytes = rows + part["ts"].size, csv_bytes + len(payload)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 22), b""):
            h.update(b)
    with open(path + ".CHECKSUM", "w") as f:
        f.write(f"{h.hexdigest()}  {sf.name}\n")
    return {"rel": sf.rel, "rows": rows, "csv_bytes": csv_bytes, "sha256": h.hexdigest(), "days": n}


def _dates(sf: bn.SourceFile) -> list[str]:
    d0, d1 = day_number(sf.first), day_number(sf.last)
    return [(dt.date(1970, 1, 1) + dt.timedelta(days=d)).isoformat() for d in range(d0, d1 + 1)]


def _jumble(part: dict, rng: np.random.Generator) -> dict:
    """Swap ~1% of rows with their neighbour (the disorder seen in some monthly futures files)."""
    n = part["ts"].size
    if n < 3:
        return part
    idx = np.arange(n)
    k = 2 * rng.choice((n - 1) // 2, size=max(1, n // 100), replace=False)  # disjoint pairs
    idx[k], idx[k + 1] = idx[k + 1].copy(), idx[k].copy()
    return {key: v[idx] for key, v in part.items()}


# --------------------------------------------------------------------------- the ingest stage's mirror
def mirror_key(data_cfg: Any) -> str:
    """Hash of everything that determines the mirror's bytes."""
    from btsys.config import to_plain as _plain

    d = _plain(data_cfg)
    syn = d.get("synthetic") or {}
    payload = {
        "v": MIRROR_VERSION,
        "synthetic": syn,
        "market": d.get("market"),
        "dataset": d.get("dataset"),
        "symbols": d.get("symbols"),
        "start": str(d.get("start")),
        "end": str(d.get("end")),
        "funding": bool(d.get("funding")),
        "contract_size": d.get("contract_size"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_mirror(data_cfg: Any, store: Any) -> str:
    """Build (once) the synthetic mirror for a ``data`` config under the store; return its base URL.

    The mirror lives in ``mirror/<key>/`` under ``storage.root``, where ``key`` hashes the
    synthetic settings and market/dataset/symbols/dates, so it goes wherever the run's data goes
    and never into the working directory. A local store gets a ``file://`` mirror, generated in a
    temporary directory next to it and renamed into place (a killed run never leaves a half
    mirror; two concurrent runs both end with the same complete one). An S3 store
    (``storage=s3``) gets the mirror generated in a local temporary directory and uploaded to
    ``s3://bucket/prefix/mirror/<key>/``, marker last; the ingest then reads it from the bucket
    like any ``s3://`` source, so every executor of a cluster can reach it.
    """
    from btsys.config import to_plain as _plain
    from btsys.storage import LocalStorage

    d = _plain(data_cfg)
    key = mirror_key(d)
    rel = f"mirror/{key}"
    if isinstance(store, LocalStorage):
        root = os.path.join(store.root, "mirror", key)
        if not os.path.isfile(os.path.join(root, "_MIRROR.json")):
            _build_mirror(d, key, root)
        return pathlib.Path(root).as_uri()
    if not store.exists(f"{rel}/_MIRROR.json"):
        with tempfile.TemporaryDirectory(prefix="btsys-mirror-") as tmp:
            local = os.path.join(tmp, key)
            _build_mirror(d, key, local)
            for dirpath, _, names in os.walk(local):
                for n in sorted(names):
                    if n != "_MIRROR.json":
                        full = os.path.join(dirpath, n)
                        store.put_file(full, f"{rel}/{os.path.relpath(full, local).replace(os.sep, '/')}")
            store.put_file(os.path.join(local, "_MIRROR.json"), f"{rel}/_MIRROR.json")
    return store.uri(rel)


def _build_mirror(d: Mapping[str, Any], key: str, root: str) -> None:
    """Generate the mirror of a plain ``data`` config at ``root`` (temporary name, then rename)."""
    syn = d.get("synthetic") or {}
    market = bn.check_market(d.get("market", "spot"))
    markets = list(dict.fromkeys([market] + [bn.check_market(m) for m in (syn.get("markets") or [])]))
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        inv = generate_mirror(
            tmp,
            markets=markets,
            datasets=[d.get("dataset", "aggTrades")],
            symbols=list(d.get("symbols") or []),
            start=str(d.get("start")),
            end=str(d.get("end")),
            seed=int(syn.get("seed", 7)),
            ticks_per_day=int(syn.get("ticks_per_day", 20_000)),
            annual_vol=float(syn.get("annual_vol", 0.6)),
            funding=bool(d.get("funding")),
            contract_sizes=d.get("contract_size"),
            profiles=syn.get("profiles") or None,
        )
        with open(os.path.join(tmp, "_MIRROR.json"), "w") as f:
            json.dump(
                {"key": key, "config": d, "files": len(inv["files"]), "rows": inv["rows"]}, f, default=str
            )
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.isfile(os.path.join(root, "_MIRROR.json")):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
