"""Online OSM acquisition through osmnx (Overpass and Nominatim).

The unsimplified street network gives one row per OSM way piece with its two node ids, so crossings are found
from shared OSM nodes exactly as in the offline reader; features give POIs and AOIs. Both are normalized with
the same tag mapping (:mod:`ugdata_pipeline.osm.tags`) into the tables of :mod:`ugdata_pipeline.osm.schema`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import networkx as nx
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from ugdata_pipeline.cities import City, bbox_area_km2
from ugdata_pipeline.errors import OsmSourceError
from ugdata_pipeline.osm import tags as osm_tags
from ugdata_pipeline.osm.schema import AOI_COLUMNS, POI_COLUMNS, STREET_COLUMNS, TREE_COLUMNS, OsmExtract, frame

logger = logging.getLogger(__name__)

#: Tags requested from Overpass for POIs and AOIs: every key a place rule looks at, any value.
FEATURE_TAGS: dict[str, bool] = dict.fromkeys(sorted(osm_tags.PLACE_KEYS), True)


def _ox():
    import osmnx as ox

    return ox


def configure_osmnx(cache_dir: Path | None, *, timeout_s: int = 180) -> None:
    """Point the osmnx HTTP cache at ``cache_dir`` (responses stored by request hash) and set its timeout."""
    ox = _ox()
    ox.settings.use_cache = cache_dir is not None
    if cache_dir is not None:
        ox.settings.cache_folder = str(cache_dir)
    ox.settings.requests_timeout = timeout_s
    ox.settings.log_console = False


def city_polygon(city: City) -> BaseGeometry:
    """
    The area of an online city in EPSG:4326: the geocoded place polygon or the bbox.

    Raises
    ------
    OsmSourceError
        The place does not geocode to a polygon, or the area is over the city's ``max_area_km2``.
    """
    source = city.source
    if source.kind == "bbox":
        assert source.bbox is not None
        return shapely.box(*source.bbox)
    if source.kind != "place":
        msg = f"city {city.slug!r}: source kind {source.kind!r} is not an online source"
        raise OsmSourceError(msg)
    gdf = _ox().geocode_to_gdf(source.query)
    polygon = gdf.geometry.iloc[0] if len(gdf) else None
    if polygon is None or polygon.geom_type not in {"Polygon", "MultiPolygon"}:
        msg = (
            f"city {city.slug!r}: source.query {source.query!r} did not geocode to an area; "
            "use a more specific place name or a bbox source"
        )
        raise OsmSourceError(msg)
    area = bbox_area_km2(polygon.bounds)
    if area > city.max_area_km2:
        msg = (
            f"city {city.slug!r}: source.query {source.query!r} covers about {area:,.0f} km², over the "
            f"limit of {city.max_area_km2:,.0f} km²; use a smaller place or raise max_area_km2"
        )
        raise OsmSourceError(msg)
    return polygon


def _as_text(value: object) -> str | None:
    if isinstance(value, list):  # osmnx keeps lists where merged ways disagree
        value = value[0] if value else None
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def streets_from_graph(G: nx.MultiDiGraph) -> gpd.GeoDataFrame:
    """
    Normalize an **unsimplified** osmnx graph into the ``streets`` table: one row per undirected way piece
    ``(way, u, v)`` with ``node_ids = [u, v]``.
    """
    rows: dict[str, list] = {name: [] for name in STREET_COLUMNS}
    geometries: list[BaseGeometry] = []
    seen: set[tuple[int, int, int]] = set()
    for u, v, data in G.edges(data=True):
        highway = _as_text(data.get("highway"))
        category = osm_tags.street_category(highway)
        way = data.get("osmid")
        way_id = int(way[0] if isinstance(way, list) else way)
        key = (way_id, min(u, v), max(u, v))
        if category is None or key in seen or u == v:
            continue
        seen.add(key)
        rows["way_id"].append(way_id)
        rows["name"].append(_as_text(data.get("name")))
        rows["highway"].append(highway)
        rows["category"].append(category)
        rows["node_ids"].append([int(u), int(v)])
        geometry = data.get("geometry")
        if geometry is None:
            geometry = shapely.LineString([(G.nodes[u]["x"], G.nodes[u]["y"]), (G.nodes[v]["x"], G.nodes[v]["y"])])
        geometries.append(geometry)
    return frame(rows, STREET_COLUMNS, geometries)


def places_from_features(features: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """
    Normalize an osmnx features frame (index ``(element, id)``, one column per tag) into ``pois`` (nodes)
    and ``aois`` (ways and relations with areal geometry).
    """
    pois: dict[str, list] = {name: [] for name in POI_COLUMNS}
    poi_geoms: list[BaseGeometry] = []
    aois: dict[str, list] = {name: [] for name in AOI_COLUMNS}
    aoi_geoms: list[BaseGeometry] = []
    columns = list(features.columns)
    geometry_at = columns.index("geometry")
    for (element, osm_id), row in zip(features.index, features.itertuples(index=False), strict=True):
        tags = {c: t for c, v in zip(columns, row, strict=True) if c != "geometry" and (t := _as_text(v))}
        decided = osm_tags.place_category(tags)
        geometry = row[geometry_at]
        if decided is None or geometry is None or geometry.is_empty:
            continue
        category, tag = decided
        if element == "node" and geometry.geom_type == "Point":
            target, geoms = pois, poi_geoms
            target["osm_id"].append(f"n{osm_id}")
        elif geometry.geom_type in {"Polygon", "MultiPolygon"}:
            target, geoms = aois, aoi_geoms
            target["osm_id"].append(f"{'w' if element == 'way' else 'r'}{osm_id}")
            target["is_building"].append(tags.get("building", "no") != "no")
        else:
            continue
        target["name"].append(osm_tags.first_name(tags))
        target["category"].append(category)
        target["tag"].append(tag)
        target["address"].append(osm_tags.address(tags))
        target["height_m"].append(osm_tags.height_m(tags))
        geoms.append(geometry if geometry.is_valid else shapely.make_valid(geometry))
    return frame(pois, POI_COLUMNS, poi_geoms), frame(aois, AOI_COLUMNS, aoi_geoms)


def trees_from_features(features: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """
    The ``trees`` table from an osmnx features frame: ``natural=tree`` nodes with Point geometry.

    Overpass returns them with the ``natural`` key that :data:`FEATURE_TAGS` already requests.
    """
    if "natural" not in features.columns or features.empty:
        return frame({}, TREE_COLUMNS, [])
    elements = features.index.get_level_values(0)
    is_tree = (
        (elements == "node")
        & (features["natural"].map(_as_text) == "tree").to_numpy()
        & (features.geometry.geom_type == "Point").to_numpy()
    )
    picked = features[is_tree]
    ids = [f"n{osm_id}" for osm_id in picked.index.get_level_values(1)]
    return frame({"osm_id": ids}, TREE_COLUMNS, list(picked.geometry.values))


def download_city_osm(city: City, *, cache_dir: Path | None = None) -> OsmExtract:
    """
    Download a city's streets, POIs, AOIs and trees from Overpass through osmnx.

    Parameters
    ----------
    city
        A registry city with a ``place`` or ``bbox`` source.
    cache_dir
        Where osmnx caches responses (keyed by request hash); ``None`` disables the cache.
    """
    configure_osmnx(cache_dir)
    ox = _ox()
    polygon = city_polygon(city)
    G = ox.graph_from_polygon(polygon, network_type="all", simplify=False, retain_all=True)
    streets = streets_from_graph(G)
    features = ox.features_from_polygon(polygon, tags=FEATURE_TAGS)
    pois, aois = places_from_features(features)
    trees = trees_from_features(features)
    extract = OsmExtract(
        streets=streets,
        pois=pois,
        aois=aois,
        source=f"osmnx {city.source.describe()}",
        snapshot=datetime.now(tz=UTC),  # Overpass serves the live database
        trees=trees,
    )
    logger.info(
        "downloaded %s: %s street pieces, %s POIs, %s AOIs, %s trees",
        city.slug,
        f"{len(streets):,}",
        f"{len(pois):,}",
        f"{len(aois):,}",
        f"{len(trees):,}",
    )
    return extract
