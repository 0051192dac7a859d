"""UGE training assets: the model family of :mod:`ugdata_pipeline.uge.runs`, trained on every training city.

One asset per model (baseline, stage 1, stage 2 and its two graph ablations), each trained once per seed of the
``trainer`` resource on one shared step budget. Run bookkeeping (fingerprints, reuse, resume, the ``current.json``
pointer with root-relative paths) lives in the core; these assets load inputs, call it and report.
"""

import json
import os
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from ugdata_pipeline.assets._metadata import png
from ugdata_pipeline.io_managers import frame_to_parquet_bytes, write_bytes_atomic
from ugdata_pipeline.resources import CityRegistryResource, StorageResource, TrainerResource
from ugdata_pipeline.uge.family import MODEL_SPECS, ModelSpec

MODEL_ASSETS = [dg.AssetKey(f"uge_{spec.name}") for spec in MODEL_SPECS]


def _training_inputs(
    cities: CityRegistryResource,
    storage: StorageResource,
    stage: int,
) -> tuple[list[str], pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    registry = cities.registry()
    training = [s for s in registry.slugs() if registry.get(s).split == "train"]
    slugs = [s for s in training if storage.has_table(s, "training_records")]
    if not slugs:
        msg = (
            "no training city has training_records yet; run city_dataset_job for a city with split: train "
            f"(training cities: {training})"
        )
        raise FileNotFoundError(msg)
    records = pd.concat([storage.read_table(s, "training_records") for s in slugs], ignore_index=True)
    if stage < 2:
        return slugs, records, None, None
    nodes = pd.concat([storage.read_table(s, "subgraph_nodes") for s in slugs], ignore_index=True)
    edges = pd.concat([storage.read_table(s, "subgraph_edges") for s in slugs], ignore_index=True)
    return slugs, records, nodes, edges


def _train_model(spec: ModelSpec):
    @dg.asset(
        name=f"uge_{spec.name}",
        deps=[
            dg.AssetDep("training_records"),
            dg.AssetDep("subgraph_nodes"),
            *([dg.AssetKey(f"uge_{spec.parent}")] if spec.parent else []),
        ],
        group_name="uge",
        kinds={"pytorch"},
        pool="gpu",
        description=spec.description,
    )
    def train_asset(
        context: dg.AssetExecutionContext,
        cities: CityRegistryResource,
        storage: StorageResource,
        trainer: TrainerResource,
    ) -> dg.MaterializeResult:
        from ugdata_pipeline.uge.data import SubgraphTables
        from ugdata_pipeline.uge.runs import train_seed

        slugs, records, nodes, edges = _training_inputs(cities, storage, spec.stage)
        subgraphs = SubgraphTables(nodes, edges) if spec.stage == 2 else None
        root = storage.local_dir()
        base = trainer.base_config()
        runs = []
        for seed in trainer.seed_list():
            context.log.info(f"{spec.name}: seed {seed}, {trainer.steps * spec.step_factor} steps")
            launch = None
            if trainer.launcher == "accelerate":

                def launch(config, init_from, *, _records=records, _subgraphs=subgraphs):
                    return _launch_with_pipes(context, trainer, _records, _subgraphs, config, root, init_from)
            elif trainer.launcher != "in_process":
                msg = f"trainer launcher {trainer.launcher!r} is unknown; use in_process or accelerate"
                raise ValueError(msg)
            runs.append(
                train_seed(
                    spec,
                    records,
                    root=root,
                    base=base,
                    steps=trainer.steps,
                    seed=seed,
                    cities=slugs,
                    subgraphs=subgraphs,
                    launch=launch,
                    on_step=_step_logger(context, f"{spec.name} seed {seed}"),
                )
            )
        first = runs[0].result
        curve = png(storage.city_path("models", spec.name, "loss_curve.png"), first.curve_png, alt="loss_curve")
        val = {f"val/{k}": float(v) for k, v in first.best_metrics.items()}
        train_loss = first.history.loc[first.history["split"] == "train", "loss"] if len(first.history) else None
        return dg.MaterializeResult(
            metadata={
                "cities": ", ".join(slugs),
                "seeds": ", ".join(str(r.seed) for r in runs),
                "steps": first.steps,
                "fingerprints": ", ".join(r.fingerprint for r in runs),
                "checkpoint": dg.MetadataValue.path(str(runs[0].checkpoint)),
                "reused_finished_run": bool(first.resumed and first.samples_per_s == 0),
                "samples_per_s": float(round(first.samples_per_s, 1)),
                "final_train_loss": float(train_loss.tail(20).mean())
                if train_loss is not None and len(train_loss)
                else float("nan"),
                **{f"params/{k}": v for k, v in first.params_trained.items()},
                **val,
                **curve,
            }
        )

    return train_asset


def _step_logger(context: dg.AssetExecutionContext, what: str):
    def log(step: int, figures: dict[str, float]) -> None:
        if step % 50 == 0:
            context.log.info(f"{what}: step {step}, " + ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))

    return log


def pipes_extras(config, *, inputs: Path, root: Path, init_from: Path | None) -> dict[str, object]:
    """What the training subprocesses receive through Pipes (JSON): read back by ``train_entry.config_from_extras``."""
    return {
        "inputs": str(inputs),
        "root": str(root),
        "config": config.to_dict(),
        "init_from": str(init_from) if init_from else None,
    }


def _launch_with_pipes(context, trainer, records, subgraphs, config, root, init_from):
    """Train in ``accelerate launch`` subprocesses (DDP), reporting back through Dagster Pipes."""
    from ugdata_pipeline.uge.train import TrainResult

    out_dir = Path(config.out_dir)
    inputs = out_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(inputs / "records.parquet", frame_to_parquet_bytes(records))
    if subgraphs is not None:
        write_bytes_atomic(inputs / "subgraph_nodes.parquet", frame_to_parquet_bytes(subgraphs.nodes))
        write_bytes_atomic(inputs / "subgraph_edges.parquet", frame_to_parquet_bytes(subgraphs.edges))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(trainer.num_processes),
        "--mixed_precision",
        trainer.precision,
        "-m",
        "ugdata_pipeline.assets.train_entry",
    ]
    extras = pipes_extras(config, inputs=inputs, root=root, init_from=init_from)
    client = dg.PipesSubprocessClient(env=dict(os.environ))
    client.run(command=command, context=context, extras=extras).get_results()
    summary = json.loads((out_dir / "pipes_result.json").read_text(encoding="utf-8"))
    return TrainResult(
        checkpoint_dir=Path(summary["checkpoint_dir"]),
        last_checkpoint_dir=Path(summary["last"]),
        best_metrics=summary["best_metrics"],
        history=pd.DataFrame(),
        curve_png=(out_dir / "loss_curve.png").read_bytes(),
        params_trained=summary["params_trained"],
        steps=summary["steps"],
        samples_per_s=summary["samples_per_s"],
        resumed=summary["resumed"],
    )


ALL_UGE_ASSETS = [_train_model(spec) for spec in MODEL_SPECS]
