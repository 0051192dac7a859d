"""The long subgraph tables written in bounded chunks and read back lazily, so memory follows a chunk, not the city.

At paper scale (10^5 images x up to 256 nodes) ``subgraph_nodes`` has ~25M rows: built whole, then encoded whole,
it holds several copies of itself in memory (issue 16). :func:`write_subgraphs` stores the chunks of
:func:`~ugdata_pipeline.context.subgraph.iter_subgraph_chunks` as they come (in input order, cut into the row groups
the one-shot write would make, so the files are byte-identical to it) and keeps only the small per-image
``summary``. Because rows are stored image by image in the summary's order, an image range's rows are a row range of
the file (offsets from ``n_nodes`` / ``n_edges``): :func:`read_image_range` reads just that (polars ``scan_parquet``
+ ``slice``, pushed down to the row groups), and
:func:`read_subgraph_rows` reads the rows of any set of images with one filtered scan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import geopandas as gpd
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ugdata_pipeline.atomic_files import atomic_writer
from ugdata_pipeline.context.subgraph import SubgraphConfig, _counts, _empty_tables, iter_subgraph_chunks
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import SubgraphInputError
from ugdata_pipeline.table_files import is_local

if TYPE_CHECKING:
    from ugdata_pipeline.context.captioners import CaptionRequest

#: A table file: a local path, or a UPath (local or on an object store).
TablePath = str | os.PathLike[str] | UPath

__all__ = [
    "READ_IMAGES_PER_CHUNK",
    "StreamedCaptionInputs",
    "StreamedSubgraphs",
    "caption_requests_streamed",
    "describe_streamed",
    "iter_image_ranges",
    "read_image_range",
    "read_subgraph_rows",
    "write_subgraphs",
]

#: The Arrow type of each column of the long tables; text columns are strings even in a chunk where all are null
#: (inferring per chunk would give a null column and a schema that differs between row groups).
_ARROW_TYPES = dict.fromkeys(("lon", "lat", "dx_m", "dy_m", "distance_m", "bearing_deg"), pa.float64()) | {
    "rank": pa.int64()
}


#: Rows per Parquet row group: pyarrow's default, which the IO manager's one-shot writes use.
ROW_GROUP_ROWS = 1024 * 1024

#: Images whose rows a chunked reader holds at a time: ~250k node rows at the 256-node cap. Smaller than the
#: writer's chunk (SubgraphConfig.images_per_chunk): the text a consumer builds per row costs more than the
#: reading, and measured on 10k images 1024-image slices read faster and with less memory than 4096-image ones.
READ_IMAGES_PER_CHUNK = 1024


@dataclass(slots=True)
class StreamedSubgraphs:
    """What :func:`write_subgraphs` keeps in memory: the per-image summary, the counts and where the rows are."""

    summary: pd.DataFrame
    counts: dict[str, int | float]
    nodes_path: Path
    edges_path: Path


def _schema(frame: pd.DataFrame) -> pa.Schema:
    fields = [pa.field(c, _ARROW_TYPES.get(c, pa.string())) for c in frame.columns]
    # with the pandas metadata, the stored file reads back with the dtypes of the one-shot table
    return pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False).schema


def write_subgraphs(
    nodes: gpd.GeoDataFrame,
    edges: pd.DataFrame,
    images: pd.DataFrame,
    *,
    crs_metric: str,
    nodes_path: str | os.PathLike[str],
    edges_path: str | os.PathLike[str],
    config: SubgraphConfig | None = None,
) -> StreamedSubgraphs:
    """
    Build the subgraphs of :func:`~ugdata_pipeline.context.subgraph.build_subgraphs` and write ``subgraph_nodes``
    / ``subgraph_edges`` to ``nodes_path`` / ``edges_path`` chunk by chunk (``config.images_per_chunk`` images
    at a time); peak memory is one chunk's rows and one row group plus the graph.

    The files are the bytes the IO manager writes for the one-shot tables of ``build_subgraphs`` (same rows,
    order, dtypes and row groups of :data:`ROW_GROUP_ROWS` rows); each file appears atomically when all chunks
    are written, and neither is replaced when building fails. Arguments and errors as for ``build_subgraphs``.

    Returns
    -------
    StreamedSubgraphs
        The ``subgraphs`` summary table (one row per image, input order), the counts of ``build_subgraphs``
        and the two paths.
    """
    config = config or SubgraphConfig()
    nodes_path, edges_path = Path(nodes_path), Path(edges_path)
    chunks = iter_subgraph_chunks(nodes, edges, images, crs_metric=crs_metric, config=config)
    summaries = []
    with ExitStack() as stack:
        writers: dict[str, _RowGroupWriter] = {}
        for chunk in _or_empty(chunks, config):
            for part, path in (("nodes", nodes_path), ("edges", edges_path)):
                frame = getattr(chunk, part)
                if part not in writers:
                    handle = stack.enter_context(atomic_writer(path, fsync=True))
                    writers[part] = _RowGroupWriter(stack.enter_context(pq.ParquetWriter(handle, _schema(frame))))
                writers[part].add(pa.Table.from_pandas(frame, schema=writers[part].schema, preserve_index=False))
            summaries.append(chunk.summary)
        for writer in writers.values():
            writer.finish()
    summary = pd.concat(summaries, ignore_index=True)
    return StreamedSubgraphs(summary, _counts(summary, config), nodes_path, edges_path)


class _RowGroupWriter:
    """Writes row groups of exactly ROW_GROUP_ROWS rows (the last one shorter), whatever the chunks' sizes.

    pandas' ``to_parquet`` (the IO manager's one-shot write) cuts a table into row groups of pyarrow's default
    1,048,576 rows; cutting the streamed rows at the same places makes the file byte-identical to the one-shot
    file at any size, while holding at most one row group plus one chunk.
    """

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.schema = writer.schema
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.written = False

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        while self.rows >= ROW_GROUP_ROWS:
            buffered = pa.concat_tables(self.pending)
            self._write(buffered.slice(0, ROW_GROUP_ROWS))
            rest = buffered.slice(ROW_GROUP_ROWS)
            self.pending, self.rows = [rest], rest.num_rows

    def finish(self) -> None:
        if self.rows or not self.written:  # an empty table still gets its (empty) row group, as pandas writes it
            self._write(pa.concat_tables(self.pending) if self.pending else self.schema.empty_table())
        self.pending, self.rows = [], 0

    def _write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.written = True


def _or_empty(chunks: Iterator[SubgraphTables], config: SubgraphConfig) -> Iterator[SubgraphTables]:
    """The chunks, or the empty tables once when there are none (so empty files with the schema are written)."""
    seen = False
    for chunk in chunks:
        seen = True
        yield chunk
    if not seen:
        yield _empty_tables(config)


def iter_image_ranges(summary: pd.DataFrame, images_per_chunk: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` positions of the summary's images, ``images_per_chunk`` at a time."""
    if images_per_chunk < 1:
        msg = f"images_per_chunk must be >= 1, got {images_per_chunk!r}"
        raise SubgraphInputError(msg)
    for start in range(0, len(summary), images_per_chunk):
        yield start, min(start + images_per_chunk, len(summary))


def read_image_range(path: TablePath, summary: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    """
    The rows of the summary's images ``start .. stop - 1`` from a long table written by :func:`write_subgraphs`.

    ``path`` is the ``subgraph_nodes`` (counted by ``summary.n_nodes``) or ``subgraph_edges`` (``n_edges``) file;
    only that row range is read.

    Raises
    ------
    SubgraphInputError
        The file's rows at that range belong to other images (the file and the summary are from different
        builds, or the file was not written image by image in the summary's order).
    """
    column = "n_edges" if _is_edges(path) else "n_nodes"
    sizes = summary[column].to_numpy(dtype=np.int64)
    offset = int(sizes[:start].sum())
    frame = _collect(path, lambda lazy: lazy.slice(offset, int(sizes[start:stop].sum())))
    expected = summary["image_id"].astype(str).to_numpy()[start:stop]
    if not np.array_equal(frame["image_id"].unique(), expected[sizes[start:stop] > 0]):
        msg = (
            f"{path}: rows {offset:,}.. are not the rows of images {start:,}..{stop - 1:,} of the summary; "
            "read a subgraph file with the summary of the same write_subgraphs build (rebuild both together)"
        )
        raise SubgraphInputError(msg)
    return frame


def _is_edges(path: TablePath) -> bool:
    with _open(path) as source:
        return "src" in pq.read_schema(source).names


def read_subgraph_rows(path: TablePath, image_ids: Iterable[str]) -> pd.DataFrame:
    """The rows of ``image_ids`` (in file order) from a long subgraph table, with one filtered scan."""
    wanted = pl.Series("image_id", [str(i) for i in image_ids], dtype=pl.String)
    return _collect(path, lambda lazy: lazy.filter(pl.col("image_id").is_in(wanted)))


@contextmanager
def _open(path: TablePath) -> Iterator[str | BinaryIO]:
    """A source polars and pyarrow read lazily: the local path itself, else an open handle on the object."""
    upath = path if isinstance(path, UPath) else UPath(os.fspath(path))
    if is_local(upath):
        yield upath.path
        return
    with upath.open("rb") as handle:
        yield handle


def _collect(path: TablePath, query: Callable[[pl.LazyFrame], pl.LazyFrame]) -> pd.DataFrame:
    """``query`` on a lazy scan of the file, as pandas with the dtypes the file reads back with (as read_table)."""
    with _open(path) as source:
        frame = query(pl.scan_parquet(source)).collect()
    with _open(path) as source:
        schema = pq.read_schema(source)
    table = frame.to_arrow().cast(pa.schema([schema.field(name) for name in frame.columns]))
    return table.replace_schema_metadata(schema.metadata).to_pandas()


def describe_streamed(
    nodes_path: TablePath,
    edges_path: TablePath,
    summary: pd.DataFrame,
    images: pd.DataFrame,
    *,
    images_per_chunk: int = READ_IMAGES_PER_CHUNK,
) -> pd.DataFrame:
    """
    :func:`~ugdata_pipeline.context.describe.describe_subgraphs` of every image, reading one chunk of images'
    rows at a time; the same table as the one-shot call. ``images`` must be the images the summary was built
    from, in its order (the ``subgraphs`` table and the images table of one build).
    """
    from ugdata_pipeline.context.describe import describe_subgraphs

    _require_summary_order(summary, images, who="describe_streamed")
    parts = []
    for start, stop in iter_image_ranges(summary, images_per_chunk):
        tables = SubgraphTables(
            nodes=read_image_range(nodes_path, summary, start, stop),
            edges=read_image_range(edges_path, summary, start, stop),
            summary=pd.DataFrame(),
        )
        parts.append(describe_subgraphs(tables, images.iloc[start:stop]))
    return pd.concat(parts, ignore_index=True) if parts else describe_subgraphs(_empty_tables(SubgraphConfig()), images)


def _require_summary_order(summary: pd.DataFrame, images: pd.DataFrame, *, who: str) -> None:
    """Refuse ``images`` that are not the summary's images in its order: image ``i``'s rows are the summary's."""
    if (
        not summary["image_id"]
        .astype(str)
        .reset_index(drop=True)
        .equals(images["image_id"].astype(str).reset_index(drop=True))
    ):
        msg = (
            f"{who}: images and the subgraph summary list different images or orders; pass the "
            "images table the subgraphs were built from"
        )
        raise SubgraphInputError(msg)


@dataclass(slots=True)
class StreamedCaptionInputs:
    """What the ``captions`` step needs from the long ``subgraph_nodes`` table, read a chunk of images at a time."""

    #: :func:`~ugdata_pipeline.context.captioners.build_caption_requests` of the whole table, in the same order.
    requests: list[CaptionRequest]
    #: :func:`~ugdata_pipeline.context.captioners.names_by_image` of the whole table (every image, excluded too).
    names: dict[str, frozenset[str] | set[str]]


def caption_requests_streamed(
    nodes_path: TablePath,
    summary: pd.DataFrame,
    images: pd.DataFrame,
    descriptions: Mapping[str, str] | pd.DataFrame,
    *,
    root: Path,
    images_per_chunk: int = READ_IMAGES_PER_CHUNK,
) -> StreamedCaptionInputs:
    """
    The caption requests and the per-image names of the grounding gate, reading ``images_per_chunk`` images'
    ``subgraph_nodes`` rows at a time; equal to ``build_caption_requests(images, descriptions, nodes, root=root)``
    and ``names_by_image(nodes)`` of the whole table. ``images`` must be the images the summary was built from,
    in its order (the images table and the ``subgraphs`` table of one build).
    """
    from ugdata_pipeline.context.captioners import build_caption_requests, names_by_image

    _require_summary_order(summary, images, who="caption_requests_streamed")
    if isinstance(descriptions, pd.DataFrame):  # once, not once per chunk
        descriptions = dict(zip(descriptions["image_id"].astype(str), descriptions["description"], strict=True))
    requests: list[CaptionRequest] = []
    names: dict[str, frozenset[str] | set[str]] = {}
    for start, stop in iter_image_ranges(summary, images_per_chunk):
        rows = read_image_range(nodes_path, summary, start, stop)
        chunk = build_caption_requests(images.iloc[start:stop], descriptions, rows, root=root)
        # a request's allowed names are that image's names_by_image set: share it rather than hold the city's
        # names twice; excluded images have no request and keep their own set
        allowed = {r.image_id: r.allowed_names for r in chunk}
        names.update({image_id: allowed.get(image_id, found) for image_id, found in names_by_image(rows).items()})
        requests.extend(chunk)
    return StreamedCaptionInputs(requests, names)
