"""The subgraph assets materialized on a tiny data root: the long tables streamed to their table paths hold exactly
the one-shot tables, the IO manager records them, and descriptions read them a chunk at a time."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ugdata_pipeline.assets.context import spatial_subgraphs, subgraph_descriptions
from ugdata_pipeline.context.describe import describe_subgraphs
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.resources import CityRegistryResource, StorageResource
from ugdata_pipeline.table_files import StoredTable, frame_to_parquet_bytes, read_table, table_path, write_bytes_atomic
from ugdata_pipeline_tests.assets_tests.anchored_inputs import upstream_sources, write_anchored_inputs
from ugdata_pipeline_tests.context_tests.subgraph_fixtures import AnchoredCity, anchor_into, graph_of, make_images
from ugdata_pipeline_tests.tiny_city import tiny_city

CITY = "karhula"  # a shipped slug: the partition must exist; the inputs are the tiny city's


@pytest.fixture(scope="module")
def tiny() -> AnchoredCity:
    return anchor_into(graph_of(tiny_city()), make_images({"a": (50, 5), "b": (150, 105), "c": (60, 5)}))


def write_inputs(root: Path, city: AnchoredCity) -> None:
    write_anchored_inputs(
        root, CITY, nodes=city.nodes, edges=city.edges, images=city.images, streets=tiny_city().streets
    )


def stored_form(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as the IO manager stores and reads back a table returned whole."""
    return pd.read_parquet(io.BytesIO(frame_to_parquet_bytes(frame)))


def materialize(root: Path, *, chunk: int) -> dg.ExecuteInJobResult:
    sources = upstream_sources()
    config = {"ops": {"spatial_subgraphs": {"config": {"images_per_chunk": chunk}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [spatial_subgraphs, subgraph_descriptions, *sources],
            partition_key=CITY,
            instance=instance,
            run_config=config,
            resources={
                "table_io_manager": ParquetIOManager(root=str(root)),
                "storage": StorageResource(root=str(root)),
                "cities": CityRegistryResource(),
            },
        )


@pytest.mark.parametrize("chunk", [4096, 2])
def test_streamed_subgraph_tables_equal_the_one_shot_build(tiny: AnchoredCity, tmp_path, chunk) -> None:
    write_inputs(tmp_path, tiny)
    result = materialize(tmp_path, chunk=chunk)
    assert result.success
    reference = tiny.build()
    stored = {name: read_table(table_path(str(tmp_path), name, CITY)) for name in ("subgraph_nodes", "subgraph_edges")}
    as_stored = {"subgraph_nodes": stored_form(reference.nodes), "subgraph_edges": stored_form(reference.edges)}
    for name in stored:
        pd.testing.assert_frame_equal(stored[name], as_stored[name])
        meta = result.asset_materializations_for_node("spatial_subgraphs")
        [event] = [m for m in meta if m.asset_key == dg.AssetKey(name)]
        assert event.metadata["dagster/row_count"].value == len(as_stored[name])
        assert event.metadata["path"].value == str(table_path(str(tmp_path), name, CITY))
        columns = [c.name for c in event.metadata["dagster/column_schema"].value.columns]
        assert columns == list(as_stored[name].columns)
    summary = read_table(table_path(str(tmp_path), "subgraphs", CITY))
    pd.testing.assert_frame_equal(summary, stored_form(reference.summary))
    descriptions = read_table(table_path(str(tmp_path), "subgraph_descriptions", CITY))
    expected = describe_subgraphs(reference, tiny.images)
    pd.testing.assert_frame_equal(descriptions, stored_form(expected))


def test_a_stored_table_at_another_path_is_refused(tmp_path) -> None:
    manager = ParquetIOManager(root=str(tmp_path / "tables"))
    elsewhere = table_path(str(tmp_path / "elsewhere"), "subgraph_nodes", CITY)
    write_bytes_atomic(elsewhere, frame_to_parquet_bytes(pd.DataFrame({"image_id": ["a"]})))
    context = dg.build_output_context(asset_key=dg.AssetKey("subgraph_nodes"))
    with pytest.raises(ValueError, match=r"wrote its table to .*elsewhere.*but its table lives at .*tables"):
        manager.handle_output(context, StoredTable(elsewhere))
