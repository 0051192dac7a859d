"""Helpers of the export tests: the summary of stored long tables, and an export folder's files as bytes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ugdata_pipeline.context.subgraph_tables import SubgraphTables


def summary_of(tables: SubgraphTables) -> pd.DataFrame:
    """The ``subgraphs`` summary of long tables stored image by image: centre and row counts, in file order."""
    ids = tables.nodes["image_id"].drop_duplicates().tolist()
    centres = tables.nodes[tables.nodes["kind"] == "image"].set_index("image_id")["node_id"]
    return pd.DataFrame(
        {
            "image_id": ids,
            "center_node": centres.reindex(ids).to_numpy(),
            "n_nodes": tables.nodes.groupby("image_id").size().reindex(ids, fill_value=0).to_numpy(),
            "n_edges": tables.edges.groupby("image_id").size().reindex(ids, fill_value=0).to_numpy(),
        }
    )


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (JSONL, graph JSON, images) by its relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
