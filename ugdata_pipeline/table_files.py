"""Table files under the data root: where a table lives, how it is written atomically, read back and counted.

Dagster-free, so the core and the IO manager (:mod:`ugdata_pipeline.io_managers`) share one implementation.
The root is a UPath, so a local folder and an object-store URL (``s3://bucket/ugdata``) work unchanged. Local
writes go to a temporary file in the same folder and are renamed into place (atomic on POSIX, fsynced: a table is
the record of a finished step); object stores receive one PUT of the whole file, which is atomic per object.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ugdata_pipeline.atomic_files import write_file_atomic
from ugdata_pipeline.errors import CorruptFileError


def table_path(root: str, asset_name: str, partition: str | None) -> UPath:
    """Where an asset's table lives: ``<root>/<partition>/<asset>.parquet`` (no partition: ``<root>/``)."""
    base = UPath(root)
    return (base / partition if partition else base) / f"{asset_name}.parquet"


def write_bytes_atomic(path: UPath | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` (a UPath, or a local path) so readers never see a partial file."""
    path = path if isinstance(path, UPath) else UPath(os.fspath(path))
    if is_local(path):
        # a table is the record of a finished step: on disk before it counts
        write_file_atomic(path.path, payload, fsync=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Encode a DataFrame (GeoParquet for a GeoDataFrame) as Parquet bytes."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def table_names(path: UPath) -> tuple[str, str | None]:
    """``(asset, city)`` of a table path laid out by :func:`table_path`."""
    return path.name.removesuffix(".parquet"), path.parent.name or None


def read_table(path: UPath) -> pd.DataFrame:
    """
    Read a table written by this IO manager; GeoParquet comes back as a GeoDataFrame.

    Raises
    ------
    CorruptFileError
        The file is not a readable Parquet table (cut short by a full disk or a copy, overwritten by hand); the
        message names the file, its asset and city, and how to rebuild it.
    """
    payload = path.read_bytes()
    try:
        metadata = pq.read_schema(io.BytesIO(payload)).metadata or {}
        if b"geo" in metadata:
            return gpd.read_parquet(io.BytesIO(payload))
        return pd.read_parquet(io.BytesIO(payload))
    except (pa.ArrowException, OSError, ValueError) as exc:
        asset, city = table_names(path)
        msg = (
            f"{path} ({len(payload)} bytes) is not a readable Parquet table: {exc}. It is the {asset!r} table "
            f"of city {city!r}; delete it and materialize {asset!r} for {city!r} again (e.g. rerun "
            "city_dataset_job for that partition)"
        )
        raise CorruptFileError(msg) from exc


def stored_rows(path: UPath) -> int | None:
    """Rows of the table stored at ``path`` from its footer (None when there is none or it is unreadable)."""
    try:
        with path.open("rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    except (FileNotFoundError, pa.ArrowException, OSError):
        return None


def is_local(path: UPath) -> bool:
    """Whether ``path`` is on the local file system (not an object store)."""
    return path.protocol in ("", "file", "local")


@dataclass(frozen=True, slots=True)
class StoredTable:
    """
    A table an asset wrote itself, in chunks, at the path its IO manager would store it (:func:`table_path`).

    An asset whose table is too large to hold whole (the long subgraph tables at paper scale) writes it with a
    streaming writer through :func:`local_write_targets` and returns this handle; the IO manager checks the path
    and records the table's metadata instead of encoding a DataFrame. Readers load it like any other table.
    """

    path: UPath


@contextmanager
def local_write_targets(*paths: UPath) -> Iterator[list[Path]]:
    """
    Local files a streaming writer writes ``paths`` through.

    On a local root these are the paths themselves (the writer replaces each atomically). On an object store they
    are temporary files, each sent with one PUT (:func:`write_bytes_atomic`) when the block ends without an
    exception; nothing is sent when it raises.
    """
    if all(is_local(p) for p in paths):
        yield [Path(p.path) for p in paths]
        return
    with tempfile.TemporaryDirectory(prefix="ugdata-stream-") as tmp:
        local = [Path(tmp) / f"{k}-{p.name}" for k, p in enumerate(paths)]
        yield local
        for path, file in zip(paths, local, strict=True):
            write_bytes_atomic(path, file.read_bytes())
