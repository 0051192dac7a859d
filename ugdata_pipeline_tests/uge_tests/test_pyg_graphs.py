"""The one subgraph -> PyG builder (uge.data.build_graphs): both directions, the model's edge features.

The features are the trained models' (``uge.graph_encoder.EDGE_FEATURE_NAMES``): ``log1p(distance_m)``, the sine and
cosine of the bearing, and the target - source offset in kilometres; a reverse edge has the bearing turned round and
the offset negated. The tests decode them back to metres and degrees and compare with the subgraph rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.context.subgraph_tables import SubgraphTables, subgraph_for
from ugdata_pipeline.graph.schema import NODE_KINDS
from ugdata_pipeline.uge.data import build_graphs
from ugdata_pipeline.uge.graph_encoder import EDGE_FEATURE_DIM, EDGE_FEATURE_NAMES
from ugdata_pipeline_tests.context_tests.subgraph_fixtures import anchor_into, graph_of, make_images
from ugdata_pipeline_tests.tiny_city import tiny_city
from ugdata_pipeline_tests.uge_tests.test_graph_encoder import fake_text_encoder


def stored_pairs(node_ids: list[str], edges: pd.DataFrame) -> list[int]:
    """Rows of ``edges`` the graph keeps: ends among the nodes, no self-loop, first listing of each node pair."""
    position = {node_id: i for i, node_id in enumerate(node_ids)}
    seen: set[frozenset[int]] = set()
    kept = []
    for row, (src, dst) in enumerate(zip(edges["src"], edges["dst"], strict=True)):
        u, v = position.get(src), position.get(dst)
        if u is None or v is None or u == v or frozenset((u, v)) in seen:
            continue
        seen.add(frozenset((u, v)))
        kept.append(row)
    return kept


def decoded(attr: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance in metres, bearing in degrees [0, 360), offset in metres) of each directed edge's features."""
    values = attr.double().numpy()
    bearing = np.degrees(np.arctan2(values[:, 1], values[:, 2])) % 360.0
    return np.expm1(values[:, 0]), bearing, values[:, 3:] * 1000.0


def angle_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


def test_a_built_subgraph_becomes_a_graph_with_both_directions_and_the_model_features() -> None:
    city = anchor_into(graph_of(tiny_city()), make_images({"a": (50, 5), "b": (150, 105)}))
    tables = city.build()
    assert EDGE_FEATURE_NAMES == ("log1p_distance_m", "bearing_sin", "bearing_cos", "dx_km", "dy_km")
    graph = build_graphs(SubgraphTables(tables.nodes, tables.edges), fake_text_encoder)["b"]
    nodes, edges = subgraph_for(tables, "b")
    ids = nodes["node_id"].tolist()
    assert graph.image_id == "b" and graph.num_nodes == len(nodes)
    assert graph.center_mask.tolist() == [True] + [False] * (len(nodes) - 1)  # rank 0 first
    assert graph.node_kind.tolist() == [NODE_KINDS.index(k) for k in nodes["kind"]]
    assert torch.equal(graph.pos_m, torch.tensor(nodes[["dx_m", "dy_m"]].to_numpy(), dtype=torch.float32))
    assert torch.count_nonzero(graph.x_text[0]) == 0  # the image node carries no text
    k_park = ids.index("aoi:w900")
    torch.testing.assert_close(graph.x_text[k_park], fake_text_encoder([nodes["node_text"].iloc[k_park]])[0])

    kept = stored_pairs(ids, edges)
    assert graph.edge_index.shape == (2, 2 * len(kept)) and graph.edge_attr.shape == (2 * len(kept), EDGE_FEATURE_DIM)
    # Bank Two (185, 150) lies within the park: that stored edge, then its reverse
    k = next(
        j for j, row in enumerate(kept) if (edges["src"].iloc[row], edges["dst"].iloc[row]) == ("poi:n2", "aoi:w900")
    )
    row = edges.iloc[kept[k]]
    i, j = ids.index("poi:n2"), ids.index("aoi:w900")
    assert graph.edge_index[:, 2 * k].tolist() == [i, j] and graph.edge_index[:, 2 * k + 1].tolist() == [j, i]
    bearing = math.radians(row["bearing_deg"])
    dx, dy = nodes["dx_m"].to_numpy(), nodes["dy_m"].to_numpy()
    forward = [
        math.log1p(row["distance_m"]),
        math.sin(bearing),
        math.cos(bearing),
        (dx[j] - dx[i]) / 1000,
        (dy[j] - dy[i]) / 1000,
    ]
    assert graph.edge_attr[2 * k].tolist() == pytest.approx(forward, rel=1e-6, abs=1e-6)
    reverse = [forward[0], -forward[1], -forward[2], -forward[3], -forward[4]]
    assert graph.edge_attr[2 * k + 1].tolist() == pytest.approx(reverse, rel=1e-6, abs=1e-6)


_offset = st.floats(-2000.0, 2000.0, allow_nan=False)
_maybe = st.one_of(st.just(float("nan")), st.floats(0.0, 3000.0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_offset, _offset, st.sampled_from(["poi", "street", "crossing", "aoi"])), min_size=1, max_size=6
    ),
    st.lists(
        st.tuples(
            st.integers(0, 7), st.integers(0, 7), _maybe, st.one_of(st.just(float("nan")), st.floats(0.0, 359.99))
        ),
        max_size=12,
    ),
)
def test_edge_features_decode_to_the_subgraph_rows(node_rows, edge_rows) -> None:
    """Every kept edge comes out twice, and its features decode to its distance, bearing and offset (both ways)."""
    ids = ["image:render:x", *(f"n{i}" for i in range(len(node_rows)))]  # ids n6, n7 in edges are not nodes
    offsets = np.array([(0.0, 0.0), *((dx, dy) for dx, dy, _ in node_rows)])
    nodes = pd.DataFrame(
        {
            "image_id": "x",
            "node_id": ids,
            "kind": ["image", *(kind for _, _, kind in node_rows)],
            "node_text": ["", *(f"Place {i}" for i in range(len(node_rows)))],
            "dx_m": offsets[:, 0],
            "dy_m": offsets[:, 1],
            "rank": np.arange(len(ids)),
        }
    )
    name = lambda i: ids[i] if i < len(ids) else f"n{i}"  # noqa: E731
    edges = pd.DataFrame(
        {
            "image_id": "x",
            "src": [name(u) for u, _, _, _ in edge_rows],
            "dst": [name(v) for _, v, _, _ in edge_rows],
            "distance_m": [d for _, _, d, _ in edge_rows],
            "bearing_deg": [b for _, _, _, b in edge_rows],
        }
    )
    graph = build_graphs(SubgraphTables(nodes.iloc[::-1], edges), fake_text_encoder)["x"]  # any row order
    kept = stored_pairs(ids, edges)
    assert graph.edge_index.shape == (2, 2 * len(kept))
    if not kept:
        assert graph.edge_attr.shape == (0, EDGE_FEATURE_DIM)
        return
    u = [ids.index(s) for s in edges["src"].iloc[kept]]
    v = [ids.index(d) for d in edges["dst"].iloc[kept]]
    assert graph.edge_index[:, 0::2].tolist() == [u, v] and graph.edge_index[:, 1::2].tolist() == [v, u]

    delta = offsets[v] - offsets[u]
    straight = np.hypot(delta[:, 0], delta[:, 1])
    given_d = edges["distance_m"].to_numpy()[kept]
    given_b = edges["bearing_deg"].to_numpy()[kept]
    want_d = np.where(np.isnan(given_d), straight, given_d)  # missing values: the straight line between the nodes
    want_b = np.where(np.isnan(given_b), np.degrees(np.arctan2(delta[:, 0], delta[:, 1])), given_b)

    distance, bearing, offset = decoded(graph.edge_attr[0::2])
    np.testing.assert_allclose(distance, want_d, rtol=1e-5, atol=1e-4)
    assert (angle_gap(bearing, want_b) < 1e-3).all()
    np.testing.assert_allclose(offset, delta, atol=2e-3)
    back_distance, back_bearing, back_offset = decoded(graph.edge_attr[1::2])
    np.testing.assert_array_equal(back_distance, distance)
    # the reverse bearing is the forward one turned round; two nodes at one spot with no bearing have no direction
    directed = ~np.isnan(given_b) | (straight > 0)
    assert (angle_gap(back_bearing, np.where(directed, want_b + 180.0, want_b)) < 1e-3).all()
    np.testing.assert_array_equal(back_offset, -offset)
