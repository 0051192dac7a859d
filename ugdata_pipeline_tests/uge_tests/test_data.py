"""Records -> batches, subgraph tables -> PyG graphs: validation, truncation, text caching."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import TrainingDataError
from ugdata_pipeline.uge.data import (
    ImageStore,
    build_graphs,
    build_graphs_shared,
    epoch_batches,
    make_batch,
    validate_records,
)
from ugdata_pipeline_tests.uge_tests.synthetic import make_dataset
from ugdata_pipeline_tests.uge_tests.test_graph_encoder import fake_text_encoder, three_graph_tables


def test_node_texts_are_encoded_once_per_unique_text() -> None:
    calls: list[list[str]] = []

    def counting(texts: Sequence[str]) -> torch.Tensor:
        calls.append(list(texts))
        return fake_text_encoder(texts)

    tables = three_graph_tables()
    doubled = SubgraphTables(
        pd.concat([tables.nodes, tables.nodes.assign(image_id=tables.nodes["image_id"] + "b")]),
        pd.concat([tables.edges, tables.edges.assign(image_id=tables.edges["image_id"] + "b")]),
    )
    graphs = build_graphs(doubled, counting)
    assert len(graphs) == 6
    assert len(calls) == 1
    assert sorted(calls[0]) == sorted(set(calls[0]))  # no duplicates
    assert "img" not in calls[0]  # centre-node text is never encoded
    torch.testing.assert_close(graphs["g2"].x_text, graphs["g2b"].x_text)


def test_shared_builds_are_reused_only_for_identical_inputs() -> None:
    calls: list[int] = []

    def counting(texts: Sequence[str]) -> torch.Tensor:
        calls.append(len(texts))
        return fake_text_encoder(texts)

    tables = three_graph_tables()
    ids = sorted(set(tables.nodes["image_id"].astype(str)))
    first = build_graphs_shared(tables, counting, encoder_identity="enc", image_ids=ids)
    again = build_graphs_shared(
        SubgraphTables(tables.nodes.copy(), tables.edges.copy()), counting, encoder_identity="enc", image_ids=ids
    )
    assert again is first and len(calls) == 1  # equal tables (not the same objects): one build
    moved = tables.nodes.assign(dx_m=tables.nodes["dx_m"] + 1.0)
    rebuilt = build_graphs_shared(SubgraphTables(moved, tables.edges), counting, encoder_identity="enc", image_ids=ids)
    assert rebuilt is not first and len(calls) == 2
    other_encoder = build_graphs_shared(
        SubgraphTables(moved, tables.edges), counting, encoder_identity="other", image_ids=ids
    )
    assert other_encoder is not rebuilt and len(calls) == 3
    assert build_graphs_shared(tables, counting, encoder_identity="enc", image_ids=ids[:1]).keys() == {ids[0]}
    unshared = build_graphs_shared(tables, counting, encoder_identity=None, image_ids=ids)
    assert unshared is not build_graphs_shared(tables, counting, encoder_identity=None, image_ids=ids)
    torch.testing.assert_close(unshared[ids[0]].pos_m, first[ids[0]].pos_m)


def test_truncation_keeps_lowest_ranks_and_drops_dangling_edges() -> None:
    graphs = build_graphs(three_graph_tables(), fake_text_encoder, max_nodes=2)
    g2 = graphs["g2"]
    assert g2.num_nodes == 2
    assert g2.edge_index.tolist() == [[0, 1], [1, 0]]  # the chain beyond rank 1 is cut
    assert g2.center_mask.tolist() == [True, False]


def test_build_graphs_errors_name_the_problem() -> None:
    tables = three_graph_tables()
    with pytest.raises(TrainingDataError, match="have no subgraph"):
        build_graphs(tables, fake_text_encoder, image_ids=["g0", "zzz"])
    bad_kind = SubgraphTables(tables.nodes.assign(kind="tower"), tables.edges)
    with pytest.raises(TrainingDataError, match="unknown node kinds"):
        build_graphs(bad_kind, fake_text_encoder)
    no_centre = SubgraphTables(tables.nodes.assign(rank=tables.nodes["rank"] + 1), tables.edges)
    with pytest.raises(TrainingDataError, match="rank-0"):
        build_graphs(no_centre, fake_text_encoder)
    with pytest.raises(TrainingDataError, match=r"subgraph_nodes is missing column\(s\) \['dx_m'\]"):
        build_graphs(SubgraphTables(tables.nodes.drop(columns=["dx_m"]), tables.edges), fake_text_encoder)


def test_validate_records(tmp_path: Path) -> None:
    records, _ = make_dataset(tmp_path, n_places=2, views=2, size=16)
    validate_records(records)
    with pytest.raises(TrainingDataError, match="empty 'positive'"):
        validate_records(records.assign(positive=""))
    with pytest.raises(TrainingDataError, match=r"training_records is missing column\(s\) \['image_path'\]"):
        validate_records(records.drop(columns=["image_path"]))
    with pytest.raises(TrainingDataError, match="duplicate record_id"):
        validate_records(records.assign(record_id="same"))


def test_make_batch_aligns_graphs_and_ids_with_records(tmp_path: Path) -> None:
    records, subgraphs = make_dataset(tmp_path, n_places=3, views=2, size=16)
    rows = records[(records["stage"] == 2)].iloc[[3, 0, 5]]
    graphs = build_graphs(subgraphs, fake_text_encoder)
    images = ImageStore(tmp_path, lambda im: torch.zeros(3, 2, 2))
    batch = make_batch(rows, images=images, collate_images=torch.stack, graphs=graphs, max_hard_negatives=1)
    assert batch.graph is not None and batch.graph.num_graphs == 3
    assert [g.image_id for g in batch.graph.to_data_list()] == rows["image_id"].tolist()
    assert batch.images.shape == (3, 3, 2, 2)
    assert len(batch.hard_negatives) == 3 and batch.hard_negative_ids.shape == (3,)
    with pytest.raises(TrainingDataError, match="no graph for images"):
        make_batch(rows, images=images, collate_images=torch.stack, graphs={})
    with pytest.raises(TrainingDataError, match="image files are missing"):
        ImageStore(tmp_path / "nowhere", lambda im: im).check_exists(rows["image_path"])


def test_epoch_batches_are_deterministic_and_cover_every_row() -> None:
    first = epoch_batches(10, 4, seed=3, epoch=1)
    assert [b.tolist() for b in first] == [b.tolist() for b in epoch_batches(10, 4, seed=3, epoch=1)]
    assert sorted(int(i) for b in first for i in b) == list(range(10))
    assert [len(b) for b in first] == [4, 4, 2]
    assert [len(b) for b in epoch_batches(9, 4, seed=0, epoch=0)] == [4, 4]  # a 1-row batch is dropped
    assert [b.tolist() for b in epoch_batches(10, 4, seed=3, epoch=2)] != [b.tolist() for b in first]


def test_table_digest_sees_every_value_list_cells_included_and_ignores_the_index() -> None:
    from ugdata_pipeline.uge.data import table_digest

    frame = pd.DataFrame({"id": ["a", "b"], "x": [1.5, 2.0], "negatives": [["p", "q"], None]})
    base = table_digest(frame)
    assert table_digest(frame.set_axis([10, 11])) == base  # the index does not matter
    assert table_digest(frame.copy()) == base
    changed = [
        frame.assign(x=[1.5, 2.0000001]),
        frame.assign(negatives=[["p", "r"], None]),
        frame.assign(negatives=[np.array(["p", "q"]), ["q"]]),
        frame.rename(columns={"x": "y"}),
        frame.iloc[::-1],
        frame.iloc[:1],
    ]
    digests = [table_digest(f) for f in changed]
    assert base not in digests and len(set(digests)) == len(digests)
    assert table_digest(frame, frame.iloc[:0]) != base  # a second (empty) table counts too
