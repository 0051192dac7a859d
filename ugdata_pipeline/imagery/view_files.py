"""Files of rendered views: encoded with their scene facts and render fingerprint inside, read back, compared,
and tiled into contact sheets for previews."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ugdata_pipeline.errors import RenderInputError

FACTS_KEY = "ugdata:scene_facts"
FINGERPRINT_KEY = "ugdata:render"


def encode_image(image: np.ndarray, facts: dict, *, image_format: str = "png", fingerprint: str = "") -> bytes:
    """
    Encode a view as PNG or JPEG bytes with its scene facts and render fingerprint inside the file.

    PNG keeps them in text chunks (``ugdata:scene_facts``, ``ugdata:render``), JPEG in its comment, so a
    finished file alone is enough to list the view in the manifest again (:func:`read_image_facts`).
    """
    facts_json = json.dumps(facts, ensure_ascii=False, separators=(",", ":"))
    buffer = io.BytesIO()
    picture = Image.fromarray(image, mode="RGB")
    if image_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(FINGERPRINT_KEY, fingerprint)
        info.add_itxt(FACTS_KEY, facts_json)
        # pixel noise makes stronger compression cost 2-4x the time for ~10% smaller files
        picture.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    else:
        comment = json.dumps({"render": fingerprint, "scene_facts": facts}, ensure_ascii=False)
        picture.save(buffer, format="JPEG", quality=90, comment=comment.encode("utf-8"))
    return buffer.getvalue()


def read_image_facts(path: Path) -> tuple[str, dict] | None:
    """
    The render fingerprint and scene facts stored in a rendered image, or ``None`` when the file is not a
    complete rendered image (missing, truncated, or written by something else).
    """
    try:
        with Image.open(path) as picture:
            picture.verify()
        with Image.open(path) as picture:
            info = dict(picture.info)
    except (OSError, SyntaxError, ValueError):
        return None
    try:
        if FACTS_KEY in info:
            return str(info.get(FINGERPRINT_KEY, "")), json.loads(info[FACTS_KEY])
        if "comment" in info:
            stored = json.loads(bytes(info["comment"]).decode("utf-8"))
            return str(stored["render"]), dict(stored["scene_facts"])
    except (ValueError, KeyError, TypeError):
        return None
    return None


def image_distance(first: np.ndarray, second: np.ndarray, *, grid: int | None = 16) -> float:
    """
    Mean absolute difference of two same-shape uint8 images, in 0..255 (0: identical).

    With ``grid`` (the default), both images are first reduced to ``grid x grid`` block means (a "tiny image"
    distance), so pixel noise and shifts of a pixel or two barely count while a different street scene does;
    ``grid=None`` compares raw pixels. The renderer's spatial properties are stated in this distance.
    """
    if first.shape != second.shape:
        msg = f"images must have the same shape to be compared, got {first.shape} and {second.shape}"
        raise RenderInputError(msg)
    a, b = first.astype(np.float32), second.astype(np.float32)
    if grid is not None:
        if not isinstance(grid, int) or grid < 1 or first.shape[0] % grid or first.shape[1] % grid:
            msg = f"`grid` must be a positive integer that divides the image size {first.shape[:2]}, got {grid!r}"
            raise RenderInputError(msg)
        h, w = first.shape[0] // grid, first.shape[1] // grid
        a = a.reshape(grid, h, grid, w, -1).mean(axis=(1, 3))
        b = b.reshape(grid, h, grid, w, -1).mean(axis=(1, 3))
    return float(np.abs(a - b).mean())


def contact_sheet(images: Sequence[np.ndarray | str | Path], *, ncols: int = 4, tile_px: int = 128) -> bytes:
    """
    A PNG grid of views for asset metadata.

    Parameters
    ----------
    images
        uint8 RGB arrays or image file paths (any number; none gives a single blank tile).
    ncols
        Tiles per row (>= 1).
    tile_px
        Each view is resized to ``tile_px x tile_px``.

    Returns
    -------
    png
        The sheet as PNG bytes, with a 2 px white gutter.
    """
    if not isinstance(ncols, int) or ncols < 1 or not isinstance(tile_px, int) or tile_px < 8:
        msg = f"`ncols` must be an integer >= 1 and `tile_px` >= 8, got {ncols!r} and {tile_px!r}"
        raise RenderInputError(msg)
    tiles = []
    for item in images:
        if isinstance(item, np.ndarray):
            picture = Image.fromarray(item.astype(np.uint8), mode="RGB")
        else:
            with Image.open(item) as opened:
                picture = opened.convert("RGB")
        tiles.append(picture.resize((tile_px, tile_px), Image.Resampling.BILINEAR))
    count = max(1, len(tiles))
    cols = min(ncols, count)
    rows = math.ceil(count / cols)
    gutter = 2
    sheet = Image.new("RGB", (cols * (tile_px + gutter) + gutter, rows * (tile_px + gutter) + gutter), "white")
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet.paste(tile, (gutter + c * (tile_px + gutter), gutter + r * (tile_px + gutter)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
