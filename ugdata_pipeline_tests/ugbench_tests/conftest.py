"""Fixtures of the UGBench tests: two grid cities (one training, one held out) and their tasks, built once."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from ugdata_pipeline.context.describe import describe_subgraph
from ugdata_pipeline.ugbench import BenchConfig, BuildStats, build_tasks
from ugdata_pipeline_tests.ugbench_tests.bench_city import BenchCity, build_city


@dataclass(slots=True)
class Bench:
    train: BenchCity
    held_out: BenchCity
    tasks: pd.DataFrame
    stats: BuildStats
    config: BenchConfig

    @property
    def subgraph_nodes(self) -> pd.DataFrame:
        return pd.concat([self.train.subgraph_nodes, self.held_out.subgraph_nodes], ignore_index=True)

    @property
    def subgraph_edges(self) -> pd.DataFrame:
        return pd.concat([self.train.subgraph_edges, self.held_out.subgraph_edges], ignore_index=True)


@pytest.fixture(scope="session")
def bench() -> Bench:
    train = build_city("gridtown")
    held_out = build_city("farville", role="held_out", offset_x_m=30_000, seed=2, word_shift=3)
    config = BenchConfig(seed=7)
    tasks, stats = build_tasks([train.inputs, held_out.inputs], config=config, describe=describe_subgraph)
    return Bench(train, held_out, tasks, stats, config)
