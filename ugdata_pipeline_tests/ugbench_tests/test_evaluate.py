"""evaluate() end to end with fake models whose embeddings we control; gains, table, report, cache and CLI."""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.ugbench import (
    METRICS,
    RESULT_COLUMNS,
    BenchmarkInputError,
    EmbeddingModel,
    cli,
    evaluate,
    paper_table,
    relative_gains,
    results_metadata,
    save_benchmark,
    write_report,
)

DIM = 512


@functools.cache
def unit(key: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=dim)
    return v / np.linalg.norm(v)


class RandomModel:
    """Every item gets its own random direction: a model that knows nothing."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)

    def embed_texts(self, texts):
        self.calls["text"] += len(texts)
        return np.stack([unit(f"text:{t}") for t in texts])

    def embed_images(self, image_paths, *, instruction=None):
        self.calls["image"] += len(image_paths)
        return np.stack([unit(f"image:{Path(p).name}:{instruction}") for p in image_paths])

    def embed_fusion(self, image_paths, graphs, *, instruction=None):
        self.calls["fusion"] += len(image_paths)
        assert all(len(nodes) and nodes["image_id"].nunique() == 1 for nodes, _ in graphs)
        return np.stack([unit(f"fusion:{Path(p).name}:{instruction}") for p in image_paths])


class PerfectModel(RandomModel):
    """An image (with an instruction) points at the sum of its true answers; a text points at itself."""

    def __init__(self, tasks: pd.DataFrame) -> None:
        super().__init__()
        self.answers: dict[tuple[str, str | None], list[str]] = defaultdict(list)
        for row in tasks.itertuples(index=False):
            if row.query_kind == "image":
                self.answers[Path(row.query_image).name, row.instruction].append(row.ground_truth)
            else:  # retrieval: the correct image (no instruction) points at its description
                self.answers[Path(row.ground_truth).name, None].append(row.query_text)

    def _image(self, path: str, instruction: str | None) -> np.ndarray:
        texts = self.answers.get((Path(path).name, instruction))
        if not texts:
            return unit(f"image:{path}:{instruction}")
        v = sum(unit(f"text:{t}") for t in set(texts))
        return v / np.linalg.norm(v)

    def embed_images(self, image_paths, *, instruction=None):
        self.calls["image"] += len(image_paths)
        return np.stack([self._image(p, instruction) for p in image_paths])

    def embed_fusion(self, image_paths, graphs, *, instruction=None):
        self.calls["fusion"] += len(image_paths)
        return np.stack([self._image(p, instruction) for p in image_paths])


class ConstantModel:
    """The same vector for everything, and no instruction keyword: every score ties."""

    def embed_texts(self, texts):
        return np.ones((len(texts), 8))

    def embed_images(self, image_paths):
        return np.ones((len(image_paths), 8))

    def embed_fusion(self, image_paths, graphs):
        return np.ones((len(image_paths), 8))


@pytest.fixture(scope="module")
def results(bench):
    models = {"baseline": RandomModel(), "perfect": PerfectModel(bench.tasks)}
    return evaluate(bench.tasks, models, bootstrap=200, seed=1, subgraph_nodes=bench.subgraph_nodes,
                    subgraph_edges=bench.subgraph_edges)  # fmt: skip


def test_models_satisfy_the_protocol(bench):
    for model in (RandomModel(), PerfectModel(bench.tasks.head(2)), ConstantModel()):
        assert isinstance(model, EmbeddingModel)


def test_perfect_model_scores_one_and_random_scores_chance(bench, results):
    assert list(results.columns) == list(RESULT_COLUMNS)
    perfect = results[results["model"] == "perfect"]
    assert set(perfect["mode"]) == {"image", "fusion", "text"}
    assert (perfect["hit@1"] == 1.0).all(), perfect.loc[perfect["hit@1"] < 1, ["task", "query_type", "mode"]]
    assert (perfect["mean_rank"] == 1.0).all()
    # instructions reach image and fusion queries; the fakes' embed_texts takes none (retrieval queries are text)
    text_query = perfect["task"] == "retrieval"
    assert perfect.loc[~text_query, "instruction_used"].all()
    assert not perfect.loc[text_query, "instruction_used"].any()
    random = results[results["model"] == "baseline"]
    pooled = np.average(random["hit@1"], weights=random["n"])
    chance = np.average(random["chance_hit@1"], weights=random["n"])
    assert chance == pytest.approx(0.05, abs=0.01)
    assert abs(pooled - chance) < 0.03, (pooled, chance)
    pooled_rank = np.average(random["mean_rank"], weights=random["n"])
    assert 9.0 < pooled_rank < 12.0  # chance is 10.5 for 20 candidates
    # one row per (task, type, city, split, mode, model); n adds up to the records per mode
    image_rows = random[random["mode"] == "image"]
    assert image_rows["n"].sum() == (bench.tasks["task"] != "retrieval").sum()
    for metric in METRICS:
        assert (results[f"{metric}_lo"] <= results[metric] + 1e-12).all()
        assert (results[f"{metric}_hi"] >= results[metric] - 1e-12).all()


def test_constant_model_scores_exactly_chance_and_reports_no_instruction(bench):
    out = evaluate(bench.tasks, {"const": ConstantModel()}, modes=["image", "text"], bootstrap=0)
    assert np.allclose(out["hit@1"], out["chance_hit@1"])
    assert not out["instruction_used"].any()
    assert out["hit@1_lo"].isna().all()


class ImageTextModel(ConstantModel):
    """A model without a graph side (like the baseline and stage 1)."""

    supports_fusion = False

    def embed_fusion(self, image_paths, graphs):
        raise AssertionError("the evaluator must not ask an image-text model for fusion embeddings")


def test_models_without_a_graph_side_get_no_fusion_rows(bench):
    out = evaluate(bench.tasks, {"image_text": ImageTextModel()}, bootstrap=0, subgraph_nodes=bench.subgraph_nodes,
                   subgraph_edges=bench.subgraph_edges)  # fmt: skip
    assert set(out["mode"]) == {"image", "text"}


def test_bootstrap_intervals_are_reproducible(bench, results):
    again = evaluate(bench.tasks, {"baseline": RandomModel()}, modes=["image"], bootstrap=200, seed=1)
    mine = results[(results["model"] == "baseline") & (results["mode"] == "image")].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, mine)


def test_cache_makes_a_rerun_embed_nothing(bench, tmp_path):
    first = RandomModel()
    subset = bench.tasks[bench.tasks["task"].isin(["grounding", "retrieval"])]
    kwargs = {"modes": ["image", "text"], "bootstrap": 50, "cache_dir": tmp_path / "cache"}
    a = evaluate(subset, {"m": first}, **kwargs)
    assert first.calls["image"] > 0 and first.calls["text"] > 0
    second = RandomModel()
    b = evaluate(subset, {"m": second}, **kwargs)
    assert sum(second.calls.values()) == 0
    pd.testing.assert_frame_equal(a, b)
    assert list((tmp_path / "cache").iterdir())


def test_relative_gains_and_paper_table(results):
    gains = relative_gains(results, baseline="baseline")
    row = gains[(gains["metric"] == "hit@1")].iloc[0]
    assert row["model"] == "perfect"
    assert row["abs_gain"] == pytest.approx(1.0 - row["baseline_value"])
    assert row["rel_gain_pct"] == pytest.approx(100 * (1.0 - row["baseline_value"]) / row["baseline_value"])
    rank = gains[gains["metric"] == "mean_rank"]
    assert (rank["abs_gain"] > 0).all()  # a lower rank is a gain
    with pytest.raises(BenchmarkInputError, match="baseline 'nobody' is not a model"):
        relative_gains(results, baseline="nobody")
    table = paper_table(results, baseline="baseline")
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Task | Type | City | Split | Mode | n | baseline H@1")
    assert len(lines) == 2 + results.groupby(["task", "query_type", "city", "split", "mode"]).ngroups
    assert "**100.0**" in table and "%)" in table


def test_write_report_writes_markdown_charts_and_results(results, tmp_path):
    report = write_report(results, tmp_path / "report")
    text = report.read_text(encoding="utf-8")
    assert "## Paper table" in text and "## Relative gains over `baseline`" in text
    pngs = sorted((tmp_path / "report").glob("*.png"))
    assert len(pngs) == results["task"].nunique()
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(f"]({p.name})" in text for p in pngs)
    back = pd.read_parquet(tmp_path / "report" / "results.parquet")
    assert len(back) == len(results)
    meta = results_metadata(results)
    assert meta["models"] == ["baseline", "perfect"]
    assert meta["best_hit@5/geolocation"].startswith("perfect")


def test_bad_evaluation_inputs(bench):
    with pytest.raises(BenchmarkInputError, match="fusion mode needs subgraph_nodes"):
        evaluate(bench.tasks, {"m": RandomModel()}, modes=["fusion"])
    with pytest.raises(BenchmarkInputError, match="unknown mode"):
        evaluate(bench.tasks, {"m": RandomModel()}, modes=["smell"])
    with pytest.raises(BenchmarkInputError, match="models is empty"):
        evaluate(bench.tasks, {})


def test_cli_compares_checkpoints_on_a_saved_benchmark(bench, tmp_path, capsys):
    subset = bench.tasks.groupby(["task", "query_type"], group_keys=False).head(6)
    folder = save_benchmark(subset, tmp_path / "bench", subgraph_nodes=bench.subgraph_nodes,
                            subgraph_edges=bench.subgraph_edges)  # fmt: skip
    loaded = {}

    def load_model(checkpoint: str):
        loaded[checkpoint] = True
        return PerfectModel(subset) if checkpoint.endswith("good") else RandomModel()

    argv = ["--tasks", str(folder), "--model", "baseline=ckpt/bad", "--model", "uge=ckpt/good",
            "--out", str(tmp_path / "out"), "--bootstrap", "20", "--limit", "4"]  # fmt: skip
    code = cli.main(argv, load_model=load_model)
    assert code == 0
    assert set(loaded) == {"ckpt/bad", "ckpt/good"}
    report = Path(capsys.readouterr().out.strip())
    assert report == tmp_path / "out" / "report.md"
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(results["model"]) == {"baseline", "uge"}
    assert (results["n"] <= 4).all()
    assert (results.loc[results["model"] == "uge", "hit@1"] == 1.0).all()
    with pytest.raises(SystemExit):
        cli.main(["--tasks", str(folder), "--model", "no-equals-sign", "--out", str(tmp_path / "x")])


@pytest.mark.slow
def test_uge_checkpoint_adapter_scores_every_mode(bench, tmp_path):
    """An untrained compact UGE checkpoint, loaded through UgeModel, embeds images, texts and image + subgraph."""
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
    paths = set(tasks["query_image"].dropna()) | {p for c in tasks.loc[tasks["task"] == "retrieval", "candidates"]
                                                  for p in c}  # fmt: skip
    for k, path in enumerate(sorted(paths)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (k * 7 % 255, 90, 160)).save(root / path)
    model = UgeModel(checkpoint)
    assert isinstance(model, EmbeddingModel) and model.cache_id.startswith("uge-best-")
    out = evaluate(tasks, {"uge": model}, bootstrap=20, subgraph_nodes=bench.subgraph_nodes,
                   subgraph_edges=bench.subgraph_edges, image_root=root)  # fmt: skip
    assert set(out["mode"]) == {"image", "fusion", "text"}
    assert out["hit@1"].between(0, 1).all() and (out["n"] == 1).all()
    assert out.loc[out["task"] != "retrieval", "instruction_used"].all()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UgeModel(tmp_path / "missing")
