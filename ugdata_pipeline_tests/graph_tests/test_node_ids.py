"""Node ids are unique by construction, even where a numbered street meets a street of the same name repeated."""

from __future__ import annotations

import pytest

from ugdata_pipeline.graph import validate
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline_tests.tiny_city import streets_only

# "Ilha" has two stretches 400 m apart (sharing no OSM node, beyond the 30 m gap merge), so they are two street
# nodes; the shorter one used to be "street:ilha-2", which is also the id of the different street "Ilha 2".
ILHA_WAYS = [
    (1, "Ilha", "residential", [1, 2], [(0, 0), (150, 0)]),
    (2, "Ilha", "residential", [3, 4], [(0, 400), (100, 400)]),
    (3, "Ilha 2", "residential", [5, 6], [(0, 800), (120, 800)]),
]


def street_ids(ways: list) -> dict[str, str]:
    """OSM way ids -> street node id of the built graph."""
    graph = build_urban_graph(streets_only(ways), city_name="T", country="Portugal")
    streets = graph.nodes[graph.nodes["kind"] == "street"]
    assert streets["node_id"].is_unique, streets["node_id"].tolist()
    return dict(zip(streets["osm_ids"], streets["node_id"], strict=True))


def test_second_stretch_of_a_street_never_takes_the_id_of_a_numbered_street():
    assert street_ids(ILHA_WAYS) == {"w1": "street:ilha", "w3": "street:ilha-2", "w2": "street:ilha-3"}


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_ids_do_not_depend_on_row_order(order):
    assert street_ids([ILHA_WAYS[i] for i in order]) == street_ids(ILHA_WAYS)


def test_ids_without_a_collision_keep_the_plain_numbering():
    """Without an "Ilha 2", the second stretch keeps its long-standing id "street:ilha-2"."""
    assert street_ids(ILHA_WAYS[:2]) == {"w1": "street:ilha", "w2": "street:ilha-2"}


def test_many_stretches_and_numbered_streets_stay_unique():
    ways = [
        (10 + k, "Ilha", "residential", [100 + 2 * k, 101 + 2 * k], [(0, 400.0 * k), (150 - k, 400.0 * k)])
        for k in range(4)
    ]
    ways += [
        (20, "Ilha 2", "residential", [200, 201], [(1000, 0), (1100, 0)]),
        (21, "Ilha-3", "residential", [202, 203], [(1000, 400), (1100, 400)]),
    ]
    assert street_ids(ways) == {
        "w10": "street:ilha",
        "w20": "street:ilha-2",
        "w21": "street:ilha-3",
        "w11": "street:ilha-4",
        "w12": "street:ilha-5",
        "w13": "street:ilha-6",
    }


def test_validation_names_duplicate_ids_with_examples():
    graph = build_urban_graph(streets_only(ILHA_WAYS), city_name="T", country="Portugal")
    assert validate.node_ids_unique(graph.nodes).passed
    nodes = graph.nodes.copy()
    nodes.loc[nodes["osm_ids"] == "w2", "node_id"] = "street:ilha-2"  # the id the old numbering gave it
    outcome = validate.node_ids_unique(nodes)
    assert not outcome.passed
    assert outcome.observed == 1
    assert outcome.examples == ["street:ilha-2 (2 nodes: Ilha, Ilha 2)"]
