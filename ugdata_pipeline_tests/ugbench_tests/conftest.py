"""Fixtures of the UGBench tests: two grid cities (one training, one held out), their tasks and one evaluation.

Everything is built once per session. The build caps every (task, query type, city) at 40 records (two whole
groups of 20; perception 3 per dimension and level), which keeps the evaluation quick. ``distance_direction``
groups need 20 pairwise clearly different answers; in cities of ~150 test images that takes compass words 45 degrees
apart (the default 90 degrees forms no group there), so the fixture relaxes that one option.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from ugdata_pipeline.context.describe import describe_subgraph
from ugdata_pipeline.ugbench import BenchConfig, BuildStats, Evaluation, build_tasks, evaluate
from ugdata_pipeline_tests.ugbench_tests.bench_city import BenchCity, build_city
from ugdata_pipeline_tests.ugbench_tests.fake_models import ImageTextModel, PerfectModel, RandomModel

CONFIG = BenchConfig(seed=7, max_records_per_task=40, min_distractor_angle_deg=45.0)


@dataclass(slots=True)
class Bench:
    train: BenchCity
    held_out: BenchCity
    tasks: pd.DataFrame
    stats: BuildStats
    config: BenchConfig

    @property
    def cities(self) -> tuple[BenchCity, BenchCity]:
        return self.train, self.held_out

    @property
    def subgraph_nodes(self) -> pd.DataFrame:
        return pd.concat([self.train.subgraph_nodes, self.held_out.subgraph_nodes], ignore_index=True)

    @property
    def subgraph_edges(self) -> pd.DataFrame:
        return pd.concat([self.train.subgraph_edges, self.held_out.subgraph_edges], ignore_index=True)

    def images_by_city(self) -> dict[str, set[str]]:
        return {c.inputs.city: set(c.images["image_id"].astype(str)) for c in self.cities}


@pytest.fixture(scope="session")
def bench() -> Bench:
    train = build_city("gridtown")
    held_out = build_city("farville", role="held_out", offset_x_m=30_000, seed=2, word_shift=3)
    tasks, stats = build_tasks([train.inputs, held_out.inputs], config=CONFIG, describe=describe_subgraph)
    return Bench(train, held_out, tasks, stats, CONFIG)


@pytest.fixture(scope="session")
def evaluation(bench) -> Evaluation:
    """Every mode, blind scorers, a random model trained with two seeds, a perfect model, an image-text model."""
    models = {
        "random": [RandomModel(seed=0), RandomModel(seed=1)],
        "perfect": PerfectModel(bench.tasks),
        "image_text": ImageTextModel(),
    }
    return evaluate(
        bench.tasks,
        models,
        bootstrap=200,
        seed=1,
        subgraph_nodes=bench.subgraph_nodes,
        subgraph_edges=bench.subgraph_edges,
    )
