"""The city registry: the shipped file, and every bad input rejected with a message naming city and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugdata_pipeline.cities import bbox_area_km2, load_registry
from ugdata_pipeline.errors import CityConfigError, OsmSourceError, UnknownCityError
from ugdata_pipeline.osm.source_check import check_source
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
        (
            "cities: {town: {name: T, country: F, split: test, source: {kind: place, query: x}}}",
            "city 'town': split 'test' is unknown; use one of train, held_out",
        ),
        (
            "cities: {town: {name: T, split: train, source: {kind: place, query: x}}}",
            "city 'town': country must be a non-empty string",
        ),
        (
            "cities: {Town: {name: T, country: F, split: train, source: {kind: place, query: x}}}",
            "city slug 'Town' must be lower-case",
        ),
        ("cities: {}", "lists no cities"),
        ("just text", "must be a mapping with a 'cities' mapping"),
        ("cities: [", "is not valid YAML"),
    ],
)
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


KARHULA = "kind: bundled, extract: test.osm.pbf"  # header bbox 26.93, 60.52, 26.97, 60.54 (4.9 km²)


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        ("[26.94, 60.525, 26.96]", r"city 'town': source.clip must be \[west, south, east, north\] in degrees"),
        ("26.94", r"city 'town': source.clip must be \[west, south, east, north\] in degrees"),
        ("[a, b, c, d]", r"city 'town': source.clip must hold four numbers"),
        ("[26.96, 60.525, 26.94, 60.535]", r"city 'town': source.clip .* is inverted .* \[west, south, east, north\]"),
        ("[26.94, 60.535, 26.96, 60.525]", r"city 'town': source.clip .* is inverted"),
        ("[26.94, 60.525, 26.94, 60.535]", r"city 'town': source.clip .* is degenerate"),
        ("[26.94, 95, 26.96, 96]", r"city 'town': source.clip .* is outside \[-180, 180\] x \[-90, 90\]"),
    ],
)
def test_bad_clips_are_rejected_at_load(write_registry, clip, message):
    with pytest.raises(CityConfigError, match=message):
        load_registry(write_registry(CITY.format(source=f"{{{KARHULA}, clip: {clip}}}")))


def test_clip_over_the_area_limit_is_rejected_at_load(write_registry):
    text = CITY.format(source=f"{{{KARHULA}, clip: [26.93, 60.52, 26.97, 60.54]}}") + "    max_area_km2: 1\n"
    with pytest.raises(CityConfigError, match=r"city 'town': source.clip covers 5 km², over the limit of 1 km²"):
        load_registry(write_registry(text))


def test_clip_on_an_online_source_is_rejected(write_registry):
    text = CITY.format(source="{kind: place, query: Kotka, clip: [26.94, 60.525, 26.96, 60.535]}")
    with pytest.raises(CityConfigError, match=r"city 'town': source.clip applies to bundled and file sources only"):
        load_registry(write_registry(text))


@pytest.mark.parametrize(
    "clip", ["[26.90, 60.525, 26.95, 60.535]", "[26.94, 60.53, 26.96, 60.55]", "[14.498, 35.886, 14.52, 35.904]"]
)
def test_clip_outside_the_extent_is_refused_before_reading(write_registry, clip):
    registry = load_registry(write_registry(CITY.format(source=f"{{{KARHULA}, clip: {clip}}}")))
    with pytest.raises(
        OsmSourceError,
        match=r"city 'town': source.clip \[.*\] is not inside the extent of "
        r"test.osm.pbf \[26.93, 60.52, 26.97, 60.54\]",
    ):
        check_source(registry.get("town"))


def test_area_limit_applies_to_the_clip_not_the_file(write_registry):
    # the whole Karhula file (4.9 km²) is over a 1 km² limit (test_extract_over_the_area_limit); a clip is not
    text = CITY.format(source=f"{{{KARHULA}, clip: [26.94, 60.525, 26.95, 60.53]}}") + "    max_area_km2: 1\n"
    town = load_registry(write_registry(text)).get("town")
    assert town.source.clip == (26.94, 60.525, 26.95, 60.53)
    assert bbox_area_km2(town.source.clip) < 1
    check_source(town)


def test_study_registry():
    root = Path(__file__).resolve().parent.parent
    registry = load_registry(root / "cities-study.yaml")
    assert registry.offline_slugs() == registry.slugs() == ["vancouver", "ankara", "valletta", "karhula"]
    assert [c.slug for c in registry if c.split == "train"] == ["vancouver"]
    files = {c.slug: c.source.path for c in registry}
    assert files["vancouver"] == root / "extracts" / "vancouver-2015.osm.pbf"
    assert files["ankara"] == root / "extracts" / "ankara-centre-2019.osm.pbf"
    assert files["valletta"] == root / "extracts" / "malta-2018.osm.pbf"
    assert registry.get("karhula").source.path.name == "test.osm.pbf"
    for city in registry:
        check_source(city)  # files present and OSM, clips inside the files' extents
        if city.slug != "karhula":
            assert 2 <= bbox_area_km2(city.source.clip) <= 10
    readme = (root / "extracts" / "README.md").read_text(encoding="utf-8")
    for required in (
        "© OpenStreetMap contributors",
        "ODbL",
        "https://www.openstreetmap.org/copyright",
        "https://opendatacommons.org/licenses/odbl/",
    ):
        assert required in readme  # the licence requires the attribution next to the data


TWO_HELSINKIS = """\
cities:
  helsinki:
    name: Helsinki
    country: Finland
    split: train
    source: {kind: bundled, extract: Helsinki.osm.pbf}
  karhula:
    name: Karhula
    country: Finland
    split: held_out
    source: {kind: bundled, extract: test.osm.pbf}
  helsinki:
    name: Helsinki again
    country: Finland
    split: held_out
    source: {kind: bundled, extract: test.osm.pbf}
"""


def test_duplicate_city_slug_is_rejected(write_registry):
    # YAML loaders keep the last of two equal keys: the second helsinki used to replace the first silently
    with pytest.raises(
        CityConfigError,
        match=r"cities.yaml: city 'helsinki' is listed twice \(lines 2 and 12\); "
        r"each slug must be unique: remove one entry or rename its slug",
    ):
        load_registry(write_registry(TWO_HELSINKIS))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "settings: {max_area_km2: 5}\nsettings: {max_area_km2: 9}\n"
            + CITY.format(source="{kind: place, query: x}"),
            r"cities.yaml: top-level key 'settings' is given twice \(lines 1 and 2\); keep one",
        ),
        (
            "cities: {town: {name: T, name: U, country: F, split: train, source: {kind: place, query: x}}}",
            r"cities.yaml: city 'town': key 'name' is given twice \(lines 1 and 1\); keep one",
        ),
        (
            CITY.format(source="{kind: bbox, bbox: [24.9, 60.1, 25.0, 60.2], kind: place}"),
            r"cities.yaml: city 'town': source: key 'kind' is given twice \(lines 7 and 7\); keep one",
        ),
    ],
)
def test_duplicate_keys_are_rejected(write_registry, text, message):
    with pytest.raises(CityConfigError, match=message):
        load_registry(write_registry(text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "setings: {max_area_km2: 5}\n" + CITY.format(source="{kind: place, query: x}"),
            r"cities.yaml: unknown top-level key 'setings'; did you mean 'settings'\?",
        ),
        (
            "settings: {max_area: 5}\n" + CITY.format(source="{kind: place, query: x}"),
            r"cities.yaml: settings: unknown key 'max_area'; did you mean 'max_area_km2'\?",
        ),
        (
            CITY.format(source="{kind: place, query: x}") + "    spilt: held_out\n",
            r"cities.yaml: city 'town': unknown key 'spilt'; did you mean 'split'\?",
        ),
        (
            CITY.format(source="{kind: place, query: x}") + "    max_area_km: 5\n",
            r"cities.yaml: city 'town': unknown key 'max_area_km'; did you mean 'max_area_km2'\?",
        ),
        (
            CITY.format(source="{kind: place, query: x}") + "    population: 5\n",
            r"cities.yaml: city 'town': unknown key 'population'; valid keys: country, imagery, max_area_km2, name, "
            r"shard_size_m, source, split",
        ),
        (
            CITY.format(source="{kind: bundled, extrakt: test.osm.pbf}"),
            r"cities.yaml: city 'town': source: unknown key 'extrakt' for a bundled source; did you mean 'extract'\?",
        ),
        (
            CITY.format(source="{kind: file, path: x.osm.pbf, query: Kotka}"),
            r"cities.yaml: city 'town': source: unknown key 'query' for a file source; valid keys: clip, kind, path",
        ),
        (
            CITY.format(source="{kind: place, query: x}") + "    imagery: {spacing: 20}\n",
            r"cities.yaml: city 'town': imagery: unknown key 'spacing'; did you mean 'spacing_m'\?",
        ),
    ],
)
def test_unknown_keys_are_rejected_at_every_level(write_registry, text, message):
    with pytest.raises(CityConfigError, match=message):
        load_registry(write_registry(text))


@pytest.mark.parametrize("field", ["bbox", "clip"])
def test_swapped_bbox_is_named_at_load(write_registry, field):
    # Beijing as [south, west, north, east]: 116 is no latitude, while [116.3, 39.86, ...] is a valid box
    box = "[39.86, 116.30, 39.99, 116.48]"
    source = f"{{kind: bbox, bbox: {box}}}" if field == "bbox" else f"{{{KARHULA}, clip: {box}}}"
    text = CITY.format(source=source) + "    max_area_km2: 1000\n"
    with pytest.raises(
        CityConfigError,
        match=rf"cities.yaml: city 'town': source.{field} \[39.86, 116.3, 39.99, "
        r"116.48\] is outside \[-180, 180\] x \[-90, 90\]; it looks like "
        r"\[south, west, north, east\] \(latitude first\): give "
        r"\[116.3, 39.86, 116.48, 39.99\]",
    ):
        load_registry(write_registry(text))


def test_swapped_clip_inside_the_file_extent_is_named(write_registry):
    # both orders are valid degrees here (Karhula lies below 90 E), so only the file's extent tells them apart
    registry = load_registry(write_registry(CITY.format(source=f"{{{KARHULA}, clip: [60.525, 26.94, 60.535, 26.96]}}")))
    with pytest.raises(
        OsmSourceError,
        match=r"city 'town': source.clip \[60.525, 26.94, 60.535, 26.96\] is not "
        r"inside the extent of test.osm.pbf .*; it looks like \[south, west, "
        r"north, east\]: give \[26.94, 60.525, 26.96, 60.535\]",
    ):
        check_source(registry.get("town"))


def test_the_registry_imports_nothing_of_the_osm_package() -> None:
    # dependencies run one way: osm uses the registry, never the other way round, not even inside a function
    import ast

    import ugdata_pipeline.cities as cities

    tree = ast.parse(Path(cities.__file__).read_text(encoding="utf-8"))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert [name for name in imported if name and name.startswith("ugdata_pipeline.osm")] == []


def test_shard_size_comes_from_the_city_then_the_settings_then_the_default(write_registry):
    town = CITY.format(source="{kind: place, query: x}")
    assert load_registry(write_registry(town)).get("town").shard_size_m == 2000.0
    settings = "settings: {shard_size_m: 750}\n"
    assert load_registry(write_registry(settings + town)).get("town").shard_size_m == 750.0
    own = settings + town + "    shard_size_m: 1500\n"
    assert load_registry(write_registry(own)).get("town").shard_size_m == 1500.0
    assert load_registry().get("helsinki").shard_size_m == 1000.0  # the shipped registry's setting


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "    shard_size_m: 0\n",
            r"city 'town': shard_size_m must be a positive number, got 0 \(e.g. 2000 \(metres\)\)",
        ),
        ("    shard_size_m: big\n", r"city 'town': shard_size_m must be a positive number, got 'big'"),
        ("    shard_size_m: .inf\n", r"shard_size_m must be a positive number, got inf"),
    ],
)
def test_a_bad_shard_size_is_named(write_registry, extra, message):
    with pytest.raises(CityConfigError, match=message):
        load_registry(write_registry(CITY.format(source="{kind: place, query: x}") + extra))
    with pytest.raises(CityConfigError, match=r"settings.shard_size_m must be a positive number, got -1"):
        load_registry(write_registry("settings: {shard_size_m: -1}\n" + CITY.format(source="{kind: place, query: x}")))
