"""The (Geo)Parquet IO manager: paths, atomic writes, round trips, object-store roots."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from upath import UPath

from ugdata_pipeline.io_managers import frame_to_parquet_bytes, read_table, table_path, write_bytes_atomic


def test_table_path_layout():
    assert str(table_path("/data", "nodes", "helsinki")) == "/data/helsinki/nodes.parquet"
    assert str(table_path("s3://bucket/ugdata", "nodes", "paris")) == "s3://bucket/ugdata/paris/nodes.parquet"
    assert str(table_path("/data", "models", None)) == "/data/models.parquet"


def test_geoparquet_round_trip_with_list_column(tmp_path):
    geometry = [shapely.LineString([(0, 0), (1, 1)]), shapely.Point(2, 2)]
    frame = gpd.GeoDataFrame({"node_ids": [[1, 2], [3]], "name": ["a", None]}, geometry=geometry, crs="EPSG:4326")
    path = table_path(str(tmp_path), "osm_streets", "x")
    write_bytes_atomic(path, frame_to_parquet_bytes(frame))
    back = read_table(path)
    assert isinstance(back, gpd.GeoDataFrame)
    assert back.crs.to_epsg() == 4326
    assert [list(v) for v in back["node_ids"]] == [[1, 2], [3]]
    assert back.geometry.equals(frame.geometry)
    assert not [p for p in (tmp_path / "x").iterdir() if ".tmp-" in p.name]


def test_plain_dataframe_round_trip_on_an_object_store_root():
    frame = pd.DataFrame({"src": ["a"], "dst": ["b"], "distance_m": [1.5]})
    path = table_path("memory://bucket/ugdata", "edges", "x")
    write_bytes_atomic(path, frame_to_parquet_bytes(frame))
    back = read_table(UPath("memory://bucket/ugdata/x/edges.parquet"))
    assert not isinstance(back, gpd.GeoDataFrame)
    pd.testing.assert_frame_equal(back, frame)


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = table_path(str(tmp_path), "edges", "x")
    write_bytes_atomic(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["edges.parquet"]
