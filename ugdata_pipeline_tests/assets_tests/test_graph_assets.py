"""Materialize the OSM and graph assets in process and read what they stored and reported."""

from __future__ import annotations

import dagster as dg
import pytest

from ugdata_pipeline.assets.graph import urban_graph
from ugdata_pipeline.assets.osm import osm_extract
from ugdata_pipeline.io_managers import ParquetIOManager, read_table, table_path
from ugdata_pipeline.resources import CityRegistryResource, OsmSourceResource, StorageResource

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
    result = dg.materialize(OSM_AND_GRAPH, partition_key="helsinki",
                            resources=resources(str(tmp_path)))  # fmt: skip
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"edge_endpoints_exist": True, "coordinates_valid": True, "no_self_loops": True,
                      "distances_positive": True, "pois_attached": True}  # fmt: skip
    materializations = {m.asset_key.to_user_string(): m.metadata for m in result.get_asset_materialization_events()
                        for m in [m.event_specific_data.materialization]}  # fmt: skip
    nodes_meta = materializations["nodes"]
    assert nodes_meta["street"].value > 80
    assert nodes_meta["crossing"].value > 100
    assert "data:image/png;base64," in nodes_meta["map"].value
    assert materializations["osm_streets"]["osm_snapshot"].value.startswith("2019-04")
    stored = read_table(table_path(str(tmp_path), "nodes", "helsinki"))
    assert stored.crs.to_epsg() == 4326
    assert len(stored) == nodes_meta["count"].value
    assert (tmp_path / "helsinki" / "previews" / "graph_map.png").exists()


def test_city_without_streets_fails_before_writing_a_graph(tmp_path, write_registry):
    from ugdata_pipeline_tests.tiny_city import tiny_city_xml

    # only the park and the POIs, no streets
    xml = "\n".join(line for line in tiny_city_xml().splitlines() if "highway" not in line)
    (tmp_path / "empty.osm").write_text(xml)
    # the partition key is a shipped slug; the registry resource points it at the street-less file
    registry = write_registry("cities:\n  karhula:\n    name: Empty\n    country: Finland\n    split: train\n"
                              "    source: {kind: file, path: empty.osm}\n", name="reg.yaml")  # fmt: skip
    with pytest.raises(Exception, match="city 'karhula' has no named streets"):
        dg.materialize(OSM_AND_GRAPH, partition_key="karhula",
                       resources=resources(str(tmp_path / "data"), str(registry)))  # fmt: skip
    assert not (tmp_path / "data" / "karhula" / "nodes.parquet").exists()
