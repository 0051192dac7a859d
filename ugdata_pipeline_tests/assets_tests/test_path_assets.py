"""The reasoning-path asset materialized on a tiny data root in many small shards: the stored tables are the
whole-city build's, its metadata lists the shards, and its checks pass per shard and together."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ugdata_pipeline.assets.reasoning import spatial_reasoning_paths
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.reasoning.paths import build_paths
from ugdata_pipeline.resources import CityRegistryResource, StorageResource
from ugdata_pipeline.table_files import frame_to_parquet_bytes, read_table, table_path
from ugdata_pipeline_tests.assets_tests.anchored_inputs import upstream_sources, write_anchored_inputs
from ugdata_pipeline_tests.reasoning_tests.conftest import Anchored, grid_city
from ugdata_pipeline_tests.reasoning_tests.conftest import grid_anchored as grid_anchored

CITY = "karhula"  # a shipped slug: the partition must exist; the inputs are the grid city's
REGISTRY = """
cities:
  karhula:
    name: Karhula
    country: Finland
    split: train
    source: {{kind: bundled, extract: test.osm.pbf}}
    shard_size_m: {size}
"""


def write_inputs(root: Path, city: Anchored) -> None:
    write_anchored_inputs(
        root, CITY, nodes=city.nodes, edges=city.edges, images=city.images, streets=grid_city().streets
    )


def materialize(root: Path, registry: Path) -> dg.ExecuteInJobResult:
    sources = upstream_sources()
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [spatial_reasoning_paths, *sources],
            partition_key=CITY,
            instance=instance,
            resources={
                "table_io_manager": ParquetIOManager(root=str(root)),
                "storage": StorageResource(root=str(root)),
                "cities": CityRegistryResource(path=str(registry)),
            },
        )


@pytest.mark.parametrize(("size", "at_least"), [(100, 9), (5000, 1)])
def test_paths_built_in_shards_are_the_whole_city_s(grid_anchored: Anchored, tmp_path, write_registry, size, at_least):
    write_inputs(tmp_path, grid_anchored)
    result = materialize(tmp_path, write_registry(REGISTRY.format(size=size)))
    assert result.success
    whole = build_paths(grid_anchored.nodes, grid_anchored.edges, grid_anchored.images, city=CITY)
    for name, frame in (("srp", whole.paths), ("srp_missing", whole.missing)):
        stored = table_path(str(tmp_path), name, CITY).read_bytes()
        assert stored == frame_to_parquet_bytes(frame), name
    [event] = [
        m for m in result.asset_materializations_for_node("spatial_reasoning_paths") if m.asset_key.path == ["srp"]
    ]
    meta = event.metadata
    assert meta["shards"].value >= at_least and meta["shard_size_m"].value == size
    shards = meta["by_shard"].value.records
    assert len(shards) == meta["shards"].value
    assert sum(r.data["images"] for r in shards) == len(grid_anchored.images)
    assert sum(r.data["paths"] for r in shards) == len(whole.paths) == meta["paths"].value
    if size == 100:  # each shard's halo is a part of the city
        assert max(r.data["halo_nodes"] for r in shards) < len(grid_anchored.nodes)
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 4 and all(c.passed for c in checks)
    assert read_table(table_path(str(tmp_path), "srp", CITY))["image_id"].nunique() == whole.counts["images/with_path"]
