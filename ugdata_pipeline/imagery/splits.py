"""Spatially disjoint train / val / test splits of a city's images, and their invariants.

Decisions (all distances in metres, measured in the images' UTM CRS):

* **Held-out city**: every image is ``test``.
* **Training city, ``layout="blocks"``** (large cities): images are gridded into square blocks of ``block_m``
  (default ``max(2 * buffer_m, 250)``, i.e. 1 km for the default 500 m buffer, so a block keeps images after
  the buffer bites into it). Blocks, sorted by grid index, are shuffled with ``numpy.random.default_rng(seed)``
  and dealt to train, val and test by ``fractions`` (largest remainders; every split with a positive fraction
  gets at least one block when there are enough blocks).
* **Training city, ``layout="sweep"``** (small cities, where random 1 km blocks and buffers around each of them
  would exclude most images): bands along the longer axis. The test split is the end of the city holding the
  test fraction of the images (which end: by ``seed``); past the test buffer comes a val band holding the val
  fraction of the rest, then train. Val is buffered from train by ``val_buffer_m`` (default half the test
  buffer: a small city cannot afford two full ones), so picking the best checkpoint on val is not optimistic.
* **``layout="auto"``** (default): ``blocks`` when the city spans at least :data:`MIN_BLOCKS_FOR_BLOCKS` blocks
  and the blocks layout keeps at least as many train images as the sweep (buffers round every block can exclude
  most of a mid-sized city), else ``sweep``.
* **Sequences**: when a ``sequence_id`` column exists, every image of a sequence takes the split held by
  most of its images (ties: test, then val, then train), so no sequence spans splits.
* **Buffer**: images of *different* splits must lie at least ``buffer_m`` apart (val and train:
  ``val_buffer_m``).
  Test images always stay; a val image closer than ``buffer_m`` to a test image, and a train image closer
  than ``buffer_m`` to a test or val image, become ``split = "excluded"``. Excluded rows are kept (so their
  number can be reported) and must be filtered out before training; they belong to no split. This keeps
  the benchmark (test) intact and guarantees no test image lies within ``buffer_m`` of a train image.
* **cell**: the ``"<i>_<j>"`` index of the 35 m UTM grid cell holding the image (:data:`CELL_SIZE_M`),
  the unit of thinning (at most a few images per cell).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyproj import CRS, Transformer
from scipy.spatial import cKDTree

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.graph.crs import metric_crs
from ugdata_pipeline.imagery.anchor import validate_images

logger = logging.getLogger(__name__)

#: Side of the thinning cell in metres (the ``cell`` column).
CELL_SIZE_M = 35.0
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Split label of images removed by the buffer rule; they belong to no split.
EXCLUDED = "excluded"
#: Below this many occupied blocks, ``layout="auto"`` uses the sweep layout.
MIN_BLOCKS_FOR_BLOCKS = 12
_PRIORITY = {"test": 0, "val": 1, "train": 2}  # who wins a sequence tie and who keeps images near a border


def _metres(lon: np.ndarray, lat: np.ndarray, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    """Project decimal degrees to metres in the city's metric CRS."""
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _check_positive(name: str, value: object, *, allow_zero: bool = False, hint: str = "") -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < 0 if allow_zero else value <= 0):  # type: ignore[operator]
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be a finite distance {bound} in metres, got {value!r}{hint}"
        raise ImageryInputError(msg)
    return float(value)  # type: ignore[arg-type]


def cell_id(lon: npt.ArrayLike, lat: npt.ArrayLike, *, crs_metric: str, size_m: float = CELL_SIZE_M) -> np.ndarray:
    """
    Grid cell of each point: ``"<i>_<j>"`` with ``i = floor(x / size_m)``, ``j = floor(y / size_m)``.

    Parameters
    ----------
    lon, lat
        Decimal degrees (EPSG:4326), equal-length arrays.
    crs_metric
        The city's metric CRS (``UrbanGraph.crs_metric``), the grid's frame.
    size_m
        Cell side in metres (35 m, the thinning cell, by default).

    Returns
    -------
    cells
        Object array of cell ids, one per point.
    """
    crs = metric_crs(crs_metric, needed_by="cell_id")
    size = _check_positive("size_m", size_m, hint="; the thinning cell is 35.0")
    lon_a, lat_a = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    if lon_a.size == 0:
        return np.empty(0, dtype=object)
    x, y = _metres(lon_a, lat_a, crs)
    i = np.floor(x / size).astype(np.int64).astype(str)
    j = np.floor(y / size).astype(np.int64).astype(str)
    return np.char.add(np.char.add(i, "_"), j).astype(object)


def _block_counts(n_blocks: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """Blocks per split by largest remainders, then at least one per positive fraction where possible."""
    share = np.asarray(fractions) * n_blocks
    counts = np.floor(share).astype(np.int64)
    remainder = n_blocks - int(counts.sum())
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[:remainder]] += 1
    for k in np.flatnonzero((np.asarray(fractions) > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[k] += 1
    return counts


def _sweep(
    x: np.ndarray, y: np.ndarray, fractions: tuple[float, float, float], seed: int, buffer_m: float
) -> np.ndarray:
    """
    Bands along the longer axis: test at one end (its share of images), then -- past the test buffer -- a val
    band (its share of the rest), then train. Which end is test: by ``seed``.
    """
    along = x if np.ptp(x) >= np.ptp(y) else y
    if seed % 2:
        along = -along
    n = len(along)
    order = np.argsort(-along, kind="stable")
    split = np.full(n, "train", dtype=object)
    n_test = round(fractions[2] * n)
    split[order[:n_test]] = "test"
    rest = order[n_test:]
    if n_test and len(rest) and buffer_m > 0:
        test = np.flatnonzero(split == "test")
        dist, _ = cKDTree(np.column_stack([x[test], y[test]])).query(
            np.column_stack([x[rest], y[rest]]), k=1, distance_upper_bound=buffer_m
        )
        rest = rest[dist >= buffer_m]  # the buffer band goes to no split; val starts past it
    val_share = fractions[1] / max(fractions[0] + fractions[1], 1e-12)
    n_val = round(val_share * len(rest)) if val_share > 0 else 0
    split[rest[:n_val]] = "val"
    return split


def _enforce_buffer(
    split: np.ndarray, x: np.ndarray, y: np.ndarray, buffer_m: float, val_buffer_m: float
) -> np.ndarray:
    """Exclude val and train near test (< ``buffer_m``), then train near val (< ``val_buffer_m``)."""
    split = split.copy()
    xy = np.column_stack([x, y])
    for loser, winner, distance in (
        ("val", "test", buffer_m),
        ("train", "test", buffer_m),
        ("train", "val", val_buffer_m),
    ):
        keep = split == winner
        lose = split == loser
        if distance <= 0 or not keep.any() or not lose.any():
            continue
        dist, _ = cKDTree(xy[keep]).query(xy[lose], k=1, distance_upper_bound=distance)
        near = np.flatnonzero(lose)[dist < distance]
        split[near] = EXCLUDED
    return split


def assign_splits(
    images: pd.DataFrame,
    *,
    city_split: Literal["train", "held_out"],
    crs_metric: str,
    buffer_m: float = 500.0,
    block_m: float | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    cell_size_m: float = CELL_SIZE_M,
    layout: Literal["auto", "blocks", "sweep"] = "auto",
    val_buffer_m: float | None = None,
) -> pd.DataFrame:
    """
    Add ``split`` (train | val | test | excluded) and ``cell`` columns to a city's images.

    See the module docstring for the rules (blocks, buffer, sequences, cells).

    Parameters
    ----------
    images
        One row per image with at least ``image_id``, ``lon`` and ``lat`` (decimal degrees); an optional
        ``sequence_id`` column keeps sequences within one split.
    city_split
        ``"train"`` for a training city, ``"held_out"`` for a city whose images are all test.
    crs_metric
        The city's metric CRS (``UrbanGraph.crs_metric``); blocks, buffers and cells are measured in it.
    buffer_m
        Minimum distance in metres between images of different splits.
    block_m
        Side in metres of the square blocks dealt to splits; default ``max(2 * buffer_m, 250)``.
    fractions
        Shares of blocks for (train, val, test); non-negative, summing to 1.
    seed
        Seed of the block shuffle; the same seed gives the same splits.
    cell_size_m
        Side in metres of the thinning cell written to ``cell``.
    layout
        ``"blocks"``, ``"sweep"`` or ``"auto"`` (see the module docstring).
    val_buffer_m
        Minimum distance in metres between val and train images; default ``buffer_m`` with blocks and
        ``buffer_m / 2`` with the sweep (a small city cannot afford two full buffers).

    Returns
    -------
    images
        A copy with ``split`` and ``cell``; buffer-removed images have ``split == "excluded"``.

    Raises
    ------
    ImageryInputError
        On invalid images (missing columns, bad coordinates, duplicate ids) or options.
    """
    validate_images(images, required=("image_id", "lon", "lat"))
    crs = metric_crs(crs_metric, needed_by="assign_splits")
    if city_split not in ("train", "held_out"):
        msg = f"city_split must be 'train' or 'held_out' (the city's split in cities.yaml), got {city_split!r}"
        raise ImageryInputError(msg)
    buffer = _check_positive("buffer_m", buffer_m, allow_zero=True, hint="; the default is 500.0")
    if val_buffer_m is not None:
        _check_positive("val_buffer_m", val_buffer_m, allow_zero=True, hint="; leave it out for the default")
    block = (
        max(2 * buffer, 250.0)
        if block_m is None
        else _check_positive("block_m", block_m, hint="; leave it out for max(2 * buffer_m, 250)")
    )
    frac = tuple(float(f) for f in fractions)
    if len(frac) != 3 or any(not math.isfinite(f) or f < 0 for f in frac) or not math.isclose(sum(frac), 1.0):
        msg = (
            f"fractions must be three shares >= 0 for (train, val, test) summing to 1, got {tuple(fractions)!r}; "
            "e.g. (0.8, 0.1, 0.1)"
        )
        raise ImageryInputError(msg)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        msg = f"seed must be an integer, got {seed!r}"
        raise ImageryInputError(msg)
    if layout not in ("auto", "blocks", "sweep"):
        msg = f"layout must be 'auto', 'blocks' or 'sweep', got {layout!r}"
        raise ImageryInputError(msg)
    if block <= buffer:
        logger.warning(
            "block_m=%s is not larger than buffer_m=%s: the buffer may empty whole val blocks", block, buffer
        )

    out = images.copy()
    lon = out["lon"].to_numpy(dtype=float)
    lat = out["lat"].to_numpy(dtype=float)
    out["cell"] = cell_id(lon, lat, size_m=cell_size_m, crs_metric=crs_metric)
    if city_split == "held_out" or out.empty:
        out["split"] = np.full(len(out), "test" if city_split == "held_out" else EXCLUDED, dtype=object)
        return out

    x, y = _metres(lon, lat, crs)
    bx = np.floor(x / block).astype(np.int64)
    by = np.floor(y / block).astype(np.int64)
    blocks = pd.MultiIndex.from_arrays([bx, by])
    unique_blocks = blocks.unique().sort_values()
    block_of = unique_blocks.get_indexer(blocks)

    def split_by(chosen: str) -> np.ndarray:
        if chosen == "blocks":
            counts = _block_counts(len(unique_blocks), frac)
            labels = np.repeat(np.array(SPLITS, dtype=object), counts)
            dealt = np.empty(len(unique_blocks), dtype=object)
            dealt[np.random.default_rng(int(seed)).permutation(len(unique_blocks))] = labels
            split = dealt[block_of]
        else:
            split = _sweep(x, y, frac, int(seed), buffer)
        if "sequence_id" in out.columns:
            split = _sequence_majority(out["sequence_id"], split)
        val_buffer = float(val_buffer_m) if val_buffer_m is not None else (buffer if chosen == "blocks" else buffer / 2)
        return _enforce_buffer(split, x, y, buffer, val_buffer)

    if layout == "auto":
        # Blocks scatter test areas over the city, but a buffer round every block can exclude most images of a
        # mid-sized city (downtown Vancouver, 12 blocks: 65 % excluded, 18 % train); keep whichever layout
        # trains on more images.
        final = split_by("sweep")
        if len(unique_blocks) >= MIN_BLOCKS_FOR_BLOCKS:
            by_blocks = split_by("blocks")
            if (by_blocks == "train").sum() >= (final == "train").sum():
                final, layout = by_blocks, "blocks"
            else:
                layout = "sweep"
        else:
            layout = "sweep"
    else:
        final = split_by(layout)
    out["split"] = final
    excluded = int((final == EXCLUDED).sum())
    tally = {s: int((final == s).sum()) for s in SPLITS}
    empty = [s for s, f in zip(SPLITS, frac, strict=True) if f > 0 and tally[s] == 0]
    if empty:
        logger.warning(
            "split(s) %s hold no images after the %s m buffer (%s blocks of %s m); use smaller blocks or a larger area",
            empty,
            buffer,
            len(unique_blocks),
            block,
        )
    logger.info(
        "split %s images (%s layout, %s blocks of %s m): %s; %s excluded by the %s m buffer",
        f"{len(out):,}",
        layout,
        len(unique_blocks),
        block,
        tally,
        excluded,
        buffer,
    )
    return out


def _sequence_majority(sequence_id: pd.Series, split: np.ndarray) -> np.ndarray:
    """Give every image of a sequence the split most of its images hold (ties by test, val, train)."""
    frame = pd.DataFrame({"seq": sequence_id.to_numpy(), "split": split})
    has_seq = frame["seq"].notna()
    if not has_seq.any():
        return split
    tally = frame[has_seq].groupby(["seq", "split"]).size().rename("n").reset_index()
    tally["priority"] = tally["split"].map(_PRIORITY)
    winner = (
        tally.sort_values(["seq", "n", "priority"], ascending=[True, False, True], kind="stable")
        .drop_duplicates("seq")
        .set_index("seq")["split"]
    )
    result = split.copy()
    result[has_seq.to_numpy()] = winner.reindex(frame.loc[has_seq, "seq"]).to_numpy(dtype=object)
    return result


def no_test_near_train(images: pd.DataFrame, buffer_m: float, *, crs_metric: str) -> CheckOutcome:
    """
    No ``test`` image lies closer than ``buffer_m`` metres to a ``train`` image (KD-tree in UTM).

    Parameters
    ----------
    images
        Table with ``image_id``, ``lon``, ``lat`` and ``split``.
    buffer_m
        The buffer in metres the splits were made with.
    crs_metric
        The city's metric CRS (``UrbanGraph.crs_metric``), the one the splits were made in.

    Returns
    -------
    CheckOutcome
        ``observed`` = number of test images closer than ``buffer_m`` to some train image.
    """
    crs = metric_crs(crs_metric, needed_by="no_test_near_train")
    buffer = _check_positive("buffer_m", buffer_m, allow_zero=True)
    expected = f"0 test images within {buffer:g} m of a train image"
    split = images["split"].to_numpy(dtype=object)
    test, train = split == "test", split == "train"
    if not test.any() or not train.any() or buffer == 0:
        return CheckOutcome(True, 0, expected)
    x, y = _metres(images["lon"].to_numpy(dtype=float), images["lat"].to_numpy(dtype=float), crs)
    xy = np.column_stack([x, y])
    dist, _ = cKDTree(xy[train]).query(xy[test], k=1, distance_upper_bound=buffer)
    near = dist < buffer
    ids = images["image_id"].to_numpy(dtype=object)[test][near]
    return CheckOutcome(not near.any(), int(near.sum()), expected, [str(i) for i in ids[:10]])


def no_sequence_spans_splits(images: pd.DataFrame) -> CheckOutcome:
    """
    Every ``sequence_id`` lies in one split (``excluded`` rows and missing sequence ids are ignored).

    Returns
    -------
    CheckOutcome
        ``observed`` = number of sequences whose images hold more than one of train / val / test.
    """
    expected = "0 sequences spanning splits"
    if "sequence_id" not in images.columns:
        return CheckOutcome(True, 0, expected)
    frame = images.loc[images["split"].isin(SPLITS) & images["sequence_id"].notna(), ["sequence_id", "split"]]
    per_seq = frame.groupby("sequence_id")["split"].nunique()
    spanning = per_seq.index[per_seq.to_numpy() > 1]
    return CheckOutcome(len(spanning) == 0, len(spanning), expected, [str(s) for s in spanning[:10]])
