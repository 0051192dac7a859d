"""The subgraph model: the long subgraph tables, their one per-image index, and their errors.

:func:`~ugdata_pipeline.context.subgraph.build_subgraphs` writes the tables; the dataset export, the UGE trainer
(PyG graphs) and the benchmark read them. Every reader finds one image's rows through :class:`SubgraphIndex`, so
the order of an image's rows is the same everywhere: node rows by ``rank`` (the centre first), edge rows in table
order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.errors import SubgraphInputError, UnknownSubgraphError
from ugdata_pipeline.grouping import key_runs

__all__ = [
    "SUBGRAPH_EDGE_COLUMNS",
    "SUBGRAPH_NODE_COLUMNS",
    "SUBGRAPH_SUMMARY_COLUMNS",
    "SubgraphIndex",
    "SubgraphInputError",
    "SubgraphTables",
    "UnknownSubgraphError",
    "subgraph_for",
    "subgraph_size_outcome",
]

#: Columns of the ``subgraph_nodes`` long table (one row per (image, node)).
SUBGRAPH_NODE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "node_id",
    "kind",
    "name",
    "category",
    "node_text",
    "lon",
    "lat",
    "dx_m",
    "dy_m",
    "distance_m",
    "rank",
)
#: Columns of the ``subgraph_edges`` long table (one row per (image, edge)).
SUBGRAPH_EDGE_COLUMNS: tuple[str, ...] = ("image_id", "src", "dst", "kind", "distance_m", "bearing_deg", "street_name")
#: Columns of the ``subgraphs`` table (one row per image).
SUBGRAPH_SUMMARY_COLUMNS: tuple[str, ...] = ("image_id", "center_node", "n_nodes", "n_edges", "truncated")


class SubgraphIndex:
    """
    ``image_id -> its rows`` of the long subgraph tables, built once; the one per-image index of the project.

    Both tables are reordered once so that each image's rows are one contiguous slice of :attr:`nodes` /
    :attr:`edges`: images in sorted ``image_id`` order (ids compared as text), an image's node rows by ``rank``
    (ties, and tables without a ``rank`` column, keep table order), its edge rows in table order.

    Parameters
    ----------
    nodes, edges
        The long ``subgraph_nodes`` / ``subgraph_edges`` tables (any row order), each with an ``image_id`` column.

    Raises
    ------
    SubgraphInputError
        A table without an ``image_id`` column.
    """

    def __init__(self, nodes: pd.DataFrame, edges: pd.DataFrame) -> None:
        for table, name in ((nodes, "nodes"), (edges, "edges")):
            if "image_id" not in table.columns:
                msg = (
                    f"the subgraph {name} table has no image_id column (it has {list(table.columns)}); pass the "
                    f"long subgraph_{name} table of build_subgraphs"
                )
                raise SubgraphInputError(msg)
        # Sorting integer codes of the image ids (factorised in sorted order) gives the order a sort of the id
        # strings would, at a fraction of the cost on millions of rows.
        node_codes, node_names = pd.factorize(nodes["image_id"].astype(str), sort=True)
        if "rank" in nodes.columns:
            rank = pd.to_numeric(nodes["rank"], errors="coerce").to_numpy(dtype=float)
            order = np.lexsort((rank, node_codes))
        else:
            order = np.argsort(node_codes, kind="stable")
        self.nodes: pd.DataFrame = nodes.iloc[order].reset_index(drop=True)
        self._node_runs = key_runs(node_codes[order], node_names)
        edge_codes, edge_names = pd.factorize(edges["image_id"].astype(str), sort=True)
        order = np.argsort(edge_codes, kind="stable")
        self.edges: pd.DataFrame = edges.iloc[order].reset_index(drop=True)
        self._edge_runs = key_runs(edge_codes[order], edge_names)

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._node_runs

    def __len__(self) -> int:
        """Number of images with node rows."""
        return len(self._node_runs)

    @property
    def image_ids(self) -> list[str]:
        """The images with node rows, in sorted order (the order of :attr:`nodes`)."""
        return list(self._node_runs)

    def node_rows(self, image_id: object) -> tuple[int, int]:
        """``(start, stop)`` of the image's rows in :attr:`nodes` (``(0, 0)`` when it has none)."""
        return self._node_runs.get(str(image_id), (0, 0))

    def edge_rows(self, image_id: object) -> tuple[int, int]:
        """``(start, stop)`` of the image's rows in :attr:`edges` (``(0, 0)`` when it has none)."""
        return self._edge_runs.get(str(image_id), (0, 0))

    def nodes_of(self, image_id: object) -> pd.DataFrame:
        """Subgraph nodes of one image, by ``rank`` (centre first); empty for an image the tables lack."""
        start, stop = self.node_rows(image_id)
        return self.nodes.iloc[start:stop]

    def edges_of(self, image_id: object) -> pd.DataFrame:
        """Subgraph edges of one image, in table order."""
        start, stop = self.edge_rows(image_id)
        return self.edges.iloc[start:stop]

    def head(self, max_nodes: int) -> SubgraphIndex:
        """
        The index of the same tables with each image cut to its first ``max_nodes`` node rows (lowest ranks).

        Edge rows are kept whole: an edge to a node that was cut is the reader's to drop.
        """
        if len(self.nodes) == 0:
            return self
        starts = np.fromiter((a for a, _ in self._node_runs.values()), dtype=np.int64, count=len(self._node_runs))
        stops = np.fromiter((b for _, b in self._node_runs.values()), dtype=np.int64, count=len(self._node_runs))
        position = np.arange(len(self.nodes)) - np.repeat(starts, stops - starts)
        cut = SubgraphIndex.__new__(SubgraphIndex)
        cut.nodes = self.nodes[position < max_nodes].reset_index(drop=True)
        kept = np.minimum(stops - starts, max_nodes)
        new_starts = np.concatenate([[0], np.cumsum(kept)[:-1]])
        cut._node_runs = {
            image_id: (int(a), int(a + k)) for image_id, a, k in zip(self._node_runs, new_starts, kept, strict=True)
        }
        cut.edges, cut._edge_runs = self.edges, self._edge_runs
        return cut


@dataclass(slots=True)
class SubgraphTables:
    """
    The subgraphs of a set of images: the one subgraph model, used by context, dataset, uge and ugbench.

    ``nodes, edges = tables`` unpacks the two long tables (what training and run fingerprints read).

    Attributes
    ----------
    nodes
        ``subgraph_nodes`` (columns :data:`SUBGRAPH_NODE_COLUMNS`), grouped by image, ``rank`` ascending.
    edges
        ``subgraph_edges`` (columns :data:`SUBGRAPH_EDGE_COLUMNS`), grouped by image.
    summary
        ``subgraphs`` (columns :data:`SUBGRAPH_SUMMARY_COLUMNS`), one row per image in input order; None when
        only the long tables were read back (training needs no more).
    counts
        Figures for metadata: images, rows, truncated subgraphs, node-count quantiles, radius and cap.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    summary: pd.DataFrame | None = None
    counts: dict[str, int | float] = field(default_factory=dict)
    _index: SubgraphIndex | None = field(default=None, init=False, repr=False, compare=False)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        yield self.nodes
        yield self.edges

    @property
    def index(self) -> SubgraphIndex:
        """The per-image index of :attr:`nodes` and :attr:`edges`, built on first use (O(rows)), then kept."""
        if self._index is None:
            self._index = SubgraphIndex(self.nodes, self.edges)
        return self._index


def subgraph_for(tables: SubgraphTables, image_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """
    The node and edge rows of one image's subgraph.

    The first call builds the tables' :class:`SubgraphIndex` (O(rows)); later calls cost O(subgraph size).

    Parameters
    ----------
    tables
        From :func:`~ugdata_pipeline.context.subgraph.build_subgraphs`, or rebuilt from stored tables with
        ``SubgraphTables(nodes, edges)``.
    image_id
        The image's ``image_id`` (not its node id).

    Returns
    -------
    nodes, edges
        The rows of that image (fresh 0..n-1 index), nodes by ``rank``; ``edges`` may be empty.

    Raises
    ------
    UnknownSubgraphError
        The tables hold no subgraph for ``image_id``.
    """
    index = tables.index
    if image_id not in index:
        msg = (
            f"no subgraph for image_id {image_id!r} ({len(index):,} subgraphs held); pass an "
            "image_id of the images table given to build_subgraphs, not its 'image:<source>:<id>' node id"
        )
        raise UnknownSubgraphError(msg)
    return index.nodes_of(image_id).reset_index(drop=True), index.edges_of(image_id).reset_index(drop=True)


# --- checks --------------------------------------------------------------------------------------


def subgraph_size_outcome(summary: pd.DataFrame, *, min_nodes: int = 2, max_nodes: int = 256) -> CheckOutcome:
    """
    Every subgraph has between ``min_nodes`` and ``max_nodes`` nodes (centre included).

    Fewer than 2 means the image lost its street; more than the cap means the cap was not applied.

    Parameters
    ----------
    summary
        The ``subgraphs`` table (``image_id``, ``n_nodes``).
    min_nodes, max_nodes
        Inclusive bounds; ``max_nodes`` is normally ``SubgraphConfig.max_nodes``.

    Returns
    -------
    CheckOutcome
        ``observed`` = number of subgraphs out of bounds; examples are ``image_id (n nodes)``.
    """
    n_nodes = summary["n_nodes"].to_numpy(dtype=np.int64)
    bad = (n_nodes < min_nodes) | (n_nodes > max_nodes)
    examples = [f"{i} ({n} nodes)" for i, n in zip(summary.loc[bad, "image_id"], n_nodes[bad], strict=True)]
    expected = f"0 subgraphs with fewer than {min_nodes} or more than {max_nodes} nodes"
    return CheckOutcome(not bad.any(), int(bad.sum()), expected, examples)
