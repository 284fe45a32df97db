"""Fetch, verify and safely unzip Binance files.

* :func:`fetch_to_file` streams an ``http(s)://`` or ``file://`` URL to a local file while hashing
  it; timeouts, dropped connections and 5xx/429 answers are retried with exponential back-off; a
  404 raises :class:`MissingFile` (a missing day, not an error by itself).
* :func:`parse_checksum` reads a ``.CHECKSUM`` (``<sha256>  <name>``, with or without a final
  newline) and :func:`fetch_verified` checks the zip against it, re-downloading once on a
  mismatch before raising :class:`ChecksumMismatch`.
* :func:`extract_single_csv` accepts exactly one plain ``*.csv`` member (no directories, no
  ``..``, no nested zip) and bounds decompression by size and ratio, counting the bytes actually
  inflated (the sizes a zip declares can lie).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from typing import Optional

log = logging.getLogger("btsys.data.download")

CHUNK = 1 << 20
_SHA_RE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S.*)$")


class DownloadError(RuntimeError):
    """A file that could not be fetched after all retries (or a non-retryable HTTP status)."""


class MissingFile(DownloadError):
    """HTTP 404 / no such file in a mirror: the day is not published."""


class ChecksumMismatch(DownloadError):
    """The zip's SHA-256 differs from its ``.CHECKSUM``, even after one re-download."""


class UnsafeArchive(ValueError):
    """A zip that is not a zip, is truncated, or whose contents are not one bounded plain CSV."""


@dataclass
class Fetched:
    path: str  # local file holding the bytes
    size: int
    sha256: str
    attempts: int
    temporary: bool  # True if ``path`` is a temp file the caller must delete


def _file_path(url: str) -> str:
    p = urllib.parse.urlparse(url)
    return urllib.request.url2pathname(p.path) if not p.netloc else f"//{p.netloc}{p.path}"


def _hash_file(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK * 8)
            if not b:
                break
            h.update(b)
            n += len(b)
    return n, h.hexdigest()


def fetch_to_file(
    url: str,
    dest_dir: Optional[str] = None,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    copy_local: bool = False,
) -> Fetched:
    """Fetch ``url`` to a local file, hashing it on the way.

    ``file://`` URLs are read in place (no copy) unless ``copy_local``. Retries (``retries`` after
    the first attempt, back-off ``backoff * 2**k`` with a little jitter) cover timeouts, refused or
    reset connections, short reads and HTTP 5xx/429. HTTP 404 raises :class:`MissingFile`
    at once; other 4xx raise :class:`DownloadError`.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        path = _file_path(url)
        if not os.path.isfile(path):
            raise MissingFile(f"not found: {url}")
        if copy_local:
            fd, tmp = tempfile.mkstemp(prefix="btsys-dl-", dir=dest_dir)
            os.close(fd)
            shutil.copyfile(path, tmp)
            size, sha = _hash_file(tmp)
            return Fetched(tmp, size, sha, 1, True)
        size, sha = _hash_file(path)
        return Fetched(path, size, sha, 1, False)
    if scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme {scheme!r} in {url} (use https://, http:// or file://)")

    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * (2 ** (attempt - 1)) * (1 + 0.1 * random.random())
            log.info("retry %d/%d of %s in %.2fs after: %s", attempt, retries, url, delay, last)
            time.sleep(delay)
        fd, tmp = tempfile.mkstemp(prefix="btsys-dl-", dir=dest_dir)
        try:
            h, n = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                while True:
                    b = resp.read(CHUNK)
                    if not b:
                        break
                    h.update(b)
                    out.write(b)
                    n += len(b)
            if expected is not None and n != int(expected):
                raise HTTPException(f"short read: {n} of {expected} bytes")
            return Fetched(tmp, n, h.hexdigest(), attempt + 1, True)
        except urllib.error.HTTPError as e:
            os.remove(tmp)
            if e.code == 404:
                raise MissingFile(f"HTTP 404: {url}") from None
            if e.code >= 500 or e.code == 429:
                last = DownloadError(f"HTTP {e.code} from {url}")
                continue
            raise DownloadError(f"HTTP {e.code} from {url}") from None
        except (
            urllib.error.URLError,
            socket.timeout,
            TimeoutError,
            ConnectionError,
            HTTPException,
            OSError,
        ) as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            last = e
            continue
    raise DownloadError(f"giving up on {url} after {retries + 1} attempts: {last}")


def fetch_bytes(url: str, timeout: float = 30.0, retries: int = 4, backoff: float = 0.5) -> bytes:
    """Small files (``.CHECKSUM``): same retry policy as :func:`fetch_to_file`."""
    f = fetch_to_file(url, timeout=timeout, retries=retries, backoff=backoff)
    try:
        with open(f.path, "rb") as fh:
            return fh.read()
    finally:
        if f.temporary:
            os.remove(f.path)


def parse_checksum(text: bytes | str, expected_name: Optional[str] = None, source: str = "CHECKSUM") -> str:
    """The hex SHA-256 of a ``.CHECKSUM`` file (``<sha256>  <name>``; final newline optional)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        raise ValueError(f"{source}: expected one line '<sha256>  <file name>', got {len(lines)} lines")
    m = _SHA_RE.match(lines[0])
    if not m:
        raise ValueError(f"{source}: not a '<sha256>  <file name>' line: {lines[0][:100]!r}")
    if expected_name is not None and m.group(2).strip() != expected_name:
        raise ValueError(f"{source}: names {m.group(2).strip()!r}, expected {expected_name!r}")
    return m.group(1).lower()


def fetch_verified(
    url: str,
    name: str,
    dest_dir: Optional[str] = None,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    checksum: Optional[str] = None,
) -> tuple[Fetched, str]:
    """Fetch ``url`` and ``url + '.CHECKSUM'`` and verify; one re-download on a mismatch.

    ``checksum`` (already fetched by the caller) is used for the first attempt; the retry fetches
    both files again. Returns the fetched zip and its verified SHA-256. A second mismatch raises
    :class:`ChecksumMismatch`, whose ``fetched`` attribute still holds the zip (to quarantine it).
    """
    for attempt in (1, 2):
        expected = (
            checksum
            if (attempt == 1 and checksum)
            else parse_checksum(
                fetch_bytes(url + ".CHECKSUM", timeout, retries, backoff),
                expected_name=name,
                source=f"{name}.CHECKSUM",
            )
        )
        got = fetch_to_file(url, dest_dir, timeout, retries, backoff)
        if got.sha256 == expected:
            return got, expected
        msg = (
            f"{name}: SHA-256 mismatch (attempt {attempt}/2): file {got.sha256}, "
            f"CHECKSUM {expected}, {got.size} bytes from {url}"
        )
        if attempt == 1:
            log.warning("%s; downloading again", msg)
            if got.temporary:
                os.remove(got.path)
            continue
        err = ChecksumMismatch(msg)
        err.fetched = got
        raise err
    raise AssertionError("unreachable")


def _plain_member(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and ":" not in name
        and not name.startswith("~")
        and "\x00" not in name
    )


def check_zip(path: str, label: str, max_bytes: int, max_ratio: float) -> zipfile.ZipInfo:
    """The single CSV member of a zip, after all the safety checks on its directory entries."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise UnsafeArchive(f"{label}: not a zip file (or truncated: no central directory): {e}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) != 1:
            raise UnsafeArchive(
                f"{label}: expected exactly one member, found {len(infos)}: {[i.filename for i in infos][:5]}"
            )
        info = infos[0]
        if not _plain_member(info.filename) or info.is_dir():
            raise UnsafeArchive(
                f"{label}: member {info.filename!r} is not a plain file name "
                "(paths, '..' and drive letters are refused)"
            )
        low = info.filename.lower()
        if low.endswith((".zip", ".gz", ".7z", ".tar", ".bz2", ".xz")):
            raise UnsafeArchive(f"{label}: member {info.filename!r} is a nested archive")
        if not low.endswith(".csv"):
            raise UnsafeArchive(f"{label}: member {info.filename!r} is not a .csv")
        if info.file_size > max_bytes:
            raise UnsafeArchive(
                f"{label}: member {info.filename!r} declares {info.file_size} bytes, "
                f"over data.max_uncompressed_bytes={max_bytes}"
            )
        if info.file_size > (1 << 20) and info.file_size > max_ratio * max(info.compress_size, 1):
            raise UnsafeArchive(
                f"{label}: member {info.filename!r} compression ratio "
                f"{info.file_size / max(info.compress_size, 1):.0f} over "
                f"data.max_compression_ratio={max_ratio:g}"
            )
        return info


def extract_single_csv(
    path: str, label: str, max_bytes: int = 8 * 1024**3, max_ratio: float = 250.0
) -> bytes:
    """Inflate the one CSV member of the zip at ``path``, bounded by size and ratio.

    The member is inflated in one bounded ``zlib`` call (at most ``limit + 1`` output bytes, so a
    zip whose directory understates the size is caught too), then checked against the size and
    CRC-32 in the directory. Truncated or corrupt data raises :class:`UnsafeArchive`.
    """
    info = check_zip(path, label, max_bytes, max_ratio)
    limit = min(max_bytes, max(int(max_ratio * max(info.compress_size, 1)), 1 << 20))
    if info.flag_bits & 0x1:
        raise UnsafeArchive(f"{label}: member {info.filename!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        raise UnsafeArchive(
            f"{label}: member {info.filename!r} uses compression method "
            f"{info.compress_type}; only deflate and stored are accepted"
        )
    try:
        with open(path, "rb") as f:
            # the member's data follows its local header (30 bytes + name + extra field)
            f.seek(info.header_offset)
            head = f.read(30)
            if len(head) < 30 or head[:4] != b"PK\x03\x04":
                raise UnsafeArchive(
                    f"{label}: corrupt or truncated zip data in {info.filename!r}: bad local file header"
                )
            f.seek(
                info.header_offset
                + 30
                + int.from_bytes(head[26:28], "little")
                + int.from_bytes(head[28:30], "little")
            )
            comp = f.read(info.compress_size)
        if len(comp) < info.compress_size:
            raise UnsafeArchive(
                f"{label}: corrupt or truncated zip data in {info.filename!r}: "
                f"{len(comp)} of {info.compress_size} compressed bytes"
            )
        if info.compress_type == zipfile.ZIP_STORED:
            out = comp
            if len(out) > limit:
                raise UnsafeArchive(
                    f"{label}: member {info.filename!r} is {len(out)} bytes, over "
                    f"data.max_uncompressed_bytes={max_bytes}"
                )
        else:
            # one bounded inflate: never produces more than ``limit + 1`` bytes
            d = zlib.decompressobj(-15)
            out = d.decompress(comp, limit + 1)
            del comp
            if len(out) > limit or d.unconsumed_tail:
                raise UnsafeArchive(
                    f"{label}: member {info.filename!r} inflates past {limit} bytes "
                    f"(data.max_uncompressed_bytes={max_bytes}, "
                    f"data.max_compression_ratio={max_ratio:g})"
                )
            if not d.eof:
                raise UnsafeArchive(
                    f"{label}: corrupt or truncated zip data in {info.filename!r}: deflate stream ends early"
                )
    except UnsafeArchive:
        raise
    except (zlib.error, OSError, ValueError) as e:
        raise UnsafeArchive(
            f"{label}: corrupt or truncated zip data in {info.filename!r}: {type(e).__name__}: {e}"
        ) from None
    if len(out) != info.file_size or (zlib.crc32(out) & 0xFFFFFFFF) != info.CRC:
        raise UnsafeArchive(
            f"{label}: corrupt zip data in {info.filename!r}: size/CRC-32 do not match "
            f"the directory ({len(out)} bytes vs {info.file_size} declared)"
        )
    if out[:2] == b"PK":
        raise UnsafeArchive(f"{label}: member {info.filename!r} is itself a zip (nested archive)")
    return out
