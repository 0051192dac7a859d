"""Cities built in code for the reasoning-path tests: the tiny 3x3 city with images, and a larger grid."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from ugdata_pipeline.graph.build import UrbanGraph, build_urban_graph
from ugdata_pipeline.imagery.anchor import anchor_images
from ugdata_pipeline.osm.schema import AOI_COLUMNS, POI_COLUMNS, OsmExtract, frame
from ugdata_pipeline_tests.tiny_city import Way, lonlat, street_table, tiny_city


@dataclass(slots=True)
class Anchored:
    """Graph tables with the image nodes/edges added, and the anchored images with splits."""

    nodes: gpd.GeoDataFrame
    edges: pd.DataFrame
    images: pd.DataFrame
    graph: UrbanGraph


def anchored(graph: UrbanGraph, images: pd.DataFrame, splits: list[str], city_name: str = "Tinytown") -> Anchored:
    result = anchor_images(images, graph.nodes, city_name=city_name, country="Finland", crs_metric=graph.crs_metric)
    kept = result.images.copy()
    kept["split"] = [splits[list(images["image_id"]).index(i)] for i in kept["image_id"]]
    nodes = gpd.GeoDataFrame(pd.concat([graph.nodes, result.image_nodes], ignore_index=True), crs="EPSG:4326")
    edges = pd.concat([graph.edges, result.image_edges], ignore_index=True)
    return Anchored(nodes, edges, kept, graph)


def image_rows(points: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    """Images from (image_id, x, y, compass_angle) in the tiny city's layout metres."""
    lon_lat = [lonlat(x, y) for _, x, y, _ in points]
    return pd.DataFrame(
        {
            "image_id": [p[0] for p in points],
            "source": "render",
            "lon": [p[0] for p in lon_lat],
            "lat": [p[1] for p in lon_lat],
            "compass_angle": [p[3] for p in points],
        }
    )


@pytest.fixture
def tiny_anchored() -> Anchored:
    """Image ``a`` 8 m south of Alpha Street at x=50 facing north (train), ``b`` on Second Avenue at y=150
    facing east (test), ``c`` on Gamma Street, excluded by the split buffer."""
    graph = build_urban_graph(tiny_city(), city_name="Tinytown", country="Finland")
    images = image_rows([("a", 50, -8, 0.0), ("b", 100, 150, 90.0), ("c", 150, 200, 180.0)])
    return anchored(graph, images, ["train", "test", "excluded"])


def grid_city(size: int = 6, spacing_m: float = 100.0, seed: int = 3) -> OsmExtract:
    """A ``size`` x ``size`` street grid with POIs of four categories along every block and a few parks."""
    ways: list[Way] = []
    for j in range(size):
        for i in range(size - 1):
            ends = [5000 + 100 * i + j, 5000 + 100 * (i + 1) + j]
            ways.append(
                (
                    10_000 + len(ways),
                    f"Row {j} Street",
                    "residential",
                    ends,
                    [(spacing_m * i, spacing_m * j), (spacing_m * (i + 1), spacing_m * j)],
                )
            )
    for i in range(size):
        for j in range(size - 1):
            ends = [5000 + 100 * i + j, 5000 + 100 * i + j + 1]
            ways.append(
                (
                    10_000 + len(ways),
                    f"Col {i} Avenue",
                    "tertiary",
                    ends,
                    [(spacing_m * i, spacing_m * j), (spacing_m * i, spacing_m * (j + 1))],
                )
            )
    rng = np.random.default_rng(seed)
    categories = ["food", "shop", "financial", "health"]
    pois: dict[str, list] = {c: [] for c in POI_COLUMNS if c != "geometry"}
    points = []
    k = 0
    for j in range(size):
        for i in range(size - 1):
            for _ in range(2):
                k += 1
                x = spacing_m * i + rng.uniform(15, 85)
                y = spacing_m * j + rng.choice([-1, 1]) * rng.uniform(8, 20)
                pois["osm_id"].append(f"n{k}")
                pois["name"].append(f"Place {k}")
                pois["category"].append(categories[k % len(categories)])
                pois["tag"].append("amenity=cafe")
                pois["address"].append(None)
                pois["height_m"].append(None)
                points.append(shapely.Point(lonlat(x, y)))
    aois = {"osm_id": [], "name": [], "category": [], "tag": [], "address": [], "height_m": [], "is_building": []}
    polygons = []
    for k, (i, j) in enumerate([(1, 1), (3, 2), (2, 4)]):
        x0, y0 = spacing_m * i + 10, spacing_m * j + 10
        aois["osm_id"].append(f"w{900 + k}")
        aois["name"].append(f"Park {k}")
        aois["category"].append("park")
        aois["tag"].append("leisure=park")
        aois["address"].append(None)
        aois["height_m"].append(None)
        aois["is_building"].append(False)
        polygons.append(
            shapely.Polygon([lonlat(x0, y0), lonlat(x0 + 80, y0), lonlat(x0 + 80, y0 + 80), lonlat(x0, y0 + 80)])
        )
    return OsmExtract(
        street_table(ways),
        frame(pois, POI_COLUMNS, points),
        frame(aois, AOI_COLUMNS, polygons),
        source="grid city (test)",
    )


@pytest.fixture(scope="module")
def grid_anchored() -> Anchored:
    """The 6x6 grid with 40 images at random street positions and headings, three splits."""
    graph = build_urban_graph(grid_city(), city_name="Gridtown", country="Finland")
    rng = np.random.default_rng(11)
    points = []
    for k in range(40):
        if k % 2:
            x, y = rng.uniform(0, 500), 100.0 * rng.integers(0, 6) + rng.uniform(-5, 5)
        else:
            x, y = 100.0 * rng.integers(0, 6) + rng.uniform(-5, 5), rng.uniform(0, 500)
        points.append((f"g{k}", x, y, float(rng.uniform(0, 360))))
    splits = [("train", "val", "test")[k % 3] for k in range(40)]
    return anchored(graph, image_rows(points), splits, city_name="Gridtown")
