"""UGBench tasks: build them from the pipeline's tables, validate them, save and load them, export them as JSONL.

A **benchmark** is one tasks table (one row per record, columns :data:`TASK_COLUMNS`) built from the test split of
every training city and from every held-out city, plus the subgraph rows of the images it refers to (for the
``fusion`` mode). Each record has exactly one correct candidate (``correct_idx``): geolocation, retrieval and
grounding records come in exchangeable groups of ``n_distractors + 1`` that share their candidates (see
:mod:`.groups`), perception records hold the three levels of one dimension. All random choices are seeded
(``BenchConfig.seed`` + task + city + image), so a rebuild with the same inputs gives the same table. Every record
carries the ~250 m spatial block of its image (``cluster``), the unit the bootstrap resamples.

Task builders (rules in their modules): :mod:`.geolocation` (geolocation ranking, image retrieval),
:mod:`.perception` (urban perception proxies), :mod:`.grounding` (spatial grounding by type).

Invariants checked by :func:`validate_tasks` (and by the tests): one correct candidate at ``correct_idx`` equal to
``ground_truth``; unique candidates; ``1 + n_distractors`` candidates (3 for perception); geolocation / retrieval
distractors within the distance band; every group uses one candidate set, each member correct once; the correct
candidate not recoverable from the query text; every record's image in its own city.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ugdata_pipeline.atomic_files import atomic_writer
from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.tables import missing_columns, require_columns
from ugdata_pipeline.ugbench._records import (
    GROUNDING_TYPES,
    MODES,
    PERCEPTION_CANDIDATES,
    RECORD_SPLITS,
    TASK_COLUMNS,
    TASK_MODES,
    TASKS,
    BenchConfig,
    BuildStats,
    CityInputs,
    Describe,
    leakage_reason,
    normalize_text,
    tasks_frame,
    validate_city_inputs,
)
from ugdata_pipeline.ugbench.geolocation import build_location_records
from ugdata_pipeline.ugbench.grounding import build_grounding_records
from ugdata_pipeline.ugbench.perception import build_perception_records
from ugdata_pipeline.ugbench.stats import spatial_clusters

logger = logging.getLogger(__name__)

__all__ = [
    "GROUNDING_TYPES",
    "MODES",
    "RECORD_SPLITS",
    "TASKS",
    "TASK_COLUMNS",
    "TASK_MODES",
    "BenchConfig",
    "BenchmarkInputError",
    "BuildStats",
    "CityInputs",
    "build_tasks",
    "export_jsonl",
    "load_benchmark",
    "read_query_subgraphs",
    "save_benchmark",
    "task_summary",
    "validate_tasks",
]

TASKS_FILE = "tasks.parquet"
SUBGRAPH_NODES_FILE = "subgraph_nodes.parquet"
SUBGRAPH_EDGES_FILE = "subgraph_edges.parquet"


@dataclass(frozen=True, slots=True)
class QuerySubgraphs:
    """The subgraph rows of a city's query images and the ids of every image with a subgraph (for CityInputs)."""

    nodes: pd.DataFrame
    edges: pd.DataFrame
    image_ids: frozenset[str]


def read_query_subgraphs(
    nodes_path: str | os.PathLike[str],
    edges_path: str | os.PathLike[str],
    images: pd.DataFrame,
    summary: pd.DataFrame,
) -> QuerySubgraphs:
    """
    Read from the long ``subgraph_nodes`` / ``subgraph_edges`` files only what the benchmark reads: the rows of
    the ``test`` images (its query images; held-out cities hold only test images), and from the per-image
    ``subgraphs`` summary the ids of the images with a subgraph (``n_nodes > 0``, the images of the whole table).

    Pass them as ``CityInputs(subgraph_nodes=nodes, subgraph_edges=edges, subgraph_image_ids=image_ids)``, and
    ``nodes`` / ``edges`` to ``evaluate``: the tasks and the scores are those of the whole tables.
    """
    from ugdata_pipeline.context.subgraph_stream import read_subgraph_rows  # lazy: polars only where files are read

    for frame, table, columns in (
        (images, "images", ("image_id", "split")),
        (summary, "subgraphs", ("image_id", "n_nodes")),
    ):
        fix = f"Pass the pipeline's {table} table (the one the subgraph files were built with)."
        require_columns(frame, columns, table=table, fix=fix, error=BenchmarkInputError)
    test_ids = images.loc[images["split"] == "test", "image_id"].astype(str)
    have = summary.loc[pd.to_numeric(summary["n_nodes"]) > 0, "image_id"].astype(str)
    return QuerySubgraphs(
        read_subgraph_rows(nodes_path, test_ids), read_subgraph_rows(edges_path, test_ids), frozenset(have)
    )


def _default_describe() -> Describe:
    try:
        from ugdata_pipeline.context.describe import describe_subgraph  # lazy: another stage writes it
    except ImportError as exc:  # pragma: no cover - depends on the context stage being installed
        msg = (
            "the description renderer ugdata_pipeline.context.describe.describe_subgraph is not available; pass "
            "describe=... to build_tasks"
        )
        raise BenchmarkInputError(msg) from exc
    return describe_subgraph


def build_tasks(
    cities: Sequence[CityInputs], *, config: BenchConfig | None = None, describe: Describe | None = None
) -> tuple[pd.DataFrame, BuildStats]:
    """
    Build every UGBench record of the given cities.

    Parameters
    ----------
    cities
        One :class:`CityInputs` per city: training cities (``role="train"``, records from their test split) and
        held-out cities (``role="held_out"``, records from all their images).
    config
        Build options; :class:`BenchConfig` by default.
    describe
        The location-description renderer; by default
        :func:`ugdata_pipeline.context.describe.describe_subgraph`.

    Returns
    -------
    tasks, stats
        The tasks table (columns :data:`TASK_COLUMNS`, sorted by ``record_id``) and kept / skipped counts.

    Raises
    ------
    BenchmarkInputError
        Missing columns, a held-out city with non-test images, or duplicate city names.
    """
    config = config or BenchConfig()
    names = [c.city for c in cities]
    if len(set(names)) != len(names):
        msg = f"each city may appear once in build_tasks, got {names}; merge the tables of a city first"
        raise BenchmarkInputError(msg)
    for inputs in cities:
        validate_city_inputs(inputs)
    needs_text = {"geolocation", "retrieval"} & set(config.tasks)
    renderer = describe or (_default_describe() if needs_text else None)
    stats = BuildStats()
    records: list[dict[str, object]] = []
    for inputs in cities:
        if needs_text and renderer is not None:
            geo, ret = build_location_records(inputs, describe=renderer, config=config, stats=stats)
            records += geo if "geolocation" in config.tasks else []
            records += ret if "retrieval" in config.tasks else []
        if "perception" in config.tasks:
            records += build_perception_records(inputs, config=config, stats=stats)
        if "grounding" in config.tasks:
            records += build_grounding_records(inputs, config=config, stats=stats)
    tasks = tasks_frame(records).sort_values("record_id", kind="stable").reset_index(drop=True)
    if len(tasks):
        tasks["cluster"] = spatial_clusters(tasks["lon"].to_numpy(), tasks["lat"].to_numpy(), cell_m=config.cluster_m)
    logger.info("built %s UGBench records over %s cities: %s", f"{len(tasks):,}", len(cities), task_summary(tasks))
    return tasks, stats


def task_summary(tasks: pd.DataFrame) -> dict[str, int]:
    """Record counts by ``task/query_type/city/split``, for metadata."""
    if tasks.empty:
        return {}
    keys = tasks["task"] + "/" + tasks["query_type"] + "/" + tasks["city"] + "/" + tasks["split"]
    return {str(k): int(v) for k, v in keys.value_counts().sort_index().items()}


def validate_tasks(
    tasks: pd.DataFrame, *, config: BenchConfig | None = None, images_by_city: dict[str, set[str]] | None = None
) -> list[str]:
    """
    Check the invariants of a tasks table; return the problems found (empty when it is valid).

    Parameters
    ----------
    tasks
        A tasks table.
    config
        The options it was built with (distractor count and band); :class:`BenchConfig` by default.
    images_by_city
        Optional ``city -> image ids of that city``; every record's image (and image candidate) must be its city's.

    Returns
    -------
    problems
        Human-readable lines, at most 50, each naming the record.
    """
    config = config or BenchConfig()
    missing = missing_columns(tasks, TASK_COLUMNS)
    if missing:
        return [f"tasks is missing column(s) {missing}"]
    problems: list[str] = []
    dup = tasks["record_id"].duplicated()
    if dup.any():
        problems.append(f"{int(dup.sum())} duplicate record_id(s), e.g. {tasks.loc[dup, 'record_id'].iloc[0]!r}")
    for group_id, group in tasks[tasks["group_id"].notna()].groupby("group_id", sort=True):
        sets = {tuple(sorted(c)) for c in group["candidates"]}
        truths = sorted(normalize_text(t) for t in group["ground_truth"].astype(str))
        if len(sets) != 1 or truths != sorted(normalize_text(c) for c in next(iter(sets))):
            problems.append(
                f"group {group_id}: its records do not share one candidate set with each member correct "
                "once (candidate-only scorers would leave chance)"
            )
    for row in tasks.itertuples(index=False):
        rid = row.record_id
        cands = list(row.candidates)
        wanted = PERCEPTION_CANDIDATES if row.task == "perception" else config.n_distractors + 1
        if len(cands) != wanted:
            problems.append(f"{rid}: {len(cands)} candidates, expected {wanted}")
        if not 0 <= row.correct_idx < len(cands) or cands[row.correct_idx] != row.ground_truth:
            problems.append(f"{rid}: correct_idx {row.correct_idx} does not point at ground_truth")
            continue
        if len({normalize_text(c) for c in cands}) != len(cands):
            problems.append(f"{rid}: candidates are not unique")
        if row.task not in TASKS or row.split not in RECORD_SPLITS:
            problems.append(f"{rid}: unknown task {row.task!r} or split {row.split!r}")
        if row.task in ("geolocation", "retrieval"):
            dist = np.asarray(row.candidate_distance_m, dtype=float)
            others = np.delete(dist, row.correct_idx)
            if (others < config.min_distractor_m - 1e-6).any() or (others > config.max_distractor_m + 1e-6).any():
                problems.append(
                    f"{rid}: a distractor lies outside [{config.min_distractor_m}, {config.max_distractor_m}] m"
                )
        texts = cands if row.candidate_kind == "text" else [str(row.ground_truth)]
        index = row.correct_idx if row.candidate_kind == "text" else 0
        query = [row.query_text, row.instruction] if row.query_kind == "image" else [row.instruction]
        reason = leakage_reason(query, texts, index)
        if reason:
            problems.append(f"{rid}: leakage: {reason}")
        if row.query_kind == "text" and (
            str(row.ground_truth) in str(row.query_text) or str(row.image_id) in str(row.query_text)
        ):
            problems.append(f"{rid}: the query text names the answer image")
        if images_by_city is not None:
            own = images_by_city.get(row.city, set())
            ids = [row.image_id, *(list(row.candidate_graph_ids) if row.candidate_kind == "image" else [])]
            foreign = [i for i in ids if str(i) not in own]
            if foreign:
                problems.append(f"{rid}: image(s) {foreign[:3]} are not from city {row.city!r}")
        if len(problems) >= 50:
            break
    return problems[:50]


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    with atomic_writer(path) as handle:
        frame.to_parquet(handle, index=False)


def save_benchmark(
    tasks: pd.DataFrame,
    out_dir: Path | str,
    *,
    subgraph_nodes: pd.DataFrame | None = None,
    subgraph_edges: pd.DataFrame | None = None,
) -> Path:
    """
    Write a benchmark directory: ``tasks.parquet`` plus the subgraph rows of every image it refers to.

    Parameters
    ----------
    tasks
        The tasks table.
    out_dir
        Directory to write into (created); files are replaced atomically.
    subgraph_nodes, subgraph_edges
        The long subgraph tables of the benchmark's cities (may hold more images; only referenced ones are kept).

    Returns
    -------
    out_dir
        The directory, as a :class:`~pathlib.Path`.
    """
    out = Path(out_dir)
    _write_parquet_atomic(tasks[list(TASK_COLUMNS)], out / TASKS_FILE)
    referenced = set(tasks["query_graph_id"].dropna().astype(str))
    for ids in tasks["candidate_graph_ids"]:
        referenced.update(str(i) for i in ids)
    if subgraph_nodes is not None:
        _write_parquet_atomic(
            subgraph_nodes[subgraph_nodes["image_id"].astype(str).isin(referenced)], out / SUBGRAPH_NODES_FILE
        )
    if subgraph_edges is not None:
        _write_parquet_atomic(
            subgraph_edges[subgraph_edges["image_id"].astype(str).isin(referenced)], out / SUBGRAPH_EDGES_FILE
        )
    logger.info("saved %s UGBench records to %s", f"{len(tasks):,}", out)
    return out


def load_benchmark(path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """
    Read a benchmark written by :func:`save_benchmark` (a directory) or a bare tasks Parquet file.

    Returns
    -------
    tasks, subgraph_nodes, subgraph_edges
        The subgraph tables are ``None`` when absent.

    Raises
    ------
    FileNotFoundError
        The path (or its ``tasks.parquet``) does not exist.
    """
    path = Path(path)
    tasks_path = path / TASKS_FILE if path.is_dir() else path
    if not tasks_path.is_file():
        msg = f"no UGBench tasks at {tasks_path}; pass a directory written by save_benchmark or a tasks .parquet file"
        raise FileNotFoundError(msg)
    tasks = pd.read_parquet(tasks_path)
    for column in ("candidates", "candidate_graph_ids", "candidate_distance_m"):
        tasks[column] = [list(v) if v is not None else [] for v in tasks[column]]
    folder = tasks_path.parent
    nodes = pd.read_parquet(folder / SUBGRAPH_NODES_FILE) if (folder / SUBGRAPH_NODES_FILE).is_file() else None
    edges = pd.read_parquet(folder / SUBGRAPH_EDGES_FILE) if (folder / SUBGRAPH_EDGES_FILE).is_file() else None
    return tasks, nodes, edges


def export_jsonl(
    tasks: pd.DataFrame,
    path: Path | str,
    *,
    mode: str = "image",
    graph_path_template: str = "benchmark_graphs/{image_id}.json",
) -> int:
    """
    Write records in the reference's benchmark JSONL form (uge-ugbench-reference §5.2), one object per line.

    ``image_only`` form (``mode="image"`` or ``"text"``): ``{"messages": [{"role": "user", "content": "<image>
    <question>"}], "images": <query image>, "candidates": [...], "ground_truth": ..., "ground_truth_idx": i,
    "query_type": ..., "image_coords": [lon, lat], "task": ..., "city": ..., "split": ..., "record_id": ...}``.
    ``with_graph`` form (``mode="fusion"``): the content starts ``<graph><image>`` and ``"graphs"`` names the query
    graph file; retrieval records instead carry ``"candidate_images"`` and, in fusion, ``"candidate_graphs"``.
    Text queries (retrieval) put the description in the user message and no ``<image>``. Paths are relative: image
    paths as stored, graph files from ``graph_path_template`` (the graph export of the dataset stage).

    Returns
    -------
    n
        Number of lines written.
    """
    if mode not in MODES:
        msg = f"mode must be one of {list(MODES)}, got {mode!r}"
        raise BenchmarkInputError(msg)
    fusion = mode == "fusion"
    out = Path(path)
    n = 0
    with atomic_writer(out) as raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
        for row in tasks.itertuples(index=False):
            if mode not in TASK_MODES[row.task]:
                continue
            obj: dict[str, object] = {
                "record_id": row.record_id,
                "task": row.task,
                "query_type": row.query_type,
                "city": row.city,
                "split": row.split,
            }
            if row.query_kind == "image":
                prefix = "<graph><image>" if fusion else "<image>"
                obj["messages"] = [{"role": "user", "content": f"{prefix} {row.query_text}"}]
                obj["images"] = row.query_image
                if fusion:
                    obj["graphs"] = graph_path_template.format(image_id=row.query_graph_id)
            else:
                obj["messages"] = [{"role": "user", "content": f"{row.instruction} {row.query_text}".strip()}]
            obj["candidates"] = list(row.candidates)
            if row.candidate_kind == "image":
                obj["candidate_images"] = list(row.candidates)
                if fusion:
                    obj["candidate_graphs"] = [graph_path_template.format(image_id=i) for i in row.candidate_graph_ids]
            obj["ground_truth"] = row.ground_truth
            obj["ground_truth_idx"] = int(row.correct_idx)
            obj["image_coords"] = [float(row.lon), float(row.lat)]
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    logger.info("exported %s UGBench records (%s mode) to %s", n, mode, out)
    return n
