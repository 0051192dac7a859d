"""Grid cities built in code, large enough for UGBench (>= 20 candidates per record), with known layouts.

A city is an ``nx`` x ``ny`` grid of streets 100 m apart (local metres, UTM 35N near Helsinki, as in
``tiny_city``; ``offset_x_m`` shifts a second city far away): horizontal "<word> Street" at y = 100 j, vertical
"<word> Avenue" at x = 100 i. Named POIs of several categories sit in the blocks, two named parks, and images
lie 4 m off the middle of street segments. Scene facts are synthetic but tied to the layout (greener near parks,
taller towards the east), so perception terciles are not random.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from ugdata_pipeline.context.subgraph import build_subgraphs
from ugdata_pipeline.graph.build import UrbanGraph, build_urban_graph
from ugdata_pipeline.imagery.anchor import anchor_images
from ugdata_pipeline.osm.schema import AOI_COLUMNS, POI_COLUMNS, OsmExtract, frame
from ugdata_pipeline.ugbench import CityInputs
from ugdata_pipeline_tests.tiny_city import lonlat, street_table

WORDS = ("Alder", "Birch", "Cedar", "Dune", "Elm", "Fir", "Grove", "Hazel", "Iris", "Juniper", "Kestrel", "Linden",
         "Maple", "Nettle", "Oak", "Poplar", "Quartz", "Rowan", "Spruce", "Thistle", "Umber", "Violet", "Willow",
         "Yarrow")  # fmt: skip
ADJECTIVES = ("Blue", "Golden", "Quiet", "Red", "Silver", "Green", "Little", "Grand", "Old", "New", "Bright", "Velvet")
NOUNS = ("Lantern", "Harbor", "Corner", "Anchor", "Garden", "Crown", "Bridge", "Mill", "Feather", "Compass", "Stone",
         "Orchard")  # fmt: skip
CATEGORIES = (("food", "amenity=cafe"), ("financial", "amenity=bank"), ("commercial", "shop=books"),
              ("healthcare", "amenity=pharmacy"), ("education", "amenity=school"), ("culture", "amenity=theatre"))


@dataclass(slots=True)
class BenchCity:
    """A built grid city: graph, anchored images, subgraph tables, and the benchmark inputs."""

    graph: UrbanGraph
    images: pd.DataFrame
    subgraph_nodes: pd.DataFrame
    subgraph_edges: pd.DataFrame
    inputs: CityInputs


def _extract(nx: int, ny: int, offset_x_m: float, seed: int, word_shift: int) -> OsmExtract:
    ways = []
    for j in range(ny):
        ids = [100_000 * (word_shift + 1) + 100 * i + j for i in range(nx)]
        name = f"{WORDS[(j + word_shift) % len(WORDS)]} Street"
        ways.append((len(ways) + 1, name, "residential", ids, [(offset_x_m + 100 * i, 100 * j) for i in range(nx)]))
    for i in range(nx):
        ids = [100_000 * (word_shift + 1) + 100 * i + j for j in range(ny)]
        name = f"{WORDS[(i + word_shift + 7) % len(WORDS)]} Avenue"
        ways.append((len(ways) + 1, name, "tertiary", ids, [(offset_x_m + 100 * i, 100 * j) for j in range(ny)]))
    rng = np.random.default_rng(seed)
    pois: dict[str, list] = {c: [] for c in POI_COLUMNS}
    points = []
    n = 0
    for i in range(nx - 1):
        for j in range(ny - 1):
            if (i + j) % 2:
                continue
            category, tag = CATEGORIES[n % len(CATEGORIES)]
            name = f"{ADJECTIVES[(n + word_shift) % len(ADJECTIVES)]} {NOUNS[(n // len(ADJECTIVES)) % len(NOUNS)]}"
            pois["osm_id"].append(f"n{seed * 10_000 + n}")
            pois["name"].append(name)
            pois["category"].append(category)
            pois["tag"].append(tag)
            pois["address"].append(None)
            pois["height_m"].append(None)
            x, y = 100 * i + rng.uniform(20, 80), 100 * j + rng.uniform(20, 80)
            points.append(shapely.Point(lonlat(offset_x_m + x, y)))
            n += 1
    parks = [((110, 110), (190, 290), "Hill Park"), ((510, 310), (690, 390), "River Gardens")]
    aoi_rows: dict[str, list] = {c: [] for c in AOI_COLUMNS}
    polygons = []
    for k, ((x0, y0), (x1, y1), name) in enumerate(parks):
        aoi_rows["osm_id"].append(f"w{seed * 1000 + k}")
        aoi_rows["name"].append(f"{name} {word_shift}" if word_shift else name)
        aoi_rows["category"].append("park")
        aoi_rows["tag"].append("leisure=park")
        aoi_rows["address"].append(None)
        aoi_rows["height_m"].append(None)
        aoi_rows["is_building"].append(False)
        polygons.append(shapely.Polygon([lonlat(offset_x_m + x0, y0), lonlat(offset_x_m + x1, y0),
                                         lonlat(offset_x_m + x1, y1), lonlat(offset_x_m + x0, y1)]))  # fmt: skip
    return OsmExtract(streets=street_table(ways), pois=frame(pois, POI_COLUMNS, points),
                      aois=frame(aoi_rows, AOI_COLUMNS, polygons), source="ugbench grid city (test)")  # fmt: skip


def _images(city: str, nx: int, ny: int, offset_x_m: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    rows = []
    spots = [(100 * i + 50 + rng.uniform(-15, 15), 100 * j + 4, f"h{i}-{j}") for i in range(nx - 1) for j in range(ny)
             if (i + 2 * j) % 4 == 0]  # on horizontal streets
    spots += [(100 * i + 4, 100 * j + 50 + rng.uniform(-15, 15), f"v{i}-{j}") for i in range(nx) for j in range(ny - 1)
              if (2 * i + j) % 4 == 1]  # on vertical avenues
    for x, y, key in spots:
        i = int(x // 100)
        park = 1.0 if (100 <= x <= 200 and 100 <= y <= 300) or (500 <= x <= 700 and 300 <= y <= 400) else 0.0
        green = float(np.clip(0.05 + 0.4 * park + rng.uniform(0, 0.3), 0, 1))
        building = float(np.clip(0.15 + 0.05 * i + rng.uniform(-0.1, 0.1), 0, 0.9))
        height = float(6 + 3 * i + rng.uniform(-2, 2))
        sky = float(np.clip(1.0 - building - 0.5 * green + rng.uniform(-0.05, 0.05), 0.0, 1.0))
        lon, lat = lonlat(offset_x_m + x, y)
        image_id = f"{city}-{key}"
        rows.append({
            "image_id": image_id, "source": "render", "lon": lon, "lat": lat,
            "compass_angle": float(rng.uniform(0, 360)), "captured_at": "2024-05-01T12:00:00Z",
            "sequence_id": f"{city}-seq-{key}", "path": f"{city}/images/{image_id}.png", "width": 64, "height": 48,
            "is_pano": False, "creator": "renderer",
            "scene_facts": json.dumps({"visible": [], "building_fraction": building, "green_fraction": green,
                                       "sky_fraction": sky, "road_fraction": 0.2, "tree_count": int(10 * green),
                                       "mean_building_height_m": height, "street_name": None}),
            "x_m": x,
        })  # fmt: skip
    return pd.DataFrame(rows)


def build_city(
    city: str, *, role: str = "train", nx: int = 12, ny: int = 10, offset_x_m: float = 0.0, seed: int = 1,
    word_shift: int = 0, test_from_x_m: float = 700.0,
) -> BenchCity:  # fmt: skip
    """
    Build a grid city and its benchmark inputs.

    For ``role="train"`` images west of ``test_from_x_m - 300`` are ``train``, east of ``test_from_x_m`` are ``test``,
    the strip between is ``excluded`` (a buffer, like ``assign_splits``); for ``role="held_out"`` all are ``test``.
    """
    extract = _extract(nx, ny, offset_x_m, seed, word_shift)
    graph = build_urban_graph(extract, city_name=city.title(), country="Finland")
    raw = _images(city, nx, ny, offset_x_m, seed)
    if role == "held_out":
        raw["split"] = "test"
    else:
        raw["split"] = np.where(raw["x_m"] >= test_from_x_m, "test",
                                np.where(raw["x_m"] < test_from_x_m - 300, "train", "excluded"))  # fmt: skip
    raw["cell"] = raw["image_id"]
    anchored = anchor_images(raw.drop(columns="x_m"), graph.nodes, city_name=city.title(), country="Finland")
    nodes = pd.concat([graph.nodes, anchored.image_nodes], ignore_index=True)
    edges = pd.concat([graph.edges, anchored.image_edges], ignore_index=True)
    tables = build_subgraphs(nodes, edges, anchored.images, crs_metric=graph.crs_metric)
    inputs = CityInputs(city=city, role=role, images=anchored.images, nodes=pd.DataFrame(graph.nodes.drop(
        columns="geometry")), edges=graph.edges, subgraph_nodes=tables.nodes, subgraph_edges=tables.edges)  # type: ignore[arg-type]
    return BenchCity(graph, anchored.images, tables.nodes, tables.edges, inputs)

