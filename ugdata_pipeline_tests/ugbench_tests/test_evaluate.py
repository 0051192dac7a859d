"""evaluate() end to end with fake models whose embeddings we control: seeds, blind rows, comparisons, cache, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.ugbench import METRICS, RESULT_COLUMNS, EmbeddingModel, cli, compare, evaluate, save_benchmark
from ugdata_pipeline.ugbench.evaluate import CHANCE, PER_RECORD_COLUMNS
from ugdata_pipeline_tests.ugbench_tests.fake_models import (
    ConstantModel,
    PerfectModel,
    RandomModel,
    WrongShapeModel,
)

KEYS = ["task", "query_type", "city", "split", "mode"]


def small(tasks: pd.DataFrame, n: int = 6) -> pd.DataFrame:
    return tasks.groupby(["task", "query_type", "city"], group_keys=False).head(n)


def test_the_protocol_tells_models_from_objects_that_cannot_embed():
    from ugdata_pipeline.ugbench.models import UgeModel

    class TextOnly:  # no embed_images: it cannot answer image queries
        def embed_texts(self, texts):
            raise AssertionError("never called")

    assert issubclass(UgeModel, EmbeddingModel)  # the real model
    assert not isinstance(TextOnly(), EmbeddingModel)


def test_results_hold_one_row_per_record_group_mode_and_model(bench, evaluation):
    results, per_record = evaluation.results, evaluation.per_record
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert list(per_record.columns) == list(PER_RECORD_COLUMNS)
    assert not results.duplicated([*KEYS, "model"]).any()
    random = results[results["model"] == "random"]
    # every record is scored once per mode it runs in: retrieval in text + fusion, the others in image + fusion
    assert random.loc[random["mode"] == "image", "n"].sum() == (bench.tasks["task"] != "retrieval").sum()
    assert random.loc[random["mode"] == "text", "n"].sum() == (bench.tasks["task"] == "retrieval").sum()
    assert random.loc[random["mode"] == "fusion", "n"].sum() == len(bench.tasks)
    # per-record rows: one per record, mode, model and seed
    rows = per_record[per_record["model"] == "random"]
    assert len(rows) == 2 * random["n"].sum() and set(rows["seed"]) == {0, 1}
    assert (results["n_clusters"] <= results["n"]).all() and (results["n_clusters"] > 1).all()
    for metric in METRICS:
        assert (results[f"{metric}_lo"] <= results[metric] + 1e-12).all()
        assert (results[f"{metric}_hi"] >= results[metric] - 1e-12).all()


def test_perfect_model_scores_one_and_random_scores_chance(evaluation):
    results = evaluation.results
    perfect = results[results["model"] == "perfect"]
    assert set(perfect["mode"]) == {"image", "fusion", "text"}
    assert (perfect["hit@1"] == 1.0).all(), perfect.loc[perfect["hit@1"] < 1, KEYS]
    assert (perfect["mean_rank"] == 1.0).all()
    random = results[results["model"] == "random"]
    grouped = random[random["task"] != "perception"]
    pooled = np.average(grouped["hit@1"], weights=grouped["n"])
    assert np.allclose(grouped["chance_hit@1"], 0.05) and np.allclose(grouped["chance_hit@5"], 0.25)
    assert abs(pooled - 0.05) < 0.03, pooled
    assert 9.0 < np.average(grouped["mean_rank"], weights=grouped["n"]) < 12.0  # chance is 10.5 for 20 candidates
    perception = random[random["task"] == "perception"]
    assert np.allclose(perception["chance_hit@1"], 1 / 3) and (perception["hit@5"] == 1.0).all()


def test_a_model_with_two_seeds_reports_their_mean_and_spread(evaluation):
    results, per_record = evaluation.results, evaluation.per_record
    random = results[results["model"] == "random"]
    assert (random["n_seeds"] == 2).all()
    assert (results.loc[results["model"] == "perfect", "n_seeds"] == 1).all()
    differ = 0
    for row in random.head(12).to_dict("records"):
        mine = per_record[
            (per_record["model"] == "random")
            & (per_record["mode"] == row["mode"])
            & (per_record["task"] == row["task"])
            & (per_record["query_type"] == row["query_type"])
            & (per_record["city"] == row["city"])
        ]
        by_seed = mine.groupby("seed")["hit@5"].mean()
        assert len(by_seed) == 2
        differ += by_seed.iloc[0] != by_seed.iloc[1]
        assert row["hit@5"] == pytest.approx(by_seed.mean())
        assert row["hit@5_seed_sd"] == pytest.approx(float(np.std(by_seed, ddof=1)))
        assert math.isfinite(row["mrr_seed_sd"]) and row["mrr_seed_sd"] > 0
    assert differ >= 6  # the seeds embed differently
    assert results.loc[results["model"] == "perfect", "hit@5_seed_sd"].isna().all()


def test_fusion_rows_only_for_models_with_a_graph_side(evaluation):
    results = evaluation.results
    modes = results.groupby("model")["mode"].agg(set)
    assert modes["image_text"] == {"image", "text"}  # its embed_fusion raises if called
    assert modes["random"] == modes["perfect"] == modes["blind:longest"] == {"image", "text", "fusion"}


def test_roles_kinds_and_instruction_use_are_reported(evaluation):
    results = evaluation.results
    assert (results.loc[results["model"].str.startswith("blind:"), "kind"] == "blind").all()
    assert (results.loc[~results["model"].str.startswith("blind:"), "kind"] == "model").all()
    reading = results[results["role"] == "graph_reading"]
    pairs = set(zip(reading["task"], reading["mode"], strict=True))
    assert pairs == {("grounding", "fusion"), ("perception", "fusion")}
    assert set(results["role"]) == {"headline", "graph_reading"}
    # the fakes' image side takes the instruction (also for retrieval's candidate images), the constant one none
    assert results.loc[results["model"].isin(["perfect", "random"]), "instruction_used"].all()
    assert not results.loc[results["model"] == "image_text", "instruction_used"].any()
    assert not results.loc[results["kind"] == "blind", "instruction_used"].any()


def test_constant_model_scores_exactly_chance(bench):
    out = evaluate(small(bench.tasks), {"const": ConstantModel()}, modes=["image", "text"], bootstrap=0, blind=False)
    results = out.results
    assert set(results["model"]) == {"const"}
    assert np.allclose(results["hit@1"], results["chance_hit@1"]) and np.allclose(results["mrr"], results["chance_mrr"])
    assert not results["instruction_used"].any()
    assert results["hit@1_lo"].isna().all()


def test_compare_gives_verdicts_on_paired_records(evaluation):
    per_record = evaluation.per_record
    copy = per_record[per_record["model"] == "random"].assign(model="random_copy")
    pairs = [("perfect", "random"), ("perfect", CHANCE), ("random", "random_copy"), ("image_text", "perfect")]
    out = compare(pd.concat([per_record, copy], ignore_index=True), pairs, bootstrap=200, seed=0)
    better = out[(out["a"] == "perfect") & (out["b"] == "random")]
    assert len(better) == 14 * 2 * 3  # 14 (task, type, city) rows x 2 modes x 3 metrics
    three = (better["task"] == "perception") & (better["metric"] == "hit@5")  # 3 candidates: everyone scores 1
    assert (better.loc[~three, "verdict"] == "a better").all()
    assert (better.loc[~three, "lo"] > 0).all()
    assert (better.loc[three, "verdict"] == "no difference").all() and (better.loc[three, "diff"] == 0).all()
    assert (better["n_seeds_a"] == 1).all() and (better["n_seeds_b"] == 2).all()
    assert better["seed_sd"].map(math.isfinite).all()
    assert np.allclose(better["diff"], better["mean_a"] - better["mean_b"])
    same = out[out["b"] == "random_copy"]
    assert len(same) == len(better)
    assert (same["verdict"] == "no difference").all()
    assert (same["diff"] == 0).all() and (same["lo"] == 0).all() and (same["hi"] == 0).all()
    vs_chance = out[out["b"] == CHANCE]
    assert vs_chance["b_at_chance"].all()
    assert (vs_chance.loc[vs_chance["metric"] == "mrr", "verdict"] == "a better").all()
    # a pair is compared only where both models have rows: the image-text model has no fusion rows
    assert set(out.loc[out["a"] == "image_text", "mode"]) == {"image", "text"}
    assert set(out["role"]) == {"headline", "graph_reading"}


def test_bootstrap_intervals_are_reproducible(bench, evaluation):
    tasks = bench.tasks[bench.tasks["task"] == "grounding"]
    again = evaluate(
        tasks, {"perfect": PerfectModel(bench.tasks)}, modes=["image"], bootstrap=200, seed=1, blind=False
    ).results
    mine = evaluation.results
    mine = mine[(mine["model"] == "perfect") & (mine["mode"] == "image") & (mine["task"] == "grounding")]
    pd.testing.assert_frame_equal(again, mine.reset_index(drop=True))
    random = [RandomModel(0)]
    a = evaluate(tasks, {"r": random}, modes=["image"], bootstrap=200, seed=1, blind=False).results
    b = evaluate(tasks, {"r": random}, modes=["image"], bootstrap=200, seed=2, blind=False).results
    pd.testing.assert_series_equal(a["hit@5"], b["hit@5"])
    assert not a["hit@5_lo"].equals(b["hit@5_lo"])


class WindowedModel(RandomModel):
    """Reports the share of texts longer than its text window."""

    def long_text_share(self, texts):
        return sum(len(t) > 100 for t in texts) / len(texts)


def test_cache_makes_a_rerun_embed_nothing(bench, tmp_path):
    first = WindowedModel()
    subset = small(bench.tasks[bench.tasks["task"].isin(["grounding", "retrieval"])])
    kwargs = {"modes": ["image", "text"], "bootstrap": 50, "cache_dir": tmp_path / "cache", "blind": False}
    a = evaluate(subset, {"m": first}, **kwargs)
    assert first.calls["image"] > 0 and first.calls["text"] > 0
    second = WindowedModel()
    b = evaluate(subset, {"m": second}, **kwargs)
    assert sum(second.calls.values()) == 0
    pd.testing.assert_frame_equal(a.results, b.results)
    pd.testing.assert_frame_equal(a.per_record, b.per_record)
    assert list((tmp_path / "cache").iterdir())
    # retrieval descriptions are long, grounding answers short
    assert 0.0 < a.text_window["m"] < 1.0
    # another seed of the same model name is cached apart: it embeds again
    third = WindowedModel(seed=1)
    evaluate(subset, {"m": [WindowedModel(), third]}, **kwargs)
    assert third.calls["image"] > 0


def test_bad_evaluation_inputs(bench):
    tasks = small(bench.tasks, 2)
    with pytest.raises(BenchmarkInputError, match="fusion mode needs subgraph_nodes"):
        evaluate(tasks, {"m": RandomModel()}, modes=["fusion"])
    with pytest.raises(BenchmarkInputError, match="unknown mode"):
        evaluate(tasks, {"m": RandomModel()}, modes=["smell"])
    with pytest.raises(BenchmarkInputError, match="models is empty and blind=False"):
        evaluate(tasks, {}, blind=False)
    with pytest.raises(BenchmarkInputError, match="batch_size must be >= 1"):
        evaluate(tasks, {"m": RandomModel()}, batch_size=0)
    with pytest.raises(BenchmarkInputError, match="have no subgraph rows"):
        evaluate(
            tasks,
            {"m": RandomModel()},
            modes=["fusion"],
            subgraph_nodes=bench.train.subgraph_nodes,
            subgraph_edges=bench.train.subgraph_edges,
        )
    with pytest.raises(ValueError, match=r"returned shape \(\d+, 8\) for \d+ inputs"):
        evaluate(tasks, {"m": WrongShapeModel()}, modes=["image"], blind=False)


def test_cli_compares_checkpoints_with_seeds_on_a_saved_benchmark(bench, tmp_path, capsys):
    subset = small(bench.tasks, 4)
    folder = save_benchmark(
        subset, tmp_path / "bench", subgraph_nodes=bench.subgraph_nodes, subgraph_edges=bench.subgraph_edges
    )
    loaded = []

    def load_model(checkpoint: str):
        loaded.append(checkpoint)
        return PerfectModel(subset) if "good" in checkpoint else RandomModel(seed=len(loaded))

    argv = [
        "--tasks",
        str(folder),
        "--model",
        "baseline=ckpt/bad",
        "--model",
        "uge=ckpt/good-0",
        "--model",
        "uge=ckpt/good-1",
        "--out",
        str(tmp_path / "out"),
        "--bootstrap",
        "20",
        "--limit",
        "3",
    ]
    assert cli.main(argv, load_model=load_model) == 0
    assert loaded == ["ckpt/bad", "ckpt/good-0", "ckpt/good-1"]
    report = Path(capsys.readouterr().out.strip())
    assert report == tmp_path / "out" / "report.md" and report.is_file()
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    models = results[results["kind"] == "model"]
    assert set(models["model"]) == {"baseline", "uge"}
    assert set(results.loc[results["kind"] == "blind", "model"]) >= {"blind:longest", "blind:graph_rule"}
    assert (results["n"] <= 3).all()
    assert set(models["mode"]) == {"image", "fusion", "text"}
    uge = models[models["model"] == "uge"]
    assert (uge["n_seeds"] == 2).all() and (uge["hit@1"] == 1.0).all()
    assert (tmp_path / "out" / "comparisons.parquet").is_file()
    assert list((tmp_path / "out" / "cache").iterdir())  # the cache defaults to OUT/cache
    with pytest.raises(SystemExit):
        cli.main(["--tasks", str(folder), "--model", "no-equals-sign", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):  # the baseline is a model like any other now
        cli.main(["--tasks", str(folder), "--model", "a=b", "--baseline", "a", "--out", str(tmp_path / "x")])


def test_cli_runs_a_bare_tasks_file_without_fusion(bench, tmp_path, capsys):
    subset = small(bench.tasks, 2)
    folder = save_benchmark(subset, tmp_path / "bench")  # no subgraph tables
    argv = [
        "--tasks",
        str(folder / "tasks.parquet"),
        "--model",
        "m=ckpt",
        "--out",
        str(tmp_path / "out"),
        "--modes",
        "image",
        "text",
        "--bootstrap",
        "0",
    ]
    assert cli.main(argv, load_model=lambda _: RandomModel()) == 0
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(results["mode"]) == {"image", "text"}
    with pytest.raises(BenchmarkInputError, match="fusion mode needs subgraph_nodes"):
        cli.main([*argv[:6], "--bootstrap", "0"], load_model=lambda _: RandomModel())
    capsys.readouterr()


@pytest.mark.slow
def test_uge_checkpoint_adapter_scores_every_mode(bench, tmp_path):
    """An untrained compact UGE checkpoint, loaded through UgeModel, embeds images, texts and image + graphs."""
    import torch
    from PIL import Image

    from ugdata_pipeline.ugbench import UgeModel
    from ugdata_pipeline.uge.backbone import build_backbone
    from ugdata_pipeline.uge.checkpoint import save_checkpoint
    from ugdata_pipeline.uge.graph_encoder import GraphEncoderConfig

    torch.manual_seed(0)
    backbone = build_backbone("compact", {"image_size": 32, "channels": [16, 32, 32, 64], "embed_dim": 32})
    backbone.attach_graph_encoder(GraphEncoderConfig(hidden_dim=16, edge_dim=8))
    checkpoint = save_checkpoint(tmp_path / "ckpt" / "best", backbone)
    tasks = bench.tasks[bench.tasks["city"] == "farville"].groupby(["task", "query_type"], group_keys=False).head(1)
    root = tmp_path / "images"
    paths = set(tasks["query_image"].dropna()) | {
        p for c in tasks.loc[tasks["task"] == "retrieval", "candidates"] for p in c
    }
    for k, path in enumerate(sorted(paths)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (k * 7 % 255, 90, 160)).save(root / path)
    model = UgeModel(checkpoint)
    assert isinstance(model, EmbeddingModel) and model.cache_id.startswith("uge-best-")
    assert model.supports_fusion
    out = evaluate(
        tasks,
        {"uge": model},
        bootstrap=20,
        subgraph_nodes=bench.subgraph_nodes,
        subgraph_edges=bench.subgraph_edges,
        image_root=root,
        blind=False,
    ).results
    assert set(out["mode"]) == {"image", "fusion", "text"}
    assert out["hit@1"].between(0, 1).all() and (out["n"] == 1).all()
    assert out["instruction_used"].all()  # UGE's image side takes the instruction in every mode
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UgeModel(tmp_path / "missing")
