"""Columns and enums of the urban graph tables (DESIGN.md, "Data contracts")."""

from __future__ import annotations

from typing import Literal, get_args

NodeKind = Literal["street", "crossing", "poi", "aoi", "image"]
EdgeKind = Literal["crossing", "along_street", "nearest", "bounds", "within", "image_street"]
NODE_KINDS: tuple[str, ...] = get_args(NodeKind)
EDGE_KINDS: tuple[str, ...] = get_args(EdgeKind)

NODE_COLUMNS: tuple[str, ...] = (
    "node_id",
    "kind",
    "name",
    "category",
    "lon",
    "lat",
    "address",
    "length_m",
    "osm_ids",
    "node_text",
    "geometry",
)
EDGE_COLUMNS: tuple[str, ...] = ("src", "dst", "kind", "distance_m", "bearing_deg", "street_name")

#: Floor for edge distances in metres. Some edges join geometries that touch (a POI drawn on its street, an
#: AOI whose anchor lies on the bounding street); the graph stores them at this distance rather than at 0,
#: so distance-weighted graph algorithms never see zero-weight edges.
MIN_EDGE_DISTANCE_M = 0.5
