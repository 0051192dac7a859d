"""Training records: positives, instructions, leakage, hard negatives within splits, ms-swift export round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.dataset import (
    INSTRUCTIONS,
    TRAINING_RECORD_COLUMNS,
    build_training_records,
    export_ms_swift,
    negatives_within_split,
    query_leaks,
    read_ms_swift,
    records_summary,
    validate_graph_json,
)
from ugdata_pipeline.errors import DatasetInputError, GraphJsonError, MsSwiftFormatError
from ugdata_pipeline.graph.geodesy import distance_m

LAT0, LON0 = 60.17, 24.94
STEP_DEG = 150.0 / (111_320.0 * np.cos(np.deg2rad(LAT0)))  # 150 m east per image
SPLIT_OF = ["train"] * 6 + ["val"] * 3 + ["test"] * 3 + ["excluded"]


def make_images(root: Path | None = None) -> pd.DataFrame:
    n = len(SPLIT_OF)
    images = pd.DataFrame(
        {
            "image_id": [f"im{i:02d}" for i in range(n)],
            "source": "render",
            "lon": [LON0 + i * STEP_DEG for i in range(n)],
            "lat": LAT0,
            "path": [f"tinytown/images/im{i:02d}.png" for i in range(n)],
            "split": SPLIT_OF,
        }
    )
    if root is not None:
        for rel in images["path"]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"\x89PNG" + rel.encode())
    return images


def make_captions(images: pd.DataFrame) -> pd.DataFrame:
    ids = images["image_id"].tolist()
    status = ["failed" if i == "im03" else "done" for i in ids]
    return pd.DataFrame(
        {
            "image_id": ids,
            "model": "template",
            "prompt_hash": "h",
            "image_caption": [
                None if s == "failed" else f"Caption of {i}: brick façades and trees."
                for i, s in zip(ids, status, strict=True)
            ],
            "summarization": [
                None if s == "failed" else f"Summary of {i}: on Alpha Street near Cafe Uno."
                for i, s in zip(ids, status, strict=True)
            ],
            "status": status,
            "attempts": 1,
            "error": "",
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
    )


def make_paths(images: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for i, image_id in enumerate(images["image_id"]):
        for k, (target, kind) in enumerate(
            (("Bank Two", "shortest"), ("Cafe Uno", "shortest"), ("Bank Two", "alternative"))
        ):
            metres = 100 + 10 * k + i  # image-specific text, so every text has one owner
            rows.append(
                {
                    "image_id": image_id,
                    "target_node": f"poi:n{k}",
                    "target_name": target,
                    "hops": 2 + k,
                    "path_type": kind,
                    "distance_m": float(metres),
                    "path_sentence": "Walk 8 m south to Alpha Street, then walk 150 m north to the destination.",
                    "target_text": f"You can reach {target} (bank) {metres} m north of the image.",
                }
            )
    return pd.DataFrame(rows)


def graph_for(image_id: str) -> dict:
    centre = f"image:render:{image_id}"
    return {
        "nodes": [
            {"node_id": centre, "coords": [LON0, LAT0], "node_text": "Name: mapillary image"},
            {
                "node_id": "street:alpha-street",
                "coords": [LON0, LAT0 + 0.0001],
                "node_text": "Name: Alpha Street, Category: residential",
            },
        ],
        "edges": [{"source": centre, "target": "street:alpha-street"}],
        "center_node": centre,
    }


def test_stage1_records_have_all_positive_kinds_splits_and_instructions():
    images = make_images()
    records = build_training_records(images, make_captions(images), make_paths(images), stage=1, seed=0)
    assert list(records.columns) == list(TRAINING_RECORD_COLUMNS)
    assert "im12" not in set(records["image_id"])  # excluded
    # a failed caption leaves the image with its path records only
    assert records.loc[records["image_id"] == "im03", "pair_type"].tolist() == ["path", "path"]
    assert set(records["split"]) == {"train", "val", "test"}
    per_image = records[records["image_id"] == "im00"]
    assert per_image["pair_type"].tolist() == ["caption", "summarization", "path", "path"]
    assert per_image["positive"].iloc[0] == "Caption of im00: brick façades and trees."
    paths = per_image[per_image["pair_type"] == "path"]["positive"].tolist()
    # shortest paths first; the answer, then the route with the destination named (not masked)
    assert paths[0].startswith("You can reach Bank Two (bank) 100 m north")
    assert paths[0].endswith("then walk 150 m north to Bank Two.") and "destination" not in paths[0]
    assert paths[1].startswith("You can reach Cafe Uno")
    for pair_type, instruction in zip(records["pair_type"], records["instruction"], strict=True):
        assert instruction in INSTRUCTIONS[1][pair_type]
    assert records["instruction"].nunique() >= 6  # varied across images
    assert (records["image_path"] == records["image_id"].map(images.set_index("image_id")["path"])).all()
    assert records["record_id"].is_unique and (records["stage"] == 1).all() and (records["variant"] == "ugdata").all()
    again = build_training_records(images, make_captions(images), make_paths(images), stage=1, seed=0)
    pd.testing.assert_frame_equal(records, again)
    summary = records_summary(records)
    assert summary["images"] == 12 and summary["by_pair_type"] == {"caption": 11, "path": 24, "summarization": 11}


def test_no_query_contains_its_target_and_a_planted_leak_is_caught():
    images = make_images()
    paths = make_paths(images)
    records = build_training_records(images, make_captions(images), paths, stage=1)
    assert query_leaks(records).passed
    for instruction, positive in zip(records["instruction"], records["positive"], strict=True):
        assert positive not in instruction
        assert not any(name in instruction for name in ("Bank Two", "Cafe Uno", "Alpha Street"))
    planted = records.copy()
    row = planted.index[planted["pair_type"] == "path"][0]
    planted.loc[row, "instruction"] = "How do you walk to Bank Two from here?"
    names = [("Bank Two" if i == row else None) for i in planted.index]
    leak = query_leaks(planted, names)
    assert not leak.passed and leak.examples == [planted.loc[row, "record_id"]]
    planted.loc[row, "instruction"] = f"Match this: {planted.loc[row, 'positive']}"
    assert not query_leaks(planted).passed  # the whole positive inside the query


def test_hard_negatives_are_nearby_same_split_and_never_cross_splits():
    images = make_images()
    records = build_training_records(images, make_captions(images), make_paths(images), stage=1, n_negatives=3)
    check = negatives_within_split(records)
    assert check.passed, check.examples
    location = images.set_index("image_id")
    owner = {}
    for image_id, text in zip(records["image_id"], records["positive"], strict=True):
        owner.setdefault(text, set()).add(image_id)
    assert sum(len(n) > 0 for n in records["hard_negatives"]) > len(records) / 2
    for image_id, split, pair_type, positive, negatives in zip(
        records["image_id"],
        records["split"],
        records["pair_type"],
        records["positive"],
        records["hard_negatives"],
        strict=True,
    ):
        assert len(negatives) <= 3 and positive not in negatives
        for text in negatives:
            sources = owner[text] - {image_id}
            assert sources, text
            for other in sources:
                assert location.loc[other, "split"] == split
                d = distance_m(
                    location.loc[image_id, "lat"],
                    location.loc[image_id, "lon"],
                    location.loc[other, "lat"],
                    location.loc[other, "lon"],
                )
                assert 200.0 <= d <= 800.0
        if pair_type == "caption":
            assert all(t.startswith("Caption of") for t in negatives)
    # test images im09..im11 are 150 m apart: only im09 <-> im11 (300 m) qualifies
    test_caps = records[(records["split"] == "test") & (records["pair_type"] == "caption")].set_index("image_id")
    assert test_caps.loc["im09", "hard_negatives"] == ["Caption of im11: brick façades and trees."]
    assert test_caps.loc["im10", "hard_negatives"] == []
    # a planted cross-split negative is caught
    planted = records.copy()
    planted.at[planted.index[0], "hard_negatives"] = ["Caption of im09: brick façades and trees."]
    assert not negatives_within_split(planted).passed
    none = build_training_records(images, make_captions(images), make_paths(images), stage=1, hard_negatives=False)
    assert all(n == [] for n in none["hard_negatives"])


def test_baseline_uses_generic_captions_only():
    images = make_images()
    captions = make_captions(images)
    records = build_training_records(images, captions, make_paths(images), stage=1, variant="baseline")
    assert set(records["pair_type"]) == {"generic"} and (records["variant"] == "baseline").all()
    assert set(records["positive"]) == set(captions["image_caption"].dropna()) - {
        "Caption of im12: brick façades and trees."
    }
    assert all(i in INSTRUCTIONS[1]["generic"] for i in records["instruction"])
    with pytest.raises(DatasetInputError, match="no stage 2"):
        build_training_records(images, captions, None, stage=2, variant="baseline")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage": 3}, "`stage` must be 1"),
        ({"stage": 1, "variant": "fancy"}, "`variant` must be one of"),
        ({"stage": 1, "neg_min_m": 800.0, "neg_max_m": 200.0}, "neg_min_m < neg_max_m"),
        ({"stage": 2}, "stage 2 needs `subgraphs`"),
    ],
)
def test_bad_options_are_rejected_before_work(kwargs, message):
    images = make_images()
    with pytest.raises(DatasetInputError, match=message):
        build_training_records(images, make_captions(images), make_paths(images), **kwargs)


def test_missing_columns_name_the_table():
    images = make_images().drop(columns=["split"])
    with pytest.raises(DatasetInputError, match=r"images is missing column\(s\) \['split'\]"):
        build_training_records(images, make_captions(images), None, stage=1)


#: The reference's stage-1 line (peers.md §0 "Data formats", ugdata-reference.md §7.3).
REFERENCE_STAGE1_LINE = (
    '{"messages":[{"role":"user","content":"<image> [instruction]"}], "positive_messages":[[{"role":"user", '
    '"content":"[spatial description]"}]], "images":["/abs/path.jpg"], "graphs":[], "pair_type":"stage1_image_only", '
    '"label":1}'
)


def shape(value: object) -> object:
    """The type skeleton of a JSON value: dict keys and nesting kept, leaves replaced by their type name."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def test_stage1_export_round_trip_and_format(tmp_path):
    root = tmp_path / "root"
    images = make_images(root)
    built = build_training_records(images, make_captions(images), make_paths(images), stage=1)
    built.to_parquet(tmp_path / "records.parquet")  # the canonical form; list columns come back as arrays
    records = pd.read_parquet(tmp_path / "records.parquet")
    assert [list(n) for n in records["hard_negatives"]] == built["hard_negatives"].tolist()
    export = export_ms_swift(records, root=root, out_dir=tmp_path / "export", link="copy")
    assert set(export.files) == {"train", "val", "test"} and export.n_records == len(records)
    assert export.n_images == 12 and export.n_graphs == 0
    first = json.loads(export.files["train"].read_text().splitlines()[0])
    reference = json.loads(REFERENCE_STAGE1_LINE)
    negatives = first.pop("negative_messages")  # ms-swift's field for hard negatives, beyond the reference
    assert shape(first) == shape(reference)
    assert shape(negatives) == [shape(reference["positive_messages"][0])]
    assert first["pair_type"] == reference["pair_type"] and first["label"] == 1 and first["graphs"] == []
    assert first["messages"][0]["content"].startswith("<image> ")
    assert first["images"] == ["images/tinytown/images/im00.png"]

    moved = tmp_path / "moved"
    shutil.move(tmp_path / "export", moved)  # relative paths: the folder can travel
    for split, path in export.files.items():
        back = read_ms_swift(moved / path.name)
        mine = records[records["split"] == split].reset_index(drop=True)
        assert back["instruction"].tolist() == mine["instruction"].tolist()
        assert back["positive"].tolist() == mine["positive"].tolist()
        assert back["hard_negatives"].tolist() == [list(n) for n in mine["hard_negatives"]]
        assert back["image_path"].tolist() == ["images/" + p for p in mine["image_path"]]
        assert (back["stage"] == 1).all() and back["graph_path"].isna().all()
        for rel in back["image_path"]:
            assert (moved / rel).read_bytes() == (root / rel.removeprefix("images/")).read_bytes()


def test_stage2_export_writes_graph_json_and_round_trips(tmp_path):
    root = tmp_path / "root"
    images = make_images(root)
    with_graph = images["image_id"].iloc[:8].tolist()
    subgraphs = pd.DataFrame({"image_id": with_graph, "center_node": [f"image:render:{i}" for i in with_graph]})
    records = build_training_records(images, make_captions(images), make_paths(images), stage=2, subgraphs=subgraphs)
    assert set(records["image_id"]) <= set(with_graph)
    assert all(i in INSTRUCTIONS[2][t] for i, t in zip(records["instruction"], records["pair_type"], strict=True))
    with pytest.raises(DatasetInputError, match="subgraph_json"):
        export_ms_swift(records, root=root, out_dir=tmp_path / "export")
    export = export_ms_swift(records, root=root, out_dir=tmp_path / "export", subgraph_json=graph_for)
    assert export.n_graphs == records["image_id"].nunique()
    for split, path in export.files.items():
        back = read_ms_swift(path)
        mine = records[records["split"] == split].reset_index(drop=True)
        assert (back["pair_type"] == "stage2_image_graph").all() and (back["stage"] == 2).all()
        assert back["positive"].tolist() == mine["positive"].tolist()
        line = json.loads(path.read_text().splitlines()[0])
        assert line["messages"][0]["content"].startswith("<graph><image> ")
        graph = json.loads((path.parent / line["graphs"][0]).read_text())
        validate_graph_json(graph)
        assert set(graph) == {"nodes", "edges", "center_node"}
        assert set(graph["nodes"][0]) == {"node_id", "coords", "node_text"}
        assert set(graph["edges"][0]) == {"source", "target"}


def test_reader_rejects_lines_that_break_the_format(tmp_path):
    good = {
        "messages": [{"role": "user", "content": "<image> Describe this image."}],
        "positive_messages": [[{"role": "user", "content": "A street."}]],
        "images": ["images/a.png"],
        "graphs": [],
        "pair_type": "stage1_image_only",
        "label": 1,
    }
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    cases = {
        "missing key": ({k: v for k, v in good.items() if k != "label"}, "missing key"),
        "absolute": ({**good, "images": [str(tmp_path / "images" / "a.png")]}, "must be relative"),
        "no tag": ({**good, "messages": [{"role": "user", "content": "Describe."}]}, "must start with"),
        "graph in stage 1": ({**good, "graphs": ["graphs/a.json"]}, "graph"),
        "missing file": ({**good, "images": ["images/b.png"]}, "does not exist"),
    }
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(good) + "\n")
    assert len(read_ms_swift(path)) == 1
    for line, message in cases.values():
        path.write_text(json.dumps(line) + "\n")
        with pytest.raises(MsSwiftFormatError, match=message):
            read_ms_swift(path)
    with pytest.raises(GraphJsonError, match="not one of the graph's nodes"):  # the one validator, from context
        validate_graph_json({**graph_for("a"), "center_node": "nope"})


def subgraph_tables(image_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    nodes, edges = [], []
    for image_id in image_ids:
        centre = f"image:render:{image_id}"
        nodes += [
            {
                "image_id": image_id,
                "node_id": centre,
                "kind": "image",
                "name": None,
                "category": None,
                "node_text": "Name: mapillary image",
                "lon": LON0,
                "lat": LAT0,
                "dx_m": 0.0,
                "dy_m": 0.0,
                "distance_m": 0.0,
                "rank": 0,
            },
            {
                "image_id": image_id,
                "node_id": "street:alpha-street",
                "kind": "street",
                "name": "Alpha Street",
                "category": "residential",
                "node_text": "Name: Alpha Street",
                "lon": LON0,
                "lat": LAT0 + 0.0001,
                "dx_m": 0.0,
                "dy_m": 11.1,
                "distance_m": 11.1,
                "rank": 1,
            },
        ]
        edges.append(
            {
                "image_id": image_id,
                "src": centre,
                "dst": "street:alpha-street",
                "kind": "image_street",
                "distance_m": 11.1,
                "bearing_deg": 0.0,
                "street_name": "Alpha Street",
            }
        )
    subgraphs = pd.DataFrame(
        {
            "image_id": image_ids,
            "center_node": [f"image:render:{i}" for i in image_ids],
            "n_nodes": 2,
            "n_edges": 1,
            "truncated": False,
        }
    )
    return pd.DataFrame(nodes), pd.DataFrame(edges), subgraphs


def test_stage2_export_with_the_shared_graph_json_writer(tmp_path):
    from ugdata_pipeline.dataset import subgraph_json_from_tables

    root = tmp_path / "root"
    images = make_images(root)
    with_graph = ["im00", "im01", "im09"]
    nodes, edges, subgraphs = subgraph_tables(with_graph)
    records = build_training_records(images, make_captions(images), make_paths(images), stage=2, subgraphs=subgraphs)
    render = subgraph_json_from_tables(nodes, edges, subgraphs)
    export = export_ms_swift(records, root=root, out_dir=tmp_path / "export", subgraph_json=render)
    assert export.n_graphs == 3
    graph = json.loads((tmp_path / "export" / "graphs" / "im09.json").read_text())
    validate_graph_json(graph)
    assert graph["center_node"] == "image:render:im09"
    assert [n["node_id"] for n in graph["nodes"]] == ["image:render:im09", "street:alpha-street"]
    assert graph["nodes"][1]["coords"] == [LON0, LAT0 + 0.0001]
    assert [(e["source"], e["target"]) for e in graph["edges"]] == [("image:render:im09", "street:alpha-street")]
    back = read_ms_swift(export.files["test"])
    assert back["graph_path"].tolist() == ["graphs/im09.json"] * len(back)
    with pytest.raises(DatasetInputError, match="has no subgraph"):
        render("im05")
