"""Spatial reasoning path assets: routes from each image to places, with their text, and their invariants."""

from collections.abc import Iterator

import dagster as dg
import geopandas as gpd
import pandas as pd

from ugdata_pipeline.assets._config import dagster_config
from ugdata_pipeline.assets._metadata import check_result, png, preview
from ugdata_pipeline.assets.partitions import city_check, city_partitions
from ugdata_pipeline.imagery.anchor import anchored_graph
from ugdata_pipeline.reasoning import path_schema, validate
from ugdata_pipeline.reasoning.paths import build_paths
from ugdata_pipeline.reasoning.plot import distance_histogram_png, hop_histogram_png
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
    ins={name: dg.AssetIn(name) for name in ("nodes", "edges", "image_nodes", "image_edges", "images")},
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
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Stratified routes from every image to POIs/AOIs 2-8 hops away, as triple chains and sentences."""
    city = cities.city(context.partition_key)
    all_nodes, all_edges = anchored_graph(nodes, edges, image_nodes, image_edges)
    result = build_paths(all_nodes, all_edges, images, city=city.slug, config=config.to_core())
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
    outcomes = {
        "every_image_has_path_or_reason": validate.every_image_has_path_or_reason(images, paths, missing),
        "paths_are_walks": validate.paths_are_walks(paths, all_edges),
        "no_query_contains_target": validate.no_query_contains_target(paths, all_nodes),
        "paths_stay_with_their_image": validate.paths_stay_with_their_image(paths, images),
    }
    for name, blocking, _ in _CHECKS:
        yield check_result(name, outcomes[name], asset_key="srp", blocking_severity=blocking)
