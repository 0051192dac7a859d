"""Stored images read for training and embedding: a truncated file is named with its city and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ugdata_pipeline.errors import CorruptFileError
from ugdata_pipeline.uge.data import ImageStore
from ugdata_pipeline.uge.images import ImageCache


def write_views(root: Path) -> tuple[str, str]:
    """A whole view and a copy cut in half (a write that stopped half way), as ``image_path`` values."""
    folder = root / "helsinki" / "images"
    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "whole.png")
    payload = (folder / "whole.png").read_bytes()
    (folder / "cut.png").write_bytes(payload[: len(payload) // 2])
    return "helsinki/images/whole.png", "helsinki/images/cut.png"


FIX = r"; delete it and re-materialize image_files for helsinki"


@pytest.mark.parametrize("identity", [None, "rgb"])
def test_truncated_training_image_names_the_file_and_city(tmp_path, identity):
    whole, cut = write_views(tmp_path)
    store = ImageStore(tmp_path, lambda im: np.asarray(im.convert("RGB")), identity=identity)
    assert store.get(whole).shape == (64, 64, 3)
    with pytest.raises(
        CorruptFileError,
        match=rf"image file 'helsinki/images/cut.png' under data root "
        rf"{re.escape(str(tmp_path))} \(city 'helsinki'\) is truncated or "
        rf"corrupt \(image file is truncated.*\){FIX}$",
    ) as caught:
        store.get(cut)
    assert isinstance(caught.value.__cause__, OSError)


def test_truncated_image_without_a_root_is_named_by_its_path(tmp_path):
    _, cut = write_views(tmp_path)
    with pytest.raises(
        CorruptFileError,
        match=rf"image file '{re.escape(str(tmp_path / cut))}' \(city 'helsinki'\) "
        rf"is truncated or corrupt \(.+\){FIX}$",
    ):
        ImageCache(max_bytes=1 << 20).rgb(tmp_path / cut)


def test_a_file_that_is_no_image_is_named(tmp_path):
    write_views(tmp_path)
    (tmp_path / "helsinki" / "images" / "notes.png").write_text("not a picture")
    with pytest.raises(CorruptFileError, match=r"image file 'helsinki/images/notes.png' .* is truncated or corrupt"):
        ImageCache(max_bytes=1 << 20).rgb(tmp_path / "helsinki/images/notes.png", root=tmp_path)
