"""Fetch, verify and stream-unzip Binance files, with bounded memory.

* :func:`fetch_to_file` streams an ``http(s)://``, ``file://`` or ``s3://`` URL to a local file
  while hashing it. A dropped connection resumes with an HTTP ``Range`` request from the bytes
  already on disk (a server that ignores ``Range`` gets a fresh full download); timeouts, resets,
  short bodies and HTTP 5xx/429 are retried with exponential back-off; a 404 raises
  :class:`MissingFile`; the whole download of one file is bounded by ``deadline_s`` besides the
  per-read ``timeout``. Credentials in a URL (``https://user:pass@host/``) are sent as a Basic
  ``Authorization`` header and never appear in a message (:func:`btsys.redact.redact_url`).
* :func:`parse_checksum` reads a ``.CHECKSUM`` (``<sha256>  <name>``, final newline optional);
  :func:`fetch_verified` checks a zip against it, downloading once more on a mismatch.
* :class:`MemberStream` inflates the one plain ``*.csv`` member of a zip chunk by chunk (no
  directories, no ``..``, no nested archive); an absolute cap and a compression-ratio cap are
  checked while streaming and the CRC-32 and size are checked at the end of the member.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import logging
import os
import random
import re
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
from typing import Callable, Optional

from btsys.redact import redact_text, redact_url

log = logging.getLogger("btsys.data.download")

CHUNK = 1 << 20
_SHA_RE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S.*)$")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NETWORK_ERRORS = (
    urllib.error.URLError,
    socket.timeout,
    TimeoutError,
    ConnectionError,
    HTTPException,
    OSError,
)

#: ``progress(bytes_done, bytes_total_or_None)`` callbacks receive the file's running totals.
Progress = Optional[Callable[[int, Optional[int]], None]]


class DownloadError(RuntimeError):
    """A file that could not be fetched after all retries (or a non-retryable HTTP status)."""


class MissingFile(DownloadError):
    """HTTP 404 / no such file in a mirror or bucket: the day is not published."""


class ChecksumMismatch(DownloadError):
    """The zip's SHA-256 differs from its ``.CHECKSUM``, even after one re-download."""


class DeadlineExceeded(DownloadError):
    """The download of one file took longer than ``data.source.file_deadline_s``."""


class UnsafeArchive(ValueError):
    """A zip that is not a zip, is truncated or corrupt, or whose content is not one bounded CSV."""


@dataclass
class Fetched:
    path: str  # local file holding the bytes
    size: int
    sha256: str
    attempts: int
    temporary: bool  # True if ``path`` is a temp file the caller must delete
    resumed: int = 0  # downloads continued with a Range request


# --------------------------------------------------------------------------- URLs
def split_auth(url: str) -> tuple[str, Optional[str]]:
    """``url`` without its user info, and the Basic ``Authorization`` header value it carried."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
    clean = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, "Basic " + base64.b64encode(token).decode()


def _file_path(url: str) -> str:
    p = urllib.parse.urlparse(url)
    return urllib.request.url2pathname(p.path) if not p.netloc else f"//{p.netloc}{p.path}"


def _s3_client(endpoint_url: Optional[str]):
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url)


def _s3_split(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


class _Deadline:
    """Seconds left for one file (``None`` deadline: unlimited); raises when they are used up."""

    def __init__(self, seconds: Optional[float], what: str):
        self.seconds = seconds if seconds and seconds > 0 else None
        self.end = time.monotonic() + self.seconds if self.seconds else None
        self.what = what

    def left(self) -> Optional[float]:
        return None if self.end is None else self.end - time.monotonic()

    def check(self, done: int) -> None:
        left = self.left()
        if left is not None and left <= 0:
            raise DeadlineExceeded(
                f"{self.what}: download not finished after data.source.file_deadline_s={self.seconds:g}s "
                f"({done} bytes received); the server is too slow or stalled"
            )

    def timeout(self, per_read: float) -> float:
        left = self.left()
        return per_read if left is None else max(0.01, min(per_read, left))


# --------------------------------------------------------------------------- fetching
def fetch_to_file(
    url: str,
    dest_dir: Optional[str] = None,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    deadline_s: Optional[float] = None,
    progress: Progress = None,
    s3_endpoint: Optional[str] = None,
) -> Fetched:
    """Fetch ``url`` to a local file, hashing it on the way.

    ``file://`` URLs are read in place (no copy). ``retries`` counts
    attempts that received nothing; an attempt that got bytes is continued (``Range``) without
    using one up, so a long download over a flaky link finishes, bounded by ``deadline_s``.
    Back-off is ``backoff * 2**k`` with a little jitter. HTTP 404 raises :class:`MissingFile`
    at once; other 4xx raise :class:`DownloadError`.
    """
    scheme = urllib.parse.urlparse(url).scheme
    shown = redact_url(url)
    if scheme == "file":
        return _fetch_local(url, progress)
    if scheme not in ("http", "https", "s3"):
        raise DownloadError(
            f"unsupported URL scheme {scheme!r} in {shown} (use https://, http://, file:// or s3://)"
        )
    deadline = _Deadline(deadline_s, shown)
    fd, tmp = tempfile.mkstemp(prefix="btsys-dl-", dir=dest_dir)
    os.close(fd)
    state = _Partial(tmp)
    if scheme == "s3":
        attempt = functools.partial(_s3_attempt, url, state, deadline, progress, s3_endpoint)
    else:
        attempt = functools.partial(_http_attempt, url, state, timeout, deadline, progress)
    try:
        return _retry(attempt, state, retries, backoff, deadline, shown)
    except BaseException:
        state.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fetch_local(url: str, progress: Progress) -> Fetched:
    path = _file_path(url)
    if not os.path.isfile(path):
        raise MissingFile(f"not found: {redact_url(url)}")
    size, sha = _hash_file(path, progress)
    return Fetched(path, size, sha, 1, False)


def _retry(
    attempt, state: "_Partial", retries: int, backoff: float, deadline: "_Deadline", shown: str
) -> Fetched:
    attempts = failures = 0
    while True:
        attempts += 1
        before = state.size
        try:
            attempt()
            state.close()
            return Fetched(state.path, state.size, state.sha.hexdigest(), attempts, True, state.resumed)
        except _Retryable as e:
            last = e.args[0]
        except _NETWORK_ERRORS as e:
            last = e
        if state.size <= before:
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"giving up on {shown} after {attempts} attempts: {redact_text(str(last))}"
                )
        delay = backoff * (2 ** max(failures - 1, 0)) * (1 + 0.1 * random.random())
        left = deadline.left()
        delay = delay if left is None else min(delay, max(left, 0))
        log.info(
            "retry %d of %s in %.2fs after: %s (%d bytes on disk)",
            attempts,
            shown,
            delay,
            redact_text(str(last)),
            state.size,
        )
        time.sleep(delay)
        deadline.check(state.size)


class _Retryable(Exception):
    """Wraps an error that should be retried (5xx, 429, short body)."""


class _Partial:
    """A download in progress: the local file, its running SHA-256, the bytes it holds."""

    def __init__(self, path: str):
        self.path = path
        self.out = open(path, "wb")
        self.sha = hashlib.sha256()
        self.size = 0
        self.resumed = 0

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes) -> None:
        self.out.write(b)
        self.sha.update(b)
        self.size += len(b)

    def close(self) -> None:
        if not self.out.closed:
            self.out.close()

    def copy(
        self, read, deadline: "_Deadline", progress: Progress, expected: Optional[int], before_read=None
    ) -> None:
        """Append ``read(CHUNK)`` results until EOF; a body shorter than ``expected`` is retried."""
        while True:
            deadline.check(self.size)
            if before_read is not None:
                before_read()
            b = read(CHUNK)
            if not b:
                break
            self.write(b)
            if progress:
                progress(self.size, expected)
        if expected is not None and self.size != expected:
            raise _Retryable(HTTPException(f"short body: {self.size} of {expected} bytes"))


def _http_open(url: str, state: _Partial, timeout: float, deadline: "_Deadline"):
    clean, auth = split_auth(url)
    shown = redact_url(url)
    req = urllib.request.Request(clean)
    if auth:
        req.add_header("Authorization", auth)
    if state.size:
        req.add_header("Range", f"bytes={state.size}-")
    try:
        return urllib.request.urlopen(req, timeout=deadline.timeout(timeout))
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 404:
            raise MissingFile(f"HTTP 404: {shown}") from None
        if e.code == 416 and state.size:  # nothing left after our range
            m = re.match(r"bytes \*/(\d+)$", e.headers.get("Content-Range", "") if e.headers else "")
            if m and int(m.group(1)) == state.size:
                return None  # the bytes on disk are the whole file (a body that was cut just at its end)
            state.restart()
            raise _Retryable(DownloadError(f"HTTP 416 for a resumed download of {shown}")) from None
        if e.code >= 500 or e.code == 429:
            raise _Retryable(DownloadError(f"HTTP {e.code} from {shown}")) from None
        raise DownloadError(f"HTTP {e.code} from {shown}") from None


def _http_attempt(
    url: str, state: _Partial, timeout: float, deadline: "_Deadline", progress: Progress
) -> None:
    shown = redact_url(url)
    resp = _http_open(url, state, timeout, deadline)
    if resp is None:
        return
    with resp:
        total = None
        if state.size and resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != state.size:
                raise DownloadError(
                    f"{shown}: bad Content-Range {resp.headers.get('Content-Range')!r} "
                    f"for a download resumed at byte {state.size}"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
            state.resumed += 1
            log.info("%s: resumed at byte %d", shown, state.size)
        elif state.size:
            log.info("%s: the server ignored the Range request; downloading from the start", shown)
            state.restart()
        length = resp.headers.get("Content-Length")
        expected = state.size + int(length) if length is not None else total
        sock = _socket_of(resp)

        def per_read_timeout():  # a read never waits past the file's deadline
            if sock is not None:
                sock.settimeout(deadline.timeout(timeout))

        state.copy(resp.read1, deadline, progress, expected, per_read_timeout)


def _socket_of(resp):
    try:
        return resp.fp.raw._sock
    except AttributeError:
        return None


def _s3_attempt(
    url: str, state: _Partial, deadline: "_Deadline", progress: Progress, endpoint: Optional[str]
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _s3_split(url)
    kw = {"Range": f"bytes={state.size}-"} if state.size else {}
    try:
        obj = _s3_client(endpoint).get_object(Bucket=bucket, Key=key, **kw)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise MissingFile(f"not found: {redact_url(url)}") from None
        if code == "InvalidRange":
            state.restart()
        raise _Retryable(DownloadError(f"S3 {code} for {redact_url(url)}")) from None
    except BotoCoreError as e:
        raise _Retryable(e) from None
    state.resumed += bool(state.size)
    try:
        state.copy(obj["Body"].read, deadline, progress, state.size + int(obj["ContentLength"]))
    except BotoCoreError as e:
        raise _Retryable(e) from None


def _hash_file(path: str, progress: Progress = None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    total = os.path.getsize(path)
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK * 8)
            if not b:
                break
            h.update(b)
            n += len(b)
            if progress:
                progress(n, total)
    return n, h.hexdigest()


def fetch_bytes(
    url: str,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    deadline_s: Optional[float] = None,
    s3_endpoint: Optional[str] = None,
) -> bytes:
    """Small files (``.CHECKSUM``): same retry policy as :func:`fetch_to_file`."""
    f = fetch_to_file(
        url, timeout=timeout, retries=retries, backoff=backoff, deadline_s=deadline_s, s3_endpoint=s3_endpoint
    )
    try:
        with open(f.path, "rb") as fh:
            return fh.read()
    finally:
        if f.temporary:
            os.remove(f.path)


def exists(url: str, timeout: float = 30.0, s3_endpoint: Optional[str] = None) -> bool:
    """Whether ``url`` is published (``HEAD`` for HTTP; False only on a clear 404 / no such key)."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        return os.path.isfile(_file_path(url))
    if scheme == "s3":
        from botocore.exceptions import ClientError

        bucket, key = _s3_split(url)
        try:
            _s3_client(s3_endpoint).head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    clean, auth = split_auth(url)
    req = urllib.request.Request(clean, method="HEAD")
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return True
    except urllib.error.HTTPError as e:
        e.close()
        return e.code != 404


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
    deadline_s: Optional[float] = None,
    progress: Progress = None,
    s3_endpoint: Optional[str] = None,
) -> tuple[Fetched, str]:
    """Fetch ``url`` and ``url + '.CHECKSUM'`` and verify; one re-download on a mismatch.

    ``checksum`` (already fetched by the caller) is used for the first attempt; the retry fetches
    both files again. Returns the fetched zip and its verified SHA-256. A second mismatch raises
    :class:`ChecksumMismatch`, whose ``fetched`` attribute still holds the zip (to quarantine it).
    """
    net = dict(
        timeout=timeout, retries=retries, backoff=backoff, deadline_s=deadline_s, s3_endpoint=s3_endpoint
    )
    for attempt in (1, 2):
        expected = (
            checksum
            if (attempt == 1 and checksum)
            else parse_checksum(
                fetch_bytes(url + ".CHECKSUM", **net), expected_name=name, source=f"{name}.CHECKSUM"
            )
        )
        got = fetch_to_file(url, dest_dir, progress=progress, **net)
        if got.sha256 == expected:
            return got, expected
        msg = (
            f"{name}: SHA-256 mismatch (attempt {attempt}/2): file {got.sha256}, "
            f"CHECKSUM {expected}, {got.size} bytes from {redact_url(url)}"
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


# --------------------------------------------------------------------------- safe, streaming unzip
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
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"{label}: member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
            raise UnsafeArchive(
                f"{label}: member {info.filename!r} uses compression method "
                f"{info.compress_type}; only deflate and stored are accepted"
            )
        return info


class MemberStream(io.RawIOBase):
    """The CSV member of a zip, inflated chunk by chunk (a readable binary stream).

    Memory is one compressed chunk plus one bounded inflate output. While streaming it stops
    (:class:`UnsafeArchive`) as soon as the output passes ``max_bytes``, passes ``max_ratio``
    times the member's compressed size, or runs ahead of ``max_ratio`` times the compressed
    bytes read so far (plus 1 MiB); at the end of the member it checks the size and CRC-32 the
    directory declares. ``consumed``/``produced`` count compressed and inflated bytes so far.
    """

    def __init__(self, path: str, label: str, max_bytes: int, max_ratio: float, chunk: int = CHUNK):
        super().__init__()
        self.info = check_zip(path, label, max_bytes, max_ratio)
        self.label, self.max_bytes, self.max_ratio, self.chunk = label, max_bytes, max_ratio, chunk
        self.limit = min(max_bytes, max(int(max_ratio * max(self.info.compress_size, 1)), 1 << 20))
        self._f = open(path, "rb")
        self._f.seek(self._data_offset())
        self._left = self.info.compress_size
        self._z = zlib.decompressobj(-15) if self.info.compress_type == zipfile.ZIP_DEFLATED else None
        self._tail = b""
        self._buf = memoryview(b"")
        self._crc = 0
        self._done = False
        self.consumed = 0
        self.produced = 0

    def _data_offset(self) -> int:
        self._f.seek(self.info.header_offset)
        head = self._f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise self._corrupt("bad local file header")
        return (
            self.info.header_offset
            + 30
            + int.from_bytes(head[26:28], "little")
            + int.from_bytes(head[28:30], "little")
        )

    def _corrupt(self, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.label}: corrupt or truncated zip data in {self.info.filename!r}: {why}")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._buf) and not self._done:
            self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _read_compressed(self) -> bytes:
        want = min(self.chunk, self._left)
        data = self._f.read(want) if want else b""
        if len(data) < want:
            raise self._corrupt(f"{self.consumed + len(data)} of {self.info.compress_size} compressed bytes")
        self._left -= len(data)
        self.consumed += len(data)
        return data

    def _fill(self) -> None:
        try:
            if self._z is None:
                out = self._read_compressed()
                end = self._left == 0
            else:
                src = self._tail or self._read_compressed()
                out = self._z.decompress(src, self.chunk * 4)
                self._tail = self._z.unconsumed_tail
                end = self._z.eof
                if not end and not self._tail and self._left == 0 and not out:
                    raise self._corrupt("deflate stream ends early")
        except zlib.error as e:
            raise self._corrupt(f"{type(e).__name__}: {e}") from None
        except OSError as e:
            raise self._corrupt(f"{type(e).__name__}: {e}") from None
        if not self.produced and out[:4] == b"PK\x03\x04":
            raise UnsafeArchive(
                f"{self.label}: member {self.info.filename!r} is itself a zip (nested archive)"
            )
        self.produced += len(out)
        self._check_caps()
        self._crc = zlib.crc32(out, self._crc)
        self._buf = memoryview(out)
        if end:
            self._done = True
            if self.produced != self.info.file_size or (self._crc & 0xFFFFFFFF) != self.info.CRC:
                raise UnsafeArchive(
                    f"{self.label}: corrupt zip data in {self.info.filename!r}: size/CRC-32 do not match "
                    f"the directory ({self.produced} bytes vs {self.info.file_size} declared)"
                )

    def _check_caps(self) -> None:
        if self.produced > self.limit or self.produced > (1 << 20) + self.max_ratio * self.consumed:
            raise UnsafeArchive(
                f"{self.label}: member {self.info.filename!r} inflates past {self.produced} bytes from "
                f"{self.consumed} compressed (data.max_uncompressed_bytes={self.max_bytes}, "
                f"data.max_compression_ratio={self.max_ratio:g})"
            )

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        super().close()


def open_member(
    path: str, label: str, max_bytes: int = 64 * 1024**3, max_ratio: float = 250.0
) -> MemberStream:
    """The safe, bounded, streaming reader of a zip's single CSV member (see :class:`MemberStream`)."""
    return MemberStream(path, label, max_bytes, max_ratio)
