"""A subgraph as a PyTorch Geometric ``Data`` object, and back.

Conventions
    * Nodes keep the order of the node rows (the subgraph tables list the centre first, then nearest first).
    * Every stored edge ``src -> dst`` becomes two directed edges: the first ``E`` columns of ``edge_index``
      are the edges as stored, the next ``E`` their reverses, in the same order.
    * ``edge_attr`` columns are :data:`EDGE_ATTR_NAMES`: the edge's own ``distance_m`` (metres), the sine and
      cosine of the edge's own ``bearing_deg`` (degrees clockwise from true north, ``src -> dst``), and
      ``dx_m``, ``dy_m``: the east / north displacement in metres from the source node's position to the
      target node's position (``pos[dst] - pos[src]``). A reverse edge has the same distance, the bearing
      plus 180° (so sine and cosine change sign) and the negated displacement. The bearing and distance
      describe the relation (e.g. from a POI to the nearest point of its street), the displacement joins
      the two nodes' anchor points, so they agree only for point-to-point edges.
    * ``pos`` is ``(dx_m, dy_m)`` of each node relative to the image, in metres; ``center_index`` is the
      position of the centre node (a 1-element tensor, so batching offsets it like ``edge_index``).
    * Values are in raw units (metres); scaling belongs to the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ugdata_pipeline.errors import SubgraphInputError
from ugdata_pipeline.graph.geodesy import normalize_bearing_deg

if TYPE_CHECKING:
    from torch_geometric.data import Data

#: Columns of ``Data.edge_attr``.
EDGE_ATTR_NAMES: tuple[str, ...] = ("distance_m", "bearing_sin", "bearing_cos", "dx_m", "dy_m")


def _data_class() -> type[Data]:
    from ugdata_pipeline._pyg import Data  # lazy: PyG (and torch) only when a graph is converted

    return Data


def to_pyg_data(nodes_df: pd.DataFrame, edges_df: pd.DataFrame, *, node_features: torch.Tensor | None = None) -> Data:
    """
    Build a ``torch_geometric.data.Data`` for one subgraph (conventions in the module docstring).

    Parameters
    ----------
    nodes_df
        The subgraph's node rows: ``node_id``, ``dx_m``, ``dy_m`` (metres); ``rank`` (0 = centre) or ``kind``
        (``"image"``) locate the centre; ``kind`` and ``node_text`` are kept when present.
    edges_df
        Its edge rows: ``src``, ``dst`` (node ids), ``distance_m`` (metres), ``bearing_deg`` (degrees,
        ``src -> dst``); ``kind`` and ``street_name`` are kept when present.
    node_features
        Optional ``x``, shape ``(N, F)`` (e.g. node-text embeddings), in node-row order.

    Returns
    -------
    Data
        ``edge_index`` ``(2, 2E)`` int64, ``edge_attr`` ``(2E, 5)`` float32, ``pos`` ``(N, 2)`` float32,
        ``center_index`` ``(1,)`` int64, ``x`` when given, and lists ``node_ids``, ``node_kinds``,
        ``node_texts``, ``edge_kinds``, ``edge_street_names`` (stored edges, forward order).

    Raises
    ------
    SubgraphInputError
        Missing columns, duplicate node ids, edges whose ends are not nodes, no (or several) centre
        nodes, or features whose first dimension is not ``N``.
    """
    missing = [c for c in ("node_id", "dx_m", "dy_m") if c not in nodes_df.columns]
    missing += [f"edges.{c}" for c in ("src", "dst", "distance_m", "bearing_deg") if c not in edges_df.columns]
    if missing:
        msg = f"to_pyg_data is missing column(s) {missing}; pass the rows of subgraph_for(tables, image_id)"
        raise SubgraphInputError(msg)
    index = pd.Index(nodes_df["node_id"].astype(str))
    if not index.is_unique:
        msg = f"nodes_df.node_id repeats ids, e.g. {sorted(set(index[index.duplicated()]))[:3]}; pass one subgraph"
        raise SubgraphInputError(msg)
    n = len(index)
    src = index.get_indexer(edges_df["src"].astype(str))
    dst = index.get_indexer(edges_df["dst"].astype(str))
    if ((src < 0) | (dst < 0)).any():
        row = int(np.flatnonzero((src < 0) | (dst < 0))[0])
        msg = (
            f"edge {edges_df['src'].iat[row]!r} -> {edges_df['dst'].iat[row]!r} joins a node that is not in "
            "nodes_df; pass the edges of the same subgraph"
        )
        raise SubgraphInputError(msg)
    if "rank" in nodes_df.columns:
        centers = np.flatnonzero(nodes_df["rank"].to_numpy() == 0)
    elif "kind" in nodes_df.columns:
        centers = np.flatnonzero(nodes_df["kind"].to_numpy(dtype=object) == "image")
    else:
        centers = np.empty(0, dtype=np.int64)
    if len(centers) != 1:
        msg = f"nodes_df must hold exactly one centre node (rank 0, or the one kind 'image' node), found {len(centers)}"
        raise SubgraphInputError(msg)
    if node_features is not None and (node_features.dim() != 2 or node_features.shape[0] != n):
        msg = f"node_features must have shape (N, F) with N = {n} nodes, got {tuple(node_features.shape)}"
        raise SubgraphInputError(msg)

    pos = np.column_stack([nodes_df["dx_m"].to_numpy(dtype=float), nodes_df["dy_m"].to_numpy(dtype=float)])
    distance = edges_df["distance_m"].to_numpy(dtype=float)
    bearing = np.radians(edges_df["bearing_deg"].to_numpy(dtype=float))
    displacement = pos[dst] - pos[src]
    forward = np.column_stack([distance, np.sin(bearing), np.cos(bearing), displacement])
    reverse = np.column_stack([distance, -np.sin(bearing), -np.cos(bearing), -displacement])
    edge_index = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64)

    def texts(frame: pd.DataFrame, column: str, count: int) -> list[str | None]:
        if column not in frame.columns:
            return [None] * count
        return [None if pd.isna(v) else str(v) for v in frame[column].to_numpy(dtype=object)]

    data = _data_class()(
        x=node_features,
        edge_index=torch.from_numpy(edge_index.reshape(2, -1)),
        edge_attr=torch.from_numpy(np.concatenate([forward, reverse]).reshape(-1, len(EDGE_ATTR_NAMES))).float(),
        pos=torch.from_numpy(pos.reshape(-1, 2)).float(),
        center_index=torch.tensor([int(centers[0])], dtype=torch.long),
    )
    data.num_nodes = n
    data.node_ids = list(index)
    data.node_kinds = texts(nodes_df, "kind", n)
    data.node_texts = texts(nodes_df, "node_text", n)
    data.edge_kinds = texts(edges_df, "kind", len(edges_df))
    data.edge_street_names = texts(edges_df, "street_name", len(edges_df))
    return data


def from_pyg_data(data: Data) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """
    Recover node and edge tables from a ``Data`` made by :func:`to_pyg_data`.

    The stored edges are the first half of ``edge_index``; ``bearing_deg`` comes back from its sine and
    cosine (float32 precision, about 1e-5 degrees).

    Returns
    -------
    nodes_df, edges_df, center_node
        ``nodes_df``: ``node_id``, ``kind``, ``node_text``, ``dx_m``, ``dy_m``; ``edges_df``: ``src``,
        ``dst``, ``kind``, ``distance_m``, ``bearing_deg``, ``street_name``.

    Raises
    ------
    SubgraphInputError
        ``data`` lacks the attributes :func:`to_pyg_data` sets, or its edge halves are not reverses.
    """
    needed = ("edge_index", "edge_attr", "pos", "center_index", "node_ids")
    absent = [k for k in needed if getattr(data, k, None) is None]
    if absent:
        msg = f"data lacks {absent}; from_pyg_data reads Data objects made by to_pyg_data"
        raise SubgraphInputError(msg)
    edge_index = data.edge_index.cpu().numpy()
    attr = data.edge_attr.cpu().double().numpy()
    half = edge_index.shape[1] // 2
    if edge_index.shape[1] % 2 or not np.array_equal(edge_index[:, half:], edge_index[::-1, :half]):
        msg = "data.edge_index is not [stored edges, their reverses]; it was not made by to_pyg_data"
        raise SubgraphInputError(msg)
    node_ids = list(data.node_ids)
    pos = data.pos.cpu().double().numpy()
    nodes_df = pd.DataFrame(
        {
            "node_id": pd.Series(node_ids, dtype=object),
            "kind": pd.Series(getattr(data, "node_kinds", [None] * len(node_ids)), dtype=object),
            "node_text": pd.Series(getattr(data, "node_texts", [None] * len(node_ids)), dtype=object),
            "dx_m": pos[:, 0],
            "dy_m": pos[:, 1],
        }
    )
    ids = np.asarray(node_ids, dtype=object)
    forward = attr[:half]
    edges_df = pd.DataFrame(
        {
            "src": pd.Series(ids[edge_index[0, :half]], dtype=object),
            "dst": pd.Series(ids[edge_index[1, :half]], dtype=object),
            "kind": pd.Series(getattr(data, "edge_kinds", [None] * half), dtype=object),
            "distance_m": forward[:, 0],
            "bearing_deg": normalize_bearing_deg(np.degrees(np.arctan2(forward[:, 1], forward[:, 2]))),
            "street_name": pd.Series(getattr(data, "edge_street_names", [None] * half), dtype=object),
        }
    )
    return nodes_df, edges_df, str(node_ids[int(data.center_index.reshape(-1)[0])])
