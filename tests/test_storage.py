"""Storage interface: the same behaviour on a local directory and on moto's S3 server."""

from __future__ import annotations

import pyarrow as pa
import pytest

from btsys.storage import LocalStorage, StorageError, make_storage, storage_from_dict


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStorage(str(tmp_path / "root"))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return storage_from_dict({"kind": "s3", "root": f"s3://{bucket}/pre/fix", "endpoint_url": endpoint})


def test_roundtrip(store, tmp_path):
    assert not store.exists("a/b.txt")
    store.write_text("a/b.txt", "hello")
    assert store.exists("a/b.txt") and store.read_text("a/b.txt") == "hello"
    store.write_text("a/b.txt", "again")  # replace
    assert store.read_text("a/b.txt") == "again"
    t = pa.table({"ts": pa.array([1, 2], pa.int64()), "price": pa.array([1.5, 2.5], pa.float64())})
    store.write_parquet(t, "a/c/t.parquet")
    assert store.read_parquet("a/c/t.parquet").equals(t)
    src = tmp_path / "local.bin"
    src.write_bytes(b"\x00" * 1000)
    store.put_file(str(src), "bin/x.bin")
    store.get_file("bin/x.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == b"\x00" * 1000
    assert store.list("a") == ["a/b.txt", "a/c/t.parquet"]
    assert store.list() == ["a/b.txt", "a/c/t.parquet", "bin/x.bin"]
    store.delete_prefix("a")
    assert store.list() == ["bin/x.bin"]
    with pytest.raises(FileNotFoundError, match="no such key"):
        store.read_bytes("missing.txt")


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", "./x"])
def test_keys_cannot_escape_root(bad):
    with pytest.raises(StorageError, match="invalid storage key"):
        LocalStorage("/tmp/x").uri(bad)


def test_storage_is_rebuilt_from_its_dict(tmp_path):
    s = LocalStorage(str(tmp_path))
    assert storage_from_dict(s.to_dict()).root == s.root
    with pytest.raises(StorageError, match="s3://"):
        storage_from_dict({"kind": "s3", "root": "not-a-bucket"})
    with pytest.raises(StorageError, match="local or s3"):
        make_storage({"kind": "gcs", "root": "x"})


def test_s3_dict_has_no_credentials(s3_bucket):
    endpoint, bucket = s3_bucket
    s = storage_from_dict({"kind": "s3", "root": f"s3://{bucket}/p", "endpoint_url": endpoint})
    d = s.to_dict()
    assert set(d) == {"kind", "root", "endpoint_url", "region"}
    import pickle

    s.write_text("k.txt", "v")
    s2 = pickle.loads(pickle.dumps(s))  # what a Spark task receives
    assert s2.read_text("k.txt") == "v"


def test_rename_replaces_atomically_and_lock_excludes(store):
    import threading
    import time

    store.write_text("a/x.txt", "new")
    store.write_text("b/y.txt", "old")
    store.rename("a/x.txt", "b/y.txt")
    assert store.read_text("b/y.txt") == "new" and not store.exists("a/x.txt")
    held, order = threading.Event(), []

    def other():
        held.wait()
        with store.lock("locks/s.lock", timeout_s=30):
            order.append("other")

    t = threading.Thread(target=other)
    t.start()
    with store.lock("locks/s.lock", timeout_s=30):
        held.set()
        time.sleep(0.5)  # the other holder waits for us
        order.append("first")
    t.join(timeout=30)
    assert order == ["first", "other"]
    with store.lock("locks/s.lock", timeout_s=30):
        with pytest.raises(StorageError, match="could not take the lock .*s.lock within 0.2s"):
            with store.lock("locks/s.lock", timeout_s=0.2):
                pass


def test_an_expired_s3_lease_is_taken_over(s3_bucket):
    import json
    import time

    endpoint, bucket = s3_bucket
    s = storage_from_dict({"kind": "s3", "root": f"s3://{bucket}/p", "endpoint_url": endpoint})
    s.write_text("l.lock", json.dumps({"owner": "dead-run", "expires": time.time() - 1}))  # a killed holder
    with s.lock("l.lock", timeout_s=5):
        assert json.loads(s.read_text("l.lock"))["owner"] != "dead-run"
    assert not s.exists("l.lock")
