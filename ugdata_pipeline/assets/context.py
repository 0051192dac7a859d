"""Spatial context assets: 700 m subgraphs per image, their text descriptions, and the captions written from them."""

from collections.abc import Iterator

import dagster as dg
import geopandas as gpd
import pandas as pd

from ugdata_pipeline.assets._config import dagster_config
from ugdata_pipeline.assets._metadata import check_result, png, preview
from ugdata_pipeline.assets.partitions import city_check, city_partitions
from ugdata_pipeline.context import subgraph
from ugdata_pipeline.context.plot import size_histogram_png
from ugdata_pipeline.context.subgraph_stream import describe_streamed, read_image_range, write_subgraphs
from ugdata_pipeline.context.subgraph_tables import subgraph_size_outcome
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.imagery.anchor import anchored_graph
from ugdata_pipeline.resources import CityRegistryResource, StorageResource
from ugdata_pipeline.table_files import StoredTable, local_write_targets, table_path

SubgraphConfig = dagster_config(subgraph.SubgraphConfig)


@dg.multi_asset(
    outs={
        "subgraph_nodes": dg.AssetOut(
            description="Nodes of each image's 700 m subgraph (one row per image x node).",
            io_manager_key="table_io_manager",
            kinds={"pandas"},
        ),
        "subgraph_edges": dg.AssetOut(
            description="Edges among each subgraph's nodes.", io_manager_key="table_io_manager", kinds={"pandas"}
        ),
        "subgraphs": dg.AssetOut(
            description="One row per image: centre node, node and edge counts, truncation.",
            io_manager_key="table_io_manager",
            kinds={"pandas"},
        ),
    },
    ins={name: dg.AssetIn(name) for name in ("nodes", "edges", "image_nodes", "image_edges", "images", "osm_streets")},
    partitions_def=city_partitions,
    group_name="context",
    check_specs=[
        city_check(
            "subgraph_sizes",
            asset="subgraphs",
            blocking=True,
            description="Every subgraph has 2..max_nodes nodes (the image and its street).",
        )
    ],
)
def spatial_subgraphs(
    context: dg.AssetExecutionContext,
    config: SubgraphConfig,
    cities: CityRegistryResource,
    storage: StorageResource,
    nodes: gpd.GeoDataFrame,
    edges: pd.DataFrame,
    image_nodes: gpd.GeoDataFrame,
    image_edges: pd.DataFrame,
    images: pd.DataFrame,
    osm_streets: gpd.GeoDataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Every node whose geometry meets the radius around each image, nearest first, with the edges among them.

    The long tables (~25M rows for 10^5 images) are written chunk by chunk to their table paths, never held whole;
    the IO manager records them (``StoredTable``). Only the per-image ``subgraphs`` summary is held.
    """
    city = cities.city(context.partition_key)
    all_nodes, all_edges = anchored_graph(nodes, edges, image_nodes, image_edges)
    crs_metric = city_metric_crs(osm_streets, where=f"city {city.slug!r}")
    paths = [table_path(storage.root, name, city.slug) for name in ("subgraph_nodes", "subgraph_edges")]
    with local_write_targets(*paths) as (nodes_file, edges_file):
        tables = write_subgraphs(
            all_nodes,
            all_edges,
            images,
            crs_metric=crs_metric,
            config=config.to_core(),
            nodes_path=nodes_file,
            edges_path=edges_file,
        )
    chart = {}
    if len(tables.summary):
        chart = png(
            storage.city_path(city.slug, "previews", "subgraph_sizes.png"),
            size_histogram_png(tables.summary),
            alt="size_histogram",
        )
    figures = {k: v for k, v in tables.counts.items() if isinstance(v, int | float)}
    first = read_image_range(paths[0], tables.summary, 0, min(len(tables.summary), 8))
    yield dg.Output(
        StoredTable(paths[0]),
        "subgraph_nodes",
        metadata={
            "preview": preview(
                first, columns=["image_id", "node_id", "kind", "name", "dx_m", "dy_m", "distance_m", "rank"]
            ),
        },
    )
    yield dg.Output(StoredTable(paths[1]), "subgraph_edges")
    yield dg.Output(
        tables.summary,
        "subgraphs",
        metadata={**figures, "preview": preview(tables.summary), **chart},
    )
    outcome = subgraph_size_outcome(tables.summary, max_nodes=config.max_nodes)
    yield check_result("subgraph_sizes", outcome, asset_key="subgraphs")


@dg.asset(
    ins={name: dg.AssetIn(name) for name in ("images", "subgraphs")},
    # the long tables are read a chunk of images at a time from their table paths, never loaded whole
    deps=["subgraph_nodes", "subgraph_edges"],
    partitions_def=city_partitions,
    group_name="context",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
)
def subgraph_descriptions(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    images: pd.DataFrame,
    subgraphs: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """The text the captioner reads: the image's street and crossing, places within 200 m, streets around."""
    paths = [table_path(storage.root, name, context.partition_key) for name in ("subgraph_nodes", "subgraph_edges")]
    frame = describe_streamed(*paths, subgraphs, images)
    lengths = frame["description"].str.len()
    return dg.Output(
        frame,
        metadata={
            "chars_median": float(lengths.median()) if len(frame) else 0.0,
            "example": dg.MetadataValue.md(frame["description"].iloc[0] if len(frame) else "no images"),
        },
    )
