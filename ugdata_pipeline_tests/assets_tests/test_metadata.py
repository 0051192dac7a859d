"""The metadata helpers every asset uses: Dagster's standard table metadata, JSON-safe table previews, and
pictures stored as files with only a thumbnail small enough for Dagster to show unfolded in the event."""

from __future__ import annotations

import base64
import io
import json

import dagster as dg
import geopandas as gpd
import numpy as np
import pandas as pd
from PIL import Image
from shapely.geometry import LineString
from upath import UPath

from ugdata_pipeline.assets._metadata import (
    INLINE_MARKDOWN_CHARS,
    png,
    png_file,
    preview,
    thumbnail_markdown,
)
from ugdata_pipeline.table_metadata import column_schema, table_metadata


def frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "node_id": ["a", "b", "c"],
            "hops": np.array([2, 3, 4], dtype=np.int64),
            "share": [0.5, float("nan"), 1.0],
            "text": ["short", "x" * 200, None],
            "flag": [True, False, True],
            "when": pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"]),
        },
        geometry=[LineString([(i, 0), (i + 0.123456789, 1)] * 5) for i in range(3)],
        crs="EPSG:4326",
    )


def png_bytes(size: tuple[int, int], *, noise: bool) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if noise else np.full((*size[::-1], 3), 200)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_table_metadata_is_the_standard_row_count_and_column_schema():
    meta = table_metadata(frame())
    assert meta["dagster/row_count"] == 3
    types = {c.name: c.type for c in meta["dagster/column_schema"].columns}
    assert types == {
        "node_id": "str",
        "hops": "int64",
        "share": "float64",
        "text": "str",
        "flag": "bool",
        "when": "datetime64[us]",
        "geometry": "geometry",
    }
    assert column_schema(frame().head(0)).columns[0].name == "node_id"


def test_preview_is_a_table_of_json_safe_cells():
    value = preview(frame(), rows=2)
    assert isinstance(value, dg.TableMetadataValue)
    rows = [record.data for record in value.records]
    assert len(rows) == 2
    first, second = rows
    assert first["hops"] == 2 and type(first["hops"]) is int
    assert second["share"] is None  # NaN is not JSON
    assert second["text"] == "x" * 77 + "..."
    assert first["flag"] is True and first["when"] == "2024-01-02T00:00:00"
    assert first["geometry"].startswith("LINESTRING (0 0, 0.123456789 1") and len(first["geometry"]) == 80
    json.dumps(rows, allow_nan=False)  # what the GraphQL API serves
    assert [c.name for c in value.schema.columns] == list(frame().columns)


def test_preview_keeps_only_the_asked_columns_that_exist():
    value = preview(frame(), columns=["text", "missing", "node_id"])
    assert [c.name for c in value.schema.columns] == ["text", "node_id"]
    assert value.records[0].data == {"text": "short", "node_id": "a"}


def test_png_writes_the_full_picture_and_puts_only_a_small_thumbnail_in_the_event(tmp_path):
    payload = png_bytes((700, 500), noise=False)
    path = UPath(tmp_path / "karhula" / "previews" / "map.png")
    meta = png(path, payload, alt="map")
    assert path.read_bytes() == payload
    assert meta["map_path"] == dg.MetadataValue.path(str(path))
    markdown = meta["map"].value
    assert markdown.startswith("![map](data:image/png;base64,") and len(markdown) <= INLINE_MARKDOWN_CHARS
    thumbnail = Image.open(io.BytesIO(base64.b64decode(markdown.split(",", 1)[1].rstrip(")"))))
    assert max(thumbnail.size) == 120 and thumbnail.size[0] / thumbnail.size[1] == 120 / 86
    assert png_file(path, alt="map") == meta


def test_a_busy_picture_gets_a_smaller_thumbnail_and_one_that_cannot_fit_is_linked_by_path_only(tmp_path):
    path = UPath(tmp_path / "noise.png")
    busy = thumbnail_markdown(png_bytes((400, 400), noise=True), alt="noise")
    assert busy is not None and len(busy) <= INLINE_MARKDOWN_CHARS
    assert max(Image.open(io.BytesIO(base64.b64decode(busy.split(",", 1)[1].rstrip(")")))).size) < 120
    # the alt text counts against the budget too: with no room left, only the path is reported
    long_name = "n" * INLINE_MARKDOWN_CHARS
    meta = png(path, png_bytes((400, 400), noise=True), alt=long_name)
    assert set(meta) == {f"{long_name}_path"} and path.exists()
