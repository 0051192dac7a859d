"""Decoded and backbone-prepared images, cached once per process for every model that reads them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from ugdata_pipeline.errors import CorruptFileError

__all__ = ["SHARED_IMAGES", "ImageCache", "load_image"]


class ImageCache:
    """
    Decoded or backbone-prepared images of recently used files, shared by every model in the process (bounded LRU).

    A model family trains and is benchmarked on the same images, once per model and seed; decoding and resizing
    them again for each was most of that image cost. Entries are keyed by path, size and modification time (a
    rewritten file is read again) and, for prepared images, by the backbone's ``prepare_identity``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int, str], Any] = OrderedDict()
        self._sizes: dict[tuple[str, int, int, str], int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def rgb(self, path: Path, *, root: Path | None = None) -> np.ndarray:
        """The file's pixels, ``[H, W, 3]`` uint8 (``root``: the data root, to name the file in errors)."""
        return self._get(path, "", lambda: _decode_rgb(path, root))

    def prepared(
        self, path: Path, identity: str, prepare: Callable[[Image.Image], Any], *, root: Path | None = None
    ) -> Any:
        """``prepare`` of the decoded file, shared by every backbone whose ``prepare_identity`` is ``identity``."""
        return self._get(path, identity, lambda: prepare(Image.fromarray(_decode_rgb(path, root))))

    def _get(self, path: Path, identity: str, make: Callable[[], Any]) -> Any:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, identity)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        item = make()
        size = _nbytes(item)
        with self._lock:
            if key not in self._items:
                self._items[key], self._sizes[key] = item, size
                self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                old, _ = self._items.popitem(last=False)
                self._bytes -= self._sizes.pop(old)
        return item


def load_image(path: Path, root: Path | None = None) -> Image.Image:
    """
    The image at ``path``, decoded (so a damaged file fails here, not later in a model's preprocessing).

    Raises
    ------
    CorruptFileError
        The file is truncated or not an image; the message names it (relative to ``root``, the data root, when
        given), its city (from the ``<city>/images/<file>`` layout) and the fix.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's truncated / unidentified / broken-chunk errors
        raise CorruptFileError(_corrupt_message(Path(path), root, exc)) from exc


def _corrupt_message(path: Path, root: Path | None, exc: Exception) -> str:
    try:
        relative = path.relative_to(root) if root is not None else None
    except ValueError:
        relative = None
    named = f"{relative.as_posix()!r} under data root {root}" if relative is not None else repr(str(path))
    city = path.parent.parent.name if path.parent.name == "images" else None
    if city:
        return (
            f"image file {named} (city {city!r}) is truncated or corrupt ({exc}); delete it and "
            f"re-materialize image_files for {city}"
        )
    return f"image file {named} is truncated or corrupt ({exc}); delete it and re-materialize the asset that wrote it"


def _decode_rgb(path: Path, root: Path | None = None) -> np.ndarray:
    return np.asarray(load_image(path, root).convert("RGB"))


def _nbytes(item: Any) -> int:
    if isinstance(item, Tensor):
        return item.numel() * item.element_size()
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    return 1 << 16  # anything else is counted as 64 kB


#: The process-wide cache (about 5,000 views at 256 x 256, or 20,000 prepared at 128 x 128).
SHARED_IMAGES = ImageCache(max_bytes=1 << 30)
