"""The subgraph description: content with known answers on the tiny city, determinism, the size cap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.context.describe import (
    describe_subgraph,
    describe_subgraphs,
    described_names,
    description_templates,
)
from ugdata_pipeline.context.subgraph_tables import SubgraphTables, subgraph_for
from ugdata_pipeline.errors import SubgraphInputError, UnknownSubgraphError
from ugdata_pipeline_tests.context_tests.subgraph_fixtures import AnchoredCity, anchor_into, graph_of, make_images
from ugdata_pipeline_tests.tiny_city import tiny_city


@pytest.fixture(scope="module")
def city() -> AnchoredCity:
    """a: Alpha Street by Cafe Uno, facing east; b: Beta Street south of the park; p: inside the park."""
    points = {"a": (50, 5), "b": (150, 105), "p": (150, 120)}
    return anchor_into(graph_of(tiny_city()), make_images(points, compass_angle=90.0))


@pytest.fixture(scope="module")
def tables(city: AnchoredCity) -> SubgraphTables:
    return city.build()


def image_row(city: AnchoredCity, image_id: str):
    return city.images.set_index("image_id").loc[image_id]


def test_description_names_street_crossing_heading_places_and_links(city: AnchoredCity, tables) -> None:
    text = describe_subgraph(*subgraph_for(tables, "a"), image_row=image_row(city, "a"))
    lines = text.splitlines()
    assert lines[0] == "The image was taken on Alpha Street."
    assert lines[1] == "The nearest crossing, Intersection of Alpha Street and First Avenue, is 50 m west."
    assert lines[2] == "The camera faces east."
    assert "- Cafe Uno (food), 5 m north" in lines
    assert "- Central Park (park), 120 m north-east" in lines
    assert "- Cafe Uno is on Alpha Street." in lines
    assert "- Bank Two is inside Central Park." in lines
    assert lines[-1].startswith("Streets around: Alpha Street (here), First Avenue (50 m), Second Avenue (50 m)")
    # places come nearest first
    assert lines.index("- Cafe Uno (food), 5 m north") < lines.index("- Central Park (park), 120 m north-east")


def test_compass_words_follow_the_place_direction(tables) -> None:
    text = describe_subgraph(*subgraph_for(tables, "b"))  # from (150, 105)
    assert "- Bank Two (financial), 57 m north-east" in text  # (185, 150)
    assert "- Cafe Uno (food), 140 m south-west" in text  # (50, 10)
    assert "The camera faces" not in text  # no image row, no heading


def test_an_area_around_the_image_is_said_so(tables) -> None:
    assert "- Central Park (park), around the image" in describe_subgraph(*subgraph_for(tables, "p"))


def test_near_m_and_max_places_limit_the_places(tables) -> None:
    nodes, edges = subgraph_for(tables, "a")
    text = describe_subgraph(nodes, edges, near_m=100.0)
    assert "Places within 100 m:" in text and "Cafe Uno (food)" in text and "Central Park (park)" not in text
    text = describe_subgraph(nodes, edges, max_places=1)
    assert "- Cafe Uno (food)" in text and "Bank Two (financial)" not in text
    assert "No named places lie within 3 m." in describe_subgraph(nodes, edges, near_m=3.0)


def test_description_is_deterministic_whatever_the_row_order(tables) -> None:
    nodes, edges = subgraph_for(tables, "b")
    reference = describe_subgraph(nodes, edges)
    rng = np.random.default_rng(3)
    for _ in range(3):
        shuffled_nodes = nodes.iloc[rng.permutation(len(nodes))].reset_index(drop=True)
        shuffled_edges = edges.iloc[rng.permutation(len(edges))].reset_index(drop=True)
        assert describe_subgraph(shuffled_nodes, shuffled_edges) == reference


@settings(max_examples=40, deadline=None)
@given(st.integers(20, 1200))
def test_max_chars_drops_whole_lines_lowest_priority_first(tables, max_chars: int) -> None:
    nodes, edges = subgraph_for(tables, "a")
    full = describe_subgraph(nodes, edges, max_chars=10_000)
    text = describe_subgraph(nodes, edges, max_chars=max_chars)
    assert len(text) <= max_chars
    first_line = full.splitlines()[0]
    if max_chars >= len(first_line):
        kept = text.splitlines()
        full_lines = full.splitlines()
        assert kept[0] == first_line
        assert all(line in full_lines for line in kept)  # whole lines only
        positions = [full_lines.index(line) for line in kept]
        assert positions == sorted(positions)  # in the original order
    else:
        assert text.endswith("…") or text == ""
        assert first_line.startswith(text.rstrip("…"))  # cut at a word boundary of the first line


def test_cap_drops_connections_before_places(tables) -> None:
    nodes, edges = subgraph_for(tables, "a")
    full = describe_subgraph(nodes, edges, max_chars=10_000)
    limit = len(full) - 40
    text = describe_subgraph(nodes, edges, max_chars=limit)
    assert "- Cafe Uno (food), 5 m north" in text and "- Bank Two is inside Central Park." not in text


def test_described_names_lists_every_named_node_but_the_image(tables) -> None:
    nodes, _ = subgraph_for(tables, "a")
    names = described_names(nodes)
    assert {"Alpha Street", "Cafe Uno", "Central Park", "Intersection of Alpha Street and First Avenue"} <= names
    assert all(isinstance(n, str) and n for n in names)
    assert len(names) == nodes.loc[nodes["kind"] != "image", "name"].nunique()


def test_templates_are_data_and_bad_options_are_refused(tables) -> None:
    templates = description_templates()
    assert templates["place"] == "- {name} ({category}), {distance} {direction}"
    nodes, edges = subgraph_for(tables, "a")
    with pytest.raises(SubgraphInputError, match="max_chars"):
        describe_subgraph(nodes, edges, max_chars=5)
    with pytest.raises(SubgraphInputError, match="near_m"):
        describe_subgraph(nodes, edges, near_m=-1.0)
    with pytest.raises(SubgraphInputError, match="centre"):
        describe_subgraph(nodes.iloc[1:], edges)


def test_bulk_descriptions_equal_the_per_image_ones(city: AnchoredCity, tables) -> None:
    bulk = describe_subgraphs(tables, city.images, max_chars=600)
    assert bulk["image_id"].tolist() == city.images["image_id"].tolist()
    for image_id, text in zip(bulk["image_id"], bulk["description"], strict=True):
        nodes, edges = subgraph_for(tables, image_id)
        assert text == describe_subgraph(nodes, edges, image_row=image_row(city, image_id), max_chars=600)
    without_rows = describe_subgraphs(SubgraphTables(tables.nodes, tables.edges, tables.summary.iloc[:0]))
    assert without_rows["image_id"].tolist() == ["a", "b", "p"]
    assert "The camera faces" not in without_rows["description"].iloc[0]
    with pytest.raises(UnknownSubgraphError, match="'zzz'"):
        describe_subgraphs(tables, city.images.assign(image_id=["a", "b", "zzz"]))
