"""Grid cities built in code, large enough for UGBench's exchangeable groups of 20, with known layouts.

A city is an ``nx`` x ``ny`` grid of streets 100 m apart (local metres, UTM 35N near Helsinki, as in
``tiny_city``; ``offset_x_m`` shifts a second city far away): horizontal "<word> Street" at y = 100 j, vertical
"<word> Avenue" at x = 100 i, every street with its own word. The default 16 x 12 grid spans 1.5 x 1.1 km, so
any two of its images lie within the 2 km group band, and its 28 streets give the 20 distinct answers a
``which_street`` group needs.

* **Places** (graph and ``osm_pois``): one named POI per block, its category cycling through food, shops and
  schools (every name unique in the city), plus two named parks (also ``osm_aois``).
* **Images**: on every other street segment, 4 m off the street and 8..20 m from the segment's middle (so the
  nearer crossing is always clearly nearer); ``scene_facts`` are synthetic.
* **Perception tables** (``osm_aois``, ``osm_pois``, ``osm_trees``), seeded and varied over the city: unnamed
  buildings (more and taller towards the east), unnamed grass patches, extra unnamed shops in the north, and
  single trees, none of them in the graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ugdata_pipeline.context.subgraph import build_subgraphs
from ugdata_pipeline.graph.build import UrbanGraph, build_urban_graph
from ugdata_pipeline.imagery.anchor import anchor_images
from ugdata_pipeline.osm.schema import AOI_COLUMNS, POI_COLUMNS, TREE_COLUMNS, OsmExtract, frame
from ugdata_pipeline.ugbench import CityInputs
from ugdata_pipeline_tests.tiny_city import lonlat, street_table

WORDS = (
    "Alder",
    "Birch",
    "Cedar",
    "Dune",
    "Elm",
    "Fir",
    "Grove",
    "Hazel",
    "Iris",
    "Juniper",
    "Kestrel",
    "Linden",
    "Maple",
    "Nettle",
    "Oak",
    "Poplar",
    "Quartz",
    "Rowan",
    "Spruce",
    "Thistle",
    "Umber",
    "Violet",
    "Willow",
    "Yarrow",
    "Aspen",
    "Bramble",
    "Clover",
    "Daisy",
    "Ember",
    "Fern",
    "Heather",
    "Ivy",
    "Laurel",
    "Myrtle",
)
ADJECTIVES = (
    "Blue",
    "Golden",
    "Quiet",
    "Red",
    "Silver",
    "Little",
    "Grand",
    "Old",
    "New",
    "Bright",
    "Velvet",
    "Amber",
    "Copper",
    "Crimson",
    "Misty",
)
NOUNS = (
    "Lantern",
    "Harbor",
    "Corner",
    "Anchor",
    "Crown",
    "Bridge",
    "Mill",
    "Feather",
    "Compass",
    "Stone",
    "Orchard",
    "Kettle",
    "Falcon",
    "Meadow",
    "Ribbon",
)
#: POI categories cycled over the blocks (all asked about by ``nearest_poi``).
CATEGORIES = (("food", "amenity=cafe"), ("commercial", "shop=books"), ("education", "amenity=school"))
PARKS = (((110, 110), (190, 290), "Hill Park"), ((910, 310), (1090, 390), "River Gardens"))


@dataclass(slots=True)
class BenchCity:
    """A built grid city: graph, anchored images, subgraph tables, OSM tables and the benchmark inputs."""

    graph: UrbanGraph
    images: pd.DataFrame
    subgraph_nodes: pd.DataFrame
    subgraph_edges: pd.DataFrame
    inputs: CityInputs
    subgraphs: pd.DataFrame  # the per-image summary of the subgraph build


def _rect(offset_x_m: float, x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.Polygon(
        [
            lonlat(offset_x_m + x0, y0),
            lonlat(offset_x_m + x1, y0),
            lonlat(offset_x_m + x1, y1),
            lonlat(offset_x_m + x0, y1),
        ]
    )


def street_names(nx: int, ny: int, word_shift: int) -> tuple[list[str], list[str]]:
    """``(horizontal street names by j, vertical avenue names by i)``, every one with its own word."""
    if nx + ny > len(WORDS):
        msg = f"a {nx} x {ny} grid needs {nx + ny} street words, only {len(WORDS)} are defined"
        raise ValueError(msg)
    words = [WORDS[(k + word_shift) % len(WORDS)] for k in range(nx + ny)]
    return [f"{w} Street" for w in words[:ny]], [f"{w} Avenue" for w in words[ny:]]


def _extract(nx: int, ny: int, offset_x_m: float, seed: int, word_shift: int) -> OsmExtract:
    horizontal, vertical = street_names(nx, ny, word_shift)
    ways = []
    for j in range(ny):
        ids = [100_000 * (word_shift + 1) + 100 * i + j for i in range(nx)]
        ways.append(
            (len(ways) + 1, horizontal[j], "residential", ids, [(offset_x_m + 100 * i, 100 * j) for i in range(nx)])
        )
    for i in range(nx):
        ids = [100_000 * (word_shift + 1) + 100 * i + j for j in range(ny)]
        ways.append((len(ways) + 1, vertical[i], "tertiary", ids, [(offset_x_m + 100 * i, 100 * j) for j in range(ny)]))
    rng = np.random.default_rng(seed)
    pois: dict[str, list] = {c: [] for c in POI_COLUMNS}
    points = []
    for n, (i, j) in enumerate((i, j) for i in range(nx - 1) for j in range(ny - 1)):
        category, tag = CATEGORIES[n % len(CATEGORIES)]
        k = (n + 7 * word_shift) % (len(ADJECTIVES) * len(NOUNS))  # unique within the city
        pois["osm_id"].append(f"n{seed * 10_000 + n}")
        pois["name"].append(f"{ADJECTIVES[k % len(ADJECTIVES)]} {NOUNS[k // len(ADJECTIVES)]}")
        pois["category"].append(category)
        pois["tag"].append(tag)
        pois["address"].append(None)
        pois["height_m"].append(None)
        x, y = 100 * i + rng.uniform(20, 80), 100 * j + rng.uniform(20, 80)
        points.append(shapely.Point(lonlat(offset_x_m + x, y)))
    aoi_rows: dict[str, list] = {c: [] for c in AOI_COLUMNS}
    for k, (_, _, name) in enumerate(PARKS):
        aoi_rows["osm_id"].append(f"w{seed * 1000 + k}")
        aoi_rows["name"].append(f"{name} {word_shift}" if word_shift else name)
        aoi_rows["category"].append("park")
        aoi_rows["tag"].append("leisure=park")
        aoi_rows["address"].append(None)
        aoi_rows["height_m"].append(None)
        aoi_rows["is_building"].append(False)
    polygons = [_rect(offset_x_m, x0, y0, x1, y1) for (x0, y0), (x1, y1), _ in PARKS]
    return OsmExtract(
        streets=street_table(ways),
        pois=frame(pois, POI_COLUMNS, points),
        aois=frame(aoi_rows, AOI_COLUMNS, polygons),
        source="ugbench grid city (test)",
    )


def perception_tables(
    extract: OsmExtract, nx: int, ny: int, offset_x_m: float, seed: int
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """``(osm_aois, osm_pois, osm_trees)`` of a grid city: its parks and POIs plus unnamed buildings, grass, shops
    and trees that vary over the city (none of them in the graph)."""
    rng = np.random.default_rng(seed + 100)
    rows: dict[str, list] = {c: [] for c in AOI_COLUMNS}
    shapes: list[shapely.Polygon] = []

    def area(category: str, tag: str, height: float | None, building: bool, shape: shapely.Polygon) -> None:
        rows["osm_id"].append(f"w{seed * 100_000 + len(shapes) + 10}")
        for column, value in (
            ("name", None),
            ("category", category),
            ("tag", tag),
            ("address", None),
            ("height_m", height),
            ("is_building", building),
        ):
            rows[column].append(value)
        shapes.append(shape)

    for i in range(nx - 1):
        for j in range(ny - 1):
            x0, y0 = 100 * i + 12, 100 * j + 12
            for _ in range(int(rng.integers(0, 2 + (4 * i) // nx))):  # more buildings towards the east
                bx, by = x0 + rng.uniform(0, 50), y0 + rng.uniform(0, 50)
                w, h = rng.uniform(10, 26), rng.uniform(10, 26)
                area(
                    "building",
                    "building=yes",
                    float(4 + 2 * i + rng.uniform(0, 8)),
                    True,
                    _rect(offset_x_m, bx, by, bx + w, by + h),
                )
            if rng.random() < 0.3:  # an unnamed grass patch
                gx, gy = x0 + rng.uniform(0, 40), y0 + rng.uniform(0, 40)
                area("green", "landuse=grass", None, False, _rect(offset_x_m, gx, gy, gx + 35, gy + 35))
    aois = pd.concat([extract.aois, frame(rows, AOI_COLUMNS, shapes)], ignore_index=True)
    extra: dict[str, list] = {c: [] for c in POI_COLUMNS}
    points = []
    for n in range(int(nx * ny * 0.6)):  # unnamed shops, denser towards the north
        y = 100 * (ny - 1) * np.sqrt(rng.random())
        x = rng.uniform(0, 100 * (nx - 1))
        extra["osm_id"].append(f"n{seed * 100_000 + 50_000 + n}")
        for column, value in (
            ("name", None),
            ("category", "commercial"),
            ("tag", "shop=convenience"),
            ("address", None),
            ("height_m", None),
        ):
            extra[column].append(value)
        points.append(shapely.Point(lonlat(offset_x_m + x, y)))
    pois = pd.concat([extract.pois, frame(extra, POI_COLUMNS, points)], ignore_index=True)
    tree_points = []
    for _ in range(nx * ny * 2):  # trees, denser towards the south-west
        x = 100 * (nx - 1) * rng.random() ** 2
        y = 100 * (ny - 1) * rng.random() ** 1.5
        tree_points.append(shapely.Point(lonlat(offset_x_m + x, y)))
    trees = frame(
        {"osm_id": [f"n{seed * 100_000 + 80_000 + k}" for k in range(len(tree_points))]}, TREE_COLUMNS, tree_points
    )
    return (
        gpd.GeoDataFrame(aois, geometry="geometry", crs="EPSG:4326"),
        gpd.GeoDataFrame(pois, geometry="geometry", crs="EPSG:4326"),
        trees,
    )


def _images(city: str, nx: int, ny: int, offset_x_m: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)

    def jitter() -> float:  # 8..20 m from the segment's middle: one crossing is clearly the nearer
        return float(rng.choice([-1.0, 1.0]) * rng.uniform(8, 20))

    spots = [
        (100 * i + 50 + jitter(), 100 * j + 4, f"h{i}-{j}")
        for i in range(nx - 1)
        for j in range(ny)
        if (i + j) % 2 == 0
    ]  # on horizontal streets
    spots += [
        (100 * i + 4, 100 * j + 50 + jitter(), f"v{i}-{j}")
        for i in range(nx)
        for j in range(ny - 1)
        if (i + j) % 2 == 1
    ]  # on vertical avenues
    rows = []
    for x, y, key in spots:
        green = float(rng.uniform(0.05, 0.6))
        building = float(rng.uniform(0.05, 0.8))
        lon, lat = lonlat(offset_x_m + x, y)
        image_id = f"{city}-{key}"
        rows.append(
            {
                "image_id": image_id,
                "source": "render",
                "lon": lon,
                "lat": lat,
                "compass_angle": float(rng.uniform(0, 360)),
                "captured_at": "2024-05-01T12:00:00Z",
                "sequence_id": f"{city}-seq-{key}",
                "path": f"{city}/images/{image_id}.png",
                "width": 64,
                "height": 48,
                "is_pano": False,
                "creator": "renderer",
                "scene_facts": json.dumps(
                    {
                        "visible": [],
                        "building_fraction": building,
                        "green_fraction": green,
                        "sky_fraction": float(max(0.0, 1.0 - building - 0.5 * green)),
                        "road_fraction": 0.2,
                        "tree_count": int(10 * green),
                        "mean_building_height_m": 6.0 + 20 * building,
                        "street_name": None,
                    }
                ),
                "x_m": x,
            }
        )
    return pd.DataFrame(rows)


def build_city(
    city: str,
    *,
    role: str = "train",
    nx: int = 16,
    ny: int = 12,
    offset_x_m: float = 0.0,
    seed: int = 1,
    word_shift: int = 0,
    test_from_x_m: float = 500.0,
    osm_tables: bool = True,
) -> BenchCity:
    """
    Build a grid city and its benchmark inputs.

    For ``role="train"`` images west of ``test_from_x_m - 200`` are ``train``, east of ``test_from_x_m`` are
    ``test``, the strip between is ``excluded`` (a buffer, like ``assign_splits``); for ``role="held_out"`` all are
    ``test``. ``osm_tables=False`` leaves ``osm_aois`` / ``osm_pois`` / ``osm_trees`` out (no perception records).
    """
    extract = _extract(nx, ny, offset_x_m, seed, word_shift)
    graph = build_urban_graph(extract, city_name=city.title(), country="Finland")
    raw = _images(city, nx, ny, offset_x_m, seed)
    if role == "held_out":
        raw["split"] = "test"
    else:
        raw["split"] = np.where(
            raw["x_m"] >= test_from_x_m, "test", np.where(raw["x_m"] < test_from_x_m - 200, "train", "excluded")
        )
    raw["cell"] = raw["image_id"]
    anchored = anchor_images(
        raw.drop(columns="x_m"), graph.nodes, city_name=city.title(), country="Finland", crs_metric=graph.crs_metric
    )
    nodes = pd.concat([graph.nodes, anchored.image_nodes], ignore_index=True)
    edges = pd.concat([graph.edges, anchored.image_edges], ignore_index=True)
    tables = build_subgraphs(nodes, edges, anchored.images, crs_metric=graph.crs_metric)
    aois, pois, trees = perception_tables(extract, nx, ny, offset_x_m, seed) if osm_tables else (None, None, None)
    inputs = CityInputs(
        city=city,
        role=role,
        images=anchored.images,  # type: ignore[arg-type]
        nodes=pd.DataFrame(graph.nodes.drop(columns="geometry")),
        edges=graph.edges,
        subgraph_nodes=tables.nodes,
        subgraph_edges=tables.edges,
        crs_metric=graph.crs_metric,
        osm_aois=aois,
        osm_pois=pois,
        osm_trees=trees,
    )
    return BenchCity(graph, anchored.images, tables.nodes, tables.edges, inputs, tables.summary)
