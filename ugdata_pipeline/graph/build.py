"""Build the typed urban graph (streets, crossings, POIs, AOIs and their relations) from OSM tables.

The model follows the paper: **streets are nodes** (one per named street, ways merged by name within a
connected stretch) and intersections are ``crossing`` nodes. Edges (see :mod:`.schema` for the kinds):

``crossing``      crossing -> street, for each street meeting at the crossing; distance to the street's
                  anchor point (the middle of the street).
``along_street``  crossing -> next crossing along the same street (consecutive only, ordered along the line);
                  distance is the along-street length.
``nearest``       POI/AOI -> the nearest named street within ``nearest_max_m``; distance between geometries.
``bounds``        street -> AOI whose boundary it runs along (``bounds_min_overlap_m`` of the street inside a
                  ``bounds_buffer_m`` band around the boundary); distance from the street to the AOI anchor.
``within``        POI -> AOI that contains it; distance to the AOI anchor.

Metric work is done in the city's UTM CRS; all distances and bearings in the output come from the shared
geodesic helpers (:mod:`.geodesy`) on EPSG:4326 coordinates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ugdata_pipeline.errors import EmptyAreaError
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.graph.geodesy import distance_bearing
from ugdata_pipeline.graph.node_ids import slugify, street_node_ids
from ugdata_pipeline.graph.schema import EDGE_COLUMNS, MIN_EDGE_DISTANCE_M, NODE_COLUMNS
from ugdata_pipeline.graph.text import render_node_text
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline.osm.tags import NOISE_NAMES

logger = logging.getLogger(__name__)

#: Street categories ranked for choosing one category for a merged street (lower = more important).
_STREET_RANK = {"motorway": 0, "major_road": 1, "residential": 2, "service_road": 3, "pedestrian": 4, "path": 5}


@dataclass(frozen=True, slots=True)
class GraphConfig:
    """Thresholds of the graph build; all distances in metres."""

    # Each field's "doc" is its description in the Dagster launchpad too (assets/_config.py derives the run config).
    crossing_merge_m: float = field(
        default=15.0, metadata={"doc": "Street junction points closer than this (m) are one crossing."}
    )
    street_gap_merge_m: float = field(
        default=30.0, metadata={"doc": "Same-named stretches this close (m) are one street (dual carriageways)."}
    )
    nearest_max_m: float = field(default=100.0, metadata={"doc": "POI/AOI -> nearest street attachment radius (m)."})
    bounds_buffer_m: float = field(default=15.0, metadata={"doc": "Half-width (m) of the band around an AOI boundary."})
    bounds_min_overlap_m: float = field(
        default=25.0, metadata={"doc": "Street length (m) inside that band to count as bounding the AOI."}
    )
    bounds_min_share: float = field(
        default=0.3, metadata={"doc": "... or this share of the street's length inside the band, in (0, 1]."}
    )

    def __post_init__(self) -> None:
        for name in (
            "crossing_merge_m",
            "street_gap_merge_m",
            "nearest_max_m",
            "bounds_buffer_m",
            "bounds_min_overlap_m",
        ):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                msg = f"GraphConfig.{name} must be a finite distance >= 0 in metres, got {value!r}"
                raise ValueError(msg)
        if not 0 < self.bounds_min_share <= 1:
            msg = f"GraphConfig.bounds_min_share must be in (0, 1], got {self.bounds_min_share!r}"
            raise ValueError(msg)


@dataclass(slots=True)
class UrbanGraph:
    """The graph tables: ``nodes`` (GeoDataFrame, EPSG:4326) and ``edges`` (DataFrame)."""

    nodes: gpd.GeoDataFrame
    edges: pd.DataFrame
    crs_metric: str  # the UTM CRS used for metric work, e.g. "EPSG:32635"

    def counts(self) -> dict[str, int]:
        """Node and edge counts by kind, e.g. ``{"nodes/street": 120, "edges/crossing": 300}``."""
        out = {f"nodes/{k}": int(v) for k, v in self.nodes["kind"].value_counts().sort_index().items()}
        out.update({f"edges/{k}": int(v) for k, v in self.edges["kind"].value_counts().sort_index().items()})
        return out


def _union_find(n: int, pairs_a: np.ndarray, pairs_b: np.ndarray) -> np.ndarray:
    """Component label for each of ``n`` items joined by the pairs ``(a[i], b[i])``."""
    matrix = coo_array((np.ones(len(pairs_a), dtype=np.int8), (pairs_a, pairs_b)), shape=(n, n))
    _, labels = connected_components(matrix, directed=False)
    return labels


@dataclass(slots=True)
class _Streets:
    pieces: gpd.GeoDataFrame  # named street pieces (UTM) with a "street" column (index into table)
    table: gpd.GeoDataFrame  # one row per street node (UTM geometry)


def _merge_streets(streets: gpd.GeoDataFrame, crs: CRS, config: GraphConfig) -> _Streets:
    """Merge named ways into street nodes: same name and sharing an OSM node, or within the gap distance."""
    pieces = streets[streets["name"].notna()].to_crs(crs).reset_index(drop=True)
    pieces["name_code"] = pd.factorize(pieces["name"])[0]
    n = len(pieces)
    exploded = pd.DataFrame(
        {
            "piece": np.repeat(np.arange(n), pieces["node_ids"].map(len).to_numpy()),
            "node": np.concatenate(pieces["node_ids"].to_numpy()) if n else np.empty(0, np.int64),
        }
    )
    exploded["name_code"] = pieces["name_code"].to_numpy()[exploded["piece"].to_numpy()]
    shared = exploded.sort_values(["name_code", "node", "piece"], kind="stable")
    same = (shared["name_code"].diff() == 0) & (shared["node"].diff() == 0)
    a = shared["piece"].to_numpy()[np.flatnonzero(same.to_numpy()) - 1]
    b = shared["piece"].to_numpy()[same.to_numpy()]
    if config.street_gap_merge_m > 0 and n:
        left, right = pieces.sindex.query(
            pieces.geometry.values, predicate="dwithin", distance=config.street_gap_merge_m
        )
        keep = (left < right) & (pieces["name_code"].to_numpy()[left] == pieces["name_code"].to_numpy()[right])
        a, b = np.concatenate([a, left[keep]]), np.concatenate([b, right[keep]])
    pieces["component"] = _union_find(n, a, b)

    pieces["length_m"] = pieces.geometry.length
    pieces["rank"] = pieces["category"].map(_STREET_RANK).fillna(9)
    grouped = pieces.groupby("component", sort=True)
    table = gpd.GeoDataFrame(
        {
            "name": grouped["name"].first(),
            "category": grouped.apply(lambda g: g.loc[g["rank"].idxmin(), "category"], include_groups=False),
            "length_m": grouped["length_m"].sum(),
            "min_way": grouped["way_id"].min(),
            "osm_ids": grouped["way_id"].agg(lambda ids: ",".join(f"w{i}" for i in sorted(set(ids)))),
        },
        geometry=gpd.GeoSeries(
            shapely.line_merge(grouped.geometry.agg(lambda g: shapely.union_all(g.values)).values), crs=crs
        ).values,
        crs=crs,
    )
    table["slug"] = table["name"].map(slugify)
    table = table.sort_values(["slug", "length_m", "min_way"], ascending=[True, False, True])
    table["node_id"] = street_node_ids(table["slug"].tolist())
    # pieces.component -> row position in the sorted table
    position = pd.Series(np.arange(len(table)), index=table.index)
    pieces["street"] = position.reindex(pieces["component"]).to_numpy()
    return _Streets(pieces=pieces, table=table.reset_index(drop=True))


def _find_crossings(streets: _Streets, config: GraphConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """
    Crossings: OSM nodes shared by two or more street nodes, consolidated within ``crossing_merge_m``.

    Returns
    -------
    crossings
        One row per crossing: ``x``, ``y`` (UTM metres), ``osm_node`` (smallest member OSM id), ``osm_ids``.
    memberships
        ``crossing`` (row in crossings) and ``street`` (row in the street table), one row per pair.
    """
    pieces = streets.pieces
    coords, piece_index = shapely.get_coordinates(pieces.geometry.values, return_index=True)
    nodes = np.concatenate(pieces["node_ids"].to_numpy()) if len(pieces) else np.empty(0, np.int64)
    points = pd.DataFrame(
        {
            "node": nodes,
            "street": pieces["street"].to_numpy()[piece_index],
            "x": coords[:, 0],
            "y": coords[:, 1],
        }
    ).drop_duplicates(["node", "street"])
    per_node = points.groupby("node")["street"].nunique()
    junction_nodes = per_node.index[per_node.to_numpy() >= 2]
    junctions = points[points["node"].isin(junction_nodes)]
    at = junctions.drop_duplicates("node").sort_values("node").reset_index(drop=True)
    if at.empty:
        return (
            pd.DataFrame(columns=["x", "y", "osm_node", "osm_ids"]),
            pd.DataFrame(columns=["crossing", "street"], dtype=np.int64),
        )
    xy = at[["x", "y"]].to_numpy()
    pairs = cKDTree(xy).query_pairs(r=config.crossing_merge_m, output_type="ndarray")
    at["cluster"] = _union_find(len(at), pairs[:, 0], pairs[:, 1])
    crossings = at.groupby("cluster").agg(
        x=("x", "mean"),
        y=("y", "mean"),
        osm_node=("node", "min"),
        osm_ids=("node", lambda ids: ",".join(f"n{i}" for i in sorted(ids))),
    )
    cluster_of_node = pd.Series(at["cluster"].to_numpy(), index=at["node"].to_numpy())
    memberships = (
        pd.DataFrame(
            {
                "crossing": cluster_of_node.reindex(junctions["node"]).to_numpy(),
                "street": junctions["street"].to_numpy(),
            }
        )
        .drop_duplicates()
        .sort_values(["crossing", "street"])
        .reset_index(drop=True)
    )
    crossings = crossings.reset_index(drop=True)
    return crossings, memberships


def _to_lonlat(transformer: Transformer, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = transformer.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return np.asarray(lon), np.asarray(lat)


def _edge_frame(
    src: object, dst: object, kind: str, distance: np.ndarray, bearing: np.ndarray, street_name: object = None
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "src": np.asarray(src, dtype=object),
            "dst": np.asarray(dst, dtype=object),
            "kind": kind,
            "distance_m": np.maximum(np.asarray(distance, dtype=float), MIN_EDGE_DISTANCE_M),
            "bearing_deg": np.asarray(bearing, dtype=float),
            "street_name": street_name,
        }
    )


def _along_street_edges(
    streets: _Streets,
    crossings: pd.DataFrame,
    memberships: pd.DataFrame,
    crossing_ids: np.ndarray,
    crossing_lonlat: tuple[np.ndarray, np.ndarray],
    config: GraphConfig,
) -> pd.DataFrame:
    """Consecutive crossings along each street part, with the along-street length between them."""
    table = streets.table
    if memberships.empty:
        return _edge_frame([], [], "along_street", np.empty(0), np.empty(0))
    parts = table.geometry.explode(index_parts=False)
    parts_street = parts.index.to_numpy()
    part_geoms = parts.values
    # candidate (membership, part) pairs: every part of the member's street
    part_rows = pd.DataFrame({"street": parts_street, "part": np.arange(len(parts))})
    cand = memberships.reset_index(names="membership").merge(part_rows, on="street")
    points = shapely.points(crossings["x"].to_numpy()[cand["crossing"]], crossings["y"].to_numpy()[cand["crossing"]])
    geoms = part_geoms[cand["part"].to_numpy()]
    offset = shapely.distance(geoms, points)
    nearest = pd.Series(offset).groupby(cand["membership"].to_numpy()).transform("min").to_numpy()
    keep = offset <= np.maximum(nearest, config.crossing_merge_m)
    cand = cand[keep].copy()
    cand["position"] = shapely.line_locate_point(geoms[keep], points[keep])
    cand = cand.sort_values(["part", "position", "crossing"], kind="stable")
    consecutive = (cand["part"].to_numpy()[1:] == cand["part"].to_numpy()[:-1]) & (
        cand["crossing"].to_numpy()[1:] != cand["crossing"].to_numpy()[:-1]
    )
    first = cand.iloc[:-1][consecutive]
    second = cand.iloc[1:][consecutive]
    a = first["crossing"].to_numpy()
    b = second["crossing"].to_numpy()
    length = second["position"].to_numpy() - first["position"].to_numpy()
    street = first["street"].to_numpy()
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = pd.DataFrame({"a": a, "b": b, "lo": lo, "hi": hi, "street": street, "length": length})
    pairs = pairs.sort_values(["lo", "hi", "street", "length"]).drop_duplicates(["lo", "hi", "street"])
    lon, lat = crossing_lonlat
    straight, bearing = distance_bearing(lat[pairs["a"]], lon[pairs["a"]], lat[pairs["b"]], lon[pairs["b"]])
    along = np.where(pairs["length"].to_numpy() > 0, pairs["length"].to_numpy(), straight)
    return _edge_frame(
        crossing_ids[pairs["a"]],
        crossing_ids[pairs["b"]],
        "along_street",
        np.maximum(along, straight),
        bearing,
        table["name"].to_numpy()[pairs["street"]],
    )


def _places(extract: OsmExtract, crs: CRS) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Named POIs and AOIs (UTM), minus the reference's noise names, deduplicated by id."""

    def clean(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        named = frame[frame["name"].notna() & ~frame["name"].str.lower().isin(NOISE_NAMES)]
        return named.drop_duplicates("osm_id").to_crs(crs).reset_index(drop=True)

    return clean(extract.pois), clean(extract.aois)


def _nearest_edges(
    places: gpd.GeoDataFrame,
    place_ids: np.ndarray,
    anchors: np.ndarray,
    streets: gpd.GeoDataFrame,
    to_lonlat: Transformer,
    config: GraphConfig,
) -> pd.DataFrame:
    """Each place -> its nearest street within ``nearest_max_m`` (ties broken by street id)."""
    if places.empty or streets.empty:
        return _edge_frame([], [], "nearest", np.empty(0), np.empty(0))
    left, right = streets.sindex.query(places.geometry.values, predicate="dwithin", distance=config.nearest_max_m)
    hits = pd.DataFrame({"place": left, "street": right})
    hits["gap"] = shapely.distance(places.geometry.values[left], streets.geometry.values[right])
    hits = hits[hits["gap"] <= config.nearest_max_m]
    # distances equal to the centimetre are ties, broken by street id, so results never hinge on rounding
    hits["gap_cm"] = np.round(hits["gap"].to_numpy() * 100)
    hits["street_id"] = streets["node_id"].to_numpy()[hits["street"].to_numpy()]
    hits = hits.sort_values(["place", "gap_cm", "street_id"]).drop_duplicates("place")
    street_geoms = streets.geometry.values[hits["street"].to_numpy()]
    gap = hits["gap"].to_numpy()
    anchor = anchors[hits["place"].to_numpy()]
    on_street = shapely.line_interpolate_point(street_geoms, shapely.line_locate_point(street_geoms, anchor))
    lon1, lat1 = _to_lonlat(to_lonlat, shapely.get_x(anchor), shapely.get_y(anchor))
    lon2, lat2 = _to_lonlat(to_lonlat, shapely.get_x(on_street), shapely.get_y(on_street))
    _, bearing = distance_bearing(lat1, lon1, lat2, lon2)
    return _edge_frame(
        place_ids[hits["place"].to_numpy()],
        hits["street_id"].to_numpy(),
        "nearest",
        gap,
        bearing,
        streets["name"].to_numpy()[hits["street"].to_numpy()],
    )


def _bounds_edges(
    aois: gpd.GeoDataFrame,
    aoi_ids: np.ndarray,
    aoi_anchor: np.ndarray,
    streets: gpd.GeoDataFrame,
    to_lonlat: Transformer,
    config: GraphConfig,
) -> pd.DataFrame:
    """Street -> AOI whose boundary the street runs along."""
    if aois.empty or streets.empty:
        return _edge_frame([], [], "bounds", np.empty(0), np.empty(0))
    bands = shapely.buffer(shapely.boundary(aois.geometry.values), config.bounds_buffer_m)
    aoi_idx, street_idx = streets.sindex.query(bands, predicate="intersects")
    street_geoms = streets.geometry.values[street_idx]
    overlap = shapely.length(shapely.intersection(street_geoms, bands[aoi_idx]))
    street_length = shapely.length(street_geoms)
    keep = (overlap >= config.bounds_min_overlap_m) | (overlap >= config.bounds_min_share * street_length)
    keep &= overlap > 0
    aoi_idx, street_idx, street_geoms = aoi_idx[keep], street_idx[keep], street_geoms[keep]
    anchor = aoi_anchor[aoi_idx]
    on_street = shapely.line_interpolate_point(street_geoms, shapely.line_locate_point(street_geoms, anchor))
    lon1, lat1 = _to_lonlat(to_lonlat, shapely.get_x(on_street), shapely.get_y(on_street))
    lon2, lat2 = _to_lonlat(to_lonlat, shapely.get_x(anchor), shapely.get_y(anchor))
    distance, bearing = distance_bearing(lat1, lon1, lat2, lon2)
    return _edge_frame(
        streets["node_id"].to_numpy()[street_idx],
        aoi_ids[aoi_idx],
        "bounds",
        distance,
        bearing,
        streets["name"].to_numpy()[street_idx],
    )


def _within_edges(
    pois: gpd.GeoDataFrame,
    poi_ids: np.ndarray,
    poi_lonlat: tuple[np.ndarray, np.ndarray],
    aois: gpd.GeoDataFrame,
    aoi_ids: np.ndarray,
    aoi_lonlat: tuple[np.ndarray, np.ndarray],
) -> pd.DataFrame:
    """POI -> every AOI that contains it."""
    if pois.empty or aois.empty:
        return _edge_frame([], [], "within", np.empty(0), np.empty(0))
    poi_idx, aoi_idx = aois.sindex.query(pois.geometry.values, predicate="within")
    distance, bearing = distance_bearing(
        poi_lonlat[1][poi_idx], poi_lonlat[0][poi_idx], aoi_lonlat[1][aoi_idx], aoi_lonlat[0][aoi_idx]
    )
    return _edge_frame(poi_ids[poi_idx], aoi_ids[aoi_idx], "within", distance, bearing)


def build_urban_graph(
    extract: OsmExtract,
    *,
    city_name: str,
    country: str,
    config: GraphConfig | None = None,
    where: str = "the area",
) -> UrbanGraph:
    """
    Build the urban graph of one city.

    Parameters
    ----------
    extract
        Normalized OSM tables (EPSG:4326).
    city_name, country
        The city's display name and its own country, for ``node_text``.
    config
        Thresholds; defaults to :class:`GraphConfig`.
    where
        How to name the area in errors (``"city 'helsinki'"``).

    Returns
    -------
    graph
        ``nodes`` (GeoDataFrame, EPSG:4326; columns :data:`~.schema.NODE_COLUMNS`) and ``edges``
        (columns :data:`~.schema.EDGE_COLUMNS`).

    Raises
    ------
    EmptyAreaError
        The area holds no named streets.
    """
    config = config or GraphConfig()
    named = extract.streets[extract.streets["name"].notna()] if len(extract.streets) else extract.streets
    if len(named) == 0:
        msg = (
            f"{where} has no named streets ({len(extract.streets)} street ways in {extract.source}); "
            "check the extract covers a built-up area, or choose a larger one"
        )
        raise EmptyAreaError(msg)
    crs = CRS.from_user_input(city_metric_crs(extract.streets, where=where))
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    streets = _merge_streets(extract.streets, crs, config)
    table = streets.table
    street_anchor = shapely.line_interpolate_point(table.geometry.values, 0.5, normalized=True)
    street_lon, street_lat = _to_lonlat(to_lonlat, shapely.get_x(street_anchor), shapely.get_y(street_anchor))
    table["node_id"] = table["node_id"].astype(object)

    crossings, memberships = _find_crossings(streets, config)
    cross_lon, cross_lat = _to_lonlat(to_lonlat, crossings["x"].to_numpy(), crossings["y"].to_numpy())
    crossing_ids = np.array([f"crossing:{n}" for n in crossings["osm_node"]], dtype=object)
    crossing_streets = memberships.groupby("crossing")["street"].agg(list)
    street_names = table["name"].to_numpy(dtype=object)  # one array, not a per-element lookup in the loop
    crossing_names = [
        _crossing_name(sorted({street_names[s] for s in crossing_streets.get(i, [])})) for i in range(len(crossings))
    ]

    pois, aois = _places(extract, crs)
    poi_ids = np.array([f"poi:{i}" for i in pois["osm_id"]], dtype=object)
    aoi_ids = np.array([f"aoi:{i}" for i in aois["osm_id"]], dtype=object)
    poi_anchor = pois.geometry.values.to_numpy() if len(pois) else np.empty(0, dtype=object)
    aoi_anchor = shapely.point_on_surface(aois.geometry.values) if len(aois) else np.empty(0, dtype=object)
    poi_lonlat = _to_lonlat(to_lonlat, shapely.get_x(poi_anchor), shapely.get_y(poi_anchor))
    aoi_lonlat = _to_lonlat(to_lonlat, shapely.get_x(aoi_anchor), shapely.get_y(aoi_anchor))

    # --- edges -----------------------------------------------------------------------------------------
    m_cross, m_street = memberships["crossing"].to_numpy(), memberships["street"].to_numpy()
    distance, bearing = distance_bearing(
        cross_lat[m_cross], cross_lon[m_cross], street_lat[m_street], street_lon[m_street]
    )
    street_ids = table["node_id"].to_numpy()
    edges = pd.concat(
        [
            _edge_frame(
                crossing_ids[m_cross],
                street_ids[m_street],
                "crossing",
                distance,
                bearing,
                table["name"].to_numpy()[m_street],
            ),
            _along_street_edges(streets, crossings, memberships, crossing_ids, (cross_lon, cross_lat), config),
            _nearest_edges(pois, poi_ids, poi_anchor, table, to_lonlat, config),
            _nearest_edges(aois, aoi_ids, aoi_anchor, table, to_lonlat, config),
            _bounds_edges(aois, aoi_ids, aoi_anchor, table, to_lonlat, config),
            _within_edges(pois, poi_ids, poi_lonlat, aois, aoi_ids, aoi_lonlat),
        ],
        ignore_index=True,
    )[list(EDGE_COLUMNS)]
    edges["street_name"] = edges["street_name"].astype(object).where(edges["street_name"].notna(), None)

    # --- nodes -----------------------------------------------------------------------------------------
    frames = [
        _node_frame(
            street_ids,
            "street",
            table["name"],
            table["category"],
            street_lon,
            street_lat,
            None,
            table["length_m"],
            table["osm_ids"],
            table.geometry.to_crs("EPSG:4326").values,
        ),
        _node_frame(
            crossing_ids,
            "crossing",
            crossing_names,
            "crossing",
            cross_lon,
            cross_lat,
            crossing_names,
            None,
            crossings["osm_ids"],
            shapely.points(cross_lon, cross_lat),
        ),
        _node_frame(
            poi_ids,
            "poi",
            pois["name"],
            pois["category"],
            *poi_lonlat,
            pois["address"],
            None,
            pois["osm_id"],
            pois.geometry.to_crs("EPSG:4326").values,
        ),
        _node_frame(
            aoi_ids,
            "aoi",
            aois["name"],
            aois["category"],
            *aoi_lonlat,
            aois["address"],
            None,
            aois["osm_id"],
            aois.geometry.to_crs("EPSG:4326").values,
        ),
    ]
    nodes = gpd.GeoDataFrame(pd.concat([f for f in frames if len(f)], ignore_index=True), crs="EPSG:4326")
    nodes["node_text"] = [
        render_node_text(row, city=city_name, country=country)
        for row in nodes[["node_id", "name", "category", "address", "lon", "lat"]].to_dict("records")
    ]
    nodes = nodes[list(NODE_COLUMNS)]
    graph = UrbanGraph(nodes=nodes, edges=edges, crs_metric=crs.to_string())
    logger.info("built urban graph of %s: %s nodes and %s edges", where, f"{len(nodes):,}", f"{len(edges):,}")
    return graph


def _crossing_name(street_names: list[str]) -> str:
    """``"Intersection of A and B"``; three or more streets as ``"Intersection of A, B and C"``."""
    if len(street_names) < 2:
        return f"Intersection on {street_names[0]}" if street_names else "Intersection"
    return f"Intersection of {', '.join(street_names[:-1])} and {street_names[-1]}"


def _node_frame(node_ids, kind, name, category, lon, lat, address, length_m, osm_ids, geometry):
    n = len(node_ids)

    def column(value: object, dtype: str = "object") -> pd.Series:
        if value is None or isinstance(value, str):
            return pd.Series([value] * n, dtype=dtype)
        return pd.Series(np.asarray(value), dtype=dtype)

    return gpd.GeoDataFrame(
        {
            "node_id": column(node_ids),
            "kind": kind,
            "name": column(name),
            "category": column(category),
            "lon": column(lon, "float64"),
            "lat": column(lat, "float64"),
            "address": column(address),
            "length_m": column(length_m if length_m is not None else np.full(n, np.nan), "float64"),
            "osm_ids": column(osm_ids),
        },
        geometry=gpd.GeoSeries(np.asarray(geometry, dtype=object) if n else [], crs="EPSG:4326").values,
        crs="EPSG:4326",
    )
