"""The tag mapping: first match wins, names, addresses and heights."""

from __future__ import annotations

import pytest

from ugdata_pipeline.osm import tags


@pytest.mark.parametrize(
    ("osm", "expected"),
    [
        ({"amenity": "school", "building": "yes"}, ("education", "amenity=school")),
        ({"amenity": "cafe", "shop": "coffee"}, ("food", "amenity=cafe")),
        ({"shop": "bakery", "building": "retail"}, ("commercial", "shop=bakery")),
        ({"leisure": "park"}, ("park", "leisure=park")),
        ({"landuse": "grass"}, ("green", "landuse=grass")),
        ({"landuse": "residential"}, ("landuse", "landuse=residential")),
        ({"building": "church"}, ("religious", "building=church")),
        ({"building": "yes"}, ("building", "building=yes")),
        ({"amenity": "no", "building": "yes"}, ("building", "building=yes")),
        ({"highway": "primary"}, None),
    ],
)
def test_place_category(osm, expected):
    assert tags.place_category(osm) == expected


def test_street_category_is_from_highway_only():
    assert tags.street_category("primary") == "major_road"
    assert tags.street_category("footway") == "pedestrian"
    assert tags.street_category("proposed") is None
    assert tags.street_category(None) is None


def test_names_addresses_heights():
    assert tags.first_name({"official_name": " Official ", "alt_name": "Alt"}) == "Official"
    assert tags.first_name({"name": "  "}) is None
    assert tags.address({"addr:street": "Mannerheimintie", "addr:housenumber": "5"}) == "Mannerheimintie 5"
    assert tags.address({"addr:housenumber": "5"}) is None
    assert tags.height_m({"height": "12 m"}) == 12.0
    assert tags.height_m({"height": "12,5"}) == 12.5
    assert tags.height_m({"building:levels": "4"}) == pytest.approx(12.8)
    assert tags.height_m({"height": "tall"}) is None
    assert tags.height_m({}) is None
