"""Caption requests and grounding names read a chunk of images at a time equal the ones built from the whole table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ugdata_pipeline.context.captioners import build_caption_requests, names_by_image
from ugdata_pipeline.context.describe import describe_subgraphs
from ugdata_pipeline.context.subgraph import SubgraphConfig
from ugdata_pipeline.context.subgraph_stream import (
    READ_IMAGES_PER_CHUNK,
    StreamedSubgraphs,
    caption_requests_streamed,
    write_subgraphs,
)
from ugdata_pipeline.errors import SubgraphInputError
from ugdata_pipeline_tests.context_tests.subgraph_fixtures import AnchoredCity, anchor_into, graph_of, make_images
from ugdata_pipeline_tests.tiny_city import tiny_city

ROOT = Path("/data")  # requests only join it to the image paths; nothing is read from it


@pytest.fixture(scope="module")
def tiny() -> AnchoredCity:
    """Five images around the grid, one excluded (no request, but its names count for the grounding gate)."""
    points = {"a": (50, 5), "b": (150, 105), "c": (60, 5), "d": (185, 145), "e": (5, 150)}
    city = anchor_into(graph_of(tiny_city()), make_images(points))
    city.images["path"] = [f"tinytown/images/{i}.png" for i in points]
    city.images["split"] = ["train", "test", "excluded", "val", "train"]
    city.images["scene_facts"] = [json.dumps({"weather": w}) for w in ("sun", "rain", "fog", "snow", "sun")]
    return city


def _write(city: AnchoredCity, tmp_path: Path) -> StreamedSubgraphs:
    return write_subgraphs(
        city.nodes,
        city.edges,
        city.images,
        crs_metric=city.graph.crs_metric,
        nodes_path=tmp_path / "subgraph_nodes.parquet",
        edges_path=tmp_path / "subgraph_edges.parquet",
        config=SubgraphConfig(max_nodes=6),  # the cap drops places, so nearest-first order matters
    )


@pytest.mark.parametrize("chunk", [1, 2, READ_IMAGES_PER_CHUNK])
def test_chunked_requests_and_names_equal_the_whole_table_ones(tiny: AnchoredCity, tmp_path: Path, chunk) -> None:
    one_shot = tiny.build(max_nodes=6)
    descriptions = describe_subgraphs(one_shot, tiny.images)
    streamed = _write(tiny, tmp_path)
    got = caption_requests_streamed(
        streamed.nodes_path, streamed.summary, tiny.images, descriptions, root=ROOT, images_per_chunk=chunk
    )
    # the table in memory and as the IO manager stored it (what the asset loaded whole before)
    for nodes in (one_shot.nodes, pd.read_parquet(streamed.nodes_path)):
        assert got.requests == build_caption_requests(tiny.images, descriptions, nodes, root=ROOT)
        assert got.names == names_by_image(nodes)
    assert [r.image_id for r in got.requests] == ["a", "b", "d", "e"]  # c is excluded
    assert got.requests[0].image_path == ROOT / "tinytown/images/a.png"
    assert got.requests[0].scene_facts == {"weather": "sun"}
    assert got.requests[0].description == descriptions["description"].iloc[0] != ""
    # the comparison has something to compare: names and places reach the requests, and c keeps its names
    assert {"Cafe Uno", "Alpha Street"} <= got.requests[0].allowed_names
    assert [p.name for p in got.requests[0].places][:1] == ["Cafe Uno"]
    assert "Cafe Uno" in got.names["c"] and set(got.names) == {"a", "b", "c", "d", "e"}


def test_images_in_another_order_than_the_summary_are_refused(tiny: AnchoredCity, tmp_path: Path) -> None:
    streamed = _write(tiny, tmp_path)
    descriptions = describe_subgraphs(tiny.build(max_nodes=6), tiny.images)
    with pytest.raises(SubgraphInputError, match=r"caption_requests_streamed: .*pass the images table the subgraphs"):
        caption_requests_streamed(
            streamed.nodes_path, streamed.summary, tiny.images.iloc[::-1], descriptions, root=ROOT
        )


def test_no_images_give_no_requests_and_no_names(tiny: AnchoredCity, tmp_path: Path) -> None:
    images = tiny.images.iloc[:0]
    streamed = write_subgraphs(
        tiny.nodes,
        tiny.edges,
        images,
        crs_metric=tiny.graph.crs_metric,
        nodes_path=tmp_path / "subgraph_nodes.parquet",
        edges_path=tmp_path / "subgraph_edges.parquet",
    )
    got = caption_requests_streamed(streamed.nodes_path, streamed.summary, images, {}, root=ROOT)
    assert (got.requests, got.names) == ([], {})
