"""Spatial reasoning paths (SRP): walks from each image node to POIs and AOIs over the anchored urban graph.

Semantics (reference §4, with its bugs fixed, §9.1/§9.3):

* **Traversal graph.** The *place graph*: every node except ``image`` nodes, every edge between two place
  nodes. An image is only ever a path's first node: the path is ``image -> its street`` (the ``image_street``
  edge) followed by a walk over the place graph, so a path never passes through another image node and never
  joins images (of any split). Images with ``split == "excluded"`` get no path (reason recorded).
* **Hops** count every step, the image step included: ``image -> street -> POI`` is 2 hops.
* **Levels and parents in one pass.** A breadth-first search from each distinct street node that holds
  images (many images share one), depth-limited to ``max_hops - 1`` place hops, batched over sources on the
  CSR adjacency (:mod:`ugdata_pipeline.graph.csr`), with vectorised numpy frontier expansion. The **shortest**
  path to a node follows the BFS parents; the parent of a node is its smallest-position neighbour one level
  up (positions are node ids in sorted order), so paths are canonical and do not depend on row order.
* **Targets**: place nodes of kind ``poi``/``aoi`` ``min_hops``..``max_hops`` hops from the image and within
  ``max_distance_m`` straight-line metres of it (prefiltered on a local equirectangular approximation, good to
  about 1e-6 relative at 1.5 km; the reported ``distance_m``/``bearing_deg`` are geodesic,
  :mod:`ugdata_pipeline.graph.geodesy`).
* **Stratified choice.** Candidates are grouped into strata *hop band × distance band × category* (hop bands
  from :attr:`PathConfig.hop_band_edges`, distance bands from
  :data:`ugdata_pipeline.graph.text.DISTANCE_BANDS_M`). Each image draws a random order of its strata and a
  random order inside each stratum, then takes targets round-robin (first of every stratum, then second, ...).
  The randomness is a counter-based hash keyed by ``(city, seed, image node, target/stratum)``, i.e. a seeded
  generator per (city, image): the same seed gives the same paths, and adding images never changes another
  image's paths.
* **Alternatives** (``path_type = "alternative"``): for a chosen target, the walk whose **last step differs**
  from the shortest path's (the first deviation of Yen's algorithm, at the target), built from the BFS
  parents of the other neighbour; among the neighbours, the one sharing the fewest intermediate nodes with the
  shortest path wins, then the fewest hops, then the smallest position. It must be simple and stay inside the
  hop window. ``round(max_paths * alternative_share)`` slots go to alternatives of the first-ranked targets;
  slots without an alternative are filled with shortest paths to further targets.
* **No leak.** A candidate whose target name (the shared rule, :func:`.mentions.mentions_name`)
  appears in the names its query text would carry (intermediate nodes, streets at crossings) is skipped in
  favour of the next-ranked target; every finished text is checked again and a path whose ``path_text`` or
  ``path_sentence`` still mentions the target is dropped. Both are counted (``rejected/target_name_in_query``).
  We reject rather than rephrase: renaming a street would break the text's link to the graph.

Step metrics (``step_distance_m``, ``step_bearing_deg``) follow a walker's position, starting at the image:
onto a street from the image or a place, the edge's length and bearing (the position moves by that vector);
``crossing -> street`` is a turn (length 0, bearing of the next move); ``along_street`` steps use the edge's
along-street length and bearing; any other step runs straight from the current position to the node's point
(crossing, POI, AOI anchor). A reversed edge's bearing is its bearing + 180° (off by < 0.03° on a 1.5 km walk).

``view_direction`` is where the target lies for the camera (bearing image -> target minus ``compass_angle``:
ahead / right / behind / left, 90° sectors centred on the heading); ``None`` when the compass angle is NaN.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.errors import ReasoningInputError
from ugdata_pipeline.graph.csr import CsrGraph, build_csr
from ugdata_pipeline.graph.geodesy import WGS84, distance_bearing, normalize_bearing_deg
from ugdata_pipeline.graph.text import COMPASS_WORDS, DISTANCE_BANDS_M, compass_index
from ugdata_pipeline.imagery.anchor import image_node_ids
from ugdata_pipeline.reasoning.mentions import LeakIndex, mentions_name
from ugdata_pipeline.reasoning.text import (
    IMAGE_TRIPLE_NAME,
    MASKED_SENTENCE_NAME,
    MASKED_TRIPLE_NAME,
    join_clauses,
    measure_tuples,
    step_clause,
    target_sentence,
    triple_chain,
    view_direction,
)

logger = logging.getLogger(__name__)

#: Columns of the ``srp`` table (DESIGN/brief data contract), then the per-step metrics.
SRP_COLUMNS: tuple[str, ...] = (
    "image_id",
    "image_node",
    "split",
    "target_node",
    "target_name",
    "target_category",
    "hops",
    "path_nodes",
    "path_relations",
    "path_text",
    "path_sentence",
    "target_text",
    "distance_m",
    "bearing_deg",
    "compass",
    "view_direction",
    "path_type",
    "route_m",
)
STEP_COLUMNS: tuple[str, ...] = ("step_distance_m", "step_bearing_deg")
MISSING_COLUMNS: tuple[str, ...] = ("image_id", "reason")
IMAGE_COLUMNS: tuple[str, ...] = ("image_id", "source", "lon", "lat", "compass_angle", "split", "street_node")

REASON_EXCLUDED = "split is 'excluded' (removed by the split buffer); such images get no paths"
REASON_NOT_ANCHORED = "image has no image_street edge to a street node of the graph"
REASON_NO_TARGET = "no POI/AOI within the hop window and distance limit"
REASON_ALL_LEAK = "every candidate target's name appears in its own query text"

_BATCH_CELLS = 1 << 25  # sources x nodes of the dense per-batch BFS buffers (int8 depth + int32 parent)
_CHUNK_PAIRS = 1 << 22  # (image, candidate) pairs ranked at once


@dataclass(frozen=True, slots=True)
class PathConfig:
    """Options of :func:`build_paths`; distances in metres, hops count every step (image step included)."""

    # Each field's "doc" is its description in the Dagster launchpad too (assets/_config.py derives the run config).
    max_paths: int = field(default=10, metadata={"doc": "Paths per image at most (shortest + alternatives)."})
    min_hops: int = field(default=2, metadata={"doc": "Fewest hops to a target (image -> street -> POI is 2 hops)."})
    max_hops: int = field(default=8, metadata={"doc": "Most hops to a target."})
    max_distance_m: float = field(
        default=1500.0, metadata={"doc": "Largest straight-line (geodesic) distance (m) from the image to a target."}
    )
    alternatives: bool = field(
        default=True, metadata={"doc": "Whether to emit 'alternative' paths next to 'shortest' ones."}
    )
    alternative_share: float = field(
        default=0.2,
        metadata={"doc": "Share of max_paths reserved for alternatives (rounded; unused slots go to shortest paths)."},
    )
    hop_band_edges: tuple[int, ...] = field(
        default=(4, 6), metadata={"doc": "Lower edges of the hop bands after the first, e.g. (4, 6): 2-3, 4-5, 6-8."}
    )
    seed: int = field(default=0, metadata={"doc": "Seed of the stratified target choice per (city, image)."})
    target_kinds: tuple[str, ...] = field(default=("poi", "aoi"), metadata={"doc": "Node kinds that can be targets."})

    def __post_init__(self) -> None:
        for name in ("max_paths", "min_hops", "max_hops", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                msg = f"PathConfig.{name} must be an int >= 0, got {value!r}"
                raise ReasoningInputError(msg)
        if self.max_paths < 1:
            msg = f"PathConfig.max_paths must be >= 1, got {self.max_paths!r}"
            raise ReasoningInputError(msg)
        if not 2 <= self.min_hops <= self.max_hops <= 64:
            msg = (
                f"PathConfig needs 2 <= min_hops <= max_hops <= 64 (the image step plus at least one place "
                f"step), got min_hops={self.min_hops!r}, max_hops={self.max_hops!r}"
            )
            raise ReasoningInputError(msg)
        if not (
            isinstance(self.max_distance_m, int | float)
            and math.isfinite(self.max_distance_m)
            and self.max_distance_m > 0
        ):
            msg = f"PathConfig.max_distance_m must be a finite distance > 0 in metres, got {self.max_distance_m!r}"
            raise ReasoningInputError(msg)
        if not 0 <= self.alternative_share <= 1:
            msg = f"PathConfig.alternative_share must be in [0, 1], got {self.alternative_share!r}"
            raise ReasoningInputError(msg)
        if list(self.hop_band_edges) != sorted(set(self.hop_band_edges)):
            msg = f"PathConfig.hop_band_edges must be strictly increasing, got {self.hop_band_edges!r}"
            raise ReasoningInputError(msg)
        if not self.target_kinds or "image" in self.target_kinds:
            msg = f"PathConfig.target_kinds must name place kinds (e.g. ('poi', 'aoi')), got {self.target_kinds!r}"
            raise ReasoningInputError(msg)

    @property
    def alternative_slots(self) -> int:
        """Number of ``max_paths`` slots reserved for alternatives."""
        return round(self.max_paths * self.alternative_share) if self.alternatives else 0


@dataclass(slots=True)
class PathResult:
    """
    Output of :func:`build_paths`.

    Attributes
    ----------
    paths
        One row per path: :data:`SRP_COLUMNS` then :data:`STEP_COLUMNS` (one metre / degree value per step).
    missing
        ``image_id``, ``reason`` of every input image without a path.
    counts
        Metadata-friendly figures: images, paths by type, hop and distance-band histograms, rejections.
    """

    paths: pd.DataFrame
    missing: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


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

    @property
    def n(self) -> int:
        return len(self.kind)

    def entries(self, u: npt.NDArray[np.int64], v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Stored CSR entry of each step ``u -> v`` (every pair must be adjacent)."""
        return np.searchsorted(self.entry_key, u * self.n + v)


def build_place_graph(nodes: pd.DataFrame, edges: pd.DataFrame) -> PlaceGraph:
    """
    The place graph (every node but images, every edge between two of them) with its lookup arrays.

    Parameters
    ----------
    nodes, edges
        The graph tables (image nodes and ``image_street`` edges may be present; they are left out).
    """
    place = nodes[nodes["kind"] != "image"].sort_values("node_id", kind="stable")
    ids = place["node_id"].to_numpy(dtype=object)
    known = pd.Index(ids)
    src_pos = known.get_indexer(edges["src"].to_numpy(dtype=object))
    dst_pos = known.get_indexer(edges["dst"].to_numpy(dtype=object))
    keep = (src_pos >= 0) & (dst_pos >= 0)
    place_edges = edges[keep].reset_index(drop=True)
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
    ce_src = src_pos[keep][is_crossing_edge]
    ce_dst = dst_pos[keep][is_crossing_edge]
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
        entry_src=src_pos[keep][origin].astype(np.int64),
        entry_distance_m=place_edges["distance_m"].to_numpy(dtype=np.float64)[origin],
        entry_bearing_deg=place_edges["bearing_deg"].to_numpy(dtype=np.float64)[origin],
        entry_street=street,
        crossing_streets=streets_of,
        mention_text=mention,
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
            starts = self.indptr[node]
            counts = self.indptr[node + 1] - starts
            total = int(counts.sum())
            if total == 0:
                break
            owner = np.repeat(np.arange(len(frontier)), counts)
            offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            neighbour = self.indices[np.repeat(starts, counts) + offset]
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


# ------------------------------------------------------------------------------------------------------------
# deterministic randomness
# ------------------------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64 finaliser on arrays (wrapping uint64 arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _string_keys(values: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """Stable 64-bit hashes of strings (pandas' SipHash with its fixed key; same on every run and machine)."""
    return pd.util.hash_array(np.asarray(values, dtype=object)).astype(np.uint64)


# ------------------------------------------------------------------------------------------------------------
# the builder
# ------------------------------------------------------------------------------------------------------------


def _validate(nodes: pd.DataFrame, edges: pd.DataFrame, images: pd.DataFrame, city: str) -> None:
    for label, frame, columns in (
        ("nodes", nodes, ("node_id", "kind", "name", "category", "lon", "lat")),
        ("edges", edges, ("src", "dst", "kind", "distance_m", "bearing_deg", "street_name")),
        ("images", images, IMAGE_COLUMNS),
    ):
        if not isinstance(frame, pd.DataFrame):
            msg = f"{label} must be a pandas DataFrame, got {type(frame).__name__}"
            raise ReasoningInputError(msg)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            hint = (
                " (anchor and split the images first: imagery.anchor_images, then imagery.assign_splits)"
                if label == "images"
                else " (pass the graph tables with the image nodes/edges added)"
            )
            msg = f"{label} is missing column(s) {missing}; it has {list(frame.columns)}{hint}"
            raise ReasoningInputError(msg)
    if not isinstance(city, str) or not city.strip():
        msg = f"city must be a non-empty string (it seeds the random choice), got {city!r}"
        raise ReasoningInputError(msg)
    if nodes["node_id"].duplicated().any():
        dup = nodes.loc[nodes["node_id"].duplicated(), "node_id"].head(3).tolist()
        msg = f"nodes.node_id must be unique, duplicates e.g. {dup}"
        raise ReasoningInputError(msg)
    if images["image_id"].duplicated().any():
        dup = images.loc[images["image_id"].duplicated(), "image_id"].head(3).tolist()
        msg = f"images.image_id must be unique, duplicates e.g. {dup}; deduplicate before building paths"
        raise ReasoningInputError(msg)


@dataclass(slots=True)
class _Chosen:
    """Chosen paths of one chunk: image row, place-node chain (padded -1), place depth, type."""

    image: list[np.ndarray] = field(default_factory=list)
    chain: list[np.ndarray] = field(default_factory=list)
    depth: list[np.ndarray] = field(default_factory=list)
    alternative: list[np.ndarray] = field(default_factory=list)
    rejected: int = 0  # candidate paths skipped because their query would name the target


def _local_metres(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Straight-line metres on a local equirectangular approximation at the mean latitude (prefilter only)."""
    c = np.cos(np.radians((lat1 + lat2) * 0.5))
    c2 = 2 * c * c - 1  # cos 2phi, cos 3phi and cos 4phi from cos phi: one cosine per pair
    m_per_deg_lat = 111132.954 - 559.822 * c2 + 1.175 * (2 * c2 * c2 - 1)
    m_per_deg_lon = 111412.84 * c - 93.5 * (4 * c * c * c - 3 * c)
    return np.hypot((lon2 - lon1) * m_per_deg_lon, (lat2 - lat1) * m_per_deg_lat)


def _group_rank(sorted_groups: np.ndarray) -> np.ndarray:
    """Rank of each element inside its run of equal, already-sorted group labels (0, 1, ...)."""
    n = len(sorted_groups)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    start = np.ones(n, dtype=bool)
    start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    idx = np.arange(n)
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def _walk_chains(traversal: Traversal, rows: np.ndarray, ends: np.ndarray, depth: np.ndarray, width: int) -> np.ndarray:
    """Place-node chains ``source .. end`` from the BFS parents, as an ``(n, width)`` matrix padded with -1."""
    chain = np.full((len(ends), width), -1, dtype=np.int64)
    chain[np.arange(len(ends)), depth] = ends
    for level in range(int(depth.max(initial=0)), 0, -1):
        active = np.flatnonzero(depth >= level)
        chain[active, level - 1] = traversal.parent_of(rows[active], chain[active, level])
    return chain


def _alternatives(
    graph: PlaceGraph,
    traversal: Traversal,
    rows: np.ndarray,
    targets: np.ndarray,
    chains: np.ndarray,
    depth: np.ndarray,
    max_depth: int,
    min_depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Alternative walk to each target whose last step differs from the shortest path's.

    Returns ``(index into the inputs, chain, depth)`` of the targets that have one.
    """
    indptr, indices = graph.csr.indptr, graph.csr.indices
    starts = indptr[targets].astype(np.int64)
    counts = (indptr[targets + 1] - indptr[targets]).astype(np.int64)
    owner = np.repeat(np.arange(len(targets)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    q = indices[np.repeat(starts, counts) + offset].astype(np.int64)
    q_depth = traversal.depth_of(rows[owner], q)
    primary_parent = chains[owner, np.maximum(depth[owner] - 1, 0)]
    ok = (q_depth >= 0) & (q_depth + 1 <= max_depth) & (q_depth + 1 >= min_depth) & (q != primary_parent)
    owner, q, q_depth = owner[ok], q[ok], q_depth[ok]
    if len(q) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, np.empty((0, chains.shape[1]), dtype=np.int64), empty
    width = chains.shape[1]
    q_chain = _walk_chains(traversal, rows[owner], q, q_depth, width)
    simple = ~(q_chain == targets[owner][:, None]).any(axis=1)
    owner, q, q_depth, q_chain = owner[simple], q[simple], q_depth[simple], q_chain[simple]
    # shared intermediate nodes with the shortest path (its source and target excluded)
    primary = chains[owner].copy()
    primary[:, 0] = -1
    primary[np.arange(len(owner)), depth[owner]] = -1
    mine = q_chain[:, 1:]
    shared = ((mine[:, :, None] == primary[:, None, :]) & (mine[:, :, None] >= 0)).any(axis=2).sum(axis=1)
    order = np.lexsort((q, q_depth, shared, owner))
    owner, q, q_depth, q_chain = owner[order], q[order], q_depth[order], q_chain[order]
    first = np.ones(len(owner), dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    owner, q, q_depth, q_chain = owner[first], q[first], q_depth[first], q_chain[first]
    alt_depth = q_depth + 1
    alt_chain = q_chain.copy()
    alt_chain[np.arange(len(owner)), alt_depth] = targets[owner]
    return owner, alt_chain, alt_depth


class _Selector:
    """Candidate ranking, chains, leak pre-check and slot assignment for chunks of images."""

    def __init__(
        self, graph: PlaceGraph, config: PathConfig, image_lat: np.ndarray, image_lon: np.ndarray, image_key: np.ndarray
    ) -> None:
        self.graph = graph
        self.config = config
        self.image_lat, self.image_lon, self.image_key = image_lat, image_lon, image_key
        self.max_depth = config.max_hops - 1
        self.min_depth = config.min_hops - 1
        self.width = self.max_depth + 1
        self.is_target = np.isin(graph.kind, list(config.target_kinds))
        self.node_key = _string_keys(graph.csr.node_ids)
        codes, _ = pd.factorize(pd.Series(graph.category).fillna("").astype(str), sort=True)
        self.category_code = codes.astype(np.int64)
        self.n_categories = int(codes.max(initial=0)) + 1
        self.distance_edges = np.array([upper for upper, _ in DISTANCE_BANDS_M[:-1]], dtype=np.float64)
        self.hop_edges = np.asarray(config.hop_band_edges, dtype=np.int64)
        self.pool = config.max_paths + max(2, config.max_paths // 2)
        self.n_strata = (len(self.hop_edges) + 1) * (len(self.distance_edges) + 1) * self.n_categories
        self.leak_index = LeakIndex(graph.name, graph.mention_text, self.is_target)
        self.leaked_images: set[int] = set()

    def choose(
        self,
        traversal: Traversal,
        reached: tuple[np.ndarray, np.ndarray, np.ndarray],
        batch_images: list[np.ndarray],
        out: _Chosen,
    ) -> None:
        """Choose the paths of every image of a batch (``batch_images[row]`` = images on source ``row``)."""
        rows, node, depth = reached
        cand = self.is_target[node] & (depth >= self.min_depth) & (depth <= self.max_depth)
        rows, node, depth = rows[cand], node[cand], depth[cand]
        order = np.argsort(rows * self.graph.n + node)  # by (source, node): independent of the traversal's order
        rows, node, depth = rows[order], node[order], depth[order]
        n_rows = len(batch_images)
        per_row = np.bincount(rows, minlength=n_rows)
        row_start = np.concatenate([[0], np.cumsum(per_row)])
        img_rows = np.concatenate([np.full(len(imgs), r, dtype=np.int64) for r, imgs in enumerate(batch_images)])
        img_ids = np.concatenate(batch_images).astype(np.int64)
        cum_pairs = np.concatenate([[0], np.cumsum(per_row[img_rows])])
        # the sort keys pack (image, stratum) and (image, rank) into 32 bits each
        max_images = max(1, (1 << 32) // max(self.n_strata, self.pool))
        lo = 0
        while lo < len(img_ids):
            hi = int(np.searchsorted(cum_pairs, cum_pairs[lo] + _CHUNK_PAIRS, side="right")) - 1
            hi = min(max(hi, lo + 1), lo + max_images, len(img_ids))
            self._choose_chunk(traversal, img_rows[lo:hi], img_ids[lo:hi], node, depth, row_start, out)
            lo = hi

    def _choose_chunk(
        self,
        traversal: Traversal,
        img_rows: np.ndarray,
        img_ids: np.ndarray,
        node: np.ndarray,
        depth: np.ndarray,
        row_start: np.ndarray,
        out: _Chosen,
    ) -> None:
        counts = row_start[img_rows + 1] - row_start[img_rows]
        total = int(counts.sum())
        if total == 0:
            return
        pair_img = np.repeat(np.arange(len(img_ids)), counts)
        offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        cand = np.repeat(row_start[img_rows], counts) + offset
        t, d = node[cand], depth[cand]
        image = img_ids[pair_img]
        g = self.graph
        dist = _local_metres(self.image_lat[image], self.image_lon[image], g.lat[t], g.lon[t])
        near = dist <= self.config.max_distance_m
        pair_img, t, d, image, dist = pair_img[near], t[near], d[near], image[near], dist[near]
        if len(t) == 0:
            return
        hops = d + 1
        stratum = (
            np.searchsorted(self.hop_edges, hops, side="right") * (len(self.distance_edges) + 1)
            + np.searchsorted(self.distance_edges, dist, side="right")
        ) * self.n_categories + self.category_code[t]
        ikey = self.image_key[image]
        u = _splitmix(ikey ^ self.node_key[t])
        w = _splitmix(ikey ^ _splitmix(stratum.astype(np.uint64)))
        # stage 1: random order inside each (image, stratum): one stable argsort on a packed 63-bit key
        group = pair_img * self.n_strata + stratum
        order = np.argsort((group << 31) | (u >> np.uint64(33)).astype(np.int64), kind="stable")
        inner_rank = _group_rank(group[order])
        order = order[inner_rank < self.pool]  # no image takes more than `pool` targets from one stratum
        inner_rank = inner_rank[inner_rank < self.pool]
        # stage 2: round robin over the strata in a random order per image: sort by (image, rank, stratum key)
        second = ((pair_img[order] * self.pool + inner_rank) << 31) | (w[order] >> np.uint64(33)).astype(np.int64)
        order = order[np.argsort(second, kind="stable")]
        rank = _group_rank(pair_img[order])
        keep = order[rank < self.pool]
        pair_img, t, d, image = pair_img[keep], t[keep], d[keep], image[keep]
        brow = img_rows[pair_img]
        chains = _walk_chains(traversal, brow, t, d, self.width)
        leak = self._leaks(chains, t, d)
        out.rejected += int(leak.sum())
        self.leaked_images.update(image[leak].tolist())
        ok = ~leak
        pair_img, t, d, image, brow, chains = pair_img[ok], t[ok], d[ok], image[ok], brow[ok], chains[ok]
        prank = _group_rank(pair_img)
        slots = self.config.max_paths
        alt_quota = self.config.alternative_slots
        alt_eligible = np.flatnonzero(prank < slots - alt_quota) if alt_quota else np.empty(0, dtype=np.int64)
        alt_of = np.zeros(len(t), dtype=bool)
        alt_chain = np.empty((0, self.width), dtype=np.int64)
        alt_depth = np.empty(0, dtype=np.int64)
        alt_idx = np.empty(0, dtype=np.int64)
        if len(alt_eligible):
            idx, a_chain, a_depth = _alternatives(
                g,
                traversal,
                brow[alt_eligible],
                t[alt_eligible],
                chains[alt_eligible],
                d[alt_eligible],
                self.max_depth,
                self.min_depth,
            )
            idx = alt_eligible[idx]
            a_leak = self._leaks(a_chain, t[idx], a_depth)
            out.rejected += int(a_leak.sum())
            idx, a_chain, a_depth = idx[~a_leak], a_chain[~a_leak], a_depth[~a_leak]
            # the first alt_quota alternatives per image, in rank order
            first_alts = _group_rank(pair_img[idx]) < alt_quota
            alt_idx, alt_chain, alt_depth = idx[first_alts], a_chain[first_alts], a_depth[first_alts]
            alt_of[alt_idx] = True
        n_alt = np.bincount(pair_img[alt_idx], minlength=len(img_ids))
        short = prank < slots - n_alt[pair_img]
        out.image.extend([image[short], image[alt_idx]])
        out.chain.extend([chains[short], alt_chain])
        out.depth.extend([d[short], alt_depth])
        out.alternative.extend([np.zeros(int(short.sum()), dtype=bool), np.ones(len(alt_idx), dtype=bool)])

    def _leaks(self, chains: np.ndarray, targets: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Whether a chain's intermediate nodes would carry the target's name into the query."""
        return self.leak_index.leaks(chains, targets, depth)


def _image_table(
    nodes: pd.DataFrame, edges: pd.DataFrame, images: pd.DataFrame, graph: PlaceGraph
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per image: node id, street position, image-step metrics; and the reason of each image left out."""
    table = pd.DataFrame(
        {
            "image_id": images["image_id"].to_numpy(dtype=object),
            "image_node": image_node_ids(images["source"], images["image_id"]),
            "split": images["split"].astype(object).to_numpy(),
            "lon": pd.to_numeric(images["lon"], errors="coerce").to_numpy(dtype=float),
            "lat": pd.to_numeric(images["lat"], errors="coerce").to_numpy(dtype=float),
            "compass_angle": pd.to_numeric(images["compass_angle"], errors="coerce").to_numpy(dtype=float),
            "street_node": images["street_node"].astype(object).to_numpy(),
        }
    )
    image_edges = edges[edges["kind"] == "image_street"]
    fwd = pd.DataFrame(
        {
            "image_node": image_edges["src"].to_numpy(dtype=object),
            "street_node": image_edges["dst"].to_numpy(dtype=object),
            "step_distance_m": image_edges["distance_m"].to_numpy(dtype=float),
            "step_bearing_deg": image_edges["bearing_deg"].to_numpy(dtype=float),
        }
    )
    rev = pd.DataFrame(
        {
            "image_node": image_edges["dst"].to_numpy(dtype=object),
            "street_node": image_edges["src"].to_numpy(dtype=object),
            "step_distance_m": image_edges["distance_m"].to_numpy(dtype=float),
            "step_bearing_deg": normalize_bearing_deg(image_edges["bearing_deg"].to_numpy(dtype=float) + 180.0),
        }
    )
    steps = pd.concat([fwd, rev], ignore_index=True).drop_duplicates(["image_node", "street_node"])
    table = table.merge(steps, on=["image_node", "street_node"], how="left")
    table["street_pos"] = pd.Index(graph.csr.node_ids).get_indexer(table["street_node"].to_numpy(dtype=object))
    reasons: dict[str, str] = {}
    excluded = table["split"].astype(str).eq("excluded").to_numpy()
    unanchored = (
        ~excluded
        & (
            (table["street_pos"] < 0)
            | table["step_distance_m"].isna()
            | ~np.isfinite(table["lat"])
            | ~np.isfinite(table["lon"])
        ).to_numpy()
    )
    for image_id in table.loc[excluded, "image_id"]:
        reasons[image_id] = REASON_EXCLUDED
    for image_id in table.loc[unanchored, "image_id"]:
        reasons[image_id] = REASON_NOT_ANCHORED
    return table, reasons


def _find_paths(
    graph: PlaceGraph,
    table: pd.DataFrame,
    usable: np.ndarray,
    config: PathConfig,
    city: str,
    traversal: Traversal,
    batch_size: int,
) -> tuple[_Chosen, set[int]]:
    """Run the batched traversal over distinct street nodes and choose every usable image's paths.

    Returns the chosen paths and the table rows of images that lost a candidate to the leak rule."""
    image_key = _splitmix(_string_keys([f"{city}\x1f{config.seed}\x1f{n}" for n in table["image_node"]]))
    selector = _Selector(
        graph, config, table["lat"].to_numpy(dtype=float), table["lon"].to_numpy(dtype=float), image_key
    )
    usable_idx = np.flatnonzero(usable)
    street = table["street_pos"].to_numpy(dtype=np.int64)[usable_idx]
    order = np.argsort(street, kind="stable")
    street, usable_idx = street[order], usable_idx[order]
    sources, first = np.unique(street, return_index=True)
    groups = np.split(usable_idx, first[1:]) if len(sources) else []
    out = _Chosen()
    for start in range(0, len(sources), batch_size):
        batch = sources[start : start + batch_size]
        reached = traversal.run(batch)
        selector.choose(traversal, reached, groups[start : start + batch_size], out)
        traversal.release()
    return out, selector.leaked_images


def _batch_size(n: int) -> int:
    return int(max(1, min(512, _BATCH_CELLS // max(n, 1))))


def build_paths(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    images: pd.DataFrame,
    *,
    city: str,
    config: PathConfig | None = None,
) -> PathResult:
    """
    Spatial reasoning paths from every image to POIs/AOIs of the anchored graph.

    Parameters
    ----------
    nodes
        Graph nodes with the image nodes added (``node_id``, ``kind``, ``name``, ``category``, ``lon``,
        ``lat`` in EPSG:4326 decimal degrees).
    edges
        Graph edges with the ``image_street`` edges added (``src``, ``dst``, ``kind``, ``distance_m`` in
        metres, ``bearing_deg`` clockwise from north, ``street_name``).
    images
        Anchored images with splits: ``image_id``, ``source``, ``lon``, ``lat``, ``compass_angle`` (degrees
        clockwise from north, NaN if unknown), ``split``, ``street_node``.
    city
        City slug or name; part of the random seed, so two cities draw independently.
    config
        Options; :class:`PathConfig` by default.

    Returns
    -------
    PathResult
        ``paths`` (:data:`SRP_COLUMNS` + :data:`STEP_COLUMNS`), ``missing`` (images without a path and why)
        and ``counts``.

    Raises
    ------
    ReasoningInputError
        A table lacks a column, ids repeat, the city is empty, or the config is invalid.
    """
    config = config or PathConfig()
    _validate(nodes, edges, images, city)
    graph = build_place_graph(nodes, edges)
    table, reasons = _image_table(nodes, edges, images, graph)
    usable = ~table["image_id"].isin(list(reasons)).to_numpy()
    batch = _batch_size(graph.n)
    traversal = CsrTraversal(graph, config.max_hops - 1, batch)
    return assemble_paths(graph, table, usable, reasons, config, city, traversal, batch)


def assemble_paths(
    graph: PlaceGraph,
    table: pd.DataFrame,
    usable: np.ndarray,
    reasons: dict[str, str],
    config: PathConfig,
    city: str,
    traversal: Traversal,
    batch_size: int,
) -> PathResult:
    """Traverse with ``traversal``, choose, measure and phrase the paths (shared by every traversal backend)."""
    chosen, leaked = _find_paths(graph, table, usable, config, city, traversal, batch_size)
    paths, leaked_post = _render(graph, table, chosen)
    leaked |= leaked_post
    rejected = chosen.rejected + len(leaked_post)
    have = set(paths["image_id"].tolist()) if len(paths) else set()
    for row, (image_id, ok) in enumerate(zip(table["image_id"].tolist(), usable.tolist(), strict=True)):
        if ok and image_id not in have:
            reasons[image_id] = REASON_ALL_LEAK if row in leaked else REASON_NO_TARGET
    missing = pd.DataFrame({"image_id": list(reasons), "reason": list(reasons.values())}, columns=list(MISSING_COLUMNS))
    counts = _counts(table, paths, missing, rejected)
    logger.info(
        "built %s reasoning paths for %s of %s images of %s (%s without a path)",
        f"{len(paths):,}",
        f"{counts['images/with_path']:,}",
        f"{len(table):,}",
        city,
        f"{len(missing):,}",
    )
    return PathResult(paths=paths, missing=missing, counts=counts)


# ------------------------------------------------------------------------------------------------------------
# step metrics and text
# ------------------------------------------------------------------------------------------------------------


def _step_metrics(
    graph: PlaceGraph, table: pd.DataFrame, image: np.ndarray, chain: np.ndarray, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step distance (m) and bearing (deg) matrices ``(n, depth + 1)`` and the relation of each step."""
    n_paths, width = chain.shape
    steps = width  # step 0 is the image step, then one per place edge
    distance = np.full((n_paths, steps), np.nan)
    bearing = np.full((n_paths, steps), np.nan)
    relation = np.full((n_paths, steps), None, dtype=object)
    lat = table["lat"].to_numpy(dtype=float)[image]
    lon = table["lon"].to_numpy(dtype=float)[image]
    d0 = table["step_distance_m"].to_numpy(dtype=float)[image]
    b0 = table["step_bearing_deg"].to_numpy(dtype=float)[image]
    distance[:, 0], bearing[:, 0], relation[:, 0] = d0, b0, "nearest"
    lon, lat, _ = WGS84.fwd(lon, lat, b0, d0)
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    turn = np.zeros((n_paths, steps), dtype=bool)
    for j in range(1, steps):
        active = np.flatnonzero(depth >= j)
        if len(active) == 0:
            break
        u, v = chain[active, j - 1], chain[active, j]
        entry = graph.entries(u, v)
        kind = graph.entry_kind[entry]
        forward = graph.entry_src[entry] == u
        edge_bearing = np.where(
            forward, graph.entry_bearing_deg[entry], normalize_bearing_deg(graph.entry_bearing_deg[entry] + 180.0)
        )
        edge_distance = graph.entry_distance_m[entry]
        rel = kind.copy()
        along = kind == "along_street"
        rel[along] = graph.entry_street[entry][along]
        relation[active, j] = rel
        to_street = graph.kind[v] == "street"
        is_turn = to_street & (graph.kind[u] == "crossing")
        by_edge = (to_street & ~is_turn) | along
        straight = ~to_street & ~along
        dist_j = np.zeros(len(active))
        bear_j = np.zeros(len(active))
        dist_j[by_edge], bear_j[by_edge] = edge_distance[by_edge], edge_bearing[by_edge]
        if straight.any():
            s_d, s_b = distance_bearing(
                lat[active[straight]], lon[active[straight]], graph.lat[v[straight]], graph.lon[v[straight]]
            )
            dist_j[straight], bear_j[straight] = s_d, s_b
        distance[active, j], bearing[active, j] = dist_j, bear_j
        turn[active[is_turn], j] = True
        # new positions: the node's point, or the edge vector applied to the current position
        move = active[by_edge & ~along]
        if len(move):
            m_lon, m_lat, _ = WGS84.fwd(lon[move], lat[move], bear_j[by_edge & ~along], dist_j[by_edge & ~along])
            lon[move], lat[move] = m_lon, m_lat
        at_node = active[straight | along]
        lon[at_node], lat[at_node] = graph.lon[v[straight | along]], graph.lat[v[straight | along]]
    # a turn takes the bearing of the move that follows it
    for j in range(steps - 2, -1, -1):
        rows = np.flatnonzero(turn[:, j])
        bearing[rows, j] = bearing[rows, j + 1]
    return distance, bearing, relation


def _render(graph: PlaceGraph, table: pd.DataFrame, chosen: _Chosen) -> tuple[pd.DataFrame, set[int]]:
    """Measure and phrase the chosen paths; drop any whose finished query text still names its target."""
    if not chosen.image or sum(len(a) for a in chosen.image) == 0:
        return pd.DataFrame(columns=[*SRP_COLUMNS, *STEP_COLUMNS]), set()
    image = np.concatenate(chosen.image)
    chain = np.concatenate(chosen.chain)
    depth = np.concatenate(chosen.depth)
    alternative = np.concatenate(chosen.alternative)
    order = np.lexsort((alternative, depth, image))
    image, chain, depth, alternative = image[order], chain[order], depth[order], alternative[order]
    target = chain[np.arange(len(chain)), depth]
    distance, bearing, relation = _step_metrics(graph, table, image, chain, depth)
    step_compass = np.asarray(COMPASS_WORDS, dtype=object)[compass_index(np.nan_to_num(bearing))]

    img_lat = table["lat"].to_numpy(dtype=float)[image]
    img_lon = table["lon"].to_numpy(dtype=float)[image]
    straight_m, straight_b = distance_bearing(img_lat, img_lon, graph.lat[target], graph.lon[target])
    target_compass = np.asarray(COMPASS_WORDS, dtype=object)[compass_index(straight_b)]
    camera = table["compass_angle"].to_numpy(dtype=float)[image]
    relative = normalize_bearing_deg(straight_b - np.nan_to_num(camera))
    views = [
        None if not math.isfinite(c) else view_direction(r)
        for c, r in zip(camera.tolist(), relative.tolist(), strict=True)
    ]

    names, kinds, streets_of = graph.name.tolist(), graph.kind.tolist(), graph.crossing_streets
    node_ids = graph.csr.node_ids.tolist()
    categories = [_text_or_none(c) for c in graph.category.tolist()]
    image_nodes = table["image_node"].to_numpy(dtype=object)
    image_node_l = image_nodes[image].tolist()
    path_nodes, path_relations, path_text, path_sentence, target_text = [], [], [], [], []
    step_d, step_b, keep = [], [], np.ones(len(image), dtype=bool)
    leaked: set[int] = set()
    chain_l, depth_l, target_l = chain.tolist(), depth.tolist(), target.tolist()
    dist_l, bear_l = np.round(distance, 2).tolist(), np.round(bearing, 2).tolist()
    comp_l, rel_l = step_compass.tolist(), relation.tolist()
    width = distance.shape[1]
    measures = measure_tuples(distance, bearing)
    straight_l, target_compass_l, image_l = np.asarray(straight_m).tolist(), target_compass.tolist(), image.tolist()
    for i in range(len(image_l)):
        d = depth_l[i]
        places = chain_l[i][: d + 1]
        t = target_l[i]
        n_steps = d + 1
        rels = rel_l[i][:n_steps]
        dists = dist_l[i][:n_steps]
        bears = bear_l[i][:n_steps]
        comps = comp_l[i][:n_steps]
        triple_names = [IMAGE_TRIPLE_NAME, *[names[p] for p in places[:-1]], MASKED_TRIPLE_NAME]
        text = triple_chain(triple_names, rels, measures[i * width : i * width + n_steps])
        clauses = []
        current_street = None
        previous_kind = "image"
        for j, p in enumerate(places):
            kind_p = kinds[p]
            clauses.append(
                step_clause(
                    src_kind=previous_kind,
                    dst_kind=kind_p,
                    relation=rels[j],
                    dst_name=MASKED_SENTENCE_NAME if p == t else names[p],
                    distance_m=dists[j],
                    compass=comps[j],
                    current_street=current_street,
                    crossing_streets=streets_of.get(p, ()),
                )
            )
            if kind_p == "street":
                current_street = names[p]
            elif kind_p == "crossing" and previous_kind == "crossing":
                current_street = rels[j]
            elif kind_p != "crossing":
                current_street = None
            previous_kind = kind_p
        sentence = join_clauses(clauses)
        name = names[t]
        if mentions_name(text, name) or mentions_name(sentence, name):
            keep[i] = False
            leaked.add(image_l[i])
            continue
        path_nodes.append([image_node_l[i], *[node_ids[p] for p in places]])
        path_relations.append(rels)
        path_text.append(text)
        path_sentence.append(sentence)
        target_text.append(target_sentence(name, categories[t], straight_l[i], target_compass_l[i], views[i]))
        step_d.append(dists)
        step_b.append(bears)
    image, target, depth, alternative = image[keep], target[keep], depth[keep], alternative[keep]
    paths = pd.DataFrame(
        {
            "image_id": table["image_id"].to_numpy(dtype=object)[image],
            "image_node": image_nodes[image],
            "split": table["split"].to_numpy(dtype=object)[image],
            "target_node": graph.csr.node_ids[target],
            "target_name": graph.name[target],
            "target_category": graph.category[target],
            "hops": (depth + 1).astype(np.int64),
            "path_nodes": path_nodes,
            "path_relations": path_relations,
            "path_text": path_text,
            "path_sentence": path_sentence,
            "target_text": target_text,
            "distance_m": np.asarray(straight_m)[keep],
            "bearing_deg": np.asarray(straight_b)[keep],
            "compass": target_compass[keep],
            "view_direction": pd.Series([v for v, k in zip(views, keep.tolist(), strict=True) if k], dtype=object),
            "path_type": np.where(alternative, "alternative", "shortest").astype(object),
            "route_m": np.array([sum(s) for s in step_d], dtype=np.float64),
            "step_distance_m": step_d,
            "step_bearing_deg": step_b,
        }
    )
    return paths[[*SRP_COLUMNS, *STEP_COLUMNS]], leaked


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _counts(table: pd.DataFrame, paths: pd.DataFrame, missing: pd.DataFrame, rejected: int) -> dict[str, int]:
    counts = {
        "images": len(table),
        "images/with_path": int(paths["image_id"].nunique()) if len(paths) else 0,
        "images/missing": len(missing),
        "paths": len(paths),
        "paths/shortest": int((paths["path_type"] == "shortest").sum()) if len(paths) else 0,
        "paths/alternative": int((paths["path_type"] == "alternative").sum()) if len(paths) else 0,
        "rejected/target_name_in_query": rejected,
    }
    if len(paths):
        for hops, n in paths["hops"].value_counts().sort_index().items():
            counts[f"hops/{int(hops)}"] = int(n)
        for view, n in paths["view_direction"].value_counts().sort_index().items():
            counts[f"view/{view}"] = int(n)
    for reason, n in missing["reason"].value_counts().sort_index().items():
        counts[f"missing/{_REASON_KEY.get(reason, 'other')}"] = int(n)
    return counts


_REASON_KEY = {
    REASON_EXCLUDED: "excluded",
    REASON_NOT_ANCHORED: "not_anchored",
    REASON_NO_TARGET: "no_target",
    REASON_ALL_LEAK: "all_leak",
}
