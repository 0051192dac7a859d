"""Choosing each image's paths: seeded stratified targets, shortest walks and their alternatives, the leak rule.

The semantics are described in :mod:`ugdata_pipeline.reasoning.paths`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.graph.geodesy import normalize_bearing_deg
from ugdata_pipeline.graph.text import DISTANCE_BANDS_M
from ugdata_pipeline.imagery.anchor import image_node_ids
from ugdata_pipeline.reasoning.mentions import LeakIndex
from ugdata_pipeline.reasoning.path_schema import REASON_EXCLUDED, REASON_NOT_ANCHORED, PathConfig
from ugdata_pipeline.reasoning.place_graph import PlaceGraph, Traversal

_BATCH_CELLS = 1 << 25  # sources x nodes of the dense per-batch BFS buffers (int8 depth + int32 parent)
_CHUNK_PAIRS = 1 << 22  # (image, candidate) pairs ranked at once


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
        # codes in the vocabulary's order: a shard's halo numbers its strata as the whole city does
        categories = pd.Series(graph.category).fillna("").astype(str)
        codes = pd.Categorical(categories, categories=list(graph.categories)).codes
        self.category_code = codes.astype(np.int64)
        self.n_categories = max(1, len(graph.categories))
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
