"""Synthetic UGE training data made in code: tiny street-view-like PNGs, captions, subgraph tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ugdata_pipeline.context.subgraph_tables import SUBGRAPH_EDGE_COLUMNS, SUBGRAPH_NODE_COLUMNS, SubgraphTables
from ugdata_pipeline.dataset.records import TRAINING_RECORD_COLUMNS

COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 60, 200),
    "yellow": (220, 200, 40),
    "purple": (140, 50, 160),
    "white": (235, 235, 235),
    "orange": (230, 120, 20),
    "black": (20, 20, 20),
}
SIDES = ("left", "right")
STREETS = ("Alpha Street", "Beta Street", "Gamma Street", "First Avenue")


def _place(k: int) -> tuple[str, str, str]:
    colours = list(COLOURS)
    return colours[k % len(colours)], SIDES[(k // len(colours)) % 2], STREETS[k % len(STREETS)]


def draw_view(k: int, view: int, size: int = 48) -> Image.Image:
    """A view of place k: sky, road, and a coloured building on one side, with per-view noise."""
    colour, side, _ = _place(k)
    rng = np.random.default_rng([k, view])
    pixels = np.zeros((size, size, 3), dtype=np.float64)
    pixels[: size // 2] = (150, 190, 235)  # sky
    pixels[size // 2 :] = (90, 90, 90)  # road
    top, width = size // 6 + int(rng.integers(0, 3)), size // 3 + int(rng.integers(-2, 3))
    left = 2 if side == "left" else size - width - 2
    pixels[top : size - size // 6, left : left + width] = COLOURS[colour]
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_dataset(
    root: Path, *, n_places: int = 8, views: int = 3, size: int = 48
) -> tuple[pd.DataFrame, SubgraphTables]:
    """
    Records (stage 1 + 2, ugdata + baseline; the last view of each place is `val`) and subgraph tables.

    Place k's caption names its colour, side and street; its subgraph has the image node, its street, a POI named
    after the colour, and an AOI, with per-place offsets.
    """
    rows, node_rows, edge_rows = [], [], []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for k in range(n_places):
        colour, side, street = _place(k)
        caption = f"A {colour} building stands on the {side} side of {street}."
        for view in range(views):
            image_id = f"p{k}v{view}"
            rel = f"img/{image_id}.png"
            draw_view(k, view, size).save(root / rel)
            split = "val" if view == views - 1 else "train"
            for stage in (1, 2):
                rows.append(
                    (
                        f"s{stage}-{image_id}",
                        stage,
                        "ugdata",
                        image_id,
                        split,
                        "Describe the place.",
                        rel,
                        caption,
                        "caption",
                        [f"A {colour} tree on the {side}."],
                    )
                )
            rows.append(
                (
                    f"b-{image_id}",
                    1,
                    "baseline",
                    image_id,
                    split,
                    "Describe the image.",
                    rel,
                    f"A street view with a {colour} building.",
                    "generic",
                    [],
                )
            )
            centre = f"image:render:{image_id}"
            dx, dy = 10.0 * (k + 1), -7.0 * k + view
            nodes = [
                (image_id, centre, "image", None, "image", "street view", 0.0, 0.0, 0.0, 0.0, 0.0, 0),
                (
                    image_id,
                    f"street:{street}",
                    "street",
                    street,
                    "residential",
                    f"{street}, a residential street",
                    0.0,
                    0.0,
                    dx / 4,
                    dy / 4,
                    5.0,
                    1,
                ),
                (
                    image_id,
                    f"poi:n{k}",
                    "poi",
                    f"{colour.title()} Cafe",
                    "food",
                    f"{colour.title()} Cafe, a cafe",
                    0.0,
                    0.0,
                    dx,
                    dy,
                    float(np.hypot(dx, dy)),
                    2,
                ),
                (
                    image_id,
                    f"aoi:w{k}",
                    "aoi",
                    f"{colour.title()} Park",
                    "park",
                    f"{colour.title()} Park, a park",
                    0.0,
                    0.0,
                    -dx,
                    2 * dy,
                    float(np.hypot(dx, 2 * dy)),
                    3,
                ),
            ]
            node_rows += nodes
            edge_rows += [
                (image_id, centre, f"street:{street}", "image_street", 5.0, 90.0, street),
                (image_id, f"poi:n{k}", f"street:{street}", "nearest", 12.0, 180.0, street),
                (image_id, f"aoi:w{k}", f"street:{street}", "bounds", 20.0, float("nan"), street),
            ]
    records = pd.DataFrame(
        rows,
        columns=list(TRAINING_RECORD_COLUMNS),
    )
    nodes = pd.DataFrame(
        node_rows,
        columns=list(SUBGRAPH_NODE_COLUMNS),
    )
    edges = pd.DataFrame(edge_rows, columns=list(SUBGRAPH_EDGE_COLUMNS))
    return records, SubgraphTables(nodes, edges)
