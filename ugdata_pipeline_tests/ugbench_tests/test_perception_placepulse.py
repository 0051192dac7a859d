"""Perception statements and proxy measures; Place Pulse 2.0 votes to Q-scores against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.ugbench import BenchmarkInputError, CityInputs, load_place_pulse, place_pulse_levels
from ugdata_pipeline.ugbench._records import normalize_text
from ugdata_pipeline.ugbench.perception import DIMENSIONS, LEVELS, STATEMENTS, perception_measures, plausible_levels


def test_statements_cover_every_dimension_and_level_with_unique_similar_phrasings():
    assert set(STATEMENTS) == {(d, lv) for d in DIMENSIONS for lv in LEVELS}
    texts = [s for phrasings in STATEMENTS.values() for s in phrasings]
    assert all(len(p) == 4 for p in STATEMENTS.values())
    assert len({normalize_text(t) for t in texts}) == len(texts) == 60
    lengths = np.array([len(t) for t in texts])
    assert lengths.max() / lengths.min() < 2.0
    # no level is systematically longer than another (form gives nothing away)
    by_level = {lv: np.mean([len(s) for (d, l2), ps in STATEMENTS.items() if l2 == lv for s in ps]) for lv in LEVELS}
    assert max(by_level.values()) - min(by_level.values()) < 4.0


def test_plausible_levels_mark_the_tercile_boundaries():
    assert plausible_levels(0.10) == {"low"}
    assert plausible_levels(0.32) == {"low", "mid"}
    assert plausible_levels(0.50) == {"mid"}
    assert plausible_levels(0.68) == {"mid", "high"}
    assert plausible_levels(0.95) == {"high"}


def test_measures_follow_the_layout(bench):
    measures = perception_measures(bench.train.inputs).set_index("image_id")
    facts = bench.train.images.set_index("image_id")["scene_facts"].map(json.loads)
    green = facts.map(lambda f: f["green_fraction"]).reindex(measures.index)
    # greener images rank higher on greenery; sky is the sky fraction's own rank
    assert np.corrcoef(green, measures["greenery_score"])[0, 1] > 0.5
    sky = facts.map(lambda f: f["sky_fraction"]).reindex(measures.index)
    assert (measures["sky_pct"].rank() == sky.rank()).all()
    assert (measures["crossings_300m"] > 0).all()
    assert set(measures["commercial_level"].dropna()) <= set(LEVELS)


def test_missing_scene_facts_leave_those_dimensions_unmeasured(bench):
    inputs = bench.held_out.inputs
    blank = inputs.images.assign(scene_facts="{}")
    measures = perception_measures(CityInputs(**{**{f: getattr(inputs, f) for f in CityInputs.__slots__},
                                                 "images": blank}))  # fmt: skip
    assert measures["sky_level"].isna().all() and measures["enclosure_level"].isna().all()
    assert measures["commercial_level"].notna().all()


def test_place_pulse_q_scores_match_hand_computed_values(tmp_path):
    # A beats B, A beats C, B beats C on safety:
    # W = (1, 1/2, 0), L = (0, 1/2, 1); Q_A = 10/3 (1 + (W_B + W_C)/2 + 1) = 7.5,
    # Q_B = 10/3 (1/2 + W_C - L_A + 1) = 5, Q_C = 10/3 (0 - (L_A + L_B)/2 + 1) = 2.5
    votes = pd.DataFrame({
        "left_id": ["A", "C", "B", "A"], "right_id": ["B", "A", "C", "D"], "winner": ["left", "right", "left", "equal"],
        "category": ["safety", "safety", "safety", "lively"], "left_lat": [60.1, 60.3, 60.2, 60.1],
        "left_long": [24.1, 24.3, 24.2, 24.1], "right_lat": [60.2, 60.1, 60.3, 60.4],
        "right_long": [24.2, 24.1, 24.3, 24.4],
    })  # fmt: skip
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
