"""The ``images`` manifest: the one data contract both image sources write (the offline renderer and Mapillary)."""

from __future__ import annotations

__all__ = ["MANIFEST_COLUMNS"]

#: Columns of the ``images`` table, in order: what every downstream stage may rely on, whichever source made it.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "source",
    "lon",
    "lat",
    "compass_angle",
    "captured_at",
    "sequence_id",
    "path",
    "width",
    "height",
    "is_pano",
    "creator",
    "scene_facts",
)
