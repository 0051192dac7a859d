"""The city registry: the shipped file, and every bad input rejected with a message naming city and field."""

from __future__ import annotations

import pytest

from ugdata_pipeline.cities import check_source, load_registry
from ugdata_pipeline.errors import CityConfigError, OsmSourceError, UnknownCityError
from ugdata_pipeline_tests.tiny_city import write_tiny_city

CITY = """
cities:
  town:
    name: Town
    country: Finland
    split: train
    source: {source}
"""


def test_shipped_registry():
    registry = load_registry()
    assert registry.offline_slugs() == ["helsinki", "karhula"]
    assert {"singapore", "new_york", "paris", "beijing"} <= set(registry.slugs())
    helsinki, karhula = registry.get("helsinki"), registry.get("karhula")
    assert (helsinki.split, karhula.split) == ("train", "held_out")
    assert helsinki.source.path.name == "Helsinki.osm.pbf"
    assert karhula.source.path.name == "test.osm.pbf"
    assert registry.get("paris").country == "France"
    assert registry.get("paris").source.requires_network
    for city in registry:
        check_source(city)  # bundled files exist and are OSM; online ones are checked when geocoded


def test_registry_path_from_environment(write_registry, monkeypatch, tmp_path):
    osm = write_tiny_city(tmp_path)
    path = write_registry(CITY.format(source=f"{{kind: file, path: {osm.name}}}"))
    monkeypatch.setenv("UGDATA_CITIES", str(path))
    registry = load_registry()
    assert registry.slugs() == ["town"]
    assert registry.get("town").source.path == osm  # relative to the YAML file
    check_source(registry.get("town"))


def test_unknown_city_lists_the_known_ones():
    with pytest.raises(UnknownCityError, match=r"unknown city 'atlantis'.*known cities: helsinki, karhula"):
        load_registry().get("atlantis")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{kind: ftp, url: x}", r"city 'town': source.kind 'ftp' is unknown; use one of bundled, file, place, bbox"),
        ("{kind: bbox, bbox: [24.9, 60.1, 24.9, 60.2]}", r"city 'town': source.bbox .* is degenerate"),
        ("{kind: bbox, bbox: [25.0, 60.1, 24.9, 60.2]}", r"city 'town': source.bbox .* is inverted"),
        ("{kind: bbox, bbox: [24.0, 60.0, 26.0, 61.0]}", r"city 'town': source.bbox covers [\d,]+ km², over the limit"),
        ("{kind: bbox, bbox: [1, 2, 3]}", r"city 'town': source.bbox must be \[west, south, east, north\]"),
        ("{kind: bbox, bbox: [0, 95, 1, 96]}", r"city 'town': source.bbox .* is outside"),
        ("{kind: place}", r"city 'town': source.query must be a place name"),
        ("{kind: file}", r"city 'town': source.path must be a path"),
        ("{kind: bundled, extract: ''}", r"city 'town': source.extract must name a bundled extract"),
        ("nowhere", r"city 'town': source must be a mapping"),
    ],
)
def test_bad_sources_are_rejected_at_load(write_registry, source, message):
    with pytest.raises(CityConfigError, match=message):
        load_registry(write_registry(CITY.format(source=source)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cities: {town: {name: T, country: F, split: test, source: {kind: place, query: x}}}",
         "city 'town': split 'test' is unknown; use one of train, held_out"),
        ("cities: {town: {name: T, split: train, source: {kind: place, query: x}}}",
         "city 'town': country must be a non-empty string"),
        ("cities: {Town: {name: T, country: F, split: train, source: {kind: place, query: x}}}",
         "city slug 'Town' must be lower-case"),
        ("cities: {}", "lists no cities"),
        ("just text", "must be a mapping with a 'cities' mapping"),
        ("cities: [", "is not valid YAML"),
    ],
)  # fmt: skip
def test_bad_entries_are_rejected_at_load(write_registry, text, message):
    with pytest.raises(CityConfigError, match=message):
        load_registry(write_registry(text))


def test_missing_registry_file_names_the_variable(tmp_path):
    with pytest.raises(CityConfigError, match=r"set UGDATA_CITIES"):
        load_registry(tmp_path / "absent.yaml")


def test_missing_file_source(write_registry):
    registry = load_registry(write_registry(CITY.format(source="{kind: file, path: gone.osm.pbf}")))
    with pytest.raises(OsmSourceError, match=r"city 'town': source.path '.*gone.osm.pbf' does not exist"):
        check_source(registry.get("town"))


def test_unreadable_file_source(write_registry, tmp_path):
    folder = tmp_path / "folder.osm"
    folder.mkdir()
    registry = load_registry(write_registry(CITY.format(source="{kind: file, path: folder.osm}")))
    with pytest.raises(OsmSourceError, match=r"city 'town': source.path .* is not a readable file"):
        check_source(registry.get("town"))


def test_file_that_is_not_osm(write_registry, tmp_path):
    (tmp_path / "notes.osm.pbf").write_bytes(b"these are not the blobs you are looking for" * 10)
    registry = load_registry(write_registry(CITY.format(source="{kind: file, path: notes.osm.pbf}")))
    with pytest.raises(OsmSourceError, match=r"city 'town': source.path: .* is not a readable OSM file"):
        check_source(registry.get("town"))


def test_extract_over_the_area_limit(write_registry):
    text = CITY.format(source="{kind: bundled, extract: test.osm.pbf}") + "    max_area_km2: 1\n"
    registry = load_registry(write_registry(text))
    with pytest.raises(OsmSourceError, match=r"city 'town': source.extract covers \d+ km², over the limit of 1 km²"):
        check_source(registry.get("town"))
