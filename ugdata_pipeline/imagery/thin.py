"""Thin dense street-level imagery: at most N images per small H3 cell, and one per capture sequence per cell.

Mapillary is dense where people drive (an image every 2-3 m along a sequence, several sequences over the same
street), which wastes captioning and training budget on near-duplicates and lets one sequence dominate a place.
The reference implementation samples at most 3 random images per S2 level-18 cell (about 35 m × 35 m); this module
does the same job deterministically.

Choice of cell: **H3 resolution 12** (:data:`H3_RESOLUTION`). H3 cells are near-equal in area everywhere (S2 and
degree grids shrink with latitude) and their ids are stable strings. Measured with ``h3.average_hexagon_area``:
resolution 12 averages 307 m² (edge 10.8 m, about 19 m across, an equal-area square of 17.5 m), resolution 11
averages 2,150 m² (about 46 m square-equivalent). Neither matches a 35 m square (1,225 m²); resolution 12 is the
finer one, so ``max_per_cell`` per resolution-12 cell keeps roughly four times as many images per 35 m as the
reference's 3 per S2-18 cell would — pass ``resolution=11`` (or a smaller ``max_per_cell``) for a sparser set.
The one-per-sequence rule is what removes the bulk of the near-duplicates either way.

Which images stay is decided by a total order, newest capture first (``captured_at``; unknown dates last), then
``image_id`` ascending, so the result depends neither on row order nor on randomness.

Plain Python on DataFrames; never imports Dagster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import h3
import numpy as np
import pandas as pd

from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.tables import require_columns

__all__ = ["H3_RESOLUTION", "MAX_PER_CELL", "ThinResult", "h3_cells", "thin_images"]

logger = logging.getLogger(__name__)

#: H3 resolution of the thinning cell (about 307 m² per hexagon, ~19 m across; see the module docstring).
H3_RESOLUTION = 12
#: Default most images kept per cell (the reference keeps 3 per ~35 m S2 cell).
MAX_PER_CELL = 3
#: Column added to the kept rows: the H3 cell id (hex string).
CELL_COLUMN = "h3_cell"


@dataclass(slots=True)
class ThinResult:
    """
    Kept images and what was dropped.

    Attributes
    ----------
    images
        The kept input rows, all input columns plus ``h3_cell``, in input order (index reset).
    counts
        ``input``, ``kept``, ``dropped``, ``dropped_same_sequence`` (another image of the same sequence was kept
        in the cell), ``dropped_cell_full`` (the cell already had ``max_per_cell`` images), ``cells``.
    """

    images: pd.DataFrame
    counts: dict[str, int]


def h3_cells(lon: np.ndarray | pd.Series, lat: np.ndarray | pd.Series, resolution: int = H3_RESOLUTION) -> np.ndarray:
    """
    H3 cell ids (hex strings) of points.

    Parameters
    ----------
    lon, lat
        Decimal degrees (EPSG:4326), same length.
    resolution
        H3 resolution, 0-15.

    Returns
    -------
    numpy.ndarray
        Object array of cell ids, aligned with the input.
    """
    lons = np.asarray(lon, dtype=float)
    lats = np.asarray(lat, dtype=float)
    return np.array([h3.latlng_to_cell(y, x, resolution) for x, y in zip(lons, lats, strict=True)], dtype=object)


def _validate(images: pd.DataFrame, max_per_cell: int, resolution: int) -> None:
    require_columns(
        images,
        ("image_id", "lon", "lat"),
        table="images",
        fix="Thinning needs image_id, lon, lat (and uses captured_at, sequence_id when present).",
        error=ImageryInputError,
    )
    if not isinstance(max_per_cell, int) or isinstance(max_per_cell, bool) or max_per_cell < 1:
        msg = f"`max_per_cell` must be a positive integer, got {max_per_cell!r}"
        raise ImageryInputError(msg)
    if not isinstance(resolution, int) or isinstance(resolution, bool) or not 0 <= resolution <= 15:
        msg = f"`resolution` must be an H3 resolution between 0 and 15, got {resolution!r}"
        raise ImageryInputError(msg)
    for column, limit in (("lon", 180.0), ("lat", 90.0)):
        values = pd.to_numeric(images[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (np.abs(values) > limit)
        if bad.any():
            msg = (
                f"images.{column} has {int(bad.sum())} NaN or out-of-range value(s) (decimal degrees within "
                f"±{limit:g}); drop or fix them before thinning"
            )
            raise ImageryInputError(msg)
    duplicated = images["image_id"].astype(str).duplicated()
    if duplicated.any():
        examples = sorted(set(images.loc[duplicated, "image_id"].astype(str)))[:5]
        msg = f"images.image_id must be unique, but {examples!r} repeat; deduplicate with drop_duplicates('image_id')"
        raise ImageryInputError(msg)


def thin_images(
    images: pd.DataFrame,
    *,
    max_per_cell: int = MAX_PER_CELL,
    resolution: int = H3_RESOLUTION,
) -> ThinResult:
    """
    Keep at most ``max_per_cell`` images per H3 cell and at most one image per sequence per cell.

    Images are taken in preference order (newest ``captured_at`` first, unknown dates last, then ``image_id``
    ascending): an image is kept unless its cell already holds an image of its sequence or ``max_per_cell``
    images. An empty or missing ``sequence_id`` counts as a sequence of its own.

    Parameters
    ----------
    images
        Table with ``image_id`` (unique), ``lon``, ``lat`` (decimal degrees, EPSG:4326) and optionally
        ``captured_at`` (ISO-8601 string or datetime; UTC assumed when naive) and ``sequence_id``.
    max_per_cell
        Most images kept per cell (at least 1).
    resolution
        H3 resolution of the cell (default 12, about 307 m²; see the module docstring for the choice).

    Returns
    -------
    ThinResult
        The kept rows (input order, plus ``h3_cell``) and counts.

    Raises
    ------
    ImageryInputError
        On a missing column, a bad coordinate, a duplicate ``image_id`` or a bad option.
    """
    _validate(images, max_per_cell, resolution)
    frame = images.reset_index(drop=True)
    n = len(frame)
    cells = h3_cells(frame["lon"], frame["lat"], resolution) if n else np.array([], dtype=object)
    ids = frame["image_id"].astype(str).to_numpy(dtype=object)
    if "captured_at" in frame.columns:
        captured = pd.to_datetime(frame["captured_at"], utc=True, errors="coerce", format="ISO8601")
        # Nanoseconds since the epoch, newest first; unknown dates sort after every known one.
        ticks = captured.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy()  # NaT cannot become int
        newest_first = np.where(captured.isna().to_numpy(), np.iinfo(np.int64).max, -ticks)
    else:
        newest_first = np.zeros(n, dtype=np.int64)
    if "sequence_id" in frame.columns:
        sequences = frame["sequence_id"].fillna("").astype(str).to_numpy(dtype=object)
    else:
        sequences = np.full(n, "", dtype=object)
    # An image without a sequence is its own sequence (the prefix cannot collide with a real sequence id).
    sequences = np.where(sequences == "", "\x00" + ids, sequences)
    order = np.lexsort((ids, newest_first))  # last key is primary: newest first, then id
    ranked = pd.DataFrame({"cell": cells[order], "sequence": sequences[order]}, index=order)
    first_of_sequence = ~ranked.duplicated(["cell", "sequence"], keep="first")
    candidates = ranked[first_of_sequence]
    within_cap = candidates.groupby("cell", sort=False).cumcount() < max_per_cell
    kept_rows = np.sort(candidates.index[within_cap.to_numpy()].to_numpy())
    kept = frame.iloc[kept_rows].copy()
    kept[CELL_COLUMN] = cells[kept_rows]
    kept = kept.reset_index(drop=True)
    counts = {
        "input": n,
        "kept": len(kept),
        "dropped": n - len(kept),
        "dropped_same_sequence": int((~first_of_sequence).sum()),
        "dropped_cell_full": int((~within_cap).sum()),
        "cells": len(set(cells.tolist())),
    }
    logger.info(
        "thinned %d images to %d (%d same-sequence, %d over %d per H3-%d cell) in %d cells",
        n,
        len(kept),
        counts["dropped_same_sequence"],
        counts["dropped_cell_full"],
        max_per_cell,
        resolution,
        counts["cells"],
    )
    return ThinResult(images=kept, counts=counts)
