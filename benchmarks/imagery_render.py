"""Benchmark the offline street-view renderer: views per second on one core, beside a bare wall raycaster.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/imagery_render.py                  # Karhula and Helsinki
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/imagery_render.py --city karhula --views 300 --repeats 5

What is measured
    The city's scene is built once (not timed). ``n_views`` cameras are taken evenly from the city's camera
    sample (a camera every 40 m along every named street, both directions). Per repeat, three loops run over
    the same cameras, in this order:

    * **full**: :func:`ugdata_pipeline.imagery.render.render_view` at 256 x 256 with the whole scene (walls,
      windows, signs, ground raster, trees, sign boards, lighting, noise) and its scene facts;
    * **full + PNG**: the same plus :func:`encode_image` (what :func:`render_city` does per new image, minus
      the file write);
    * **bare**: the baseline, a wall-only column raycaster: the same STRtree query, every wall edge in range
      intersected with one ray per column (no culling), nearest hit per column, a flat grey wall column on a
      two-tone sky/ground image. No facts, no texture, no ground lookup.

    Views per second are the MEDIAN over the repeats, by wall clock (``time.perf_counter``) and by process CPU
    time (``time.process_time``; steadier on a shared machine). The ratio is full / bare.

Target
    full >= 100 views/s at 256 x 256 on one core (CPU time).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import shapely

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.imagery.cameras import sample_cameras
from ugdata_pipeline.imagery.render import render_view, view_rng
from ugdata_pipeline.imagery.render_config import RenderConfig
from ugdata_pipeline.imagery.scene import Scene, build_scene
from ugdata_pipeline.imagery.view_files import encode_image
from ugdata_pipeline.osm import load_city_osm

TARGET_VIEWS_PER_S = 100.0


def bare_raycast(
    scene: Scene,
    x: float,
    y: float,
    heading_deg: float,
    *,
    size: int = 256,
    fov_deg: float = 90.0,
    max_distance_m: float = 200.0,
    eye_m: float = 2.5,
) -> np.ndarray:
    """The baseline: nearest wall per column over every edge in range, drawn as flat grey columns."""
    focal = (size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    u = ((np.arange(size) + 0.5 - size / 2.0) / focal).astype(np.float32)
    heading = math.radians(heading_deg)
    fwd = np.array([math.sin(heading), math.cos(heading)])
    right = np.array([math.cos(heading), -math.sin(heading)])
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[: size // 2] = (150, 190, 230)
    image[size // 2 :] = (120, 120, 120)
    reach = max_distance_m
    candidates = scene.wall_tree.query(shapely.box(x - reach, y - reach, x + reach, y + reach))
    if not candidates.size:
        return image
    a = scene.wall_start[candidates] - (x, y)
    b = scene.wall_end[candidates] - (x, y)
    ax, az = (a @ right).astype(np.float32)[:, None], (a @ fwd).astype(np.float32)[:, None]
    dx, dz = ((b - a) @ right).astype(np.float32)[:, None], ((b - a) @ fwd).astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (u * az - ax) / (dx - u * dz)
        t = az + w * dz
        t[~((w >= 0) & (w <= 1) & (t > 0.3) & (t < reach))] = np.inf
    depth = t.min(axis=0)
    height = scene.building_height_m[scene.wall_building[candidates[np.argmin(t, axis=0)]]]
    rows = np.arange(size, dtype=np.float32)[:, None] + 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        top = size / 2.0 - focal * (height - eye_m) / depth
        bottom = size / 2.0 + focal * eye_m / depth
    image[(rows >= top) & (rows < bottom)] = (170, 160, 150)
    return image


def _timed(loop: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    loop()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_render(city: str = "karhula", n_views: int = 300, *, size: int = 256, repeats: int = 3) -> dict:
    """
    Views per second of the full renderer, of the renderer plus PNG encoding, and of the bare baseline.

    Parameters
    ----------
    city
        A bundled registry city (``"karhula"``, ``"helsinki"``).
    n_views
        Cameras per loop, spread evenly over the city's camera sample.
    size
        Image side in pixels.
    repeats
        Repeats of the three loops; figures are medians (at least 3 is sensible).

    Returns
    -------
    figures
        ``full_views_per_s``, ``full_png_views_per_s``, ``bare_views_per_s`` (CPU time), the same with
        ``_wall`` (wall clock), ``ratio_full_to_bare``, ``meets_target``, and the city's ``cameras``,
        ``views``, ``buildings``, ``wall_segments``, ``trees``, ``size``, ``repeats``.
    """
    extract = load_city_osm(load_registry().get(city))
    scene = build_scene(extract, crs_metric=city_metric_crs(extract.streets, where=f"city {city!r}"))
    cameras = sample_cameras(extract.streets, crs_metric=scene.crs_metric, city_slug=city)
    picked = cameras.iloc[np.unique(np.linspace(0, len(cameras) - 1, min(n_views, len(cameras))).astype(int))]
    views = list(picked[["x_m", "y_m", "heading_deg", "camera_id"]].itertuples(index=False, name=None))
    config = RenderConfig(size=size)

    def full() -> None:
        for x, y, heading, camera_id in views:
            render_view(scene, x, y, heading, config, view_rng(0, camera_id))

    def full_png() -> None:
        for x, y, heading, camera_id in views:
            image, facts = render_view(scene, x, y, heading, config, view_rng(0, camera_id))
            encode_image(image, facts)

    def bare() -> None:
        for x, y, heading, _ in views:
            bare_raycast(scene, x, y, heading, size=size)

    runs: dict[str, list[tuple[float, float]]] = {"full": [], "full_png": [], "bare": []}
    for _ in range(repeats):
        for name, loop in (("full", full), ("full_png", full_png), ("bare", bare)):
            runs[name].append(_timed(loop))
    figures: dict[str, object] = {
        "city": city,
        "cameras": len(cameras),
        "views": len(views),
        "size": size,
        "repeats": repeats,
    }
    for name, timings in runs.items():
        figures[f"{name}_views_per_s"] = round(len(views) / statistics.median(c for _, c in timings), 1)
        figures[f"{name}_views_per_s_wall"] = round(len(views) / statistics.median(w for w, _ in timings), 1)
    figures["ratio_full_to_bare"] = round(figures["full_views_per_s"] / figures["bare_views_per_s"], 3)  # type: ignore[operator]
    figures["meets_target"] = figures["full_views_per_s"] >= TARGET_VIEWS_PER_S  # type: ignore[operator]
    figures.update({k: scene.counts[k] for k in ("buildings", "wall_segments", "trees")})
    return figures


def main() -> None:
    """Print the figures for the bundled cities."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--city", action="append", help="bundled city (repeatable); default karhula and helsinki")
    parser.add_argument("--views", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    for city in args.city or ["karhula", "helsinki"]:
        f = measure_render(city, args.views, size=args.size, repeats=args.repeats)
        print(
            f"{city}: {f['views']} of {f['cameras']} cameras, {f['buildings']:,} buildings, "
            f"{f['wall_segments']:,} wall edges, {f['trees']} trees, {f['size']}x{f['size']}, "
            f"median of {f['repeats']}"
        )
        for name, label in (("full", "full scene"), ("full_png", "full scene + PNG"), ("bare", "bare walls")):
            print(
                f"  {label:18s} {f[f'{name}_views_per_s']:8.1f} views/s CPU "
                f"({f[f'{name}_views_per_s_wall']:.1f} wall clock)"
            )
        verdict = "meets" if f["meets_target"] else "MISSES"
        print(
            f"  ratio full/bare    {f['ratio_full_to_bare']:.3f}; {verdict} the {TARGET_VIEWS_PER_S:.0f} views/s target"
        )


if __name__ == "__main__":
    main()
