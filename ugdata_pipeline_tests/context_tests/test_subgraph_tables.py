"""The one subgraph model: SubgraphTables and its per-image index (SubgraphIndex)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.context.subgraph_tables import SubgraphIndex, SubgraphTables, subgraph_for
from ugdata_pipeline.errors import SubgraphInputError


def long_tables(sizes: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Image ``i`` has ``sizes[i]`` nodes ``i/0..`` (rank = position) and a chain of edges between them."""
    nodes = pd.DataFrame(
        [(i, f"{i}/{k}", k, float(k)) for i, n in sizes.items() for k in range(n)],
        columns=["image_id", "node_id", "rank", "dx_m"],
    )
    edges = pd.DataFrame(
        [(i, f"{i}/{k}", f"{i}/{k + 1}") for i, n in sizes.items() for k in range(n - 1)],
        columns=["image_id", "src", "dst"],
    )
    return nodes, edges


def test_index_gives_each_image_its_rows_by_rank_whatever_the_row_order() -> None:
    nodes, edges = long_tables({"b": 3, "a": 2, "c": 1})
    index = SubgraphIndex(nodes.sample(frac=1.0, random_state=4), edges.sample(frac=1.0, random_state=5))
    assert index.image_ids == ["a", "b", "c"] and len(index) == 3
    assert index.nodes["node_id"].tolist() == ["a/0", "a/1", "b/0", "b/1", "b/2", "c/0"]
    assert index.nodes_of("b")["rank"].tolist() == [0, 1, 2]
    assert index.node_rows("b") == (2, 5) and index.edge_rows("c") == (0, 0)
    assert sorted(index.edges_of("b")["src"]) == ["b/0", "b/1"]
    assert "a" in index and "zzz" not in index and index.nodes_of("zzz").empty


def test_index_keeps_table_order_without_rank_and_within_ties() -> None:
    nodes = pd.DataFrame({"image_id": ["x", "y", "x", "x"], "node_id": ["x3", "y1", "x1", "x2"]})
    edges = pd.DataFrame({"image_id": ["y", "x", "x"], "src": ["e1", "e2", "e3"]})
    index = SubgraphIndex(nodes, edges)
    assert index.nodes_of("x")["node_id"].tolist() == ["x3", "x1", "x2"]
    assert index.edges_of("x")["src"].tolist() == ["e2", "e3"]
    tied = SubgraphIndex(nodes.assign(rank=[1, 0, 1, 1]), edges)
    assert tied.nodes_of("x")["node_id"].tolist() == ["x3", "x1", "x2"]


def test_index_keys_are_image_ids_as_text() -> None:
    nodes = pd.DataFrame({"image_id": [7, 7, 12], "node_id": ["a", "b", "c"], "rank": [1, 0, 0]})
    index = SubgraphIndex(nodes, nodes.iloc[:0].rename(columns={"node_id": "src"}))
    assert index.image_ids == ["12", "7"] and 7 in index
    assert index.nodes_of(7)["node_id"].tolist() == ["b", "a"]


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(1, 6), min_size=1, max_size=6), st.integers(1, 7))
def test_head_keeps_the_lowest_ranks_of_every_image(sizes: dict[str, int], max_nodes: int) -> None:
    nodes, edges = long_tables(sizes)
    index = SubgraphIndex(nodes.iloc[::-1], edges)
    cut = index.head(max_nodes)
    assert cut.image_ids == index.image_ids
    for image_id, n in sizes.items():
        assert cut.nodes_of(image_id)["rank"].tolist() == list(range(min(n, max_nodes)))
        pd.testing.assert_frame_equal(cut.edges_of(image_id), index.edges_of(image_id))
    expected = index.nodes.groupby("image_id", sort=False).head(max_nodes).reset_index(drop=True)
    pd.testing.assert_frame_equal(cut.nodes, expected)


def test_index_refuses_a_table_without_image_id() -> None:
    nodes, edges = long_tables({"a": 2})
    with pytest.raises(SubgraphInputError, match=r"subgraph edges table has no image_id column \(it has \['src'"):
        SubgraphIndex(nodes, edges.drop(columns="image_id"))


def test_tables_unpack_to_the_long_tables_and_keep_their_index() -> None:
    nodes, edges = long_tables({"a": 2, "b": 1})
    tables = SubgraphTables(nodes, edges)
    assert tables.summary is None and tables.counts == {}
    got_nodes, got_edges = tables
    assert got_nodes is nodes and got_edges is edges
    assert tables.index is tables.index  # built once
    rows, _ = subgraph_for(tables, "a")
    assert rows["node_id"].tolist() == ["a/0", "a/1"] and rows.index.tolist() == [0, 1]
    assert subgraph_for(tables, "b")[1].empty
