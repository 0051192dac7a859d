"""The drawable scene of a city for the offline street-view renderer, in the city's UTM CRS.

:func:`build_scene` turns an :class:`~ugdata_pipeline.osm.schema.OsmExtract` into flat numpy arrays that the
column raycaster of :mod:`ugdata_pipeline.imagery.render` reads:

* **walls**: every edge of every building footprint ring (exteriors counter-clockwise, holes clockwise, so the
  outside of the building is always on the right of an edge), with its building, its length, its position
  along the ring (for the window texture) and its outward normal (the renderer shades it per view from the
  sequence's sun, :mod:`ugdata_pipeline.imagery.lighting`; the scene fixes no sun); an STRtree over the edges
  finds those around a camera.
* **buildings**: height from ``height`` / ``building:levels`` (:func:`ugdata_pipeline.osm.tags.height_m`),
  else a default that depends on the ``building=*`` type (houses and garages are low) and varies by
  building; façade colour by category (houses from a wooden-house palette, the rest from plaster tones),
  tinted by the main shop or amenity inside.
* **signs**: POIs inside or within :data:`ATTACH_DISTANCE_M` of a footprint put a coloured sign band
  (colour by POI category) on the ground floor of the wall nearest to them; other named POIs stand free as
  sign boards on posts.
* **trees**: ``natural=tree`` nodes, drawn as billboards.
* **ground**: a land-cover raster (about 1 m cells): land use, parks, water and parking from the areas, streets
  drawn at their category's width on top; each cell also remembers which area it belongs to.

Real extracts carry invalid footprints; they are repaired with ``shapely.make_valid`` (``structure`` method)
when that leaves a polygon, else skipped, and both are counted (``invalid_geometry_repaired`` /
``invalid_geometry_skipped``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field, fields

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image, ImageDraw
from pyproj import CRS

from ugdata_pipeline.errors import SceneInputError
from ugdata_pipeline.graph.crs import metric_crs
from ugdata_pipeline.imagery.palette import (
    AREA_CATEGORY_GROUND,
    AREA_TAG_GROUND,
    DEFAULT_SIGN,
    FACADE_BY_CATEGORY,
    GROUND_DEFAULT,
    HOUSE_TYPES,
    LOW_BUILDINGS_M,
    PLASTER,
    RESIDENTIAL,
    ROAD_MINOR,
    SIGN_CATEGORIES,
    SIGN_COLORS,
    STREET_GROUND,
    WOODEN,
)
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline.seeding import stable_hash

logger = logging.getLogger(__name__)


#: Storey height used for the window grid and for default heights (the same 3.2 m as ``osm.tags``).
FLOOR_HEIGHT_M = 3.2
#: A POI this close to a footprint (or inside it) gets a sign on that building's façade.
ATTACH_DISTANCE_M = 10.0
#: Half the width of a façade sign along the wall.
SIGN_HALF_WIDTH_M = 4.0
#: Footprint pieces smaller than this are dropped (slivers left by repairs).
MIN_FOOTPRINT_M2 = 1.0
#: Largest ground raster, in cells; bigger cities get coarser cells.
MAX_RASTER_CELLS = 16_000_000


def _unit(key: object, salt: str) -> float:
    """A deterministic number in ``[0, 1)`` for ``key``."""
    return (stable_hash(salt, key, scheme="sha1-le") % 1_000_003) / 1_000_003


@dataclass(slots=True)
class Scene:
    """
    Everything the renderer draws for one city, as arrays in the metric CRS ``crs_metric``.

    Attributes
    ----------
    crs_metric
        The UTM CRS (``"EPSG:32635"``) of every coordinate below, in metres.
    building_osm_id, building_name, building_category
        Per building (object arrays); the name may be ``None``.
    building_height_m, building_color, building_bay_m, building_seed
        Height in metres, façade RGB (0..255, float32, ``(n, 3)``), window bay width in metres, texture seed.
    wall_start, wall_end
        ``(m, 2)`` float64 start / end points of each footprint edge (outside on the right of the edge).
    wall_building, wall_along_m, wall_length_m
        Building index, distance along its ring where the edge starts (metres), edge length (metres).
    wall_normal
        ``(m, 2)`` float32 outward unit normal of each edge (east, north), for the per-view sun shading.
    wall_sign_poi, wall_sign_along_m
        POI whose sign sits on the edge (``-1`` none) and the sign's centre along the ring.
    wall_tree
        STRtree over the edges (as LineStrings).
    poi_osm_id, poi_name, poi_category, poi_xy, poi_building, poi_color
        Signed POIs: ids, names, categories, ``(k, 2)`` positions, building index (``-1``: stands free), RGB.
    tree_osm_id, tree_xy, tree_crown_m, tree_crown_height_m, tree_color
        Single trees and their billboard size (crown radius, crown centre height) and colour.
    area_osm_id, area_name, area_category
        The areas painted on the ground raster (index ``k`` is stored as ``k`` in ``ground_area``).
    ground_class, ground_area
        ``(rows, cols)`` land-cover raster (class codes, see :data:`GROUND_PALETTE`) and area index (``-1``
        none); cell ``[i, j]`` covers ``x0 + j * resolution``, ``y0 + i * resolution`` (south-west corner).
    ground_origin, ground_resolution_m
        ``(x0, y0)`` and the cell side in metres.
    counts
        Figures for metadata: buildings, wall segments, repaired and skipped footprints, signed POIs...
    """

    crs_metric: str
    building_osm_id: np.ndarray
    building_name: np.ndarray
    building_category: np.ndarray
    building_height_m: np.ndarray
    building_color: np.ndarray
    building_bay_m: np.ndarray
    building_seed: np.ndarray
    wall_start: np.ndarray
    wall_end: np.ndarray
    wall_building: np.ndarray
    wall_along_m: np.ndarray
    wall_length_m: np.ndarray
    wall_normal: np.ndarray
    wall_sign_poi: np.ndarray
    wall_sign_along_m: np.ndarray
    wall_tree: shapely.STRtree
    poi_osm_id: np.ndarray
    poi_name: np.ndarray
    poi_category: np.ndarray
    poi_xy: np.ndarray
    poi_building: np.ndarray
    poi_color: np.ndarray
    tree_osm_id: np.ndarray
    tree_xy: np.ndarray
    tree_crown_m: np.ndarray
    tree_crown_height_m: np.ndarray
    tree_color: np.ndarray
    area_osm_id: np.ndarray
    area_name: np.ndarray
    area_category: np.ndarray
    ground_class: np.ndarray
    ground_area: np.ndarray
    ground_origin: tuple[float, float]
    ground_resolution_m: float
    counts: dict[str, int] = field(default_factory=dict)

    def digest(self) -> str:
        """
        A 16-hex-digit hash of everything drawn (every array, the CRS and the ground grid), so rendered views can
        tell that the city they were drawn from has changed (a refresh with new OSM data) and be drawn again.
        """
        h = hashlib.sha1(self.crs_metric.encode())
        h.update(repr((self.ground_origin, self.ground_resolution_m)).encode())
        for name in sorted(f.name for f in fields(self)):
            value = getattr(self, name)
            if isinstance(value, np.ndarray):
                h.update(name.encode())
                h.update(str(value.shape).encode())
                if value.dtype == object:
                    h.update("\x1f".join("\x00" if v is None else str(v) for v in value.ravel()).encode())
                else:
                    h.update(np.ascontiguousarray(value).tobytes())
        return h.hexdigest()[:16]

    @property
    def free_poi_index(self) -> np.ndarray:
        """Indices of the POIs that stand free (drawn as sign boards, not on a façade)."""
        return np.flatnonzero(self.poi_building < 0)


def _to_metric(frame: gpd.GeoDataFrame, crs: CRS) -> gpd.GeoDataFrame:
    if frame.crs is None:
        msg = "an OSM table has no CRS; the normalized tables are EPSG:4326 (osm.schema.frame sets it)"
        raise SceneInputError(msg)
    return frame.to_crs(crs)


def _repair_footprints(geoms: np.ndarray) -> tuple[list[np.ndarray], int, int]:
    """
    Polygon parts of each footprint, repairing invalid ones.

    Returns the parts per footprint, how many invalid footprints were repaired, and how many footprints were
    skipped (empty, or nothing of at least :data:`MIN_FOOTPRINT_M2` left after repair).
    """
    valid = shapely.is_valid(geoms)
    repaired = skipped = 0
    parts_per: list[np.ndarray] = []
    for geom, ok in zip(geoms, valid, strict=True):
        if geom is None or shapely.is_empty(geom):
            skipped += 1
            parts_per.append(np.empty(0, dtype=object))
            continue
        if not ok:
            try:
                geom = shapely.make_valid(geom, method="structure")
            except shapely.errors.GEOSException:  # the TopologyException family
                geom = None
        parts = shapely.get_parts(geom) if geom is not None else np.empty(0, dtype=object)
        parts = parts[(shapely.get_type_id(parts) == 3)] if len(parts) else parts  # 3: Polygon
        if len(parts):
            parts = parts[shapely.area(parts) >= MIN_FOOTPRINT_M2]
        if not len(parts):  # nothing drawable left: invalid beyond repair, or a sliver
            skipped += 1
        elif not ok:
            repaired += 1
        parts_per.append(parts)
    return parts_per, repaired, skipped


def _default_height_m(osm_id: str, tag: str | None, default_m: float) -> float:
    """Height of an untagged building: low for houses and sheds, else ``default_m`` varied per building."""
    kind = tag.split("=", 1)[1] if tag and tag.startswith("building=") else None
    base = LOW_BUILDINGS_M.get(kind or "")
    if base is not None:
        return base * (0.85 + 0.3 * _unit(osm_id, "height"))
    floors = max(1, round(default_m / FLOOR_HEIGHT_M * (0.6 + 0.9 * _unit(osm_id, "height"))))
    return floors * FLOOR_HEIGHT_M + 0.8  # a parapet above the top floor


def _facade_color(osm_id: str, category: str, tag: str | None) -> np.ndarray:
    kind = tag.split("=", 1)[1] if tag and tag.startswith("building=") else None
    if kind in HOUSE_TYPES:
        base = WOODEN[stable_hash(osm_id, "facade", scheme="sha1-le") % len(WOODEN)]
    elif category in FACADE_BY_CATEGORY:
        base = np.asarray(FACADE_BY_CATEGORY[category], dtype=np.float32)
    else:
        base = PLASTER[stable_hash(osm_id, "facade", scheme="sha1-le") % len(PLASTER)]
    jitter = 0.9 + 0.2 * _unit(osm_id, "tone")
    return np.clip(base * jitter, 0, 255).astype(np.float32)


def _wall_segments(polygons: np.ndarray) -> dict[str, np.ndarray]:
    """Edges of every ring of ``polygons`` (oriented: outside on the right) with their ring and position."""
    if len(polygons) == 0:
        empty = np.empty((0, 2))
        return {
            "start": empty,
            "end": empty,
            "polygon": np.empty(0, np.int64),
            "along": np.empty(0),
            "length": np.empty(0),
            "ring": np.empty(0, np.int64),
        }
    oriented = shapely.orient_polygons(polygons)  # exterior counter-clockwise, holes clockwise
    rings, ring_polygon = shapely.get_rings(oriented, return_index=True)
    coords, ring_of_coord = shapely.get_coordinates(rings, return_index=True)
    same_ring = ring_of_coord[:-1] == ring_of_coord[1:]
    start, end = coords[:-1][same_ring], coords[1:][same_ring]
    ring = ring_of_coord[:-1][same_ring]
    length = np.hypot(*(end - start).T)
    keep = length > 1e-3
    start, end, ring, length = start[keep], end[keep], ring[keep], length[keep]
    cumulative = np.cumsum(length) - length
    ring_first = np.searchsorted(ring, ring, side="left")  # rings are contiguous and sorted
    along = cumulative - cumulative[ring_first]
    return {"start": start, "end": end, "polygon": ring_polygon[ring], "along": along, "length": length, "ring": ring}


def _nearest_on_walls(point: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[int, float, float]:
    """Index of the nearest edge to ``point``, the fraction along it and the distance."""
    d = end - start
    denom = np.maximum((d * d).sum(axis=1), 1e-12)
    w = np.clip(((point - start) * d).sum(axis=1) / denom, 0.0, 1.0)
    dist = np.hypot(*(start + w[:, None] * d - point).T)
    k = int(np.argmin(dist))
    return k, float(w[k]), float(dist[k])


def _ground_class(tag: str | None, category: str | None) -> int:
    if tag in AREA_TAG_GROUND:
        return AREA_TAG_GROUND[tag]
    if category in AREA_CATEGORY_GROUND:
        return AREA_CATEGORY_GROUND[category]
    if tag and tag.startswith("landuse="):
        return RESIDENTIAL if tag == "landuse=allotments" else GROUND_DEFAULT
    return GROUND_DEFAULT


def _raster_extent(frames: list[gpd.GeoDataFrame], margin_m: float) -> tuple[float, float, float, float] | None:
    bounds = [f.total_bounds for f in frames if len(f)]
    if not bounds:
        return None
    b = np.array(bounds)
    return (b[:, 0].min() - margin_m, b[:, 1].min() - margin_m, b[:, 2].max() + margin_m, b[:, 3].max() + margin_m)


def _paint_ground(
    streets: gpd.GeoDataFrame,
    areas: gpd.GeoDataFrame,
    area_class: np.ndarray,
    margin_m: float,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
    """Rasterise areas (largest first, so small ones stay on top) then streets at their widths."""
    extent = _raster_extent([streets] if len(streets) else [areas], margin_m)
    if extent is None:
        return np.zeros((1, 1), np.uint8), np.full((1, 1), -1, np.int32), (0.0, 0.0), 1.0
    x0, y0, x1, y1 = extent
    resolution = max(1.0, math.sqrt((x1 - x0) * (y1 - y0) / MAX_RASTER_CELLS))
    cols, rows = math.ceil((x1 - x0) / resolution), math.ceil((y1 - y0) / resolution)

    def pixels(coords: np.ndarray) -> list[tuple[float, float]]:
        return list(map(tuple, (coords - (x0, y0)) / resolution))

    area_img = Image.new("I", (cols, rows), 0)
    draw = ImageDraw.Draw(area_img)
    order = np.argsort(-shapely.area(areas.geometry.values), kind="stable") if len(areas) else []
    for k in order:
        if area_class[k] == GROUND_DEFAULT:
            continue
        for part in shapely.get_parts(areas.geometry.values[k]):
            if shapely.get_type_id(part) == 3 and not part.is_empty:
                draw.polygon(pixels(shapely.get_coordinates(part.exterior)), fill=int(k) + 1)
    ground_area = np.asarray(area_img, dtype=np.int32) - 1
    lut = np.concatenate([[GROUND_DEFAULT], area_class]).astype(np.uint8)
    ground_class = lut[ground_area + 1]

    road_img = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(road_img)
    for category, geom in zip(streets["category"], streets.geometry.values, strict=True):
        ground, width_m = STREET_GROUND.get(category, (ROAD_MINOR, 5.0))
        for part in shapely.get_parts(geom):
            coords = shapely.get_coordinates(part)
            if len(coords) >= 2:
                draw.line(pixels(coords), fill=ground, width=max(1, round(width_m / resolution)), joint="curve")
    roads = np.asarray(road_img, dtype=np.uint8)
    ground_class = np.where(roads > 0, roads, ground_class)
    return ground_class, ground_area, (float(x0), float(y0)), float(resolution)


def build_scene(
    extract: OsmExtract,
    *,
    crs_metric: str,
    default_building_height_m: float = 10.0,
    margin_m: float = 300.0,
) -> Scene:
    """
    Build the drawable scene of a city from its OSM tables.

    Parameters
    ----------
    extract
        The city's normalized OSM tables (EPSG:4326); ``trees`` may be empty.
    crs_metric
        The city's metric CRS (``UrbanGraph.crs_metric``; ``city_metric_crs(extract.streets)``).
    default_building_height_m
        Typical height of a building without ``height`` / ``building:levels`` tags (houses, garages and sheds
        get their own lower defaults); each building varies around it, whole storeys of 3.2 m.
    margin_m
        How far beyond the streets the ground raster reaches (views see up to their ``max_distance_m``).

    Returns
    -------
    scene
        Arrays for the renderer and ``counts`` for metadata. An extract with no buildings, areas or trees
        gives an empty but drawable scene.

    Raises
    ------
    SceneInputError
        ``default_building_height_m`` or ``margin_m`` is not a positive number of metres.
    MetricCrsError
        ``crs_metric`` is missing or not a metric CRS.
    """
    for name, value in (("default_building_height_m", default_building_height_m), ("margin_m", margin_m)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            msg = f"`{name}` must be a positive number of metres, got {value!r}"
            raise SceneInputError(msg)
    crs = metric_crs(crs_metric, needed_by="build_scene")
    streets = _to_metric(extract.streets, crs)
    aois = _to_metric(extract.aois, crs)
    pois = _to_metric(extract.pois, crs)
    trees = _to_metric(extract.trees, crs)

    # --- buildings and their walls
    is_building = aois["is_building"].to_numpy(dtype=bool)
    buildings = aois[is_building].reset_index(drop=True)
    parts_per, repaired, skipped = _repair_footprints(buildings.geometry.values)
    kept = [i for i, parts in enumerate(parts_per) if len(parts)]
    polygons = np.concatenate([parts_per[i] for i in kept]) if kept else np.empty(0, dtype=object)
    polygon_building = np.repeat(np.arange(len(kept)), [len(parts_per[i]) for i in kept]).astype(np.int64)
    b = buildings.iloc[kept].reset_index(drop=True)
    osm_ids = b["osm_id"].astype(str).to_numpy()
    heights = np.array(
        [
            h if pd.notna(h) and h > 0 else _default_height_m(i, t, default_building_height_m)
            for i, h, t in zip(osm_ids, b["height_m"], b["tag"], strict=True)
        ],
        dtype=np.float32,
    )
    colors = np.array(
        [_facade_color(i, c, t) for i, c, t in zip(osm_ids, b["category"], b["tag"], strict=True)], dtype=np.float32
    ).reshape(-1, 3)
    bay_m = np.array([2.6 + 1.6 * _unit(i, "bay") for i in osm_ids], dtype=np.float32)
    texture_seed = np.array([stable_hash(i, "windows", scheme="sha1-le") % 1_000_003 for i in osm_ids], dtype=np.int64)

    walls = _wall_segments(polygons)
    wall_building = polygon_building[walls["polygon"]] if len(polygons) else np.empty(0, np.int64)
    direction = walls["end"] - walls["start"]
    # the outside is on the right of each edge; no sun here: a city-wide sun would tie shading to the heading
    outward = np.stack([direction[:, 1], -direction[:, 0]], axis=1) / np.maximum(walls["length"], 1e-9)[:, None]

    # --- POIs: signs on the nearest façade, or free-standing sign boards
    poi_tag = pois["tag"].astype(str)
    signed = (pois["name"].notna() | pois["category"].isin(SIGN_CATEGORIES)) & (poi_tag != "natural=tree")
    signed &= ~pois["category"].isin({"natural", "landuse", "green"})
    p = pois[signed.to_numpy()].reset_index(drop=True)
    poi_xy = shapely.get_coordinates(p.geometry.values) if len(p) else np.empty((0, 2))
    poi_building = np.full(len(p), -1, dtype=np.int64)
    sign_poi = np.full(len(walls["length"]), -1, dtype=np.int64)
    sign_along = np.zeros(len(walls["length"]), dtype=np.float32)
    if len(p) and len(polygons):
        footprint_tree = shapely.STRtree(polygons)
        hits, hit_dist = footprint_tree.query_nearest(
            p.geometry.values, max_distance=ATTACH_DISTANCE_M, return_distance=True, all_matches=False
        )
        del hit_dist
        poi_building[hits[0]] = polygon_building[hits[1]]
        polygon_of = {int(q): int(g) for q, g in zip(hits[0], hits[1], strict=True)}
        best_gap = np.full(len(walls["length"]), np.inf)
        for q, g in sorted(polygon_of.items()):
            on_polygon = np.flatnonzero(walls["polygon"] == g)
            k, w, _ = _nearest_on_walls(poi_xy[q], walls["start"][on_polygon], walls["end"][on_polygon])
            edge = on_polygon[k]
            centre = walls["along"][edge] + w * walls["length"][edge]
            same_ring = on_polygon[walls["ring"][on_polygon] == walls["ring"][edge]]
            lo, hi = walls["along"][same_ring], walls["along"][same_ring] + walls["length"][same_ring]
            gap = np.maximum(0.0, np.maximum(lo - centre, centre - hi))  # distance from the sign centre
            covered = same_ring[(gap < SIGN_HALF_WIDTH_M) & (gap < best_gap[same_ring])]
            sign_poi[covered] = q
            sign_along[covered] = centre
            best_gap[covered] = gap[np.isin(same_ring, covered)]
    poi_colors = np.array([SIGN_COLORS.get(c, DEFAULT_SIGN) for c in p["category"]], dtype=np.float32)
    # a generic building takes a little of the colour of the first shop or amenity it houses
    for q in np.flatnonzero(poi_building >= 0)[::-1]:  # reversed, so the first POI is applied last and wins
        owner = poi_building[q]
        house = str(b["tag"].iloc[owner]).removeprefix("building=") in HOUSE_TYPES
        if b["category"].iloc[owner] == "building" and not house:
            colors[owner] = _facade_color(osm_ids[owner], "building", None) * 0.85 + poi_colors[q] * 0.15

    wall_tree = shapely.STRtree(
        shapely.linestrings(np.stack([walls["start"], walls["end"]], axis=1))
        if len(walls["length"])
        else np.empty(0, dtype=object)
    )

    # --- trees
    tree_ids = trees["osm_id"].astype(str).to_numpy()
    tree_xy = shapely.get_coordinates(trees.geometry.values) if len(trees) else np.empty((0, 2))
    tree_crown = np.array([1.8 + 1.6 * _unit(i, "crown") for i in tree_ids], dtype=np.float32)
    tree_height = np.array([3.8 + 3.0 * _unit(i, "tree-height") for i in tree_ids], dtype=np.float32)
    greens = np.array([(58, 110, 48), (72, 124, 52), (46, 96, 50), (88, 130, 60)], dtype=np.float32)
    tree_color = (
        greens[[stable_hash(i, "leaf", scheme="sha1-le") % len(greens) for i in tree_ids]]
        if len(tree_ids)
        else np.empty((0, 3), np.float32)
    )

    # --- ground
    areas = aois[~is_building].reset_index(drop=True)
    area_ok = areas.geometry.is_valid.to_numpy() if len(areas) else np.empty(0, bool)
    if len(areas) and not area_ok.all():
        areas.loc[~area_ok, "geometry"] = shapely.make_valid(areas.geometry.values[~area_ok], method="structure")
    area_class = np.array(
        [_ground_class(t, c) for t, c in zip(areas["tag"], areas["category"], strict=True)], dtype=np.uint8
    )
    ground_class, ground_area, origin, resolution = _paint_ground(streets, areas, area_class, margin_m)

    counts = {
        "buildings": len(kept),
        "wall_segments": len(walls["length"]),
        "invalid_geometry_repaired": repaired,
        "invalid_geometry_skipped": skipped,
        "pois_on_facades": int((poi_building >= 0).sum()),
        "pois_free_standing": int((poi_building < 0).sum()),
        "trees": len(tree_ids),
        "ground_areas": int((area_class != GROUND_DEFAULT).sum()),
        "ground_cells": int(ground_class.size),
    }
    logger.info(
        "scene: %s buildings (%s walls; %s repaired, %s skipped), %s signed POIs, %s trees, %s areas",
        f"{len(kept):,}",
        f"{counts['wall_segments']:,}",
        repaired,
        skipped,
        f"{len(p):,}",
        f"{len(tree_ids):,}",
        counts["ground_areas"],
    )
    return Scene(
        crs_metric=crs.to_string(),
        building_osm_id=osm_ids.astype(object),
        building_name=b["name"].to_numpy(dtype=object),
        building_category=b["category"].to_numpy(dtype=object),
        building_height_m=heights,
        building_color=colors,
        building_bay_m=bay_m,
        building_seed=texture_seed,
        wall_start=walls["start"],
        wall_end=walls["end"],
        wall_building=wall_building.astype(np.int64),
        wall_along_m=walls["along"].astype(np.float32),
        wall_length_m=walls["length"].astype(np.float32),
        wall_normal=outward.astype(np.float32).reshape(-1, 2),
        wall_sign_poi=sign_poi,
        wall_sign_along_m=sign_along,
        wall_tree=wall_tree,
        poi_osm_id=p["osm_id"].to_numpy(dtype=object),
        poi_name=p["name"].to_numpy(dtype=object),
        poi_category=p["category"].to_numpy(dtype=object),
        poi_xy=poi_xy,
        poi_building=poi_building,
        poi_color=poi_colors.reshape(-1, 3),
        tree_osm_id=tree_ids.astype(object),
        tree_xy=tree_xy,
        tree_crown_m=tree_crown,
        tree_crown_height_m=tree_height,
        tree_color=tree_color.astype(np.float32),
        area_osm_id=areas["osm_id"].to_numpy(dtype=object),
        area_name=areas["name"].to_numpy(dtype=object),
        area_category=areas["category"].to_numpy(dtype=object),
        ground_class=ground_class,
        ground_area=ground_area,
        ground_origin=origin,
        ground_resolution_m=resolution,
        counts=counts,
    )
