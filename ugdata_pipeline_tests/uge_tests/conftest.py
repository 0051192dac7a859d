"""Shared fixtures of the UGE tests: a synthetic data set and a small trained stage-1 checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.uge.train import TrainConfig, TrainResult, train
from ugdata_pipeline_tests.uge_tests.synthetic import make_dataset

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

#: a tiny compact backbone: 32 px images, 64-wide embeddings (fast on one core)
SMALL_COMPACT = {"image_size": 32, "channels": [16, 32, 64], "embed_dim": 64}
SMALL_GRAPH = {"hidden_dim": 32, "edge_dim": 8}


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, SubgraphTables]:
    root = tmp_path_factory.mktemp("uge_data")
    records, subgraphs = make_dataset(root)
    return root, records, subgraphs


@pytest.fixture(scope="session")
def stage1_run(
    synthetic: tuple[Path, pd.DataFrame, SubgraphTables], tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    root, records, _ = synthetic
    out = tmp_path_factory.mktemp("stage1")
    # a tiny synthetic set and 16 steps: a higher learning rate than the default for real data
    config = TrainConfig(stage=1, epochs=8, batch_size=8, lr=2e-3, out_dir=str(out), backbone_config=SMALL_COMPACT)
    return train(records, root=root, config=config, progress=False)


@pytest.fixture(scope="session")
def stage2_run(
    synthetic: tuple[Path, pd.DataFrame, SubgraphTables],
    stage1_run: TrainResult,
    tmp_path_factory: pytest.TempPathFactory,
) -> TrainResult:
    root, records, subgraphs = synthetic
    out = tmp_path_factory.mktemp("stage2")
    config = TrainConfig(
        stage=2, epochs=2, batch_size=8, out_dir=str(out), backbone_config=SMALL_COMPACT, graph_encoder=SMALL_GRAPH
    )
    return train(
        records, root=root, subgraphs=subgraphs, config=config, init_from=stage1_run.checkpoint_dir, progress=False
    )


def run_with_threads(script: str, out: Path, threads: str) -> None:
    """Run ``python -c script out`` in a fresh process whose BLAS/OpenMP pools have ``threads`` threads."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    subprocess.run([sys.executable, "-c", script, str(out)], env=env, check=True, capture_output=True, timeout=300)
