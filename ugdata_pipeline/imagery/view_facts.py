"""The ``scene_facts`` of a rendered view: what is visible (nearest first, on which side), and the shares of sky,
buildings, greenery and road in the image — computed from the renderer's palette-index image and column hits."""

from __future__ import annotations

import math

import numpy as np

from ugdata_pipeline.imagery.palette import GREEN_CLASSES, GROUND_PALETTE, ROAD_CLASSES
from ugdata_pipeline.imagery.scene import Scene

#: At most this many entries in ``scene_facts["visible"]``.
MAX_VISIBLE = 20
MIN_PIXELS = 6  # fewer pixels than this do not make a thing "visible"
AHEAD_DEG = 15.0  # things within this angle of the view axis are "ahead"
GREEN_LUT = np.isin(np.arange(len(GROUND_PALETTE)), GREEN_CLASSES)
ROAD_LUT = np.isin(np.arange(len(GROUND_PALETTE)), ROAD_CLASSES)


def side_of_view(u: float) -> str:
    angle = math.degrees(math.atan(u))
    if abs(angle) <= AHEAD_DEG:
        return "ahead"
    return "right" if angle > 0 else "left"


def visible_entry(osm_id: object, name: object, category: object, kind: str, distance: float, u: float) -> dict:
    return {
        "osm_id": None if osm_id is None else str(osm_id),
        "name": None if name is None or (isinstance(name, float) and math.isnan(name)) else str(name),
        "category": str(category),
        "kind": kind,
        "distance_m": round(float(distance), 1),
        "side": side_of_view(u),
    }


def view_facts(
    scene: Scene,
    index: np.ndarray,
    starts: tuple[int, int],
    building: np.ndarray,
    depth: np.ndarray,
    hit: np.ndarray,
    sign_poi: np.ndarray,
    band_pixels: np.ndarray,
    ground_class: np.ndarray,
    ground_cell: tuple[np.ndarray, ...],
    u: np.ndarray,
    camera_rays: tuple[int, np.ndarray, np.ndarray],
    drawn: list[tuple[str, int, int, float, float]],
    street_name: str | None,
    origin: tuple[float, float],
) -> dict:
    """The ``scene_facts`` of one view from its palette-index image (index ranges are labels) and column hits."""
    walls_start, billboards_start = starts
    horizon_row, secant, ground_depth = camera_rays
    total = float(index.size)
    horizon = horizon_row
    wall_mask = (index >= walls_start) & (index < billboards_start)
    visible_ground = index[horizon:] < walls_start  # below the horizon, lower indices are ground colours
    tree_pixels = sum(p for kind, _, p, _, _ in drawn if kind == "tree")
    green_ground = int(np.count_nonzero(visible_ground & GREEN_LUT[ground_class]))
    road_ground = int(np.count_nonzero(visible_ground & ROAD_LUT[ground_class]))
    wall_pixels = wall_mask.sum(axis=0)
    wall_count = int(wall_pixels.sum())
    sky_count = int(np.count_nonzero(index[:horizon] < horizon))
    entries: list[dict] = []
    heights: list[float] = []

    seen_columns = np.flatnonzero(hit & (wall_pixels > 0))
    if seen_columns.size:
        ids, inverse = np.unique(building[seen_columns], return_inverse=True)
        pixels = np.bincount(inverse, weights=wall_pixels[seen_columns])
        distance = depth[seen_columns] * secant[seen_columns]
        nearest = np.full(len(ids), np.inf)
        np.minimum.at(nearest, inverse, distance)
        mean_u = np.bincount(inverse, weights=u[seen_columns]) / np.bincount(inverse)
        for k, b in enumerate(ids):
            if pixels[k] >= MIN_PIXELS:
                entries.append(
                    visible_entry(
                        scene.building_osm_id[b],
                        scene.building_name[b],
                        scene.building_category[b],
                        "building",
                        nearest[k],
                        mean_u[k],
                    )
                )
                heights.append(float(scene.building_height_m[b]))
    signed = np.flatnonzero(band_pixels > 0)
    if signed.size:
        ids, inverse = np.unique(sign_poi[signed], return_inverse=True)
        pixels = np.bincount(inverse, weights=band_pixels[signed])
        mean_u = np.bincount(inverse, weights=u[signed]) / np.bincount(inverse)
        for k, q in enumerate(ids):
            if pixels[k] >= 2:
                gap = math.hypot(*(scene.poi_xy[q] - origin))
                entries.append(
                    visible_entry(scene.poi_osm_id[q], scene.poi_name[q], scene.poi_category[q], "poi", gap, mean_u[k])
                )
    for kind, index, pixels_drawn, distance, across_u in drawn:
        if pixels_drawn < MIN_PIXELS // 2:
            continue
        if kind == "tree":
            entries.append(visible_entry(scene.tree_osm_id[index], None, "tree", "tree", distance, across_u))
        else:
            entries.append(
                visible_entry(
                    scene.poi_osm_id[index], scene.poi_name[index], scene.poi_category[index], "poi", distance, across_u
                )
            )
    # areas on the ground, from every 2nd row and 4th column (each sample stands for 8 pixels)
    iy, ix = ground_cell
    sample = visible_ground[::2, ::4]
    areas = scene.ground_area[iy[::2, ::4][sample], ix[::2, ::4][sample]]
    on_area = areas >= 0
    if on_area.any():
        rows_sampled = np.broadcast_to(ground_depth[::2], sample.shape)[sample][on_area]
        cols_sampled = np.broadcast_to(np.arange(0, len(u), 4)[None, :], sample.shape)[sample][on_area]
        areas = areas[on_area]
        ids, inverse, counts = np.unique(areas, return_inverse=True, return_counts=True)
        distance = rows_sampled * secant[cols_sampled]
        nearest = np.full(len(ids), np.inf)
        np.minimum.at(nearest, inverse, distance)
        mean_u = np.bincount(inverse, weights=u[cols_sampled]) / counts
        for k, a in enumerate(ids):
            if counts[k] * 8 >= 4 * MIN_PIXELS:
                entries.append(
                    visible_entry(
                        scene.area_osm_id[a], scene.area_name[a], scene.area_category[a], "area", nearest[k], mean_u[k]
                    )
                )
    entries.sort(key=lambda e: (e["distance_m"], e["kind"], e["osm_id"] or ""))
    return {
        "visible": entries[:MAX_VISIBLE],
        "building_fraction": round(wall_count / total, 4),
        "green_fraction": round((tree_pixels + green_ground) / total, 4),
        "sky_fraction": round(sky_count / total, 4),
        "road_fraction": round(road_ground / total, 4),
        "tree_count": sum(1 for kind, _, p, _, _ in drawn if kind == "tree" and p >= MIN_PIXELS // 2),
        "mean_building_height_m": round(float(np.mean(heights)), 1) if heights else None,
        "street_name": street_name,
    }
