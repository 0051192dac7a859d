"""The reference's graph JSON for one subgraph, written and read back.

Format (the reference's ``{"nodes": [{"node_id", "coords", "node_text"}], "edges": [{"source", "target"}],
"center_node"}``, with more fields per node and edge so nothing is lost)::

    {
      "image_id": "abc",                      # when the node rows carry one image_id
      "center_node": "image:mapillary:abc",
      "nodes": [{"node_id": "...", "coords": [lon, lat], "node_text": "...",
                 "kind": "...", "name": ..., "category": ..., "dx_m": ..., "dy_m": ..., "distance_m": ...,
                 "rank": ...}, ...],
      "edges": [{"source": "...", "target": "...", "kind": "...", "distance_m": ..., "bearing_deg": ...,
                 "street_name": ...}, ...]
    }

``coords`` is ``[lon, lat]`` in decimal degrees (EPSG:4326), the order the reference uses. Each edge is listed
**once**, as stored (``source`` = ``src``; ``bearing_deg`` is from source to target); edges are undirected in
meaning and a reader that wants both directions adds the reverse itself. Missing values are ``null``; the
optional fields are written only when the tables have those columns.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ugdata_pipeline.atomic_files import write_text_atomic
from ugdata_pipeline.context.subgraph import SUBGRAPH_EDGE_COLUMNS, SUBGRAPH_NODE_COLUMNS
from ugdata_pipeline.errors import SubgraphInputError
from ugdata_pipeline.grouping import key_runs

#: Optional node fields copied from / to the node table when present (besides node_id, coords, node_text).
NODE_EXTRA_FIELDS: tuple[str, ...] = ("kind", "name", "category", "dx_m", "dy_m", "distance_m", "rank")
#: Optional edge fields copied from / to the edge table when present (besides source and target).
EDGE_EXTRA_FIELDS: tuple[str, ...] = ("kind", "distance_m", "bearing_deg", "street_name")
_FLOAT_FIELDS = {"dx_m", "dy_m", "distance_m", "bearing_deg", "lon", "lat"}


def _plain(value: object) -> object:
    """A JSON-ready scalar: numpy scalars as Python ones, NaN / None / pd.NA as None."""
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value)):
        return None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.floating):
        return float(value)
    return value


def _column(values: pd.Series) -> list[object]:
    """
    A column as JSON-ready Python scalars (NaN / NA as None), converted in one vectorised pass where the dtype
    allows: a city's subgraph tables hold millions of values, and a per-value conversion cost a minute.
    """
    dtype = values.dtype
    if pd.api.types.is_float_dtype(dtype):
        return [None if v != v else v for v in values.to_numpy(dtype=float, na_value=np.nan).tolist()]
    if (pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)) and not values.hasnans:
        return values.to_numpy().tolist()
    if isinstance(dtype, pd.StringDtype):
        return values.to_numpy(dtype=object, na_value=None).tolist()
    return [_plain(v) for v in values.astype(object).tolist()]


class _GroupedColumns:
    """A table's columns as JSON-ready lists, sorted stably by ``key`` once, with each key's row range."""

    def __init__(self, table: pd.DataFrame, columns: list[str], key: str | None) -> None:
        if key is not None and key in table.columns and len(table):
            self.ranges = key_runs(table[key].astype(str).to_numpy())
            if sum(b - a for a, b in self.ranges.values()) != len(table):  # a key in two runs: sort
                table = table.sort_values(key, kind="stable")
                self.ranges = key_runs(table[key].astype(str).to_numpy())
        else:
            self.ranges = {}
        self.all = (0, len(table))
        self.columns = {c: _column(table[c]) for c in columns}

    def rows(self, group: str | None) -> tuple[int, int]:
        return self.all if group is None else self.ranges.get(group, (0, 0))


def _node_and_edge_columns(nodes_df: pd.DataFrame, edges_df: pd.DataFrame) -> tuple[list[str], list[str]]:
    missing = [c for c in ("node_id", "lon", "lat", "node_text") if c not in nodes_df.columns]
    missing += [f"edges.{c}" for c in ("src", "dst") if c not in edges_df.columns]
    if missing:
        msg = (
            f"to_graph_json needs node columns node_id, lon, lat, node_text and edge columns src, dst; "
            f"missing {missing}"
        )
        raise SubgraphInputError(msg)
    node_columns = ["node_id", "lon", "lat", "node_text", *(c for c in NODE_EXTRA_FIELDS if c in nodes_df.columns)]
    edge_columns = ["src", "dst", *(c for c in EDGE_EXTRA_FIELDS if c in edges_df.columns)]
    return node_columns, edge_columns


def _assemble(
    nodes: _GroupedColumns,
    node_rows: tuple[int, int],
    edges: _GroupedColumns,
    edge_rows: tuple[int, int],
    center_node: str,
    image_id: str | None,
) -> dict[str, Any]:
    """One graph JSON from row ranges of converted node and edge columns, validated as it is built."""
    n0, n1 = node_rows
    e0, e1 = edge_rows
    node_ids = [str(v) for v in nodes.columns["node_id"][n0:n1]]
    ids = set(node_ids)
    if str(center_node) not in ids:
        msg = f"center_node {center_node!r} is not among the {len(ids)} nodes; pass the subgraph's image node id"
        raise SubgraphInputError(msg)
    sources = [str(v) for v in edges.columns["src"][e0:e1]]
    targets = [str(v) for v in edges.columns["dst"][e0:e1]]
    dangling = [f"{s}->{d}" for s, d in zip(sources, targets, strict=True) if s not in ids or d not in ids]
    if dangling:
        msg = f"{len(dangling)} edge(s) join nodes outside the subgraph, e.g. {dangling[:3]}; pass induced edges only"
        raise SubgraphInputError(msg)

    # dict(zip(keys, row)) per row: the key order of the format, at a fraction of per-field assignment's cost.
    node_extra = [c for c in NODE_EXTRA_FIELDS if c in nodes.columns]
    lon, lat = nodes.columns["lon"][n0:n1], nodes.columns["lat"][n0:n1]
    node_keys = ("node_id", "coords", "node_text", *node_extra)
    node_values = (
        node_ids,
        [[x, y] for x, y in zip(lon, lat, strict=True)],
        nodes.columns["node_text"][n0:n1],
        *(nodes.columns[c][n0:n1] for c in node_extra),
    )
    node_list = [dict(zip(node_keys, row, strict=True)) for row in zip(*node_values, strict=True)]
    edge_extra = [c for c in EDGE_EXTRA_FIELDS if c in edges.columns]
    edge_keys = ("source", "target", *edge_extra)
    edge_values = (sources, targets, *(edges.columns[c][e0:e1] for c in edge_extra))
    edge_list = [dict(zip(edge_keys, row, strict=True)) for row in zip(*edge_values, strict=True)]

    graph: dict[str, Any] = {} if image_id is None else {"image_id": image_id}
    graph |= {"center_node": str(center_node), "nodes": node_list, "edges": edge_list}
    return graph


def to_graph_json(nodes_df: pd.DataFrame, edges_df: pd.DataFrame, center_node: str) -> dict[str, Any]:
    """
    One subgraph as the reference's graph JSON (a dict ready for ``json.dumps``).

    Parameters
    ----------
    nodes_df
        The subgraph's node rows (from :func:`~ugdata_pipeline.context.subgraph.subgraph_for`): at least
        ``node_id``, ``lon``, ``lat`` (decimal degrees) and ``node_text``.
    edges_df
        Its edge rows: at least ``src`` and ``dst``, both among ``nodes_df.node_id``.
    center_node
        The centre node id (the image node, ``image:<source>:<id>``).

    Returns
    -------
    graph
        ``{"nodes", "edges", "center_node"}`` (plus ``"image_id"`` when the node rows carry exactly one).

    Raises
    ------
    SubgraphInputError
        Missing columns, a centre or an edge endpoint that is not a node.
    """
    node_columns, edge_columns = _node_and_edge_columns(nodes_df, edges_df)
    nodes = _GroupedColumns(nodes_df, node_columns, key=None)
    edges = _GroupedColumns(edges_df, edge_columns, key=None)
    image_id = None
    if "image_id" in nodes_df.columns and nodes_df["image_id"].nunique() == 1:
        image_id = str(nodes_df["image_id"].iloc[0])
    return _assemble(nodes, nodes.all, edges, edges.all, center_node, image_id)


def graph_json_by_image(nodes_df: pd.DataFrame, edges_df: pd.DataFrame) -> Callable[[str, str], dict[str, Any]]:
    """
    ``render(image_id, center_node)`` for every image of the long subgraph tables (``image_id`` columns).

    The tables are converted once, so rendering all of a city's graphs costs one pass over them rather than one
    pandas conversion per image. Each graph equals :func:`to_graph_json` of that image's rows.
    """
    for table, name in ((nodes_df, "nodes"), (edges_df, "edges")):
        if "image_id" not in table.columns:
            msg = f"graph_json_by_image needs an image_id column in the subgraph {name} table"
            raise SubgraphInputError(msg)
    node_columns, edge_columns = _node_and_edge_columns(nodes_df, edges_df)
    nodes = _GroupedColumns(nodes_df, node_columns, key="image_id")
    edges = _GroupedColumns(edges_df, edge_columns, key="image_id")

    def render(image_id: str, center_node: str) -> dict[str, Any]:
        rows = nodes.rows(str(image_id))
        if rows[1] == rows[0]:
            msg = f"image {image_id!r} has no rows in the subgraph nodes table"
            raise SubgraphInputError(msg)
        return _assemble(nodes, rows, edges, edges.rows(str(image_id)), center_node, str(image_id))

    return render


def from_graph_json(graph: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """
    Read a graph JSON dict back into node and edge tables.

    Parameters
    ----------
    graph
        As written by :func:`to_graph_json`, or a bare reference graph (``node_id``, ``coords``,
        ``node_text``; ``source``, ``target``).

    Returns
    -------
    nodes_df, edges_df, center_node
        ``nodes_df`` has ``node_id``, ``lon``, ``lat``, ``node_text`` and whichever optional fields the JSON
        held (plus ``image_id`` when the JSON names one), in the order of the subgraph tables; ``edges_df``
        has ``src``, ``dst`` and every optional edge field (missing values as None / NaN).

    Raises
    ------
    SubgraphInputError
        A missing key, bad ``coords``, or a centre / edge endpoint that is not a node.
    """
    if not isinstance(graph, Mapping):
        msg = f"graph JSON must be an object (dict), got {type(graph).__name__}"
        raise SubgraphInputError(msg)
    missing = [k for k in ("nodes", "edges", "center_node") if k not in graph]
    if missing:
        msg = f"graph JSON is missing key(s) {missing}; it has {sorted(graph)}"
        raise SubgraphInputError(msg)
    rows: list[dict[str, object]] = []
    for i, node in enumerate(graph["nodes"]):
        absent = [k for k in ("node_id", "coords", "node_text") if k not in node]
        coords = node.get("coords")
        if absent or not isinstance(coords, list | tuple) or len(coords) != 2:
            msg = (
                f"graph JSON node {i} needs node_id, coords ([lon, lat]) and node_text; missing {absent}, "
                f"coords={coords!r}"
            )
            raise SubgraphInputError(msg)
        row = {"node_id": str(node["node_id"]), "lon": coords[0], "lat": coords[1], "node_text": node["node_text"]}
        row.update({k: node[k] for k in NODE_EXTRA_FIELDS if k in node})
        rows.append(row)
    edge_rows: list[dict[str, object]] = []
    for i, edge in enumerate(graph["edges"]):
        if "source" not in edge or "target" not in edge:
            msg = f"graph JSON edge {i} needs 'source' and 'target', got keys {sorted(edge)}"
            raise SubgraphInputError(msg)
        row = {"src": str(edge["source"]), "dst": str(edge["target"])}
        row.update({k: edge[k] for k in EDGE_EXTRA_FIELDS if k in edge})
        edge_rows.append(row)

    node_columns = ["node_id", "lon", "lat", "node_text", *(k for k in NODE_EXTRA_FIELDS if any(k in r for r in rows))]
    nodes_df = _frame(rows, node_columns)
    if "image_id" in graph:
        nodes_df.insert(0, "image_id", pd.Series([str(graph["image_id"])] * len(nodes_df), dtype=object))
        nodes_df = nodes_df[[c for c in SUBGRAPH_NODE_COLUMNS if c in nodes_df.columns]]
    edge_columns = ["src", "dst", *EDGE_EXTRA_FIELDS]  # all of them, so an empty edge list keeps its columns
    edges_df = _frame(edge_rows, edge_columns)
    if "image_id" in graph:
        edges_df.insert(0, "image_id", pd.Series([str(graph["image_id"])] * len(edges_df), dtype=object))
        edges_df = edges_df[[c for c in SUBGRAPH_EDGE_COLUMNS if c in edges_df.columns]]

    center = str(graph["center_node"])
    ids = set(nodes_df["node_id"])
    if center not in ids:
        msg = f"graph JSON center_node {center!r} is not among its {len(ids)} nodes"
        raise SubgraphInputError(msg)
    dangling = [
        f"{s}->{d}" for s, d in zip(edges_df["src"], edges_df["dst"], strict=True) if s not in ids or d not in ids
    ]
    if dangling:
        msg = f"graph JSON has {len(dangling)} edge(s) whose ends are not nodes, e.g. {dangling[:3]}"
        raise SubgraphInputError(msg)
    return nodes_df, edges_df, center


def _frame(rows: list[dict[str, object]], columns: list[str]) -> pd.DataFrame:
    """Rows as a frame with the subgraph tables' dtypes: floats, int64 rank, text as object with None."""
    data: dict[str, pd.Series] = {}
    for column in columns:
        values = [r.get(column) for r in rows]
        if column in _FLOAT_FIELDS:
            data[column] = pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
        elif column == "rank":
            data[column] = pd.Series(values, dtype="int64")
        else:
            data[column] = pd.Series(values, dtype=object)
    return pd.DataFrame(data, columns=columns)


def write_graph_json(
    path: str | os.PathLike[str], nodes_df: pd.DataFrame, edges_df: pd.DataFrame, center_node: str
) -> Path:
    """
    Write one subgraph as graph JSON, atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    path
        Target file (``.json``); its folder is created if needed.
    nodes_df, edges_df, center_node
        As for :func:`to_graph_json`.

    Returns
    -------
    path
        The written file.
    """
    target = Path(path)
    text = json.dumps(to_graph_json(nodes_df, edges_df, center_node), ensure_ascii=False, allow_nan=False)
    write_text_atomic(target, text, fsync=True)
    return target


def read_graph_json(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Read a graph JSON file written by :func:`write_graph_json` (see :func:`from_graph_json`)."""
    return from_graph_json(json.loads(Path(path).read_text(encoding="utf-8")))
