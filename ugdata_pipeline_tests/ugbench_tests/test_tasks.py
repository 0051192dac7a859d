"""Task builders on two grid cities: exchangeable groups, one correct answer, bounds, no leakage, isolation, seeds."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.context.describe import describe_subgraph
from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.graph.geodesy import distance_bearing, distance_m
from ugdata_pipeline.graph.text import COMPASS_WORDS, compass_word, distance_phrase
from ugdata_pipeline.ugbench import (
    TASKS,
    BenchConfig,
    CityInputs,
    build_tasks,
    export_jsonl,
    load_benchmark,
    save_benchmark,
    task_summary,
    validate_tasks,
)
from ugdata_pipeline.ugbench._records import leakage_reason, limit_groups, normalize_text

GROUPED = ("geolocation", "retrieval", "grounding")
KEYS = (
    "geolocation/geolocation",
    "retrieval/retrieval",
    "grounding/nearest_poi",
    "grounding/distance_direction",
    "grounding/which_street",
    "grounding/which_crossing",
)


def replace(inputs: CityInputs, **changes: object) -> CityInputs:
    return CityInputs(**{**{f: getattr(inputs, f) for f in CityInputs.__slots__}, **changes})


def test_every_task_type_city_and_split_is_built_in_whole_groups(bench):
    summary = task_summary(bench.tasks)
    for city, split in (("gridtown", "test"), ("farville", "held_out")):
        for key in KEYS:  # the cap of 40 keeps two whole groups of 20
            assert summary.get(f"{key}/{city}/{split}") == 40, (key, city, summary)
            assert bench.stats.records[f"{key}/{city}"] == 40
        # perception: 40 // (4 dimensions x 3 levels) = 3 records per dimension and level
        assert summary[f"perception/perception/{city}/{split}"] == 36
    assert set(bench.tasks["task"]) == set(TASKS)
    assert list(bench.tasks["record_id"]) == sorted(bench.tasks["record_id"])


def test_exactly_one_correct_candidate_per_record(bench):
    for row in bench.tasks.itertuples(index=False):
        candidates = list(row.candidates)
        assert len(candidates) == (3 if row.task == "perception" else 20), row.record_id
        assert candidates[row.correct_idx] == row.ground_truth
        normalized = [normalize_text(c) for c in candidates]
        assert normalized.count(normalize_text(row.ground_truth)) == 1, row.record_id
        assert len(set(normalized)) == len(candidates), row.record_id


def test_groups_share_one_candidate_set_with_each_member_correct_once(bench):
    grouped = bench.tasks[bench.tasks["task"].isin(GROUPED)]
    assert grouped["group_id"].notna().all()
    assert bench.tasks.loc[bench.tasks["task"] == "perception", "group_id"].isna().all()
    for group_id, group in grouped.groupby("group_id"):
        assert len(group) == 20, group_id
        assert group[["task", "query_type", "city"]].nunique().max() == 1
        assert group["image_id"].nunique() == 20
        candidate_sets = {frozenset(c) for c in group["candidates"]}
        assert len(candidate_sets) == 1, group_id
        assert set(group["ground_truth"]) == next(iter(candidate_sets))  # each candidate is correct exactly once
        # the correct candidate's position is shuffled, not fixed
        assert group["correct_idx"].nunique() > 1
        lat, lon = group["lat"].to_numpy(), group["lon"].to_numpy()
        for i, j in itertools.combinations(range(20), 2):
            d = float(distance_m(lat[i], lon[i], lat[j], lon[j]))
            lower = 100.0 if group["task"].iloc[0] != "grounding" else 0.0
            assert lower <= d <= 2000.0 * 1.01, (group_id, d)
    # a geolocation group and its retrieval twin hold the same images
    geo = grouped[grouped["task"] == "geolocation"].groupby("group_id")["image_id"].agg(frozenset)
    ret = grouped[grouped["task"] == "retrieval"].groupby("group_id")["image_id"].agg(frozenset)
    assert sorted(geo.tolist(), key=sorted) == sorted(ret.tolist(), key=sorted)


def test_fusion_graphs_are_the_group_context_for_location_tasks_and_own_otherwise(bench):
    tasks = bench.tasks
    location = tasks["task"].isin(["geolocation", "retrieval"])
    assert (tasks.loc[location, "fusion_graph"] == "group").all()
    assert (tasks.loc[~location, "fusion_graph"] == "own").all()
    assert tasks["cluster"].notna().all() and tasks["cluster"].nunique() > 10
    image_queries = tasks[tasks["query_kind"] == "image"]
    assert (image_queries["query_graph_id"] == image_queries["image_id"]).all()
    assert tasks.loc[tasks["task"] == "retrieval", "query_graph_id"].isna().all()
    # the stage-2 wording is used in fusion mode for the location tasks; grounding asks its question in both
    geo = tasks[tasks["task"] == "geolocation"]
    assert (geo["fusion_instruction"] != geo["instruction"]).all()
    grounding = tasks[tasks["task"] == "grounding"]
    assert (grounding["fusion_instruction"] == grounding["query_text"]).all()


def test_location_candidates_are_renderer_descriptions_without_the_heading_within_the_band(bench):
    images = pd.concat([c.images for c in bench.cities]).set_index("image_id", drop=False)
    sub_nodes, sub_edges = bench.subgraph_nodes, bench.subgraph_edges
    for row in bench.tasks[bench.tasks["task"].isin(["geolocation", "retrieval"])].itertuples(index=False):
        ids = list(row.candidate_graph_ids)
        assert ids[row.correct_idx] == row.image_id
        lat, lon = images.loc[ids, "lat"].to_numpy(float), images.loc[ids, "lon"].to_numpy(float)
        dist = distance_m(row.lat, row.lon, lat, lon)
        np.testing.assert_allclose(dist, row.candidate_distance_m, atol=1e-6)
        others = np.delete(dist, row.correct_idx)
        assert others.min() >= 100.0 and others.max() <= 2000.0, row.record_id
        if row.task == "retrieval":
            assert list(row.candidates) == images.loc[ids, "path"].tolist()
            assert row.image_id not in row.query_text and row.ground_truth not in row.query_text
        else:
            assert not any("The camera faces" in c for c in row.candidates), row.record_id
    # every geolocation candidate is the renderer's description of its source image (spot-check 3 records)
    for row in bench.tasks[bench.tasks["task"] == "geolocation"].head(3).itertuples(index=False):
        for k in (0, row.correct_idx, len(row.candidates) - 1):
            image_id = row.candidate_graph_ids[k]
            nodes = sub_nodes[sub_nodes["image_id"] == image_id].sort_values("rank")
            edges = sub_edges[sub_edges["image_id"] == image_id]
            text = describe_subgraph(
                nodes,
                edges,
                image_row=images.loc[image_id].drop("compass_angle"),
                max_places=10,
                near_m=200.0,
                max_chars=1500,
            )
            assert text == row.candidates[k]


def test_grounding_answers_match_the_subgraph_and_distance_answers_differ_clearly(bench):
    for city in bench.cities:
        nodes = city.inputs.nodes.set_index("node_id")
        sub = city.subgraph_nodes
        images = city.images.set_index("image_id")
        records = bench.tasks[(bench.tasks["task"] == "grounding") & (bench.tasks["city"] == city.inputs.city)]
        assert set(records["query_type"]) == {"nearest_poi", "distance_direction", "which_street", "which_crossing"}
        for row in records.itertuples(index=False):
            own = sub[(sub["image_id"] == row.image_id) & (sub["rank"] > 0) & sub["name"].notna()]
            if row.query_type == "which_street":
                assert row.ground_truth == nodes.at[images.at[row.image_id, "street_node"], "name"]
            elif row.query_type == "which_crossing":
                crossings = own[own["kind"] == "crossing"].sort_values("distance_m")
                assert row.ground_truth == crossings["name"].iloc[0]
                assert crossings["distance_m"].iloc[1] - crossings["distance_m"].iloc[0] >= 10.0
            elif row.query_type == "nearest_poi":
                category = json.loads(row.meta)["category"]
                assert row.record_id.endswith(f"/{category}") and row.group_id.endswith(f"/{category}")
                same = own[own["kind"].isin(["poi", "aoi"]) & (own["category"] == category)].sort_values("distance_m")
                assert row.ground_truth == same["name"].iloc[0]
                assert same["distance_m"].iloc[1] - same["distance_m"].iloc[0] >= 10.0
            else:
                target = nodes.loc[json.loads(row.meta)["target_node"]]
                assert target["name"] in row.query_text
                d, b = distance_bearing(row.lat, row.lon, float(target["lat"]), float(target["lon"]))
                assert 20.0 <= float(d) <= 700.0
                assert row.ground_truth == f"{distance_phrase(float(d))} {compass_word(float(b))}"
    # answers within a distance-direction group: compass words >= 45 degrees apart or distances >= 1.5 x apart
    dd = bench.tasks[bench.tasks["query_type"] == "distance_direction"]
    for _, group in dd.groupby("group_id"):
        truths = [t.split(" ") for t in group["ground_truth"]]
        metres = [float(v) * (1000 if unit == "km" else 1) for v, unit, _ in truths]
        words = [COMPASS_WORDS.index(w) for _, _, w in truths]
        for i, j in itertools.combinations(range(len(truths)), 2):
            sectors = abs(words[i] - words[j]) % 8
            ratio = max(metres[i], metres[j]) / max(min(metres[i], metres[j]), 1.0)
            # the rule is applied to exact distances; rounding in the phrase can move a ratio by a few percent
            assert min(sectors, 8 - sectors) >= 1 or ratio >= 1.3, (group["group_id"].iloc[0], truths[i], truths[j])


def test_no_candidate_is_recoverable_from_the_query(bench):
    for row in bench.tasks.itertuples(index=False):
        query = normalize_text(f"{row.query_text} {row.instruction}")
        if row.candidate_kind == "text":
            assert leakage_reason([row.query_text, row.instruction], list(row.candidates), row.correct_idx) is None
            for candidate in row.candidates:
                assert f" {normalize_text(candidate)} " not in f" {query} ", (row.record_id, candidate)
        else:  # retrieval: the description names neither the image nor any candidate file
            for candidate, image_id in zip(row.candidates, row.candidate_graph_ids, strict=True):
                assert candidate not in row.query_text and image_id not in row.query_text


def test_leakage_rule_catches_names_in_the_question():
    assert leakage_reason(["Which is the nearest cafe?"], ["Blue Cafe", "Red Mill", "Old Stone"], 0) == (
        "the query holds ['cafe'], found only in the correct candidate"
    )
    assert leakage_reason(["How far is Red Mill?"], ["120 m north", "Red Mill", "40 m east"], 0) == (
        "candidate 1 ('Red Mill') appears in the query"
    )
    assert leakage_reason(["Which is the nearest shop?"], ["Blue Lantern", "Red Mill", "Old Stone"], 0) is None
    # a word every candidate shares tells nothing
    assert leakage_reason(["Which street?"], ["Elm Street", "Oak Street"], 0) is None


def test_held_out_city_records_come_only_from_that_city(bench):
    by_city = bench.images_by_city()
    train_test = set(bench.train.images.loc[bench.train.images["split"] == "test", "image_id"])
    assert train_test and len(train_test) < len(bench.train.images)  # the training city has train images too
    for row in bench.tasks.itertuples(index=False):
        assert row.image_id in by_city[row.city]
        assert set(row.candidate_graph_ids) <= by_city[row.city]
        if row.city == "farville":
            assert row.split == "held_out"
        else:
            assert row.split == "test"
            assert row.image_id in train_test
            assert set(row.candidate_graph_ids) <= train_test


def test_validator_finds_no_problem_and_flags_broken_records(bench):
    tasks = bench.tasks
    assert validate_tasks(tasks, config=bench.config, images_by_city=bench.images_by_city()) == []
    streets = tasks[tasks["query_type"] == "which_street"]
    rows = streets[streets["group_id"] == streets["group_id"].iloc[0]].copy()
    first, second, third, fourth = rows.index[:4]
    rows.at[first, "correct_idx"] = (rows.at[first, "correct_idx"] + 1) % 20
    rows.at[second, "candidates"] = list(rows.at[second, "candidates"])[:5]
    rows.at[third, "query_text"] = f"Is this {rows.at[third, 'ground_truth']}?"
    elsewhere = "gridtown" if rows.at[fourth, "city"] == "farville" else "farville"
    rows.at[fourth, "city"] = elsewhere
    problems = validate_tasks(rows, config=bench.config, images_by_city=bench.images_by_city())
    assert any(p.startswith(f"{rows.at[first, 'record_id']}: correct_idx") for p in problems), problems
    assert f"{rows.at[second, 'record_id']}: 5 candidates, expected 20" in problems
    assert any(p.startswith(f"{rows.at[third, 'record_id']}: leakage") for p in problems)
    assert any(
        p.startswith(f"{rows.at[fourth, 'record_id']}: image(s)") and f"not from city {elsewhere!r}" in p
        for p in problems
    )
    assert any(p.startswith(f"group {rows['group_id'].iloc[0]}: its records do not share") for p in problems)
    geo = tasks[tasks["task"] == "geolocation"].head(1).copy()
    distances = list(geo["candidate_distance_m"].iloc[0])
    distances[(geo["correct_idx"].iloc[0] + 1) % 20] = 50.0
    geo.at[geo.index[0], "candidate_distance_m"] = distances
    assert any("a distractor lies outside [100.0, 2000.0] m" in p for p in validate_tasks(geo, config=bench.config))
    assert validate_tasks(tasks.drop(columns="group_id")) == ["tasks is missing column(s) ['group_id']"]


def test_validator_flags_a_group_whose_candidate_set_was_tampered_with(bench):
    geo = bench.tasks[bench.tasks["task"] == "geolocation"]
    group_id = geo["group_id"].iloc[0]
    group = geo[geo["group_id"] == group_id].copy()
    other = geo[geo["group_id"] != group_id].iloc[0]
    # swap one distractor of one record for a description from another group: each record is still valid alone
    row = group.index[0]
    candidates = list(group.at[row, "candidates"])
    swap = (group.at[row, "correct_idx"] + 1) % 20
    candidates[swap] = other["ground_truth"]
    group.at[row, "candidates"] = candidates
    problems = validate_tasks(group, config=bench.config)
    assert problems == [
        f"group {group_id}: its records do not share one candidate set with each member correct once "
        "(candidate-only scorers would leave chance)"
    ]
    # a group cut short (one record dropped) also leaves a candidate never correct
    assert validate_tasks(geo[geo["group_id"] == group_id].iloc[1:], config=bench.config) == problems


def test_limit_groups_keeps_whole_groups_under_a_seed():
    groups = [[5 * g + k for k in range(5)] for g in range(6)]
    assert limit_groups(groups, None, 0) == groups
    assert limit_groups(groups, 100, 0) == groups
    kept = limit_groups(groups, 12, 0, "x")
    assert len(kept) == 2 and all(g in groups for g in kept)
    assert kept == limit_groups(groups, 12, 0, "x")
    assert kept == sorted(kept)  # in input order
    assert len(limit_groups(groups, 3, 0, "x")) == 1  # at least one whole group


def test_build_is_seeded_and_independent_of_row_order_and_other_tasks(bench):
    # same seed, other tasks left out, images in another order -> the same records
    expected = bench.tasks[bench.tasks["task"].isin(["perception", "grounding"])].reset_index(drop=True)
    shuffled = replace(bench.train.inputs, images=bench.train.inputs.images.sample(frac=1.0, random_state=1))
    config = BenchConfig(
        seed=7, tasks=("perception", "grounding"), max_records_per_task=40, min_distractor_angle_deg=45.0
    )
    again, _ = build_tasks([shuffled, bench.held_out.inputs], config=config)
    pd.testing.assert_frame_equal(again, expected)
    other, _ = build_tasks(
        [bench.train.inputs], config=BenchConfig(**{**{f: getattr(config, f) for f in config.__slots__}, "seed": 8})
    )
    mine = expected[expected["city"] == "gridtown"].reset_index(drop=True)
    assert len(other) == len(mine)
    assert set(other["record_id"]) != set(mine["record_id"]) or not other["correct_idx"].equals(mine["correct_idx"])
    assert validate_tasks(other, config=config) == []


def test_bad_inputs_are_rejected_before_work(bench):
    inputs = bench.train.inputs
    broken = replace(inputs, images=inputs.images.drop(columns="street_node"))
    with pytest.raises(BenchmarkInputError, match=r"images of 'gridtown' is missing column\(s\) \['street_node'\]"):
        build_tasks([broken], config=BenchConfig(tasks=("perception",)))
    with pytest.raises(BenchmarkInputError, match="held-out city 'gridtown' has images in split"):
        build_tasks([replace(inputs, role="held_out")], config=BenchConfig(tasks=("perception",)))
    with pytest.raises(BenchmarkInputError, match="role for 'gridtown' must be 'train' or 'held_out'"):
        build_tasks([replace(inputs, role="val")], config=BenchConfig(tasks=("perception",)))
    with pytest.raises(BenchmarkInputError, match="each city may appear once"):
        build_tasks([inputs, inputs], config=BenchConfig(tasks=("perception",)))
    with pytest.raises(BenchmarkInputError, match="n_distractors must be >= 19"):
        BenchConfig(n_distractors=5)
    with pytest.raises(BenchmarkInputError, match="unknown task"):
        BenchConfig(tasks=("geolocation", "vibes"))
    with pytest.raises(BenchmarkInputError, match="unknown type"):
        BenchConfig(grounding_types=("which_river",))
    with pytest.raises(BenchmarkInputError, match="min_distractor_m < max_distractor_m"):
        BenchConfig(min_distractor_m=3000.0)
    with pytest.raises(BenchmarkInputError, match="max_records_per_task must be None or >= 1"):
        BenchConfig(max_records_per_task=0)


def test_export_jsonl_writes_the_reference_form(bench, tmp_path):
    n_image = export_jsonl(bench.tasks, tmp_path / "image.jsonl", mode="image")
    n_fusion = export_jsonl(bench.tasks, tmp_path / "fusion.jsonl", mode="fusion")
    n_text = export_jsonl(bench.tasks, tmp_path / "text.jsonl", mode="text")
    counts = Counter(bench.tasks["task"])
    assert n_image == len(bench.tasks) - counts["retrieval"]
    assert n_fusion == len(bench.tasks)
    assert n_text == counts["retrieval"]
    lines = [json.loads(line) for line in (tmp_path / "fusion.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == n_fusion
    for obj in lines:
        assert obj["candidates"][obj["ground_truth_idx"]] == obj["ground_truth"]
        assert obj["messages"][0]["role"] == "user"
        if obj["task"] == "retrieval":
            assert len(obj["candidate_graphs"]) == len(obj["candidate_images"]) == len(obj["candidates"])
            assert "<image>" not in obj["messages"][0]["content"]
        else:
            assert obj["messages"][0]["content"].startswith("<graph><image> ")
            assert obj["graphs"].startswith("benchmark_graphs/")
    image_lines = [json.loads(line) for line in (tmp_path / "image.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all("graphs" not in o and o["messages"][0]["content"].startswith("<image> ") for o in image_lines)
    first = bench.tasks[bench.tasks["task"] != "retrieval"].iloc[0]
    assert image_lines[0]["record_id"] == first["record_id"]
    assert image_lines[0]["image_coords"] == [first["lon"], first["lat"]]
    with pytest.raises(BenchmarkInputError, match="mode must be one of"):
        export_jsonl(bench.tasks, tmp_path / "x.jsonl", mode="audio")


def test_save_and_load_round_trip(bench, tmp_path):
    folder = save_benchmark(
        bench.tasks, tmp_path / "bench", subgraph_nodes=bench.subgraph_nodes, subgraph_edges=bench.subgraph_edges
    )
    tasks, nodes, edges = load_benchmark(folder)
    pd.testing.assert_frame_equal(tasks, bench.tasks)
    referenced = set(bench.tasks["image_id"]) | {i for ids in bench.tasks["candidate_graph_ids"] for i in ids}
    assert set(nodes["image_id"]) == referenced  # every graph a record refers to, nothing more
    assert set(edges["image_id"]) <= referenced and len(edges) > 0
    bare, no_nodes, no_edges = load_benchmark(folder / "tasks.parquet")
    pd.testing.assert_frame_equal(bare, bench.tasks)
    assert no_nodes is not None and no_edges is not None  # read from the file's folder
    with pytest.raises(FileNotFoundError, match="no UGBench tasks"):
        load_benchmark(tmp_path / "missing")
