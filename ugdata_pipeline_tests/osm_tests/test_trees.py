"""Single trees (``natural=tree`` nodes) reach the ``trees`` table from both readers."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely

from ugdata_pipeline.osm.offline import read_osm_file
from ugdata_pipeline.osm.online import trees_from_features
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline_tests.tiny_city import lonlat, tiny_city

_STAMP = 'version="1" timestamp="2024-05-01T12:00:00Z"'


def _node(osm_id: int, x: float, y: float, tags: dict[str, str]) -> str:
    lon, lat = lonlat(x, y)
    body = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
    return f'<node id="{osm_id}" {_STAMP} lat="{lat:.9f}" lon="{lon:.9f}">{body}</node>'


def test_offline_reader_collects_tree_nodes_only(tmp_path):
    nodes = [
        _node(11, 10, 5, {"natural": "tree"}),
        _node(12, 20, 5, {"natural": "tree", "species": "Tilia"}),
        _node(13, 30, 5, {"natural": "peak", "name": "Hill"}),  # natural but not a tree
        _node(14, 40, 5, {"amenity": "cafe", "name": "Cafe"}),
        _node(15, 0, 0, {}),
        _node(16, 100, 0, {}),
    ]
    street = f'<way id="7" {_STAMP}><nd ref="15"/><nd ref="16"/><tag k="highway" v="residential"/></way>'
    path = tmp_path / "trees.osm"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6">\n'
        + "\n".join(nodes)
        + "\n"
        + street
        + "\n</osm>\n",
        encoding="utf-8",
    )
    extract = read_osm_file(path)
    assert extract.trees["osm_id"].tolist() == ["n11", "n12"]
    assert extract.trees.crs == "EPSG:4326"
    assert extract.trees.geometry.iloc[0].distance(shapely.Point(lonlat(10, 5))) < 1e-7
    assert extract.summary()["trees"] == 2
    # trees stay POIs too (category "natural"), so existing POI counts do not change
    assert {"n11", "n12", "n13", "n14"} <= set(extract.pois["osm_id"])


def test_online_features_give_the_same_trees():
    index = pd.MultiIndex.from_tuples([("node", 11), ("node", 12), ("way", 13), ("node", 14)], names=["element", "id"])
    features = gpd.GeoDataFrame(
        {"natural": ["tree", "peak", "tree", None], "amenity": [None, None, None, "cafe"]},
        geometry=[
            shapely.Point(lonlat(10, 5)),
            shapely.Point(lonlat(30, 5)),
            shapely.Point(lonlat(0, 0)).buffer(1e-5),
            shapely.Point(lonlat(40, 5)),
        ],
        index=index,
        crs="EPSG:4326",
    )
    trees = trees_from_features(features)
    assert trees["osm_id"].tolist() == ["n11"]  # the way-tree (a polygon) and the peak are not single trees
    assert list(trees.columns) == ["osm_id", "geometry"]
    assert trees_from_features(features.drop(columns="natural")).empty


def test_extracts_made_without_trees_get_an_empty_table():
    city = tiny_city()
    extract = OsmExtract(city.streets, city.pois, city.aois, source="test")
    assert extract.trees.empty
    assert list(extract.trees.columns) == ["osm_id", "geometry"]
    assert extract.summary()["trees"] == 0
