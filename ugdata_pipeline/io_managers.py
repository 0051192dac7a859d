"""The (Geo)Parquet IO manager: every table asset lives at ``<root>/<city>/<asset>.parquet``.

The root is a UPath, so a local folder and an object-store URL (``s3://bucket/ugdata``) work unchanged.
Local writes go to a temporary file in the same folder and are renamed into place (atomic on POSIX); object
stores receive one PUT of the whole file, which is atomic per object.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field
from upath import UPath

from ugdata_pipeline.errors import IncompleteResultError
from ugdata_pipeline.table_files import (
    StoredTable,
    frame_to_parquet_bytes,
    read_table,
    stored_rows,
    table_names,
    table_path,
    write_bytes_atomic,
)
from ugdata_pipeline.table_metadata import table_metadata


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

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | StoredTable) -> None:
        if isinstance(obj, StoredTable):
            self._record_stored(context, obj)
            return
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
                asset, city = context.asset_key.to_user_string(), table_names(path)[1]
                msg = (
                    f"{asset!r} for city {city!r} came out empty, but its stored table {path} has {previous} "
                    "rows: refusing to replace it (an upstream outage or filter would otherwise empty the city "
                    "and everything downstream). Fix the upstream failure and rerun; if the table really is "
                    "empty now, rerun once with UGDATA_ALLOW_EMPTYING=1 in the environment"
                )
                raise IncompleteResultError(msg)
        write_bytes_atomic(path, frame_to_parquet_bytes(obj))
        # the standard keys (Dagster shows them as the row count and the Columns tab) for every table asset, here once
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), **table_metadata(obj)})

    def _record_stored(self, context: dg.OutputContext, obj: StoredTable) -> None:
        """A table the asset streamed to its path itself: check the path, record the metadata from the footer.

        The emptying guard cannot apply here (the file is already replaced); the asset streams only tables built
        from upstream tables that passed it (the images of a city).
        """
        path = self._path(context)
        if str(UPath(obj.path)) != str(path):
            msg = (
                f"asset {context.asset_key.to_user_string()!r} wrote its table to {obj.path}, but its table lives at "
                f"{path}; write it to table_path(root, asset, partition) with the IO manager's root"
            )
            raise ValueError(msg)
        rows = stored_rows(path)
        if rows is None:
            msg = f"asset {context.asset_key.to_user_string()!r} returned StoredTable({path}), but no table is there"
            raise FileNotFoundError(msg)
        with path.open("rb") as handle:
            empty = pq.read_schema(handle).empty_table().to_pandas()
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(str(path)), **table_metadata(empty), "dagster/row_count": rows}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.exists():
            msg = f"{path} does not exist; materialize {context.asset_key.to_user_string()!r} first"
            raise FileNotFoundError(msg)
        return read_table(path)
