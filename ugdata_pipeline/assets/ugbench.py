"""UGBench assets: benchmark records per city, then every trained model scored on every built city."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from ugdata_pipeline.assets._metadata import check_result, png_file, preview
from ugdata_pipeline.assets.partitions import city_partitions
from ugdata_pipeline.assets.uge import MODEL_ASSETS, model_checkpoint
from ugdata_pipeline.graph.validate import CheckOutcome
from ugdata_pipeline.resources import CityRegistryResource, StorageResource
from ugdata_pipeline.ugbench._records import BenchConfig, CityInputs
from ugdata_pipeline.ugbench.tasks import build_tasks, task_summary, validate_tasks

_INPUTS = ("images", "nodes", "edges", "subgraph_nodes", "subgraph_edges")


class BenchTasksConfig(dg.Config):
    seed: int = Field(default=0, description="Seed of every distractor and sample choice.")
    n_distractors: int = Field(default=19, description="Distractors per record (>= 19).")
    max_records_per_task: int | None = Field(default=300, description="Per task, query type and city (None: all).")


@dg.asset(
    ins={name: dg.AssetIn(name) for name in _INPUTS},
    partitions_def=city_partitions,
    group_name="benchmark_tasks",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
    check_specs=[dg.AssetCheckSpec("benchmark_records_valid", asset="benchmark_tasks", blocking=True,
                                   description="One correct candidate, >= 19 distractors in the distance band, no "
                                               "query-answer leakage, records only from this city.")],  # fmt: skip
)
def benchmark_tasks(
    context: dg.AssetExecutionContext,
    config: BenchTasksConfig,
    cities: CityRegistryResource,
    images: pd.DataFrame,
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    subgraph_nodes: pd.DataFrame,
    subgraph_edges: pd.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Geolocation, retrieval, perception and grounding records from the city's test images."""
    city = cities.city(context.partition_key)
    core = BenchConfig(seed=config.seed, n_distractors=config.n_distractors,
                       max_records_per_task=config.max_records_per_task)  # fmt: skip
    inputs = CityInputs(city=city.slug, role=city.split, images=images, nodes=nodes, edges=edges,
                        subgraph_nodes=subgraph_nodes, subgraph_edges=subgraph_edges)  # fmt: skip
    tasks, stats = build_tasks([inputs], config=core)
    problems = validate_tasks(tasks, config=core, images_by_city={city.slug: set(images["image_id"].astype(str))})
    yield dg.Output(tasks, metadata={
        "count": len(tasks), "by_task": dg.MetadataValue.json(task_summary(tasks)),
        "skipped": dg.MetadataValue.json({k: v for k, v in stats.as_metadata().items() if k.startswith("skipped")}),
        "preview": preview(tasks),
    })  # fmt: skip
    outcome = CheckOutcome(passed=not problems, observed=len(problems), expected=0, examples=problems[:5])
    yield check_result("benchmark_records_valid", outcome, asset_key="benchmark_tasks")


class BenchmarkConfig(dg.Config):
    modes: list[str] = Field(default=["image", "fusion", "text"], description="Query modes to score.")
    bootstrap: int = Field(default=1000, description="Bootstrap resamples for the 95 % intervals.")
    seed: int = Field(default=0, description="Bootstrap seed.")
    limit_per_group: int | None = Field(default=None, description="Records per (task, city, split, mode) at most.")


@dg.asset(
    deps=[dg.AssetDep("benchmark_tasks"), dg.AssetDep("subgraph_nodes"), *MODEL_ASSETS],
    group_name="ugbench",
    kinds={"pytorch"},
    pool="gpu",
)
def benchmark_results(
    context: dg.AssetExecutionContext,
    config: BenchmarkConfig,
    cities: CityRegistryResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Baseline, stage 1 and stage 2 scored on every built city: Hit@K, MRR, mean rank with intervals, a report."""
    from ugdata_pipeline.ugbench.evaluate import evaluate
    from ugdata_pipeline.ugbench.models import UgeModel
    from ugdata_pipeline.ugbench.report import paper_table, results_metadata, write_report

    built = [slug for slug in cities.registry().slugs() if storage.has_table(slug, "benchmark_tasks")]
    if not built:
        msg = "no city has benchmark_tasks yet; run city_dataset_job for at least one city first"
        raise FileNotFoundError(msg)
    tasks = pd.concat([storage.read_table(slug, "benchmark_tasks") for slug in built], ignore_index=True)
    sub_nodes = pd.concat([storage.read_table(slug, "subgraph_nodes") for slug in built], ignore_index=True)
    sub_edges = pd.concat([storage.read_table(slug, "subgraph_edges") for slug in built], ignore_index=True)
    models = {name: UgeModel(model_checkpoint(storage, name)) for name in ("baseline", "stage1", "stage2")
              if model_checkpoint(storage, name).exists()}  # fmt: skip
    if not models:
        msg = "no trained model found; run training_job first"
        raise FileNotFoundError(msg)
    context.log.info(f"scoring {sorted(models)} on {len(tasks)} records of {built}")
    results = evaluate(tasks, models, modes=config.modes, bootstrap=config.bootstrap, seed=config.seed,
                       subgraph_nodes=sub_nodes, subgraph_edges=sub_edges, image_root=storage.local_dir(),
                       cache_dir=storage.local_dir("_cache", "embeddings"),
                       limit_per_group=config.limit_per_group)  # fmt: skip
    report_dir = storage.local_dir("reports", "ugbench")
    report = write_report(results, report_dir, baseline="baseline" if "baseline" in models else None)
    charts = {}
    for chart in sorted(report_dir.glob("*.png"))[:4]:
        charts |= png_file(chart, alt=chart.stem)
    meta = {k: v for k, v in results_metadata(results).items() if isinstance(v, int | float | str)}
    return dg.MaterializeResult(metadata={
        **meta, "cities": ", ".join(built), "models": ", ".join(sorted(models)),
        "report": dg.MetadataValue.path(str(report)),
        "table": dg.MetadataValue.md(paper_table(results, baseline="baseline" if "baseline" in models else None)),
        **charts,
    })  # fmt: skip
