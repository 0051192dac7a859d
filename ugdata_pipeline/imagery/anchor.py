"""Anchor street-level images into the urban graph.

Each image is snapped to its nearest ``street`` node (the street's LineString / MultiLineString) within
``max_snap_m``. The nearest street is searched in the city's UTM CRS (spatial index, vectorised); the
reported snap distance and the bearing of the ``image_street`` edge come from the shared geodesic helper
(:func:`ugdata_pipeline.graph.geodesy.distance_bearing`) between the image and its snapped point on the street.

Images farther than ``max_snap_m`` from every street are dropped and counted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.graph.crs import metric_crs
from ugdata_pipeline.graph.geodesy import distance_bearing
from ugdata_pipeline.graph.schema import EDGE_COLUMNS, MIN_EDGE_DISTANCE_M, NODE_COLUMNS
from ugdata_pipeline.graph.text import render_node_text
from ugdata_pipeline.tables import require_columns

logger = logging.getLogger(__name__)

#: Columns every images table must carry (``source`` may instead come from ``source_label``).
IMAGE_REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "source", "lon", "lat", "compass_angle")

#: Two candidate streets whose distances to an image differ by at most this many metres are a tie; the
#: smaller street ``node_id`` wins, so the result does not depend on row order.
SNAP_TIE_M = 0.01


@dataclass(slots=True)
class AnchorResult:
    """
    Images snapped to streets, as graph rows.

    Attributes
    ----------
    images
        The kept input rows (all input columns) plus ``street_node`` (node id of the street the image is
        snapped to) and ``snap_distance_m`` (geodesic metres from the image to its snapped point).
    image_nodes
        One ``image`` node per kept image, in the graph's node columns (EPSG:4326 Point geometry).
    image_edges
        One ``image_street`` edge per kept image, image node -> street node, in the graph's edge columns.
    dropped
        Number of images farther than ``max_snap_m`` from every street.
    dropped_ids
        Their ``image_id`` values, in input order.
    """

    images: pd.DataFrame
    image_nodes: gpd.GeoDataFrame
    image_edges: pd.DataFrame
    dropped: int = 0
    dropped_ids: list[object] = field(default_factory=list)


def image_node_ids(source: pd.Series, image_id: pd.Series) -> np.ndarray:
    """Graph node ids ``image:<source>:<image_id>`` for aligned ``source`` and ``image_id`` series."""
    return ("image:" + source.astype(str) + ":" + image_id.astype(str)).to_numpy(dtype=object)


def validate_images(images: pd.DataFrame, *, required: tuple[str, ...] = IMAGE_REQUIRED_COLUMNS) -> None:
    """
    Check an images table before any work.

    Parameters
    ----------
    images
        Table with at least the ``required`` columns; ``lon`` / ``lat`` in decimal degrees (EPSG:4326).
    required
        Column names that must be present.

    Raises
    ------
    ImageryInputError
        On a missing column, a NaN or out-of-range coordinate, or a duplicate ``image_id``.
    """
    if not isinstance(images, pd.DataFrame):
        msg = f"images must be a pandas DataFrame, got {type(images).__name__}; build one with pd.DataFrame(...)"
        raise ImageryInputError(msg)
    require_columns(
        images, required, table="images", fix=f"Every images table needs {list(required)}.", error=ImageryInputError
    )
    for column, limit in (("lon", 180.0), ("lat", 90.0)):
        values = pd.to_numeric(images[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (np.abs(values) > limit)
        if bad.any():
            rows = images.loc[bad, ["image_id", column]].head(5)
            examples = ", ".join(f"{i!r}: {v!r}" for i, v in zip(rows["image_id"], rows[column], strict=True))
            msg = (
                f"images.{column} has {int(bad.sum())} NaN or out-of-range value(s) (must be finite, within "
                f"±{limit:g} decimal degrees), e.g. {examples}; fix or drop those rows"
            )
            raise ImageryInputError(msg)
    duplicated = images["image_id"].duplicated(keep=False)
    if duplicated.any():
        examples = sorted({str(v) for v in images.loc[duplicated, "image_id"]})[:5]
        msg = (
            f"images.image_id must be unique, but {int(duplicated.sum())} rows share ids, e.g. {examples}; "
            "deduplicate the table (drop_duplicates('image_id')) before anchoring"
        )
        raise ImageryInputError(msg)


def _streets_of(graph_nodes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if not isinstance(graph_nodes, gpd.GeoDataFrame):
        msg = (
            f"graph_nodes must be a GeoDataFrame (UrbanGraph.nodes), got {type(graph_nodes).__name__}; "
            "pass graph.nodes from build_urban_graph"
        )
        raise ImageryInputError(msg)
    require_columns(
        graph_nodes,
        ("node_id", "kind", "name", "geometry"),
        table="graph_nodes",
        fix="Pass graph.nodes from build_urban_graph.",
        error=ImageryInputError,
    )
    streets = graph_nodes[(graph_nodes["kind"] == "street") & graph_nodes.geometry.notna()]
    if streets.empty:
        msg = (
            f"graph_nodes holds no 'street' nodes with a geometry ({len(graph_nodes)} nodes in all); "
            "images can only be anchored into a graph that has streets"
        )
        raise ImageryInputError(msg)
    if streets.crs is None:
        msg = "graph_nodes has no CRS; it must be EPSG:4326 as built by build_urban_graph (set_crs('EPSG:4326'))"
        raise ImageryInputError(msg)
    return streets.to_crs("EPSG:4326")


def anchor_images(
    images: pd.DataFrame,
    graph_nodes: gpd.GeoDataFrame,
    *,
    city_name: str,
    country: str,
    crs_metric: str,
    max_snap_m: float = 50.0,
    source_label: str | None = None,
) -> AnchorResult:
    """
    Snap images to their nearest street node and build ``image`` nodes and ``image_street`` edges.

    Parameters
    ----------
    images
        One row per image with at least ``image_id``, ``source``, ``lon``, ``lat`` (decimal degrees,
        EPSG:4326) and ``compass_angle`` (degrees clockwise from north); other columns are kept.
    graph_nodes
        The graph's node table (``UrbanGraph.nodes``, EPSG:4326); only ``kind == "street"`` rows are used.
    city_name, country
        Display name and country of the city, used in the image nodes' ``node_text``.
    crs_metric
        The city's metric CRS (``UrbanGraph.crs_metric``); snap distances are measured in it.
    max_snap_m
        Largest distance in metres from an image to a street; images farther away are dropped.
    source_label
        If given, the ``source`` of every image (``"mapillary"`` or ``"render"``); it fills the ``source``
        column when the table has none and must agree with it when it has one.

    Returns
    -------
    AnchorResult
        Kept images with ``street_node`` and ``snap_distance_m`` (metres), their nodes and edges, and the
        dropped count and ids.

    Raises
    ------
    ImageryInputError
        On invalid input (see :func:`validate_images`), ``max_snap_m <= 0``, a graph without streets, or a
        ``source_label`` that contradicts the ``source`` column.
    """
    if not isinstance(max_snap_m, int | float) or not math.isfinite(max_snap_m) or max_snap_m <= 0:
        msg = f"max_snap_m must be a finite distance > 0 in metres, got {max_snap_m!r}; the default is 50.0"
        raise ImageryInputError(msg)
    if not isinstance(images, pd.DataFrame):
        validate_images(images)  # raises with the type it got
    if source_label is not None:
        if "source" in images.columns:
            other = images["source"][images["source"] != source_label]
            if len(other):
                msg = (
                    f"source_label={source_label!r} contradicts images.source, which also holds "
                    f"{sorted({str(v) for v in other.unique()})[:5]}; drop source_label or the column"
                )
                raise ImageryInputError(msg)
        else:
            images = images.assign(source=source_label)
    validate_images(images)
    if images["source"].isna().any():
        msg = "images.source has missing values; set it to 'mapillary' or 'render' (or pass source_label=...)"
        raise ImageryInputError(msg)
    crs = metric_crs(crs_metric, needed_by="anchor_images")
    streets = _streets_of(graph_nodes)

    streets_utm = streets.to_crs(crs)
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon = images["lon"].to_numpy(dtype=float)
    lat = images["lat"].to_numpy(dtype=float)
    x, y = to_utm.transform(lon, lat)
    points = shapely.points(np.asarray(x, dtype=float), np.asarray(y, dtype=float))

    # candidate (image, street) pairs within the snap radius, nearest per image, ties by street node_id
    image_pos, street_pos = streets_utm.sindex.query(points, predicate="dwithin", distance=max_snap_m)
    street_geoms = streets_utm.geometry.to_numpy()
    street_ids = streets_utm["node_id"].to_numpy(dtype=object)
    cand = pd.DataFrame(
        {
            "image": image_pos,
            "street": street_pos,
            "node_id": street_ids[street_pos],
            "dist": shapely.distance(points[image_pos], street_geoms[street_pos]),
        }
    )
    cand = cand[cand["dist"] <= max_snap_m]
    best = cand.groupby("image")["dist"].transform("min")
    cand = cand[cand["dist"] <= best + SNAP_TIE_M]
    chosen = cand.sort_values(["image", "node_id"], kind="stable").drop_duplicates("image")
    chosen = chosen.sort_values("image")

    kept_pos = chosen["image"].to_numpy(dtype=np.int64)
    dropped_mask = np.ones(len(images), dtype=bool)
    dropped_mask[kept_pos] = False
    dropped_ids = images["image_id"].to_numpy(dtype=object)[dropped_mask].tolist()

    # snapped point on the street (second point of the shortest line), back to lon/lat for the geodesic
    nearest = shapely.shortest_line(points[kept_pos], street_geoms[chosen["street"].to_numpy(dtype=np.int64)])
    on_street = shapely.get_coordinates(nearest).reshape(-1, 2, 2)[:, 1, :]
    snap_lon, snap_lat = to_lonlat.transform(on_street[:, 0], on_street[:, 1])
    snap_dist, bearing = distance_bearing(lat[kept_pos], lon[kept_pos], np.asarray(snap_lat), np.asarray(snap_lon))

    kept = images.iloc[kept_pos].copy()
    kept["street_node"] = chosen["node_id"].to_numpy(dtype=object)
    kept["snap_distance_m"] = np.asarray(snap_dist, dtype=float)

    node_ids = image_node_ids(kept["source"], kept["image_id"])
    n = len(kept)
    image_nodes = gpd.GeoDataFrame(
        {
            "node_id": pd.Series(node_ids, dtype=object),
            "kind": "image",
            "name": pd.Series([None] * n, dtype=object),
            "category": "image",
            "lon": lon[kept_pos],
            "lat": lat[kept_pos],
            "address": pd.Series([None] * n, dtype=object),
            "length_m": np.full(n, np.nan),
            "osm_ids": pd.Series([None] * n, dtype=object),
        },
        geometry=gpd.GeoSeries(shapely.points(lon[kept_pos], lat[kept_pos]), crs="EPSG:4326").values,
        crs="EPSG:4326",
    )
    image_nodes["node_text"] = [
        render_node_text(row, city=city_name, country=country)
        for row in image_nodes[["node_id", "name", "category", "address", "lon", "lat"]].to_dict("records")
    ]
    image_nodes = image_nodes[list(NODE_COLUMNS)]

    street_names = streets_utm["name"].to_numpy(dtype=object)[chosen["street"].to_numpy(dtype=np.int64)]
    image_edges = pd.DataFrame(
        {
            "src": pd.Series(node_ids, dtype=object),
            "dst": pd.Series(kept["street_node"].to_numpy(dtype=object), dtype=object),
            "kind": "image_street",
            "distance_m": np.maximum(np.asarray(snap_dist, dtype=float), MIN_EDGE_DISTANCE_M),
            "bearing_deg": np.asarray(bearing, dtype=float),
            "street_name": pd.Series(street_names, dtype=object),
        }
    )[list(EDGE_COLUMNS)]

    if dropped_ids:
        logger.info(
            "dropped %s of %s images farther than %s m from any street",
            f"{len(dropped_ids):,}",
            f"{len(images):,}",
            max_snap_m,
        )
    logger.info("anchored %s images to streets (max snap %s m)", f"{n:,}", max_snap_m)
    return AnchorResult(
        images=kept.reset_index(drop=True),
        image_nodes=image_nodes.reset_index(drop=True),
        image_edges=image_edges,
        dropped=len(dropped_ids),
        dropped_ids=dropped_ids,
    )


def anchored_graph(
    nodes: gpd.GeoDataFrame, edges: pd.DataFrame, image_nodes: gpd.GeoDataFrame, image_edges: pd.DataFrame
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The urban graph with the city's image nodes and image_street edges added."""
    all_nodes = gpd.GeoDataFrame(pd.concat([nodes, image_nodes], ignore_index=True), geometry="geometry", crs=nodes.crs)
    return all_nodes, pd.concat([edges, image_edges], ignore_index=True)
