"""The one graph-JSON validator: every fault it refuses, with its message, for readers and the ms-swift export."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ugdata_pipeline.context.graph_json import from_graph_json, validate_graph_json
from ugdata_pipeline.dataset import export_ms_swift
from ugdata_pipeline.dataset import validate_graph_json as dataset_validator
from ugdata_pipeline.errors import GraphJsonError, MsSwiftFormatError, SubgraphInputError


def graph(**changes: object) -> dict:
    """A valid two-node reference graph, with ``changes`` applied to its top level."""
    base = {
        "nodes": [
            {"node_id": "a", "coords": [24.9, 60.1], "node_text": "Name: A"},
            {"node_id": "b", "coords": [None, None], "node_text": None},
        ],
        "edges": [{"source": "a", "target": "b"}],
        "center_node": "a",
    }
    return base | changes


def node(**fields: object) -> dict:
    return {"node_id": "c", "coords": [24.8, 60.2], "node_text": "Name: C"} | fields


FAULTS = {
    "not an object": (["a"], "graph JSON must be an object (dict), got list"),
    "missing keys": (
        {"nodes": []},
        "graph JSON is missing key(s) ['edges', 'center_node']; expected keys nodes, edges, center_node, it has "
        "['nodes']",
    ),
    "nodes not a list": (graph(nodes={"a": 1}), "graph JSON: nodes must be a list, got dict"),
    "node not an object": (graph(nodes=["a"]), "graph JSON: node 0 must be an object, got str: a"),
    "node lacks keys": (
        graph(nodes=[{"node_id": "a"}]),
        "graph JSON: node 0 lacks ['coords', 'node_text']; every node needs node_id, coords ([lon, lat]) and "
        "node_text: {'node_id': 'a'}",
    ),
    "node id a list": (
        graph(nodes=[node(node_id=["a"])]),
        "graph JSON: node 0 node_id must be a string or an integer, got ['a']",
    ),
    "one coordinate": (
        graph(nodes=[node(coords=[1.0])]),
        "graph JSON: node 0 ('c') coords must be [lon, lat] numbers, got [1.0]",
    ),
    "coords a two-letter string": (
        graph(nodes=[node(coords="ab")]),
        "graph JSON: node 0 ('c') coords must be [lon, lat] numbers, got 'ab'",
    ),
    "coords not numbers": (
        graph(nodes=[node(coords=["24.8", 60.2])]),
        "graph JSON: node 0 ('c') coords must be [lon, lat] numbers, got ['24.8', 60.2]",
    ),
    "repeated node id": (
        graph(nodes=[node(), node()], edges=[], center_node="c"),
        "graph JSON: node 1 repeats node_id 'c'; node ids must be unique within a graph",
    ),
    "edge lacks target": (
        graph(edges=[{"source": "a"}]),
        "graph JSON: edge 0 lacks source/target, got keys ['source']: {'source': 'a'}",
    ),
    "centre not a node": (
        graph(center_node="zzz"),
        "graph JSON: center_node 'zzz' is not one of the graph's nodes (2 nodes)",
    ),
    "edge to an unknown node": (
        graph(edges=[{"source": "a", "target": "b"}, {"source": "a", "target": "zzz"}]),
        "graph JSON: 1 edge(s) name a node that is not in the graph, e.g. [\"'a' -> 'zzz'\"]",
    ),
    "ids compared as given": (
        graph(nodes=[node(node_id=1)], edges=[{"source": "1", "target": 1}], center_node=1),
        "graph JSON: 1 edge(s) name a node that is not in the graph, e.g. [\"'1' -> 1\"]",
    ),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_validator_refuses_each_fault_with_its_message(case: str) -> None:
    bad, message = FAULTS[case]
    with pytest.raises(GraphJsonError) as caught:
        validate_graph_json(bad)
    assert str(caught.value) == message
    assert isinstance(caught.value, SubgraphInputError)
    with pytest.raises(GraphJsonError, match=re.escape(message)):  # the reader checks with the same validator
        from_graph_json(bad)  # type: ignore[arg-type]


def test_validator_accepts_reference_graphs_with_null_coords_and_integer_ids() -> None:
    validate_graph_json(graph())
    validate_graph_json(
        graph(nodes=[node(node_id=1), node(node_id=2)], edges=[{"source": 1, "target": 2}], center_node=1)
    )
    nodes, edges, centre = from_graph_json(graph())
    assert nodes["lon"].isna().tolist() == [False, True] and edges[["src", "dst"]].values.tolist() == [["a", "b"]]
    assert centre == "a"


def test_dataset_uses_the_same_validator_and_the_export_names_the_image(tmp_path) -> None:
    assert dataset_validator is validate_graph_json
    with pytest.raises(GraphJsonError, match=r"^graph of image 'x': center_node 'zzz'"):
        validate_graph_json(graph(center_node="zzz"), where="graph of image 'x'")
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "img" / "x.png").write_bytes(b"png")
    records = pd.DataFrame(
        {
            "record_id": ["r0"],
            "stage": [2],
            "variant": ["ugdata"],
            "image_id": ["x"],
            "split": ["train"],
            "instruction": ["Describe."],
            "image_path": ["img/x.png"],
            "positive": ["A street."],
            "pair_type": ["caption"],
            "hard_negatives": [[]],
        }
    )
    bad = graph(nodes=[node(coords="ab")], edges=[], center_node="c")
    message = "graph of image 'x': node 0 ('c') coords must be [lon, lat] numbers, got 'ab'"
    with pytest.raises(MsSwiftFormatError, match=re.escape(message)) as caught:
        export_ms_swift(records, root=root, out_dir=tmp_path / "export", subgraph_json=lambda image_id: bad)
    assert isinstance(caught.value.__cause__, GraphJsonError)
    assert not (tmp_path / "export" / "graphs").exists()  # nothing written for a refused graph
