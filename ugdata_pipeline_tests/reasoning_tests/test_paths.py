"""Spatial reasoning paths: known routes on the tiny city, invariants and an independent BFS oracle on a grid."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from ugdata_pipeline.errors import ReasoningInputError
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.graph.geodesy import distance_m, normalize_bearing_deg
from ugdata_pipeline.graph.text import DISTANCE_BANDS_M
from ugdata_pipeline.osm.schema import POI_COLUMNS, OsmExtract, frame
from ugdata_pipeline.reasoning import (
    MISSING_COLUMNS,
    SRP_COLUMNS,
    STEP_COLUMNS,
    PathConfig,
    build_paths,
    distance_histogram_png,
    every_image_has_path_or_reason,
    hop_histogram_png,
    no_query_contains_target,
    paths_are_walks,
    paths_stay_with_their_image,
)
from ugdata_pipeline.reasoning.mentions import is_weak_name, mentions_name
from ugdata_pipeline.reasoning.path_schema import (
    REASON_ALL_LEAK,
    REASON_EXCLUDED,
    REASON_NO_TARGET,
    REASON_NOT_ANCHORED,
)
from ugdata_pipeline.reasoning.text import view_direction
from ugdata_pipeline_tests.pictures import assert_drawn_png
from ugdata_pipeline_tests.reasoning_tests.conftest import Anchored, anchored, image_rows
from ugdata_pipeline_tests.tiny_city import lonlat, tiny_city


def _paths(data: Anchored, **options: object):
    return build_paths(data.nodes, data.edges, data.images, city="tinytown", config=PathConfig(**options))


def _row(paths: pd.DataFrame, image_id: str, target: str, path_type: str = "shortest") -> pd.Series:
    sel = paths[(paths["image_id"] == image_id) & (paths["target_node"] == target) & (paths["path_type"] == path_type)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


# ------------------------------------------------------------------------------------------------------------
# a known route on the tiny city
# ------------------------------------------------------------------------------------------------------------


def test_known_route_exact_nodes_relations_distances_and_words(tiny_anchored):
    result = _paths(tiny_anchored)
    row = _row(result.paths, "a", "poi:n2")
    assert row["path_nodes"] == [
        "image:render:a",
        "street:alpha-street",
        "crossing:1020",
        "street:third-avenue",
        "poi:n2",
    ]
    assert row["hops"] == 4
    assert row["path_relations"] == ["nearest", "crossing", "crossing", "nearest"]
    # walker: 8 m north onto Alpha Street, 150 m east to the crossing at x=200, turn, 150.7 m to (185, 150)
    np.testing.assert_allclose(row["step_distance_m"], [8.0, 150.0, 0.0, math.hypot(15, 150)], atol=0.1)
    np.testing.assert_allclose(row["route_m"], 8.0 + 150.0 + math.hypot(15, 150), atol=0.1)
    assert row["path_text"] == (
        "(image, nearest, Alpha Street) (8.0m, 358°(N)) -> "
        "(Alpha Street, crossing, Intersection of Alpha Street and Third Avenue) (150.0m, 88°(E)) -> "
        "(Intersection of Alpha Street and Third Avenue, crossing, Third Avenue) (0.0m, 352°(N)) -> "
        "(Third Avenue, nearest, destination) (150.8m, 352°(N))"
    )
    assert row["path_sentence"] == (
        "Walk 8 m north to Alpha Street, walk 150 m east along Alpha Street to the crossing with Third Avenue, "
        "turn onto Third Avenue, then walk 150 m north from Third Avenue to the destination."
    )
    # straight line from (50, -8) to (185, 150): 207.8 m at 40.5 deg (UTM grid north is ~1.8 deg off true north)
    assert row["distance_m"] == pytest.approx(math.hypot(135, 158), abs=0.5)
    assert row["compass"] == "north-east"
    assert row["view_direction"] == "ahead"
    assert row["target_name"] == "Bank Two"
    assert row["target_category"] == "financial"
    assert row["target_text"] == (
        "You can reach Bank Two (financial) 210 m north-east of the image location; it lies ahead of the camera."
    )
    assert row["split"] == "train"


def test_two_hop_target_and_alternative_of_the_known_route(tiny_anchored):
    paths = _paths(tiny_anchored).paths
    cafe = _row(paths, "a", "poi:n1")
    assert cafe["hops"] == 2
    assert cafe["path_nodes"] == ["image:render:a", "street:alpha-street", "poi:n1"]
    # the alternative to Bank Two arrives through the park that contains it, sharing no intermediate node
    alt = _row(paths, "a", "poi:n2", "alternative")
    assert alt["path_nodes"] == [
        "image:render:a",
        "street:alpha-street",
        "crossing:1010",
        "street:second-avenue",
        "aoi:w900",
        "poi:n2",
    ]
    assert alt["path_relations"] == ["nearest", "crossing", "crossing", "bounds", "within"]
    assert alt["hops"] == 5


def test_view_direction_follows_the_camera(tiny_anchored):
    paths = _paths(tiny_anchored).paths
    # b looks east from (100, 150): the park east of it is ahead, Cafe Uno (50, 10) to the south is right
    assert _row(paths, "b", "aoi:w900")["view_direction"] == "ahead"
    assert _row(paths, "b", "poi:n1")["view_direction"] == "right"
    assert _row(paths, "b", "poi:n1")["compass"] == "south"


def test_columns_counts_and_missing_reasons(tiny_anchored):
    data = tiny_anchored
    # an image on a street node that is not in the graph (an anchoring from another build)
    images = data.images.copy()
    extra = images.iloc[[0]].assign(image_id="z", street_node="street:nowhere")
    result = build_paths(data.nodes, data.edges, pd.concat([images, extra], ignore_index=True), city="tinytown")
    assert list(result.paths.columns) == [*SRP_COLUMNS, *STEP_COLUMNS]
    assert list(result.missing.columns) == list(MISSING_COLUMNS)
    reasons = dict(zip(result.missing["image_id"], result.missing["reason"], strict=True))
    assert reasons == {"c": REASON_EXCLUDED, "z": REASON_NOT_ANCHORED}
    assert result.counts["images"] == 4
    assert result.counts["images/with_path"] == 2
    assert result.counts["paths"] == len(result.paths)
    assert result.counts["paths/shortest"] + result.counts["paths/alternative"] == len(result.paths)
    assert sum(v for k, v in result.counts.items() if k.startswith("hops/")) == len(result.paths)
    assert every_image_has_path_or_reason(pd.concat([images, extra]), result.paths, result.missing).passed


def test_hop_window_and_distance_limit(tiny_anchored):
    paths = _paths(tiny_anchored, min_hops=3, max_hops=4).paths
    assert paths["hops"].between(3, 4).all()
    assert "poi:n1" not in set(paths.loc[paths["image_id"] == "a", "target_node"])  # 2 hops away
    near = _paths(tiny_anchored, max_distance_m=100.0).paths
    assert (near["distance_m"] <= 100.0).all()
    assert set(near.loc[near["image_id"] == "b", "target_node"]) == {"aoi:w900", "poi:n2"}


def test_no_target_reason(tiny_anchored):
    result = _paths(tiny_anchored, max_distance_m=5.0)
    assert result.paths.empty
    reasons = dict(zip(result.missing["image_id"], result.missing["reason"], strict=True))
    assert reasons == {"a": REASON_NO_TARGET, "b": REASON_NO_TARGET, "c": REASON_EXCLUDED}


def test_validators_pass_on_output_and_fail_on_broken_tables(tiny_anchored):
    data = tiny_anchored
    result = _paths(data)
    assert paths_are_walks(result.paths, data.edges).passed
    assert no_query_contains_target(result.paths, data.nodes).passed
    assert paths_stay_with_their_image(result.paths, data.images).passed
    assert every_image_has_path_or_reason(data.images, result.paths, result.missing).passed

    broken = result.paths.copy()
    broken.at[0, "path_nodes"] = [broken.at[0, "path_nodes"][0], "poi:n2"]  # image -> POI is not an edge
    outcome = paths_are_walks(broken, data.edges)
    assert not outcome.passed and outcome.observed == 1
    leaky = result.paths.copy()
    leaky.at[0, "path_sentence"] = leaky.at[0, "path_sentence"] + " It is " + leaky.at[0, "target_name"] + "."
    assert no_query_contains_target(leaky, data.nodes).observed == 1
    other = result.paths.copy()
    other.at[0, "path_nodes"] = [*other.at[0, "path_nodes"][:-1], "image:render:b", other.at[0, "path_nodes"][-1]]
    assert not paths_stay_with_their_image(other, data.images).passed
    wrong_split = result.paths.assign(split="test")
    assert not paths_stay_with_their_image(wrong_split, data.images).passed
    assert not every_image_has_path_or_reason(data.images, result.paths, result.missing.iloc[:0]).passed


# ------------------------------------------------------------------------------------------------------------
# no leak, no other images, no split crossing
# ------------------------------------------------------------------------------------------------------------


def _tiny_with_pois(extra: list[tuple[str, str, float, float]]) -> OsmExtract:
    base = tiny_city()
    rows = {c: [] for c in POI_COLUMNS if c != "geometry"}
    points = []
    for osm_id, name, x, y in extra:
        rows["osm_id"].append(osm_id)
        rows["name"].append(name)
        rows["category"].append("shop")
        rows["tag"].append("shop=kiosk")
        rows["address"].append(None)
        rows["height_m"].append(None)
        points.append(shapely.Point(lonlat(x, y)))
    pois = pd.concat([base.pois, frame(rows, POI_COLUMNS, points)], ignore_index=True)
    return OsmExtract(base.streets, pois, base.aois, source="tiny city + leaky POIs (test)")


def test_target_named_like_its_street_is_never_leaked():
    # "Alpha" sits on Alpha Street: every walk to it names Alpha Street, so it can never be a target;
    # "Gamma Kiosk" sits on Gamma Street and stays a fine target
    graph = build_urban_graph(
        _tiny_with_pois([("n7", "Alpha", 150, 8), ("n8", "Gamma Kiosk", 150, 192)]),
        city_name="Tinytown",
        country="Finland",
    )
    data = anchored(graph, image_rows([("a", 50, -8, 0.0), ("b", 100, 150, 90.0)]), ["train", "test"])
    result = build_paths(data.nodes, data.edges, data.images, city="tinytown")
    assert "poi:n7" not in set(result.paths["target_node"])
    assert "poi:n8" in set(result.paths["target_node"])
    assert result.counts["rejected/target_name_in_query"] >= 2
    assert no_query_contains_target(result.paths, data.nodes).passed
    kiosk = result.paths[result.paths["target_node"] == "poi:n8"]
    assert kiosk["path_sentence"].str.contains("Gamma Street").any()  # the street is named, the kiosk is not
    assert not kiosk["path_sentence"].str.contains("Kiosk").any()


def test_image_whose_every_target_leaks_gets_that_reason():
    # the only place is "Alpha" on Alpha Street (no other POI, no park): every walk to it names Alpha Street
    base = tiny_city()
    extract = OsmExtract(
        base.streets, _tiny_with_pois([("n7", "Alpha", 150, 8)]).pois.iloc[2:], base.aois.iloc[:0], source="test"
    )
    graph = build_urban_graph(extract, city_name="Tinytown", country="Finland")
    data = anchored(graph, image_rows([("a", 50, -8, 0.0)]), ["train"])
    result = build_paths(data.nodes, data.edges, data.images, city="tinytown")
    assert result.paths.empty
    assert result.missing["reason"].tolist() == [REASON_ALL_LEAK]


def test_paths_never_touch_other_images_even_when_images_sit_between(tiny_anchored):
    # many images along the route from a to Bank Two: none of them may appear in anyone else's path
    data = tiny_anchored
    crowd = image_rows([(f"x{k}", 60 + 10 * k, 2, 90.0) for k in range(12)])
    more = anchored(
        data.graph,
        pd.concat([image_rows([("a", 50, -8, 0.0), ("b", 100, 150, 90.0)]), crowd]),
        ["train", "test"] + ["val"] * 12,
    )
    result = build_paths(more.nodes, more.edges, more.images, city="tinytown")
    assert paths_stay_with_their_image(result.paths, more.images).passed
    for nodes, image_node in zip(result.paths["path_nodes"], result.paths["image_node"], strict=True):
        assert [n for n in nodes if n.startswith("image:")] == [image_node]
    # the split travels with the image: no row carries another image's split
    expected = dict(zip(more.images["image_id"], more.images["split"], strict=True))
    assert (result.paths["split"] == result.paths["image_id"].map(expected)).all()


# ------------------------------------------------------------------------------------------------------------
# determinism, stratification, and an independent oracle on a larger grid
# ------------------------------------------------------------------------------------------------------------


def test_same_seed_same_paths_other_seed_other_choice(grid_anchored):
    data = grid_anchored
    config = PathConfig(max_paths=4, seed=5)
    first = build_paths(data.nodes, data.edges, data.images, city="gridtown", config=config).paths
    shuffled = data.images.sample(frac=1.0, random_state=1)
    edges = data.edges.sample(frac=1.0, random_state=2)
    again = build_paths(data.nodes.iloc[::-1], edges, shuffled, city="gridtown", config=config).paths
    key = ["image_id", "path_type", "target_node"]
    pd.testing.assert_frame_equal(
        first.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True)
    )
    other = build_paths(data.nodes, data.edges, data.images, city="gridtown", config=PathConfig(max_paths=4, seed=6))
    other_city = build_paths(data.nodes, data.edges, data.images, city="othertown", config=config)
    chosen = set(zip(first["image_id"], first["target_node"], strict=True))
    assert chosen != set(zip(other.paths["image_id"], other.paths["target_node"], strict=True))
    assert chosen != set(zip(other_city.paths["image_id"], other_city.paths["target_node"], strict=True))
    # one image's choice does not depend on which other images are present
    alone = build_paths(data.nodes, data.edges, data.images.iloc[[3]], city="gridtown", config=config).paths
    pd.testing.assert_frame_equal(
        alone.reset_index(drop=True), first[first["image_id"] == data.images["image_id"].iat[3]].reset_index(drop=True)
    )


def _oracle_candidates(data: Anchored, config: PathConfig) -> dict[str, pd.DataFrame]:
    """Per image: every POI/AOI in the hop window and distance limit, by networkx BFS (independent code)."""
    place = data.nodes[data.nodes["kind"] != "image"]
    G = nx.Graph()
    G.add_nodes_from(place["node_id"])
    place_ids = set(place["node_id"])
    for s, t in zip(data.edges["src"], data.edges["dst"], strict=True):
        if s in place_ids and t in place_ids:
            G.add_edge(s, t)
    info = place.set_index("node_id")
    out = {}
    for image in data.images.itertuples():
        if image.split == "excluded":
            continue
        depth = nx.single_source_shortest_path_length(G, image.street_node, cutoff=config.max_hops - 1)
        rows = []
        for node, d in depth.items():
            if info.at[node, "kind"] in ("poi", "aoi") and config.min_hops <= d + 1 <= config.max_hops:
                dist = distance_m(image.lat, image.lon, info.at[node, "lat"], info.at[node, "lon"])
                if dist <= config.max_distance_m:
                    rows.append((node, d + 1, dist, info.at[node, "category"]))
        out[image.image_id] = pd.DataFrame(rows, columns=["target_node", "hops", "distance_m", "category"])
    return out


def _stratum(hops: pd.Series, distance: pd.Series, category: pd.Series, config: PathConfig) -> pd.Series:
    hop_band = np.searchsorted(np.asarray(config.hop_band_edges), hops.to_numpy(), side="right")
    uppers = np.array([u for u, _ in DISTANCE_BANDS_M[:-1]])
    dist_band = np.searchsorted(uppers, distance.to_numpy(), side="right")
    return pd.Series([f"{h}|{d}|{c}" for h, d, c in zip(hop_band, dist_band, category, strict=True)])


def test_shortest_paths_match_an_independent_bfs_and_strata_are_spread(grid_anchored):
    data = grid_anchored
    config = PathConfig(max_paths=6, max_distance_m=400.0)
    result = build_paths(data.nodes, data.edges, data.images, city="gridtown", config=config)
    oracle = _oracle_candidates(data, config)
    shortest = result.paths[result.paths["path_type"] == "shortest"]
    assert paths_are_walks(result.paths, data.edges).passed
    for image_id, cands in oracle.items():
        mine = shortest[shortest["image_id"] == image_id]
        # every chosen target is a real candidate at exactly its BFS hop count
        merged = mine.merge(cands, on="target_node", suffixes=("", "_oracle"), validate="one_to_one")
        assert len(merged) == len(mine)
        assert (merged["hops"] == merged["hops_oracle"]).all()
        # as many targets as allowed (alternatives take at most their quota)
        n_alt = int((result.paths["image_id"] == image_id).sum()) - len(mine)
        assert len(mine) == min(len(cands), config.max_paths - n_alt)
        # stratified round robin: the chosen targets cover as many strata as possible
        strata_all = _stratum(cands["hops"], cands["distance_m"], cands["category"], config)
        strata_mine = _stratum(mine["hops"], mine["distance_m"], mine["target_category"], config)
        assert strata_mine.nunique() == min(len(mine), strata_all.nunique())


def test_alternatives_are_different_simple_walks_to_the_same_target(grid_anchored):
    data = grid_anchored
    paths = build_paths(data.nodes, data.edges, data.images, city="gridtown").paths
    alts = paths[paths["path_type"] == "alternative"]
    assert len(alts) > 0
    assert (paths.groupby("image_id")["path_type"].apply(lambda s: (s == "alternative").sum()) <= 2).all()
    shortest = paths[paths["path_type"] == "shortest"].set_index(["image_id", "target_node"])
    for row in alts.itertuples():
        primary = shortest.loc[(row.image_id, row.target_node)]
        assert row.path_nodes != primary["path_nodes"]
        assert row.path_nodes[-2] != primary["path_nodes"][-2]  # the last step differs
        assert len(set(row.path_nodes)) == len(row.path_nodes)
        assert row.hops >= primary["hops"]
        assert 2 <= row.hops <= 8


def test_text_never_names_its_target_on_the_grid(grid_anchored):
    data = grid_anchored
    result = build_paths(data.nodes, data.edges, data.images, city="gridtown")
    assert no_query_contains_target(result.paths, data.nodes).passed
    assert every_image_has_path_or_reason(data.images, result.paths, result.missing).passed
    assert paths_stay_with_their_image(result.paths, data.images).passed


def test_histograms_are_png(tiny_anchored):
    paths = _paths(tiny_anchored).paths
    for png in (hop_histogram_png(paths), distance_histogram_png(paths), hop_histogram_png(paths.iloc[:0])):
        assert_drawn_png(png)


# ------------------------------------------------------------------------------------------------------------
# bad input and the text rules
# ------------------------------------------------------------------------------------------------------------


def test_bad_input_is_named(tiny_anchored):
    data = tiny_anchored
    with pytest.raises(ReasoningInputError, match=r"images is missing column\(s\) \['split'\].*assign_splits"):
        build_paths(data.nodes, data.edges, data.images.drop(columns="split"), city="tinytown")
    with pytest.raises(ReasoningInputError, match="city must be a non-empty string"):
        build_paths(data.nodes, data.edges, data.images, city=" ")
    with pytest.raises(ReasoningInputError, match="image_id must be unique"):
        build_paths(data.nodes, data.edges, pd.concat([data.images, data.images]), city="tinytown")
    with pytest.raises(ReasoningInputError, match="min_hops <= max_hops"):
        PathConfig(min_hops=5, max_hops=3)
    with pytest.raises(ReasoningInputError, match="max_distance_m"):
        PathConfig(max_distance_m=float("nan"))
    with pytest.raises(ReasoningInputError, match="max_paths must be >= 1"):
        PathConfig(max_paths=0)


def test_mentions_name_is_whole_words_and_case_insensitive():
    assert mentions_name("Walk along Kamppi Street.", "kamppi")
    assert not mentions_name("Walk along Kamppikatu.", "Kamppi")
    assert mentions_name("(St. Mary's, nearest, x)", "St Mary s")
    assert not mentions_name("anything", "  ")


@given(st.floats(0, 359.999), st.floats(-44.9, 44.9))
def test_view_direction_quadrants(camera, offset):
    # as the path builder does it: the target's compass bearing (wrapped into [0, 360)) minus the camera's, wrapped
    def seen_from_camera(delta: float) -> str:
        target_bearing = (camera + delta) % 360.0
        return view_direction(float(normalize_bearing_deg(target_bearing - camera)))

    assert seen_from_camera(offset) == "ahead"
    assert seen_from_camera(90 + offset) == "right"
    assert seen_from_camera(180 + offset) == "behind"
    assert seen_from_camera(270 + offset) == "left"
    # the camera's heading matters: a target due east is on the right of a camera facing north, behind one facing west
    assert view_direction(float(normalize_bearing_deg(90.0 - 0.0))) == "right"
    assert view_direction(float(normalize_bearing_deg(90.0 - 270.0))) == "behind"


@given(st.lists(st.text(alphabet="abcxyzé", min_size=1, max_size=6), min_size=1, max_size=3))
def test_a_name_in_a_sentence_is_found(words):
    name = " ".join(words)
    assert mentions_name(f"Walk 10 m north to {name}, then stop.", name)
    if is_weak_name(name):  # single letters only as written: "a" in prose is not the place "A"
        assert mentions_name(f"Walk 10 m north to {name.upper()}, then stop.", name) == (name.upper() == name)
    else:
        assert mentions_name(f"Walk 10 m north to {name.upper()}, then stop.", name)


def test_unknown_compass_angle_gives_no_view_direction(tiny_anchored):
    data = tiny_anchored
    images = data.images.assign(compass_angle=[float("nan"), 90.0, 0.0])
    paths = build_paths(data.nodes, data.edges, images, city="tinytown").paths
    of_a = paths[paths["image_id"] == "a"]
    assert of_a["view_direction"].isna().all()
    assert not of_a["target_text"].str.contains("camera").any()
    assert paths.loc[paths["image_id"] == "b", "view_direction"].notna().all()
