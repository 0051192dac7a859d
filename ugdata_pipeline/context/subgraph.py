"""Radius subgraphs around each image, as long tables (one row per (image, node) and per (image, edge)).

For every anchored image the subgraph holds

* the image's own node (the *centre*, ``rank`` 0, ``dx_m = dy_m = distance_m = 0``);
* every other non-image node whose **geometry** lies within ``radius_m`` of the image: a street
  (LineString) or an area (Polygon) is in when any part of it is, even if its anchor point (``lon``/``lat``)
  is far away; an image inside an area is at distance 0 from it;
* at most ``max_nodes`` nodes in all (centre included): the nearest first, distances compared at millimetre
  resolution and ties broken by ``node_id``, so the result does not depend on row order. The street the
  image is anchored to is always kept (so the ``image_street`` edge is always in), even past the cap or
  the radius;
* every edge of the graph whose two endpoints are kept (the induced subgraph). Other images' nodes and
  edges are never part of a subgraph.

Distances and offsets
    Inclusion and the cap use planar distances in the city's UTM CRS (``crs_metric``), from the image to the
    nearest point of the node's geometry. The reported ``distance_m`` is the geodesic distance (shared
    helper :func:`ugdata_pipeline.graph.geodesy.distance_bearing`) from the image to that nearest point (for
    point nodes, the node itself); it differs from the planar one by the UTM scale factor (< 0.1 %).
    ``dx_m`` / ``dy_m`` are the east / north offsets in metres of the node's anchor (``lon``/``lat``: a
    street's middle, an area's point on surface) from the image, ``d sin b`` and ``d cos b`` of the geodesic
    distance ``d`` and bearing ``b`` from the image to the anchor.

Scaling
    Point nodes (POIs, crossings) are searched with a k-d tree (the ``max_nodes`` nearest within the radius
    per image, so dense cities cost no more than sparse ones); lines and polygons with a shapely STRtree and
    vectorised ``shapely.distance``. Images are processed in chunks; edges are induced with integer keys
    and a CSR of the edge table, never with per-image Python loops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from scipy.spatial import cKDTree

from ugdata_pipeline.context.subgraph_tables import (
    SUBGRAPH_EDGE_COLUMNS,
    SUBGRAPH_NODE_COLUMNS,
    SUBGRAPH_SUMMARY_COLUMNS,
    SubgraphTables,
    subgraph_for,
    subgraph_size_outcome,
)
from ugdata_pipeline.errors import SubgraphInputError, UnknownSubgraphError
from ugdata_pipeline.graph.crs import metric_crs
from ugdata_pipeline.graph.geodesy import distance_bearing
from ugdata_pipeline.graph.schema import EDGE_COLUMNS
from ugdata_pipeline.imagery.anchor import image_node_ids
from ugdata_pipeline.tables import require_columns

logger = logging.getLogger(__name__)

# The subgraph model (tables, per-image index, errors) lives in context.subgraph_tables; its names are re-exported
# here so that ``from ugdata_pipeline.context.subgraph import ...`` keeps working.
__all__ = [
    "SUBGRAPH_EDGE_COLUMNS",
    "SUBGRAPH_NODE_COLUMNS",
    "SUBGRAPH_SUMMARY_COLUMNS",
    "SubgraphConfig",
    "SubgraphInputError",
    "SubgraphTables",
    "UnknownSubgraphError",
    "build_subgraphs",
    "iter_subgraph_chunks",
    "subgraph_for",
    "subgraph_size_outcome",
]

_NODE_INPUT_COLUMNS = ("node_id", "kind", "name", "category", "node_text", "lon", "lat", "geometry")
_IMAGE_INPUT_COLUMNS = ("image_id", "source", "lon", "lat")
_MM_PER_M = 1000.0  # distances are compared in whole millimetres: closer than that is a tie


@dataclass(frozen=True, slots=True)
class SubgraphConfig:
    """Options of :func:`build_subgraphs`."""

    # Each field's "doc" is its description in the Dagster launchpad too (assets/_config.py derives the run config).
    radius_m: float = field(
        default=700.0, metadata={"doc": "A node is in when its geometry is within this many metres of the image."}
    )
    max_nodes: int = field(
        default=256, metadata={"doc": "Cap on nodes per subgraph, the image node included; the nearest are kept."}
    )
    images_per_chunk: int = field(
        default=4096, metadata={"doc": "Images processed together; bounds peak memory, not the result."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.radius_m, int | float) or not math.isfinite(self.radius_m) or self.radius_m <= 0:
            msg = f"SubgraphConfig.radius_m must be a finite distance > 0 in metres, got {self.radius_m!r}"
            raise SubgraphInputError(msg)
        if not isinstance(self.max_nodes, int) or isinstance(self.max_nodes, bool) or self.max_nodes < 2:
            msg = (
                f"SubgraphConfig.max_nodes must be an int >= 2 (the image node and its street), got {self.max_nodes!r}"
            )
            raise SubgraphInputError(msg)
        if not isinstance(self.images_per_chunk, int) or self.images_per_chunk < 1:
            msg = f"SubgraphConfig.images_per_chunk must be an int >= 1, got {self.images_per_chunk!r}"
            raise SubgraphInputError(msg)


# --- validation ----------------------------------------------------------------------------------------------


def _validate(nodes: gpd.GeoDataFrame, edges: pd.DataFrame, images: pd.DataFrame) -> None:
    graph_fix = "Pass the graph's tables with the anchored image nodes and edges concatenated"
    require_columns(nodes, _NODE_INPUT_COLUMNS, table="nodes", fix=graph_fix, error=SubgraphInputError)
    if not isinstance(nodes, gpd.GeoDataFrame) or nodes.crs is None:
        msg = "nodes must be a GeoDataFrame with a CRS (EPSG:4326, as built by build_urban_graph)"
        raise SubgraphInputError(msg)
    require_columns(edges, EDGE_COLUMNS, table="edges", fix=graph_fix, error=SubgraphInputError)
    images_fix = "Pass AnchorResult.images from ugdata_pipeline.imagery.anchor_images"
    require_columns(images, _IMAGE_INPUT_COLUMNS, table="images", fix=images_fix, error=SubgraphInputError)
    duplicated = nodes["node_id"].duplicated()
    if duplicated.any():
        examples = sorted({str(v) for v in nodes.loc[duplicated, "node_id"]})[:5]
        msg = f"nodes.node_id must be unique, but {int(duplicated.sum())} ids repeat, e.g. {examples}"
        raise SubgraphInputError(msg)
    duplicated = images["image_id"].astype(str).duplicated()
    if duplicated.any():
        examples = sorted({str(v) for v in images.loc[duplicated, "image_id"]})[:5]
        msg = (
            f"images.image_id must be unique, but {int(duplicated.sum())} rows repeat ids, e.g. {examples}; "
            "deduplicate the images table first"
        )
        raise SubgraphInputError(msg)
    known = pd.Index(nodes["node_id"])
    endpoints = pd.concat([edges["src"], edges["dst"]])
    unknown = endpoints[~endpoints.isin(known)].unique()
    if len(unknown):
        examples = [str(u) for u in unknown[:5]]
        msg = (
            f"edges name {len(unknown)} node id(s) that are not in nodes, e.g. {examples}; concatenate "
            "AnchorResult.image_nodes into nodes along with AnchorResult.image_edges into edges"
        )
        raise SubgraphInputError(msg)
    for column, limit in (("lon", 180.0), ("lat", 90.0)):
        values = pd.to_numeric(images[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (np.abs(values) > limit)
        if bad.any():
            examples = images.loc[bad, "image_id"].astype(str).head(5).tolist()
            msg = (
                f"images.{column} has {int(bad.sum())} NaN or out-of-range value(s), e.g. images {examples}; "
                "anchor_images drops no such rows, so fix the manifest"
            )
            raise SubgraphInputError(msg)


# --- build ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Graph:
    """The graph in integer codes (positions in ``nodes``), with the metric geometries split by type."""

    n: int
    node_key: npt.NDArray[np.int64]  # position in node_id order, the tie-break
    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    point_codes: npt.NDArray[np.int64]
    point_xy: npt.NDArray[np.float64]  # (P, 2) UTM metres
    point_tree: cKDTree | None
    other_codes: npt.NDArray[np.int64]
    other_geoms: npt.NDArray[np.object_]  # UTM lines / polygons
    other_pos: npt.NDArray[np.int64]  # code -> position in other_* or -1
    other_tree: shapely.STRtree
    edge_order: npt.NDArray[np.int64]  # edge rows sorted by src code
    edge_indptr: npt.NDArray[np.int64]  # CSR over src codes into edge_order
    edge_dst: npt.NDArray[np.int64]  # dst code per edge row


def _prepare_graph(nodes: gpd.GeoDataFrame, edges: pd.DataFrame, crs: CRS) -> _Graph:
    n = len(nodes)
    node_ids = nodes["node_id"].astype(str).to_numpy(dtype=object)
    node_key = np.empty(n, dtype=np.int64)
    node_key[np.argsort(node_ids, kind="stable")] = np.arange(n)

    geometry = nodes.geometry if nodes.crs == "EPSG:4326" else nodes.geometry.to_crs("EPSG:4326")
    usable = (nodes["kind"] != "image").to_numpy() & geometry.notna().to_numpy() & ~geometry.is_empty.to_numpy()
    codes = np.flatnonzero(usable)
    metric = gpd.GeoSeries(geometry.to_numpy()[codes], crs="EPSG:4326").to_crs(crs).to_numpy()
    is_point = shapely.get_type_id(metric) == 0
    point_xy = shapely.get_coordinates(metric[is_point]).reshape(-1, 2)
    other_codes = codes[~is_point]
    other_pos = np.full(n, -1, dtype=np.int64)
    other_pos[other_codes] = np.arange(len(other_codes))

    lookup = pd.Index(nodes["node_id"])
    src = lookup.get_indexer(edges["src"]).astype(np.int64)
    dst = lookup.get_indexer(edges["dst"]).astype(np.int64)
    edge_order = np.argsort(src, kind="stable")
    edge_indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))]).astype(np.int64)
    return _Graph(
        n=n,
        node_key=node_key,
        lon=nodes["lon"].to_numpy(dtype=float),
        lat=nodes["lat"].to_numpy(dtype=float),
        point_codes=codes[is_point],
        point_xy=point_xy,
        point_tree=cKDTree(point_xy) if len(point_xy) else None,
        other_codes=other_codes,
        other_geoms=metric[~is_point],
        other_pos=other_pos,
        other_tree=shapely.STRtree(metric[~is_point]),
        edge_order=edge_order,
        edge_indptr=edge_indptr,
        edge_dst=dst,
    )


def _mm(distance: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.rint(distance * _MM_PER_M).astype(np.int64)


def _point_candidates(
    graph: _Graph, xy: npt.NDArray[np.float64], radius_m: float, keep: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(image, code, planar distance) of point nodes: a superset of each image's ``keep`` nearest."""
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    if graph.point_tree is None or len(xy) == 0:
        return empty
    k = min(keep + 1, len(graph.point_codes))
    dist, pos = graph.point_tree.query(xy, k=k, distance_upper_bound=radius_m * (1 + 1e-9) + 1e-6)
    dist, pos = dist.reshape(len(xy), k), pos.reshape(len(xy), k)
    valid = np.isfinite(dist) & (dist <= radius_m)
    image = np.repeat(np.arange(len(xy)), k).reshape(len(xy), k)
    out_image, out_pos, out_dist = [image[valid]], [pos[valid]], [dist[valid]]
    if k == keep + 1:
        # The k-d tree breaks ties at the cap arbitrarily: where the last kept and the first dropped point
        # are at the same millimetre, fetch every point up to that distance and let the sort decide.
        mm = _mm(np.where(valid, dist, 0.0))
        tied = np.flatnonzero(valid[:, keep] & (mm[:, keep - 1] == mm[:, keep]))
        for i in tied:
            reach = (mm[i, keep] + 0.5) / _MM_PER_M
            extra = np.asarray(graph.point_tree.query_ball_point(xy[i], r=reach * (1 + 1e-9)), dtype=np.int64)
            extra_dist = np.hypot(*(graph.point_xy[extra] - xy[i]).T)
            good = (extra_dist <= radius_m) & (_mm(extra_dist) <= mm[i, keep]) & ~np.isin(extra, pos[i])
            out_image.append(np.full(int(good.sum()), i))
            out_pos.append(extra[good])
            out_dist.append(extra_dist[good])
    all_pos = np.concatenate(out_pos).astype(np.int64)
    return np.concatenate(out_image).astype(np.int64), graph.point_codes[all_pos], np.concatenate(out_dist)


def _other_candidates(
    graph: _Graph, points: npt.NDArray[np.object_], xy: npt.NDArray[np.float64], radius_m: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(image, code, planar distance) of every line / polygon node within the radius."""
    if len(graph.other_codes) == 0 or len(xy) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    boxes = shapely.box(xy[:, 0] - radius_m, xy[:, 1] - radius_m, xy[:, 0] + radius_m, xy[:, 1] + radius_m)
    image, pos = graph.other_tree.query(boxes)
    dist = shapely.distance(points[image], graph.other_geoms[pos])
    near = dist <= radius_m
    return image[near].astype(np.int64), graph.other_codes[pos[near]], dist[near]


def _group_position(sorted_groups: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """0, 1, 2, ... within each run of equal values of an already sorted array."""
    if len(sorted_groups) == 0:
        return np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    lengths = np.diff(np.r_[starts, len(sorted_groups)])
    return np.arange(len(sorted_groups)) - np.repeat(starts, lengths)


@dataclass(slots=True)
class _Chunk:
    node_image: npt.NDArray[np.int64]  # global image index per node row
    node_code: npt.NDArray[np.int64]
    rank: npt.NDArray[np.int64]
    dx_m: npt.NDArray[np.float64]
    dy_m: npt.NDArray[np.float64]
    distance_m: npt.NDArray[np.float64]
    edge_image: npt.NDArray[np.int64]
    edge_row: npt.NDArray[np.int64]
    truncated: npt.NDArray[np.bool_]  # per image of the chunk


def _build_chunk(
    graph: _Graph,
    first: int,
    lon: npt.NDArray[np.float64],
    lat: npt.NDArray[np.float64],
    xy: npt.NDArray[np.float64],
    center: npt.NDArray[np.int64],
    street: npt.NDArray[np.int64],
    to_lonlat: Transformer,
    config: SubgraphConfig,
) -> _Chunk:
    keep = config.max_nodes - 1
    m = len(xy)
    points = shapely.points(xy)
    p_img, p_code, p_dist = _point_candidates(graph, xy, config.radius_m, keep)
    o_img, o_code, o_dist = _other_candidates(graph, points, xy, config.radius_m)
    # the anchored street is always kept, even beyond the radius, so the image_street edge is always in
    has_street = np.flatnonzero((street >= 0) & (graph.other_pos[np.maximum(street, 0)] >= 0))
    s_code = street[has_street]
    s_dist = shapely.distance(points[has_street], graph.other_geoms[graph.other_pos[s_code]])
    image = np.concatenate([p_img, o_img, has_street])
    code = np.concatenate([p_code, o_code, s_code])
    planar = np.concatenate([p_dist, o_dist, s_dist])
    _, first_seen = np.unique(image * graph.n + code, return_index=True)
    image, code, planar = image[first_seen], code[first_seen], planar[first_seen]
    n_candidates = np.bincount(image, minlength=m)

    forced = code == street[image]
    order = np.lexsort((graph.node_key[code], _mm(planar), ~forced, image))
    image, code = image[order], code[order]
    kept = _group_position(image) < keep
    image, code = image[kept], code[kept]

    # reported geometry: geodesic offsets of the anchor, geodesic distance to the nearest point
    anchor_d, anchor_b = distance_bearing(lat[image], lon[image], graph.lat[code], graph.lon[code])
    dx = anchor_d * np.sin(np.radians(anchor_b))
    dy = anchor_d * np.cos(np.radians(anchor_b))
    distance = anchor_d.copy()
    is_other = graph.other_pos[code] >= 0
    if is_other.any():
        nearest = shapely.shortest_line(points[image[is_other]], graph.other_geoms[graph.other_pos[code[is_other]]])
        near_xy = shapely.get_coordinates(nearest).reshape(-1, 2, 2)[:, 1, :]
        near_lon, near_lat = to_lonlat.transform(near_xy[:, 0], near_xy[:, 1])
        distance[is_other], _ = distance_bearing(
            lat[image[is_other]], lon[image[is_other]], np.asarray(near_lat), np.asarray(near_lon)
        )
    order = np.lexsort((graph.node_key[code], _mm(distance), image))
    image, code, dx, dy, distance = image[order], code[order], dx[order], dy[order], distance[order]
    rank = _group_position(image) + 1

    node_image = np.concatenate([np.arange(m), image])
    node_code = np.concatenate([center, code])
    rank = np.concatenate([np.zeros(m, np.int64), rank])
    dx, dy = np.concatenate([np.zeros(m), dx]), np.concatenate([np.zeros(m), dy])
    distance = np.concatenate([np.zeros(m), distance])
    order = np.lexsort((rank, node_image))
    node_image, node_code, rank = node_image[order], node_code[order], rank[order]
    dx, dy, distance = dx[order], dy[order], distance[order]

    # induced edges: every out-edge of a kept node whose other end is kept for the same image
    member = node_image * graph.n + node_code
    member_order = np.argsort(member)
    member_sorted = member[member_order]
    degree = graph.edge_indptr[node_code + 1] - graph.edge_indptr[node_code]
    total = int(degree.sum())
    row_of = np.repeat(np.arange(len(node_code)), degree)
    offset = np.arange(total) - np.repeat(np.cumsum(degree) - degree, degree)
    edge_row = graph.edge_order[np.repeat(graph.edge_indptr[node_code], degree) + offset]
    edge_image = node_image[row_of]
    dst_key = edge_image * graph.n + graph.edge_dst[edge_row]
    hit = np.searchsorted(member_sorted, dst_key)
    inside = (hit < len(member_sorted)) & (member_sorted[np.minimum(hit, len(member_sorted) - 1)] == dst_key)
    edge_row, edge_image, src_rank = edge_row[inside], edge_image[inside], rank[row_of[inside]]
    dst_rank = rank[member_order][np.searchsorted(member_sorted, dst_key[inside])]
    order = np.lexsort((edge_row, dst_rank, src_rank, edge_image))
    return _Chunk(
        node_image=node_image + first,
        node_code=node_code,
        rank=rank,
        dx_m=dx,
        dy_m=dy,
        distance_m=distance,
        edge_image=edge_image[order] + first,
        edge_row=edge_row[order],
        truncated=n_candidates > keep,
    )


def _text(values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Text values with every missing one as ``None`` (never NaN), so they survive JSON exports."""
    return np.where(pd.isna(values), None, values)


def _empty_tables(config: SubgraphConfig) -> SubgraphTables:
    nodes = pd.DataFrame({c: pd.Series(dtype=object) for c in SUBGRAPH_NODE_COLUMNS})
    nodes = nodes.astype(dict.fromkeys(("lon", "lat", "dx_m", "dy_m", "distance_m"), "float64") | {"rank": "int64"})
    edges = pd.DataFrame({c: pd.Series(dtype=object) for c in SUBGRAPH_EDGE_COLUMNS})
    edges = edges.astype({"distance_m": "float64", "bearing_deg": "float64"})
    summary = pd.DataFrame({c: pd.Series(dtype=object) for c in SUBGRAPH_SUMMARY_COLUMNS})
    summary = summary.astype({"n_nodes": "int64", "n_edges": "int64", "truncated": "bool"})
    return SubgraphTables(nodes, edges, summary, _counts(summary, config))


def _counts(summary: pd.DataFrame, config: SubgraphConfig) -> dict[str, int | float]:
    # row counts of the long tables from the summary, so a writer that streams them counts without holding them
    n_nodes = summary["n_nodes"].to_numpy(dtype=float)
    counts: dict[str, int | float] = {
        "images": len(summary),
        "subgraph_nodes": int(summary["n_nodes"].sum()),
        "subgraph_edges": int(summary["n_edges"].sum()),
        "truncated": int(summary["truncated"].sum()),
        "radius_m": float(config.radius_m),
        "max_nodes": int(config.max_nodes),
    }
    if len(summary):
        counts |= {
            "n_nodes_min": int(n_nodes.min()),
            "n_nodes_median": float(np.median(n_nodes)),
            "n_nodes_max": int(n_nodes.max()),
            "n_edges_median": float(summary["n_edges"].median()),
        }
    return counts


def build_subgraphs(
    nodes: gpd.GeoDataFrame,
    edges: pd.DataFrame,
    images: pd.DataFrame,
    *,
    crs_metric: str,
    config: SubgraphConfig | None = None,
) -> SubgraphTables:
    """
    Build the radius subgraph of every image (see the module docstring for the rules).

    Parameters
    ----------
    nodes
        The anchored graph's nodes (GeoDataFrame, EPSG:4326 or any CRS; columns as built by
        ``build_urban_graph``), with ``AnchorResult.image_nodes`` concatenated in.
    edges
        The graph's edges with ``AnchorResult.image_edges`` concatenated in; every endpoint must be a node.
    images
        The anchored images (``AnchorResult.images``): ``image_id``, ``source``, ``lon``, ``lat`` (decimal
        degrees) and ideally ``street_node`` (else taken from the ``image_street`` edges). Each image's node
        ``image:<source>:<image_id>`` must be in ``nodes``.
    config
        Radius (metres), cap (nodes per subgraph, centre included) and chunk size; :class:`SubgraphConfig`
        by default.
    crs_metric
        The metric CRS of the city (``UrbanGraph.crs_metric``, e.g. ``"EPSG:32635"``).

    Returns
    -------
    SubgraphTables
        ``nodes``, ``edges`` and ``summary`` long tables (images in input order) and ``counts``.

    Raises
    ------
    SubgraphInputError
        Missing columns, duplicate ids, edges or images whose nodes are not in ``nodes``, bad coordinates.
    """
    config = config or SubgraphConfig()
    chunks = list(iter_subgraph_chunks(nodes, edges, images, crs_metric=crs_metric, config=config))
    if not chunks:
        return _empty_tables(config)
    # concatenating the chunks' frames gives exactly the rows and dtypes the chunks were built with
    tables = SubgraphTables(
        *(pd.concat([getattr(c, part) for c in chunks], ignore_index=True) for part in ("nodes", "edges", "summary"))
    )
    tables.counts = _counts(tables.summary, config)
    logger.info(
        "built %s subgraphs (radius %s m, cap %s): %s node rows, %s edge rows, %s truncated",
        f"{len(images):,}",
        config.radius_m,
        config.max_nodes,
        f"{len(tables.nodes):,}",
        f"{len(tables.edges):,}",
        f"{tables.counts['truncated']:,}",
    )
    return tables


def iter_subgraph_chunks(
    nodes: gpd.GeoDataFrame,
    edges: pd.DataFrame,
    images: pd.DataFrame,
    *,
    crs_metric: str,
    config: SubgraphConfig | None = None,
) -> Iterator[SubgraphTables]:
    """
    The tables of :func:`build_subgraphs`, one chunk of ``config.images_per_chunk`` images at a time.

    Chunks come in input order and hold whole images (every row of an image is in its chunk), so
    concatenating them gives :func:`build_subgraphs`'s tables; a writer that stores each chunk and drops it
    holds one chunk's rows at a time. Arguments and errors as for :func:`build_subgraphs` (validated before
    the first chunk); ``counts`` of a chunk is empty.
    """
    config = config or SubgraphConfig()
    crs = metric_crs(crs_metric, needed_by="build_subgraphs")
    _validate(nodes, edges, images)
    if images.empty:
        return
    lookup = pd.Index(nodes["node_id"])
    center_ids = image_node_ids(images["source"], images["image_id"])
    center = lookup.get_indexer(center_ids).astype(np.int64)
    if (center < 0).any():
        missing = [str(v) for v in center_ids[center < 0][:5]]
        msg = (
            f"{int((center < 0).sum())} image node(s) are not in nodes, e.g. {missing}; concatenate "
            "AnchorResult.image_nodes into nodes (and image_edges into edges) before building subgraphs"
        )
        raise SubgraphInputError(msg)
    if "street_node" in images.columns:
        street_ids = images["street_node"]
    else:
        image_street = edges[edges["kind"] == "image_street"].drop_duplicates("src").set_index("src")["dst"]
        street_ids = pd.Series(center_ids).map(image_street)
    street = lookup.get_indexer(street_ids.astype(object).where(street_ids.notna(), "")).astype(np.int64)

    lon = images["lon"].to_numpy(dtype=float)
    lat = images["lat"].to_numpy(dtype=float)
    graph = _prepare_graph(nodes, edges, crs)
    to_metric = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    x, y = to_metric.transform(lon, lat)
    xy = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    # text columns once for the whole run, indexed per chunk
    text = _Text(
        image_ids=images["image_id"].astype(str).to_numpy(dtype=object),
        center_ids=center_ids,
        node={c: _text(nodes[c].to_numpy(dtype=object)) for c in ("node_id", "kind", "name", "category", "node_text")},
        edge={c: _text(edges[c].to_numpy(dtype=object)) for c in ("src", "dst", "kind", "street_name")},
        distance_m=edges["distance_m"].to_numpy(dtype=float),
        bearing_deg=edges["bearing_deg"].to_numpy(dtype=float),
    )
    for first in range(0, len(images), config.images_per_chunk):
        part = slice(first, first + config.images_per_chunk)
        chunk = _build_chunk(
            graph, first, lon[part], lat[part], xy[part], center[part], street[part], to_lonlat, config
        )
        yield _assemble(chunk, first, len(lon[part]), text, graph)
        logger.debug("subgraphs: %s of %s images done", f"{first + len(lon[part]):,}", f"{len(images):,}")


@dataclass(slots=True)
class _Text:
    """The id and text columns the long tables copy, as object arrays (built once, indexed per chunk)."""

    image_ids: npt.NDArray[np.object_]
    center_ids: npt.NDArray[np.object_]
    node: dict[str, npt.NDArray[np.object_]]
    edge: dict[str, npt.NDArray[np.object_]]
    distance_m: npt.NDArray[np.float64]
    bearing_deg: npt.NDArray[np.float64]


def _assemble(chunk: _Chunk, first: int, size: int, text: _Text, graph: _Graph) -> SubgraphTables:
    """One chunk's long tables from its integer results (images ``first .. first + size - 1``)."""
    code, row = chunk.node_code, chunk.edge_row
    sub_nodes = pd.DataFrame(
        {
            "image_id": pd.Series(text.image_ids[chunk.node_image], dtype=object),
            **{c: pd.Series(v[code], dtype=object) for c, v in text.node.items()},
            "lon": graph.lon[code],
            "lat": graph.lat[code],
            "dx_m": chunk.dx_m,
            "dy_m": chunk.dy_m,
            "distance_m": chunk.distance_m,
            "rank": chunk.rank,
        },
        copy=False,
    )
    edge_text = {c: pd.Series(text.edge[c][row], dtype=object) for c in ("src", "dst", "kind")}
    sub_edges = pd.DataFrame(
        {
            "image_id": pd.Series(text.image_ids[chunk.edge_image], dtype=object),
            **edge_text,
            "distance_m": text.distance_m[row],
            "bearing_deg": text.bearing_deg[row],
            "street_name": pd.Series(text.edge["street_name"][row], dtype=object),
        },
        copy=False,
    )
    summary = pd.DataFrame(
        {
            "image_id": pd.Series(text.image_ids[first : first + size], dtype=object),
            "center_node": pd.Series(text.center_ids[first : first + size], dtype=object),
            "n_nodes": np.bincount(chunk.node_image - first, minlength=size).astype(np.int64),
            "n_edges": np.bincount(chunk.edge_image - first, minlength=size).astype(np.int64),
            "truncated": chunk.truncated,
        }
    )
    return SubgraphTables(sub_nodes, sub_edges, summary)
