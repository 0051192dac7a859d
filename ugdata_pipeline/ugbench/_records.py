"""Shared plumbing of the task builders: inputs, options, the record schema, seeding and leakage rules."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from ugdata_pipeline.errors import UgdataError
from ugdata_pipeline.imagery.anchor import image_node_ids
from ugdata_pipeline.ugbench.metrics import group_seed

Task = Literal["geolocation", "retrieval", "perception", "grounding"]
TASKS: tuple[str, ...] = get_args(Task)
GroundingType = Literal["nearest_poi", "distance_direction", "which_street", "which_crossing"]
GROUNDING_TYPES: tuple[str, ...] = get_args(GroundingType)
Mode = Literal["image", "fusion", "text"]
MODES: tuple[str, ...] = get_args(Mode)
#: Query modes that apply to each task. ``image``: the query is the image (plus the instruction) and text
#: candidates; ``fusion``: the image side is image + its subgraph; ``text``: a text query against image candidates.
TASK_MODES: dict[str, tuple[str, ...]] = {
    "geolocation": ("image", "fusion"),
    "retrieval": ("text", "fusion"),
    "perception": ("image", "fusion"),
    "grounding": ("image", "fusion"),
}
#: ``split`` of a record: ``test`` = the test split of a training city, ``held_out`` = a held-out city.
RECORD_SPLITS: tuple[str, ...] = ("test", "held_out")

#: Columns of the tasks table (one row per benchmark record).
TASK_COLUMNS: tuple[str, ...] = (
    "record_id",  # stable id "<task>/<query_type>/<city>/<image_id>[/<suffix>]"
    "task",  # one of TASKS
    "query_type",  # the task name, or a grounding type
    "city",
    "split",  # test | held_out
    "image_id",  # the image the record is about
    "query_kind",  # image | text
    "query_text",  # the question (image queries) or the description (text queries)
    "instruction",  # text given to the model with the query (None: none)
    "query_image",  # image path relative to the storage root (image queries), else None
    "query_graph_id",  # image_id whose subgraph is the query graph in fusion mode, else None
    "candidate_kind",  # text | image
    "candidates",  # list[str]: texts, or image paths for image candidates
    "candidate_graph_ids",  # list[str]: image each candidate comes from (image candidates: their fusion graph)
    "candidate_distance_m",  # list[float]: distance of each candidate's place from the image (NaN: none)
    "correct_idx",  # int, position of the one correct candidate
    "ground_truth",  # the correct candidate (text or image path)
    "lon",
    "lat",  # the image's position, decimal degrees
    "meta",  # JSON str with task-specific facts (dimension, level, distractors drawn from the city, ...)
)  # fmt: skip


class BenchmarkInputError(UgdataError, ValueError):
    """An input table or an option of the UGBench builders is invalid."""


@dataclass(slots=True)
class CityInputs:
    """
    The tables of one city that the benchmark is built from (formats in DESIGN.md, "Data contracts").

    Attributes
    ----------
    city
        City slug, e.g. ``"helsinki"``.
    role
        ``"train"`` (records from its ``test`` split) or ``"held_out"`` (records from all its test images).
    images
        Anchored images with ``split``, ``path``, ``street_node``, ``scene_facts`` (JSON str).
    nodes, edges
        The city's graph tables (nodes need ``node_id``, ``kind``, ``name``, ``category``, ``lon``, ``lat``).
    subgraph_nodes, subgraph_edges
        The long subgraph tables keyed by ``image_id``.
    """

    city: str
    role: Literal["train", "held_out"]
    images: pd.DataFrame
    nodes: pd.DataFrame
    edges: pd.DataFrame
    subgraph_nodes: pd.DataFrame
    subgraph_edges: pd.DataFrame


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Options of the benchmark build; distances in metres."""

    seed: int = 0  # every random choice is seeded from (seed, task, city, image, ...)
    n_distractors: int = 19  # distractors per record (>= 19: at least 20 candidates)
    min_distractor_m: float = 100.0  # geolocation / retrieval distractors lie this far from the query at least
    max_distractor_m: float = 2000.0  # ... and at most this far; also the radius for city-drawn grounding fillers
    tasks: tuple[str, ...] = TASKS  # which tasks to build
    grounding_types: tuple[str, ...] = GROUNDING_TYPES  # which grounding types to build
    max_records_per_task: int | None = None  # per (task, query type, city): keep a seeded sample of this many
    description_max_places: int = 10  # passed to the description renderer
    description_near_m: float = 200.0  # passed to the description renderer
    description_max_chars: int = 1500  # passed to the description renderer
    nearest_margin_m: float = 10.0  # "nearest X" needs the runner-up this much farther, else the record is skipped
    target_min_m: float = 20.0  # distance-direction targets lie at least this far from the image
    target_max_m: float = 700.0  # ... and at most this far
    min_distractor_ratio: float = 1.5  # a distance-direction distractor differs by this distance factor ...
    min_distractor_angle_deg: float = 90.0  # ... or by at least this angle between compass words

    def __post_init__(self) -> None:
        if self.n_distractors < 19:
            msg = f"BenchConfig.n_distractors must be >= 19 (>= 20 candidates per record), got {self.n_distractors!r}"
            raise BenchmarkInputError(msg)
        if not 0 <= self.min_distractor_m < self.max_distractor_m:
            msg = (f"BenchConfig needs 0 <= min_distractor_m < max_distractor_m (metres), got "
                   f"{self.min_distractor_m!r} and {self.max_distractor_m!r}")  # fmt: skip
            raise BenchmarkInputError(msg)
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            msg = f"BenchConfig.tasks holds unknown task(s) {unknown}; choose from {list(TASKS)}"
            raise BenchmarkInputError(msg)
        unknown = sorted(set(self.grounding_types) - set(GROUNDING_TYPES))
        if unknown:
            msg = f"BenchConfig.grounding_types holds unknown type(s) {unknown}; choose from {list(GROUNDING_TYPES)}"
            raise BenchmarkInputError(msg)
        if self.max_records_per_task is not None and self.max_records_per_task < 1:
            msg = f"BenchConfig.max_records_per_task must be None or >= 1, got {self.max_records_per_task!r}"
            raise BenchmarkInputError(msg)
        if not 0 <= self.target_min_m < self.target_max_m:
            msg = (f"BenchConfig needs 0 <= target_min_m < target_max_m (metres), got {self.target_min_m!r} and "
                   f"{self.target_max_m!r}")  # fmt: skip
            raise BenchmarkInputError(msg)


@dataclass(slots=True)
class BuildStats:
    """Counts of one builder run, for logs and asset metadata."""

    records: dict[str, int] = field(default_factory=dict)  # "<task>/<type>/<city>" -> records kept
    skipped: dict[str, int] = field(default_factory=dict)  # "<task>/<type>/<reason>" -> queries skipped

    def skip(self, key: str, n: int = 1) -> None:
        """Count ``n`` skipped queries under ``key``."""
        self.skipped[key] = self.skipped.get(key, 0) + n

    def as_metadata(self) -> dict[str, int]:
        """Flat ``{"records/<key>": n, "skipped/<key>": n}`` for asset metadata."""
        return {**{f"records/{k}": v for k, v in sorted(self.records.items())},
                **{f"skipped/{k}": v for k, v in sorted(self.skipped.items())}}  # fmt: skip

    def merge(self, other: BuildStats) -> None:
        """Add another run's counts into this one."""
        for key, n in other.records.items():
            self.records[key] = self.records.get(key, 0) + n
        for key, n in other.skipped.items():
            self.skip(key, n)


def record_rng(seed: int, *names: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and the record's names, independent of build order."""
    return np.random.default_rng(group_seed(seed, *names))


_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset({"the", "and", "of", "a", "an", "to", "in", "on", "at", "is", "this", "from", "here",
                        "with", "for", "by", "m", "km"})  # fmt: skip


def normalize_text(text: str) -> str:
    """Lowercase, fold everything but letters and digits to single spaces (for leakage and duplicate checks)."""
    return " ".join(_TOKEN.findall(str(text).lower()))


def _tokens(text: str) -> set[str]:
    return {t for t in _TOKEN.findall(str(text).lower()) if t not in _STOPWORDS and len(t) > 1}


def leakage_reason(query_texts: Iterable[str | None], candidates: Sequence[str], correct_idx: int) -> str | None:
    """
    Why the correct candidate is recoverable from the query text, or ``None`` when it is not.

    Two rules (texts normalised by :func:`normalize_text`):

    * a candidate appears verbatim inside the query text (it would be singled out by string matching);
    * a token of the correct candidate that no distractor has (its *distinctive* token) appears in the query.

    Parameters
    ----------
    query_texts
        The text parts of the query (question, instruction; ``None`` entries are ignored).
    candidates
        Candidate texts.
    correct_idx
        Position of the correct candidate.
    """
    query = " ".join(normalize_text(q) for q in query_texts if q)
    padded = f" {query} "
    for i, cand in enumerate(candidates):
        norm = normalize_text(cand)
        if norm and f" {norm} " in padded:
            return f"candidate {i} ({cand!r}) appears in the query"
    others: set[str] = set()
    for i, cand in enumerate(candidates):
        if i != correct_idx:
            others |= _tokens(cand)
    distinctive = _tokens(candidates[correct_idx]) - others
    shared = distinctive & set(query.split())
    if shared:
        return f"the query holds {sorted(shared)}, found only in the correct candidate"
    return None


def finish_record(
    *, rng: np.random.Generator, correct: str, distractors: Sequence[str], correct_distance_m: float = float("nan"),
    distractor_distance_m: Sequence[float] | None = None, correct_graph_id: str | None = None,
    distractor_graph_ids: Sequence[str] | None = None, **columns: object,
) -> dict[str, object]:  # fmt: skip
    """
    Shuffle the correct candidate among the distractors (seeded) and return one record as a dict.

    ``columns`` carries the other :data:`TASK_COLUMNS`; ``meta`` may be a dict (stored as JSON).
    """
    n = len(distractors) + 1
    order = rng.permutation(n)  # order[j] = source position of the candidate placed at j; source 0 is correct
    texts = [correct, *distractors]
    dist = [correct_distance_m, *(distractor_distance_m or [float("nan")] * len(distractors))]
    candidates = [texts[j] for j in order]
    record = dict(columns)
    record["candidates"] = candidates
    record["candidate_distance_m"] = [float(dist[j]) for j in order]
    if correct_graph_id is not None:
        graphs = [correct_graph_id, *(distractor_graph_ids or [])]
        record["candidate_graph_ids"] = [graphs[j] for j in order]
    else:
        record["candidate_graph_ids"] = []
    record["correct_idx"] = int(np.flatnonzero(order == 0)[0])
    record["ground_truth"] = correct
    meta = record.get("meta") or {}
    record["meta"] = meta if isinstance(meta, str) else json.dumps(meta, sort_keys=True)
    return {c: record.get(c) for c in TASK_COLUMNS}


def tasks_frame(records: list[dict[str, object]]) -> pd.DataFrame:
    """Records as a tasks table with :data:`TASK_COLUMNS` (also when empty)."""
    frame = pd.DataFrame.from_records(records, columns=list(TASK_COLUMNS))
    frame["correct_idx"] = frame["correct_idx"].astype("int64")
    for column in ("lon", "lat"):
        frame[column] = frame[column].astype("float64")
    return frame


def limit_records(records: list[dict[str, object]], limit: int | None, seed: int, *names: object) -> list[dict]:
    """A seeded sample of at most ``limit`` records, kept in their input order."""
    if limit is None or len(records) <= limit:
        return records
    keep = np.sort(record_rng(seed, "limit", *names).choice(len(records), size=limit, replace=False))
    return [records[i] for i in keep]


def query_images(inputs: CityInputs) -> pd.DataFrame:
    """The city's benchmark query images: its ``test`` split (held-out cities hold only test images)."""
    images = inputs.images
    test = images[images["split"] == "test"]
    have = set(inputs.subgraph_nodes["image_id"].astype(str).unique())
    return test[test["image_id"].astype(str).isin(have)].reset_index(drop=True)


def record_split(inputs: CityInputs) -> str:
    """``test`` for a training city, ``held_out`` for a held-out one."""
    return "held_out" if inputs.role == "held_out" else "test"


class SubgraphIndex:
    """
    Per-image access to the long subgraph tables without re-filtering them for each image.

    Both tables are sorted once (nodes by image then ``rank``), so one image's rows are a contiguous slice.
    """

    def __init__(self, subgraph_nodes: pd.DataFrame, subgraph_edges: pd.DataFrame) -> None:
        node_ids = subgraph_nodes["image_id"].astype(str).to_numpy(dtype=object)
        node_rank = pd.to_numeric(subgraph_nodes["rank"], errors="coerce").to_numpy(dtype=float)
        order = np.lexsort((node_rank, node_ids))
        self.nodes = subgraph_nodes.iloc[order].reset_index(drop=True)
        self._node_slices = self._slices(node_ids[order])
        edge_ids = subgraph_edges["image_id"].astype(str).to_numpy(dtype=object)
        order = np.argsort(edge_ids, kind="stable")
        self.edges = subgraph_edges.iloc[order].reset_index(drop=True)
        self._edge_slices = self._slices(edge_ids[order])

    @staticmethod
    def _slices(sorted_ids: np.ndarray) -> dict[str, tuple[int, int]]:
        if not len(sorted_ids):
            return {}
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        stops = np.r_[starts[1:], len(sorted_ids)]
        return {str(sorted_ids[a]): (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._node_slices

    def node_rows(self, image_id: object) -> tuple[int, int]:
        """``(start, stop)`` of the image's rows in :attr:`nodes` (``(0, 0)`` when it has none)."""
        return self._node_slices.get(str(image_id), (0, 0))

    def nodes_of(self, image_id: object) -> pd.DataFrame:
        """Subgraph nodes of one image, ordered by ``rank`` (centre first)."""
        start, stop = self.node_rows(image_id)
        return self.nodes.iloc[start:stop]

    def edges_of(self, image_id: object) -> pd.DataFrame:
        """Subgraph edges of one image."""
        start, stop = self._edge_slices.get(str(image_id), (0, 0))
        return self.edges.iloc[start:stop]


def validate_city_inputs(inputs: CityInputs) -> None:
    """Check one city's tables before any work; raise :class:`BenchmarkInputError` naming the table and fix."""
    if inputs.role not in ("train", "held_out"):
        msg = f"CityInputs.role for {inputs.city!r} must be 'train' or 'held_out', got {inputs.role!r}"
        raise BenchmarkInputError(msg)
    needs = {
        "images": ("image_id", "source", "lon", "lat", "split", "path", "street_node"),
        "nodes": ("node_id", "kind", "name", "category", "lon", "lat"),
        "edges": ("src", "dst", "kind"),
        "subgraph_nodes": ("image_id", "node_id", "kind", "name", "category", "lon", "lat", "distance_m", "rank"),
        "subgraph_edges": ("image_id", "src", "dst", "kind"),
    }
    for table, columns in needs.items():
        frame = getattr(inputs, table)
        if not isinstance(frame, pd.DataFrame):
            msg = f"CityInputs.{table} of {inputs.city!r} must be a DataFrame, got {type(frame).__name__}"
            raise BenchmarkInputError(msg)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            msg = (f"CityInputs.{table} of {inputs.city!r} is missing column(s) {missing}; it has "
                   f"{list(frame.columns)}. Pass the {table} table of the data contract (DESIGN.md)")  # fmt: skip
            raise BenchmarkInputError(msg)
    if inputs.role == "held_out":
        other = sorted(set(inputs.images["split"].astype(str)) - {"test", "excluded"})
        if other:
            msg = (f"held-out city {inputs.city!r} has images in split(s) {other}; a held-out city's images are all "
                   "'test' (assign_splits(..., city_split='held_out'))")  # fmt: skip
            raise BenchmarkInputError(msg)


def image_node_of(images: pd.DataFrame) -> np.ndarray:
    """Graph node ids ``image:<source>:<image_id>`` of the images."""
    return image_node_ids(images["source"], images["image_id"])


def finite(value: object) -> bool:
    """``True`` for a finite real number."""
    return isinstance(value, int | float | np.integer | np.floating) and math.isfinite(float(value))


Describe = Callable[..., str]
