"""Tiny cities with anchored synthetic images, for the subgraph and description tests (and other context tests)."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from ugdata_pipeline.context.subgraph import SubgraphConfig, build_subgraphs
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.graph.build import UrbanGraph, build_urban_graph
from ugdata_pipeline.imagery import anchor_images
from ugdata_pipeline.osm.schema import POI_COLUMNS, OsmExtract, frame
from ugdata_pipeline_tests.tiny_city import Way, lonlat, street_table, tiny_city


@dataclass(slots=True)
class AnchoredCity:
    """A graph with images anchored into it: the inputs of ``build_subgraphs``."""

    graph: UrbanGraph
    nodes: gpd.GeoDataFrame  # graph nodes + image nodes
    edges: pd.DataFrame  # graph edges + image_street edges
    images: pd.DataFrame  # anchored images (street_node, snap_distance_m)

    def build(self, **config: object) -> SubgraphTables:
        return build_subgraphs(
            self.nodes,
            self.edges,
            self.images,
            config=SubgraphConfig(**config),  # type: ignore[arg-type]
            crs_metric=self.graph.crs_metric,
        )


def make_images(
    points: dict[str, tuple[float, float]], *, compass_angle: float = 90.0, source: str = "render"
) -> pd.DataFrame:
    """Images at tiny-city layout metres ``{image_id: (x, y)}``."""
    coords = [lonlat(x, y) for x, y in points.values()]
    return pd.DataFrame(
        {
            "image_id": list(points),
            "source": source,
            "lon": [c[0] for c in coords],
            "lat": [c[1] for c in coords],
            "compass_angle": compass_angle,
        }
    )


def anchor_into(
    graph: UrbanGraph, images: pd.DataFrame, *, city_name: str = "Tinytown", country: str = "Finland"
) -> AnchoredCity:
    """Anchor ``images`` into ``graph`` and concatenate the image nodes and edges into the graph tables."""
    result = anchor_images(images, graph.nodes, city_name=city_name, country=country, crs_metric=graph.crs_metric)
    nodes = gpd.GeoDataFrame(pd.concat([graph.nodes, result.image_nodes], ignore_index=True), crs="EPSG:4326")
    edges = pd.concat([graph.edges, result.image_edges], ignore_index=True)
    return AnchoredCity(graph, nodes, edges, result.images)


def tiny_city_with_long_road() -> OsmExtract:
    """The tiny city plus "Delta Road", a 2 km street along y = -50 from x = -1950 to x = 60.

    Its anchor (the middle of the line) is about a kilometre west of the grid, but the line passes 55 m
    south of a point at (50, 5).
    """
    base = tiny_city()
    delta: Way = (999, "Delta Road", "residential", [9001, 9002], [(-1950.0, -50.0), (60.0, -50.0)])
    streets = pd.concat([base.streets, street_table([delta])], ignore_index=True)
    return OsmExtract(gpd.GeoDataFrame(streets, crs="EPSG:4326"), base.pois, base.aois, source="tiny city + road")


RING_RADIUS_M = 30.0
RING_CENTRE = (0.0, 5.0)


def ring_city() -> OsmExtract:
    """One street ("Ring Road", y = 0) and eight named POIs exactly 30 m around (0, 5), ids n11..n18.

    Every POI is the same distance from an image at (0, 5), so a cap must break the tie by node id.
    """
    base = tiny_city()
    road: Way = (1, "Ring Road", "residential", [1, 2], [(-300.0, 0.0), (300.0, 0.0)])
    angles = np.radians(np.arange(8) * 45.0)
    x0, y0 = RING_CENTRE
    points = [shapely.Point(lonlat(x0 + RING_RADIUS_M * np.sin(a), y0 + RING_RADIUS_M * np.cos(a))) for a in angles]
    pois = {
        "osm_id": [f"n{11 + i}" for i in range(8)],
        "name": [f"Shop {i}" for i in range(8)],
        "category": ["shop"] * 8,
        "tag": ["shop=convenience"] * 8,
        "address": [None] * 8,
        "height_m": [None] * 8,
    }
    return OsmExtract(street_table([road]), frame(pois, POI_COLUMNS, points), base.aois.iloc[:0], source="ring")


def graph_of(extract: OsmExtract) -> UrbanGraph:
    return build_urban_graph(extract, city_name="Tinytown", country="Finland")


def images_along_streets(graph: UrbanGraph, n: int, *, seed: int = 0, jitter_m: float = 3.0) -> pd.DataFrame:
    """``n`` synthetic images on random points of random streets of ``graph`` (a few metres off the line)."""
    streets = graph.nodes[graph.nodes["kind"] == "street"].to_crs(graph.crs_metric)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(streets), n)
    on_line = shapely.line_interpolate_point(streets.geometry.to_numpy()[pick], rng.random(n), normalized=True)
    x = shapely.get_x(on_line) + rng.normal(0.0, jitter_m, n)
    y = shapely.get_y(on_line) + rng.normal(0.0, jitter_m, n)
    lon, lat = Transformer.from_crs(graph.crs_metric, "EPSG:4326", always_xy=True).transform(x, y)
    return pd.DataFrame(
        {
            "image_id": [f"syn{i:05d}" for i in range(n)],
            "source": "render",
            "lon": np.asarray(lon),
            "lat": np.asarray(lat),
            "compass_angle": rng.uniform(0.0, 360.0, n),
        }
    )
