"""Radius subgraphs on tiny cities with known answers; graph JSON round-trips; Helsinki (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from ugdata_pipeline.context.graph_json import (
    from_graph_json,
    graph_json_by_image,
    read_graph_json,
    to_graph_json,
    write_graph_json,
)
from ugdata_pipeline.context.plot import size_histogram_png
from ugdata_pipeline.context.subgraph import SubgraphConfig, build_subgraphs
from ugdata_pipeline.context.subgraph_tables import (
    SUBGRAPH_EDGE_COLUMNS,
    SUBGRAPH_NODE_COLUMNS,
    SUBGRAPH_SUMMARY_COLUMNS,
    SubgraphTables,
    subgraph_for,
    subgraph_size_outcome,
)
from ugdata_pipeline.errors import SubgraphInputError, UnknownSubgraphError
from ugdata_pipeline.graph.build import UrbanGraph
from ugdata_pipeline.graph.geodesy import distance_m
from ugdata_pipeline.graph.text import compass_word
from ugdata_pipeline_tests.context_tests.subgraph_fixtures import (
    RING_CENTRE,
    AnchoredCity,
    anchor_into,
    graph_of,
    images_along_streets,
    make_images,
    ring_city,
    tiny_city_with_long_road,
)
from ugdata_pipeline_tests.pictures import assert_drawn_png
from ugdata_pipeline_tests.tiny_city import tiny_city


@pytest.fixture(scope="module")
def tiny_graph() -> UrbanGraph:
    """The tiny city's graph, built once for this module (the tests never modify it)."""
    return graph_of(tiny_city())


@pytest.fixture(scope="module")
def tiny(tiny_graph: UrbanGraph) -> AnchoredCity:
    """Images: a on Alpha Street by Cafe Uno, b on Beta Street by the park, c 10 m east of a."""
    return anchor_into(tiny_graph, make_images({"a": (50, 5), "b": (150, 105), "c": (60, 5)}))


def ids(frame: pd.DataFrame) -> list[str]:
    return frame["node_id"].tolist()


# --- membership: lines and polygons by geometry, other images out ----------------------------------------


def test_long_street_crossing_the_buffer_is_in_though_its_anchor_is_far() -> None:
    city = anchor_into(graph_of(tiny_city_with_long_road()), make_images({"a": (50, 5)}))
    nodes, _ = subgraph_for(city.build(radius_m=125.0), "a")
    road = nodes.set_index("node_id").loc["street:delta-road"]
    assert road["distance_m"] == pytest.approx(55.0, abs=0.1)  # to the nearest point of the line
    assert math.hypot(road["dx_m"], road["dy_m"]) > 900  # its anchor (middle of the line) is far outside
    assert road["dx_m"] < -900  # ... to the west


def test_polygon_crossing_the_buffer_is_in_and_points_beyond_are_out(tiny: AnchoredCity) -> None:
    nodes, _ = subgraph_for(tiny.build(radius_m=125.0), "a")
    park = nodes.set_index("node_id").loc["aoi:w900"]
    # nearest corner (110, 110) is 120.9 m from (50, 5); the park's anchor is ~176 m away
    assert park["distance_m"] == pytest.approx(math.hypot(60, 105), abs=0.2)
    assert math.hypot(park["dx_m"], park["dy_m"]) > 125
    assert "poi:n2" not in ids(nodes)  # Bank Two, 198 m away
    assert set(ids(nodes)) == {
        "image:render:a",
        "poi:n1",
        "street:alpha-street",
        "street:first-avenue",
        "street:second-avenue",
        "crossing:1000",
        "crossing:1010",
        "street:beta-street",
        "crossing:1001",
        "crossing:1011",
        "aoi:w900",
    }


def test_image_inside_an_area_is_at_distance_zero(tiny_graph: UrbanGraph) -> None:
    city = anchor_into(tiny_graph, make_images({"in": (150, 115)}))
    nodes, _ = subgraph_for(city.build(radius_m=50.0), "in")
    assert nodes.set_index("node_id").loc["aoi:w900", "distance_m"] == 0.0


def test_other_images_are_excluded_and_the_centre_comes_first(tiny: AnchoredCity) -> None:
    tables = tiny.build()
    for image_id in ("a", "b", "c"):
        nodes, edges = subgraph_for(tables, image_id)
        centre = f"image:render:{image_id}"
        image_nodes = nodes.loc[nodes["kind"] == "image", "node_id"].tolist()
        assert image_nodes == [centre]
        assert nodes.iloc[0][["node_id", "rank", "dx_m", "dy_m", "distance_m"]].tolist() == [centre, 0, 0.0, 0.0, 0.0]
        touching_images = edges[edges["src"].str.startswith("image:") | edges["dst"].str.startswith("image:")]
        assert touching_images[["src", "kind"]].values.tolist() == [[centre, "image_street"]]
        assert (nodes["image_id"] == image_id).all() and (edges["image_id"] == image_id).all()
    summary = tables.summary.set_index("image_id")
    assert summary.loc["a", "center_node"] == "image:render:a"


def test_tables_follow_the_contract(tiny: AnchoredCity) -> None:
    tables = tiny.build()
    assert tuple(tables.nodes.columns) == SUBGRAPH_NODE_COLUMNS
    assert tuple(tables.edges.columns) == SUBGRAPH_EDGE_COLUMNS
    assert tuple(tables.summary.columns) == SUBGRAPH_SUMMARY_COLUMNS
    assert tables.summary["image_id"].tolist() == ["a", "b", "c"]  # input order
    counts = tables.nodes.groupby("image_id").size()
    assert tables.summary.set_index("image_id")["n_nodes"].to_dict() == counts.to_dict()
    assert tables.counts["images"] == 3 and tables.counts["subgraph_nodes"] == len(tables.nodes)
    # ranks are 0..n-1, nearest first
    for _, group in tables.nodes.groupby("image_id"):
        assert group["rank"].tolist() == list(range(len(group)))
        assert (np.diff(np.rint(group["distance_m"].to_numpy() * 1000)) >= 0).all()
    assert tables.nodes["name"].map(lambda v: v is None or isinstance(v, str)).all()  # None, never NaN


def test_offsets_are_east_north_metres_of_the_anchor(tiny: AnchoredCity) -> None:
    nodes, _ = subgraph_for(tiny.build(), "b")  # image at (150, 105)
    bank = nodes.set_index("node_id").loc["poi:n2"]  # Bank Two at (185, 150)
    # layout metres are UTM metres; true east/north differ by the grid convergence (~1.8 degrees here)
    assert math.hypot(bank["dx_m"], bank["dy_m"]) == pytest.approx(math.hypot(35, 45), rel=1e-3)
    assert bank["dx_m"] > 30 and bank["dy_m"] > 40
    assert bank["distance_m"] == pytest.approx(math.hypot(bank["dx_m"], bank["dy_m"]), abs=1e-6)
    assert compass_word(math.degrees(math.atan2(bank["dx_m"], bank["dy_m"]))) == "north-east"
    lon, lat = bank["lon"], bank["lat"]
    assert bank["distance_m"] == pytest.approx(
        distance_m(tiny.images.iloc[1]["lat"], tiny.images.iloc[1]["lon"], lat, lon), abs=1e-6
    )


# --- the cap ---------------------------------------------------------------------------------------------


def test_cap_keeps_the_nearest_with_ties_by_node_id(tiny: AnchoredCity) -> None:
    # from (50, 5): Cafe Uno and Alpha Street 5 m; First and Second Avenue 50 m; crossings 1000/1010 50.25 m
    nodes, _ = subgraph_for(tiny.build(max_nodes=4), "a")
    assert ids(nodes) == ["image:render:a", "poi:n1", "street:alpha-street", "street:first-avenue"]
    nodes, _ = subgraph_for(tiny.build(max_nodes=6), "a")
    assert ids(nodes)[-1] == "crossing:1000"
    tables = tiny.build(max_nodes=6)
    assert tables.summary["truncated"].all()
    assert not tiny.build(max_nodes=256).summary["truncated"].any()


def test_cap_among_equidistant_points_is_by_node_id_whatever_the_row_order() -> None:
    graph = graph_of(ring_city())
    expected = ["image:render:r", "street:ring-road", "poi:n11", "poi:n12", "poi:n13"]
    for seed in range(4):
        rng = np.random.default_rng(seed)
        shuffled = UrbanGraph(
            graph.nodes.iloc[rng.permutation(len(graph.nodes))].reset_index(drop=True),
            graph.edges.iloc[rng.permutation(len(graph.edges))].reset_index(drop=True),
            graph.crs_metric,
        )
        city = anchor_into(shuffled, make_images({"r": RING_CENTRE}))
        nodes, _ = subgraph_for(city.build(max_nodes=5), "r")
        assert sorted(ids(nodes)) == sorted(expected)
        assert ids(nodes)[0] == "image:render:r"
        assert nodes.set_index("node_id").loc[
            ["poi:n11", "poi:n12", "poi:n13"], "distance_m"
        ].tolist() == pytest.approx([30.0, 30.0, 30.0], abs=0.05)


def test_the_anchored_street_is_kept_even_past_the_cap_and_radius(tiny_graph: UrbanGraph) -> None:
    city = anchor_into(tiny_graph, make_images({"far": (50, 40)}))  # 40 m from Alpha Street
    nodes, edges = subgraph_for(city.build(radius_m=15.0, max_nodes=2), "far")
    assert ids(nodes) == ["image:render:far", "street:alpha-street"]
    assert edges[["src", "dst", "kind"]].values.tolist() == [
        ["image:render:far", "street:alpha-street", "image_street"]
    ]


def test_result_does_not_depend_on_row_order_or_chunking(tiny: AnchoredCity) -> None:
    reference = tiny.build(max_nodes=7)
    rng = np.random.default_rng(7)
    shuffled = AnchoredCity(
        tiny.graph,
        tiny.nodes.iloc[rng.permutation(len(tiny.nodes))].reset_index(drop=True),
        tiny.edges.iloc[rng.permutation(len(tiny.edges))].reset_index(drop=True),
        tiny.images.iloc[::-1].reset_index(drop=True),
    )
    other = shuffled.build(max_nodes=7, images_per_chunk=1)
    for image_id in ("a", "b", "c"):
        n1, e1 = subgraph_for(reference, image_id)
        n2, e2 = subgraph_for(other, image_id)
        pd.testing.assert_frame_equal(n1, n2)
        key = ["src", "dst", "kind"]
        pd.testing.assert_frame_equal(
            e1.sort_values(key).reset_index(drop=True), e2.sort_values(key).reset_index(drop=True)
        )


# --- edges -----------------------------------------------------------------------------------------------


def test_edges_are_exactly_those_among_kept_nodes(tiny: AnchoredCity) -> None:
    tables = tiny.build(max_nodes=6)
    for image_id in ("a", "b", "c"):
        nodes, edges = subgraph_for(tables, image_id)
        kept = set(ids(nodes))
        expected = tiny.edges[tiny.edges["src"].isin(kept) & tiny.edges["dst"].isin(kept)]
        got = edges[["src", "dst", "kind"]].apply(tuple, axis=1)
        assert sorted(got) == sorted(expected[["src", "dst", "kind"]].apply(tuple, axis=1))
        assert set(edges["src"]) | set(edges["dst"]) <= kept
    assert (
        tables.summary.set_index("image_id")["n_edges"].to_dict() == tables.edges.groupby("image_id").size().to_dict()
    )


# --- errors, empty input, checks -------------------------------------------------------------------------


def test_images_not_in_the_graph_are_refused_with_the_fix(tiny: AnchoredCity) -> None:
    with pytest.raises(SubgraphInputError, match=r"concatenate AnchorResult\.image_nodes"):
        build_subgraphs(tiny.graph.nodes, tiny.graph.edges, tiny.images, crs_metric=tiny.graph.crs_metric)
    with pytest.raises(SubgraphInputError, match="missing column"):
        build_subgraphs(tiny.nodes, tiny.edges, tiny.images.drop(columns="lat"), crs_metric=tiny.graph.crs_metric)
    with pytest.raises(SubgraphInputError, match="radius_m"):
        SubgraphConfig(radius_m=0)
    with pytest.raises(SubgraphInputError, match="max_nodes"):
        SubgraphConfig(max_nodes=1)
    with pytest.raises(UnknownSubgraphError, match="image:render:a"):
        subgraph_for(tiny.build(), "image:render:a")


def test_no_images_gives_empty_tables_with_the_contract_columns(tiny: AnchoredCity) -> None:
    tables = build_subgraphs(tiny.nodes, tiny.edges, tiny.images.iloc[:0], crs_metric=tiny.graph.crs_metric)
    assert tuple(tables.nodes.columns) == SUBGRAPH_NODE_COLUMNS and tables.nodes.empty
    assert tuple(tables.summary.columns) == SUBGRAPH_SUMMARY_COLUMNS and tables.counts["images"] == 0


def test_size_outcome_and_histogram(tiny: AnchoredCity) -> None:
    tables = tiny.build(max_nodes=6)
    outcome = subgraph_size_outcome(tables.summary, max_nodes=6)
    assert outcome.passed and outcome.observed == 0
    bad = pd.DataFrame({"image_id": ["x", "y", "z"], "n_nodes": [1, 5, 9], "truncated": [False, False, True]})
    outcome = subgraph_size_outcome(bad, min_nodes=2, max_nodes=8)
    assert not outcome.passed and outcome.observed == 2
    assert outcome.examples == ["x (1 nodes)", "z (9 nodes)"]
    assert_drawn_png(size_histogram_png(tables.summary))
    assert_drawn_png(size_histogram_png(tables.summary.iloc[:0]), min_colours=2)  # axes only


def test_tables_rebuilt_from_stored_frames_serve_subgraph_for(tiny: AnchoredCity) -> None:
    tables = tiny.build()
    stored = SubgraphTables(tables.nodes.sample(frac=1.0, random_state=1), tables.edges, tables.summary)
    nodes, _ = subgraph_for(stored, "b")
    pd.testing.assert_frame_equal(nodes, subgraph_for(tables, "b")[0])


# --- graph JSON ------------------------------------------------------------------------------------------


def test_graph_json_round_trip_in_the_reference_format(tiny: AnchoredCity, tmp_path) -> None:
    nodes, edges = subgraph_for(tiny.build(), "b")
    graph = to_graph_json(nodes, edges, "image:render:b")
    assert graph["center_node"] == "image:render:b" and graph["image_id"] == "b"
    first = graph["nodes"][0]
    assert {"node_id", "coords", "node_text"} <= set(first)
    assert first["coords"] == [nodes["lon"].iloc[0], nodes["lat"].iloc[0]]  # [lon, lat]
    assert len(graph["edges"]) == len(edges)  # each edge once
    assert {"source", "target"} <= set(graph["edges"][0])
    back_nodes, back_edges, centre = from_graph_json(json.loads(json.dumps(graph, allow_nan=False)))
    pd.testing.assert_frame_equal(back_nodes, nodes)
    pd.testing.assert_frame_equal(back_edges, edges)
    assert centre == "image:render:b"
    path = write_graph_json(tmp_path / "graphs" / "b.json", nodes, edges, "image:render:b")
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]  # no temporary file left behind
    file_nodes, file_edges, _ = read_graph_json(path)
    pd.testing.assert_frame_equal(file_nodes, nodes)
    pd.testing.assert_frame_equal(file_edges, edges)


def test_graph_json_by_image_equals_one_graph_at_a_time_in_any_row_order(tiny: AnchoredCity) -> None:
    tables = tiny.build()
    expected = {i: to_graph_json(*subgraph_for(tables, i), f"image:render:{i}") for i in ("a", "b", "c")}
    interleaved = (tables.nodes.sample(frac=1.0, random_state=0), tables.edges.sample(frac=1.0, random_state=1))
    for nodes, edges in ((tables.nodes, tables.edges), interleaved):
        render = graph_json_by_image(nodes, edges)
        for image_id, graph in expected.items():
            got = render(image_id, f"image:render:{image_id}")
            if nodes is not tables.nodes:  # nodes come back by rank, edges in the order they were given
                got["edges"].sort(key=lambda e: (e["source"], e["target"], e["kind"]))
                graph = {**graph, "edges": sorted(graph["edges"], key=lambda e: (e["source"], e["target"], e["kind"]))}
            assert json.dumps(got, allow_nan=False) == json.dumps(graph, allow_nan=False)
    with pytest.raises(SubgraphInputError, match="'zzz' has no rows"):
        graph_json_by_image(tables.nodes, tables.edges)("zzz", "image:render:zzz")
    with pytest.raises(SubgraphInputError, match="not among"):
        graph_json_by_image(tables.nodes, tables.edges)("a", "image:render:b")


def test_graph_json_reads_a_bare_reference_graph_and_refuses_broken_ones() -> None:
    bare = {
        "nodes": [
            {"node_id": "a", "coords": [24.9, 60.1], "node_text": "Name: A"},
            {"node_id": "b", "coords": [24.8, 60.2], "node_text": "Name: B"},
        ],
        "edges": [{"source": "a", "target": "b"}],
        "center_node": "a",
    }
    nodes, edges, centre = from_graph_json(bare)
    assert nodes.columns.tolist() == ["node_id", "lon", "lat", "node_text"]
    assert edges.columns.tolist() == ["src", "dst", "kind", "distance_m", "bearing_deg", "street_name"]
    assert edges[["src", "dst"]].values.tolist() == [["a", "b"]] and centre == "a"
    assert edges["kind"].tolist() == [None] and np.isnan(edges["distance_m"].iloc[0])
    with pytest.raises(SubgraphInputError, match="center_node"):
        from_graph_json({**bare, "center_node": "zzz"})
    with pytest.raises(SubgraphInputError, match="coords"):
        from_graph_json({**bare, "nodes": [{"node_id": "a", "coords": [1.0], "node_text": ""}]})
    with pytest.raises(SubgraphInputError, match="missing key"):
        from_graph_json({"nodes": []})


_text = st.one_of(st.none(), st.text(max_size=12))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(_text, st.floats(-180, 180), st.floats(-90, 90), st.floats(0, 5000)), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), _text, st.floats(0, 359.999)), max_size=8),
)
def test_graph_json_round_trip_property(node_rows, edge_rows) -> None:
    n = len(node_rows)
    nodes = pd.DataFrame(
        {
            "image_id": pd.Series(["img"] * n, dtype=object),
            "node_id": pd.Series([f"n{i}" for i in range(n)], dtype=object),
            "kind": pd.Series(["poi"] * n, dtype=object),
            "name": pd.Series([r[0] for r in node_rows], dtype=object),
            "category": pd.Series([None] * n, dtype=object),
            "node_text": pd.Series([f"Name: {r[0]}" for r in node_rows], dtype=object),
            "lon": [r[1] for r in node_rows],
            "lat": [r[2] for r in node_rows],
            "dx_m": [r[3] for r in node_rows],
            "dy_m": [-r[3] for r in node_rows],
            "distance_m": [r[3] for r in node_rows],
            "rank": np.arange(n, dtype=np.int64),
        }
    )
    kept = [r for r in edge_rows if r[0] < n and r[1] < n]
    edges = pd.DataFrame(
        {
            "image_id": pd.Series(["img"] * len(kept), dtype=object),
            "src": pd.Series([f"n{r[0]}" for r in kept], dtype=object),
            "dst": pd.Series([f"n{r[1]}" for r in kept], dtype=object),
            "kind": pd.Series(["nearest"] * len(kept), dtype=object),
            "distance_m": [float(r[0] + r[1]) for r in kept],
            "bearing_deg": [r[3] for r in kept],
            "street_name": pd.Series([r[2] for r in kept], dtype=object),
        }
    )
    text = json.dumps(to_graph_json(nodes, edges, "n0"), allow_nan=False)
    back_nodes, back_edges, centre = from_graph_json(json.loads(text))
    pd.testing.assert_frame_equal(back_nodes, nodes)
    pd.testing.assert_frame_equal(back_edges, edges, check_index_type=False)
    assert centre == "n0"


# --- a real city -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_helsinki_subgraphs_with_synthetic_images() -> None:
    from ugdata_pipeline.cities import load_registry
    from ugdata_pipeline.osm import load_city_osm

    extract = load_city_osm(load_registry().get("helsinki"), allow_network=False, cache_dir=None)
    graph = graph_of(extract)
    city = anchor_into(graph, images_along_streets(graph, 300, seed=1), city_name="Helsinki")
    tables = city.build()
    summary = tables.summary
    assert len(summary) == len(city.images) > 250
    assert subgraph_size_outcome(summary, min_nodes=2, max_nodes=256).passed
    assert summary["truncated"].any()  # central Helsinki has more than 256 nodes within 700 m
    edges = tables.edges
    own = edges[edges["kind"] == "image_street"]
    assert (own["src"] == "image:render:" + own["image_id"]).all()
    assert sorted(own["image_id"]) == sorted(summary["image_id"])  # each image keeps its street edge
    image_rows = tables.nodes[tables.nodes["kind"] == "image"]
    assert (image_rows["rank"] == 0).all() and len(image_rows) == len(summary)
    # distances agree with a brute-force planar check on one image
    nodes, _ = subgraph_for(tables, summary["image_id"].iloc[0])
    image = city.images.iloc[0]
    to_utm = Transformer.from_crs("EPSG:4326", graph.crs_metric, always_xy=True)
    point = shapely.Point(to_utm.transform(image["lon"], image["lat"]))
    metric = graph.nodes.set_index("node_id").geometry.to_crs(graph.crs_metric)
    planar = shapely.distance(point, metric.loc[nodes["node_id"].iloc[1:]].to_numpy())
    np.testing.assert_allclose(nodes["distance_m"].iloc[1:], planar, rtol=2e-3, atol=0.01)
    beyond = shapely.distance(point, metric.drop(index=nodes["node_id"].iloc[1:]).to_numpy())
    assert (beyond >= planar.max() - 0.01).all()  # nothing left out is nearer than what was kept
