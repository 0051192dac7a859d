"""What the benchmark scores: the built cities' records, and the current runs of every model of the UGE family.

The Dagster asset ``benchmark_results`` reads these, scores them (:func:`~ugdata_pipeline.ugbench.evaluate.evaluate`)
and reports; the gathering across cities and the choice of runs live here, testable without Dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ugdata_pipeline.ugbench.models import UgeModel

if TYPE_CHECKING:
    from ugdata_pipeline.cities import CityRegistry
    from ugdata_pipeline.uge.runs import TableSource

__all__ = ["BenchmarkInputs", "FamilyModels", "benchmark_inputs", "family_models", "seed_note"]


@dataclass(frozen=True, slots=True)
class BenchmarkInputs:
    """The benchmark records of every city that has them, and those cities' subgraph tables."""

    cities: list[str]
    tasks: pd.DataFrame
    subgraph_nodes: pd.DataFrame
    subgraph_edges: pd.DataFrame


def benchmark_inputs(registry: CityRegistry, tables: TableSource) -> BenchmarkInputs:
    """
    ``benchmark_tasks``, ``subgraph_nodes`` and ``subgraph_edges`` of every registry city with benchmark records.

    Raises
    ------
    FileNotFoundError
        No city has ``benchmark_tasks``; the message names the job to run.
    """
    cities = [slug for slug in registry.slugs() if tables.has_table(slug, "benchmark_tasks")]
    if not cities:
        msg = "no city has benchmark_tasks yet; run city_dataset_job for at least one city first"
        raise FileNotFoundError(msg)

    def concat(asset: str) -> pd.DataFrame:
        return pd.concat([tables.read_table(slug, asset) for slug in cities], ignore_index=True)

    return BenchmarkInputs(cities, concat("benchmark_tasks"), concat("subgraph_nodes"), concat("subgraph_edges"))


@dataclass(frozen=True, slots=True)
class FamilyModels:
    """The family's current runs that exist (model -> one model per seed), and the seeds each model lacks."""

    models: dict[str, list[UgeModel]]
    missing: dict[str, int]  # model -> seeds without a current run (models with none included)
    seeds: list[int]

    def warning(self) -> str | None:
        """What a benchmark without the whole family cannot claim (None when every model has every seed)."""
        if not self.missing:
            return None
        lacking = ", ".join(f"{name} ({n} of {len(self.seeds)} seeds missing)" for name, n in self.missing.items())
        return (
            f"benchmarking without trained runs for {lacking}; materialize them in training_job to compare the "
            "whole family"
        )


def family_models(root: str | Path, seeds: Sequence[int]) -> FamilyModels:
    """
    The current run of every model of the family for every seed in ``seeds`` (``models/<name>/current.json``).

    Raises
    ------
    FileNotFoundError
        A pointer names a run whose folder is gone (a model must not drop out of the comparison silently), or no
        model has any run; the message names what to train.
    """
    from ugdata_pipeline.uge.family import MODEL_SPECS
    from ugdata_pipeline.uge.runs import current_checkpoints

    found = {
        spec.name: [
            UgeModel(path) for path in current_checkpoints(root, spec.name, seeds, require_present=True).values()
        ]
        for spec in MODEL_SPECS
    }
    missing = {name: len(seeds) - len(runs) for name, runs in found.items() if len(runs) < len(seeds)}
    models = {name: runs for name, runs in found.items() if runs}
    if not models:
        msg = "no trained model found; run training_job first"
        raise FileNotFoundError(msg)
    return FamilyModels(models=models, missing=missing, seeds=list(seeds))


def seed_note(seeds: Sequence[int]) -> str:
    """The report's note on what the intervals cover, given the training seeds."""
    return (
        f"Every model was trained with {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); with one seed "
        "the intervals cover the sampling of places, not the variability of training."
    )
