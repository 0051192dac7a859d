"""The (Geo)Parquet IO manager: paths, atomic writes, round trips, object-store roots."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dagster as dg
import geopandas as gpd
import pandas as pd
import pytest
import shapely
from upath import UPath

from ugdata_pipeline.errors import CorruptFileError, IncompleteResultError
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.table_files import frame_to_parquet_bytes, read_table, table_path, write_bytes_atomic


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


def test_a_truncated_table_names_its_file_city_and_fix(tmp_path):
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(100)], "x": range(100)})
    path = table_path(str(tmp_path), "training_records", "helsinki")
    payload = frame_to_parquet_bytes(frame)
    write_bytes_atomic(path, payload[: len(payload) // 2])
    with pytest.raises(CorruptFileError) as caught:
        read_table(path)
    message = str(caught.value)
    assert str(path) in message
    assert "'training_records' table of city 'helsinki'" in message
    assert "delete it and materialize 'training_records' for 'helsinki' again" in message


def _store(manager: ParquetIOManager, asset: str, city: str, frame: pd.DataFrame) -> None:
    partitions = dg.StaticPartitionsDefinition([city])
    context = dg.build_output_context(asset_key=dg.AssetKey(asset), partition_key=city, asset_partitions_def=partitions)
    manager.handle_output(context, frame)


def test_an_empty_result_never_replaces_a_table_with_rows(tmp_path):
    manager = ParquetIOManager(root=str(tmp_path))
    full = pd.DataFrame({"image_id": ["a", "b", "c"]})
    _store(manager, "training_records", "karhula", full)
    path = table_path(str(tmp_path), "training_records", "karhula")
    before = path.read_bytes()
    with pytest.raises(IncompleteResultError) as caught:
        _store(manager, "training_records", "karhula", full.iloc[:0])
    message = str(caught.value)
    assert "'training_records' for city 'karhula' came out empty" in message
    assert "has 3 rows: refusing to replace it" in message
    assert "UGDATA_ALLOW_EMPTYING=1" in message
    assert path.read_bytes() == before
    # an empty table may be written where there was none or an empty one (a city without trees) ...
    _store(manager, "osm_trees", "karhula", pd.DataFrame({"x": []}))
    _store(manager, "osm_trees", "karhula", pd.DataFrame({"x": []}))
    # ... and replaces rows when the operator says so
    _store(ParquetIOManager(root=str(tmp_path), allow_emptying=True), "training_records", "karhula", full.iloc[:0])
    assert len(read_table(path)) == 0


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_tables_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = table_path(str(tmp_path), "edges", "x")
        write_bytes_atomic(path, b"table")
        plain = tmp_path / "plain"
        plain.write_bytes(b"plain")
    finally:
        os.umask(old)
    assert stat.S_IMODE(Path(path.path).stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
