"""Benchmark integrity: blind scorers at exact chance on exchangeable groups, planted shortcuts, context graphs."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.ugbench import BLIND_SCORERS, blind_scores, evaluate, shortcut_problems
from ugdata_pipeline.ugbench._records import FusionGraphs, fusion_graph_refs
from ugdata_pipeline.ugbench.blind import CANDIDATE_ONLY, GRAPH_ONLY

GROUPED = ("geolocation", "retrieval", "grounding")


def blind_rows(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["kind"] == "blind"]


def assert_at_chance(rows: pd.DataFrame) -> None:
    assert len(rows) > 0
    for metric in ("hit@1", "hit@5"):
        excess = (rows[metric] - rows[f"chance_{metric}"]).abs()
        assert (excess < 1e-9).all(), rows.loc[excess >= 1e-9, ["task", "query_type", "city", "mode", "model", metric]]


def test_every_blind_scorer_is_scored_on_every_row_and_mode(evaluation):
    blind = blind_rows(evaluation.results)
    assert set(blind["model"]) == set(BLIND_SCORERS)
    for (task, mode), rows in blind.groupby(["task", "mode"]):
        expected = set(BLIND_SCORERS) if mode == "fusion" else set(BLIND_SCORERS) - set(GRAPH_ONLY)
        assert set(rows["model"]) == expected, (task, mode)
    assert (blind["n_seeds"] == 1).all()


def test_candidate_only_scorers_score_exactly_chance_on_grouped_tasks(evaluation):
    blind = blind_rows(evaluation.results)
    rows = blind[blind["task"].isin(GROUPED) & blind["model"].isin(CANDIDATE_ONLY)]
    assert set(rows["task"]) == set(GROUPED) and set(rows["mode"]) == {"image", "fusion", "text"}
    assert_at_chance(rows)
    # the query text is the same for a whole geolocation group (the instruction): query overlap is at chance too
    assert_at_chance(blind[(blind["task"] == "geolocation") & (blind["model"] == "blind:query_overlap")])


def test_perception_candidate_sets_are_balanced_so_text_scorers_score_exactly_chance(evaluation):
    blind = blind_rows(evaluation.results)
    perception = blind[blind["task"] == "perception"]
    text_only = ("blind:longest", "blind:shortest", "blind:word_prior", "blind:query_overlap")
    assert_at_chance(perception[perception["model"].isin(text_only)])
    # cross-fitted label counts can only point away from a balanced set's answer
    prior = perception[perception["model"] == "blind:label_prior"]
    assert (prior["hit@1"] <= prior["chance_hit@1"] + 1e-9).all()


def test_graph_scorers_are_at_chance_on_group_context_graphs_and_read_own_graphs(evaluation):
    blind = blind_rows(evaluation.results)
    fusion = blind[(blind["mode"] == "fusion") & blind["model"].isin(GRAPH_ONLY)]
    assert_at_chance(fusion[fusion["task"].isin(["geolocation", "retrieval"])])
    # grounding fusion gives the image's own subgraph, which holds the answer: "graph reading", not headline
    rule = fusion[(fusion["task"] == "grounding") & (fusion["model"] == "blind:graph_rule")]
    assert len(rule) == 8 and (rule["hit@1"] > 0.9).all() and (rule["role"] == "graph_reading").all()


def test_the_clean_benchmark_reports_no_shortcut(evaluation):
    assert shortcut_problems(evaluation.results) == []


@pytest.fixture(scope="module")
def gridtown_geo(bench) -> pd.DataFrame:
    return bench.tasks[(bench.tasks["task"] == "geolocation") & (bench.tasks["city"] == "gridtown")].copy()


def plant(rows: pd.DataFrame, change) -> pd.DataFrame:
    """Apply ``change(text)`` to each record's correct candidate only."""
    out = rows.copy()
    candidates = []
    for cands, k in zip(out["candidates"], out["correct_idx"], strict=True):
        cands = list(cands)
        cands[k] = change(cands[k])
        candidates.append(cands)
    out["candidates"] = candidates
    out["ground_truth"] = [c[k] for c, k in zip(candidates, out["correct_idx"], strict=True)]
    return out


def test_a_camera_heading_put_back_into_the_correct_descriptions_is_caught(gridtown_geo):
    clean = evaluate(gridtown_geo, {}, modes=["image"], bootstrap=0)
    assert shortcut_problems(clean.results) == []
    tampered = plant(gridtown_geo, lambda text: f"{text} The camera faces north.")
    problems = shortcut_problems(evaluate(tampered, {}, modes=["image"], bootstrap=0).results)
    assert problems, "a heading line only the correct descriptions carry must be flagged"
    assert all(p.startswith("geolocation/geolocation/gridtown/test/image: blind:") for p in problems)
    assert any("blind:longest scores hit@1" in p and "against chance 5.0" in p and "n=40" in p for p in problems)


def test_a_correct_grounding_answer_made_the_longest_is_caught(bench):
    streets = bench.tasks[(bench.tasks["query_type"] == "which_street") & (bench.tasks["city"] == "farville")]
    tampered = plant(streets, lambda name: f"{name}, the one in this photo")
    problems = shortcut_problems(evaluate(tampered, {}, modes=["image"], bootstrap=0).results)
    longest = [p for p in problems if "blind:longest" in p]
    assert longest == [
        "grounding/which_street/farville/held_out/image: blind:longest scores hit@1 100.0 against "
        "chance 5.0 (+95.0 points, n=40)",
        "grounding/which_street/farville/held_out/image: blind:longest scores hit@5 100.0 against "
        "chance 25.0 (+75.0 points, n=40)",
    ]


def test_an_own_graph_in_geolocation_fusion_is_a_leak_the_group_context_graph_is_not(bench, gridtown_geo):
    kwargs = {
        "modes": ["fusion"],
        "bootstrap": 0,
        "subgraph_nodes": bench.train.subgraph_nodes,
        "subgraph_edges": bench.train.subgraph_edges,
    }
    group = evaluate(gridtown_geo, {}, **kwargs).results
    assert shortcut_problems(group) == []
    assert_at_chance(group[group["model"].isin(GRAPH_ONLY)])
    leaked = evaluate(gridtown_geo.assign(fusion_graph="own"), {}, **kwargs).results
    rule = leaked[leaked["model"] == "blind:graph_rule"].iloc[0]
    assert rule["hit@1"] > 0.9  # re-rendering the description from the own graph finds the answer
    problems = shortcut_problems(leaked)
    assert (
        "geolocation/geolocation/gridtown/test/fusion: blind:graph_rule scores hit@1 100.0 against chance 5.0 "
        "(+95.0 points, n=40)" in problems
    )


def test_shortcut_problems_reads_headline_blind_rows_only():
    def row(model, kind, task, mode, hit1, hit5):
        return {
            "task": task,
            "query_type": task,
            "city": "c",
            "split": "test",
            "mode": mode,
            "model": model,
            "kind": kind,
            "n": 40,
            "hit@1": hit1,
            "hit@5": hit5,
            "chance_hit@1": 0.05,
            "chance_hit@5": 0.25,
        }

    results = pd.DataFrame(
        [
            row("blind:longest", "blind", "geolocation", "image", 0.05, 0.31),  # +6 points Hit@5: flagged
            row("blind:shortest", "blind", "geolocation", "image", 0.09, 0.29),  # +4 points at most: fine
            row("blind:graph_rule", "blind", "grounding", "fusion", 1.0, 1.0),  # graph reading: reported apart
            row("stage2", "model", "geolocation", "image", 1.0, 1.0),  # a model may beat chance
        ]
    )
    assert shortcut_problems(results) == [
        "geolocation/geolocation/c/test/image: blind:longest scores hit@5 31.0 against chance 25.0 (+6.0 points, n=40)"
    ]
    assert shortcut_problems(results, max_excess=0.07) == []


def test_graph_scorers_need_the_subgraph_index(bench):
    rows = bench.tasks[bench.tasks["task"] == "geolocation"].head(2)
    with pytest.raises(ValueError, match="need the subgraph index"):
        blind_scores(rows, "fusion")
    scores = blind_scores(rows, "image")
    assert set(scores) == set(BLIND_SCORERS) - set(GRAPH_ONLY)
    assert all(len(s) == 2 and all(len(v) == 20 for v in s) for s in scores.values())


# --- context graphs ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index(bench) -> FusionGraphs:
    return FusionGraphs(bench.train.subgraph_nodes, bench.train.subgraph_edges)


@pytest.fixture(scope="module")
def members(bench) -> list[str]:
    geo = bench.tasks[(bench.tasks["task"] == "geolocation") & (bench.tasks["city"] == "gridtown")]
    return sorted(geo[geo["group_id"] == geo["group_id"].iloc[0]]["image_id"])


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_context_graph_is_the_same_for_any_order_of_its_members(index, members, data):
    chosen = data.draw(st.lists(st.sampled_from(members), min_size=2, max_size=5, unique=True))
    shuffled = data.draw(st.permutations(chosen))
    a_nodes, a_edges = index.context_graph(chosen)
    b_nodes, b_edges = index.context_graph(shuffled)
    pd.testing.assert_frame_equal(a_nodes, b_nodes)
    pd.testing.assert_frame_equal(a_edges, b_edges)


def test_context_graph_has_one_centre_at_the_centroid_and_no_member_image(bench, index, members):
    nodes, edges = index.context_graph(members)
    centre = nodes[nodes["rank"] == 0]
    assert len(centre) == 1 and centre["kind"].iloc[0] == "image"
    assert (nodes["rank"].to_numpy() == range(len(nodes))).all()
    images = bench.train.images.set_index("image_id").loc[members]
    assert centre["lon"].iloc[0] == pytest.approx(images["lon"].mean(), abs=1e-9)
    assert centre["lat"].iloc[0] == pytest.approx(images["lat"].mean(), abs=1e-9)
    assert centre["dx_m"].iloc[0] == 0.0 and centre["distance_m"].iloc[0] == 0.0
    assert (nodes["kind"] == "image").sum() == 1  # no photo's own node, nor any other image node
    own_centres = {str(index.nodes_of(m)["node_id"].iloc[0]) for m in members}
    assert own_centres.isdisjoint(set(nodes["node_id"]))
    assert nodes["node_id"].is_unique and len(nodes) <= 256 + 1
    assert (nodes["image_id"] == f"group:{members[0]}+19").all()
    kept = set(nodes["node_id"])
    assert len(edges) > 0 and edges["src"].isin(kept).all() and edges["dst"].isin(kept).all()
    # every member's surroundings are represented: its nearest node is in, even with a small node budget
    small, _ = index.context_graph(members, max_nodes=len(members))
    nearest = {str(index.nodes_of(m)["node_id"].iloc[1]) for m in members}
    assert nearest <= set(small["node_id"]) and len(small) <= len(members) + 1


def test_fusion_graph_refs_give_a_group_one_shared_graph_and_others_their_own(bench, index, members):
    tasks = bench.tasks
    for task in ("geolocation", "retrieval"):
        for _, group in tasks[tasks["task"] == task].groupby("group_id"):
            refs = set()
            for row in group.itertuples(index=False):
                query, candidates = fusion_graph_refs(row)
                assert len(candidates) == 20
                refs.update(candidates)
                if query is not None:
                    refs.add(query)
                else:
                    assert task == "retrieval"
            assert refs == {"group:" + ",".join(sorted(group["image_id"]))}
    row = tasks[tasks["task"] == "grounding"].iloc[0]
    assert fusion_graph_refs(row) == (f"own:{row['image_id']}", [])
    graph_nodes, _ = index.graph_of("group:" + ",".join(members))
    pd.testing.assert_frame_equal(graph_nodes, index.context_graph(members)[0])
    own_nodes, _ = index.graph_of(f"own:{members[0]}")
    pd.testing.assert_frame_equal(own_nodes, index.nodes_of(members[0]))
    with pytest.raises(BenchmarkInputError, match="unknown graph reference 'mine:x'"):
        index.graph_of("mine:x")
