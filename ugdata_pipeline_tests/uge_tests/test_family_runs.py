"""The family's run bookkeeping in the core (uge.runs): inputs across cities, every seed of a model, its figures."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import TrainingDataError
from ugdata_pipeline.uge.family import model_spec
from ugdata_pipeline.uge.runs import TrainingInputs, _write_pointer, run_figures, train_model, training_inputs
from ugdata_pipeline.uge.train import TrainConfig
from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT

Synthetic = tuple[Path, pd.DataFrame, SubgraphTables]

REGISTRY = """cities:
  alpha: {name: Alpha, country: Finland, split: train, source: {kind: bundled, extract: test.osm.pbf}}
  beta: {name: Beta, country: Finland, split: held_out, source: {kind: bundled, extract: test.osm.pbf}}
  gamma: {name: Gamma, country: Finland, split: train, source: {kind: bundled, extract: test.osm.pbf}}
  delta: {name: Delta, country: Finland, split: train, source: {kind: bundled, extract: test.osm.pbf}}
"""


class Tables:
    """Per-city tables in memory (what StorageResource reads from the data root)."""

    def __init__(self, tables: dict[tuple[str, str], pd.DataFrame]) -> None:
        self.tables, self.read = tables, []

    def has_table(self, city: str, asset: str) -> bool:
        return (city, asset) in self.tables

    def read_table(self, city: str, asset: str) -> pd.DataFrame:
        self.read.append((city, asset))
        return self.tables[(city, asset)]


def test_training_inputs_come_from_the_training_cities_that_have_records(write_registry) -> None:
    registry = load_registry(write_registry(REGISTRY))
    frame = {slug: pd.DataFrame({"record_id": [f"{slug}-1", f"{slug}-2"]}) for slug in ("alpha", "beta", "gamma")}
    tables = Tables(
        {
            **{(slug, "training_records"): frame[slug] for slug in frame},
            **{(slug, "subgraph_nodes"): frame[slug].assign(kind="node") for slug in frame},
            **{(slug, "subgraph_edges"): frame[slug].assign(kind="edge") for slug in frame},
        }
    )
    stage1 = training_inputs(registry, tables, stage=1)
    # beta is held out; delta has no records yet
    assert stage1.cities == ["alpha", "gamma"] and stage1.subgraphs is None
    assert stage1.records["record_id"].tolist() == ["alpha-1", "alpha-2", "gamma-1", "gamma-2"]
    assert not any(asset.startswith("subgraph") for _, asset in tables.read)  # stage 1 reads no graphs
    stage2 = training_inputs(registry, tables, stage=2)
    assert stage2.subgraphs.nodes["record_id"].tolist() == stage2.subgraphs.edges["record_id"].tolist()
    assert stage2.subgraphs.nodes["record_id"].tolist() == ["alpha-1", "alpha-2", "gamma-1", "gamma-2"]
    with pytest.raises(
        FileNotFoundError,
        match=r"no training city has training_records yet; run city_dataset_job for a city with split: train "
        r"\(training cities: \['alpha', 'gamma', 'delta'\]\)",
    ):
        training_inputs(registry, Tables({}), stage=1)


def test_a_missing_parent_seed_fails_before_any_seed_trains(synthetic: Synthetic, tmp_path: Path) -> None:
    _, records, subgraphs = synthetic
    # stage1 has a current run for seed 0 only (the folder exists; it is never loaded)
    (tmp_path / "models" / "stage1" / "seed-0" / "abc" / "best").mkdir(parents=True)
    _write_pointer(tmp_path, "stage1", 0, "abc", tmp_path / "models" / "stage1" / "seed-0" / "abc" / "best", ["x"])
    inputs = TrainingInputs(cities=["x"], records=records, subgraphs=subgraphs)
    with pytest.raises(
        TrainingDataError,
        match=r"^stage2 \(seed 1\) starts from the stage1 model, which has no trained run for this seed; "
        r"train stage1 first \(materialize uge_stage1\)$",
    ):
        train_model(model_spec("stage2"), inputs, root=tmp_path, base=TrainConfig(), steps=1, seeds=[0, 1])
    assert not (tmp_path / "models" / "stage2").exists()  # seed 0 did not start either


def test_train_model_trains_every_seed_and_reports_the_first(synthetic: Synthetic, tmp_path: Path) -> None:
    source, records, _ = synthetic
    root = tmp_path / "root"
    for path in sorted(set(records["image_path"])):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes((source / path).read_bytes())
    inputs = TrainingInputs(cities=["x"], records=records, subgraphs=None)
    base = TrainConfig(batch_size=8, lr=2e-3, backbone_config=SMALL_COMPACT)
    steps_seen: list[tuple[int, int]] = []
    runs = train_model(
        model_spec("baseline"),
        inputs,
        root=root,
        base=base,
        steps=1,
        seeds=[3, 4],
        on_step=lambda seed, step, figures: steps_seen.append((seed, step)),
    )
    # the baseline gets twice the budget; every seed trains, in order
    assert steps_seen == [(3, 1), (3, 2), (4, 1), (4, 2)]
    figures = run_figures(runs)
    first = runs[0].result
    train_loss = first.history.loc[first.history["split"] == "train", "loss"]
    assert figures["seeds"] == "3, 4" and figures["steps"] == 2
    assert figures["fingerprints"] == f"{runs[0].fingerprint}, {runs[1].fingerprint}"
    assert figures["reused_finished_run"] is False and figures["samples_per_s"] > 0
    assert figures["final_train_loss"] == pytest.approx(float(train_loss.mean()))
    assert {k: v for k, v in figures.items() if k.startswith("params/")} == {
        f"params/{k}": v for k, v in first.params_trained.items()
    }
    assert figures["val/mrr"] == pytest.approx(first.best_metrics["mrr"])
    again = run_figures(train_model(model_spec("baseline"), inputs, root=root, base=base, steps=1, seeds=[3]))
    assert again["reused_finished_run"] is True and again["samples_per_s"] == 0.0
    assert again["fingerprints"] == runs[0].fingerprint and again["steps"] == 2
    assert not math.isnan(again["final_train_loss"])  # the finished run's history is read back
