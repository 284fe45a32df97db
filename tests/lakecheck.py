"""What the ingest tests check in a store and change in a mirror (shared by the lake and fault tests)."""

from __future__ import annotations

import hashlib
import io
import pathlib
import zipfile

import pyarrow.dataset as ds


def member(path: pathlib.Path) -> bytes:
    """The CSV member of a mirror zip."""
    with zipfile.ZipFile(path) as zf:
        return zf.read(zf.namelist()[0])


def rewrite(path: pathlib.Path, payload: bytes | None = None, raw: bytes | None = None, members=None) -> None:
    """Replace a mirror zip (a CSV payload, raw bytes or several members) and its CHECKSUM."""
    if raw is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members or [(path.name[:-4] + ".csv", payload)]:
                zf.writestr(name, data)
        raw = buf.getvalue()
    path.write_bytes(raw)
    pathlib.Path(str(path) + ".CHECKSUM").write_text(f"{hashlib.sha256(raw).hexdigest()}  {path.name}\n")


def lake_rows(root) -> dict:
    """Rows per (dataset, date) as a direct pyarrow reader of ``<root>/lake`` sees them; asserts
    that no trade id of a (dataset, symbol) appears twice."""
    lake = pathlib.Path(root) / "lake"
    if not lake.exists():
        return {}
    df = ds.dataset(str(lake), format="parquet", partitioning="hive").to_table().to_pandas()
    if df.empty:
        return {}
    assert not df.duplicated(["dataset", "symbol", "trade_id"]).any()
    return {(str(d), str(t)): int(n) for (d, t), n in df.groupby(["dataset", "date"]).size().items()}


def lake_files(root) -> dict:
    """{day file: sha256 of its bytes}; asserts one Parquet file per day folder."""
    out, folders = {}, set()
    for p in sorted((pathlib.Path(root) / "lake").rglob("*.parquet")):
        assert p.parent not in folders, f"two files in {p.parent}"
        folders.add(p.parent)
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
