"""CSR adjacency and the graph validators behind the asset checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.graph import validate
from ugdata_pipeline.graph.csr import build_csr
from ugdata_pipeline_tests.tiny_city import grid_node_id


def test_csr_is_symmetric_and_keeps_shortest_duplicate():
    edges = pd.DataFrame({"src": ["a", "b", "a"], "dst": ["b", "c", "b"], "distance_m": [10.0, 5.0, 7.0]})
    csr = build_csr(["a", "b", "c"], edges)
    dense = csr.matrix.toarray()
    assert np.array_equal(dense, dense.T)
    assert dense[0, 1] == 7.0
    assert dense[1, 2] == 5.0
    assert csr.neighbours(1).tolist() == [0, 2]
    assert csr.index(["c", "a"]).tolist() == [2, 0]
    # the stored entry for (a, b) came from edges row 2
    start = csr.indptr[0]
    assert csr.edge_row[start] == 2


def test_csr_rejects_unknown_endpoints():
    edges = pd.DataFrame({"src": ["a"], "dst": ["zz"], "distance_m": [1.0]})
    with pytest.raises(KeyError, match="'a' -> 'zz' names a node that is not in the graph"):
        build_csr(["a", "b"], edges)


def test_csr_of_tiny_city_reaches_every_node(tiny_graph):
    from scipy.sparse.csgraph import connected_components

    csr = build_csr(tiny_graph.nodes["node_id"], tiny_graph.edges)
    assert csr.matrix.shape == (len(tiny_graph.nodes), len(tiny_graph.nodes))
    assert connected_components(csr.matrix, directed=False)[0] == 1
    centre = csr.index([f"crossing:{grid_node_id(1, 1)}"])[0]
    neighbours = set(csr.node_ids[csr.neighbours(int(centre))])
    assert {"street:beta-street", "street:second-avenue"} <= neighbours
    assert len(neighbours) == 6  # two streets and four consecutive crossings


def test_validators_pass_on_tiny_city(tiny_graph):
    nodes, edges = tiny_graph.nodes, tiny_graph.edges
    for outcome in (
        validate.endpoints_exist(nodes, edges),
        validate.coordinates_valid(nodes),
        validate.no_self_loops(edges),
        validate.distances_positive(edges),
        validate.poi_attachment_share(nodes, edges),
    ):
        assert outcome.passed, outcome


def test_validators_catch_broken_tables(tiny_graph):
    nodes, edges = tiny_graph.nodes.copy(), tiny_graph.edges.copy()
    edges.loc[0, "dst"] = "street:ghost"
    edges.loc[1, "dst"] = edges.loc[1, "src"]
    edges.loc[2, "distance_m"] = 0.0
    edges.loc[3, "bearing_deg"] = 360.0
    nodes.loc[0, "lat"] = np.nan
    nodes.loc[1, "lon"] = 200.0
    assert validate.endpoints_exist(nodes, edges).examples == ["street:ghost"]
    assert validate.no_self_loops(edges).observed == 1
    assert validate.distances_positive(edges).observed == 2
    assert validate.coordinates_valid(nodes).observed == 2
    cut = edges[~((edges["kind"] == "nearest") & (edges["src"] == "poi:n1"))]
    attached = validate.poi_attachment_share(nodes, cut)
    assert not attached.passed
    assert attached.observed == 0.5
    assert attached.examples == ["poi:n1"]
