"""Materialize the OSM and graph assets in process and read what they stored and reported."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from ugdata_pipeline.assets.graph import urban_graph
from ugdata_pipeline.assets.osm import osm_extract
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.resources import CityRegistryResource, OsmSourceResource, StorageResource
from ugdata_pipeline.table_files import read_table, table_path

OSM_AND_GRAPH = [osm_extract, urban_graph]


def resources(root: str, registry: str | None = None) -> dict[str, object]:
    return {
        "table_io_manager": ParquetIOManager(root=root),
        "storage": StorageResource(root=root),
        "cities": CityRegistryResource(path=registry),
        "osm": OsmSourceResource(allow_network=False),
    }


@pytest.mark.slow
def test_materialize_helsinki(tmp_path):
    result = dg.materialize(OSM_AND_GRAPH, partition_key="helsinki", resources=resources(str(tmp_path)))
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "node_ids_unique": True,
        "edge_endpoints_exist": True,
        "coordinates_valid": True,
        "no_self_loops": True,
        "distances_positive": True,
        "pois_attached": True,
    }
    materializations = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }
    nodes_meta = materializations["nodes"]
    assert nodes_meta["street"].value > 80
    assert nodes_meta["crossing"].value > 100
    # the map: a thumbnail short enough that Dagster shows it unfolded, the full-size PNG linked by path
    assert nodes_meta["map"].value.startswith("![map](data:image/png;base64,") and len(nodes_meta["map"].value) <= 1000
    assert nodes_meta["map_path"].value == str(tmp_path / "helsinki" / "previews" / "graph_map.png")
    assert materializations["osm_streets"]["osm_snapshot"].value.startswith("2019-04")
    stored = read_table(table_path(str(tmp_path), "nodes", "helsinki"))
    assert stored.crs.to_epsg() == 4326
    assert len(stored) == nodes_meta["dagster/row_count"].value
    schema = {column.name: column.type for column in nodes_meta["dagster/column_schema"].schema.columns}
    assert list(schema) == list(stored.columns) and schema["geometry"] == "geometry" and schema["node_id"] == "string"
    rows = [record.data for record in nodes_meta["preview"].records]
    assert len(rows) == 8 and all(isinstance(row["node_id"], str) for row in rows)
    assert (tmp_path / "helsinki" / "previews" / "graph_map.png").exists()


def test_city_without_streets_fails_before_writing_a_graph(tmp_path, write_registry):
    from ugdata_pipeline_tests.tiny_city import tiny_city_xml

    # only the park and the POIs, no streets
    xml = "\n".join(line for line in tiny_city_xml().splitlines() if "highway" not in line)
    (tmp_path / "empty.osm").write_text(xml)
    # the partition key is a shipped slug; the registry resource points it at the street-less file
    registry = write_registry(
        "cities:\n  karhula:\n    name: Empty\n    country: Finland\n    split: train\n"
        "    source: {kind: file, path: empty.osm}\n",
        name="reg.yaml",
    )
    with pytest.raises(Exception, match="city 'karhula' has no named streets"):
        dg.materialize(
            OSM_AND_GRAPH, partition_key="karhula", resources=resources(str(tmp_path / "data"), str(registry))
        )
    assert not (tmp_path / "data" / "karhula" / "nodes.parquet").exists()


def ilha_registry(tmp_path, write_registry):
    """A registry whose shipped slug 'karhula' points at a file with "Ilha" (two stretches) and "Ilha 2"."""
    from ugdata_pipeline_tests.graph_tests.test_node_ids import ILHA_WAYS
    from ugdata_pipeline_tests.tiny_city import streets_xml

    (tmp_path / "ilha.osm").write_text(streets_xml(ILHA_WAYS))
    return write_registry(
        "cities:\n  karhula:\n    name: Ilhas\n    country: Portugal\n    split: train\n"
        "    source: {kind: file, path: ilha.osm}\n",
        name="reg.yaml",
    )


def test_ilha_and_ilha_2_build_a_graph_with_unique_ids(tmp_path, write_registry):
    registry = ilha_registry(tmp_path, write_registry)
    result = dg.materialize(
        OSM_AND_GRAPH, partition_key="karhula", resources=resources(str(tmp_path / "data"), str(registry))
    )
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["node_ids_unique"] is True
    stored = read_table(table_path(str(tmp_path / "data"), "nodes", "karhula"))
    assert sorted(stored["node_id"]) == ["street:ilha", "street:ilha-2", "street:ilha-3"]
    assert (tmp_path / "data" / "karhula" / "previews" / "graph_map.png").exists()


def test_duplicate_node_ids_fail_the_step_by_name_before_the_map_is_drawn(tmp_path, write_registry, monkeypatch):
    """A build that repeats an id (as the old street numbering did) stops at the validation, not in the map."""
    import ugdata_pipeline.assets.graph as graph_assets
    from ugdata_pipeline.graph.build import build_urban_graph

    def old_numbering(*args, **kwargs):
        graph = build_urban_graph(*args, **kwargs)
        graph.nodes.loc[graph.nodes["osm_ids"] == "w2", "node_id"] = "street:ilha-2"
        return graph

    def no_map(*args, **kwargs):
        raise AssertionError("the map must not be drawn from a graph with duplicate ids")

    monkeypatch.setattr(graph_assets, "build_urban_graph", old_numbering)
    monkeypatch.setattr(graph_assets, "graph_map_png", no_map)
    registry = ilha_registry(tmp_path, write_registry)
    with pytest.raises(
        Exception,
        match=r"city 'karhula': the graph has 1 duplicated node id\(s\), e\.g\. "
        r"street:ilha-2 \(2 nodes: Ilha, Ilha 2\)",
    ):
        dg.materialize(
            OSM_AND_GRAPH, partition_key="karhula", resources=resources(str(tmp_path / "data"), str(registry))
        )
    assert not (tmp_path / "data" / "karhula" / "nodes.parquet").exists()
    assert not (tmp_path / "data" / "karhula" / "previews" / "graph_map.png").exists()


def test_each_city_keeps_its_own_check_results(tmp_path, write_registry, dagster_instance: dg.DagsterInstance):
    """A check on a partitioned asset is recorded per city: two cities, two results, neither overwrites the other."""
    from ugdata_pipeline_tests.tiny_city import write_tiny_city

    write_tiny_city(tmp_path)
    # the two shipped slugs (the partitions), both pointing at the tiny city
    registry = write_registry(
        "cities:\n"
        + "".join(
            f"  {slug}:\n    name: Tinytown\n    country: Finland\n    split: train\n"
            "    source: {kind: file, path: tiny.osm}\n"
            for slug in ("helsinki", "karhula")
        ),
        name="reg.yaml",
    )
    instance = dagster_instance
    for city in ("helsinki", "karhula"):
        result = dg.materialize(
            OSM_AND_GRAPH,
            partition_key=city,
            instance=instance,
            resources=resources(str(tmp_path / "data"), str(registry)),
        )
        assert result.success
    key = dg.AssetCheckKey(dg.AssetKey("nodes"), "node_ids_unique")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    assert sorted(record.partition for record in history) == ["helsinki", "karhula"]
    for city in ("helsinki", "karhula"):
        [record] = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=10, partition_filter=PartitionKeyFilter(key=city)
        )
        assert record.status == AssetCheckExecutionRecordStatus.SUCCEEDED
        assert record.event.dagster_event.event_specific_data.partition == city


def test_every_check_of_a_partitioned_asset_is_partitioned_like_it():
    from ugdata_pipeline.assets import ALL_ASSETS

    checked = 0
    for asset in ALL_ASSETS:
        for spec in asset.check_specs:
            assert spec.partitions_def == asset.partitions_def, (asset.key, spec.name)
            checked += asset.partitions_def is not None
    assert checked >= 18
