"""A tiny city built in code with known answers, as normalized OSM tables and as OSM XML.

Local metres (x east, y north) are laid out in UTM zone 35N near central Helsinki, so 100 m in the layout
is 100 m on the ground within a few centimetres.

    y=200  Gamma Street   +-------+-------+
                          |       | park  |      park "Central Park": x 110..190, y 110..190
    y=100  Beta Street    +-------+-------+      POI "Bank Two" at (185, 150), inside the park
                          |       |       |
    y=0    Alpha Street   +-------+-------+      POI "Cafe Uno" at (50, 10), 10 m north of Alpha Street
                         x=0    x=100   x=200
                   First Avenue  Second  Third Avenue

Every street is two OSM ways split at its middle crossing, sharing node ids with the crossing streets.
"""

from __future__ import annotations

import bz2
from pathlib import Path
from xml.sax.saxutils import quoteattr

import geopandas as gpd
import shapely
from pyproj import Transformer

from ugdata_pipeline.osm.schema import AOI_COLUMNS, POI_COLUMNS, STREET_COLUMNS, OsmExtract, frame
from ugdata_pipeline.osm.tags import street_category

ORIGIN_E, ORIGIN_N = 385_000.0, 6_672_000.0
#: The layout's UTM zone, which is also the metric CRS every tiny city's graph gets.
CRS_METRIC = "EPSG:32635"
_TO_LONLAT = Transformer.from_crs(CRS_METRIC, "EPSG:4326", always_xy=True)

HORIZONTAL = {"Alpha Street": 0.0, "Beta Street": 100.0, "Gamma Street": 200.0}
VERTICAL = {"First Avenue": 0.0, "Second Avenue": 100.0, "Third Avenue": 200.0}


def lonlat(x: float, y: float) -> tuple[float, float]:
    """Layout metres -> (lon, lat)."""
    lon, lat = _TO_LONLAT.transform(ORIGIN_E + x, ORIGIN_N + y)
    return float(lon), float(lat)


def grid_node_id(i: int, j: int) -> int:
    """OSM id of the grid node at column i (x = 100 i) and row j (y = 100 j)."""
    return 1000 + 10 * i + j


Way = tuple[int, str, str, list[int], list[tuple[float, float]]]  # way id, name, highway, node ids, layout metres


def street_table(ways: list[Way]) -> gpd.GeoDataFrame:
    """Normalized ``streets`` rows from ways given in layout metres."""
    streets: dict[str, list] = {c: [] for c in STREET_COLUMNS}
    lines = []
    for way_id, name, highway, node_ids, points in ways:
        streets["way_id"].append(way_id)
        streets["name"].append(name)
        streets["highway"].append(highway)
        streets["category"].append(street_category(highway))
        streets["node_ids"].append(node_ids)
        lines.append(shapely.LineString([lonlat(*p) for p in points]))
    return frame(streets, STREET_COLUMNS, lines)


def streets_only(ways: list[Way]) -> OsmExtract:
    """An extract with these streets and no places."""
    empty = tiny_city()
    return OsmExtract(street_table(ways), empty.pois.iloc[:0], empty.aois.iloc[:0], source="test")


def tiny_city() -> OsmExtract:
    """The 3 x 3 grid with two POIs and one park, as normalized tables."""
    ways: list[Way] = []
    for j, name in enumerate(HORIZONTAL):
        for i0 in (0, 1):
            ways.append(
                (
                    101 + len(ways),
                    name,
                    "residential",
                    [grid_node_id(i0, j), grid_node_id(i0 + 1, j)],
                    [(100 * i0, 100 * j), (100 * (i0 + 1), 100 * j)],
                )
            )
    for i, name in enumerate(VERTICAL):
        for j0 in (0, 1):
            ways.append(
                (
                    101 + len(ways),
                    name,
                    "tertiary",
                    [grid_node_id(i, j0), grid_node_id(i, j0 + 1)],
                    [(100 * i, 100 * j0), (100 * i, 100 * (j0 + 1))],
                )
            )
    pois = {
        "osm_id": ["n1", "n2"],
        "name": ["Cafe Uno", "Bank Two"],
        "category": ["food", "financial"],
        "tag": ["amenity=cafe", "amenity=bank"],
        "address": ["Alpha Street 1", None],
        "height_m": [None, None],
    }
    park = shapely.Polygon([lonlat(110, 110), lonlat(190, 110), lonlat(190, 190), lonlat(110, 190)])
    aois = {
        "osm_id": ["w900"],
        "name": ["Central Park"],
        "category": ["park"],
        "tag": ["leisure=park"],
        "address": [None],
        "height_m": [None],
        "is_building": [False],
    }
    return OsmExtract(
        streets=street_table(ways),
        pois=frame(pois, POI_COLUMNS, [shapely.Point(lonlat(50, 10)), shapely.Point(lonlat(185, 150))]),
        aois=frame(aois, AOI_COLUMNS, [park]),
        source="tiny city (test)",
    )


def tiny_city_xml() -> str:
    """The same city as OSM XML, so the file reader can be checked against the same answers."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="ugdata-tests">']
    stamp = 'version="1" timestamp="2024-05-01T12:00:00Z"'
    for i in range(3):
        for j in range(3):
            lon, lat = lonlat(100 * i, 100 * j)
            out.append(f'<node id="{grid_node_id(i, j)}" {stamp} lat="{lat:.9f}" lon="{lon:.9f}"/>')
    extract = tiny_city()
    for osm_id, name, tag, geom in zip(
        extract.pois["osm_id"], extract.pois["name"], extract.pois["tag"], extract.pois.geometry, strict=True
    ):
        key, value = tag.split("=")
        out.append(
            f'<node id="{osm_id[1:]}" {stamp} lat="{geom.y:.9f}" lon="{geom.x:.9f}">'
            f'<tag k="{key}" v="{value}"/><tag k="name" v={quoteattr(name)}/></node>'
        )
    park_ids = []
    for k, (lon, lat) in enumerate(extract.aois.geometry.iloc[0].exterior.coords[:-1]):
        park_ids.append(5000 + k)
        out.append(f'<node id="{5000 + k}" {stamp} lat="{lat:.9f}" lon="{lon:.9f}"/>')
    for row in extract.streets.itertuples():
        refs = "".join(f'<nd ref="{n}"/>' for n in row.node_ids)
        out.append(
            f'<way id="{row.way_id}" {stamp}>{refs}<tag k="highway" v="{row.highway}"/>'
            f'<tag k="name" v={quoteattr(row.name)}/></way>'
        )
    refs = "".join(f'<nd ref="{n}"/>' for n in [*park_ids, park_ids[0]])
    out.append(f'<way id="900" {stamp}>{refs}<tag k="leisure" v="park"/><tag k="name" v="Central Park"/></way>')
    out.append("</osm>")
    return "\n".join(out) + "\n"


def streets_xml(ways: list[Way]) -> str:
    """OSM XML of streets only (ways given in layout metres, as for :func:`streets_only`)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="ugdata-tests">']
    stamp = 'version="1" timestamp="2024-05-01T12:00:00Z"'
    written: set[int] = set()
    for _, _, _, node_ids, points in ways:
        for node_id, (x, y) in zip(node_ids, points, strict=True):
            if node_id not in written:
                written.add(node_id)
                lon, lat = lonlat(x, y)
                out.append(f'<node id="{node_id}" {stamp} lat="{lat:.9f}" lon="{lon:.9f}"/>')
    for way_id, name, highway, node_ids, _ in ways:
        refs = "".join(f'<nd ref="{n}"/>' for n in node_ids)
        out.append(
            f'<way id="{way_id}" {stamp}>{refs}<tag k="highway" v="{highway}"/>'
            f'<tag k="name" v={quoteattr(name)}/></way>'
        )
    out.append("</osm>")
    return "\n".join(out) + "\n"


def write_tiny_city(folder: Path, *, compress: bool = False) -> Path:
    """Write the tiny city as ``tiny.osm`` (or ``tiny.osm.bz2``) into ``folder``."""
    text = tiny_city_xml().encode("utf-8")
    path = folder / ("tiny.osm.bz2" if compress else "tiny.osm")
    path.write_bytes(bz2.compress(text) if compress else text)
    return path


def as_frame(extract: OsmExtract, table: str) -> gpd.GeoDataFrame:
    """One table of an extract by name."""
    return getattr(extract, table)
