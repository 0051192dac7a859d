"""The place graph that reasoning paths walk (every node but images) and its depth-limited, batched BFS."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.graph.csr import CsrGraph, build_csr, gather_neighbours

# ------------------------------------------------------------------------------------------------------------
# the place graph
# ------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PlaceGraph:
    """The place graph as arrays aligned with CSR positions (node ids sorted), built once per call."""

    csr: CsrGraph
    kind: npt.NDArray[np.object_]
    name: npt.NDArray[np.object_]
    category: npt.NDArray[np.object_]
    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    entry_key: npt.NDArray[np.int64]  # row * n + col of each stored CSR entry (sorted)
    entry_kind: npt.NDArray[np.object_]
    entry_src: npt.NDArray[np.int64]  # position of the edge's own src, for orientation
    entry_distance_m: npt.NDArray[np.float64]
    entry_bearing_deg: npt.NDArray[np.float64]
    entry_street: npt.NDArray[np.object_]
    crossing_streets: dict[int, tuple[str, ...]]
    mention_text: npt.NDArray[np.object_]  # folded text a node contributes to a query (name, streets)
    categories: tuple[str, ...]  # the category vocabulary that numbers the strata of target choice (sorted)

    @property
    def n(self) -> int:
        return len(self.kind)

    def entries(self, u: npt.NDArray[np.int64], v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Stored CSR entry of each step ``u -> v`` (every pair must be adjacent)."""
        return np.searchsorted(self.entry_key, u * self.n + v)


def place_categories(nodes: pd.DataFrame) -> tuple[str, ...]:
    """The sorted categories of the place nodes (a missing category is ``""``): the vocabulary of the strata."""
    place = nodes.loc[nodes["kind"] != "image", "category"]
    return tuple(sorted(set(place.fillna("").astype(str).tolist())))


def place_tables(
    nodes: pd.DataFrame, edges: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """
    What the place graph is made of: its nodes (every node but images, sorted by ``node_id``, so row = CSR
    position), its edges (those whose both ends are such nodes) and each edge's ``src`` / ``dst`` position.
    """
    place = nodes[nodes["kind"] != "image"].sort_values("node_id", kind="stable")
    known = pd.Index(place["node_id"].to_numpy(dtype=object))
    src_pos = known.get_indexer(edges["src"].to_numpy(dtype=object))
    dst_pos = known.get_indexer(edges["dst"].to_numpy(dtype=object))
    keep = (src_pos >= 0) & (dst_pos >= 0)
    return place, edges[keep].reset_index(drop=True), src_pos[keep], dst_pos[keep]


def build_place_graph(
    nodes: pd.DataFrame, edges: pd.DataFrame, *, categories: tuple[str, ...] | None = None
) -> PlaceGraph:
    """
    The place graph (every node but images, every edge between two of them) with its lookup arrays.

    Parameters
    ----------
    nodes, edges
        The graph tables (image nodes and ``image_street`` edges may be present; they are left out).
    categories
        The category vocabulary (:func:`place_categories`) of the whole city when ``nodes`` is a part of it (a
        shard's halo), so strata are numbered, and targets drawn, as on the whole city; by default the nodes' own.
    """
    place, place_edges, src_pos, dst_pos = place_tables(nodes, edges)
    own = place_categories(place)
    if categories is None:
        categories = own
    elif not set(own) <= set(categories):
        lacking = sorted(set(own) - set(categories))[:5]
        msg = f"categories lacks {lacking} of the nodes' categories; pass the whole city's (place_categories)"
        raise ValueError(msg)
    ids = place["node_id"].to_numpy(dtype=object)
    csr = build_csr(ids, place_edges)
    n = len(ids)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(csr.indptr))
    entry_key = rows * n + csr.indices.astype(np.int64)
    origin = csr.edge_row
    kind = place_edges["kind"].to_numpy(dtype=object)[origin]
    street = place_edges["street_name"].to_numpy(dtype=object)[origin]
    crossing_streets: dict[int, set[str]] = defaultdict(set)
    node_kind = place["kind"].to_numpy(dtype=object)
    is_crossing_edge = place_edges["kind"].to_numpy(dtype=object) == "crossing"
    ce_src = src_pos[is_crossing_edge]
    ce_dst = dst_pos[is_crossing_edge]
    names = place["name"].to_numpy(dtype=object)
    for a, b in zip(ce_src.tolist(), ce_dst.tolist(), strict=True):
        crossing, street_pos = (a, b) if node_kind[a] == "crossing" else (b, a)
        if node_kind[street_pos] == "street" and isinstance(names[street_pos], str):
            crossing_streets[crossing].add(names[street_pos])
    streets_of = {c: tuple(sorted(s)) for c, s in crossing_streets.items()}
    display = np.array([_display_name(nm, nid) for nm, nid in zip(names, ids, strict=True)], dtype=object)
    mention = display.copy()
    for c, s in streets_of.items():
        mention[c] = display[c] + " | " + " | ".join(s)
    return PlaceGraph(
        csr=csr,
        kind=node_kind,
        name=display,
        category=place["category"].to_numpy(dtype=object),
        lon=place["lon"].to_numpy(dtype=np.float64),
        lat=place["lat"].to_numpy(dtype=np.float64),
        entry_key=entry_key,
        entry_kind=kind,
        entry_src=src_pos[origin].astype(np.int64),
        entry_distance_m=place_edges["distance_m"].to_numpy(dtype=np.float64)[origin],
        entry_bearing_deg=place_edges["bearing_deg"].to_numpy(dtype=np.float64)[origin],
        entry_street=street,
        crossing_streets=streets_of,
        mention_text=mention,
        categories=tuple(categories),
    )


def _display_name(name: object, node_id: str) -> str:
    if isinstance(name, str) and name.strip():
        return name
    return node_id


# ------------------------------------------------------------------------------------------------------------
# traversal: depth-limited BFS, batched over sources
# ------------------------------------------------------------------------------------------------------------


class Traversal(Protocol):
    """Depth-limited BFS from a batch of sources, with depth and parent lookups while the batch is live."""

    def run(self, sources: npt.NDArray[np.int64]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reached ``(batch row, node, depth)`` for every node within ``max_depth`` of each source."""
        ...

    def depth_of(self, rows: npt.NDArray[np.int64], nodes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Depth of each node from its row's source, -1 when not reached."""
        ...

    def parent_of(self, rows: npt.NDArray[np.int64], nodes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """BFS parent (smallest-position neighbour one level up) of reached nodes; -1 for the source."""
        ...

    def release(self) -> None:
        """Forget the batch."""
        ...


class CsrTraversal:
    """
    Vectorised BFS on the CSR adjacency for a batch of sources at once.

    State lives in dense ``(batch, n)`` buffers that are allocated once and reset only where touched, so a
    lookup is one fancy-index. Each level expands the whole frontier of every source in a few numpy calls;
    the frontier is kept sorted by ``(row, node)``, and ``np.unique(..., return_index=True)`` keeps the first
    (smallest-position) parent of each newly reached node.
    """

    def __init__(self, graph: PlaceGraph, max_depth: int, batch_size: int) -> None:
        self.indptr = graph.csr.indptr.astype(np.int64)
        self.indices = graph.csr.indices.astype(np.int64)
        self.n = graph.n
        self.max_depth = max_depth
        self.batch_size = batch_size
        self.depth_plus_one = np.zeros(batch_size * self.n, dtype=np.int8)
        self.parent = np.full(batch_size * self.n, -1, dtype=np.int32)
        self._touched: np.ndarray = np.empty(0, dtype=np.int64)

    def run(self, sources: npt.NDArray[np.int64]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        frontier = np.arange(len(sources), dtype=np.int64) * n + sources
        self.depth_plus_one[frontier] = 1
        self.parent[frontier] = -1
        levels = [frontier]
        for depth in range(1, self.max_depth + 1):
            row = frontier // n
            node = frontier - row * n
            owner, neighbour = gather_neighbours(self.indptr, self.indices, node)
            if len(neighbour) == 0:
                break
            key = row[owner] * n + neighbour
            fresh = self.depth_plus_one[key] == 0
            key, owner = key[fresh], owner[fresh]
            if len(key) == 0:
                break
            frontier, first = np.unique(key, return_index=True)
            self.depth_plus_one[frontier] = depth + 1
            self.parent[frontier] = node[owner[first]]
            levels.append(frontier)
        self._touched = np.concatenate(levels)
        rows = self._touched // n
        return rows, self._touched - rows * n, self.depth_plus_one[self._touched].astype(np.int64) - 1

    def depth_of(self, rows: npt.NDArray[np.int64], nodes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return self.depth_plus_one[rows * self.n + nodes].astype(np.int64) - 1

    def parent_of(self, rows: npt.NDArray[np.int64], nodes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return self.parent[rows * self.n + nodes].astype(np.int64)

    def release(self) -> None:
        self.depth_plus_one[self._touched] = 0
        self._touched = np.empty(0, dtype=np.int64)
