"""Imagery assets: candidate views, image files, anchoring into the graph, and leakage-safe splits."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import geopandas as gpd
import pandas as pd
from pydantic import Field

from ugdata_pipeline.assets._metadata import check_result, png, preview
from ugdata_pipeline.assets.partitions import city_check, city_partitions
from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.errors import IncompleteResultError
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.imagery.anchor import anchor_images
from ugdata_pipeline.imagery.plot import split_map_png
from ugdata_pipeline.imagery.source_outcome import SourceOutcome, describe_source_failures, source_failure_table
from ugdata_pipeline.imagery.splits import assign_splits, no_sequence_spans_splits, no_test_near_train
from ugdata_pipeline.imagery.view_files import contact_sheet
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline.resources import CityRegistryResource, ImageSourceResource, StorageResource

_OSM = ("osm_streets", "osm_pois", "osm_aois", "osm_trees")


def _extract(
    city_source: str, streets: gpd.GeoDataFrame, pois: gpd.GeoDataFrame, aois: gpd.GeoDataFrame, trees: gpd.GeoDataFrame
) -> OsmExtract:
    """The OSM tables of a city as one extract, the renderer's and Mapillary's input."""
    return OsmExtract(streets=streets, pois=pois, aois=aois, trees=trees, source=city_source)


def _checked_failures(context: dg.AssetExecutionContext, outcome: SourceOutcome, what: str) -> dict[str, object]:
    """
    Report an image source's failures in the event log (a warning with counts by reason and examples) and
    return them as metadata; raise :class:`IncompleteResultError` when the result is short, so the step fails and
    the city's last materialization stays in place.
    """
    failures = outcome.failures
    if len(failures):
        examples = [
            f"{row.image_id} ({row.stage}, {row.attempts} attempt(s)): {row.error}"
            for row in failures.head(3).itertuples(index=False)
        ]
        context.log.warning(
            f"{what} of {context.partition_key}: {len(failures)} failed; by reason: "
            f"{describe_source_failures(failures)}. Examples: {'; '.join(examples)}"
        )
    if outcome.shortfall:
        raise IncompleteResultError(outcome.shortfall)
    return {
        "failed": len(failures),
        "failures_by_reason": dg.MetadataValue.json(
            {row.reason: int(row.count) for row in source_failure_table(failures).head(20).itertuples()}
        ),
        "failures": preview(failures),
    }


def local_root(storage: StorageResource) -> Path:
    """Image sources write files; they need the root on local disk (object-store roots: see deploy/README.md)."""
    return storage.local_dir()


@dg.asset(
    ins={name: dg.AssetIn(name) for name in _OSM},
    partitions_def=city_partitions,
    group_name="imagery",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
)
def image_candidates(
    context: dg.AssetExecutionContext,
    cities: CityRegistryResource,
    images: ImageSourceResource,
    storage: StorageResource,
    osm_streets: gpd.GeoDataFrame,
    osm_pois: gpd.GeoDataFrame,
    osm_aois: gpd.GeoDataFrame,
    osm_trees: gpd.GeoDataFrame,
) -> dg.Output[pd.DataFrame]:
    """Where images can be taken: rendered camera positions (offline) or Mapillary images found and thinned."""
    city = cities.city(context.partition_key)
    extract = _extract(city.source.describe(), osm_streets, osm_pois, osm_aois, osm_trees)
    work_dir = local_root(storage) / city.slug / "_work"
    crs_metric = city_metric_crs(osm_streets, where=f"city {city.slug!r}")
    outcome = images.candidates(city, extract, crs_metric=crs_metric, work_dir=work_dir)
    failures = _checked_failures(context, outcome, f"{images.label()} discovery")
    frame = outcome.table
    return dg.Output(
        frame,
        metadata={
            "source": images.label(),
            **{k: v for k, v in outcome.counts.items() if isinstance(v, int | float | str | bool)},
            **failures,
            "preview": preview(frame),
        },
    )


@dg.asset(
    ins={"image_candidates": dg.AssetIn(), **{name: dg.AssetIn(name) for name in _OSM}},
    partitions_def=city_partitions,
    group_name="imagery",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
)
def image_files(
    context: dg.AssetExecutionContext,
    cities: CityRegistryResource,
    images: ImageSourceResource,
    storage: StorageResource,
    image_candidates: pd.DataFrame,
    osm_streets: gpd.GeoDataFrame,
    osm_pois: gpd.GeoDataFrame,
    osm_aois: gpd.GeoDataFrame,
    osm_trees: gpd.GeoDataFrame,
) -> dg.Output[pd.DataFrame]:
    """Image files under ``<root>/<city>/images/`` and their manifest; finished files are never fetched again."""
    city = cities.city(context.partition_key)
    extract = _extract(city.source.describe(), osm_streets, osm_pois, osm_aois, osm_trees)
    root = local_root(storage)
    crs_metric = city_metric_crs(osm_streets, where=f"city {city.slug!r}")
    outcome = images.fetch(city, extract, image_candidates, crs_metric=crs_metric, root=root, log=context.log)
    failures = _checked_failures(context, outcome, f"{images.label()} images")
    manifest = outcome.table
    sample = manifest.iloc[:: max(1, len(manifest) // 16)].head(16)
    sheet = {}
    if len(sample):
        sheet = png(
            storage.city_path(city.slug, "previews", "contact_sheet.png"),
            contact_sheet([root / p for p in sample["path"]], ncols=4),
            alt="contact_sheet",
        )
    return dg.Output(
        manifest,
        metadata={
            "source": images.label(),
            **{k: v for k, v in outcome.counts.items() if isinstance(v, int | float | str | bool)},
            **failures,
            "preview": preview(manifest, columns=["image_id", "source", "lon", "lat", "compass_angle", "path"]),
            **sheet,
        },
    )


class AnchorConfig(dg.Config):
    max_snap_m: float = Field(default=50.0, description="Images farther than this from every street are dropped.")


@dg.multi_asset(
    outs={
        "anchored_images": dg.AssetOut(
            description="Images with their street node and snap distance.",
            io_manager_key="table_io_manager",
            kinds={"pandas"},
        ),
        "image_nodes": dg.AssetOut(
            description="One `image` node per anchored image (graph node columns).",
            io_manager_key="table_io_manager",
            kinds={"geopandas"},
        ),
        "image_edges": dg.AssetOut(
            description="One `image_street` edge per anchored image.",
            io_manager_key="table_io_manager",
            kinds={"pandas"},
        ),
    },
    ins={"image_files": dg.AssetIn(), "nodes": dg.AssetIn(), "osm_streets": dg.AssetIn()},
    partitions_def=city_partitions,
    group_name="imagery",
    check_specs=[
        city_check(
            "images_snapped",
            asset="anchored_images",
            blocking=False,
            description=">= 80 % of images lie within the snap distance of a street.",
        )
    ],
)
def image_anchoring(
    context: dg.AssetExecutionContext,
    config: AnchorConfig,
    cities: CityRegistryResource,
    image_files: pd.DataFrame,
    nodes: gpd.GeoDataFrame,
    osm_streets: gpd.GeoDataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Snap each image to its nearest street and add it to the graph as an `image` node."""
    city = cities.city(context.partition_key)
    result = anchor_images(
        image_files,
        nodes,
        city_name=city.name,
        country=city.country,
        crs_metric=city_metric_crs(osm_streets, where=f"city {city.slug!r}"),
        max_snap_m=config.max_snap_m,
    )
    kept = len(result.images)
    share = kept / max(1, len(image_files))
    yield dg.Output(
        result.images,
        "anchored_images",
        metadata={
            "dropped": result.dropped,
            "snapped_share": round(share, 4),
            "snap_distance_m_median": float(result.images["snap_distance_m"].median()) if kept else 0.0,
            "preview": preview(result.images, columns=["image_id", "street_node", "snap_distance_m", "compass_angle"]),
        },
    )
    yield dg.Output(result.image_nodes, "image_nodes")
    yield dg.Output(result.image_edges, "image_edges")
    outcome = CheckOutcome(
        passed=share >= 0.8 or not len(image_files),
        observed=round(share, 4),
        expected=">= 0.8",
        examples=list(result.dropped_ids[:5]),
    )
    yield check_result("images_snapped", outcome, asset_key="anchored_images", blocking_severity=False)


class SplitConfig(dg.Config):
    buffer_m: float = Field(default=500.0, description="Minimum distance between images of different splits.")
    train_share: float = Field(default=0.7, description="Share of spatial blocks for training.")
    val_share: float = Field(default=0.1, description="Share of spatial blocks for validation; the rest is test.")
    seed: int = Field(default=0, description="Which blocks go to which split.")


@dg.asset(
    partitions_def=city_partitions,
    group_name="imagery",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
    check_specs=[
        city_check(
            "no_test_near_train",
            asset="images",
            blocking=True,
            description="No test image lies within the buffer of a train image.",
        ),
        city_check(
            "no_sequence_spans_splits", asset="images", blocking=True, description="Every sequence lies in one split."
        ),
    ],
)
def images(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    cities: CityRegistryResource,
    storage: StorageResource,
    anchored_images: pd.DataFrame,
    osm_streets: gpd.GeoDataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The city's images with train/val/test splits: spatial blocks with buffers; a held-out city is all test."""
    city = cities.city(context.partition_key)
    crs_metric = city_metric_crs(osm_streets, where=f"city {city.slug!r}")
    fractions = (config.train_share, config.val_share, 1.0 - config.train_share - config.val_share)
    split = assign_splits(
        anchored_images,
        city_split=city.split,
        crs_metric=crs_metric,
        buffer_m=config.buffer_m,
        fractions=fractions,
        seed=config.seed,
    )
    by_split = split["split"].value_counts().to_dict()
    image = png(
        storage.city_path(city.slug, "previews", "images_by_split.png"),
        split_map_png(split, title=f"{city.name}: images by split ({city.split} city)"),
        alt="map",
    )
    yield dg.Output(
        split,
        metadata={
            "by_split": dg.MetadataValue.json({str(k): int(v) for k, v in by_split.items()}),
            "buffer_m": config.buffer_m,
            "city_split": city.split,
            "preview": preview(split, columns=["image_id", "split", "cell", "street_node", "lon", "lat"]),
            **image,
        },
    )
    near = no_test_near_train(split, config.buffer_m, crs_metric=crs_metric)
    yield check_result("no_test_near_train", near, asset_key="images")
    yield check_result("no_sequence_spans_splits", no_sequence_spans_splits(split), asset_key="images")
