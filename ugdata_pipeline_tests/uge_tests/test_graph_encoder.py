"""The graph encoder: messages both ways, one vector per own graph, ablations, offset encoding."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import pytest
import torch

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.uge.data import build_graphs, collate_graphs
from ugdata_pipeline.uge.graph_encoder import (
    EDGE_FEATURE_DIM,
    GraphEncoder,
    GraphEncoderConfig,
    sinusoidal_offset_encoding,
)

TEXT_DIM = 12


def fake_text_encoder(texts: Sequence[str]) -> torch.Tensor:
    """Deterministic stand-in for MiniLM: a seeded random vector per text."""
    rows = []
    for text in texts:
        generator = torch.Generator().manual_seed(sum(map(ord, text)) * 7919 + len(text))
        rows.append(torch.randn(TEXT_DIM, generator=generator))
    return torch.stack(rows) if rows else torch.zeros(0, TEXT_DIM)


def two_node_tables() -> SubgraphTables:
    nodes = pd.DataFrame(
        {
            "image_id": ["a", "a"],
            "node_id": ["image:render:a", "poi:n1"],
            "kind": ["image", "poi"],
            "node_text": ["street view", "Cafe Uno, a cafe"],
            "dx_m": [0.0, 30.0],
            "dy_m": [0.0, 40.0],
            "rank": [0, 1],
        }
    )
    # ONE row in the table (image -> poi); the graph must still pass messages poi -> image
    edges = pd.DataFrame(
        {"image_id": ["a"], "src": ["image:render:a"], "dst": ["poi:n1"], "distance_m": [50.0], "bearing_deg": [36.87]}
    )
    return SubgraphTables(nodes, edges)


def encoder(**overrides: object) -> GraphEncoder:
    config = GraphEncoderConfig(node_text_dim=TEXT_DIM, hidden_dim=16, out_dim=8, edge_dim=8, dropout=0.0)
    return GraphEncoder(GraphEncoderConfig.from_dict({**config.to_dict(), **overrides})).eval()


def test_two_node_graph_has_both_directions_and_reversed_features() -> None:
    graph = build_graphs(two_node_tables(), fake_text_encoder)["a"]
    assert graph.edge_index.tolist() == [[0, 1], [1, 0]]
    forward, backward = graph.edge_attr.tolist()
    assert forward[0] == pytest.approx(math.log1p(50.0)) and backward[0] == pytest.approx(math.log1p(50.0))
    # bearing 36.87 deg forward, 216.87 deg backward: sin/cos flip sign
    assert forward[1] == pytest.approx(0.6, abs=1e-4) and forward[2] == pytest.approx(0.8, abs=1e-4)
    assert backward[1] == pytest.approx(-0.6, abs=1e-4) and backward[2] == pytest.approx(-0.8, abs=1e-4)
    assert forward[3:] == pytest.approx([0.03, 0.04]) and backward[3:] == pytest.approx([-0.03, -0.04])
    assert graph.center_mask.tolist() == [True, False]
    assert torch.count_nonzero(graph.x_text[0]) == 0  # the image node carries no text


@pytest.mark.parametrize("conv", ["gatv2", "gcn"])
def test_messages_flow_both_ways_on_a_two_node_graph(conv: str) -> None:
    torch.manual_seed(0)
    model = encoder(conv=conv)
    graph = build_graphs(two_node_tables(), fake_text_encoder)["a"]
    with torch.no_grad():
        base = model.encode_nodes(graph)
        changed_poi = graph.clone()
        changed_poi.x_text = graph.x_text.clone()
        changed_poi.x_text[1] += 1.0
        after_poi = model.encode_nodes(changed_poi)
        changed_image = graph.clone()
        changed_image.node_kind = graph.node_kind.clone()
        changed_image.node_kind[0] = 1  # same node, different kind embedding -> different input at node 0
        after_image = model.encode_nodes(changed_image)
    assert not torch.allclose(after_poi[0], base[0]), "image node did not hear from the POI"
    assert not torch.allclose(after_image[1], base[1]), "POI did not hear from the image node"


def three_graph_tables() -> SubgraphTables:
    node_rows, edge_rows = [], []
    for g, n_extra in enumerate([1, 2, 3]):
        image_id = f"g{g}"
        node_rows.append((image_id, f"image:render:{image_id}", "image", "img", 0.0, 0.0, 0))
        for j in range(n_extra):
            node_rows.append((image_id, f"poi:n{g}{j}", "poi", f"Place {g}-{j}", 20.0 * (j + 1), -15.0 * g, j + 1))
            src = f"image:render:{image_id}" if j == 0 else f"poi:n{g}{j - 1}"
            edge_rows.append((image_id, src, f"poi:n{g}{j}", 20.0, float("nan")))
    nodes = pd.DataFrame(node_rows, columns=["image_id", "node_id", "kind", "node_text", "dx_m", "dy_m", "rank"])
    edges = pd.DataFrame(edge_rows, columns=["image_id", "src", "dst", "distance_m", "bearing_deg"])
    return SubgraphTables(nodes, edges)


def test_each_graph_vector_depends_on_its_own_graph_only() -> None:
    torch.manual_seed(1)
    model = encoder()
    graphs = build_graphs(three_graph_tables(), fake_text_encoder)
    order = ["g0", "g1", "g2"]
    with torch.no_grad():
        out = model(collate_graphs([graphs[i] for i in order]))
        permuted = model(collate_graphs([graphs[i] for i in ["g2", "g0", "g1"]]))
        alone = torch.cat([model(collate_graphs([graphs[i]])) for i in order])
    assert out.shape == (3, 8)
    assert len({tuple(row.round(decimals=5).tolist()) for row in out}) == 3  # three different graphs
    torch.testing.assert_close(permuted, out[[2, 0, 1]])
    torch.testing.assert_close(alone, out)  # batching changes nothing
    # perturbing graph 1 changes row 1 only
    changed = graphs["g1"].clone()
    changed.x_text = changed.x_text + 0.5
    with torch.no_grad():
        out2 = model(collate_graphs([graphs["g0"], changed, graphs["g2"]]))
    torch.testing.assert_close(out2[[0, 2]], out[[0, 2]])
    assert not torch.allclose(out2[1], out[1])


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_edge_features": False},
        {"use_coord_encoding": False},
        {"conv": "gcn"},
        {"edge_dim": 8},
        {"edge_dim": 16},
        {"edge_dim": 32},
        {"concat_heads": False},
    ],
)
def test_ablations_build_and_encode(overrides: dict[str, object]) -> None:
    model = encoder(**overrides)
    graphs = build_graphs(three_graph_tables(), fake_text_encoder)
    batch = collate_graphs(list(graphs.values()))
    out = model(batch)
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    uses_edges = not (overrides.get("use_edge_features") is False or overrides.get("conv") == "gcn")
    assert (model.edge_mlp is None) == (not uses_edges)
    assert (model.coord_proj is None) == (overrides.get("use_coord_encoding") is False)
    if uses_edges:  # the edge features are embedded at the configured width and reach the output
        assert model.edge_mlp(batch.edge_attr).shape == (batch.edge_attr.shape[0], overrides.get("edge_dim", 8))
        altered = batch.clone()
        altered.edge_attr = batch.edge_attr * 3 + 1
        with torch.no_grad():
            assert not torch.allclose(model(batch), model(altered))


def test_edge_features_change_the_output_unless_switched_off() -> None:
    graphs = build_graphs(three_graph_tables(), fake_text_encoder)
    batch = collate_graphs(list(graphs.values()))
    altered = batch.clone()
    altered.edge_attr = batch.edge_attr * 3 + 1
    for use_edges, should_differ in ((True, True), (False, False)):
        torch.manual_seed(2)
        model = encoder(use_edge_features=use_edges)
        with torch.no_grad():
            differ = not torch.allclose(model(batch), model(altered))
        assert differ == should_differ


def test_sinusoidal_offset_encoding_values() -> None:
    pos = torch.tensor([[0.0, 0.0], [4.0, 1.0]])
    enc = sinusoidal_offset_encoding(pos, frequencies=3, min_wavelength_m=4.0, max_wavelength_m=16.0)
    assert enc.shape == (2, 12)
    # order (axis, band, sin/cos): at the origin every sin is 0 and every cos 1
    assert enc[0].tolist() == pytest.approx([0, 1] * 6)
    # x = 4 m on the 4 m band is one full turn: sin 0, cos 1; on the 8 m band half a turn: cos -1
    assert enc[1, 0:2].tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    assert enc[1, 2:4].tolist() == pytest.approx([0.0, -1.0], abs=1e-5)
    # y = 1 m on the 4 m band is a quarter turn
    assert enc[1, 6:8].tolist() == pytest.approx([1.0, 0.0], abs=1e-5)


def test_config_validation_and_round_trip() -> None:
    config = GraphEncoderConfig(edge_dim=32, conv="gcn")
    assert GraphEncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="conv must be one of"):
        GraphEncoderConfig(conv="gin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown GraphEncoderConfig keys"):
        GraphEncoderConfig.from_dict({"edges": 3})
    assert EDGE_FEATURE_DIM == 5


def test_heads_are_concatenated_and_old_configs_keep_averaged_heads() -> None:
    conv = encoder(hidden_dim=16, heads=4).convs[0]
    assert conv.concat and conv.out_channels == 4  # four heads of 16 / 4 channels make the 16-wide state
    assert not encoder(hidden_dim=16, heads=4, concat_heads=False).convs[0].concat
    saved_before_the_field = {k: v for k, v in GraphEncoderConfig().to_dict().items() if k != "concat_heads"}
    assert GraphEncoderConfig.from_saved(saved_before_the_field).concat_heads is False
    assert GraphEncoderConfig.from_dict({}).concat_heads is True  # overrides on top of today's defaults
    with pytest.raises(ValueError, match=r"hidden_dim \(18\) must be a multiple of heads \(4\)"):
        GraphEncoderConfig(hidden_dim=18, heads=4)


def test_missing_centre_node_is_rejected() -> None:
    model = encoder()
    graph = build_graphs(two_node_tables(), fake_text_encoder)["a"]
    graph.center_mask = torch.tensor([False, False])
    with pytest.raises(ValueError, match="exactly one centre node"):
        model(graph)
