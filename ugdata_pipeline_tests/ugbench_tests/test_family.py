"""What benchmark_results scores, chosen in the core: the built cities' records, the family's current runs, and the
graph_matters verdict from graph_dependence's rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.ugbench.family import benchmark_inputs, family_models, seed_note
from ugdata_pipeline.ugbench.graph_check import graph_dependence, graph_matters_outcome
from ugdata_pipeline.uge.runs import _write_pointer
from ugdata_pipeline_tests.ugbench_tests.fake_models import GraphReaderModel, RandomModel
from ugdata_pipeline_tests.uge_tests.test_family_runs import REGISTRY, Tables


def test_benchmark_inputs_come_from_every_city_with_records(write_registry) -> None:
    registry = load_registry(write_registry(REGISTRY))
    tables = Tables(
        {
            (slug, asset): pd.DataFrame({"row": [f"{slug}-{asset}"]})
            for slug in ("beta", "delta")
            for asset in ("benchmark_tasks", "subgraph_nodes", "subgraph_edges")
        }
    )
    inputs = benchmark_inputs(registry, tables)
    # held-out and training cities alike, in registry order
    assert inputs.cities == ["beta", "delta"]
    assert inputs.tasks["row"].tolist() == ["beta-benchmark_tasks", "delta-benchmark_tasks"]
    assert inputs.subgraph_edges["row"].tolist() == ["beta-subgraph_edges", "delta-subgraph_edges"]
    with pytest.raises(FileNotFoundError, match=r"^no city has benchmark_tasks yet; run city_dataset_job for at least"):
        benchmark_inputs(registry, Tables({}))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny compact model's checkpoint (what a run's ``checkpoints/best`` holds)."""
    from ugdata_pipeline.uge.backbone import build_backbone
    from ugdata_pipeline.uge.checkpoint import save_checkpoint
    from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT

    folder = tmp_path_factory.mktemp("checkpoint") / "best"
    save_checkpoint(folder, build_backbone("compact", SMALL_COMPACT), config={})
    return folder


def test_family_models_takes_each_current_run_and_names_what_is_missing(tmp_path: Path, tiny_checkpoint: Path) -> None:
    def _current(root: Path, model: str, seed: int) -> Path:
        checkpoint = root / "models" / model / f"seed-{seed}" / "f00" / "checkpoints" / "best"
        shutil.copytree(tiny_checkpoint, checkpoint)
        _write_pointer(root, model, seed, "f00", checkpoint, ["x"])
        return checkpoint

    with pytest.raises(FileNotFoundError, match=r"^no trained model found; run training_job first$"):
        family_models(tmp_path, [0, 1])
    stage1 = [_current(tmp_path, "stage1", seed) for seed in (0, 1)]
    stage2 = _current(tmp_path, "stage2", 0)
    family = family_models(tmp_path, [0, 1])
    assert {name: [m.checkpoint_dir for m in runs] for name, runs in family.models.items()} == {
        "stage1": stage1,
        "stage2": [stage2],
    }
    assert family.missing == {"baseline": 2, "stage2": 1, "stage2_shuffled_graphs": 2, "stage2_no_graph": 2}
    assert family.warning() == (
        "benchmarking without trained runs for baseline (2 of 2 seeds missing), stage2 (1 of 2 seeds missing), "
        "stage2_shuffled_graphs (2 of 2 seeds missing), stage2_no_graph (2 of 2 seeds missing); materialize them "
        "in training_job to compare the whole family"
    )
    assert family_models(tmp_path, [0]).missing == {"baseline": 1, "stage2_shuffled_graphs": 1, "stage2_no_graph": 1}
    # a run the pointer names but the disk lacks is an error, not a model silently left out
    shutil.rmtree(stage2)
    with pytest.raises(FileNotFoundError, match=r"current stage2 run of seed 0, but that folder is missing"):
        family_models(tmp_path, [0, 1])
    assert seed_note([0, 1]).startswith("Every model was trained with 2 seed(s) (0, 1); ")


def test_graph_matters_passes_only_when_swapped_graphs_score_clearly_lower(bench) -> None:
    def outcome(model):
        comparison = graph_dependence(
            model,
            bench.tasks,
            subgraph_nodes=bench.subgraph_nodes,
            subgraph_edges=bench.subgraph_edges,
            bootstrap=200,
            max_records=60,
        )
        return graph_matters_outcome(comparison), comparison

    reads, comparison = outcome(GraphReaderModel(bench.tasks, bench.subgraph_nodes))
    row = comparison[comparison["metric"] == "mrr"].iloc[0]
    assert reads.passed and reads.observed == round(100 * float(row["diff"]), 2) > 0
    assert reads.examples[0].startswith("MRR with own graphs 100.0, swapped ")
    assert reads.examples[0].endswith(f"{int(row['n'])} records in {int(row['n_clusters'])} clusters")
    ignores, _ = outcome(RandomModel())
    assert not ignores.passed and ignores.observed == 0.0
    nothing = graph_matters_outcome(None)
    assert nothing.passed and nothing.examples == ["no stage-2 model or no fusion mode: nothing to check"]
    empty = graph_matters_outcome(comparison.iloc[:0])
    assert not empty.passed and empty.examples == ["no grounding records to check"]
