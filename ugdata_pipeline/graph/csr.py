"""Compressed sparse row adjacency of the urban graph, built once for the graph algorithms of later stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import csr_array


@dataclass(frozen=True, slots=True)
class CsrGraph:
    """
    Symmetric adjacency over the graph's nodes.

    ``matrix[i, j]`` is the edge distance in metres between node ``i`` and ``j`` (both directions stored;
    the shortest when several edges join the pair). ``edge_row[k]`` is the row of the edges table that
    produced stored entry ``k``, so edge kinds and bearings can be looked up from a traversal.
    """

    node_ids: npt.NDArray[np.object_]  # position -> node_id
    matrix: csr_array  # (N, N) float64 distances in metres
    edge_row: npt.NDArray[np.int64]  # (nnz,) row of the edges table behind each stored entry

    @property
    def indptr(self) -> npt.NDArray[np.int32]:
        return self.matrix.indptr

    @property
    def indices(self) -> npt.NDArray[np.int32]:
        return self.matrix.indices

    def index(self, node_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Positions of ``node_ids``; raises ``KeyError`` naming the first unknown id."""
        lookup = pd.Index(self.node_ids)
        positions = lookup.get_indexer(np.asarray(node_ids, dtype=object))
        if (positions < 0).any():
            missing = np.asarray(node_ids, dtype=object)[positions < 0][0]
            msg = f"node {missing!r} is not in the graph"
            raise KeyError(msg)
        return positions.astype(np.int64)

    def neighbours(self, position: int) -> npt.NDArray[np.int32]:
        """Positions adjacent to the node at ``position``."""
        return self.matrix.indices[self.matrix.indptr[position] : self.matrix.indptr[position + 1]]


def gather_neighbours(
    indptr: npt.NDArray[np.integer], indices: npt.NDArray[np.integer], positions: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """
    Every neighbour of every node in ``positions`` at once: ``(owner, neighbour)``, where ``owner[k]`` indexes
    ``positions`` (repeats, in CSR order). The one vectorised frontier expansion of the BFS-like traversals.
    """
    starts = indptr[positions]
    counts = indptr[positions + 1] - starts
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(positions), dtype=np.int64), counts)
    offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, indices[np.repeat(starts, counts) + offset].astype(np.int64)


def build_csr(node_ids: npt.ArrayLike, edges: pd.DataFrame) -> CsrGraph:
    """
    Build the symmetric CSR adjacency of a graph.

    Parameters
    ----------
    node_ids
        All node ids, in the order that defines positions.
    edges
        ``src``, ``dst``, ``distance_m`` (metres); each edge is stored in both directions.

    Raises
    ------
    KeyError
        An edge endpoint is not among ``node_ids``.
    """
    ids = np.asarray(node_ids, dtype=object)
    lookup = pd.Index(ids)
    if not lookup.is_unique:
        msg = "node ids must be unique to build the adjacency"
        raise ValueError(msg)
    src = lookup.get_indexer(edges["src"].to_numpy(dtype=object))
    dst = lookup.get_indexer(edges["dst"].to_numpy(dtype=object))
    unknown = (src < 0) | (dst < 0)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        msg = f"edge {edges['src'].iat[row]!r} -> {edges['dst'].iat[row]!r} names a node that is not in the graph"
        raise KeyError(msg)
    rows = np.concatenate([src, dst])
    cols = np.concatenate([dst, src])
    weight = np.tile(edges["distance_m"].to_numpy(dtype=np.float64), 2)
    origin = np.tile(np.arange(len(edges), dtype=np.int64), 2)
    # keep the shortest edge per (row, col) so duplicates never sum up
    order = np.lexsort((weight, cols, rows))
    rows, cols, weight, origin = rows[order], cols[order], weight[order], origin[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols, weight, origin = rows[first], cols[first], weight[first], origin[first]
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    indptr = np.cumsum(indptr)
    matrix = csr_array((weight, cols, indptr), shape=(len(ids), len(ids)))
    return CsrGraph(node_ids=ids, matrix=matrix, edge_row=origin)
