"""The upstream tables of the per-image assets (paths, subgraphs), written to a tiny data root for one city."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import geopandas as gpd
import pandas as pd

from ugdata_pipeline.assets.partitions import city_partitions
from ugdata_pipeline.table_files import frame_to_parquet_bytes, table_path, write_bytes_atomic

#: What the per-image assets read: the graph split as the pipeline stores it, the images, the streets (metric CRS).
UPSTREAM = ("nodes", "edges", "image_nodes", "image_edges", "images", "osm_streets")


def write_anchored_inputs(
    root: Path, city: str, *, nodes: pd.DataFrame, edges: pd.DataFrame, images: pd.DataFrame, streets: gpd.GeoDataFrame
) -> None:
    """Store an anchored graph (image nodes and ``image_street`` edges included) as the upstream tables of ``city``."""
    image = nodes["kind"] == "image"
    frames = {
        "nodes": nodes[~image].reset_index(drop=True),
        "edges": edges[edges["kind"] != "image_street"].reset_index(drop=True),
        "image_nodes": nodes[image].reset_index(drop=True),
        "image_edges": edges[edges["kind"] == "image_street"].reset_index(drop=True),
        "images": images,
        "osm_streets": streets,
    }
    for name, frame in frames.items():
        write_bytes_atomic(table_path(str(root), name, city), frame_to_parquet_bytes(frame))


def upstream_sources() -> list[dg.SourceAsset]:
    """The upstream tables as source assets read by the table IO manager, partitioned by city."""
    return [dg.SourceAsset(n, io_manager_key="table_io_manager", partitions_def=city_partitions) for n in UPSTREAM]
