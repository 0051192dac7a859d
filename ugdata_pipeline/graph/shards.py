"""Sub-city shards: a fixed grid of square tiles in the city's metric CRS, and the halo each tile's work needs.

A city of 10^5 images is built a shard at a time so that memory follows the shard, not the city (issue 16). A shard
is the set of images whose position falls in one tile of a grid anchored at the metric CRS's origin (tile
``e{col}_n{row}`` spans ``[col * size_m, (col + 1) * size_m)`` east and the same north), so a tile's key never
depends on which other images exist: adding images to a city never moves another image to another shard.

Work on a shard reads only the part of the graph that can influence it, its *halo*, and gives exactly what the whole
graph gives: hop-bounded walks (reasoning paths) read the nodes within a number of place-graph steps of the shard's
street nodes and the edges among them (:func:`hop_halo`; :mod:`ugdata_pipeline.reasoning.sharded` says why that
is exact and tests show it). The 700 m subgraphs are not built per shard: they already stream a chunk of images at
a time over the city's spatial index (:mod:`ugdata_pipeline.context.subgraph_stream`).

Images without a position (no finite lon/lat) form the shard :data:`UNPLACED`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyproj import Transformer

from ugdata_pipeline.errors import ShardConfigError
from ugdata_pipeline.graph.csr import CsrGraph, gather_neighbours

#: The shard of images without a finite position.
UNPLACED = "unplaced"


def _check_size(size_m: float) -> None:
    if not np.isfinite(size_m) or size_m <= 0:
        msg = f"shard size_m must be a positive number of metres (e.g. 2000), got {size_m!r}"
        raise ShardConfigError(msg)


def shard_keys(x: npt.ArrayLike, y: npt.ArrayLike, *, size_m: float) -> npt.NDArray[np.object_]:
    """The tile key (``e{col}_n{row}``) of each metric point; :data:`UNPLACED` where a coordinate is not finite."""
    _check_size(size_m)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    placed = np.isfinite(x) & np.isfinite(y)
    col = np.floor(np.where(placed, x, 0.0) / size_m).astype(np.int64)
    row = np.floor(np.where(placed, y, 0.0) / size_m).astype(np.int64)
    keys = np.array([f"e{c}_n{r}" for c, r in zip(col.tolist(), row.tolist(), strict=True)], dtype=object)
    keys[~placed] = UNPLACED
    return keys


def tile_bounds(key: str, *, size_m: float) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of tile ``key`` in metres of the metric CRS."""
    _check_size(size_m)
    try:
        col, row = (int(part[1:]) for part in key.split("_"))
        if not key.startswith("e") or "_n" not in key:
            raise ValueError(key)
    except ValueError:
        msg = f"{key!r} is not a tile key; tile keys look like 'e192_n3336' (the unplaced shard has no bounds)"
        raise ShardConfigError(msg) from None
    return col * size_m, row * size_m, (col + 1) * size_m, (row + 1) * size_m


def image_shards(images: pd.DataFrame, *, crs_metric: str, size_m: float) -> pd.Series:
    """The shard key of every image (from its ``lon`` / ``lat`` in EPSG:4326), indexed like ``images``."""
    _check_size(size_m)
    lon = pd.to_numeric(images["lon"], errors="coerce").to_numpy(dtype=np.float64)
    lat = pd.to_numeric(images["lat"], errors="coerce").to_numpy(dtype=np.float64)
    x, y = Transformer.from_crs("EPSG:4326", crs_metric, always_xy=True).transform(lon, lat)
    return pd.Series(shard_keys(x, y, size_m=size_m), index=images.index, name="shard")


def iter_shards(keys: pd.Series) -> Iterator[tuple[str, npt.NDArray[np.int64]]]:
    """``(key, positions)`` of each shard in key order, with the positions (``iloc``) of its rows in input order."""
    values = keys.to_numpy(dtype=object)
    for key in sorted(set(values.tolist())):
        yield key, np.flatnonzero(values == key)


def hop_halo(csr: CsrGraph, sources: npt.ArrayLike, *, hops: int) -> npt.NDArray[np.bool_]:
    """
    Which positions of ``csr`` lie within ``hops`` steps of any position in ``sources`` (the sources included).

    A multi-source BFS that expands only the frontier at each step
    (:func:`~ugdata_pipeline.graph.csr.gather_neighbours`), so a shard costs its halo, not the city; the adjacency
    is symmetric, so steps follow edges either way.
    """
    if hops < 0:
        msg = f"hops must be >= 0, got {hops!r}"
        raise ShardConfigError(msg)
    n = csr.matrix.shape[0]
    start = np.asarray(sources, dtype=np.int64)
    frontier = np.unique(start[(start >= 0) & (start < n)])
    reached = np.zeros(n, dtype=bool)
    reached[frontier] = True
    for _ in range(hops):
        _, neighbour = gather_neighbours(csr.indptr, csr.indices, frontier)
        frontier = np.unique(neighbour[~reached[neighbour]])
        if len(frontier) == 0:
            break
        reached[frontier] = True
    return reached
