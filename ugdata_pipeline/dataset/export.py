"""Export training records to the reference's ms-swift JSONL, with images and graph JSON beside it.

Layout of an export folder (every path in the JSONL is relative to the folder, so it can be moved or shipped
whole; the reference wrote absolute paths and needed ``rewrite_*_paths.py`` scripts)::

    <out_dir>/
      stage1_ugdata_train.jsonl   stage1_ugdata_val.jsonl   stage1_ugdata_test.jsonl
      images/<image path relative to the storage root>
      graphs/<image_id>.json      (stage 2 only)

One JSON object per record (reference §7.3, plus ms-swift's ``negative_messages`` for hard negatives)::

    {"messages": [{"role": "user", "content": "<image> {instruction}"}],        # stage 2: "<graph><image> ..."
     "positive_messages": [[{"role": "user", "content": "{positive}"}]],
     "negative_messages": [[{"role": "user", "content": "{negative}"}], ...],    # [] when there are none
     "images": ["images/helsinki/images/123.png"],
     "graphs": [] | ["graphs/123.json"],
     "pair_type": "stage1_image_only" | "stage2_image_graph",
     "label": 1}

Graph JSON follows the reference: ``{"nodes": [{"node_id", "coords", "node_text"}], "edges": [{"source",
"target"}], "center_node"}``; it is produced by the caller's ``subgraph_json``: a per-image callable (
:func:`subgraph_json_from_tables`, over tables held in memory) or a :class:`GraphSource` that yields the graphs a
chunk of images at a time (:class:`~ugdata_pipeline.dataset.export_graphs.StreamedSubgraphJson`, over the stored
long tables: what the asset uses, since a city's tables do not fit in memory at paper scale). Both use the one
graph-JSON writer in ``context.graph_json``; every graph is checked with the one validator there
(``validate_graph_json``, re-exported here) and written to its file as it comes, so no more than a chunk is held.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd

from ugdata_pipeline.atomic_files import write_text_atomic
from ugdata_pipeline.context.graph_json import graph_json_by_image, validate_graph_json
from ugdata_pipeline.dataset.records import TRAINING_RECORD_COLUMNS
from ugdata_pipeline.errors import DatasetInputError, GraphJsonError, MsSwiftFormatError
from ugdata_pipeline.tables import require_columns

logger = logging.getLogger(__name__)

__all__ = [
    "MS_SWIFT_PAIR_TYPES",
    "GraphSource",
    "MsSwiftExport",
    "MsSwiftFormatError",
    "export_ms_swift",
    "read_ms_swift",
    "subgraph_json_from_tables",
    "validate_graph_json",
]

MS_SWIFT_PAIR_TYPES: dict[int, str] = {1: "stage1_image_only", 2: "stage2_image_graph"}
_QUERY_PREFIX: dict[int, str] = {1: "<image>", 2: "<graph><image>"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

SubgraphJson = Callable[[str], Mapping[str, Any]]


@runtime_checkable
class GraphSource(Protocol):
    """Graph JSON of many images, produced a chunk of images at a time rather than one table for all."""

    def graphs(self, image_ids: Sequence[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """
        ``(image_id, graph)`` once for each of ``image_ids``, in any order.

        Refuses images it has no graph for when called, before the first graph is produced, so an export fails
        before it writes anything.
        """
        ...


def no_subgraph_error(image_id: str) -> DatasetInputError:
    """The refusal of a stage-2 image that the subgraph tables do not have (one message for every graph source)."""
    msg = f"image {image_id!r} has no subgraph in the subgraph tables; build subgraphs before stage 2"
    return DatasetInputError(msg)


@dataclass(frozen=True)
class MsSwiftExport:
    """What an export wrote: the folder, one JSONL per split, and counts (for asset metadata)."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    n_records: int = 0
    n_images: int = 0
    n_graphs: int = 0

    def metadata(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "files": {k: v.name for k, v in self.files.items()},
            "records": self.n_records,
            "images": self.n_images,
            "graphs": self.n_graphs,
        }


def _place_image(source: Path, target: Path, link: str) -> None:
    """Hard-link (or symlink, or copy) ``source`` to ``target``; an existing file of the same size is kept."""
    if target.exists() and target.stat().st_size == source.stat().st_size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    if link == "symlink":
        tmp.symlink_to(source.resolve())
    elif link == "hardlink":
        try:
            tmp.hardlink_to(source)
        except OSError:  # another filesystem, or links not allowed: copy instead
            shutil.copy2(source, tmp)
    else:
        shutil.copy2(source, tmp)
    tmp.replace(target)


def subgraph_json_from_tables(
    subgraph_nodes: pd.DataFrame, subgraph_edges: pd.DataFrame, subgraphs: pd.DataFrame
) -> SubgraphJson:
    """
    A ``subgraph_json(image_id)`` callable over the long subgraph tables, using ``context.graph_json``.

    Tables are converted once (``context.graph_json.graph_json_by_image``); each call renders one image's graph.
    """
    by_image = graph_json_by_image(subgraph_nodes, subgraph_edges)
    centres = dict(zip(subgraphs["image_id"].astype(str), subgraphs["center_node"], strict=True))

    def render(image_id: str) -> Mapping[str, Any]:
        if image_id not in centres:
            raise no_subgraph_error(image_id)
        return by_image(image_id, centres[image_id])

    return render


def _one_by_one(render: SubgraphJson, image_ids: Sequence[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for image_id in image_ids:
        yield image_id, render(image_id)


def _write_graphs(produced: Iterator[tuple[str, Mapping[str, Any]]], out_dir: Path) -> dict[str, str]:
    """Validate and write each graph as it comes (only its path is kept); ``image_id -> path in the folder``."""
    graph_rel: dict[str, str] = {}
    for image_id, graph in produced:
        try:
            validate_graph_json(graph, where=f"graph of image {image_id!r}")
        except GraphJsonError as exc:  # the export's callers handle format errors as MsSwiftFormatError
            raise MsSwiftFormatError(str(exc)) from exc
        rel = f"graphs/{_SAFE_NAME.sub('_', image_id)}.json"
        write_text_atomic(out_dir / rel, json.dumps(graph, ensure_ascii=False))
        graph_rel[image_id] = rel
    return graph_rel


def _line(record: Mapping[str, Any], image_rel: str, graph_rel: str | None) -> dict[str, Any]:
    stage = int(record["stage"])
    return {
        "messages": [{"role": "user", "content": f"{_QUERY_PREFIX[stage]} {record['instruction']}"}],
        "positive_messages": [[{"role": "user", "content": record["positive"]}]],
        "negative_messages": [[{"role": "user", "content": text}] for text in record["hard_negatives"]],
        "images": [image_rel],
        "graphs": [graph_rel] if graph_rel else [],
        "pair_type": MS_SWIFT_PAIR_TYPES[stage],
        "label": 1,
    }


def export_ms_swift(
    records: pd.DataFrame,
    *,
    root: Path,
    out_dir: Path,
    subgraph_json: SubgraphJson | GraphSource | None = None,
    link: Literal["hardlink", "symlink", "copy"] = "hardlink",
) -> MsSwiftExport:
    """
    Write ``records`` as ms-swift JSONL (one file per split) with their images and graph JSON files.

    Parameters
    ----------
    records
        ``training_records`` of one stage and variant (:func:`~ugdata_pipeline.dataset.records.build_training_records`).
    root
        Storage root that ``records.image_path`` is relative to.
    out_dir
        Export folder; created if needed. JSONL files are replaced atomically; images already there are kept.
    subgraph_json
        ``image_id -> graph JSON object``, or a :class:`GraphSource` of them (chunk by chunk); required when the
        records are stage 2.
    link
        How images get into the folder: hard link (falls back to a copy across filesystems), symlink, or copy.

    Returns
    -------
    export
        :class:`MsSwiftExport` with the JSONL path of each split.
    """
    require_columns(
        records,
        TRAINING_RECORD_COLUMNS,
        table="records",
        fix="Pass the output of build_training_records.",
        error=DatasetInputError,
    )
    if link not in ("hardlink", "symlink", "copy"):
        msg = f"`link` must be 'hardlink', 'symlink' or 'copy', got {link!r}"
        raise DatasetInputError(msg)
    stages = sorted({int(s) for s in records["stage"]})
    variants = sorted(set(records["variant"].astype(str)))
    if len(stages) > 1 or len(variants) > 1:
        msg = f"export one stage and variant at a time; records mix stages {stages} and variants {variants}"
        raise DatasetInputError(msg)
    stage = stages[0] if stages else 1
    if stage == 2 and subgraph_json is None:
        msg = (
            "stage-2 records need `subgraph_json` (image_id -> graph JSON); pass subgraph_json_from_tables(...) "
            "or export_graphs.StreamedSubgraphJson(...)"
        )
        raise DatasetInputError(msg)
    root, out_dir = Path(root), Path(out_dir)
    sources = {p: root / p for p in records["image_path"].astype(str).unique()}
    absent = [str(v) for v in sources.values() if not v.is_file()]
    if absent:
        msg = (
            f"{len(absent)} image file(s) of the records do not exist under {root}, e.g. {absent[:3]}; "
            "materialize image_files and the tables after it for this city again"
        )
        raise DatasetInputError(msg)

    graph_ids = list(records["image_id"].astype(str).unique()) if stage == 2 else []
    produced: Iterator[tuple[str, Mapping[str, Any]]] = iter(())
    if stage == 2:
        assert subgraph_json is not None
        # a graph source refuses images without a subgraph here, before any file is placed or written
        produced = (
            subgraph_json.graphs(graph_ids)
            if isinstance(subgraph_json, GraphSource)
            else _one_by_one(subgraph_json, graph_ids)
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    image_rel = {}
    for rel, source in sources.items():
        target_rel = Path("images") / Path(rel)
        _place_image(source, out_dir / target_rel, link)
        image_rel[rel] = target_rel.as_posix()
    graph_rel = _write_graphs(produced, out_dir)
    if set(graph_rel) != set(graph_ids):  # a JSONL line must never point at a graph file that was not written
        missing, unasked = sorted(set(graph_ids) - set(graph_rel)), sorted(set(graph_rel) - set(graph_ids))
        msg = (
            f"the graph source gave graphs for other images than the {len(graph_ids)} stage-2 images asked for "
            f"(missing {missing[:3]}, not asked for {unasked[:3]}); a GraphSource must give one graph for each "
            "image it is asked for"
        )
        raise DatasetInputError(msg)
    files = {}
    variant = variants[0] if variants else "ugdata"
    for split, group in records.groupby("split", sort=True):
        path = out_dir / f"stage{stage}_{variant}_{split}.jsonl"
        lines = [
            json.dumps(
                _line(rec, image_rel[str(rec["image_path"])], graph_rel.get(str(rec["image_id"]))), ensure_ascii=False
            )
            for rec in group.to_dict("records")
        ]
        write_text_atomic(path, "\n".join(lines) + "\n")
        files[str(split)] = path
    export = MsSwiftExport(out_dir, files, len(records), len(image_rel), len(graph_rel))
    logger.info(
        "exported %d stage-%d %s records to %s (%d images, %d graphs)",
        len(records),
        stage,
        variant,
        out_dir,
        export.n_images,
        export.n_graphs,
    )
    return export


def _check_messages(value: Any, where: str) -> str:
    if (
        not isinstance(value, list)
        or len(value) != 1
        or not isinstance(value[0], dict)
        or value[0].get("role") != "user"
        or not isinstance(value[0].get("content"), str)
    ):
        msg = f"{where} must be one user message [{{'role': 'user', 'content': str}}], got {str(value)[:120]}"
        raise MsSwiftFormatError(msg)
    return value[0]["content"]


def read_ms_swift(path: Path, *, check_files: bool = True) -> pd.DataFrame:
    """
    Read and validate an exported ms-swift JSONL file (the round trip of :func:`export_ms_swift`).

    Every line must have ``messages``, ``positive_messages``, ``images``, ``graphs``, ``pair_type`` and
    ``label``; the query must start with ``<image>`` (stage 1) or ``<graph><image>`` (stage 2) matching
    ``pair_type``, with one image and (stage 2) one graph whose paths are relative and exist.

    Returns
    -------
    frame
        ``stage, instruction, positive, hard_negatives, image_path, graph_path, pair_type, label`` per line,
        with paths as written (relative to the file's folder).
    """
    path = Path(path)
    folder = path.parent
    rows = []
    stage_of = {v: k for k, v in MS_SWIFT_PAIR_TYPES.items()}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            msg = f"{where}: not JSON ({exc.msg})"
            raise MsSwiftFormatError(msg) from exc
        missing = [
            k for k in ("messages", "positive_messages", "images", "graphs", "pair_type", "label") if k not in line
        ]
        if missing:
            msg = f"{where}: missing key(s) {missing}"
            raise MsSwiftFormatError(msg)
        if line["pair_type"] not in stage_of:
            msg = f"{where}: pair_type {line['pair_type']!r} is not one of {sorted(stage_of)}"
            raise MsSwiftFormatError(msg)
        stage = stage_of[line["pair_type"]]
        query = _check_messages(line["messages"], f"{where} messages")
        prefix = _QUERY_PREFIX[stage] + " "
        if not query.startswith(prefix):
            msg = f"{where}: a {line['pair_type']} query must start with {prefix!r}, got {query[:40]!r}"
            raise MsSwiftFormatError(msg)
        if not isinstance(line["positive_messages"], list) or len(line["positive_messages"]) != 1:
            msg = f"{where}: positive_messages must hold exactly one message list"
            raise MsSwiftFormatError(msg)
        positive = _check_messages(line["positive_messages"][0], f"{where} positive_messages[0]")
        negatives = [_check_messages(m, f"{where} negative_messages") for m in line.get("negative_messages", [])]
        n_graphs = 1 if stage == 2 else 0
        if len(line["images"]) != query.count("<image>") or len(line["graphs"]) != n_graphs:
            msg = (
                f"{where}: {len(line['images'])} image(s) and {len(line['graphs'])} graph(s) for a query with "
                f"{query.count('<image>')} <image> tag(s) in a {line['pair_type']} record"
            )
            raise MsSwiftFormatError(msg)
        for rel in [*line["images"], *line["graphs"]]:
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                msg = f"{where}: path {rel!r} must be relative to the export folder"
                raise MsSwiftFormatError(msg)
            if check_files and not (folder / rel).is_file():
                msg = f"{where}: {rel!r} does not exist under {folder}"
                raise MsSwiftFormatError(msg)
        rows.append(
            {
                "stage": stage,
                "instruction": query[len(prefix) :],
                "positive": positive,
                "hard_negatives": negatives,
                "image_path": line["images"][0],
                "graph_path": line["graphs"][0] if line["graphs"] else None,
                "pair_type": line["pair_type"],
                "label": line["label"],
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "stage",
            "instruction",
            "positive",
            "hard_negatives",
            "image_path",
            "graph_path",
            "pair_type",
            "label",
        ],
    )
