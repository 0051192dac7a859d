"""The UGBench command line: a comparison run on a saved benchmark, and the errors a user meets first."""

from __future__ import annotations

import pandas as pd
import pytest

from ugdata_pipeline.ugbench.cli import main
from ugdata_pipeline.ugbench.tasks import save_benchmark
from ugdata_pipeline_tests.ugbench_tests.fake_models import RandomModel


@pytest.fixture(scope="module")
def saved(bench, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    tasks = bench.tasks.groupby(["task", "query_type", "city"], group_keys=False).head(4)
    nodes = pd.concat([bench.train.subgraph_nodes, bench.held_out.subgraph_nodes], ignore_index=True)
    edges = pd.concat([bench.train.subgraph_edges, bench.held_out.subgraph_edges], ignore_index=True)
    save_benchmark(tasks, folder, subgraph_nodes=nodes, subgraph_edges=edges)
    return folder, tasks


def test_two_models_with_seeds_are_compared_and_the_report_path_printed(saved, tmp_path, capsys) -> None:
    folder, tasks = saved
    loaded: list[str] = []

    def load(checkpoint: str) -> RandomModel:
        loaded.append(checkpoint)
        return RandomModel(seed=len(loaded))

    code = main(
        [
            "--tasks",
            str(folder),
            "--model",
            "a=ckpt-a0",
            "--model",
            "a=ckpt-a1",
            "--model",
            "b=ckpt-b",
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "20",
        ],
        load_model=load,
    )
    assert code == 0 and loaded == ["ckpt-a0", "ckpt-a1", "ckpt-b"]
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "report.md")
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert {"a", "b"} <= set(results["model"]) and set(results["city"]) == set(tasks["city"])
    assert (results.loc[results["model"] == "a", "n_seeds"] == 2).all()


def test_a_model_without_a_checkpoint_is_refused_by_name(saved, tmp_path, capsys) -> None:
    folder, _ = saved
    with pytest.raises(SystemExit) as stopped:
        main(["--tasks", str(folder), "--model", "stage2", "--out", str(tmp_path)], load_model=RandomModel)
    assert stopped.value.code == 2
    assert "--model must be NAME=CHECKPOINT_DIR, got 'stage2'" in capsys.readouterr().err


def test_a_missing_benchmark_names_the_path_and_what_to_pass(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"no UGBench tasks at {tmp_path / 'nope'}; pass a directory"):
        main(["--tasks", str(tmp_path / "nope"), "--model", "a=x", "--out", str(tmp_path)], load_model=RandomModel)
