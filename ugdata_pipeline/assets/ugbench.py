"""UGBench assets: benchmark records per city (guarded by blind scorers), then the model family scored on them."""

from collections.abc import Iterator

import dagster as dg
import geopandas as gpd
import pandas as pd
from pydantic import Field

from ugdata_pipeline.assets._config import dagster_config
from ugdata_pipeline.assets._metadata import check_result, png_file, preview
from ugdata_pipeline.assets.partitions import city_check, city_partitions
from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.resources import CityRegistryResource, StorageResource, TrainerResource
from ugdata_pipeline.table_files import table_path
from ugdata_pipeline.table_metadata import table_metadata
from ugdata_pipeline.ugbench import _records
from ugdata_pipeline.ugbench._records import CityInputs
from ugdata_pipeline.ugbench.tasks import build_tasks, read_query_subgraphs, task_summary, validate_tasks
from ugdata_pipeline.uge.family import MODEL_SPECS

_INPUTS = (
    "images",
    "nodes",
    "edges",
    "subgraphs",
    "osm_aois",
    "osm_pois",
    "osm_trees",
    "osm_streets",
)
MODEL_ASSETS = [dg.AssetKey(f"uge_{spec.name}") for spec in MODEL_SPECS]


# A pipeline run samples 300 records per (task, query type, city) unless told otherwise: enough for the report's
# intervals at a fraction of the scoring time; the core builds everything by default.
BenchConfig = dagster_config(_records.BenchConfig, run_defaults={"max_records_per_task": 300})


@dg.asset(
    ins={name: dg.AssetIn(name) for name in _INPUTS},
    # only the test images' rows of the long subgraph tables are read, from their table paths
    deps=["subgraph_nodes", "subgraph_edges"],
    partitions_def=city_partitions,
    group_name="benchmark_tasks",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
    check_specs=[
        city_check(
            "benchmark_records_valid",
            asset="benchmark_tasks",
            blocking=True,
            description="One correct candidate, groups that share one candidate set, distractors in "
            "the distance band, no query-answer leakage, records only from this city.",
        ),
        city_check(
            "no_blind_shortcut",
            asset="benchmark_tasks",
            blocking=True,
            description="No blind scorer (candidate-only, query-text-only, graph-only) beats chance "
            "by more than 5 points Hit@1 or Hit@5 on a headline row.",
        ),
    ],
)
def benchmark_tasks(
    context: dg.AssetExecutionContext,
    config: BenchConfig,
    cities: CityRegistryResource,
    storage: StorageResource,
    images: pd.DataFrame,
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    subgraphs: pd.DataFrame,
    osm_aois: pd.DataFrame,
    osm_pois: pd.DataFrame,
    osm_trees: pd.DataFrame,
    osm_streets: gpd.GeoDataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Geolocation, retrieval, perception and grounding records from the city's test images, with blind scorers."""
    from ugdata_pipeline.ugbench.blind import shortcut_problems
    from ugdata_pipeline.ugbench.evaluate import evaluate

    city = cities.city(context.partition_key)
    core = config.to_core()
    paths = [table_path(storage.root, name, city.slug) for name in ("subgraph_nodes", "subgraph_edges")]
    query = read_query_subgraphs(*paths, images, subgraphs)
    inputs = CityInputs(
        city=city.slug,
        role=city.split,
        images=images,
        nodes=nodes,
        edges=edges,
        subgraph_nodes=query.nodes,
        subgraph_edges=query.edges,
        crs_metric=city_metric_crs(osm_streets, where=f"city {city.slug!r}"),
        osm_aois=osm_aois,
        osm_pois=osm_pois,
        osm_trees=osm_trees,
        subgraph_image_ids=query.image_ids,
    )
    tasks, stats = build_tasks([inputs], config=core)
    problems = validate_tasks(tasks, config=core, images_by_city={city.slug: set(images["image_id"].astype(str))})
    blind = evaluate(tasks, {}, subgraph_nodes=query.nodes, subgraph_edges=query.edges, bootstrap=500).results
    shortcuts = shortcut_problems(blind)
    top = blind.assign(excess=blind["hit@5"] - blind["chance_hit@5"]).sort_values("excess", ascending=False)
    yield dg.Output(
        tasks,
        metadata={
            "by_task": dg.MetadataValue.json(task_summary(tasks)),
            "skipped": dg.MetadataValue.json({k: v for k, v in stats.as_metadata().items() if k.startswith("skipped")}),
            "clusters": int(tasks["cluster"].nunique()) if len(tasks) else 0,
            "preview": preview(
                tasks, columns=["record_id", "task", "query_type", "group_id", "cluster", "query_text", "ground_truth"]
            ),
            "blind_scorers": preview(
                top, rows=12, columns=["task", "query_type", "mode", "model", "hit@1", "hit@5", "chance_hit@5"]
            ),
        },
    )
    outcome = CheckOutcome(passed=not problems, observed=len(problems), expected=0, examples=problems[:5])
    yield check_result("benchmark_records_valid", outcome, asset_key="benchmark_tasks")
    outcome = CheckOutcome(
        passed=not shortcuts,
        observed=len(shortcuts),
        examples=shortcuts[:5],
        expected="no blind scorer more than 5 points above chance on a headline row",
    )
    yield check_result("no_blind_shortcut", outcome, asset_key="benchmark_tasks")


class BenchmarkConfig(dg.Config):
    modes: list[str] = Field(default=["image", "fusion", "text"], description="Query modes to score.")
    bootstrap: int = Field(default=1000, description="Cluster-bootstrap resamples for the 95 % intervals.")
    seed: int = Field(default=0, description="Bootstrap seed.")
    limit_per_group: int | None = Field(default=None, description="Records per (task, city, split, mode) at most.")


@dg.asset(
    deps=[dg.AssetDep("benchmark_tasks"), dg.AssetDep("subgraph_nodes"), *MODEL_ASSETS],
    group_name="ugbench",
    kinds={"pytorch"},
    pool="gpu",
    check_specs=[
        dg.AssetCheckSpec(
            "graph_matters",
            asset="benchmark_results",
            blocking=False,
            description="Stage 2 scores clearly worse on graph-reading records when each "
            "record gets another record's graph (clustered, paired).",
        )
    ],
)
def benchmark_results(
    context: dg.AssetExecutionContext,
    config: BenchmarkConfig,
    cities: CityRegistryResource,
    storage: StorageResource,
    trainer: TrainerResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The model family (every seed) and the blind scorers on every built city: a report with paired intervals."""
    from ugdata_pipeline.ugbench.evaluate import evaluate
    from ugdata_pipeline.ugbench.family import benchmark_inputs, family_models, seed_note
    from ugdata_pipeline.ugbench.graph_check import graph_dependence, graph_matters_outcome
    from ugdata_pipeline.ugbench.perception import PROXY_OF
    from ugdata_pipeline.ugbench.report import results_metadata, results_table, write_report

    inputs = benchmark_inputs(cities.registry(), storage)
    root, seeds = storage.local_dir(), trainer.seed_list()
    family = family_models(root, seeds)
    if (warning := family.warning()) is not None:  # what the report can claim changes: say so where it is read
        context.log.warning(warning)
    models = family.models
    context.log.info(
        f"scoring {[(m, len(s)) for m, s in models.items()]} (model, seeds) on {len(inputs.tasks)} records of "
        f"{inputs.cities}"
    )
    cache = storage.local_dir("_cache", "embeddings")
    evaluation = evaluate(
        inputs.tasks,
        models,
        modes=config.modes,
        bootstrap=config.bootstrap,
        seed=config.seed,
        image_root=root,
        cache_dir=cache,
        limit_per_group=config.limit_per_group,
        subgraph_nodes=inputs.subgraph_nodes,
        subgraph_edges=inputs.subgraph_edges,
    )
    report_dir = storage.local_dir("reports", "ugbench")
    report = write_report(
        evaluation, report_dir, notes=[seed_note(seeds)], proxies=PROXY_OF, bootstrap=config.bootstrap, seed=config.seed
    )
    charts = {}
    for chart in sorted(report_dir.glob("*.png"))[:4]:
        charts |= png_file(chart, alt=chart.stem)
    results = evaluation.results
    yield dg.MaterializeResult(
        metadata={
            **table_metadata(results),
            **results_metadata(results),
            "cities": ", ".join(inputs.cities),
            "models": ", ".join(models),
            "seeds": len(seeds),
            "report": dg.MetadataValue.path(str(report)),
            "headline": dg.MetadataValue.md(results_table(results, role="headline", models=list(models))),
            **charts,
        }
    )
    comparison = None
    if "stage2" in models and "fusion" in config.modes:
        comparison = graph_dependence(
            models["stage2"][0],
            inputs.tasks,
            image_root=root,
            cache_dir=cache,
            bootstrap=config.bootstrap,
            seed=config.seed,
            subgraph_nodes=inputs.subgraph_nodes,
            subgraph_edges=inputs.subgraph_edges,
        )
    outcome = graph_matters_outcome(comparison)
    yield check_result("graph_matters", outcome, asset_key="benchmark_results", blocking_severity=False)
