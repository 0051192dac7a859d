"""Spatial reasoning path assets: routes from each image to places, with their text, and their invariants."""

import time
from collections.abc import Iterator

import dagster as dg
import geopandas as gpd
import pandas as pd

from ugdata_pipeline.assets._config import dagster_config
from ugdata_pipeline.assets._metadata import check_result, png, preview
from ugdata_pipeline.assets.partitions import city_check, city_partitions
from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.graph.shards import image_shards
from ugdata_pipeline.imagery.anchor import anchored_graph
from ugdata_pipeline.reasoning import path_schema, validate
from ugdata_pipeline.reasoning.plot import distance_histogram_png, hop_histogram_png
from ugdata_pipeline.reasoning.sharded import ShardPaths, build_paths_by_shard, combine_outcomes
from ugdata_pipeline.resources import CityRegistryResource, StorageResource

PathConfig = dagster_config(path_schema.PathConfig)


_CHECKS = (
    ("every_image_has_path_or_reason", True, "Every image has >= 1 path or a recorded reason."),
    ("paths_are_walks", True, "Every path is a walk in the graph (consecutive nodes share an edge)."),
    ("no_query_contains_target", True, "No query text (path_text, path_sentence) contains its target's name."),
    ("paths_stay_with_their_image", True, "Paths start at their own image and pass through no other image."),
)


@dg.multi_asset(
    outs={
        "srp": dg.AssetOut(
            description="Spatial reasoning paths: one row per (image, path), target text apart.",
            io_manager_key="table_io_manager",
            kinds={"pandas"},
        ),
        "srp_missing": dg.AssetOut(
            description="Images without a path, and why.", io_manager_key="table_io_manager", kinds={"pandas"}
        ),
    },
    ins={name: dg.AssetIn(name) for name in ("nodes", "edges", "image_nodes", "image_edges", "images", "osm_streets")},
    partitions_def=city_partitions,
    group_name="reasoning",
    check_specs=[
        city_check(name, asset="srp", blocking=blocking, description=text) for name, blocking, text in _CHECKS
    ],
)
def spatial_reasoning_paths(
    context: dg.AssetExecutionContext,
    config: PathConfig,
    cities: CityRegistryResource,
    storage: StorageResource,
    nodes: gpd.GeoDataFrame,
    edges: pd.DataFrame,
    image_nodes: gpd.GeoDataFrame,
    image_edges: pd.DataFrame,
    images: pd.DataFrame,
    osm_streets: gpd.GeoDataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Stratified routes from every image to POIs/AOIs 2-8 hops away, as triple chains and sentences.

    Built a shard at a time (the city's ``shard_size_m`` tiles, each on its hop halo of the graph): the same paths
    as on the whole city, with one shard's search in memory; the checks run on each shard as it is built.
    """
    city = cities.city(context.partition_key)
    all_nodes, all_edges = anchored_graph(nodes, edges, image_nodes, image_edges)
    crs_metric = city_metric_crs(osm_streets, where=f"city {city.slug!r}")
    shards = image_shards(images, crs_metric=crs_metric, size_m=city.shard_size_m)
    n_shards = shards.nunique()
    outcomes: dict[str, list[CheckOutcome]] = {name: [] for name, _, _ in _CHECKS}
    shard_rows: list[dict[str, object]] = []
    started = time.perf_counter()

    def on_shard(shard: ShardPaths) -> None:
        paths, missing = shard.result.paths, shard.result.missing
        outcomes["every_image_has_path_or_reason"].append(
            validate.every_image_has_path_or_reason(shard.images, paths, missing)
        )
        outcomes["paths_are_walks"].append(validate.paths_are_walks(paths, shard.edges))
        outcomes["no_query_contains_target"].append(validate.no_query_contains_target(paths, shard.nodes))
        outcomes["paths_stay_with_their_image"].append(validate.paths_stay_with_their_image(paths, shard.images))
        shard_rows.append(
            {"shard": shard.key, "images": len(shard.images), "paths": len(paths), "halo_nodes": len(shard.nodes)}
        )
        context.log.info(
            f"paths of {city.slug}: shard {len(shard_rows)}/{n_shards} {shard.key} — {len(shard.images):,} images, "
            f"{len(paths):,} paths on a halo of {len(shard.nodes):,} nodes ({time.perf_counter() - started:.0f} s)"
        )

    result = build_paths_by_shard(
        all_nodes, all_edges, images, shards, city=city.slug, config=config.to_core(), on_shard=on_shard
    )
    paths, missing = result.paths, result.missing
    charts = {}
    if len(paths):
        charts |= png(
            storage.city_path(city.slug, "previews", "srp_hops.png"), hop_histogram_png(paths), alt="hop_histogram"
        )
        charts |= png(
            storage.city_path(city.slug, "previews", "srp_distances.png"),
            distance_histogram_png(paths),
            alt="distance_histogram",
        )
    examples = "\n\n".join(
        f"**{row.path_type}, {row.hops} hops** — query: {row.path_sentence}  \nanswer: {row.target_text}"
        for row in paths.head(4).itertuples()
    )
    yield dg.Output(
        paths,
        "srp",
        metadata={
            "images_with_paths": int(paths["image_id"].nunique()) if len(paths) else 0,
            "shards": n_shards,
            "shard_size_m": city.shard_size_m,
            "by_shard": preview(pd.DataFrame(shard_rows, columns=["shard", "images", "paths", "halo_nodes"]), rows=50),
            **{k: v for k, v in result.counts.items() if isinstance(v, int | float)},
            "examples": dg.MetadataValue.md(examples or "no paths"),
            "preview": preview(
                paths, columns=["image_id", "target_name", "hops", "path_type", "path_text", "target_text"]
            ),
            **charts,
        },
    )
    yield dg.Output(
        missing,
        "srp_missing",
        metadata={
            "by_reason": dg.MetadataValue.json({str(k): int(v) for k, v in missing["reason"].value_counts().items()}),
        },
    )
    for name, blocking, _ in _CHECKS:
        outcome = combine_outcomes(outcomes[name]) if outcomes[name] else CheckOutcome(True, 0, "no images")
        yield check_result(name, outcome, asset_key="srp", blocking_severity=blocking)
