"""UGE training assets: the baseline, stage 1 and stage 2 models, trained on every training city's records.

Each model lives in ``<root>/models/<name>/<fingerprint>/`` where the fingerprint hashes its records, subgraphs,
configuration and starting checkpoint: a rerun with nothing changed finds the finished run and trains nothing, and
a killed run resumes from its last checkpoint. ``<root>/models/<name>/current.json`` points at the model in use.
"""

import hashlib
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import dagster as dg
import pandas as pd

from ugdata_pipeline.assets._metadata import png
from ugdata_pipeline.io_managers import frame_to_parquet_bytes, write_bytes_atomic
from ugdata_pipeline.resources import CityRegistryResource, StorageResource, TrainerResource

#: (asset name, model name, stage, variant, model it starts from)
MODELS = (
    ("uge_baseline", "baseline", 1, "baseline", None),
    ("uge_stage1", "stage1", 1, "ugdata", None),
    ("uge_stage2", "stage2", 2, "ugdata", "stage1"),
)
MODEL_ASSETS = [dg.AssetKey(asset) for asset, *_ in MODELS]


def model_checkpoint(storage: StorageResource, name: str) -> Path:
    """The best checkpoint of the current ``name`` model (may not exist yet)."""
    pointer = storage.local_dir("models", name) / "current.json"
    if not pointer.exists():
        return pointer.parent / "missing"
    return Path(json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"])


def _training_inputs(cities: CityRegistryResource, storage: StorageResource, stage: int,
                     ) -> tuple[list[str], pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:  # fmt: skip
    registry = cities.registry()
    training = [s for s in registry.slugs() if registry.get(s).split == "train"]
    slugs = [s for s in training if storage.has_table(s, "training_records")]
    if not slugs:
        msg = ("no training city has training_records yet; run city_dataset_job for a city with split: train "
               f"(training cities: {training})")
        raise FileNotFoundError(msg)
    records = pd.concat([storage.read_table(s, "training_records") for s in slugs], ignore_index=True)
    if stage < 2:
        return slugs, records, None, None
    nodes = pd.concat([storage.read_table(s, "subgraph_nodes") for s in slugs], ignore_index=True)
    edges = pd.concat([storage.read_table(s, "subgraph_edges") for s in slugs], ignore_index=True)
    return slugs, records, nodes, edges


def _fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode("utf-8"))
    return digest.hexdigest()[:16]


def _train_model(asset: str, name: str, stage: int, variant: str, parent: str | None):
    @dg.asset(
        name=asset,
        deps=[dg.AssetDep("training_records"), dg.AssetDep("subgraph_nodes"),
              *([dg.AssetKey(f"uge_{parent}")] if parent else [])],  # fmt: skip
        group_name="uge",
        kinds={"pytorch"},
        pool="gpu",
        description=f"UGE {name}: stage {stage} on {variant} records of the training cities.",
    )
    def train_asset(context: dg.AssetExecutionContext, cities: CityRegistryResource, storage: StorageResource,
                    trainer: TrainerResource) -> dg.MaterializeResult:  # fmt: skip
        from ugdata_pipeline.uge.data import SubgraphTables
        from ugdata_pipeline.uge.train import TrainConfig, train

        slugs, records, nodes, edges = _training_inputs(cities, storage, stage)
        records = records[(records["stage"] == stage) & (records["variant"] == variant)].reset_index(drop=True)
        init_from = model_checkpoint(storage, parent) if parent else None
        if init_from is not None and not init_from.exists():
            msg = f"{asset} starts from the {parent} model, which is not trained yet; materialize uge_{parent} first"
            raise FileNotFoundError(msg)
        config = TrainConfig(stage=stage, variant=variant, epochs=trainer.epochs, batch_size=trainer.batch_size,
                             max_steps=trainer.max_steps, precision=trainer.precision, cpu=trainer.cpu,
                             backbone=trainer.backbone)  # fmt: skip
        fingerprint = _fingerprint(frame_to_parquet_bytes(records), json.dumps(asdict(config), sort_keys=True,
                                   default=str), str(init_from or ""),  # fmt: skip
                                   *([frame_to_parquet_bytes(nodes), frame_to_parquet_bytes(edges)] if stage == 2
                                     else []))  # fmt: skip
        out_dir = storage.local_dir("models", name, fingerprint)
        config = replace(config, out_dir=str(out_dir))
        root = storage.local_dir()
        subgraphs = SubgraphTables(nodes, edges) if stage == 2 else None
        if trainer.launcher == "accelerate":
            result = _launch_with_pipes(context, trainer, records, subgraphs, config, root, init_from, out_dir)
        elif trainer.launcher == "in_process":
            result = train(records, root=root, subgraphs=subgraphs, config=config, init_from=init_from, progress=False,
                           on_step=_step_logger(context))  # fmt: skip
        else:
            msg = f"trainer launcher {trainer.launcher!r} is unknown; use in_process or accelerate"
            raise ValueError(msg)
        pointer = {"checkpoint": str(result.checkpoint_dir), "fingerprint": fingerprint, "cities": slugs}
        write_bytes_atomic(storage.local_dir("models", name) / "current.json", json.dumps(pointer).encode("utf-8"))
        curve = png(storage.city_path("models", name, "loss_curve.png"), result.curve_png, alt="loss_curve")
        return dg.MaterializeResult(metadata={
            "cities": ", ".join(slugs), "records": len(records), "checkpoint": dg.MetadataValue.path(
                str(result.checkpoint_dir)), "fingerprint": fingerprint, "steps": result.steps,
            "reused_finished_run": bool(result.resumed and result.samples_per_s == 0),
            "samples_per_s": round(result.samples_per_s, 1),
            **{f"params/{k}": v for k, v in result.params_trained.items()},
            **{f"val/{k}": round(float(v), 4) for k, v in result.best_metrics.items()},
            **curve,
        })  # fmt: skip

    return train_asset


def _step_logger(context: dg.AssetExecutionContext):
    def log(step: int, figures: dict[str, float]) -> None:
        if step % 20 == 0:
            context.log.info(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))

    return log


def _launch_with_pipes(context, trainer, records, subgraphs, config, root, init_from, out_dir):
    """Train in ``accelerate launch`` subprocesses (DDP), reporting back through Dagster Pipes."""
    from ugdata_pipeline.uge.train import TrainResult

    inputs = out_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(inputs / "records.parquet", frame_to_parquet_bytes(records))
    if subgraphs is not None:
        write_bytes_atomic(inputs / "subgraph_nodes.parquet", frame_to_parquet_bytes(subgraphs.nodes))
        write_bytes_atomic(inputs / "subgraph_edges.parquet", frame_to_parquet_bytes(subgraphs.edges))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(trainer.num_processes),
               "--mixed_precision", trainer.precision, "-m", "ugdata_pipeline.assets.train_entry"]  # fmt: skip
    extras = {"inputs": str(inputs), "root": str(root), "config": asdict(config),
              "init_from": str(init_from) if init_from else None}  # fmt: skip
    client = dg.PipesSubprocessClient(env=dict(os.environ))
    client.run(command=command, context=context, extras=extras).get_results()
    summary = json.loads((out_dir / "pipes_result.json").read_text(encoding="utf-8"))
    return TrainResult(checkpoint_dir=Path(summary["checkpoint_dir"]), last_checkpoint_dir=Path(summary["last"]),
                       best_metrics=summary["best_metrics"], history=pd.DataFrame(),
                       curve_png=(out_dir / "loss_curve.png").read_bytes(), params_trained=summary["params_trained"],
                       steps=summary["steps"], samples_per_s=summary["samples_per_s"],
                       resumed=summary["resumed"])  # fmt: skip


ALL_UGE_ASSETS = [_train_model(*spec) for spec in MODELS]
