"""The uge_* assets as a user meets them (materialized through Dagster on a tiny data root): an unchanged rerun
trains nothing, ``current.json`` points at the newest run with root-relative paths, a stage-2 model without a
trained parent fails naming it, and the accelerate launcher round-trips its config and result through Pipes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ugdata_pipeline.assets.uge import ALL_UGE_ASSETS
from ugdata_pipeline.resources import CityRegistryResource, StorageResource, TrainerResource
from ugdata_pipeline.table_files import table_path
from ugdata_pipeline.uge.checkpoint import WEIGHTS_FILE, read_checkpoint_config, read_trainer_state
from ugdata_pipeline_tests.uge_tests.synthetic import make_dataset

CITY = "tinytown"
ASSETS = {asset.key.to_user_string(): asset for asset in ALL_UGE_ASSETS}
REGISTRY = (
    "cities:\n"
    f"  {CITY}: {{name: Tinytown, country: Finland, split: train, source: {{kind: bundled, extract: test.osm.pbf}}}}\n"
    "  faraway: {name: Faraway, country: Finland, split: held_out, source: {kind: bundled, extract: test.osm.pbf}}\n"
)
#: a tiny budget: two optimizer steps of eight records
TRAINER = {"steps": 2, "batch_size": 8, "lr": 2e-3, "cpu": True, "threads": 1}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root as city_dataset_job leaves it for one training city: tables and images, no models."""
    root = tmp_path_factory.mktemp("uge_assets") / "data"
    records, subgraphs = make_dataset(root)
    tables = {"training_records": records, "subgraph_nodes": subgraphs.nodes, "subgraph_edges": subgraphs.edges}
    for name, frame in tables.items():
        path = table_path(str(root), name, CITY)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path.path, index=False)
    (root.parent / "cities.yaml").write_text(REGISTRY, encoding="utf-8")
    return root


def _copy(data_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    (tmp_path / "cities.yaml").write_text(REGISTRY, encoding="utf-8")
    return root


def materialize(
    root: Path, model: str, instance: dg.DagsterInstance | None = None, **trainer: object
) -> dg.ExecuteInJobResult:
    """Materialize ``uge_<model>`` alone (its upstream tables are on disk) with the registry beside the root."""
    return dg.materialize(
        [ASSETS[f"uge_{model}"]],
        raise_on_error=False,
        instance=instance,
        resources={
            "cities": CityRegistryResource(path=str(root.parent / "cities.yaml")),
            "storage": StorageResource(root=str(root)),
            "trainer": TrainerResource(**{**TRAINER, **trainer}),
        },
    )


def metadata(result: dg.ExecuteInJobResult) -> dict[str, object]:
    assert result.success, _failure(result)
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _failure(result: dg.ExecuteInJobResult) -> str:
    failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
    if failure is None:
        return ""
    error = failure.event_specific_data.error
    return (error.cause or error).message


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:  # disposed: its temporary folder is removed
        yield instance


def _pipes_logs(instance: dg.DagsterInstance, result: dg.ExecuteInJobResult) -> list[str]:
    """What a Pipes subprocess logged into the run ("[pipes] external process successfully opened ...")."""
    return [log.user_message for log in instance.all_logs(result.run_id) if "[pipes]" in log.user_message]


def pointer(root: Path, model: str) -> dict:
    return json.loads((root / "models" / model / "current.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def first_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """uge_stage1 materialized once, in process, on a copy of the data root."""
    root = _copy(data_root, tmp_path_factory.mktemp("first"))
    return root, metadata(materialize(root, "stage1"))


def test_an_unchanged_rematerialization_trains_nothing_and_the_pointer_follows_new_runs(
    first_run: tuple[Path, dict[str, object]],
) -> None:
    root, first = first_run
    assert first["reused_finished_run"] is False and first["steps"] == 2 and first["samples_per_s"] > 0
    assert first["cities"] == CITY and first["seeds"] == "0"
    # figures a user plots are floats; the loss curve is a file under reports/, the event holds a thumbnail only
    assert all(isinstance(first[key], float) for key in ("samples_per_s", "final_train_loss", "val/mrr"))
    curve = root / "reports" / "uge" / "stage1_loss_curve.png"
    assert first["loss_curve_path"] == str(curve) and curve.read_bytes()[:4] == b"\x89PNG"
    assert first["loss_curve"].startswith("![loss_curve](data:image/png;base64,") and len(first["loss_curve"]) <= 1000
    fingerprint = first["fingerprints"]
    run = f"models/stage1/seed-0/{fingerprint}"
    assert pointer(root, "stage1") == {
        "cities": [CITY],
        "seeds": {"0": {"checkpoint": f"{run}/checkpoints/best", "fingerprint": fingerprint}},
    }
    assert first["checkpoint"] == str(root / run / "checkpoints" / "best")
    weights = root / run / "checkpoints" / "last" / WEIGHTS_FILE
    written = weights.stat().st_mtime_ns

    again = metadata(materialize(root, "stage1"))
    assert again["reused_finished_run"] is True and again["samples_per_s"] == 0.0
    assert again["fingerprints"] == fingerprint and again["steps"] == 2
    assert weights.stat().st_mtime_ns == written  # nothing was trained or saved
    assert again["val/mrr"] == first["val/mrr"] and again["final_train_loss"] == first["final_train_loss"]

    # another budget is another run; the pointer moves to it (root-relative) and the old run stays on disk
    longer = metadata(materialize(root, "stage1", steps=3))
    assert longer["fingerprints"] != fingerprint and longer["reused_finished_run"] is False
    assert pointer(root, "stage1")["seeds"]["0"] == {
        "checkpoint": f"models/stage1/seed-{0}/{longer['fingerprints']}/checkpoints/best",
        "fingerprint": longer["fingerprints"],
    }
    assert weights.is_file()


def test_stage2_without_a_trained_parent_fails_naming_the_parent_and_the_fix(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    result = materialize(root, "stage2")
    assert not result.success
    assert _failure(result).endswith(
        "TrainingDataError: stage2 (seed 0) starts from the stage1 model, which has no trained run for this "
        "seed; train stage1 first (materialize uge_stage1)\n"
    )
    assert not (root / "models" / "stage2").exists()


def test_an_unknown_launcher_fails_before_reading_inputs(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "empty"  # no tables: the launcher is checked first
    root.mkdir()
    (tmp_path / "cities.yaml").write_text(REGISTRY, encoding="utf-8")
    result = materialize(root, "stage1", launcher="slurm")
    assert "trainer launcher 'slurm' is unknown; use one of in_process, accelerate" in _failure(result)


def test_the_accelerate_launcher_round_trips_config_and_result_through_pipes(
    data_root: Path, first_run: tuple[Path, dict[str, object]], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The same run through ``accelerate launch`` subprocesses and Pipes reports what the in-process run did."""
    root = _copy(data_root, tmp_path)
    _, in_process = first_run
    launched = materialize(root, "stage1", instance, launcher="accelerate", num_processes=1, precision="no")
    meta = metadata(launched)
    assert _pipes_logs(instance, launched)  # a subprocess ran and reported through Pipes
    run = root / "models" / "stage1" / "seed-0" / meta["fingerprints"]
    # the subprocess trained with the config the core built (same fingerprint, so same settings and records) ...
    assert meta["fingerprints"] == in_process["fingerprints"]
    saved = read_checkpoint_config(run / "checkpoints" / "best")["train"]
    assert (saved["steps"], saved["batch_size"], saved["out_dir"], saved["threads"]) == (2, 8, ".", 1)
    # ... and its result came back whole: the figures are the subprocess run's own, history and curve included
    assert meta["reused_finished_run"] is False and meta["samples_per_s"] > 0
    history = pd.read_csv(run / "history.csv")
    assert meta["final_train_loss"] == float(history.loc[history["split"] == "train", "loss"].mean())
    best = read_trainer_state(run / "checkpoints" / "last")["best_metrics"]
    assert {k: v for k, v in meta.items() if k.startswith("val/")} == {f"val/{k}": v for k, v in best.items()}
    assert (run / "curve.png").read_bytes()[:4] == b"\x89PNG"
    # the same run as in process: the same budget and model, and the same figures up to float rounding (the
    # test process's text-embedding cache was filled by earlier runs in other batch compositions)
    assert (meta["steps"], meta["params/backbone"], meta["params/frozen"]) == (
        in_process["steps"],
        in_process["params/backbone"],
        in_process["params/frozen"],
    )
    for key in ("final_train_loss", "val/mrr", "val/loss"):
        assert meta[key] == pytest.approx(in_process[key], rel=1e-5), key
    assert pointer(root, "stage1")["seeds"]["0"]["checkpoint"] == (
        f"models/stage1/seed-0/{meta['fingerprints']}/checkpoints/best"
    )
    # an unchanged rerun is read back here: nothing is staged for, or sent to, a subprocess
    staged = run / "inputs" / "records.parquet"
    staged_at, result_at = staged.stat().st_mtime_ns, (run / "pipes_result.json").stat().st_mtime_ns
    again = materialize(root, "stage1", instance, launcher="accelerate", num_processes=1, precision="no")
    assert metadata(again)["reused_finished_run"] is True
    assert (staged.stat().st_mtime_ns, (run / "pipes_result.json").stat().st_mtime_ns) == (staged_at, result_at)
    assert _pipes_logs(instance, again) == []
