"""Subgraph tables written chunk by chunk hold exactly the one-shot tables; ranges and image sets read back lazily."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ugdata_pipeline.context import subgraph_stream
from ugdata_pipeline.context.describe import describe_subgraphs
from ugdata_pipeline.context.subgraph import SubgraphConfig, build_subgraphs
from ugdata_pipeline.context.subgraph_stream import (
    describe_streamed,
    iter_image_ranges,
    read_image_range,
    read_subgraph_rows,
    write_subgraphs,
)
from ugdata_pipeline.context.subgraph_tables import SUBGRAPH_EDGE_COLUMNS, SUBGRAPH_NODE_COLUMNS
from ugdata_pipeline.errors import SubgraphInputError
from ugdata_pipeline.table_files import frame_to_parquet_bytes, local_write_targets, read_table, table_path
from ugdata_pipeline_tests.context_tests.subgraph_fixtures import AnchoredCity, anchor_into, graph_of, make_images
from ugdata_pipeline_tests.tiny_city import tiny_city


@pytest.fixture(scope="module")
def tiny() -> AnchoredCity:
    """Images a on Alpha Street by Cafe Uno, b on Beta Street by the park, c 10 m east of a."""
    return anchor_into(graph_of(tiny_city()), make_images({"a": (50, 5), "b": (150, 105), "c": (60, 5)}))


def _stored(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as the IO manager stores it and reads it back."""
    return pd.read_parquet(io.BytesIO(frame_to_parquet_bytes(frame)))


def _write(city: AnchoredCity, tmp_path, images: pd.DataFrame | None = None, **config: object):
    return write_subgraphs(
        city.nodes,
        city.edges,
        city.images if images is None else images,
        crs_metric=city.graph.crs_metric,
        nodes_path=tmp_path / "subgraph_nodes.parquet",
        edges_path=tmp_path / "subgraph_edges.parquet",
        config=SubgraphConfig(**config),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("chunk", [4096, 2, 1])
def test_streamed_files_hold_exactly_the_one_shot_tables(tiny: AnchoredCity, tmp_path, chunk) -> None:
    reference = tiny.build(max_nodes=7)
    streamed = _write(tiny, tmp_path, max_nodes=7, images_per_chunk=chunk)
    nodes = pd.read_parquet(streamed.nodes_path)
    edges = pd.read_parquet(streamed.edges_path)
    # the rows, order, values and dtypes of the one-shot tables as the IO manager stores and reads them
    pd.testing.assert_frame_equal(nodes, _stored(reference.nodes))
    pd.testing.assert_frame_equal(edges, _stored(reference.edges))
    pd.testing.assert_frame_equal(streamed.summary, reference.summary)
    assert streamed.counts == reference.counts
    assert streamed.summary["image_id"].tolist() == ["a", "b", "c"]
    assert streamed.counts["subgraph_nodes"] == len(nodes) == 21  # 7 per image: the cap


@pytest.mark.parametrize("chunk", [4096, 2, 1])
def test_row_groups_are_cut_where_the_one_shot_write_cuts_them(tiny: AnchoredCity, tmp_path, monkeypatch, chunk):
    """Chunks of 7 or 14 node rows, row groups of 5: every row group mixes chunks, the bytes still match."""
    monkeypatch.setattr(subgraph_stream, "ROW_GROUP_ROWS", 5)
    reference = tiny.build(max_nodes=7)
    streamed = _write(tiny, tmp_path, max_nodes=7, images_per_chunk=chunk)
    for path, frame in ((streamed.nodes_path, reference.nodes), (streamed.edges_path, reference.edges)):
        one_shot = io.BytesIO()
        frame.to_parquet(one_shot, index=False, row_group_size=5)
        assert path.read_bytes() == one_shot.getvalue()
        assert pq.ParquetFile(path).num_row_groups == -(-len(frame) // 5)
    assert pq.ParquetFile(streamed.nodes_path).num_row_groups == 5  # 21 rows


def test_an_image_range_reads_only_those_images_rows(tiny: AnchoredCity, tmp_path) -> None:
    reference = tiny.build()
    streamed = _write(tiny, tmp_path, images_per_chunk=2)
    assert list(iter_image_ranges(streamed.summary, 2)) == [(0, 2), (2, 3)]
    for path, table in ((streamed.nodes_path, reference.nodes), (streamed.edges_path, reference.edges)):
        rows = read_image_range(path, streamed.summary, 1, 3)
        expected = _stored(table[table["image_id"].isin(["b", "c"])].reset_index(drop=True))
        pd.testing.assert_frame_equal(rows, expected)
    subset = read_subgraph_rows(streamed.nodes_path, ["c", "a"])
    expected = _stored(reference.nodes[reference.nodes["image_id"].isin(["a", "c"])].reset_index(drop=True))
    pd.testing.assert_frame_equal(subset, expected)


def test_a_range_read_with_another_builds_summary_is_refused(tiny: AnchoredCity, tmp_path) -> None:
    streamed = _write(tiny, tmp_path)
    foreign = streamed.summary.iloc[::-1].reset_index(drop=True)
    with pytest.raises(SubgraphInputError, match=r"are not the rows of images 0\.\.0 of the summary.*same"):
        read_image_range(streamed.nodes_path, foreign, 0, 1)


def test_describe_streamed_equals_the_one_shot_descriptions(tiny: AnchoredCity, tmp_path) -> None:
    reference = describe_subgraphs(tiny.build(), tiny.images)
    streamed = _write(tiny, tmp_path)
    got = describe_streamed(streamed.nodes_path, streamed.edges_path, streamed.summary, tiny.images, images_per_chunk=2)
    pd.testing.assert_frame_equal(got, reference)
    with pytest.raises(SubgraphInputError, match="pass the images table the subgraphs were built from"):
        describe_streamed(streamed.nodes_path, streamed.edges_path, streamed.summary, tiny.images.iloc[::-1])


def test_no_images_writes_empty_tables_with_the_contract_columns(tiny: AnchoredCity, tmp_path) -> None:
    streamed = _write(tiny, tmp_path, images=tiny.images.iloc[:0])
    assert tuple(pd.read_parquet(streamed.nodes_path).columns) == SUBGRAPH_NODE_COLUMNS
    assert tuple(pd.read_parquet(streamed.edges_path).columns) == SUBGRAPH_EDGE_COLUMNS
    assert len(streamed.summary) == 0 and streamed.counts["subgraph_nodes"] == 0


def test_bad_input_fails_before_any_file_is_written(tiny: AnchoredCity, tmp_path) -> None:
    stranger = make_images({"z": (50, 5)}).assign(street_node="street:alpha")
    with pytest.raises(SubgraphInputError, match="not in nodes"):
        _write(tiny, tmp_path, images=stranger)
    assert list(tmp_path.iterdir()) == []
    # the one-shot function refuses the same input with the same error
    with pytest.raises(SubgraphInputError, match="not in nodes"):
        build_subgraphs(tiny.nodes, tiny.edges, stranger, crs_metric=tiny.graph.crs_metric)


def test_an_object_store_root_receives_whole_files_and_reads_back_lazily(tiny: AnchoredCity) -> None:
    root = "memory://bucket/stream-test"
    paths = [table_path(root, name, "tiny") for name in ("subgraph_nodes", "subgraph_edges")]
    reference = tiny.build()
    with local_write_targets(*paths) as (nodes_file, edges_file):
        streamed = write_subgraphs(
            tiny.nodes,
            tiny.edges,
            tiny.images,
            crs_metric=tiny.graph.crs_metric,
            nodes_path=nodes_file,
            edges_path=edges_file,
            config=SubgraphConfig(images_per_chunk=2),
        )
        assert not paths[0].exists()  # nothing is sent before the block ends
    pd.testing.assert_frame_equal(read_table(paths[0]), _stored(reference.nodes))
    rows = read_image_range(paths[1], streamed.summary, 2, 3)
    pd.testing.assert_frame_equal(
        rows, _stored(reference.edges[reference.edges["image_id"] == "c"].reset_index(drop=True))
    )
    assert read_subgraph_rows(paths[0], ["b"])["image_id"].unique().tolist() == ["b"]


def test_one_chunk_gives_the_bytes_the_io_manager_writes_for_the_whole_table(tiny: AnchoredCity, tmp_path) -> None:
    """A city of at most images_per_chunk images (every bundled city) keeps byte-identical subgraph files."""
    reference = tiny.build()
    streamed = _write(tiny, tmp_path)
    assert streamed.nodes_path.read_bytes() == frame_to_parquet_bytes(reference.nodes)
    assert streamed.edges_path.read_bytes() == frame_to_parquet_bytes(reference.edges)
