"""UGE training assets: the model family of :mod:`ugdata_pipeline.uge.runs`, trained on every training city.

One asset per model (baseline, stage 1, stage 2 and its two graph ablations), each trained once per seed of the
``trainer`` resource on one shared step budget. Run bookkeeping (fingerprints, reuse, resume, the ``current.json``
pointer with root-relative paths) lives in the core; these assets load inputs, call it and report.
"""

import os

import dagster as dg

from ugdata_pipeline.assets._metadata import png
from ugdata_pipeline.resources import CityRegistryResource, StorageResource, TrainerResource
from ugdata_pipeline.uge.family import MODEL_SPECS, ModelSpec


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
        from ugdata_pipeline.uge.launch import launcher
        from ugdata_pipeline.uge.runs import run_figures, train_model, training_inputs

        root = storage.local_dir()
        launch = launcher(
            trainer.launcher,
            _pipes_runner(context),
            root=root,
            num_processes=trainer.num_processes,
            precision=trainer.precision,
        )
        inputs = training_inputs(cities.registry(), storage, stage=spec.stage)
        runs = train_model(
            spec,
            inputs,
            root=root,
            base=trainer.base_config(),
            steps=trainer.steps,
            seeds=trainer.seed_list(),
            launch=launch,
            on_step=_step_logger(context, spec.name),
        )
        # pictures of assets that span cities go under reports/ (a city's go under <city>/previews/)
        curve = storage.city_path("reports", "uge", f"{spec.name}_loss_curve.png")
        return dg.MaterializeResult(
            metadata={
                "cities": ", ".join(inputs.cities),
                **run_figures(runs),
                "checkpoint": dg.MetadataValue.path(str(runs[0].checkpoint)),
                **png(curve, runs[0].result.curve_png, alt="loss_curve"),
            }
        )

    return train_asset


def _step_logger(context: dg.AssetExecutionContext, model: str):
    def log(seed: int, step: int, figures: dict[str, float]) -> None:
        if step % 50 == 0:
            context.log.info(
                f"{model} seed {seed}: step {step}, " + ", ".join(f"{k}={v:.4g}" for k, v in figures.items())
            )

    return log


def _pipes_runner(context: dg.AssetExecutionContext):
    """Runs the launcher's command with Dagster Pipes, so the subprocesses' logs and messages reach this run."""

    def run(command: list[str], extras: dict[str, object]) -> None:
        client = dg.PipesSubprocessClient(env=dict(os.environ))
        client.run(command=command, context=context, extras=extras).get_results()

    return run


ALL_UGE_ASSETS = [_train_model(spec) for spec in MODEL_SPECS]
