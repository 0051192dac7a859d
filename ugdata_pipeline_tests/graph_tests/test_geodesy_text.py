"""Geodesic distance/bearing and the compass and distance words: hand-worked cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ugdata_pipeline.graph.geodesy import bearing_deg, distance_bearing, distance_m, normalize_bearing_deg
from ugdata_pipeline.graph.text import (
    COMPASS_WORDS,
    compass_word,
    distance_band,
    distance_phrase,
    render_node_text,
)

lats = st.floats(min_value=-85, max_value=85, allow_nan=False)
lons = st.floats(min_value=-180, max_value=180, allow_nan=False)


def test_due_east_and_north():
    assert bearing_deg(0.0, 0.0, 0.0, 1.0) == pytest.approx(90.0)
    assert bearing_deg(60.0, 25.0, 60.001, 25.0) == pytest.approx(0.0, abs=1e-9)
    assert bearing_deg(60.0, 25.0, 59.999, 25.0) == pytest.approx(180.0)


def test_a_thousandth_of_a_degree_of_latitude_is_about_111_m():
    assert distance_m(60.0, 25.0, 60.001, 25.0) == pytest.approx(111.4, abs=0.2)
    assert distance_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111_319.5, abs=1)


def test_vectorised_matches_scalar():
    d, b = distance_bearing([60.0, 60.0], [25.0, 25.0], [60.001, 60.0], [25.0, 25.001])
    assert d.tolist() == pytest.approx([distance_m(60.0, 25.0, 60.001, 25.0), distance_m(60.0, 25.0, 60.0, 25.001)])
    assert b.tolist() == pytest.approx([0.0, 90.0], abs=0.01)


def test_normalize_never_returns_360():
    assert normalize_bearing_deg(-1e-15) == 0.0
    assert normalize_bearing_deg(-90.0) == 270.0
    assert normalize_bearing_deg(720.0) == 0.0


@given(lats, lons, lats, lons)
def test_distance_symmetric_and_non_negative(lat1, lon1, lat2, lon2):
    d12 = distance_m(lat1, lon1, lat2, lon2)
    d21 = distance_m(lat2, lon2, lat1, lon1)
    assert d12 >= 0
    assert d12 == pytest.approx(d21, rel=1e-9, abs=1e-6)


@given(lats, lons, lats, lons)
def test_bearing_in_range(lat1, lon1, lat2, lon2):
    b = bearing_deg(lat1, lon1, lat2, lon2)
    assert 0 <= b < 360


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_compass_word_consistent_with_bearing(bearing):
    word = compass_word(bearing)
    centre = COMPASS_WORDS.index(word) * 45.0
    wrapped = float(normalize_bearing_deg(bearing))
    gap = min(abs(wrapped - centre), 360 - abs(wrapped - centre))
    assert gap <= 22.5 + 1e-9


@pytest.mark.parametrize(
    ("bearing", "word"),
    [
        (0, "north"),
        (22.4, "north"),
        (22.5, "north-east"),
        (45, "north-east"),
        (90, "east"),
        (135, "south-east"),
        (180, "south"),
        (225, "south-west"),
        (270, "west"),
        (315, "north-west"),
        (337.6, "north"),
        (359.99, "north"),
        (-45, "north-west"),
    ],
)
def test_compass_words(bearing, word):
    assert compass_word(bearing) == word


@pytest.mark.parametrize(
    ("d", "text"),
    [(0, "0 m"), (8.4, "8 m"), (99.4, "99 m"), (123, "120 m"), (994, "990 m"), (996, "1.0 km"), (1260, "1.3 km")],
)
def test_distance_phrase(d, text):
    assert distance_phrase(d) == text


def test_distance_phrase_rejects_bad_values():
    with pytest.raises(ValueError, match="distance_m must be a finite number >= 0"):
        distance_phrase(-1)
    with pytest.raises(ValueError, match="finite"):
        distance_phrase(math.inf)


def test_distance_band():
    assert [distance_band(d) for d in (10, 120, 300, 900)] == [
        "right next to",
        "close to",
        "a short walk from",
        "far from",
    ]


def test_node_text_layout_and_missing_fields():
    text = render_node_text(
        {"node_id": "poi:n1", "name": "Cafe", "category": "food", "address": None, "lon": 24.9, "lat": 60.1},
        city="Helsinki",
        country="Finland",
    )
    assert text == (
        "Name: Cafe, ID: poi:n1, Category: food, City: Helsinki, Country: Finland, Coordinates: (24.900000, 60.100000)"
    )
    missing = render_node_text({"node_id": "x", "name": "X", "lon": np.nan, "lat": 1.0}, city="C", country="K")
    assert missing.endswith("Coordinates: unavailable")
