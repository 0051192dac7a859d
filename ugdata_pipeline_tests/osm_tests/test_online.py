"""Online acquisition through osmnx, with osmnx's network calls replaced by the tiny city."""

from __future__ import annotations

import geopandas as gpd
import networkx as nx
import pandas as pd
import pytest
import shapely

from ugdata_pipeline.cities import City, CitySource
from ugdata_pipeline.errors import OsmSourceError
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.osm import load_city_osm
from ugdata_pipeline_tests.tiny_city import tiny_city


def fake_osmnx_graph() -> nx.MultiDiGraph:
    """The tiny city's streets as osmnx returns them unsimplified: both directions, one edge per piece."""
    G = nx.MultiDiGraph(crs="EPSG:4326")
    for row in tiny_city().streets.itertuples():
        (x1, y1), (x2, y2) = row.geometry.coords
        u, v = row.node_ids
        G.add_node(u, x=x1, y=y1)
        G.add_node(v, x=x2, y=y2)
        for a, b in ((u, v), (v, u)):
            G.add_edge(a, b, osmid=row.way_id, name=row.name, highway=row.highway, oneway=False)
    return G


def fake_features() -> gpd.GeoDataFrame:
    city = tiny_city()
    index = pd.MultiIndex.from_tuples([("node", 1), ("node", 2), ("way", 900), ("node", 3)], names=["element", "id"])
    return gpd.GeoDataFrame(
        {
            "name": ["Cafe Uno", "Bank Two", "Central Park", None],
            "amenity": ["cafe", "bank", None, None],
            "leisure": [None, None, "park", None],
            "addr:street": ["Alpha Street", None, None, None],
            "addr:housenumber": ["1", None, None, None],
            "natural": [None, None, None, "tree"],
        },
        geometry=[*city.pois.geometry, city.aois.geometry.iloc[0], shapely.Point(0, 0)],
        index=index,
        crs="EPSG:4326",
    )


@pytest.fixture
def fake_osmnx(monkeypatch):
    import osmnx as ox

    calls: dict[str, object] = {}
    park = tiny_city().aois.geometry.iloc[0]

    def geocode_to_gdf(query):
        calls["geocode"] = query
        return gpd.GeoDataFrame(geometry=[park.buffer(0.01)], crs="EPSG:4326")

    def graph_from_polygon(polygon, **kwargs):
        calls["graph"] = kwargs
        return fake_osmnx_graph()

    def features_from_polygon(polygon, tags):
        calls["tags"] = tags
        return fake_features()

    monkeypatch.setattr(ox, "geocode_to_gdf", geocode_to_gdf)
    monkeypatch.setattr(ox, "graph_from_polygon", graph_from_polygon)
    monkeypatch.setattr(ox, "features_from_polygon", features_from_polygon)
    return calls


def test_online_tables_match_the_offline_schema_and_graph(fake_osmnx, tmp_path):
    city = City(
        slug="tiny",
        name="Tinytown",
        country="Finland",
        split="train",
        source=CitySource(kind="place", query="Tinytown, Finland"),
    )
    extract = load_city_osm(city, allow_network=True, cache_dir=tmp_path)
    assert fake_osmnx["geocode"] == "Tinytown, Finland"
    assert fake_osmnx["graph"]["simplify"] is False
    assert {"amenity", "shop", "leisure", "building", "landuse"} <= set(fake_osmnx["tags"])
    assert len(extract.streets) == 12  # one row per piece, the reverse direction dropped
    assert list(extract.streets.columns) == list(tiny_city().streets.columns)
    assert extract.pois.set_index("osm_id").loc["n1", "address"] == "Alpha Street 1"
    assert extract.aois["osm_id"].tolist() == ["w900"]
    graph = build_urban_graph(extract, city_name=city.name, country=city.country)
    offline = build_urban_graph(tiny_city(), city_name=city.name, country=city.country)
    assert graph.counts() == offline.counts()


def test_place_over_the_area_limit(fake_osmnx):
    city = City(
        slug="tiny",
        name="T",
        country="F",
        split="train",
        max_area_km2=0.5,
        source=CitySource(kind="place", query="Tinytown"),
    )
    with pytest.raises(OsmSourceError, match=r"city 'tiny': source.query 'Tinytown' covers about .* km², over the"):
        load_city_osm(city, allow_network=True)
