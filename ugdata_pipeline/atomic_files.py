"""Atomic local file writes (a temporary sibling renamed into place) whose files follow the umask.

``tempfile.mkstemp`` creates its file ``0600`` whatever the umask, and a rename keeps that mode, so files written
through it could not be read by the group or other users that read the tables (``0644`` under the usual umask);
here the temporary file is created with ``open(..., "xb")``, which applies the umask like any plain ``open``.
Readers never see a partial file: the rename replaces the old file in one step (POSIX).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_writer", "write_file_atomic", "write_text_atomic"]


@contextmanager
def atomic_writer(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[BinaryIO]:
    """
    A binary handle on a temporary sibling of ``path`` (its folder is created), renamed over ``path`` when the
    block ends without an exception and removed when it raises. ``fsync``: the bytes reach the disk before the
    rename (for records of finished work; it costs a disk flush per file, too much for many small cache files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a dot name: folder scans (``*.png``, ``shard-*.npz``) never pick up a file still being written
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_file_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, fsync=fsync) as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_writer`)."""
    write_file_atomic(path, text.encode("utf-8"), fsync=fsync)
