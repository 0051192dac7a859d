"""Mapillary coverage tiles: which z14 tiles cover an area, and the image points one tile holds.

Mapillary's recommended route for finding the images of a large area is its vector coverage tile set
``mly1_public/2/{z}/{x}/{y}`` (Mapbox Vector Tiles, web-mercator XYZ tiles). At zoom 14 the ``image`` layer has one
point per image with ``id``, ``captured_at`` (ms since epoch), ``compass_angle``, ``sequence_id``,
``organization_id`` and ``is_pano``, so a whole city is a few dozen tile requests and no search limit applies.
Tiles are decoded with the maintained ``mapbox-vector-tile`` package; this module only adds the tile arithmetic
(tile coordinates, extent 4096 with y pointing down, to lon/lat) and the column contract.

Values may come blank: the published test tiles carry empty strings for ``id``, ``captured_at``, ``compass_angle``
and ``is_pano``, so an empty string reads as missing (a NaN angle or date, an empty id, not a panorama).

Plain Python; never imports Dagster.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import mapbox_vector_tile
import numpy as np
import pandas as pd
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

__all__ = ["POINT_COLUMNS", "TILE_ZOOM", "decode_image_points", "iso_from_ms", "tile_bounds", "tiles_covering"]

#: Zoom of the coverage tiles whose ``image`` layer holds one point per image.
TILE_ZOOM = 14
#: Columns of :func:`decode_image_points`.
POINT_COLUMNS: tuple[str, ...] = (
    "image_id",
    "lon",
    "lat",
    "captured_ms",
    "compass_angle",
    "sequence_id",
    "organization_id",
    "is_pano",
)
_LAYER = "image"


def _lon(x: np.ndarray | float, z: int) -> np.ndarray | float:
    return np.asarray(x, dtype=float) / 2**z * 360.0 - 180.0


def _lat(y: np.ndarray | float, z: int) -> np.ndarray | float:
    # Inverse web mercator: y counts down from the north edge of the world.
    return np.degrees(np.arctan(np.sinh(np.pi * (1.0 - 2.0 * np.asarray(y, dtype=float) / 2**z))))


def tile_bounds(x: int, y: int, z: int = TILE_ZOOM) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of XYZ tile ``z/x/y`` in decimal degrees (a lon/lat rectangle)."""
    return float(_lon(x, z)), float(_lat(y + 1, z)), float(_lon(x + 1, z)), float(_lat(y, z))


def tiles_covering(area: BaseGeometry, z: int = TILE_ZOOM) -> list[tuple[int, int]]:
    """
    The ``(x, y)`` of the zoom-``z`` tiles that share area with ``area`` (EPSG:4326), sorted.

    A tile that only touches the area's edge is left out: a point on the shared edge is also in the neighbour
    that overlaps the area. Web-mercator tiles are lon/lat rectangles, so the test is exact.
    """
    west, south, east, north = area.bounds
    n = 2**z
    lat_limit = 85.0511287798066  # the web-mercator world's edge

    def column(lon: float) -> int:
        return min(n - 1, max(0, math.floor((lon + 180.0) / 360.0 * n)))

    def row(lat: float) -> int:
        lat = max(-lat_limit, min(lat_limit, lat))
        merc = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
        return min(n - 1, max(0, math.floor((1.0 - merc / math.pi) / 2.0 * n)))

    tiles = []
    for x in range(column(west), column(east) + 1):
        for y in range(row(north), row(south) + 1):
            cell = box(*tile_bounds(x, y, z))
            if area.intersects(cell) and not area.touches(cell):
                tiles.append((x, y))
    return tiles


def iso_from_ms(captured_ms: object) -> str:
    """Mapillary's ``captured_at`` (ms since the epoch) as ISO-8601 UTC (``...Z``); ``""`` when unknown."""
    if not isinstance(captured_ms, int | float) or isinstance(captured_ms, bool) or math.isnan(captured_ms):
        return ""
    return datetime.fromtimestamp(captured_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: object) -> float:
    if value is None or value == "" or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def decode_image_points(data: bytes, x: int, y: int, z: int = TILE_ZOOM) -> pd.DataFrame:
    """
    The image points of one coverage tile, positioned in lon/lat.

    Parameters
    ----------
    data
        The tile body (Mapbox Vector Tile protobuf, as the tile endpoint returns it).
    x, y, z
        The tile's XYZ address.

    Returns
    -------
    pandas.DataFrame
        One row per point of the ``image`` layer inside the tile's own extent (points of a tile's buffer belong
        to its neighbour and are left out, so no point counts twice), columns :data:`POINT_COLUMNS`: ``image_id``
        and ``sequence_id`` / ``organization_id`` strings (``""`` when blank), ``lon`` / ``lat`` decimal degrees,
        ``captured_ms`` and ``compass_angle`` floats (NaN when blank), ``is_pano`` bool. No ``image`` layer (an
        empty tile) gives no rows.

    Raises
    ------
    ValueError
        When ``data`` is not a vector tile.
    """
    try:
        # y_coord_down: keep the tile's own y axis (0 at the north edge) and flip it in the projection below.
        layers = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})
    except Exception as exc:  # the protobuf decoder raises its own DecodeError, not a ValueError
        msg = f"coverage tile {z}/{x}/{y} is not a Mapbox Vector Tile ({type(exc).__name__}: {exc})"
        raise ValueError(msg) from exc
    layer = layers.get(_LAYER)
    if not layer:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in POINT_COLUMNS})
    extent = float(layer.get("extent", 4096))
    px, py, props = [], [], []
    for feature in layer["features"]:
        geometry = feature.get("geometry") or {}
        if geometry.get("type") != "Point":
            continue
        cx, cy = geometry["coordinates"][:2]
        if not (0 <= cx < extent and 0 <= cy < extent):
            continue
        px.append(cx)
        py.append(cy)
        props.append(feature.get("properties") or {})
    frame = pd.DataFrame(
        {
            "image_id": [_text(p.get("id")) for p in props],
            "lon": _lon(x + np.asarray(px, dtype=float) / extent, z),
            "lat": _lat(y + np.asarray(py, dtype=float) / extent, z),
            "captured_ms": [_number(p.get("captured_at")) for p in props],
            "compass_angle": [_number(p.get("compass_angle")) for p in props],
            "sequence_id": [_text(p.get("sequence_id")) for p in props],
            "organization_id": [_text(p.get("organization_id")) for p in props],
            "is_pano": [p.get("is_pano") is True or p.get("is_pano") == 1 for p in props],
        }
    )
    return frame.astype({c: _dtype(c) for c in POINT_COLUMNS})


def _dtype(column: str) -> str:
    if column in ("lon", "lat", "captured_ms", "compass_angle"):
        return "float64"
    return "bool" if column == "is_pano" else "object"
