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
from ugdata_pipeline.context.subgraph_tables import (
    SUBGRAPH_EDGE_COLUMNS,
    SUBGRAPH_NODE_COLUMNS,
    SubgraphIndex,
)
from ugdata_pipeline.errors import GraphJsonError, SubgraphInputError
from ugdata_pipeline.tables import require_columns

#: Optional node fields copied from / to the node table when present (besides node_id, coords, node_text).
NODE_EXTRA_FIELDS: tuple[str, ...] = ("kind", "name", "category", "dx_m", "dy_m", "distance_m", "rank")
#: Optional edge fields copied from / to the edge table when present (besides source and target).
EDGE_EXTRA_FIELDS: tuple[str, ...] = ("kind", "distance_m", "bearing_deg", "street_name")
_FLOAT_FIELDS = {"dx_m", "dy_m", "distance_m", "bearing_deg", "lon", "lat"}


def _node_id_like(value: object) -> bool:
    """A node id as graph JSON holds it: a string or an integer (never a bool, list or float)."""
    return isinstance(value, str | int) and not isinstance(value, bool)


def validate_graph_json(graph: object, *, where: str = "graph JSON") -> None:
    """
    Check a graph JSON object against the reference format: the one check, used by every reader and exporter.

    Parameters
    ----------
    graph
        The parsed JSON (normally a dict).
    where
        What the graph is, for the messages (e.g. ``"graph of image 'abc'"``).

    Raises
    ------
    GraphJsonError
        ``graph`` is not an object; ``nodes`` / ``edges`` / ``center_node`` are missing or ``nodes`` / ``edges``
        are not lists; a node is not an object, lacks ``node_id`` / ``coords`` / ``node_text``, has a ``node_id``
        that is not a string or integer or that repeats, or ``coords`` that are not ``[lon, lat]`` numbers (or
        nulls); an edge lacks ``source`` / ``target``; an edge end or the centre is not a node (ids compared as
        given: ``1`` and ``"1"`` differ).
    """
    if not isinstance(graph, Mapping):
        msg = f"{where} must be an object (dict), got {type(graph).__name__}"
        raise GraphJsonError(msg)
    missing = [k for k in ("nodes", "edges", "center_node") if k not in graph]
    if missing:
        msg = (
            f"{where} is missing key(s) {missing}; expected keys nodes, edges, center_node, it has "
            f"{sorted(map(str, graph))}"
        )
        raise GraphJsonError(msg)
    for key in ("nodes", "edges"):
        if not isinstance(graph[key], list | tuple):
            msg = f"{where}: {key} must be a list, got {type(graph[key]).__name__}"
            raise GraphJsonError(msg)
    ids: set[object] = set()
    for i, node in enumerate(graph["nodes"]):
        if not isinstance(node, Mapping):
            msg = f"{where}: node {i} must be an object, got {type(node).__name__}: {str(node)[:120]}"
            raise GraphJsonError(msg)
        absent = [k for k in ("node_id", "coords", "node_text") if k not in node]
        if absent:
            msg = (
                f"{where}: node {i} lacks {absent}; every node needs node_id, coords ([lon, lat]) and node_text: "
                f"{str(node)[:120]}"
            )
            raise GraphJsonError(msg)
        node_id, coords = node["node_id"], node["coords"]
        if not _node_id_like(node_id):
            msg = f"{where}: node {i} node_id must be a string or an integer, got {node_id!r}"
            raise GraphJsonError(msg)
        if (
            not isinstance(coords, list | tuple)
            or len(coords) != 2
            or not all(c is None or (isinstance(c, int | float) and not isinstance(c, bool)) for c in coords)
        ):
            msg = f"{where}: node {i} ({node_id!r}) coords must be [lon, lat] numbers, got {coords!r}"
            raise GraphJsonError(msg)
        if node_id in ids:
            msg = f"{where}: node {i} repeats node_id {node_id!r}; node ids must be unique within a graph"
            raise GraphJsonError(msg)
        ids.add(node_id)
    dangling = []
    for i, edge in enumerate(graph["edges"]):
        if not isinstance(edge, Mapping) or "source" not in edge or "target" not in edge:
            keys = sorted(map(str, edge)) if isinstance(edge, Mapping) else type(edge).__name__
            msg = f"{where}: edge {i} lacks source/target, got keys {keys}: {str(edge)[:120]}"
            raise GraphJsonError(msg)
        ends = (edge["source"], edge["target"])
        if not all(_node_id_like(end) and end in ids for end in ends):
            dangling.append(f"{ends[0]!r} -> {ends[1]!r}")
    center = graph["center_node"]
    if not (_node_id_like(center) and center in ids):
        msg = f"{where}: center_node {center!r} is not one of the graph's nodes ({len(ids)} nodes)"
        raise GraphJsonError(msg)
    if dangling:
        msg = f"{where}: {len(dangling)} edge(s) name a node that is not in the graph, e.g. {dangling[:3]}"
        raise GraphJsonError(msg)


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


class _Columns:
    """A table's columns as JSON-ready lists, converted once; a graph is a row range of them."""

    def __init__(self, table: pd.DataFrame, columns: list[str]) -> None:
        self.all = (0, len(table))
        self.columns = {c: _column(table[c]) for c in columns}


def _node_and_edge_columns(nodes_df: pd.DataFrame, edges_df: pd.DataFrame) -> tuple[list[str], list[str]]:
    fix = "to_graph_json needs node columns node_id, lon, lat, node_text and edge columns src, dst."
    node_needs = ("node_id", "lon", "lat", "node_text")
    require_columns(nodes_df, node_needs, table="to_graph_json nodes", fix=fix, error=SubgraphInputError)
    require_columns(edges_df, ("src", "dst"), table="to_graph_json edges", fix=fix, error=SubgraphInputError)
    node_columns = ["node_id", "lon", "lat", "node_text", *(c for c in NODE_EXTRA_FIELDS if c in nodes_df.columns)]
    edge_columns = ["src", "dst", *(c for c in EDGE_EXTRA_FIELDS if c in edges_df.columns)]
    return node_columns, edge_columns


def _assemble(
    nodes: _Columns,
    node_rows: tuple[int, int],
    edges: _Columns,
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
    nodes = _Columns(nodes_df, node_columns)
    edges = _Columns(edges_df, edge_columns)
    image_id = None
    if "image_id" in nodes_df.columns and nodes_df["image_id"].nunique() == 1:
        image_id = str(nodes_df["image_id"].iloc[0])
    return _assemble(nodes, nodes.all, edges, edges.all, center_node, image_id)


def graph_json_by_image(nodes_df: pd.DataFrame, edges_df: pd.DataFrame) -> Callable[[str, str], dict[str, Any]]:
    """
    ``render(image_id, center_node)`` for every image of the long subgraph tables (``image_id`` columns).

    The tables are converted once, so rendering all of a city's graphs costs one pass over them rather than one
    pandas conversion per image. Each graph equals :func:`to_graph_json` of that image's rows as
    :class:`~ugdata_pipeline.context.subgraph_tables.SubgraphIndex` orders them (nodes by ``rank``).
    """
    node_columns, edge_columns = _node_and_edge_columns(nodes_df, edges_df)
    index = SubgraphIndex(nodes_df, edges_df)
    nodes = _Columns(index.nodes, node_columns)
    edges = _Columns(index.edges, edge_columns)

    def render(image_id: str, center_node: str) -> dict[str, Any]:
        if image_id not in index:
            msg = f"image {image_id!r} has no rows in the subgraph nodes table"
            raise SubgraphInputError(msg)
        return _assemble(nodes, index.node_rows(image_id), edges, index.edge_rows(image_id), center_node, str(image_id))

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
    GraphJsonError
        Whatever :func:`validate_graph_json` finds (a missing key, bad ``coords``, a centre or edge end that is
        not a node, ...).
    """
    validate_graph_json(graph)
    rows: list[dict[str, object]] = []
    for node in graph["nodes"]:
        coords = node["coords"]
        row = {"node_id": str(node["node_id"]), "lon": coords[0], "lat": coords[1], "node_text": node["node_text"]}
        row.update({k: node[k] for k in NODE_EXTRA_FIELDS if k in node})
        rows.append(row)
    edge_rows: list[dict[str, object]] = []
    for edge in graph["edges"]:
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
