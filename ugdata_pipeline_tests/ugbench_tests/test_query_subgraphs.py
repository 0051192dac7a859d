"""The benchmark built from its test images' subgraph rows (read from the files) is the whole-table benchmark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ugdata_pipeline.context.describe import describe_subgraph
from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.table_files import frame_to_parquet_bytes
from ugdata_pipeline.ugbench import build_tasks, evaluate
from ugdata_pipeline.ugbench.tasks import read_query_subgraphs
from ugdata_pipeline_tests.ugbench_tests.conftest import CONFIG


def _files(tmp_path: Path, nodes: pd.DataFrame, edges: pd.DataFrame) -> tuple[Path, Path]:
    """The tables as the IO manager stores them (the bytes spatial_subgraphs writes chunk by chunk)."""
    paths = tmp_path / "subgraph_nodes.parquet", tmp_path / "subgraph_edges.parquet"
    for path, frame in zip(paths, (nodes, edges), strict=True):
        path.write_bytes(frame_to_parquet_bytes(frame))
    return paths


def test_tasks_and_blind_scores_from_the_test_rows_equal_the_whole_table_ones(bench, tmp_path) -> None:
    city = bench.train  # train, test and excluded images: the test rows are a strict part of the table
    paths = _files(tmp_path, city.subgraph_nodes, city.subgraph_edges)
    query = read_query_subgraphs(*paths, city.images, city.subgraphs)
    test_ids = set(city.images.loc[city.images["split"] == "test", "image_id"].astype(str))
    assert set(query.nodes["image_id"]) == test_ids and set(query.edges["image_id"]) == test_ids
    assert len(query.nodes) < len(city.subgraph_nodes)  # 25k of 36k rows here; ~20 % where test is 20 %
    assert query.image_ids == set(city.images["image_id"].astype(str))  # every image has a subgraph

    # the reference: what the asset built when it loaded both tables whole through the IO manager
    whole_nodes, whole_edges = (pd.read_parquet(p) for p in paths)
    whole = replace(city.inputs, subgraph_nodes=whole_nodes, subgraph_edges=whole_edges)
    parts = replace(
        city.inputs, subgraph_nodes=query.nodes, subgraph_edges=query.edges, subgraph_image_ids=query.image_ids
    )
    expected, _ = build_tasks([whole], config=CONFIG, describe=describe_subgraph)
    got, _ = build_tasks([parts], config=CONFIG, describe=describe_subgraph)
    assert set(expected["task"]) == {"geolocation", "retrieval", "perception", "grounding"}
    pd.testing.assert_frame_equal(got, expected)

    blind = {
        name: evaluate(expected, {}, subgraph_nodes=n, subgraph_edges=e, bootstrap=50, seed=3).results
        for name, n, e in (("whole", whole_nodes, whole_edges), ("query", query.nodes, query.edges))
    }
    assert set(blind["whole"]["mode"]) >= {"fusion"}  # the graph-reading scorers read the subgraph rows
    pd.testing.assert_frame_equal(blind["query"], blind["whole"])


def test_perception_ranks_among_every_image_with_a_subgraph_not_only_the_read_ones(bench) -> None:
    """Without the ids of the other images, perception ranks the test images among themselves: other records."""
    city = bench.train
    test = city.subgraph_nodes["image_id"].isin(city.images.loc[city.images["split"] == "test", "image_id"])
    rows = {"subgraph_nodes": city.subgraph_nodes[test], "subgraph_edges": city.subgraph_edges}
    config = replace(CONFIG, tasks=("perception",))
    expected, _ = build_tasks([city.inputs], config=config, describe=describe_subgraph)
    ids = frozenset(city.subgraph_nodes["image_id"].astype(str))
    with_ids, _ = build_tasks([replace(city.inputs, **rows, subgraph_image_ids=ids)], config=config)
    without, _ = build_tasks([replace(city.inputs, **rows)], config=config)
    pd.testing.assert_frame_equal(with_ids, expected)
    assert not without.equals(expected)


def test_ids_of_test_images_whose_rows_were_not_read_are_refused(bench) -> None:
    city = bench.train
    test_id = str(city.images.loc[city.images["split"] == "test", "image_id"].iloc[0])
    rows = city.subgraph_nodes[city.subgraph_nodes["image_id"] != test_id]
    broken = replace(
        city.inputs, subgraph_nodes=rows, subgraph_image_ids=frozenset(city.subgraph_nodes["image_id"].astype(str))
    )
    with pytest.raises(BenchmarkInputError, match=rf"lacks the rows of 1 test image.*{test_id}.*read_query_subgraphs"):
        build_tasks([broken], config=replace(CONFIG, tasks=("perception",)))


def test_tables_without_the_columns_it_reads_are_refused(bench, tmp_path) -> None:
    city = bench.train
    paths = _files(tmp_path, city.subgraph_nodes, city.subgraph_edges)
    with pytest.raises(BenchmarkInputError, match=r"subgraphs.*n_nodes"):
        read_query_subgraphs(*paths, city.images, city.subgraphs.drop(columns="n_nodes"))
    empty = read_query_subgraphs(*paths, city.images.iloc[:0], city.subgraphs)
    assert empty.nodes.empty and list(empty.nodes.columns) == list(city.subgraph_nodes.columns)
