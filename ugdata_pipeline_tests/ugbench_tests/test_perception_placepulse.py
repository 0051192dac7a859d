"""Perception: OSM measures against hand-computed cases, records from them; Place Pulse 2.0 votes to Q-scores."""

from __future__ import annotations

import json
from collections import Counter

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.ugbench import BenchConfig, CityInputs, build_tasks, load_place_pulse, place_pulse_levels
from ugdata_pipeline.ugbench._records import normalize_text
from ugdata_pipeline.ugbench.perception import (
    BOUNDARY_MARGIN,
    DIMENSIONS,
    LEVELS,
    STATEMENTS,
    perception_measures,
    plausible_levels,
)
from ugdata_pipeline_tests.tiny_city import CRS_METRIC, lonlat

STATEMENT_OF = {s: (dim, level, k) for (dim, level), phrasings in STATEMENTS.items() for k, s in enumerate(phrasings)}
PERCEPTION = BenchConfig(seed=7, tasks=("perception",), max_records_per_task=40)


def replace(inputs: CityInputs, **changes: object) -> CityInputs:
    return CityInputs(**{**{f: getattr(inputs, f) for f in CityInputs.__slots__}, **changes})


def test_statements_cover_every_dimension_and_level_with_unique_similar_phrasings():
    assert set(STATEMENTS) == {(d, lv) for d in DIMENSIONS for lv in LEVELS}
    texts = [s for phrasings in STATEMENTS.values() for s in phrasings]
    assert all(len(p) == 4 for p in STATEMENTS.values())
    assert len({normalize_text(t) for t in texts}) == len(texts) == 48
    lengths = np.array([len(t) for t in texts])
    assert lengths.max() / lengths.min() < 2.0


def test_plausible_levels_mark_the_tercile_boundaries():
    assert plausible_levels(0.10) == {"low"}
    assert plausible_levels(0.32) == {"low", "mid"}
    assert plausible_levels(0.50) == {"mid"}
    assert plausible_levels(0.68) == {"mid", "high"}
    assert plausible_levels(0.95) == {"high"}


# --- measures on a hand-built case ---------------------------------------------------------------------------------


def _square(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.Polygon([lonlat(x0, y0), lonlat(x1, y0), lonlat(x1, y1), lonlat(x0, y1)])


def _points(*xy: tuple[float, float]) -> list[shapely.Point]:
    return [shapely.Point(lonlat(x, y)) for x, y in xy]


def tiny_inputs(*, with_aois: bool = True) -> CityInputs:
    """
    Four images 1 km apart (layout metres, UTM 35N) with known surroundings:

    A (0, 0)      inside a park (green share 1); trees at 10 m and 40 m (one more at 60 m is out); crossings at
                  100 m and 290 m (one at 310 m is out, a street node does not count)
    B (1000, 0)   a wood covers the half disc east of it (share 1/2); food at 100 m, a shop at 150 m, a bank at
                  199 m (a food place at 250 m and a pharmacy at 50 m do not count)
    C (2000, 0)   buildings of 400 m2 (10 m high) and 100 m2 (30 m) within 50 m; one 60 m away is out; a
                  commercial area 120 m away
    D (3000, 0)   two 100 m2 buildings without a usable height (the 10 m default)
    """
    ids = ["A", "B", "C", "D"]
    xy = [(0.0, 0.0), (1000.0, 0.0), (2000.0, 0.0), (3000.0, 0.0)]
    lonlats = [lonlat(x, y) for x, y in xy]
    images = pd.DataFrame(
        {
            "image_id": ids,
            "source": "render",
            "lon": [p[0] for p in lonlats],
            "lat": [p[1] for p in lonlats],
            "split": "test",
            "path": [f"img/{i}.png" for i in ids],
            "street_node": "street:x",
            "scene_facts": json.dumps({"green_fraction": 0.3}),
        }
    )
    nodes = pd.DataFrame(
        {
            "node_id": ["c1", "c2", "c3", "s1"],
            "kind": ["crossing", "crossing", "crossing", "street"],
            "name": None,
            "category": None,
            "lon": [lonlat(0, 100)[0], lonlat(0, 290)[0], lonlat(0, 310)[0], lonlat(0, 0)[0]],
            "lat": [lonlat(0, 100)[1], lonlat(0, 290)[1], lonlat(0, 310)[1], lonlat(0, 0)[1]],
        }
    )
    aois = gpd.GeoDataFrame(
        {
            "category": ["park", "natural", "building", "building", "building", "commercial", "building", "building"],
            "tag": [
                "leisure=park",
                "natural=wood",
                "building=yes",
                "building=yes",
                "building=yes",
                "landuse=retail",
                "building=yes",
                "building=yes",
            ],
            "height_m": [None, None, 10.0, 30.0, 50.0, None, None, 0.0],
            "is_building": [False, False, True, True, True, False, True, True],
        },
        geometry=[
            _square(-200, -200, 200, 200),
            _square(1000, -200, 1200, 200),
            _square(2005, 5, 2025, 25),
            _square(1975, -20, 1985, -10),
            _square(2060, 0, 2070, 10),
            _square(2120, -10, 2140, 10),
            _square(3010, 0, 3020, 10),
            _square(2980, -20, 2990, -10),
        ],
        crs="EPSG:4326",
    )
    pois = gpd.GeoDataFrame(
        {"category": ["food", "commercial", "financial", "food", "healthcare"]},
        geometry=_points((1000, 100), (1150, 0), (1000, -199), (1250, 0), (1050, 0)),
        crs="EPSG:4326",
    )
    trees = gpd.GeoDataFrame(
        {"osm_id": ["t1", "t2", "t3"]}, geometry=_points((10, 0), (0, -40), (60, 0)), crs="EPSG:4326"
    )
    subgraph = pd.DataFrame({"image_id": ids})
    return CityInputs(
        city="tiny",
        role="held_out",
        images=images,
        nodes=nodes,
        edges=pd.DataFrame(),
        subgraph_nodes=subgraph,
        subgraph_edges=pd.DataFrame(),
        crs_metric=CRS_METRIC,
        osm_aois=aois if with_aois else None,
        osm_pois=pois,
        osm_trees=trees,
    )


def test_measures_of_a_hand_built_case_match_the_known_answers():
    m = perception_measures(tiny_inputs()).set_index("image_id")
    assert m["green_share_100m"].to_dict() == pytest.approx({"A": 1.0, "B": 0.5, "C": 0.0, "D": 0.0}, abs=1e-6)
    assert m["trees_50m"].to_dict() == {"A": 2.0, "B": 0.0, "C": 0.0, "D": 0.0}
    disc = np.pi * 50.0**2  # the measure's disc is a 32-gon, within 1 % of the circle
    assert m.at["C", "building_share_50m"] == pytest.approx(500.0 / disc, rel=0.01)
    assert m.at["D", "building_share_50m"] == pytest.approx(200.0 / disc, rel=0.01)
    assert m.loc[["A", "B"], "building_share_50m"].tolist() == [0.0, 0.0]
    # footprint-weighted mean height: (400 * 10 + 100 * 30) / 500; D's buildings take the 10 m default
    assert m.at["C", "building_height_50m"] == pytest.approx(14.0)
    assert m.at["D", "building_height_50m"] == pytest.approx(10.0)
    assert m.loc[["A", "B"], "building_height_50m"].isna().all()
    assert m["commercial_200m"].to_dict() == {"A": 0.0, "B": 3.0, "C": 1.0, "D": 0.0}
    assert m["crossings_300m"].to_dict() == {"A": 2.0, "B": 0.0, "C": 0.0, "D": 0.0}
    # greenery = mean of the two components' percentile ranks, then terciles of its own rank:
    # A (1, 1) -> 1; B (3/4, 1/2) -> 5/8; C, D (3/8, 1/2) -> 7/16; ranks 1, 3/4, 3/8, 3/8
    assert m["greenery_score"].to_dict() == pytest.approx({"A": 1.0, "B": 0.625, "C": 0.4375, "D": 0.4375})
    assert m["greenery_level"].to_dict() == {"A": "high", "B": "high", "C": "mid", "D": "mid"}
    # connectivity has two distinct scores only: not used in this city
    assert m["connectivity_level"].isna().all() and m["connectivity_pct"].isna().all()


def test_without_the_areas_table_greenery_rests_on_trees_and_enclosure_is_unmeasured():
    m = perception_measures(tiny_inputs(with_aois=False)).set_index("image_id")
    assert m[["green_share_100m", "building_share_50m", "building_height_50m"]].isna().all().all()
    assert m["trees_50m"].to_dict() == {"A": 2.0, "B": 0.0, "C": 0.0, "D": 0.0}
    assert m["enclosure_level"].isna().all()
    # the POI table alone still counts places (no commercial area now)
    assert m["commercial_200m"].to_dict() == {"A": 0.0, "B": 3.0, "C": 0.0, "D": 0.0}


# --- records of the grid cities ------------------------------------------------------------------------------------


def test_perception_candidates_are_one_dimension_in_one_phrasing_and_the_measured_level(bench):
    for city in bench.cities:
        measures = perception_measures(city.inputs).set_index("image_id")
        records = bench.tasks[(bench.tasks["task"] == "perception") & (bench.tasks["city"] == city.inputs.city)]
        assert len(records) == 36
        for row in records.itertuples(index=False):
            meta = json.loads(row.meta)
            assert len(row.candidates) == 3
            found = [STATEMENT_OF[c] for c in row.candidates]
            assert {d for d, _, _ in found} == {meta["dimension"]}
            assert {lv for _, lv, _ in found} == set(LEVELS)
            assert len({k for _, _, k in found}) == 1  # one phrasing for all three
            assert measures.at[row.image_id, f"{meta['dimension']}_level"] == meta["level"]
            assert STATEMENT_OF[row.ground_truth][:2] == (meta["dimension"], meta["level"])
            # images near a tercile boundary are left out
            pct = measures.at[row.image_id, f"{meta['dimension']}_pct"]
            assert min(abs(pct - 1 / 3), abs(pct - 2 / 3)) > BOUNDARY_MARGIN - 1e-9
            assert meta["percentile"] == pytest.approx(pct, abs=1e-4)


def test_levels_and_phrasings_are_balanced_per_city_and_dimension(bench):
    records = bench.tasks[bench.tasks["task"] == "perception"]
    by_dim: Counter[tuple[str, str, str]] = Counter()
    by_phrasing: Counter[tuple[str, str, int, str]] = Counter()
    for row in records.itertuples(index=False):
        dim, level, phrasing = STATEMENT_OF[row.ground_truth]
        by_dim[row.city, dim, level] += 1
        by_phrasing[row.city, dim, phrasing, level] += 1
    for city in ("gridtown", "farville"):
        for dim in DIMENSIONS:
            assert [by_dim[city, dim, lv] for lv in LEVELS] == [3, 3, 3], (city, dim)
            for phrasing in range(4):  # each candidate set is correct equally often at each level
                counts = {by_phrasing[city, dim, phrasing, lv] for lv in LEVELS}
                assert len(counts) == 1, (city, dim, phrasing, counts)


def test_labels_come_from_osm_not_from_the_images_scene_facts(bench):
    inputs = bench.train.inputs
    expected = bench.tasks[(bench.tasks["task"] == "perception") & (bench.tasks["city"] == "gridtown")]
    baseline, _ = build_tasks([inputs], config=PERCEPTION)
    # group_id is all missing (None here, in an object column; NaN in the full table's string column)
    assert baseline["group_id"].isna().all() and expected["group_id"].isna().all()
    pd.testing.assert_frame_equal(
        baseline.drop(columns="group_id"), expected.drop(columns="group_id").reset_index(drop=True)
    )
    # other green fractions in the images' scene facts change nothing
    facts = inputs.images["scene_facts"].map(json.loads)
    rng = np.random.default_rng(0)
    repainted = inputs.images.assign(
        scene_facts=[
            json.dumps({**f, "green_fraction": float(rng.random()), "building_fraction": float(rng.random())})
            for f in facts
        ]
    )
    same, _ = build_tasks([replace(inputs, images=repainted)], config=PERCEPTION)
    pd.testing.assert_frame_equal(same, baseline)
    # removing the green areas from osm_aois changes greenery levels, and only those
    aois = inputs.osm_aois
    greyed = aois[aois["is_building"].fillna(False).astype(bool)]
    assert len(greyed) < len(aois)
    before = perception_measures(inputs).set_index("image_id")
    after = perception_measures(replace(inputs, osm_aois=greyed)).set_index("image_id")
    assert (after["green_share_100m"] == 0).all() and (before["green_share_100m"] > 0).any()
    assert (after["greenery_level"] != before["greenery_level"]).sum() >= 10
    pd.testing.assert_series_equal(after["enclosure_level"], before["enclosure_level"])
    rebuilt, _ = build_tasks([replace(inputs, osm_aois=greyed)], config=PERCEPTION)
    dims = rebuilt["meta"].map(lambda m: json.loads(m)["dimension"])
    base_dims = baseline["meta"].map(lambda m: json.loads(m)["dimension"])
    assert (
        not rebuilt[dims == "greenery"]
        .reset_index(drop=True)
        .equals(baseline[base_dims == "greenery"].reset_index(drop=True))
    )
    pd.testing.assert_frame_equal(
        rebuilt[dims == "enclosure"].reset_index(drop=True), baseline[base_dims == "enclosure"].reset_index(drop=True)
    )


def test_enclosure_follows_the_buildings_of_the_layout(bench):
    # the grid city has more and taller buildings towards the east
    measures = perception_measures(bench.train.inputs).set_index("image_id")
    lon = bench.train.images.set_index("image_id")["lon"].reindex(measures.index)
    assert lon.corr(measures["enclosure_score"], method="spearman") > 0.5
    assert (measures["crossings_300m"] > 0).all()
    for dim in DIMENSIONS:
        shares = measures[f"{dim}_level"].value_counts(normalize=True)
        assert set(shares.index) == set(LEVELS) and shares.min() > 0.2, (dim, shares.to_dict())


def test_no_perception_records_without_the_osm_areas_table(bench):
    inputs = replace(bench.held_out.inputs, osm_aois=None)
    tasks, stats = build_tasks([inputs], config=PERCEPTION)
    assert tasks.empty
    assert stats.skipped == {"perception/no_osm_tables/farville": 1}
    assert stats.records == {"perception/perception/farville": 0}


# --- Place Pulse ---------------------------------------------------------------------------------------------------


def test_place_pulse_q_scores_match_hand_computed_values(tmp_path):
    # A beats B, A beats C, B beats C on safety:
    # W = (1, 1/2, 0), L = (0, 1/2, 1); Q_A = 10/3 (1 + (W_B + W_C)/2 + 1) = 7.5,
    # Q_B = 10/3 (1/2 + W_C - L_A + 1) = 5, Q_C = 10/3 (0 - (L_A + L_B)/2 + 1) = 2.5
    votes = pd.DataFrame(
        {
            "left_id": ["A", "C", "B", "A"],
            "right_id": ["B", "A", "C", "D"],
            "winner": ["left", "right", "left", "equal"],
            "category": ["safety", "safety", "safety", "lively"],
            "left_lat": [60.1, 60.3, 60.2, 60.1],
            "left_long": [24.1, 24.3, 24.2, 24.1],
            "right_lat": [60.2, 60.1, 60.3, 60.4],
            "right_long": [24.2, 24.1, 24.3, 24.4],
        }
    )
    path = tmp_path / "votes.csv"
    votes.to_csv(path, index=False)
    scores = load_place_pulse(path).set_index(["dimension", "image_id"])
    assert scores.loc[("safety", "A"), "q_score"] == pytest.approx(7.5)
    assert scores.loc[("safety", "B"), "q_score"] == pytest.approx(5.0)
    assert scores.loc[("safety", "C"), "q_score"] == pytest.approx(2.5)
    # a tie counts as a comparison without a win or a loss: Q = 10/3 (0 + 0 - 0 + 1)
    assert scores.loc[("lively", "D"), "q_score"] == pytest.approx(10 / 3)
    assert scores.loc[("lively", "D"), "ties"] == 1
    assert scores.loc[("safety", "C"), "lat"] == pytest.approx(60.3)
    levels = place_pulse_levels(scores.reset_index()).set_index(["dimension", "image_id"])
    assert levels.loc[("safety", "A"), "level"] == "high" and levels.loc[("safety", "C"), "level"] == "low"


def test_place_pulse_rejects_bad_votes(tmp_path):
    base = {"left_id": ["A"], "right_id": ["B"], "winner": ["left"], "category": ["safety"]}
    with pytest.raises(BenchmarkInputError, match="unknown category"):
        load_place_pulse(pd.DataFrame({**base, "category": ["vibes"]}))
    with pytest.raises(BenchmarkInputError, match="unknown winner"):
        load_place_pulse(pd.DataFrame({**base, "winner": ["both"]}))
    with pytest.raises(BenchmarkInputError, match="compare an image with itself"):
        load_place_pulse(pd.DataFrame({**base, "right_id": ["A"]}))
    with pytest.raises(BenchmarkInputError, match=r"missing column\(s\) \['winner'\]"):
        load_place_pulse(pd.DataFrame({k: v for k, v in base.items() if k != "winner"}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_place_pulse(tmp_path / "nope.csv")


def test_place_pulse_repeated_pairs_min_comparisons_and_right_side_coordinates():
    # A and B meet three times (A wins twice, B once); C is seen once, only on the right, with its coordinates there
    votes = pd.DataFrame(
        {
            "left_id": ["A", "B", "A", "A"],
            "right_id": ["B", "A", "B", "C"],
            "winner": ["left", "left", "left", "right"],
            "category": ["beautiful"] * 4,
            "left_lat": [60.1, 60.2, 60.1, 60.1],
            "left_long": [24.1, 24.2, 24.1, 24.1],
            "right_lat": [60.2, 60.1, 60.2, 60.9],
            "right_long": [24.2, 24.1, 24.2, 24.9],
        }
    )
    every = load_place_pulse(votes).set_index("image_id")
    # every repeat is its own comparison: A 2 wins, 2 losses in 4 (B once, C once); B 1 win in 3; C 1 win in 1
    assert every.loc[["A", "B", "C"], ["wins", "losses", "n_comparisons"]].to_numpy().tolist() == [
        [2, 2, 4],
        [1, 2, 3],
        [1, 0, 1],
    ]
    assert (every.loc["C", "lat"], every.loc["C", "lon"]) == (60.9, 24.9)
    # W = (1/2, 1/3, 1), L = (1/2, 2/3, 0): Q_A = 10/3 (1/2 + W_B - (L_B + L_C)/2 + 1), A beat B twice, lost to B
    # and C once each
    w_a, w_b, l_b, l_c = 0.5, 1 / 3, 2 / 3, 0.0
    assert every.loc["A", "q_score"] == pytest.approx(10 / 3 * (w_a + (w_b + w_b) / 2 - (l_b + l_c) / 2 + 1))
    kept = load_place_pulse(votes, min_comparisons=3)
    assert sorted(kept["image_id"]) == ["A", "B"]  # C, compared once, is too uncertain to keep
