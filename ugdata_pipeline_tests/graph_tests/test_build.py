"""The graph build on the tiny 3 x 3 grid city, where every answer is known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.errors import EmptyAreaError
from ugdata_pipeline.graph.build import GraphConfig, build_urban_graph
from ugdata_pipeline.graph.node_ids import slugify
from ugdata_pipeline.graph.text import compass_word
from ugdata_pipeline_tests.tiny_city import grid_node_id, lonlat, streets_only, tiny_city


def edge(edges: pd.DataFrame, src: str, dst: str, kind: str) -> pd.Series:
    """The one edge src -> dst of a kind (either stored orientation)."""
    hit = edges[
        (edges["kind"] == kind)
        & (((edges["src"] == src) & (edges["dst"] == dst)) | ((edges["src"] == dst) & (edges["dst"] == src)))
    ]
    assert len(hit) == 1, f"expected one {kind} edge {src} - {dst}, found {len(hit)}"
    return hit.iloc[0]


def test_node_counts_per_kind(tiny_graph):
    assert tiny_graph.counts() == {
        "nodes/aoi": 1,
        "nodes/crossing": 9,
        "nodes/poi": 2,
        "nodes/street": 6,
        "edges/along_street": 12,
        "edges/bounds": 4,
        "edges/crossing": 18,
        "edges/nearest": 3,
        "edges/within": 1,
    }


def test_streets_are_merged_ways_with_stable_ids(tiny_graph):
    streets = tiny_graph.nodes[tiny_graph.nodes["kind"] == "street"].set_index("node_id")
    assert sorted(streets.index) == [
        "street:alpha-street",
        "street:beta-street",
        "street:first-avenue",
        "street:gamma-street",
        "street:second-avenue",
        "street:third-avenue",
    ]
    # two 100 m ways merged into one 200 m street; the anchor is its middle
    assert streets.loc["street:alpha-street", "length_m"] == pytest.approx(200, abs=0.5)
    assert streets.loc["street:alpha-street", "osm_ids"] == "w101,w102"
    lon, lat = lonlat(100, 0)
    assert streets.loc["street:alpha-street", ["lon", "lat"]].tolist() == pytest.approx([lon, lat], abs=1e-6)
    assert streets.loc["street:first-avenue", "category"] == "major_road"


def test_crossings_are_named_after_their_streets(tiny_graph):
    crossings = tiny_graph.nodes[tiny_graph.nodes["kind"] == "crossing"].set_index("node_id")
    centre = f"crossing:{grid_node_id(1, 1)}"
    assert crossings.loc[centre, "name"] == "Intersection of Beta Street and Second Avenue"
    lon, lat = lonlat(100, 100)
    assert crossings.loc[centre, ["lon", "lat"]].tolist() == pytest.approx([lon, lat], abs=1e-7)


def test_along_street_joins_consecutive_crossings_only(tiny_graph):
    edges = tiny_graph.edges
    west, middle, east = (f"crossing:{grid_node_id(i, 0)}" for i in range(3))
    first = edge(edges, west, middle, "along_street")
    assert first["street_name"] == "Alpha Street"
    assert first["distance_m"] == pytest.approx(100, abs=0.3)
    along = edges[edges["kind"] == "along_street"]
    skip = ((along["src"] == west) & (along["dst"] == east)) | ((along["src"] == east) & (along["dst"] == west))
    assert not skip.any(), "the two ends of a street must not be joined past the middle crossing"
    going_north = edge(edges, f"crossing:{grid_node_id(0, 0)}", f"crossing:{grid_node_id(0, 1)}", "along_street")
    bearing = (
        going_north["bearing_deg"]
        if going_north["src"].endswith(str(grid_node_id(0, 0)))
        else ((going_north["bearing_deg"] + 180) % 360)
    )
    # UTM grid north differs from true north by the meridian convergence, (lon - 27°) * sin(lat) = -1.8°
    assert compass_word(bearing) == "north"
    assert bearing == pytest.approx(358.2, abs=0.1)


def test_crossing_edges_link_each_crossing_to_both_streets(tiny_graph):
    edges = tiny_graph.edges[tiny_graph.edges["kind"] == "crossing"]
    centre = f"crossing:{grid_node_id(1, 1)}"
    assert sorted(edges.loc[edges["src"] == centre, "dst"]) == ["street:beta-street", "street:second-avenue"]
    # the centre crossing is the middle of both streets, so the distance is the floor, not 0
    assert (edges.loc[edges["src"] == centre, "distance_m"] == 0.5).all()


def test_nearest_street_distance_and_compass(tiny_graph):
    cafe = edge(tiny_graph.edges, "poi:n1", "street:alpha-street", "nearest")
    assert cafe["src"] == "poi:n1"
    assert cafe["distance_m"] == pytest.approx(10, abs=0.1)
    assert compass_word(cafe["bearing_deg"]) == "south"
    bank = edge(tiny_graph.edges, "poi:n2", "street:third-avenue", "nearest")
    assert bank["distance_m"] == pytest.approx(15, abs=0.1)
    assert compass_word(bank["bearing_deg"]) == "east"
    # the park is 10 m from four streets; ties go to the smallest street id
    park = tiny_graph.edges[(tiny_graph.edges["kind"] == "nearest") & (tiny_graph.edges["src"] == "aoi:w900")]
    assert park["dst"].tolist() == ["street:beta-street"]
    assert park["distance_m"].iloc[0] == pytest.approx(10, abs=0.1)


def test_bounds_and_within(tiny_graph):
    bounds = tiny_graph.edges[tiny_graph.edges["kind"] == "bounds"]
    assert sorted(bounds["src"]) == [
        "street:beta-street",
        "street:gamma-street",
        "street:second-avenue",
        "street:third-avenue",
    ]
    assert set(bounds["dst"]) == {"aoi:w900"}
    within = edge(tiny_graph.edges, "poi:n2", "aoi:w900", "within")
    assert within["src"] == "poi:n2"
    # bank at (185, 150), park anchor near (150, 150): about 35 m west
    assert compass_word(within["bearing_deg"]) == "west"


def test_node_text_carries_the_citys_own_country(tiny_graph):
    cafe = tiny_graph.nodes.set_index("node_id").loc["poi:n1", "node_text"]
    assert cafe.startswith("Name: Cafe Uno, ID: poi:n1, Category: food, Address: Alpha Street 1, City: Tinytown")
    assert "Country: Finland" in cafe
    assert "Singapore" not in " ".join(tiny_graph.nodes["node_text"])
    other = build_urban_graph(tiny_city(), city_name="Paris", country="France")
    assert all("Country: France" in t for t in other.nodes["node_text"])


def test_unnamed_streets_are_not_nodes_and_make_no_crossings():
    extract = tiny_city()
    extract.streets.loc[extract.streets["name"] == "Second Avenue", "name"] = None
    graph = build_urban_graph(extract, city_name="T", country="Finland")
    assert graph.counts()["nodes/street"] == 5
    assert graph.counts()["nodes/crossing"] == 6


def test_nearby_junction_points_are_consolidated():
    """A junction drawn as two OSM nodes 8 m apart is one crossing (default tolerance 15 m)."""
    extract = streets_only(
        [
            (1, "Main Street", "residential", [1, 2, 3, 4], [(0, 0), (100, 0), (108, 0), (200, 0)]),
            (2, "North Road", "residential", [2, 5], [(100, 0), (100, 100)]),
            (3, "South Road", "residential", [3, 6], [(108, 0), (108, -100)]),
        ]
    )
    graph = build_urban_graph(extract, city_name="T", country="Finland")
    crossings = graph.nodes[graph.nodes["kind"] == "crossing"]
    assert len(crossings) == 1
    assert crossings["name"].iloc[0] == "Intersection of Main Street, North Road and South Road"
    separate = build_urban_graph(extract, city_name="T", country="Finland", config=GraphConfig(crossing_merge_m=5))
    assert separate.counts()["nodes/crossing"] == 2
    assert separate.counts()["edges/along_street"] == 1


def test_dual_carriageway_is_one_street():
    """Two parallel one-way ways with one name, 20 m apart and sharing no node, are one street."""
    extract = streets_only(
        [
            (1, "Boulevard", "primary", [1, 2], [(0, 0), (300, 0)]),
            (2, "Boulevard", "primary", [3, 4], [(300, 20), (0, 20)]),
            (3, "Cross Street", "primary", [5, 6], [(150, -50), (150, 70)]),
        ]
    )
    graph = build_urban_graph(extract, city_name="T", country="Finland")
    assert sorted(graph.nodes["node_id"]) == ["street:boulevard", "street:cross-street"]
    # a bridge-like overpass that shares no OSM node is not a crossing
    assert graph.counts().get("nodes/crossing", 0) == 0


def test_no_named_streets_is_an_error_naming_the_area():
    extract = tiny_city()
    extract.streets["name"] = None
    with pytest.raises(EmptyAreaError, match="city 'nowhere' has no named streets"):
        build_urban_graph(extract, city_name="N", country="Finland", where="city 'nowhere'")


def test_build_is_deterministic(tiny_graph):
    again = build_urban_graph(tiny_city(), city_name="Tinytown", country="Finland")
    pd.testing.assert_frame_equal(again.edges, tiny_graph.edges)
    assert again.nodes["node_id"].tolist() == tiny_graph.nodes["node_id"].tolist()


def test_graph_config_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="crossing_merge_m must be a finite distance"):
        GraphConfig(crossing_merge_m=float("nan"))
    with pytest.raises(ValueError, match="bounds_min_share"):
        GraphConfig(bounds_min_share=0)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Mannerheimintie", "mannerheimintie"),
        ("Rue de l'Université", "rue-de-l-université"),
        ("長安街", "長安街"),
        ("--", "unnamed"),
    ],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_edges_have_positive_distances_and_bearings_in_range(tiny_graph):
    assert (tiny_graph.edges["distance_m"] > 0).all()
    bearings = tiny_graph.edges["bearing_deg"].to_numpy()
    assert ((bearings >= 0) & (bearings < 360)).all()
    assert np.isfinite(tiny_graph.nodes[["lon", "lat"]].to_numpy()).all()
