"""Camera positions for the offline renderer: along every named street, every ``spacing_m``, both directions.

Ways of one street name are merged into continuous parts (``shapely.line_merge``). On each part, cameras sit
every ``spacing_m`` metres (centred, so a short part still gets one camera), 1.5 m to the right of the centre
line in the direction of travel, looking along the street's tangent with a uniform heading jitter of
``± heading_jitter_deg``; with ``view_offsets_deg`` a point gives one view per offset from the travel direction
(e.g. ``(0, 90, -90)``: forward, right and left), each with its own jitter, all in the point's sequence. Each
(street, part, direction, 200 m stretch) is one sequence, in travel order: like a capture session, a sequence
covers a few hundred metres, so it fits inside one spatial split block instead of dragging a whole avenue into
one split.

Ids and jitter are derived from ``(city, street, part, direction, index)`` (plus the offset, for offsets other
than 0) with a stable hash, so the same extract always gives the same cameras, however many views are rendered
afterwards, and the forward views keep their ids whatever other offsets are asked for.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from ugdata_pipeline.errors import SceneInputError
from ugdata_pipeline.graph.geodesy import bearing_deg
from ugdata_pipeline.graph.node_ids import slugify
from ugdata_pipeline.seeding import stable_hash

#: Columns of :func:`sample_cameras`' result. ``x_m``, ``y_m`` (metric CRS) and ``heading_deg`` (clockwise from
#: grid north of the metric CRS) are what the renderer uses; ``compass_angle`` is from true north.
CAMERA_COLUMNS: tuple[str, ...] = (
    "camera_id",
    "lon",
    "lat",
    "compass_angle",
    "sequence_id",
    "street_name",
    "x_m",
    "y_m",
    "heading_deg",
    "view_offset_deg",
)
#: Cameras stand this far right of the street's centre line, as a car or pedestrian would.
LANE_OFFSET_M = 1.5


#: Length of street one rendered sequence covers (metres along the street part).
SEQUENCE_STRETCH_M = 200.0


def _camera_id(city: str, street: str, part: int, direction: str, index: int, offset_deg: float = 0.0) -> str:
    """The view's id; a forward view (offset 0) has the id it had before offsets existed."""
    parts: tuple[object, ...] = ("camera", city, street, part, direction, index)
    if offset_deg != 0.0:
        parts = (*parts, "offset", repr(offset_deg))
    return f"r{stable_hash(*parts, scheme='sha1-le'):016x}"[:11]


def normalize_offsets(view_offsets_deg: object) -> tuple[float, ...]:
    """
    Check view offsets and bring each into ``(-180, 180]`` degrees.

    Parameters
    ----------
    view_offsets_deg
        A non-empty sequence of finite numbers of degrees, distinct modulo 360.

    Returns
    -------
    offsets
        The offsets in the given order, each in ``(-180, 180]`` (so 360 and 0 are the same forward view).

    Raises
    ------
    SceneInputError
        Not a non-empty sequence of finite numbers, or two offsets that are the same direction.
    """
    msg = f"`view_offsets_deg` must be a non-empty list of distinct finite degrees, got {view_offsets_deg!r}"
    if isinstance(view_offsets_deg, str | bytes) or not hasattr(view_offsets_deg, "__iter__"):
        raise SceneInputError(msg)
    values = list(view_offsets_deg)  # type: ignore[call-overload]
    if not values or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise SceneInputError(msg)
    offsets = tuple(0.0 if v % 360.0 == 0 else 180.0 - (180.0 - float(v)) % 360.0 for v in values)
    if len(set(offsets)) != len(offsets):
        raise SceneInputError(msg)
    return offsets


def sample_cameras(
    streets: gpd.GeoDataFrame,
    *,
    crs_metric: str,
    spacing_m: float = 40.0,
    seed: int = 0,
    heading_jitter_deg: float = 8.0,
    city_slug: str = "",
    view_offsets_deg: tuple[float, ...] = (0.0,),
) -> pd.DataFrame:
    """
    Sample camera positions and headings along the named streets.

    Parameters
    ----------
    streets
        The ``streets`` table (EPSG:4326, ``name`` may be missing: unnamed ways get no cameras).
    crs_metric
        Metric CRS for spacing and offsets (the city's UTM zone).
    spacing_m
        Distance between cameras along a street part, metres (> 0).
    seed
        Seeds the heading jitter (together with the camera's identity).
    heading_jitter_deg
        Half-width of the uniform heading jitter, degrees in ``[0, 90)``.
    city_slug
        Mixed into camera ids so ids of different cities never collide.
    view_offsets_deg
        One view per camera point and offset, degrees clockwise from the direction of travel (``90``: facing
        right, ``-90``: left); each view gets its own heading jitter. ``(0.0,)`` gives the forward views only.

    Returns
    -------
    cameras
        One row per view, columns :data:`CAMERA_COLUMNS`, the views of a point together in offset order;
        ``camera_id`` is ``"r"`` + 10 hex digits (forward views keep the same ids whatever the offsets),
        ``sequence_id`` is ``"<city>:<street-slug>:<part>:<f|b>:<stretch>"`` (shared by the views of a point),
        ``compass_angle`` is in ``[0, 360)``, ``view_offset_deg`` in ``(-180, 180]``.

    Raises
    ------
    SceneInputError
        ``spacing_m``, ``heading_jitter_deg`` or ``view_offsets_deg`` out of range.
    """
    if not (isinstance(spacing_m, int | float) and math.isfinite(spacing_m) and spacing_m > 0):
        msg = f"`spacing_m` must be a positive number of metres, got {spacing_m!r}"
        raise SceneInputError(msg)
    if not (isinstance(heading_jitter_deg, int | float) and 0 <= heading_jitter_deg < 90):
        msg = f"`heading_jitter_deg` must be in [0, 90) degrees, got {heading_jitter_deg!r}"
        raise SceneInputError(msg)
    offsets = normalize_offsets(view_offsets_deg)
    named = streets[streets["name"].notna()]
    if named.empty:
        return pd.DataFrame(
            {
                c: pd.Series(
                    dtype="float64"
                    if c in {"lon", "lat", "compass_angle", "x_m", "y_m", "heading_deg", "view_offset_deg"}
                    else "object"
                )
                for c in CAMERA_COLUMNS
            }
        )
    crs = CRS.from_user_input(crs_metric)
    metric = named.to_crs(crs)
    rows: dict[str, list] = {
        c: [] for c in ("camera_id", "sequence_id", "street_name", "x_m", "y_m", "heading_deg", "view_offset_deg")
    }
    for name, group in metric.groupby("name", sort=True):
        merged = shapely.line_merge(shapely.multilinestrings(list(group.geometry.values)))
        parts = [p for p in shapely.get_parts(merged) if p.length > 0.5]
        slug = slugify(str(name))
        for part_index, part in enumerate(parts):
            length = part.length
            n = max(1, int(length // spacing_m))
            along = (length - (n - 1) * spacing_m) / 2.0 + spacing_m * np.arange(n)
            along = np.clip(along, 0.0, length)
            points = shapely.get_coordinates(shapely.line_interpolate_point(part, along))
            ahead = shapely.get_coordinates(shapely.line_interpolate_point(part, np.minimum(along + 1.0, length)))
            behind = shapely.get_coordinates(shapely.line_interpolate_point(part, np.maximum(along - 1.0, 0.0)))
            tangent = ahead - behind
            heading = np.degrees(np.arctan2(tangent[:, 0], tangent[:, 1]))  # clockwise from grid north
            for direction in ("f", "b"):
                order = np.arange(n) if direction == "f" else np.arange(n)[::-1]
                for k, i in enumerate(order):
                    travel_deg = heading[i] + (180.0 if direction == "b" else 0.0)
                    travel = math.radians(travel_deg)
                    right = np.array([math.cos(travel), -math.sin(travel)])
                    x, y = points[i] + LANE_OFFSET_M * right
                    stretch = int(along[i] // SEQUENCE_STRETCH_M)
                    sequence_id = f"{city_slug}:{slug}:{part_index}:{direction}:{stretch}"
                    for offset in offsets:
                        camera_id = _camera_id(city_slug, str(name), part_index, direction, k, offset)
                        # the jitter's RNG hangs on the view's id, so the forward views keep today's headings
                        rng = np.random.default_rng(
                            [seed & 0xFFFFFFFF, stable_hash(camera_id, scheme="sha1-le") & 0xFFFFFFFF]
                        )
                        h = travel_deg + offset
                        h += rng.uniform(-heading_jitter_deg, heading_jitter_deg) if heading_jitter_deg else 0.0
                        rows["camera_id"].append(camera_id)
                        rows["sequence_id"].append(sequence_id)
                        rows["street_name"].append(str(name))
                        rows["x_m"].append(float(x))
                        rows["y_m"].append(float(y))
                        rows["heading_deg"].append(float(h % 360.0))
                        rows["view_offset_deg"].append(offset)
    cameras = pd.DataFrame(rows)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    x, y = cameras["x_m"].to_numpy(), cameras["y_m"].to_numpy()
    h = np.radians(cameras["heading_deg"].to_numpy())
    lon, lat = to_lonlat.transform(x, y)
    lon_ahead, lat_ahead = to_lonlat.transform(x + 10.0 * np.sin(h), y + 10.0 * np.cos(h))
    cameras["lon"] = np.asarray(lon, dtype=float)
    cameras["lat"] = np.asarray(lat, dtype=float)
    # grid north is not true north away from the zone's central meridian; the geodesic bearing corrects it
    cameras["compass_angle"] = bearing_deg(
        cameras["lat"].to_numpy(), cameras["lon"].to_numpy(), np.asarray(lat_ahead), np.asarray(lon_ahead)
    )
    return cameras[list(CAMERA_COLUMNS)]
