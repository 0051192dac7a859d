"""Task builders on two grid cities: one correct candidate, distractor bounds, no leakage, city isolation, seeding."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.context.describe import describe_subgraph
from ugdata_pipeline.graph.geodesy import distance_bearing, distance_m
from ugdata_pipeline.graph.text import compass_word, distance_phrase
from ugdata_pipeline.ugbench import (
    TASKS,
    BenchConfig,
    BenchmarkInputError,
    CityInputs,
    build_tasks,
    export_jsonl,
    load_benchmark,
    perception_measures,
    save_benchmark,
    task_summary,
    validate_tasks,
)
from ugdata_pipeline.ugbench._records import leakage_reason, normalize_text
from ugdata_pipeline.ugbench.grounding import COMPASS_WORDS
from ugdata_pipeline.ugbench.metrics import per_record_metrics, rank_counts
from ugdata_pipeline.ugbench.perception import DIMENSIONS, STATEMENTS


def images_by_city(bench) -> dict[str, set[str]]:
    return {c.inputs.city: set(c.images["image_id"].astype(str)) for c in (bench.train, bench.held_out)}


def test_every_task_type_city_and_split_is_built(bench):
    summary = task_summary(bench.tasks)
    for city, split in (("gridtown", "test"), ("farville", "held_out")):
        for key in ("geolocation/geolocation", "retrieval/retrieval", "perception/perception",
                    "grounding/nearest_poi", "grounding/distance_direction", "grounding/which_street",
                    "grounding/which_crossing"):  # fmt: skip
            assert summary.get(f"{key}/{city}/{split}", 0) >= 10, (key, city, summary)
    assert set(bench.tasks["task"]) == set(TASKS)


def test_validator_finds_no_problem_and_flags_broken_records(bench):
    assert validate_tasks(bench.tasks, config=bench.config, images_by_city=images_by_city(bench)) == []
    broken = bench.tasks.head(3).copy()
    broken.loc[broken.index[0], "correct_idx"] = (broken["correct_idx"].iloc[0] + 1) % 20
    broken.at[broken.index[1], "candidates"] = list(broken["candidates"].iloc[1])[:5]
    problems = validate_tasks(broken, config=bench.config)
    assert any("does not point at ground_truth" in p for p in problems)
    assert any("fewer than 20" in p for p in problems)


def test_exactly_one_correct_candidate_per_record(bench):
    for row in bench.tasks.itertuples(index=False):
        candidates = list(row.candidates)
        assert len(candidates) >= 20
        assert candidates[row.correct_idx] == row.ground_truth
        normalized = [normalize_text(c) for c in candidates]
        assert normalized.count(normalize_text(row.ground_truth)) == 1, row.record_id
        assert len(set(normalized)) == len(candidates), row.record_id


def test_location_candidates_come_from_the_same_renderer_and_distance_band(bench):
    describe = describe_subgraph
    images = pd.concat([bench.train.images, bench.held_out.images]).set_index("image_id")
    sub_nodes, sub_edges = bench.subgraph_nodes, bench.subgraph_edges
    for row in bench.tasks[bench.tasks["task"].isin(["geolocation", "retrieval"])].itertuples(index=False):
        ids = list(row.candidate_graph_ids)
        assert ids[row.correct_idx] == row.image_id
        lat = images.loc[ids, "lat"].to_numpy(dtype=float)
        lon = images.loc[ids, "lon"].to_numpy(dtype=float)
        dist = distance_m(row.lat, row.lon, lat, lon)
        np.testing.assert_allclose(dist, row.candidate_distance_m, atol=1e-6)
        others = np.delete(dist, row.correct_idx)
        assert others.min() >= 100.0 and others.max() <= 2000.0, row.record_id
        if row.task == "retrieval":
            assert list(row.candidates) == images.loc[ids, "path"].tolist()
            assert row.image_id not in row.query_text and row.ground_truth not in row.query_text
    # every geolocation candidate is the renderer's description of its source image (spot-check 3 records)
    rows = pd.concat([bench.train.images, bench.held_out.images]).set_index("image_id", drop=False)
    for row in bench.tasks[bench.tasks["task"] == "geolocation"].head(3).itertuples(index=False):
        for k in (0, row.correct_idx, len(row.candidates) - 1):
            image_id = row.candidate_graph_ids[k]
            nodes = sub_nodes[sub_nodes["image_id"] == image_id].sort_values("rank")
            edges = sub_edges[sub_edges["image_id"] == image_id]
            text = describe(nodes, edges, image_row=rows.loc[image_id], max_places=10, near_m=200.0, max_chars=1500)
            assert text == row.candidates[k]


def test_perception_correct_statement_is_the_measured_level_and_the_only_true_one(bench):
    statement_of = {s: key for key, phrasings in STATEMENTS.items() for s in phrasings}
    for city in (bench.train, bench.held_out):
        measures = perception_measures(city.inputs).set_index("image_id")
        records = bench.tasks[(bench.tasks["task"] == "perception") & (bench.tasks["city"] == city.inputs.city)]
        assert len(records) > 0
        for row in records.itertuples(index=False):
            meta = json.loads(row.meta)
            m = measures.loc[row.image_id]
            assert m[f"{meta['dimension']}_level"] == meta["level"]
            assert statement_of[row.ground_truth] == (meta["dimension"], meta["level"])
            for k, candidate in enumerate(row.candidates):
                dim, level = statement_of[candidate]
                if k != row.correct_idx:
                    assert level != m[f"{dim}_level"], (row.record_id, candidate)
        # terciles per city: each level holds about a third of the measured images
        for dim in DIMENSIONS:
            shares = measures[f"{dim}_level"].value_counts(normalize=True)
            assert shares.min() > 0.2, (city.inputs.city, dim, shares.to_dict())


def test_grounding_answers_match_the_subgraph(bench):
    for city in (bench.train, bench.held_out):
        nodes = city.inputs.nodes.set_index("node_id")
        sub = city.subgraph_nodes
        images = city.images.set_index("image_id")
        records = bench.tasks[(bench.tasks["task"] == "grounding") & (bench.tasks["city"] == city.inputs.city)]
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
                same = own[own["kind"].isin(["poi", "aoi"]) & (own["category"] == category)].sort_values("distance_m")
                assert row.ground_truth == same["name"].iloc[0]
                farther = same.iloc[1:]
                in_candidates = farther[farther["name"].isin(set(row.candidates))]
                assert (in_candidates["distance_m"] >= same["distance_m"].iloc[0] + 10.0).all()
            else:
                target = nodes.loc[json.loads(row.meta)["target_node"]]
                assert target["name"] in row.query_text
                d, b = distance_bearing(row.lat, row.lon, float(target["lat"]), float(target["lon"]))
                assert row.ground_truth == f"{distance_phrase(float(d))} {compass_word(float(b))}"
                for k, candidate in enumerate(row.candidates):
                    if k == row.correct_idx:
                        continue
                    value, unit, word = candidate.split(" ")
                    metres = float(value) * (1000 if unit == "km" else 1)
                    ratio = max(metres, 1) / max(float(d), 1)
                    sectors = abs(COMPASS_WORDS.index(word) - COMPASS_WORDS.index(compass_word(float(b)))) % 8
                    clearly_wrong = ratio >= 1.3 or ratio <= 1 / 1.3 or min(sectors, 8 - sectors) >= 2
                    assert clearly_wrong, (row.record_id, candidate)


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
    assert leakage_reason(["Which is the nearest cafe?"], ["Blue Cafe", "Red Mill", "Old Stone"], 0) is not None
    assert leakage_reason(["How far is Red Mill?"], ["120 m north", "Red Mill", "40 m east"], 0) is not None
    assert leakage_reason(["Which is the nearest shop?"], ["Blue Lantern", "Red Mill", "Old Stone"], 0) is None


def test_distractors_are_not_separable_by_length(bench):
    text = bench.tasks[bench.tasks["candidate_kind"] == "text"]
    for key, group in text.groupby(["task", "query_type"]):
        width = max(len(c) for c in group["candidates"])
        for sign in (1.0, -1.0):  # "pick the longest" and "pick the shortest"
            scores = np.full((len(group), width), 0.0)
            valid = np.zeros((len(group), width), dtype=bool)
            for i, candidates in enumerate(group["candidates"]):
                scores[i, : len(candidates)] = [sign * len(c) for c in candidates]
                valid[i, : len(candidates)] = True
            m = per_record_metrics(rank_counts(scores, group["correct_idx"].to_numpy(), valid=valid))
            assert m["hit@1"].mean() <= 0.15, (key, sign, m["hit@1"].mean())  # chance is 0.05
            assert m["hit@5"].mean() <= 0.45, (key, sign, m["hit@5"].mean())  # chance is 0.25


def test_held_out_city_records_come_only_from_that_city(bench):
    by_city = images_by_city(bench)
    train_test = set(bench.train.images.loc[bench.train.images["split"] == "test", "image_id"])
    for row in bench.tasks.itertuples(index=False):
        assert row.image_id in by_city[row.city]
        if row.candidate_kind == "image" or row.task == "geolocation":
            assert set(row.candidate_graph_ids) <= by_city[row.city]
        if row.city == "farville":
            assert row.split == "held_out"
        else:
            assert row.split == "test"
            assert row.image_id in train_test


def test_build_is_seeded_and_independent_of_other_tasks(bench):
    # same seed, other tasks left out, images in another order -> the same records
    expected = bench.tasks[bench.tasks["task"].isin(["perception", "grounding"])].reset_index(drop=True)
    shuffled = CityInputs(**{**{f: getattr(bench.train.inputs, f) for f in CityInputs.__slots__},
                             "images": bench.train.inputs.images.sample(frac=1.0, random_state=1)})  # fmt: skip
    config = BenchConfig(seed=7, tasks=("perception", "grounding"))
    again, _ = build_tasks([shuffled, bench.held_out.inputs], config=config)
    pd.testing.assert_frame_equal(again, expected)
    other, _ = build_tasks([bench.train.inputs], config=BenchConfig(seed=8, tasks=("perception", "grounding")))
    mine = expected[expected["city"] == "gridtown"].reset_index(drop=True)
    assert list(other["record_id"]) == list(mine["record_id"])
    assert not other["correct_idx"].equals(mine["correct_idx"])


def test_bad_inputs_are_rejected_before_work(bench):
    inputs = bench.train.inputs
    broken = CityInputs(**{**{f: getattr(inputs, f) for f in CityInputs.__slots__},
                           "images": inputs.images.drop(columns="street_node")})  # fmt: skip
    with pytest.raises(BenchmarkInputError, match=r"images of 'gridtown' is missing column\(s\) \['street_node'\]"):
        build_tasks([broken], config=BenchConfig(tasks=("perception",)))
    held = CityInputs(**{**{f: getattr(inputs, f) for f in CityInputs.__slots__}, "role": "held_out"})
    with pytest.raises(BenchmarkInputError, match="held-out city 'gridtown' has images in split"):
        build_tasks([held], config=BenchConfig(tasks=("perception",)))
    with pytest.raises(BenchmarkInputError, match="each city may appear once"):
        build_tasks([inputs, inputs], config=BenchConfig(tasks=("perception",)))
    with pytest.raises(BenchmarkInputError, match="n_distractors must be >= 19"):
        BenchConfig(n_distractors=5)
    with pytest.raises(BenchmarkInputError, match="unknown task"):
        BenchConfig(tasks=("geolocation", "vibes"))


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
        else:
            assert obj["messages"][0]["content"].startswith("<graph><image> ")
            assert obj["graphs"].startswith("benchmark_graphs/")
    image_lines = [json.loads(line) for line in (tmp_path / "image.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all("graphs" not in o and o["messages"][0]["content"].startswith("<image> ") for o in image_lines)
    with pytest.raises(BenchmarkInputError, match="mode must be one of"):
        export_jsonl(bench.tasks, tmp_path / "x.jsonl", mode="audio")


def test_save_and_load_round_trip(bench, tmp_path):
    folder = save_benchmark(bench.tasks, tmp_path / "bench", subgraph_nodes=bench.subgraph_nodes,
                            subgraph_edges=bench.subgraph_edges)  # fmt: skip
    tasks, nodes, edges = load_benchmark(folder)
    pd.testing.assert_frame_equal(tasks, bench.tasks)
    referenced = set(bench.tasks["image_id"]) | {i for ids in bench.tasks["candidate_graph_ids"] for i in ids}
    assert set(nodes["image_id"]) <= referenced
    assert set(bench.tasks["query_graph_id"].dropna()) <= set(nodes["image_id"])
    assert len(edges) > 0
    with pytest.raises(FileNotFoundError, match="no UGBench tasks"):
        load_benchmark(tmp_path / "missing")
