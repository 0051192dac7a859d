"""Score embedding models and blind scorers on a UGBench tasks table, with clustered, paired statistics.

For each model (each of its training seeds) and query mode (``image``, ``fusion``, ``text``;
:data:`~._records.TASK_MODES` says which apply to which task) every distinct item is embedded once, in batches,
through the model's cache, **exactly as in training**: the image side with the record's image-side instruction
(``instruction`` in image / text mode, ``fusion_instruction`` in fusion mode; the query image, or the candidate
images of retrieval), texts without one. Fusion graphs are each record's own subgraph or its group's shared
context graph (``fusion_graph``, :func:`~._records.fusion_graph_refs`). Scores are cosine similarities computed for
all records at once; ranks, ties and metrics follow :mod:`.metrics`.

Beside the models, the blind scorers of :mod:`.blind` are scored on the same records (``kind = "blind"``).

Statistics (:mod:`.stats`): per-row figures are the mean over a model's seeds; the 95 % interval resamples the
records' spatial clusters (``cluster``) of the seed-averaged per-record metric; ``<metric>_seed_sd`` is the spread
across seeds. :func:`compare` gives paired differences between models (and against chance) on the same records,
with clustered intervals and a verdict.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.ugbench._records import (
    MODES,
    TASK_MODES,
    FusionGraphs,
    fusion_graph_refs,
    row_role,
)
from ugdata_pipeline.ugbench.blind import blind_scores
from ugdata_pipeline.ugbench.metrics import HIT_KS, METRICS, TIE_TOL, per_record_metrics, rank_counts
from ugdata_pipeline.ugbench.models import EmbeddingCache, EmbeddingModel, call_with_instruction, item_key
from ugdata_pipeline.ugbench.stats import paired_differences_over_seeds, seed_summary

logger = logging.getLogger(__name__)

GROUP_COLUMNS: tuple[str, ...] = ("task", "query_type", "city", "split", "mode", "model")
RECORD_METRICS: tuple[str, ...] = (*(f"hit@{k}" for k in HIT_KS), "rr", "rank")
RESULT_COLUMNS: tuple[str, ...] = (
    *GROUP_COLUMNS,
    "kind",
    "role",
    "n",
    "n_clusters",
    "n_seeds",
    *METRICS,
    *(f"{m}_{b}" for m in METRICS for b in ("lo", "hi")),
    *(f"{m}_seed_sd" for m in METRICS),
    *(f"chance_{m}" for m in METRICS),
    "instruction_used",
)
PER_RECORD_COLUMNS: tuple[str, ...] = (
    "record_id",
    "task",
    "query_type",
    "city",
    "split",
    "mode",
    "model",
    "seed",
    "kind",
    "cluster",
    "n_candidates",
    *RECORD_METRICS,
)
COMPARISON_COLUMNS: tuple[str, ...] = (
    "task",
    "query_type",
    "city",
    "split",
    "mode",
    "role",
    "a",
    "b",
    "metric",
    "mean_a",
    "mean_b",
    "diff",
    "lo",
    "hi",
    "verdict",
    "n",
    "n_clusters",
    "n_seeds_a",
    "n_seeds_b",
    "seed_sd",
    "b_at_chance",
)
_SCORE_CHUNK = 256  # records scored together; bounds the (records, candidates, dim) temporary
_KEYS = ["task", "query_type", "city", "split"]
CHANCE = "chance"


@dataclass(slots=True)
class Evaluation:
    """What :func:`evaluate` returns."""

    results: pd.DataFrame  # RESULT_COLUMNS: one row per (task, query_type, city, split, mode, model)
    per_record: pd.DataFrame  # PER_RECORD_COLUMNS: one row per (record, mode, model, seed)
    text_window: dict[str, float] = field(default_factory=dict)  # share of texts longer than a model's window


class _Items:
    """Distinct items of one kind (text / image / fusion) and instruction, gathered before embedding."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.groups: dict[tuple[str, str | None], list[tuple[str, str, str | None]]] = {}
        self.fingerprints: dict[str, str] = {}

    def add(
        self,
        kind: str,
        payload: str,
        instruction: str | None,
        *,
        graphs: FusionGraphs | None = None,
        graph_ref: str | None = None,
    ) -> str:
        fingerprint = None
        if graph_ref is not None:
            if graph_ref not in self.fingerprints:
                self.fingerprints[graph_ref] = _graph_fingerprint(graphs, graph_ref)
            fingerprint = self.fingerprints[graph_ref]
        key = item_key(kind, payload, graph=fingerprint, instruction=instruction)
        if key not in self.keys:
            self.keys[key] = len(self.keys)
            self.groups.setdefault((kind, instruction), []).append((key, payload, graph_ref))
        return key


def _graph_fingerprint(index: FusionGraphs | None, graph_ref: str) -> str:
    """A hash of the graph reference, its node ids and its edge count, so a rebuilt graph is embedded again."""
    if index is None:
        return graph_ref
    nodes, edges = index.graph_of(graph_ref)
    text = "\x1f".join([graph_ref, *nodes["node_id"].astype(str)])
    return f"{len(edges)}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:24]}"


def _embed_all(
    model: EmbeddingModel,
    items: _Items,
    cache: EmbeddingCache,
    *,
    graphs: FusionGraphs | None,
    image_root: Path | None,
    batch_size: int,
) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, bool]]:
    """Embed every item not yet cached; return ``key -> unit vector`` and per-kind ``instruction used``."""
    methods = {"text": model.embed_texts, "image": model.embed_images, "fusion": model.embed_fusion}
    used: dict[str, bool] = {}
    for (kind, instruction), group in items.groups.items():
        keys = [k for k, _, _ in group]
        todo = cache.missing(keys)
        if instruction:
            used[kind] = used.get(kind, False) or _takes_instruction(methods[kind])
        for start in range(0, len(todo), batch_size):
            chunk = [group[i] for i in todo[start : start + batch_size]]
            payloads = [p for _, p, _ in chunk]
            args: tuple[object, ...]
            if kind == "text":
                args = (payloads,)
            else:
                paths = [str(image_root / p) if image_root is not None else p for p in payloads]
                if kind == "image":
                    args = (paths,)
                else:
                    assert graphs is not None  # checked before any work
                    args = (paths, [graphs.graph_of(g) for _, _, g in chunk])
            vectors, _ = call_with_instruction(methods[kind], args, instruction, len(chunk))
            cache.put([k for k, _, _ in chunk], vectors)
    vectors = cache.get(list(items.keys))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True) if len(vectors) else np.zeros((0, 1))
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    return dict(zip(items.keys, vectors, strict=True)), used


def _takes_instruction(method: object) -> bool:
    from ugdata_pipeline.ugbench.models import instruction_keyword

    return instruction_keyword(method) is not None  # type: ignore[arg-type]


def _metrics_from_scores(
    scores: Sequence[np.ndarray], correct: npt.NDArray[np.int64], tie_tol: float
) -> dict[str, npt.NDArray[np.float64]]:
    """Per-record metrics (and candidate counts) from one score array per record."""
    parts: list[dict[str, npt.NDArray[np.float64]]] = []
    for start in range(0, len(scores), _SCORE_CHUNK):
        block_scores = scores[start : start + _SCORE_CHUNK]
        width = max(len(s) for s in block_scores)
        block = np.zeros((len(block_scores), width))
        valid = np.zeros((len(block_scores), width), dtype=bool)
        for i, s in enumerate(block_scores):
            finite = np.where(np.isfinite(s), s, np.nanmin(np.where(np.isfinite(s), s, np.inf), initial=0.0) - 1e6)
            block[i, : len(s)] = finite
            valid[i, : len(s)] = True
        counts = rank_counts(block, correct[start : start + len(block_scores)], valid=valid, tie_tol=tie_tol)
        parts.append({**per_record_metrics(counts), "n_candidates": counts.n_candidates.astype(float)})
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _model_scores(
    subset: pd.DataFrame,
    mode: str,
    vectors: Mapping[str, np.ndarray],
    query_keys: list[str],
    candidate_keys: list[list[str]],
) -> list[np.ndarray]:
    del subset, mode
    return [
        np.asarray([vectors[c] for c in cands]) @ vectors[q]
        for q, cands in zip(query_keys, candidate_keys, strict=True)
    ]


def _gather_items(
    subset: pd.DataFrame, mode: str, graphs: FusionGraphs | None
) -> tuple[_Items, list[str], list[list[str]]]:
    items = _Items()
    query_keys: list[str] = []
    candidate_keys: list[list[str]] = []
    for row in subset.itertuples(index=False):
        instruction = row.fusion_instruction if mode == "fusion" else row.instruction
        instruction = instruction if isinstance(instruction, str) and instruction else None
        query_ref, candidate_refs = fusion_graph_refs(row) if mode == "fusion" else (None, [])
        if row.query_kind == "image":
            query_keys.append(items.add(mode, str(row.query_image), instruction, graphs=graphs, graph_ref=query_ref))
        else:
            query_keys.append(items.add("text", str(row.query_text), None))  # texts are never instruction-led
        if row.candidate_kind == "text":
            candidate_keys.append([items.add("text", str(c), None) for c in row.candidates])
        else:
            kind = "fusion" if mode == "fusion" else "image"
            refs = candidate_refs if kind == "fusion" else [None] * len(row.candidates)
            candidate_keys.append(
                [
                    items.add(kind, str(c), instruction, graphs=graphs, graph_ref=ref)
                    for c, ref in zip(row.candidates, refs, strict=True)
                ]
            )
    return items, query_keys, candidate_keys


def _as_seeds(entry: EmbeddingModel | Sequence[EmbeddingModel]) -> list[EmbeddingModel]:
    if isinstance(entry, list | tuple):
        return list(entry)
    return [entry]  # type: ignore[list-item]


def evaluate(
    tasks: pd.DataFrame,
    models: Mapping[str, EmbeddingModel | Sequence[EmbeddingModel]],
    *,
    modes: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    subgraph_nodes: pd.DataFrame | None = None,
    subgraph_edges: pd.DataFrame | None = None,
    image_root: Path | str | None = None,
    cache_dir: Path | str | None = None,
    batch_size: int = 32,
    limit_per_group: int | None = None,
    tie_tol: float = TIE_TOL,
    blind: bool = True,
) -> Evaluation:
    """
    Evaluate models (each with one or several training seeds) and the blind scorers on a tasks table.

    Parameters
    ----------
    tasks
        A UGBench tasks table (:func:`~.tasks.build_tasks` / :func:`~.tasks.load_benchmark`).
    models
        ``name -> model`` or ``name -> [model of seed 0, seed 1, ...]``; the names become the ``model`` column.
        A model's ``cache_id`` attribute (if any) keys its cache, else its name and seed. May be empty when
        ``blind`` is set (the benchmark's own shortcut check).
    modes
        Query modes to run (default all three); each task runs in the modes of :data:`TASK_MODES` it shares.
    bootstrap
        Cluster-bootstrap resamples for the 95 % intervals (0: no intervals, NaN).
    seed
        Bootstrap seed (mixed with each row's name).
    subgraph_nodes, subgraph_edges
        The long subgraph tables; needed for the ``fusion`` mode.
    image_root
        Directory the tasks' relative image paths are resolved against; cache keys use the relative paths.
    cache_dir
        Root of the on-disk embedding cache; ``None`` caches in memory for this call only.
    batch_size
        Items per model call.
    limit_per_group
        Keep only the first N records of each (task, query_type, city, split), like the reference's ``EVAL_LIMIT``.
    tie_tol
        Absolute score difference counted as a tie.
    blind
        Score the blind scorers beside the models.

    Returns
    -------
    Evaluation
        ``results`` (:data:`RESULT_COLUMNS`), ``per_record`` (:data:`PER_RECORD_COLUMNS`), ``text_window``.

    Raises
    ------
    BenchmarkInputError
        Unknown modes, nothing to score, or ``fusion`` without subgraph tables.
    """
    chosen = tuple(modes) if modes is not None else MODES
    unknown = sorted(set(chosen) - set(MODES))
    if unknown:
        msg = f"modes holds unknown mode(s) {unknown}; choose from {list(MODES)}"
        raise BenchmarkInputError(msg)
    if not models and not blind:
        msg = "nothing to score: models is empty and blind=False; pass at least one {name: model}"
        raise BenchmarkInputError(msg)
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size!r}"
        raise BenchmarkInputError(msg)
    fusion_needed = "fusion" in chosen and len(tasks) > 0
    if fusion_needed and (subgraph_nodes is None or subgraph_edges is None):
        msg = (
            "the fusion mode needs subgraph_nodes and subgraph_edges (saved next to tasks.parquet by "
            "save_benchmark); pass them or run with modes excluding 'fusion'"
        )
        raise BenchmarkInputError(msg)
    graphs = FusionGraphs(subgraph_nodes, subgraph_edges) if fusion_needed else None
    if limit_per_group is not None:
        tasks = tasks.groupby(_KEYS, sort=False, group_keys=False).head(limit_per_group)
    root = Path(image_root) if image_root is not None else None
    frames: list[pd.DataFrame] = []
    instruction_used: dict[tuple[str, str], bool] = {}
    texts_seen: set[str] = set()
    text_window: dict[str, float] = {}
    for mode in chosen:
        subset = tasks[tasks["task"].map(lambda t, mode=mode: mode in TASK_MODES.get(t, ()))].reset_index(drop=True)
        if subset.empty:
            continue
        if mode == "fusion":
            wanted = {
                *subset["query_graph_id"].dropna().astype(str),
                *(g for ids in subset["candidate_graph_ids"] for g in ids),
            }
            missing = {g for g in wanted if g not in graphs}  # type: ignore[operator]
            if missing:
                msg = (
                    f"{len(missing)} query image(s) have no subgraph rows, e.g. {sorted(missing)[:3]}; pass "
                    "the subgraph tables of the benchmark's cities"
                )
                raise BenchmarkInputError(msg)
        correct = subset["correct_idx"].to_numpy(dtype=np.int64)
        items = None
        for name, entry in models.items():
            for seed_index, model in enumerate(_as_seeds(entry)):
                if mode == "fusion" and not getattr(model, "supports_fusion", True):
                    continue  # an image-text model (baseline, stage 1) has no graph side: no fusion rows for it
                if items is None:
                    items, query_keys, candidate_keys = _gather_items(subset, mode, graphs)
                    texts_seen.update(p for (kind, _), g in items.groups.items() if kind == "text" for _, p, _ in g)
                cache = EmbeddingCache(cache_dir, str(getattr(model, "cache_id", f"{name}#{seed_index}")))
                vectors, used = _embed_all(model, items, cache, graphs=graphs, image_root=root, batch_size=batch_size)
                for kind, flag in used.items():
                    instruction_used[name, kind] = flag
                scores = _model_scores(subset, mode, vectors, query_keys, candidate_keys)
                frames.append(
                    _record_frame(
                        subset, mode, name, seed_index, "model", _metrics_from_scores(scores, correct, tie_tol)
                    )
                )
                logger.info(
                    "evaluated %s (seed %s) in %s mode: %s cached vectors (%s hits, %s computed)",
                    name,
                    seed_index,
                    mode,
                    f"{len(cache):,}",
                    f"{cache.hits:,}",
                    f"{cache.misses:,}",
                )
                window = getattr(model, "long_text_share", None)
                if callable(window) and texts_seen:
                    text_window[name] = float(window(sorted(texts_seen)))
        if blind:
            for scorer, scores in blind_scores(subset, mode, graphs=graphs).items():
                frames.append(
                    _record_frame(subset, mode, scorer, 0, "blind", _metrics_from_scores(scores, correct, tie_tol))
                )
    per_record = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(PER_RECORD_COLUMNS))
    results = summarize_records(per_record, bootstrap=bootstrap, seed=seed)
    # the image side carries the instruction: the query image, or in text mode (retrieval) the candidate images
    results["instruction_used"] = [
        bool(instruction_used.get((m, "image" if mode == "text" else mode), False))
        for m, mode in zip(results["model"], results["mode"], strict=True)
    ]
    return Evaluation(results=results, per_record=per_record, text_window=text_window)


def _record_frame(
    subset: pd.DataFrame, mode: str, model: str, seed_index: int, kind: str, metrics: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    frame = subset[["record_id", *_KEYS, "cluster"]].copy()
    frame.insert(5, "mode", mode)
    frame.insert(6, "model", model)
    frame.insert(7, "seed", seed_index)
    frame.insert(8, "kind", kind)
    frame["n_candidates"] = metrics["n_candidates"].astype(np.int64)
    for name in RECORD_METRICS:
        frame[name] = metrics[name]
    return frame[list(PER_RECORD_COLUMNS)]


def _by_seed(rows: pd.DataFrame) -> list[dict[str, np.ndarray]]:
    """Per-seed per-record metric arrays, records in ``record_id`` order."""
    out = []
    for _, part in rows.sort_values(["seed", "record_id"], kind="stable").groupby("seed", sort=True):
        out.append({name: part[name].to_numpy(dtype=float) for name in RECORD_METRICS})
    return out


def _chance_per_record(n_candidates: np.ndarray) -> dict[str, np.ndarray]:
    c = n_candidates.astype(float)
    harmonic = np.asarray([np.sum(1.0 / np.arange(1, int(n) + 1)) for n in n_candidates])
    out = {f"hit@{k}": np.minimum(k, c) / c for k in HIT_KS}
    out["rr"] = harmonic / c
    out["rank"] = (c + 1.0) / 2.0
    return out


def summarize_records(per_record: pd.DataFrame, *, bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """
    One results row per (task, query_type, city, split, mode, model) from per-record metrics.

    The figure is the mean over the model's seeds; ``<metric>_lo`` / ``_hi`` are the clustered 95 % interval of the
    seed-averaged per-record metric; ``<metric>_seed_sd`` the SD across seeds (NaN for one seed); ``chance_*`` the
    expected metric of a random ranking of the same records.
    """
    rows: list[dict[str, object]] = []
    if per_record.empty:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    for key, group in per_record.groupby(list(GROUP_COLUMNS), sort=True):
        by_seed = _by_seed(group)
        first = group[group["seed"] == group["seed"].min()].sort_values("record_id", kind="stable")
        clusters = first["cluster"].astype(str).to_numpy()
        summary = seed_summary(by_seed, clusters, n_resamples=bootstrap, seed=seed, group=key)
        chance = _chance_per_record(first["n_candidates"].to_numpy())
        out: dict[str, object] = dict(zip(GROUP_COLUMNS, key, strict=True))
        out |= {
            "kind": group["kind"].iloc[0],
            "role": row_role(str(key[0]), str(key[4])),
            "n": len(first),
            "n_clusters": len(set(clusters)),
            "n_seeds": len(by_seed),
        }
        for metric, name in zip(RECORD_METRICS, METRICS, strict=True):
            s = summary[name]
            out[name], out[f"{name}_lo"], out[f"{name}_hi"], out[f"{name}_seed_sd"] = s.mean, s.lo, s.hi, s.sd
            out[f"chance_{name}"] = float(np.mean(chance[metric]))
        rows.append(out)
    results = pd.DataFrame(rows)
    results["instruction_used"] = False
    return results[list(RESULT_COLUMNS)].sort_values(list(GROUP_COLUMNS), kind="stable").reset_index(drop=True)


def compare(
    per_record: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    metrics: Sequence[str] = ("hit@1", "hit@5", "mrr"),
    bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """
    Paired differences ``a - b`` on the same records, with clustered 95 % intervals and a verdict.

    Parameters
    ----------
    per_record
        :attr:`Evaluation.per_record`.
    pairs
        ``(a, b)`` model names; ``b`` may be :data:`CHANCE` (a random ranking of the same records).
    metrics
        Summary metrics to compare (``hit@K``, ``mrr``, ``mean_rank``).

    Returns
    -------
    comparisons
        :data:`COMPARISON_COLUMNS`; ``verdict`` is "a better", "b better" or "no difference" (the interval spans
        zero); ``b_at_chance`` says whether ``b``'s interval includes chance (a relative gain over such a ``b``
        means little).
    """
    rows: list[dict[str, object]] = []
    for key, group in per_record.groupby([*_KEYS, "mode"], sort=True):
        models = set(group["model"])
        for a, b in pairs:
            if a not in models or (b != CHANCE and b not in models):
                continue
            a_rows = group[group["model"] == a]
            a_by_seed = _by_seed(a_rows)
            first = a_rows[a_rows["seed"] == a_rows["seed"].min()].sort_values("record_id", kind="stable")
            clusters = first["cluster"].astype(str).to_numpy()
            chance = _chance_per_record(first["n_candidates"].to_numpy())
            b_by_seed = [chance] if b == CHANCE else _by_seed(group[group["model"] == b])
            diffs = paired_differences_over_seeds(
                a_by_seed, b_by_seed, clusters, n_resamples=bootstrap, seed=seed, group=(*key, a, b)
            )
            if b != CHANCE:
                at_chance = paired_differences_over_seeds(
                    b_by_seed, [chance], clusters, n_resamples=bootstrap, seed=seed, group=(*key, b, CHANCE)
                )
            for metric in metrics:
                d = diffs[metric]
                b_chance = True if b == CHANCE else at_chance[metric].verdict != "a better"
                where = dict(zip([*_KEYS, "mode"], key, strict=True))
                rows.append(
                    {
                        **where,
                        "role": row_role(str(key[0]), str(key[4])),
                        "a": a,
                        "b": b,
                        "metric": metric,
                        "mean_a": d.mean_a,
                        "mean_b": d.mean_b,
                        "diff": d.diff,
                        "lo": d.lo,
                        "hi": d.hi,
                        "verdict": d.verdict,
                        "n": len(first),
                        "n_clusters": len(set(clusters)),
                        "n_seeds_a": len(a_by_seed),
                        "n_seeds_b": len(b_by_seed),
                        "seed_sd": d.seed_sd,
                        "b_at_chance": b_chance,
                    }
                )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
