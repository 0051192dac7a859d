"""The normalized OSM tables that both readers (offline files, online osmnx) produce.

``streets``
    One row per OSM way (or way piece) with a ``highway`` tag that is a street: ``way_id`` (int64), ``name``
    (may be missing; the graph uses named streets only, the renderer draws all), ``highway``, ``category``,
    ``node_ids`` (list of int64 OSM node ids, in order; shared ids are how streets meet) and a LineString
    ``geometry`` whose vertices are those nodes. A street cut at a registry ``clip`` ends on the box edge at a
    synthetic negative id that no other street shares (:mod:`ugdata_pipeline.osm.clip`).
``pois``
    Point places: ``osm_id`` (``n<id>``), ``name``, ``category``, ``tag`` (the ``key=value`` that decided
    the category), ``address``, ``height_m``, Point ``geometry``.
``aois``
    Areas: ``osm_id`` (``w<id>`` or ``r<id>``), ``name``, ``category``, ``tag``, ``address``, ``height_m``,
    ``is_building``, Polygon/MultiPolygon ``geometry``.
``trees``
    Single trees (``natural=tree`` nodes, which are also POIs of category ``natural``): ``osm_id`` (``n<id>``)
    and Point ``geometry``; the street-view renderer draws them. Empty when the source maps none.

Everything is EPSG:4326.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import geopandas as gpd
import pandas as pd

CRS = "EPSG:4326"

STREET_COLUMNS: tuple[str, ...] = ("way_id", "name", "highway", "category", "node_ids")
POI_COLUMNS: tuple[str, ...] = ("osm_id", "name", "category", "tag", "address", "height_m")
AOI_COLUMNS: tuple[str, ...] = ("osm_id", "name", "category", "tag", "address", "height_m", "is_building")
TREE_COLUMNS: tuple[str, ...] = ("osm_id",)

_DTYPES: dict[str, str] = {
    "way_id": "int64",
    "name": "object",
    "highway": "object",
    "category": "object",
    "osm_id": "object",
    "tag": "object",
    "address": "object",
    "height_m": "float64",
    "is_building": "bool",
    "node_ids": "object",
}


def frame(
    rows: dict[str, list], columns: tuple[str, ...], geometry: list | gpd.array.GeometryArray
) -> gpd.GeoDataFrame:
    """Build one normalized table from column lists, with fixed dtypes and the EPSG:4326 CRS."""
    data = {name: pd.Series(rows.get(name, []), dtype=_DTYPES[name]) for name in columns}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geometry, crs=CRS).values, crs=CRS)


def empty_trees() -> gpd.GeoDataFrame:
    """A ``trees`` table with no rows (the default for extracts made without trees)."""
    return frame({}, TREE_COLUMNS, [])


@dataclass(slots=True)
class OsmExtract:
    """The normalized tables of one city (streets, POIs, AOIs, trees), plus where they came from."""

    streets: gpd.GeoDataFrame
    pois: gpd.GeoDataFrame
    aois: gpd.GeoDataFrame
    source: str  # human-readable description of the source, e.g. "file Helsinki.osm.pbf"
    snapshot: datetime | None = None  # newest OSM timestamp seen (or the replication header), if known
    counts: dict[str, int] = field(default_factory=dict)  # skipped/repaired objects, for metadata
    trees: gpd.GeoDataFrame = field(default_factory=empty_trees)  # natural=tree nodes (osm_id, Point)

    def summary(self) -> dict[str, object]:
        """Counts and provenance for logs and asset metadata."""
        return {
            "streets": len(self.streets),
            "named_streets": int(self.streets["name"].notna().sum()),
            "pois": len(self.pois),
            "aois": len(self.aois),
            "trees": len(self.trees),
            "source": self.source,
            "snapshot": self.snapshot.isoformat() if self.snapshot else "unknown",
            **self.counts,
        }
