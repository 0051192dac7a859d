"""Limit a city's OSM tables to a ``[west, south, east, north]`` box (a registry source's ``clip``).

Whole-city extracts hold far more streets than a quick run can use; a clip keeps one dense part of them:

- **streets** are cut at the box edges and the pieces inside kept, each with its way's id, name and tags. A cut
  ends at a new vertex on the box edge; it gets a synthetic, negative node id (OSM ids are positive) that no
  other street shares, so a cut never makes a crossing, while the kept OSM nodes still join streets as before.
- **POIs** and **trees** are kept when they lie inside the box (edges included).
- **areas** (buildings, land use, parks, ...) are kept **whole** when they intersect the box. The renderer
  extrudes building footprints, and a building cut in half would stand as a wall of a building; a park or
  land-use polygon cut at the box would gain a boundary along the box edge that is not in OSM and would bound
  (``bounds`` edges) the streets that run near the edge. The price: an area's anchor point may lie outside.

Everything is in EPSG:4326 and the box edges are lines of constant longitude or latitude, so cutting segments
in degrees is exact for the box as given.
"""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import shapely

from ugdata_pipeline.osm.schema import STREET_COLUMNS, OsmExtract, frame

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def _segment_inside(start: np.ndarray, end: np.ndarray, box: Box) -> tuple[float, float] | None:
    """
    The part of the segment ``start -> end`` inside ``box`` as parameters ``(t0, t1)`` with ``0 <= t0 < t1 <= 1``
    (Liang-Barsky), or ``None`` when the segment misses the box or only touches it at one point.
    """
    west, south, east, north = box
    dx, dy = end[0] - start[0], end[1] - start[1]
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, start[0] - west), (dx, east - start[0]), (-dy, start[1] - south), (dy, north - start[1])):
        if p == 0:
            if q < 0:  # parallel to this edge and outside it
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return (t0, t1) if t0 < t1 else None


def _cut_way(coords: np.ndarray, ids: list[int], box: Box, next_id: int) -> tuple[list[tuple[list, list]], int]:
    """
    Cut one street way at the box edges.

    Parameters
    ----------
    coords
        ``(n, 2)`` lon/lat of the way's vertices, degrees.
    ids
        The ``n`` node ids of those vertices.
    box
        ``(west, south, east, north)``, degrees.
    next_id
        The next synthetic node id to hand out (negative; decreases).

    Returns
    -------
    pieces, next_id
        The pieces inside the box as ``(coords, node_ids)`` lists of at least two vertices each, and the next
        unused synthetic id.
    """
    west, south, east, north = box
    pieces: list[tuple[list, list]] = []
    piece_coords: list[tuple[float, float]] = []
    piece_ids: list[int] = []

    def close() -> None:
        if len(piece_ids) >= 2:
            pieces.append((list(piece_coords), list(piece_ids)))
        piece_coords.clear()
        piece_ids.clear()

    def edge_point(i: int, t: float) -> tuple[float, float]:
        lon, lat = coords[i] + t * (coords[i + 1] - coords[i])
        # rounding can leave the point a hair outside: put it on the edge it was cut at
        return min(max(float(lon), west), east), min(max(float(lat), south), north)

    for i in range(len(coords) - 1):
        inside = _segment_inside(coords[i], coords[i + 1], box)
        if inside is None:
            close()
            continue
        t0, t1 = inside
        if t0 > 0:  # enters through an edge: a new piece starts on it
            close()
            piece_coords.append(edge_point(i, t0))
            piece_ids.append(next_id)
            next_id -= 1
        elif not piece_ids:  # starts at a vertex inside the box (or on an edge)
            piece_coords.append((float(coords[i][0]), float(coords[i][1])))
            piece_ids.append(ids[i])
        if t1 < 1:  # leaves through an edge: the piece ends on it
            piece_coords.append(edge_point(i, t1))
            piece_ids.append(next_id)
            next_id -= 1
            close()
        else:
            piece_coords.append((float(coords[i + 1][0]), float(coords[i + 1][1])))
            piece_ids.append(ids[i + 1])
    close()
    return pieces, next_id


def clip_streets(streets: gpd.GeoDataFrame, box: Box) -> tuple[gpd.GeoDataFrame, int]:
    """
    The street pieces inside ``box``: whole ways when inside, cut at the edges when they cross one.

    Parameters
    ----------
    streets
        The ``streets`` table (EPSG:4326; ``node_ids`` match the LineString vertices one to one).
    box
        ``(west, south, east, north)``, degrees.

    Returns
    -------
    streets, cut
        The clipped table (same columns; a cut way gives one row per piece inside, in the order of the input)
        and the number of ways that were cut.
    """
    if streets.empty:
        return streets.reset_index(drop=True), 0
    geometries = streets.geometry.values
    area = shapely.box(*box)
    shapely.prepare(area)
    whole = shapely.covered_by(geometries, area)
    crossing = ~whole & shapely.intersects(geometries, area)
    rows: dict[str, list] = {name: [] for name in STREET_COLUMNS}
    lines: list[shapely.LineString] = []
    next_id = -1
    records = streets[list(STREET_COLUMNS)].to_dict("list")
    for i in np.flatnonzero(whole | crossing):
        if whole[i]:
            pieces = [(None, records["node_ids"][i])]
        else:
            pieces, next_id = _cut_way(
                shapely.get_coordinates(geometries[i]), list(records["node_ids"][i]), box, next_id
            )
        for coords, ids in pieces:
            for name in STREET_COLUMNS:
                rows[name].append(records[name][i])
            rows["node_ids"][-1] = ids
            lines.append(geometries[i] if coords is None else shapely.LineString(coords))
    return frame(rows, STREET_COLUMNS, lines), int(crossing.sum())


def clip_extract(extract: OsmExtract, box: Box) -> OsmExtract:
    """
    Limit a city's OSM tables to a box: streets cut at its edges, POIs and trees inside it, areas that
    intersect it kept whole (see the module docstring for why).

    Parameters
    ----------
    extract
        The city's tables, EPSG:4326.
    box
        ``(west, south, east, north)`` in degrees, already validated (west < east, south < north).

    Returns
    -------
    extract
        A new extract with ``source`` naming the clip, the same ``snapshot`` (the file's: the clip does not
        change when the data was mapped), and the count ``cut_streets`` (ways cut at the box edges) added.
    """
    area = shapely.box(*box)
    shapely.prepare(area)
    streets, cut = clip_streets(extract.streets, box)
    pois = extract.pois[shapely.covered_by(extract.pois.geometry.values, area)].reset_index(drop=True)
    trees = extract.trees[shapely.covered_by(extract.trees.geometry.values, area)].reset_index(drop=True)
    aois = extract.aois[shapely.intersects(extract.aois.geometry.values, area)].reset_index(drop=True)
    clipped = OsmExtract(
        streets=streets,
        pois=pois,
        aois=aois,
        source=f"{extract.source} clip [{', '.join(f'{v:g}' for v in box)}]",
        snapshot=extract.snapshot,
        counts={**extract.counts, "cut_streets": cut},
        trees=trees,
    )
    logger.info(
        "clipped %s to %s: %s street pieces (%s ways cut), %s POIs, %s AOIs, %s trees",
        extract.source,
        box,
        f"{len(streets):,}",
        f"{cut:,}",
        f"{len(pois):,}",
        f"{len(aois):,}",
        f"{len(trees):,}",
    )
    return clipped
