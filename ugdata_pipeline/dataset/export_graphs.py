"""Graph JSON for the stage-2 export, read from the stored long subgraph tables a chunk of images at a time.

At paper scale a city's ``subgraph_nodes`` has ~25M rows; loading it (and ``subgraph_edges``) whole to render the
graphs of every stage-2 image held several copies of it in memory (issue 16). The files of
:func:`~ugdata_pipeline.context.subgraph_stream.write_subgraphs` store rows image by image in the order of the
``subgraphs`` summary, so :class:`StreamedSubgraphJson` reads one range of the summary's images at a time
(:func:`~ugdata_pipeline.context.subgraph_stream.read_image_range`), skips ranges without a stage-2 image, and
renders those images' graphs with the same writer as :func:`~ugdata_pipeline.dataset.export.subgraph_json_from_tables`;
each graph depends only on its own image's rows, so the graphs (and the exported files) are the whole-table ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ugdata_pipeline.context.subgraph_stream import (
    READ_IMAGES_PER_CHUNK,
    TablePath,
    iter_image_ranges,
    read_image_range,
)
from ugdata_pipeline.dataset.export import no_subgraph_error, subgraph_json_from_tables
from ugdata_pipeline.errors import DatasetInputError
from ugdata_pipeline.tables import require_columns

__all__ = ["StreamedSubgraphJson"]

_SUMMARY_COLUMNS = ("image_id", "center_node", "n_nodes", "n_edges")


class StreamedSubgraphJson:
    """
    A :class:`~ugdata_pipeline.dataset.export.GraphSource` over stored ``subgraph_nodes`` / ``subgraph_edges``.

    Parameters
    ----------
    nodes_path, edges_path
        The long tables as ``spatial_subgraphs`` stores them (local paths or UPaths).
    subgraphs
        The ``subgraphs`` summary of the same build (``image_id``, ``center_node``, ``n_nodes``, ``n_edges``, one
        row per image in file order).
    images_per_chunk
        Summary images whose rows are held at a time; memory follows this, not the city.

    Raises
    ------
    DatasetInputError
        The summary lacks those columns, or ``images_per_chunk`` is below 1.
    """

    def __init__(
        self,
        nodes_path: TablePath,
        edges_path: TablePath,
        subgraphs: pd.DataFrame,
        *,
        images_per_chunk: int = READ_IMAGES_PER_CHUNK,
    ) -> None:
        require_columns(
            subgraphs,
            _SUMMARY_COLUMNS,
            table="subgraphs",
            fix="Pass the subgraphs summary of the spatial_subgraphs build that wrote the long tables.",
            error=DatasetInputError,
        )
        self.nodes_path = nodes_path
        self.edges_path = edges_path
        self.summary = subgraphs.reset_index(drop=True)
        if images_per_chunk < 1:
            msg = f"StreamedSubgraphJson: images_per_chunk must be >= 1, got {images_per_chunk!r}"
            raise DatasetInputError(msg)
        self.images_per_chunk = images_per_chunk

    def graphs(self, image_ids: Sequence[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """
        ``(image_id, graph JSON)`` for each of ``image_ids``, in summary order, a chunk of images at a time.

        Raises
        ------
        DatasetInputError
            (on the call, before any graph) An image that the summary does not have, named as the whole-table
            export names it.
        SubgraphInputError
            (while iterating) The files are not the summary's build (``read_image_range``), or an image has no
            node rows.
        """
        ids = self.summary["image_id"].astype(str)
        known = set(ids)
        for image_id in image_ids:
            if str(image_id) not in known:
                raise no_subgraph_error(str(image_id))
        wanted = ids.isin({str(i) for i in image_ids}).to_numpy()
        return self._chunks(ids.to_numpy(), wanted)

    def _chunks(self, ids: np.ndarray, wanted: np.ndarray) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for start, stop in iter_image_ranges(self.summary, self.images_per_chunk):
            if not wanted[start:stop].any():
                continue  # no stage-2 image here: its rows are never read
            render = subgraph_json_from_tables(
                read_image_range(self.nodes_path, self.summary, start, stop),
                read_image_range(self.edges_path, self.summary, start, stop),
                self.summary.iloc[start:stop],
            )
            for image_id in ids[start:stop][wanted[start:stop]]:
                yield str(image_id), render(str(image_id))
