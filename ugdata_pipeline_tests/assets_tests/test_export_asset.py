"""The ms_swift_export asset materialized on a tiny data root: the files a user ships to ms-swift, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from ugdata_pipeline.assets.dataset import ms_swift_export
from ugdata_pipeline.assets.partitions import city_partitions
from ugdata_pipeline.dataset.export import export_ms_swift, subgraph_json_from_tables
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.resources import StorageResource
from ugdata_pipeline.table_files import read_table, table_path
from ugdata_pipeline_tests.dataset_tests.export_files import files_of, summary_of
from ugdata_pipeline_tests.uge_tests.synthetic import make_dataset

CITY = "karhula"  # a shipped slug: the partition must exist; no OSM is read
# the IO manager loads these; subgraph_nodes / subgraph_edges are deps the asset reads from their table paths
UPSTREAM = ("training_records", "subgraphs")


def write_inputs(root: Path, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """The synthetic data set's images under ``root`` and the four upstream tables as the IO manager stores them."""
    made, tables = make_dataset(root, n_places=4, views=2, size=16)
    records = made if records is None else records
    frames = {
        "training_records": records,
        "subgraph_nodes": tables.nodes,
        "subgraph_edges": tables.edges,
        "subgraphs": summary_of(tables),
    }
    for name, frame in frames.items():
        path = table_path(str(root), name, CITY)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path.path, index=False)
    return made


def materialize(root: Path) -> dg.ExecuteInJobResult:
    sources = [
        dg.SourceAsset(name, io_manager_key="table_io_manager", partitions_def=city_partitions) for name in UPSTREAM
    ]
    # an instance disposed here removes its temporary folder (left to the GC, it warns in a later test)
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [ms_swift_export, *sources],
            partition_key=CITY,
            raise_on_error=False,
            instance=instance,
            resources={
                "table_io_manager": ParquetIOManager(root=str(root)),
                "storage": StorageResource(root=str(root)),
            },
        )


def failure_message(result: dg.ExecuteInJobResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.cause.message


def test_export_writes_one_line_per_record_with_relative_images_and_parsable_graphs(tmp_path):
    records = write_inputs(tmp_path)
    result = materialize(tmp_path)
    assert result.success
    export_root = tmp_path / CITY / "export"
    expected = {"ugdata_stage1": (1, "ugdata"), "ugdata_stage2": (2, "ugdata"), "baseline_stage1": (1, "baseline")}
    assert sorted(p.name for p in export_root.iterdir()) == sorted(expected)
    meta = result.asset_materializations_for_node("ms_swift_export")[0].metadata["exports"].value
    assert sorted(meta) == sorted(expected)
    for folder, (stage, variant) in expected.items():
        out = export_root / folder
        mine = records[(records["stage"] == stage) & (records["variant"] == variant)]
        by_split = mine.groupby("split")
        assert sorted(p.name for p in out.glob("*.jsonl")) == sorted(
            f"stage{stage}_{variant}_{split}.jsonl" for split in by_split.groups
        )
        for split, group in by_split:
            lines = (out / f"stage{stage}_{variant}_{split}.jsonl").read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines]
            assert len(rows) == len(group)  # one JSONL row per record, in record order
            for row, record in zip(rows, group.to_dict("records"), strict=True):
                prefix = "<graph><image>" if stage == 2 else "<image>"
                assert row["messages"] == [{"role": "user", "content": f"{prefix} {record['instruction']}"}]
                assert row["positive_messages"] == [[{"role": "user", "content": record["positive"]}]]
                assert row["negative_messages"] == [
                    [{"role": "user", "content": text}] for text in record["hard_negatives"]
                ]
                assert row["label"] == 1
                assert row["pair_type"] == ("stage2_image_graph" if stage == 2 else "stage1_image_only")
                # the image is relative to the export folder and is the record's own file
                (image,) = row["images"]
                assert image == f"images/{record['image_path']}" and not Path(image).is_absolute()
                assert (out / image).read_bytes() == (tmp_path / record["image_path"]).read_bytes()
                if stage == 1:
                    assert row["graphs"] == []
                    continue
                (graph_rel,) = row["graphs"]
                assert graph_rel == f"graphs/{record['image_id']}.json"
                graph = json.loads((out / graph_rel).read_text(encoding="utf-8"))
                assert graph["center_node"] == f"image:render:{record['image_id']}"
                node_ids = {n["node_id"] for n in graph["nodes"]}
                assert len(node_ids) == 4 and graph["center_node"] in node_ids
                assert all(e["source"] in node_ids and e["target"] in node_ids for e in graph["edges"])
        counts = meta[folder]
        assert counts["records"] == len(mine)
        assert counts["images"] == mine["image_path"].nunique()
        assert counts["graphs"] == (mine["image_id"].nunique() if stage == 2 else 0)
    # counts equal training_records: every record is exported once
    assert sum(m["records"] for m in meta.values()) == len(records)


def test_export_refuses_records_whose_image_file_is_missing(tmp_path):
    write_inputs(tmp_path)
    (tmp_path / "img" / "p1v0.png").unlink()
    result = materialize(tmp_path)
    assert not result.success
    assert failure_message(result).startswith(
        "ugdata_pipeline.errors.DatasetInputError: ms_swift_export of city 'karhula' (baseline stage 1): "
        f"1 image file(s) of the records do not exist under {tmp_path}, e.g. ['{tmp_path / 'img' / 'p1v0.png'}']; "
        "materialize image_files and the tables after it for this city again\n"
    )
    assert not list((tmp_path / CITY / "export").rglob("*.jsonl"))  # refused before any file is written


def test_export_refuses_a_stage2_record_without_a_subgraph(tmp_path):
    records = write_inputs(tmp_path)
    stray = records[records["stage"] == 2].head(1).assign(record_id="s2-ghost", image_id="ghost")
    write_inputs(tmp_path, pd.concat([records, stray], ignore_index=True))
    result = materialize(tmp_path)
    assert not result.success
    assert failure_message(result).startswith(
        "ugdata_pipeline.errors.DatasetInputError: ms_swift_export of city 'karhula' (ugdata stage 2): "
        "image 'ghost' has no subgraph in the subgraph tables; "
        "build subgraphs before stage 2\n"
    )
    # refused before any image, graph or JSONL file of the stage-2 export is written
    stage2 = tmp_path / CITY / "export" / "ugdata_stage2"
    assert not stage2.exists() or not list(stage2.rglob("*"))


def test_export_reads_the_stored_long_tables_and_writes_the_whole_table_bytes(tmp_path):
    """The asset reads subgraph_nodes / subgraph_edges from their table paths (deps, not loaded through the IO
    manager) a chunk at a time; every JSONL and graph file equals the export built from the whole tables."""
    records = write_inputs(tmp_path)
    assert materialize(tmp_path).success
    nodes, edges, subgraphs = (
        read_table(table_path(str(tmp_path), n, CITY)) for n in ("subgraph_nodes", "subgraph_edges", "subgraphs")
    )
    whole = subgraph_json_from_tables(nodes, edges, subgraphs)
    for (stage, variant), group in records.groupby(["stage", "variant"]):
        out = tmp_path / "whole" / f"{variant}_stage{stage}"
        export_ms_swift(group, root=tmp_path, out_dir=out, subgraph_json=whole if stage == 2 else None)
        written = files_of(tmp_path / CITY / "export" / f"{variant}_stage{stage}")
        assert written == files_of(out)
        assert sum(name.startswith("graphs/") for name in written) == (8 if stage == 2 else 0)
