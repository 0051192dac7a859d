"""The stage-2 export read from the stored long tables a chunk of images at a time writes the whole-table bytes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ugdata_pipeline.context.subgraph import SubgraphConfig
from ugdata_pipeline.context.subgraph_stream import write_subgraphs
from ugdata_pipeline.dataset import export_graphs
from ugdata_pipeline.dataset.export import export_ms_swift, subgraph_json_from_tables
from ugdata_pipeline.dataset.export_graphs import StreamedSubgraphJson
from ugdata_pipeline.dataset.records import TRAINING_RECORD_COLUMNS
from ugdata_pipeline.errors import DatasetInputError, SubgraphInputError
from ugdata_pipeline.table_files import frame_to_parquet_bytes, read_table, table_path
from ugdata_pipeline_tests.context_tests.subgraph_fixtures import anchor_into, graph_of, make_images
from ugdata_pipeline_tests.dataset_tests.export_files import files_of, summary_of
from ugdata_pipeline_tests.tiny_city import tiny_city
from ugdata_pipeline_tests.uge_tests.synthetic import make_dataset

CITY = "tiny"


def _store(root: Path, name: str, frame: pd.DataFrame) -> Path:
    path = table_path(str(root), name, CITY)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frame_to_parquet_bytes(frame))  # the IO manager's bytes
    return Path(path.path)


@pytest.fixture
def data_root(tmp_path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """The synthetic data set (6 images, 4 nodes and 3 edges each) stored image by image, with its summary."""
    records, tables = make_dataset(tmp_path, n_places=3, views=2, size=16)
    _store(tmp_path, "subgraph_nodes", tables.nodes)
    _store(tmp_path, "subgraph_edges", tables.edges)
    stage2 = records[(records["stage"] == 2)].reset_index(drop=True)
    return tmp_path, stage2, summary_of(tables)


def _paths(root: Path) -> list[Path]:
    return [Path(table_path(str(root), name, CITY).path) for name in ("subgraph_nodes", "subgraph_edges")]


def _whole(root: Path, records: pd.DataFrame, summary: pd.DataFrame, out: Path) -> dict[str, bytes]:
    """The export built from the whole tables as the IO manager loads them (the build before chunking)."""
    nodes, edges = (read_table(table_path(str(root), n, CITY)) for n in ("subgraph_nodes", "subgraph_edges"))
    export_ms_swift(records, root=root, out_dir=out, subgraph_json=subgraph_json_from_tables(nodes, edges, summary))
    return files_of(out)


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_export_writes_the_bytes_of_the_whole_table_export(data_root, chunk) -> None:
    root, records, summary = data_root
    source = StreamedSubgraphJson(*_paths(root), summary, images_per_chunk=chunk)
    export = export_ms_swift(records, root=root, out_dir=root / "chunked", subgraph_json=source)
    chunked = files_of(root / "chunked")
    assert chunked == _whole(root, records, summary, root / "whole")
    assert export.n_graphs == 6 and sum(name.startswith("graphs/") for name in chunked) == 6
    assert {"stage2_ugdata_train.jsonl", "stage2_ugdata_val.jsonl"} <= set(chunked)


def test_only_the_ranges_holding_a_stage2_image_are_read(data_root, monkeypatch) -> None:
    root, records, summary = data_root
    some = records[records["image_id"].isin(["p0v0", "p2v1"])].reset_index(drop=True)
    read = []
    original = export_graphs.read_image_range

    def spy(path, frame, start, stop):
        read.append((Path(path).name, start, stop))
        return original(path, frame, start, stop)

    monkeypatch.setattr(export_graphs, "read_image_range", spy)
    source = StreamedSubgraphJson(*_paths(root), summary, images_per_chunk=2)
    export_ms_swift(some, root=root, out_dir=root / "chunked", subgraph_json=source)
    # images 0-1 hold p0v0 and 4-5 hold p2v1; the range 2-3 (p1v0, p1v1) is never read
    assert read == [(f"{t}.parquet", a, b) for a, b in ((0, 2), (4, 6)) for t in ("subgraph_nodes", "subgraph_edges")]
    chunked = files_of(root / "chunked")
    assert chunked == _whole(root, some, summary, root / "whole")
    assert sorted(n for n in chunked if n.startswith("graphs/")) == ["graphs/p0v0.json", "graphs/p2v1.json"]


@pytest.mark.parametrize("chunk", [1, 2])
def test_streamed_subgraph_files_export_as_the_whole_tables(tmp_path, chunk) -> None:
    """Subgraphs of a tiny city written by write_subgraphs (nulls, NaN, real node texts), one image per write."""
    city = anchor_into(graph_of(tiny_city()), make_images({"a": (50, 5), "b": (150, 105), "c": (60, 5)}))
    paths = _paths(tmp_path)
    paths[0].parent.mkdir(parents=True)
    streamed = write_subgraphs(
        city.nodes,
        city.edges,
        city.images,
        crs_metric=city.graph.crs_metric,
        nodes_path=paths[0],
        edges_path=paths[1],
        config=SubgraphConfig(images_per_chunk=1),
    )
    (tmp_path / "img").mkdir()
    for image_id in "abc":
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{image_id}.png")
    records = pd.DataFrame(
        [
            (f"s2-{i}", 2, "ugdata", i, "train", "Where is it?", f"img/{i}.png", f"text {i}", "caption", [])
            for i in "cab"
        ],
        columns=list(TRAINING_RECORD_COLUMNS),
    )
    source = StreamedSubgraphJson(*paths, streamed.summary, images_per_chunk=chunk)
    export_ms_swift(records, root=tmp_path, out_dir=tmp_path / "chunked", subgraph_json=source)
    chunked = files_of(tmp_path / "chunked")
    assert chunked == _whole(tmp_path, records, streamed.summary, tmp_path / "whole")
    assert sorted(n for n in chunked if n.startswith("graphs/")) == ["graphs/a.json", "graphs/b.json", "graphs/c.json"]


def test_an_image_without_a_subgraph_is_refused_before_any_file_is_written(data_root) -> None:
    root, records, summary = data_root
    ghost = records.head(1).assign(record_id="s2-ghost", image_id="ghost")
    source = StreamedSubgraphJson(*_paths(root), summary, images_per_chunk=1)
    with pytest.raises(DatasetInputError) as caught:
        export_ms_swift(pd.concat([records, ghost]), root=root, out_dir=root / "out", subgraph_json=source)
    # the message of the whole-table export
    assert str(caught.value) == "image 'ghost' has no subgraph in the subgraph tables; build subgraphs before stage 2"
    assert not (root / "out").exists()


def test_a_summary_of_another_build_or_without_row_counts_is_refused(data_root) -> None:
    root, records, summary = data_root
    with pytest.raises(DatasetInputError, match=r"subgraphs is missing column\(s\) \['n_nodes', 'n_edges'\]"):
        StreamedSubgraphJson(*_paths(root), summary[["image_id", "center_node"]])
    with pytest.raises(DatasetInputError, match="images_per_chunk must be >= 1, got 0"):
        StreamedSubgraphJson(*_paths(root), summary, images_per_chunk=0)
    reversed_order = summary.iloc[::-1].reset_index(drop=True)
    source = StreamedSubgraphJson(*_paths(root), reversed_order, images_per_chunk=2)
    with pytest.raises(SubgraphInputError, match="rebuild both together"):
        export_ms_swift(records, root=root, out_dir=root / "out", subgraph_json=source)


def test_a_graph_source_that_skips_an_image_fails_before_the_jsonl_is_written(data_root) -> None:
    root, records, _ = data_root

    class Partial:
        def graphs(self, image_ids):
            return iter([])  # gives no graph at all

    with pytest.raises(DatasetInputError, match=r"missing \['p0v0', 'p0v1', 'p1v0'\], not asked for \[\]"):
        export_ms_swift(records, root=root, out_dir=root / "out", subgraph_json=Partial())
    assert not list((root / "out").glob("*.jsonl"))
