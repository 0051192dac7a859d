"""The (Geo)Parquet IO manager: every table asset lives at ``<root>/<city>/<asset>.parquet``.

The root is a UPath, so a local folder and an object-store URL (``s3://bucket/ugdata``) work unchanged.
Local writes go to a temporary file in the same folder and are renamed into place (atomic on POSIX); object
stores receive one PUT of the whole file, which is atomic per object.
"""

from __future__ import annotations

import io
import os

import dagster as dg
import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from upath import UPath

from ugdata_pipeline.atomic_files import write_file_atomic
from ugdata_pipeline.errors import CorruptFileError, IncompleteResultError


def table_path(root: str, asset_name: str, partition: str | None) -> UPath:
    """Where an asset's table lives: ``<root>/<partition>/<asset>.parquet`` (no partition: ``<root>/``)."""
    base = UPath(root)
    return (base / partition if partition else base) / f"{asset_name}.parquet"


def write_bytes_atomic(path: UPath | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` (a UPath, or a local path) so readers never see a partial file."""
    path = path if isinstance(path, UPath) else UPath(os.fspath(path))
    if path.protocol in ("", "file", "local"):
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


def _table_names(path: UPath) -> tuple[str, str | None]:
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
        asset, city = _table_names(path)
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


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrames and GeoDataFrames as (Geo)Parquet under ``root``, one folder per city partition."""

    root: str = Field(description="Folder or object-store URL holding all tables (UGDATA_ROOT).")
    allow_emptying: bool = Field(
        default=False,
        description="Let an empty result replace a table that has rows. Off: such a write fails and the old table "
        "stays (an outage upstream must not empty a city); UGDATA_ALLOW_EMPTYING=1 turns it on for a run when a "
        "table really became empty.",
    )

    def _path(self, context: dg.OutputContext | dg.InputContext) -> UPath:
        name = context.asset_key.path[-1]
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return table_path(self.root, name, partition)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            msg = (
                f"asset {context.asset_key.to_user_string()!r} returned {type(obj).__name__}; the Parquet IO "
                "manager stores DataFrames and GeoDataFrames only"
            )
            raise TypeError(msg)
        path = self._path(context)
        if len(obj) == 0 and not self.allow_emptying:
            previous = stored_rows(path)
            if previous:
                asset, city = context.asset_key.to_user_string(), _table_names(path)[1]
                msg = (
                    f"{asset!r} for city {city!r} came out empty, but its stored table {path} has {previous} "
                    "rows: refusing to replace it (an upstream outage or filter would otherwise empty the city "
                    "and everything downstream). Fix the upstream failure and rerun; if the table really is "
                    "empty now, rerun once with UGDATA_ALLOW_EMPTYING=1 in the environment"
                )
                raise IncompleteResultError(msg)
        write_bytes_atomic(path, frame_to_parquet_bytes(obj))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "rows": len(obj)})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.exists():
            msg = f"{path} does not exist; materialize {context.asset_key.to_user_string()!r} first"
            raise FileNotFoundError(msg)
        return read_table(path)
