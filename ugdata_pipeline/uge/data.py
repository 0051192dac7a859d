"""Training data for UGE: training records to batches, subgraph tables to PyG graphs.

Graphs are built once per image from the long ``subgraph_nodes`` / ``subgraph_edges`` tables (DESIGN.md data
contracts): every undirected edge appears in both directions (messages flow both ways; the reference kept one
direction, notes §8 B5), edge features are computed per directed edge (the bearing reverses, the offset flips
sign), node-text features come from the backbone's frozen text side once per unique text, and the image's own
centre node carries no text (its learned node-kind embedding stands for it, so its coordinates or ids never leak
in as text). A batch of graphs is a PyG ``Batch`` whose ``batch`` vector assigns every node to its own sample.

:func:`build_graphs` is the project's one subgraph -> PyG builder, and :func:`edge_features` its one edge-feature
convention (the trained models': ``log1p`` metres, bearing sine and cosine, offsets in kilometres); each image's rows
come from the one per-image index, :class:`~ugdata_pipeline.context.subgraph_tables.SubgraphIndex`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from ugdata_pipeline._pyg import Batch, Data
from ugdata_pipeline.context.subgraph_tables import (
    SUBGRAPH_EDGE_COLUMNS,
    SUBGRAPH_NODE_COLUMNS,
    SubgraphIndex,
    SubgraphTables,
)
from ugdata_pipeline.dataset.records import TRAINING_RECORD_COLUMNS
from ugdata_pipeline.errors import TrainingDataError
from ugdata_pipeline.graph.geodesy import normalize_bearing_deg
from ugdata_pipeline.graph.schema import NODE_KINDS
from ugdata_pipeline.tables import require_columns
from ugdata_pipeline.uge.graph_encoder import EDGE_FEATURE_DIM
from ugdata_pipeline.uge.images import SHARED_IMAGES, load_image
from ugdata_pipeline.uge.losses import text_ids

logger = logging.getLogger(__name__)

_KIND_INDEX = {kind: i for i, kind in enumerate(NODE_KINDS)}

__all__ = [
    "SUBGRAPH_EDGE_COLUMNS",
    "SUBGRAPH_NODE_COLUMNS",
    "ImageStore",
    "RecordBatch",
    "SubgraphTables",
    "TrainingDataError",
    "build_graphs",
    "build_graphs_shared",
    "centre_only",
    "collate_graphs",
    "edge_features",
    "epoch_batches",
    "make_batch",
    "shuffle_graphs",
    "validate_records",
]


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    columns = tuple(columns)
    fix = f"Expected {list(columns)} (DESIGN.md data contracts)."
    require_columns(frame, columns, table=what, fix=fix, error=TrainingDataError)


def validate_records(records: pd.DataFrame) -> None:
    """
    Check a ``training_records`` table before any work starts.

    Raises
    ------
    TrainingDataError
        Missing columns, empty or missing positives, instructions or image paths, or duplicate record ids.
    """
    _require_columns(records, TRAINING_RECORD_COLUMNS, "training_records")
    for column in ("positive", "image_path", "instruction"):
        values = records[column]
        bad = values.isna() | (values.astype(str).str.strip() == "")
        if column != "instruction" and bool(bad.any()):
            examples = records.loc[bad, "record_id"].head(3).tolist()
            msg = f"training_records has {int(bad.sum())} rows with an empty {column!r} (e.g. {examples}); drop them."
            raise TrainingDataError(msg)
    duplicated = records["record_id"].duplicated()
    if bool(duplicated.any()):
        examples = records.loc[duplicated, "record_id"].head(3).tolist()
        msg = f"training_records has duplicate record_id values, e.g. {examples}; record ids must be unique."
        raise TrainingDataError(msg)


def edge_features(
    offset_src_m: np.ndarray, offset_dst_m: np.ndarray, distance_m: np.ndarray, bearing_deg: np.ndarray
) -> np.ndarray:
    """
    Raw features of directed edges (:data:`ugdata_pipeline.uge.graph_encoder.EDGE_FEATURE_NAMES`).

    Parameters
    ----------
    offset_src_m, offset_dst_m
        ``[E, 2]`` east/north offsets of the source and target nodes from the image, metres.
    distance_m
        ``[E]`` edge length in metres (NaN: the straight-line distance between the offsets is used).
    bearing_deg
        ``[E]`` bearing source -> target, degrees clockwise from north (NaN: computed from the offsets).

    Returns
    -------
    features
        ``[E, 5]`` float32: ``log1p(distance_m)``, ``sin(bearing)``, ``cos(bearing)``, ``dx/1000``, ``dy/1000``
        (the offset target - source in kilometres, so it is O(1) rather than raw degrees: notes §8 B12).
    """
    delta = np.asarray(offset_dst_m, dtype=np.float64) - np.asarray(offset_src_m, dtype=np.float64)
    straight_m = np.hypot(delta[:, 0], delta[:, 1])
    distance = np.where(np.isfinite(distance_m), distance_m, straight_m)
    geometric_bearing = np.degrees(np.arctan2(delta[:, 0], delta[:, 1]))
    bearing = normalize_bearing_deg(np.where(np.isfinite(bearing_deg), bearing_deg, geometric_bearing))
    theta = np.radians(bearing)
    features = np.stack(
        [np.log1p(np.maximum(distance, 0.0)), np.sin(theta), np.cos(theta), delta[:, 0] / 1000, delta[:, 1] / 1000],
        axis=1,
    )
    assert features.shape[1] == EDGE_FEATURE_DIM
    return features.astype(np.float32)


def build_graphs(
    subgraphs: SubgraphTables,
    encode_node_texts: Callable[[Sequence[str]], Tensor],
    *,
    image_ids: Iterable[str] | None = None,
    max_nodes: int | None = None,
) -> dict[str, Data]:
    """
    One PyG graph per image from the long subgraph tables.

    Parameters
    ----------
    subgraphs
        ``subgraph_nodes`` and ``subgraph_edges`` (contract columns).
    encode_node_texts
        Frozen text encoder (``Backbone.encode_node_texts``); called once with every unique node text.
    image_ids
        Images to build (default: all in ``subgraphs.nodes``). An id without nodes is an error.
    max_nodes
        Keep the ``max_nodes`` lowest-rank nodes (the centre and its nearest neighbours); deterministic.

    Returns
    -------
    graphs
        ``image_id -> Data`` with ``x_text [N, T]``, ``node_kind [N]``, ``pos_m [N, 2]``, ``edge_index [2, E]``
        (both directions), ``edge_attr [E, 5]``, ``center_mask [N]`` (exactly one True: rank 0), ``image_id``.
    """
    nodes, edges = subgraphs
    _require_columns(nodes, ("image_id", "node_id", "kind", "node_text", "dx_m", "dy_m", "rank"), "subgraph_nodes")
    _require_columns(edges, ("image_id", "src", "dst", "distance_m", "bearing_deg"), "subgraph_edges")
    if max_nodes is not None and max_nodes < 1:
        msg = f"max_nodes must be >= 1 or None, got {max_nodes!r}."
        raise TrainingDataError(msg)
    wanted = list(dict.fromkeys(str(i) for i in image_ids)) if image_ids is not None else None
    if wanted is not None:
        nodes = nodes[nodes["image_id"].astype(str).isin(wanted)]
        edges = edges[edges["image_id"].astype(str).isin(wanted)]
        missing = sorted(set(wanted) - set(nodes["image_id"].astype(str)))
        if missing:
            msg = (
                f"{len(missing)} images have no subgraph (e.g. {missing[:3]}); build subgraphs for every stage-2 "
                "image or drop those records."
            )
            raise TrainingDataError(msg)
    unknown_kinds = sorted(set(nodes["kind"]) - set(_KIND_INDEX))
    if unknown_kinds:
        msg = f"subgraph_nodes has unknown node kinds {unknown_kinds}; allowed: {list(NODE_KINDS)}."
        raise TrainingDataError(msg)
    index = SubgraphIndex(nodes, edges)  # each image's nodes by rank, its edges in table order
    if max_nodes is not None:
        index = index.head(max_nodes)
    nodes, edges = index.nodes, index.edges

    # node-text features: once per unique text; the centre image node gets zeros (its kind embedding stands in)
    is_center = nodes["rank"].to_numpy() == 0
    texts = nodes["node_text"].fillna("").astype(str).to_numpy(dtype=object)
    unique_texts = sorted({t for t, c in zip(texts, is_center, strict=True) if not c and t})
    text_matrix = encode_node_texts(unique_texts) if unique_texts else None
    text_dim = int(text_matrix.shape[1]) if text_matrix is not None else int(encode_node_texts(["x"]).shape[1])
    text_row = {t: i for i, t in enumerate(unique_texts)}
    text_rows = np.fromiter((text_row.get(t, -1) for t in texts), dtype=np.int64, count=len(texts))
    text_rows[is_center] = -1

    # Columns as arrays once, then each graph is a slice: per-image pandas work cost more than the graphs.
    node_cols = _NodeArrays(
        node_id=nodes["node_id"].astype(str).to_numpy(dtype=object),
        kind=nodes["kind"].map(_KIND_INDEX).to_numpy(dtype=np.int64),
        rank=nodes["rank"].to_numpy(),
        offsets=nodes[["dx_m", "dy_m"]].to_numpy(dtype=np.float64),
        text_rows=text_rows,
    )
    edge_cols = _EdgeArrays(
        src=edges["src"].astype(str).to_numpy(dtype=object),
        dst=edges["dst"].astype(str).to_numpy(dtype=object),
        distance_m=pd.to_numeric(edges["distance_m"], errors="coerce").to_numpy(dtype=np.float64),
        bearing_deg=pd.to_numeric(edges["bearing_deg"], errors="coerce").to_numpy(dtype=np.float64),
    )
    graphs: dict[str, Data] = {}
    for image_id in index.image_ids:
        graphs[image_id] = _one_graph(
            image_id,
            node_cols,
            slice(*index.node_rows(image_id)),
            edge_cols,
            slice(*index.edge_rows(image_id)),
            text_matrix,
            text_dim,
        )
    logger.info("built %d graphs (%d nodes, %d unique node texts)", len(graphs), len(nodes), len(unique_texts))
    return graphs


@dataclass(frozen=True)
class _NodeArrays:
    node_id: np.ndarray
    kind: np.ndarray
    rank: np.ndarray
    offsets: np.ndarray
    text_rows: np.ndarray  # row of the node's text in the text matrix; -1: none (the centre, empty text)


@dataclass(frozen=True)
class _EdgeArrays:
    src: np.ndarray
    dst: np.ndarray
    distance_m: np.ndarray
    bearing_deg: np.ndarray


def table_digest(*frames: pd.DataFrame) -> str:
    """
    A hash of the frames' column names and values (row order included; the index ignored), stable across machines.

    Columns are hashed as they are (``pandas.util.hash_pandas_object``); only a column holding lists or arrays is
    first written out as text, since those cannot be hashed directly. Turning every column into text cost about
    half a minute on a city's subgraph tables.
    """
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(("\x1f".join(map(str, frame.columns)) + f"\x1e{len(frame)}").encode())
        for column in frame.columns:
            try:
                hashed = pd.util.hash_pandas_object(frame[column], index=False)
            except TypeError:  # lists or arrays in the cells
                hashed = pd.util.hash_pandas_object(frame[column].map(_cell_text), index=False)
            digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()


def _cell_text(value: object) -> str:
    return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value, default=str)


_LAST_BUILD: dict[str, Any] = {}  # key -> graphs of the last cached build (one entry: a family reuses one build)


def build_graphs_shared(
    subgraphs: SubgraphTables,
    encode_node_texts: Callable[[Sequence[str]], Tensor],
    *,
    encoder_identity: str | None,
    image_ids: Iterable[str],
    max_nodes: int | None = None,
) -> dict[str, Data]:
    """
    :func:`build_graphs`, reusing the previous call's graphs when the tables, images, node cap and node-text encoder
    are the same (the stage-2 runs of a model family, every seed, build identical graphs; about 20 s each on the
    bundled Helsinki). ``encoder_identity`` None disables the reuse. The graphs are shared: do not modify them.
    """
    ids = [str(i) for i in image_ids]
    if encoder_identity is None:
        return build_graphs(subgraphs, encode_node_texts, image_ids=ids, max_nodes=max_nodes)
    digest = hashlib.sha256(table_digest(subgraphs.nodes, subgraphs.edges).encode())
    digest.update("\x1f".join(ids).encode())
    key = f"{encoder_identity}|{max_nodes}|{digest.hexdigest()}"
    if key not in _LAST_BUILD:
        graphs = build_graphs(subgraphs, encode_node_texts, image_ids=ids, max_nodes=max_nodes)
        _LAST_BUILD.clear()
        _LAST_BUILD[key] = graphs
    return _LAST_BUILD[key]


def _one_graph(
    image_id: str,
    node_cols: _NodeArrays,
    rows: slice,
    edge_cols: _EdgeArrays,
    edge_rows: slice,
    text_matrix: Tensor | None,
    text_dim: int,
) -> Data:
    center = node_cols.rank[rows] == 0
    if int(center.sum()) != 1:
        msg = f"subgraph of image {image_id!r} has {int(center.sum())} rank-0 (centre) nodes; it needs exactly one."
        raise TrainingDataError(msg)
    node_ids = node_cols.node_id[rows]
    position = pd.Index(node_ids)
    if not position.is_unique:
        msg = f"subgraph of image {image_id!r} lists a node twice; node_id must be unique per image."
        raise TrainingDataError(msg)
    n = len(node_ids)
    x_text = torch.zeros(n, text_dim)
    if text_matrix is not None:  # one gather; the centre and empty texts stay zero
        text_rows = node_cols.text_rows[rows]
        has_text = text_rows >= 0
        x_text[torch.from_numpy(has_text)] = text_matrix[torch.from_numpy(text_rows[has_text])]
    offsets = node_cols.offsets[rows]
    if not np.isfinite(offsets).all():
        msg = f"subgraph of image {image_id!r} has NaN dx_m/dy_m offsets; every node needs its offset in metres."
        raise TrainingDataError(msg)

    src_idx = np.zeros(0, dtype=np.int64)
    dst_idx = np.zeros(0, dtype=np.int64)
    dist = np.zeros(0)
    bear = np.zeros(0)
    if edge_rows.stop > edge_rows.start:
        u = position.get_indexer(edge_cols.src[edge_rows])
        v = position.get_indexer(edge_cols.dst[edge_rows])
        d_m, b_deg = edge_cols.distance_m[edge_rows], edge_cols.bearing_deg[edge_rows]
        # an end outside the (truncated) node set, or a self-loop, is dropped; so is a repeat of an undirected pair
        # (the first listing is kept, in table order)
        keep = (u >= 0) & (v >= 0) & (u != v)
        u, v, d_m, b_deg = u[keep], v[keep], d_m[keep], b_deg[keep]
        _, first = np.unique(np.minimum(u, v) * n + np.maximum(u, v), return_index=True)
        first.sort()
        u, v = u[first], v[first]
        d_m = np.where(np.isfinite(d_m[first]), d_m[first], np.nan)
        b_deg = np.where(np.isfinite(b_deg[first]), b_deg[first], np.nan)
        # both directions, interleaved; the reverse edge's bearing turns round (NaN stays NaN)
        src_idx = np.stack([u, v], axis=1).ravel()
        dst_idx = np.stack([v, u], axis=1).ravel()
        dist = np.repeat(d_m, 2)
        bear = np.stack([b_deg, b_deg + 180.0], axis=1).ravel()
    edge_index = torch.from_numpy(np.stack([src_idx, dst_idx]).astype(np.int64)).reshape(2, -1)
    attr = (
        edge_features(offsets[src_idx], offsets[dst_idx], dist, bear)
        if len(src_idx)
        else np.zeros((0, EDGE_FEATURE_DIM), dtype=np.float32)
    )
    return Data(
        x_text=x_text,
        node_kind=torch.from_numpy(node_cols.kind[rows].copy()),
        pos_m=torch.from_numpy(offsets.astype(np.float32)),
        edge_index=edge_index,
        edge_attr=torch.from_numpy(attr),
        center_mask=torch.from_numpy(center.copy()),
        image_id=image_id,
        num_nodes=n,
    )


def centre_only(graph: Data) -> Data:
    """
    ``graph`` reduced to its centre node (the image) with no edges: the graph-dropped ablation's input.

    The model keeps its graph encoder and fusion block but learns and answers with no neighbourhood at all, so
    stage 2 trained this way measures what the extra steps and instructions alone give.
    """
    keep = graph.center_mask.nonzero().flatten()
    return Data(
        x_text=graph.x_text[keep].clone(),
        node_kind=graph.node_kind[keep].clone(),
        pos_m=graph.pos_m[keep].clone(),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_attr=torch.zeros(0, EDGE_FEATURE_DIM),
        center_mask=torch.ones(len(keep), dtype=torch.bool),
        image_id=graph.image_id,
        num_nodes=len(keep),
    )


def shuffle_graphs(graphs: dict[str, Data], *, seed: int) -> dict[str, Data]:
    """
    Give every image another image's graph (a seeded derangement: no image keeps its own).

    The shuffled-graph ablation trains stage 2 on graphs that do not belong to the image; whatever it still gains
    over stage 1 does not come from the graph's content.
    """
    ids = sorted(graphs)
    if len(ids) < 2:
        return dict(graphs)
    order = [ids[i] for i in np.random.default_rng([seed, 0x5EED]).permutation(len(ids))]
    # each image takes the graph of the next one in a random cycle: a derangement by construction
    return {image_id: graphs[order[(k + 1) % len(order)]] for k, image_id in enumerate(order)}


def collate_graphs(graphs: Sequence[Data]) -> Batch:
    """A PyG ``Batch`` of ``graphs`` in order; ``batch[i]`` is the sample that node i belongs to."""
    if not graphs:
        msg = "collate_graphs got no graphs; pass at least one."
        raise TrainingDataError(msg)
    return Batch.from_data_list(list(graphs))


class ImageStore:
    """
    Backbone-prepared images of one training run, by path.

    Parameters
    ----------
    root
        Storage root that ``image_path`` values are relative to.
    prepare
        ``Backbone.prepare_image``.
    identity
        ``Backbone.prepare_identity()``: when given, prepared images come from (and go to) :data:`SHARED_IMAGES`,
        so the runs and benchmarks of one process prepare each image once; None keeps them in this store only.
    """

    def __init__(self, root: str | Path, prepare: Callable[[Image.Image], Any], identity: str | None = None) -> None:
        self.root = Path(root)
        self.prepare = prepare
        self.identity = identity
        self._cache: dict[str, Any] = {}

    def check_exists(self, paths: Iterable[str]) -> None:
        """Raise :class:`TrainingDataError` naming missing image files (before training starts)."""
        missing = [p for p in dict.fromkeys(paths) if not (self.root / p).is_file()]
        if missing:
            msg = f"{len(missing)} image files are missing under root {self.root} (e.g. {missing[:3]}); check root."
            raise TrainingDataError(msg)

    def get(self, path: str) -> Any:
        """The prepared image at ``root / path``."""
        if self.identity is not None:
            return SHARED_IMAGES.prepared(self.root / path, self.identity, self.prepare, root=self.root)
        item = self._cache.get(path)
        if item is None:
            item = self.prepare(load_image(self.root / path, self.root))
            self._cache[path] = item
        return item


@dataclass(slots=True)
class RecordBatch:
    """One batch of training records, ready for ``Backbone.forward``."""

    record_ids: list[str]
    images: Any  # Backbone.collate_images output, B images
    instructions: list[str]
    positives: list[str]
    positive_ids: Tensor  # [B] text ids of the positives (false-negative masking)
    query_ids: Tensor  # [B] ids of (image_id, instruction)
    hard_negatives: list[str]  # M texts shared by the batch (possibly empty)
    hard_negative_ids: Tensor  # [M]
    graph: Batch | None  # B graphs in record order, or None

    def __len__(self) -> int:
        return len(self.record_ids)


def make_batch(
    records: pd.DataFrame,
    *,
    images: ImageStore,
    collate_images: Callable[[Sequence[Any]], Any],
    graphs: dict[str, Data] | None = None,
    max_hard_negatives: int = 0,
) -> RecordBatch:
    """
    Assemble the rows of ``records`` (in order) into a :class:`RecordBatch`.

    Parameters
    ----------
    records
        A slice of ``training_records``.
    images
        Image cache.
    collate_images
        ``Backbone.collate_images``.
    graphs
        ``image_id -> Data`` (stage 2); when given every record's image must have one.
    max_hard_negatives
        Hard-negative texts taken per record (0 = none).
    """
    instructions = records["instruction"].fillna("").astype(str).tolist()
    positives = records["positive"].astype(str).tolist()
    image_ids = records["image_id"].astype(str).tolist()
    hard: list[str] = []
    if max_hard_negatives > 0:
        for value in records["hard_negatives"]:
            if value is not None and not (isinstance(value, float) and np.isnan(value)):
                hard.extend(str(t) for t in list(value)[:max_hard_negatives])
        hard = list(dict.fromkeys(hard))
    graph_batch = None
    if graphs is not None:
        missing = [i for i in image_ids if i not in graphs]
        if missing:
            msg = f"no graph for images {missing[:3]}; stage 2 needs a subgraph for every record's image."
            raise TrainingDataError(msg)
        graph_batch = collate_graphs([graphs[i] for i in image_ids])
    return RecordBatch(
        record_ids=records["record_id"].astype(str).tolist(),
        images=collate_images([images.get(p) for p in records["image_path"].astype(str)]),
        instructions=instructions,
        positives=positives,
        positive_ids=text_ids(positives),
        query_ids=text_ids([f"{i}\x1f{s}" for i, s in zip(image_ids, instructions, strict=True)]),
        hard_negatives=hard,
        hard_negative_ids=text_ids(hard),
        graph=graph_batch,
    )


def epoch_batches(n_rows: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """
    Row indices of each batch of one epoch; deterministic in ``(seed, epoch)`` so a resumed run sees the same order.

    The last batch is dropped when it holds fewer than 2 rows (InfoNCE needs a negative).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_rows) if shuffle else np.arange(n_rows)
    batches = [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]
    return [b for b in batches if len(b) >= 2]
