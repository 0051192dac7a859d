"""Shared plumbing of the task builders: inputs, options, the record schema, seeding and leakage rules."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.context.subgraph_tables import SubgraphIndex
from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.graph.crs import metric_crs
from ugdata_pipeline.imagery.anchor import image_node_ids
from ugdata_pipeline.tables import require_columns
from ugdata_pipeline.ugbench.stats import group_seed

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
    "instruction",  # image-side instruction in image / text mode: with the query image, or the candidate images
    "fusion_instruction",  # image-side instruction in fusion mode (the stage-2 wording)
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
    "meta",  # JSON str with task-specific facts (dimension, level, group size, ...)
    "group_id",  # records sharing one candidate set (exchangeable groups, see groups.py); None: no group
    "cluster",  # ~250 m spatial block of the query image: the unit of the clustered bootstrap
    "fusion_graph",  # graph of the image side in fusion mode: "own" (its subgraph) or "group" (the shared context)
)
#: ``fusion_graph`` values: the image's own subgraph, or one context graph shared by every record of the group.
FUSION_GRAPHS: tuple[str, ...] = ("own", "group")
#: (task, mode) rows where the given graph determines the answer: reported as "graph reading", not headline.
GRAPH_READING: frozenset[tuple[str, str]] = frozenset({("grounding", "fusion"), ("perception", "fusion")})
#: Candidates of a perception record: one statement per level of its dimension.
PERCEPTION_CANDIDATES = 3
#: Nodes of a group's shared context graph (the model's own node cap may keep fewer, by rank).
CONTEXT_GRAPH_NODES = 256


def fusion_graph_refs(row: object) -> tuple[str | None, list[str]]:
    """
    Graph references of one record's fusion inputs: ``(query graph, candidate graphs)``.

    ``own`` records use each image's own subgraph (``"own:<image_id>"``); ``group`` records give the query and
    every candidate the group's shared context graph (``"group:<member ids>"``, members = the record's candidate
    graph ids). Resolve with :meth:`FusionGraphs.graph_of`.
    """
    kind = getattr(row, "fusion_graph", None) or "own"
    ids = getattr(row, "candidate_graph_ids", None)
    candidates = [str(g) for g in ids] if ids is not None else []
    query_id = getattr(row, "query_graph_id", None)
    if kind == "group":
        ref = "group:" + ",".join(sorted(candidates))
        return (ref if query_id is not None else None), [ref] * len(candidates)
    return (f"own:{query_id}" if query_id is not None else None), [f"own:{g}" for g in candidates]


def row_role(task: str, mode: str) -> str:
    """``"graph_reading"`` for rows whose query graph determines the answer, else ``"headline"``."""
    return "graph_reading" if (task, mode) in GRAPH_READING else "headline"


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
        The long subgraph tables keyed by ``image_id``: every image's rows, or only the query images' (the
        ``test`` split: the only rows the builders and the fusion mode read) with ``subgraph_image_ids`` set.
    crs_metric
        The city's metric CRS (``UrbanGraph.crs_metric``); perception measures distances in it.
    osm_aois, osm_pois, osm_trees
        The city's normalised OSM tables (GeoDataFrames in EPSG:4326: areas with ``category``, ``tag``,
        ``height_m``, ``is_building``; POIs with ``category``; tree points). They carry the perception measures;
        without ``osm_aois`` no perception records are built.
    subgraph_image_ids
        The ids of every image that has a subgraph, when the subgraph tables hold only the query images' rows:
        perception ranks each query image among all the city's images with a subgraph, which needs their ids,
        not their rows (:func:`~ugdata_pipeline.ugbench.tasks.read_query_subgraphs`). ``None``: the images of
        ``subgraph_nodes``.
    """

    city: str
    role: Literal["train", "held_out"]
    images: pd.DataFrame
    nodes: pd.DataFrame
    edges: pd.DataFrame
    subgraph_nodes: pd.DataFrame
    subgraph_edges: pd.DataFrame
    crs_metric: str
    osm_aois: pd.DataFrame | None = None
    osm_pois: pd.DataFrame | None = None
    osm_trees: pd.DataFrame | None = None
    subgraph_image_ids: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Options of the benchmark build; distances in metres."""

    # Each field's "doc" is its description in the Dagster launchpad too (assets/_config.py derives the run config).
    seed: int = field(default=0, metadata={"doc": "Every random choice is seeded from (seed, task, city, image, ...)."})
    n_distractors: int = field(
        default=19,
        metadata={"doc": "Distractors per geolocation / retrieval / grounding record (group size - 1, >= 19)."},
    )
    min_distractor_m: float = field(
        default=100.0, metadata={"doc": "Geolocation / retrieval distractors lie at least this far (m) from the query."}
    )
    max_distractor_m: float = field(
        default=2000.0,
        metadata={"doc": "... and at most this far (m); also the radius for city-drawn grounding fillers."},
    )
    tasks: tuple[str, ...] = field(default=TASKS, metadata={"doc": f"Which tasks to build, of {list(TASKS)}."})
    grounding_types: tuple[str, ...] = field(
        default=GROUNDING_TYPES, metadata={"doc": f"Which grounding types to build, of {list(GROUNDING_TYPES)}."}
    )
    max_records_per_task: int | None = field(
        default=None,
        metadata={"doc": "Records per (task, query type, city) at most: a seeded sample of whole groups (None: all)."},
    )
    description_max_places: int = field(default=10, metadata={"doc": "Places the subgraph description names at most."})
    description_near_m: float = field(
        default=200.0, metadata={"doc": "Radius (m) of the places the subgraph description lists."}
    )
    description_max_chars: int = field(default=1500, metadata={"doc": "Length of a subgraph description at most."})
    cluster_m: float = field(default=250.0, metadata={"doc": "Side (m) of the spatial blocks the bootstrap resamples."})
    nearest_margin_m: float = field(
        default=10.0,
        metadata={"doc": "'Nearest X' needs the runner-up this much (m) farther, else the record is skipped."},
    )
    target_min_m: float = field(
        default=20.0, metadata={"doc": "Distance-direction targets lie at least this far (m) from the image."}
    )
    target_max_m: float = field(default=700.0, metadata={"doc": "... and at most this far (m)."})
    min_distractor_ratio: float = field(
        default=1.5, metadata={"doc": "A distance-direction distractor differs by this distance factor ..."}
    )
    min_distractor_angle_deg: float = field(
        default=45.0,
        metadata={"doc": "... or by at least this angle between compass words (45: another word)."},
    )

    def __post_init__(self) -> None:
        if self.n_distractors < 19:
            msg = f"BenchConfig.n_distractors must be >= 19 (>= 20 candidates per record), got {self.n_distractors!r}"
            raise BenchmarkInputError(msg)
        if not 0 <= self.min_distractor_m < self.max_distractor_m:
            msg = (
                f"BenchConfig needs 0 <= min_distractor_m < max_distractor_m (metres), got "
                f"{self.min_distractor_m!r} and {self.max_distractor_m!r}"
            )
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
            msg = (
                f"BenchConfig needs 0 <= target_min_m < target_max_m (metres), got {self.target_min_m!r} and "
                f"{self.target_max_m!r}"
            )
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
        return {
            **{f"records/{k}": v for k, v in sorted(self.records.items())},
            **{f"skipped/{k}": v for k, v in sorted(self.skipped.items())},
        }

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
_STOPWORDS = frozenset(
    {
        "the",
        "and",
        "of",
        "a",
        "an",
        "to",
        "in",
        "on",
        "at",
        "is",
        "this",
        "from",
        "here",
        "with",
        "for",
        "by",
        "m",
        "km",
    }
)


def normalize_text(text: str) -> str:
    """Lowercase, fold everything but letters and digits to single spaces (for leakage and duplicate checks)."""
    return _normalized(str(text))


@functools.lru_cache(maxsize=1 << 16)
def _normalized(text: str) -> str:  # memoised: the 20 records of a candidate group share their candidate texts
    return " ".join(_TOKEN.findall(text.lower()))


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
    *,
    rng: np.random.Generator,
    correct: str,
    distractors: Sequence[str],
    correct_distance_m: float = float("nan"),
    distractor_distance_m: Sequence[float] | None = None,
    correct_graph_id: str | None = None,
    distractor_graph_ids: Sequence[str] | None = None,
    **columns: object,
) -> dict[str, object]:
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
    record["fusion_graph"] = record.get("fusion_graph") or "own"
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


def limit_groups(groups: list[list[int]], limit: int | None, seed: int, *names: object) -> list[list[int]]:
    """
    A seeded sample of whole groups holding at most ``limit`` records in all (kept in their input order).

    Whole groups only: a group cut short would no longer use its candidate set once with each member correct,
    and candidate-only scorers would leave exact chance.
    """
    if limit is None or not groups or sum(len(g) for g in groups) <= limit:
        return groups
    keep = max(1, limit // len(groups[0]))
    picked = np.sort(
        record_rng(seed, "limit-groups", *names).choice(len(groups), size=min(keep, len(groups)), replace=False)
    )
    return [groups[i] for i in picked]


def local_metres(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """
    East / north metres on an equirectangular grid around the points' mean latitude.

    Good to a fraction of a percent over the few kilometres a benchmark group spans, which is all the
    grouping distance band needs; exact distances for the records come from the geodesic helper.
    """
    lon_a, lat_a = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    lat0 = math.radians(float(np.nanmean(lat_a))) if lat_a.size else 0.0
    return lon_a * _METRES_PER_DEGREE * math.cos(lat0), lat_a * _METRES_PER_DEGREE


_METRES_PER_DEGREE = 111_320.0


def image_side_instructions(task: str) -> tuple[str, str]:
    """
    The instructions a task's images are embedded with: ``(image mode, fusion mode)``.

    They are the first training instructions (:data:`ugdata_pipeline.dataset.records.INSTRUCTIONS`) of the pair
    type the task's text resembles, stage 1 for image mode and stage 2 for fusion mode, so images are embedded
    exactly as in training: a location description is a spatial summary of the place.
    """
    from ugdata_pipeline.dataset.records import INSTRUCTIONS  # the training side owns the wording

    pair_type = {"geolocation": "summarization", "retrieval": "summarization"}[task]
    return INSTRUCTIONS[1][pair_type][0], INSTRUCTIONS[2][pair_type][0]


def query_images(inputs: CityInputs) -> pd.DataFrame:
    """
    The city's benchmark query images: its ``test`` split (held-out cities hold only test images), by ``image_id``.

    Sorted, so the seeded grouping (which draws an order over these rows) does not depend on the input row order.
    """
    images = inputs.images
    test = images[images["split"] == "test"]
    test = test[test["image_id"].astype(str).isin(images_with_subgraph(inputs))]
    return test.iloc[np.argsort(test["image_id"].astype(str).to_numpy(dtype=object), kind="stable")].reset_index(
        drop=True
    )


def images_with_subgraph(inputs: CityInputs) -> set[str]:
    """The ids of the city's images that have a subgraph: ``subgraph_image_ids``, else those of ``subgraph_nodes``."""
    if inputs.subgraph_image_ids is not None:
        return set(inputs.subgraph_image_ids)
    return set(inputs.subgraph_nodes["image_id"].astype(str).unique())


def record_split(inputs: CityInputs) -> str:
    """``test`` for a training city, ``held_out`` for a held-out one."""
    return "held_out" if inputs.role == "held_out" else "test"


class FusionGraphs(SubgraphIndex):
    """
    The graphs of the fusion mode: the per-image index of the subgraph tables, plus the shared context graph of
    a group of images, both named by a graph reference (:meth:`graph_of`).
    """

    def __init__(self, subgraph_nodes: pd.DataFrame, subgraph_edges: pd.DataFrame) -> None:
        super().__init__(subgraph_nodes, subgraph_edges)
        self._graphs: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

    def graph_of(self, ref: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """
        The ``(nodes, edges)`` a fusion input refers to: ``"own:<image_id>"`` or ``"group:<id>,<id>,..."``.

        ``own`` is the image's subgraph. ``group`` is :meth:`context_graph` of the listed images. Results are
        memoised (a group graph is shared by every record and candidate of its group).
        """
        if ref not in self._graphs:
            kind, _, rest = ref.partition(":")
            if kind == "own":
                self._graphs[ref] = (self.nodes_of(rest), self.edges_of(rest))
            elif kind == "group":
                self._graphs[ref] = self.context_graph(rest.split(","))
            else:
                msg = f"unknown graph reference {ref!r}; use 'own:<image_id>' or 'group:<image ids>'"
                raise BenchmarkInputError(msg)
        return self._graphs[ref]

    def context_graph(
        self, image_ids: Sequence[str], *, max_nodes: int = CONTEXT_GRAPH_NODES
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """
        One graph of the area a group of images covers, the same whichever member asks.

        The nodes are the members' subgraph nodes (their own image nodes left out), taken round-robin by each
        member's distance order until ``max_nodes`` (so every member's surroundings are represented), plus one
        centre node of kind ``image`` at the members' centroid: the place "somewhere here" the photo was taken,
        never the photo's own position. Offsets ``dx_m``/``dy_m``, ``distance_m`` and ``rank`` are re-expressed
        from that centre; edges are the members' subgraph edges among the kept nodes.

        Returns
        -------
        nodes, edges
            Long-table rows with ``image_id = "group:<first member>+<n>"``.
        """
        members = sorted(str(i) for i in image_ids)
        graph_id = f"group:{members[0]}+{len(members) - 1}"
        own = [self.nodes_of(m) for m in members]
        parts = [p[pd.to_numeric(p["rank"], errors="coerce") > 0] for p in own]
        stacked = pd.concat(parts, ignore_index=True) if parts else self.nodes.iloc[0:0]
        part_ids = [p["node_id"].astype(str).tolist() for p in parts]
        offsets = np.cumsum([0, *(len(p) for p in parts)])
        picks: list[int] = []
        taken: set[str] = set()
        depth = 0
        while len(taken) < max_nodes and any(depth < len(ids) for ids in part_ids):
            for k, ids in enumerate(part_ids):
                if depth < len(ids) and len(taken) < max_nodes and ids[depth] not in taken:
                    taken.add(ids[depth])
                    picks.append(int(offsets[k]) + depth)
            depth += 1
        lon0 = float(np.mean([float(p["lon"].iloc[0]) for p in own]))
        lat0 = float(np.mean([float(p["lat"].iloc[0]) for p in own]))
        nodes = stacked.iloc[picks].reset_index(drop=True) if picks else self.nodes.iloc[0:0].copy()
        centre = dict.fromkeys(nodes.columns)
        centre |= {"node_id": graph_id, "kind": "image", "node_text": "", "lon": lon0, "lat": lat0}
        nodes = pd.concat([pd.DataFrame([centre]), nodes], ignore_index=True)
        x, y = local_metres(nodes["lon"].to_numpy(dtype=float), nodes["lat"].to_numpy(dtype=float))
        nodes["dx_m"], nodes["dy_m"] = x - x[0], y - y[0]
        nodes["distance_m"] = np.hypot(nodes["dx_m"], nodes["dy_m"])
        nodes["rank"] = np.arange(len(nodes))
        nodes["image_id"] = graph_id
        edges = pd.concat([self.edges_of(m) for m in members], ignore_index=True)
        kept = set(nodes["node_id"].astype(str))
        edges = edges[edges["src"].astype(str).isin(kept) & edges["dst"].astype(str).isin(kept)]
        edges = edges.drop_duplicates(["src", "dst", "kind"]).assign(image_id=graph_id).reset_index(drop=True)
        return nodes, edges


def validate_city_inputs(inputs: CityInputs) -> None:
    """Check one city's tables before any work; raise :class:`BenchmarkInputError` naming the table and fix."""
    if inputs.role not in ("train", "held_out"):
        msg = f"CityInputs.role for {inputs.city!r} must be 'train' or 'held_out', got {inputs.role!r}"
        raise BenchmarkInputError(msg)
    metric_crs(inputs.crs_metric, needed_by=f"CityInputs of {inputs.city!r}")
    needs = {
        "images": ("image_id", "source", "lon", "lat", "split", "path", "street_node"),
        "nodes": ("node_id", "kind", "name", "category", "lon", "lat"),
        "edges": ("src", "dst", "kind"),
        "subgraph_nodes": ("image_id", "node_id", "kind", "name", "category", "lon", "lat", "distance_m", "rank"),
        "subgraph_edges": ("image_id", "src", "dst", "kind"),
    }
    for table, columns in needs.items():
        require_columns(
            getattr(inputs, table),
            columns,
            table=f"CityInputs.{table}",
            city=inputs.city,
            fix=f"Pass the {table} table of the data contract (DESIGN.md).",
            error=BenchmarkInputError,
        )
    if inputs.subgraph_image_ids is not None:
        test = set(inputs.images.loc[inputs.images["split"] == "test", "image_id"].astype(str))
        absent = sorted((test & set(inputs.subgraph_image_ids)) - set(inputs.subgraph_nodes["image_id"].astype(str)))
        if absent:
            msg = (
                f"CityInputs.subgraph_nodes of {inputs.city!r} lacks the rows of {len(absent)} test image(s) with a "
                f"subgraph, e.g. {absent[:3]}; read the rows of every test image (read_query_subgraphs)"
            )
            raise BenchmarkInputError(msg)
    if inputs.role == "held_out":
        other = sorted(set(inputs.images["split"].astype(str)) - {"test", "excluded"})
        if other:
            msg = (
                f"held-out city {inputs.city!r} has images in split(s) {other}; a held-out city's images are all "
                "'test' (assign_splits(..., city_split='held_out'))"
            )
            raise BenchmarkInputError(msg)


def image_node_of(images: pd.DataFrame) -> np.ndarray:
    """Graph node ids ``image:<source>:<image_id>`` of the images."""
    return image_node_ids(images["source"], images["image_id"])


def finite(value: object) -> bool:
    """``True`` for a finite real number."""
    return isinstance(value, int | float | np.integer | np.floating) and math.isfinite(float(value))


Describe = Callable[..., str]
