"""Storage: one interface over a local directory and an S3 prefix.

Every stage reads and writes through :class:`Storage`, addressed by *relative keys* such as
``lake/market=spot/dataset=aggTrades/symbol=BTCUSDT/date=2025-01-01/part-0.parquet``. Spark tasks
rebuild the same storage from its plain-dict config (:func:`storage_from_dict`), so executors read
and write the store themselves (pyarrow / boto3), never through ``s3a://``.

Atomicity: :meth:`Storage.write_bytes`, :meth:`Storage.put_file` and :meth:`Storage.rename` are
atomic for readers (local: temporary name, then ``os.replace``; S3: a single PUT, a completed
multipart upload or a copy is atomic). Directory trees are published with a marker written last
(see ``btsys.stages.cache``). :meth:`Storage.lock` serialises writers across processes and machines
(local: ``flock``, released when the holder dies; S3: a lease object created with a conditional
PUT that expires after ``ttl_s``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import time
import uuid
from abc import ABC, abstractmethod
from typing import Any, Iterator, Mapping, Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from btsys.errors import UserError


class StorageError(UserError, RuntimeError):
    """A storage root that cannot be used (names ``storage.root``)."""


def _check_rel(rel: str) -> str:
    """Reject absolute keys and ``..`` segments (no escaping the root)."""
    rel = rel.replace("\\", "/").strip("/")
    parts = rel.split("/") if rel else []
    if any(p in ("..", ".") for p in parts) or rel.startswith("~"):
        raise StorageError(f"invalid storage key {rel!r}: '..' and '.' segments are not allowed")
    return rel


class Storage(ABC):
    """A root (local directory or S3 prefix) holding relative keys."""

    root: str

    @abstractmethod
    def uri(self, rel: str = "") -> str:
        """Full path / URI of a key (for messages and for other tools)."""

    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomically create or replace a key."""

    @abstractmethod
    def put_file(self, local_path: str, rel: str) -> None:
        """Atomically upload a local file to a key."""

    @abstractmethod
    def get_file(self, rel: str, local_path: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys (files) under a prefix, recursively, sorted, relative to the root."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under a prefix (a no-op when there is none)."""

    @abstractmethod
    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the base path of the root inside it."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Move a key, replacing ``dst`` atomically (readers see the old or the new object)."""

    @abstractmethod
    def lock(
        self, rel: str, timeout_s: float = 600.0, ttl_s: float = 600.0
    ) -> contextlib.AbstractContextManager:
        """Exclusive lock named by a key, held for the ``with`` block; :class:`StorageError` after
        ``timeout_s`` of waiting. A holder that dies releases it (local) or lets it expire after
        ``ttl_s`` (S3)."""

    # ---- helpers shared by both implementations
    def arrow_path(self, rel: str) -> str:
        fs, base = self.arrow_fs()
        rel = _check_rel(rel)
        return f"{base}/{rel}" if rel else base

    def read_parquet(self, rel: str, columns: Optional[list[str]] = None) -> pa.Table:
        fs, _ = self.arrow_fs()
        return pq.read_table(self.arrow_path(rel), columns=columns, filesystem=fs)

    def write_parquet(self, table: pa.Table, rel: str, **kwargs: Any) -> None:
        """Atomically write one Parquet file."""
        buf = io.BytesIO()
        pq.write_table(table, buf, **kwargs)
        self.write_bytes(rel, buf.getvalue())

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def to_dict(self) -> dict:
        """Plain, picklable description for Spark tasks (no credentials: they come from the AWS chain)."""
        return dict(self._cfg)

    _cfg: dict


class LocalStorage(Storage):
    def __init__(self, root: str, cfg: Optional[dict] = None):
        self.root = os.path.abspath(os.path.expanduser(root))
        self._cfg = dict(cfg or {"kind": "local", "root": self.root})
        self._cfg["root"] = self.root

    def _path(self, rel: str) -> str:
        rel = _check_rel(rel)
        return os.path.join(self.root, rel) if rel else self.root

    def uri(self, rel: str = "") -> str:
        return self._path(rel)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._path(rel))

    def read_bytes(self, rel: str) -> bytes:
        try:
            with open(self._path(rel), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"no such key in storage: {self.uri(rel)}") from None

    def _atomic(self, rel: str, writer) -> None:
        path = self._path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            writer(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def write_bytes(self, rel: str, data: bytes) -> None:
        def w(tmp):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        self._atomic(rel, w)

    def put_file(self, local_path: str, rel: str) -> None:
        self._atomic(rel, lambda tmp: shutil.copyfile(local_path, tmp))

    def write_parquet(self, table: pa.Table, rel: str, **kwargs: Any) -> None:
        """Atomically write one Parquet file, straight to a temporary name (no copy in memory)."""

        def w(tmp):
            pq.write_table(table, tmp, **kwargs)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        self._atomic(rel, w)

    def get_file(self, rel: str, local_path: str) -> None:
        shutil.copyfile(self._path(rel), local_path)

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        if os.path.isfile(base):
            return [_check_rel(prefix)]
        out = []
        for dirpath, _, files in os.walk(base):
            for fn in files:
                out.append(os.path.relpath(os.path.join(dirpath, fn), self.root).replace(os.sep, "/"))
        return sorted(out)

    def delete_prefix(self, prefix: str) -> None:
        p = self._path(prefix)
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.remove(p)

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), self.root

    def rename(self, src: str, dst: str) -> None:
        path = self._path(dst)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(self._path(src), path)

    @contextlib.contextmanager
    def lock(self, rel: str, timeout_s: float = 600.0, ttl_s: float = 600.0) -> Iterator[None]:
        import fcntl

        path = self._path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _wait_for(lambda: _try_flock(fcntl, fd), timeout_s, self.uri(rel))
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _try_flock(fcntl, fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for(acquire, timeout_s: float, what: str) -> None:
    deadline, pause = time.monotonic() + timeout_s, 0.02
    while not acquire():
        if time.monotonic() > deadline:
            raise StorageError(f"could not take the lock {what} within {timeout_s:g}s (another run holds it)")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class S3Storage(Storage):
    """An ``s3://bucket/prefix`` root, through boto3 (objects) and pyarrow's S3FileSystem (Parquet).

    Credentials come from the standard AWS chain only; they are never part of the config.
    """

    MULTIPART_THRESHOLD = 64 * 1024 * 1024

    def __init__(
        self,
        root: str,
        endpoint_url: Optional[str] = None,
        region: str = "us-east-1",
        cfg: Optional[dict] = None,
    ):
        if not root.startswith("s3://"):
            raise StorageError(f"storage.root must start with s3:// for storage=s3, got {root!r}")
        bucket, _, prefix = root[5:].partition("/")
        if not bucket:
            raise StorageError(f"storage.root {root!r} names no bucket")
        self.bucket, self.prefix = bucket, _check_rel(prefix)
        self.root = root.rstrip("/")
        self.endpoint_url, self.region = endpoint_url, region
        self._cfg = dict(cfg or {"kind": "s3", "root": root, "endpoint_url": endpoint_url, "region": region})
        self._client = None
        self._fs = None

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region
            )
        return self._client

    def check(self) -> None:
        """Raise :class:`StorageError` (one line with a hint) unless the bucket exists and answers."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise StorageError(
                f"{self.root}: no AWS credentials found",
                key="storage.root",
                hint="export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, use ~/.aws or an instance role",
            ) from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(
                    f"bucket {self.bucket!r} does not exist{where}",
                    key="storage.root",
                    hint=f"create it first (aws s3 mb s3://{self.bucket}) or point storage.root at a bucket",
                ) from None
            raise StorageError(
                f"{self.root}: the bucket refused access{where} ({code})",
                key="storage.root",
                hint="check the credentials' permissions on the bucket",
            ) from None
        except BotoCoreError as e:
            raise StorageError(
                f"{self.root}: cannot reach the S3 endpoint{where} ({e})",
                key="storage.endpoint_url",
                hint="check storage.endpoint_url and the network",
            ) from None

    def _key(self, rel: str) -> str:
        rel = _check_rel(rel)
        return f"{self.prefix}/{rel}".strip("/") if self.prefix else rel

    def uri(self, rel: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(rel)}"

    def exists(self, rel: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return bool(self.list(rel)[:1])
            raise

    def read_bytes(self, rel: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(f"no such key in storage: {self.uri(rel)}") from None
            raise

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data)

    def put_file(self, local_path: str, rel: str) -> None:
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(multipart_threshold=self.MULTIPART_THRESHOLD)
        self.client.upload_file(local_path, self.bucket, self._key(rel), Config=cfg)

    def get_file(self, rel: str, local_path: str) -> None:
        self.client.download_file(self.bucket, self._key(rel), local_path)

    def list(self, prefix: str = "") -> list[str]:
        key = self._key(prefix)
        out = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key):
            for obj in page.get("Contents", []):
                k = obj["Key"]
                if k == key or k.startswith(key.rstrip("/") + "/") or not key:
                    out.append(k[strip:])
        return sorted(out)

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._key(k) for k in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
            )

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        if self._fs is None:
            kw: dict[str, Any] = {"region": self.region}
            if self.endpoint_url:
                scheme, _, host = self.endpoint_url.partition("://")
                kw.update(endpoint_override=host, scheme=scheme)
            self._fs = pafs.S3FileSystem(**kw)
        base = f"{self.bucket}/{self.prefix}".rstrip("/")
        return self._fs, base

    def rename(self, src: str, dst: str) -> None:
        # a managed copy (multipart above 5 GB) publishes the whole object at once; then drop src
        self.client.copy({"Bucket": self.bucket, "Key": self._key(src)}, self.bucket, self._key(dst))
        self.client.delete_object(Bucket=self.bucket, Key=self._key(src))

    @contextlib.contextmanager
    def lock(self, rel: str, timeout_s: float = 600.0, ttl_s: float = 600.0) -> Iterator[None]:
        from botocore.exceptions import ClientError

        key = self._key(rel)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

        def acquire() -> bool:
            body = json.dumps({"owner": owner, "expires": time.time() + ttl_s}).encode()
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
                return True
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in (
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                ):
                    raise
            try:  # held: take it over only when the holder's lease has expired
                held = json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
                if float(held.get("expires", 0)) < time.time():
                    self.client.delete_object(Bucket=self.bucket, Key=key)
            except (ClientError, ValueError):
                pass
            return False

        _wait_for(acquire, timeout_s, self.uri(rel))
        try:
            yield
        finally:
            try:
                held = json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
                if held.get("owner") == owner:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
            except (ClientError, ValueError):
                pass

    def __getstate__(self):  # clients are rebuilt in Spark workers
        d = dict(self.__dict__)
        d["_client"] = d["_fs"] = None
        return d


def storage_from_dict(cfg: Mapping[str, Any]) -> Storage:
    """Build a storage from the ``storage`` config group (a DictConfig or plain dict)."""
    kind = str(getattr(cfg.get("kind"), "value", cfg.get("kind") or "local"))
    root = str(cfg.get("root") or "data")
    if kind == "local":
        return LocalStorage(root)
    if kind == "s3":
        return S3Storage(
            root,
            endpoint_url=cfg.get("endpoint_url"),
            region=str(cfg.get("region") or "us-east-1"),
            cfg={
                "kind": "s3",
                "root": root,
                "endpoint_url": cfg.get("endpoint_url"),
                "region": str(cfg.get("region") or "us-east-1"),
            },
        )
    raise StorageError(f"storage.kind must be local or s3, got {kind!r}")


def make_storage(cfg: Any) -> Storage:
    """Storage from a Hydra ``storage`` node; an S3 bucket is checked to exist (fail fast)."""
    from btsys.config import to_plain

    store = storage_from_dict(to_plain(cfg))
    if isinstance(store, S3Storage):
        store.check()
    return store
