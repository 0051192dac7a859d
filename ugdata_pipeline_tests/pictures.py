"""Checks for the pictures the pipeline draws (charts, maps): a decodable PNG with something drawn on it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def assert_drawn_png(data: bytes, *, min_side: int = 100, min_colours: int = 8) -> Image.Image:
    """``data`` decodes as a PNG at least ``min_side`` pixels a side with ``min_colours`` distinct colours."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()  # a truncated or corrupt file fails here, not at the header
    assert min(image.size) >= min_side, image.size
    colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, f"only {len(colours)} colours: nothing drawn"
    return image
