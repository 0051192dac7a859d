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

__all__ = ["SHARED_IMAGES", "ImageCache"]


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

    def rgb(self, path: Path) -> np.ndarray:
        """The file's pixels, ``[H, W, 3]`` uint8."""
        return self._get(path, "", lambda: _decode_rgb(path))

    def prepared(self, path: Path, identity: str, prepare: Callable[[Image.Image], Any]) -> Any:
        """``prepare`` of the decoded file, shared by every backbone whose ``prepare_identity`` is ``identity``."""
        return self._get(path, identity, lambda: prepare(Image.fromarray(_decode_rgb(path))))

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


def _decode_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _nbytes(item: Any) -> int:
    if isinstance(item, Tensor):
        return item.numel() * item.element_size()
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    return 1 << 16  # anything else is counted as 64 kB


#: The process-wide cache (about 5,000 views at 256 x 256, or 20,000 prepared at 128 x 128).
SHARED_IMAGES = ImageCache(max_bytes=1 << 30)
