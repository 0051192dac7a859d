"""Score embedding models on a UGBench tasks table.

For each model and query mode (``image``, ``fusion``, ``text``; :data:`~._records.TASK_MODES` says which apply to
which task) every distinct item is embedded once, in batches, through the model's cache: queries with their
instruction, text candidates and image candidates without one. Scores are cosine similarities (rows are
re-normalised, so a model returning unnormalised vectors is still scored by cosine), computed for all records at
once with padded candidate matrices. Ranks, ties and the bootstrap follow :mod:`.metrics`.

Results have one row per (task, query_type, city, split, mode, model) with ``n`` records, Hit@1/3/5/10, MRR, mean
rank and ``<metric>_lo`` / ``<metric>_hi`` bootstrap 95 % intervals, plus ``chance_hit@1`` (mean 1 / candidates).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.ugbench._records import MODES, TASK_MODES, BenchmarkInputError, SubgraphIndex
from ugdata_pipeline.ugbench.metrics import METRICS, TIE_TOL, bootstrap_intervals, per_record_metrics, rank_counts
from ugdata_pipeline.ugbench.models import (
    EmbeddingCache,
    EmbeddingModel,
    call_with_instruction,
    instruction_keyword,
    item_key,
)

logger = logging.getLogger(__name__)

GROUP_COLUMNS: tuple[str, ...] = ("task", "query_type", "city", "split", "mode", "model")
RESULT_COLUMNS: tuple[str, ...] = (
    *GROUP_COLUMNS, "n", *METRICS, *(f"{m}_{b}" for m in METRICS for b in ("lo", "hi")), "chance_hit@1",
    "instruction_used",
)  # fmt: skip
_SCORE_CHUNK = 256  # records scored together; bounds the (records, candidates, dim) temporary


class _Items:
    """Distinct items of one kind (text / image / fusion) and instruction, gathered before embedding."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.groups: dict[tuple[str, str | None], list[tuple[str, str, str | None]]] = {}
        self.fingerprints: dict[str, str] = {}

    def add(self, kind: str, payload: str, instruction: str | None, *, graphs: SubgraphIndex | None = None,
            graph_id: str | None = None) -> str:  # fmt: skip
        fingerprint = None
        if graph_id is not None:
            if graph_id not in self.fingerprints:
                self.fingerprints[graph_id] = _graph_fingerprint(graphs, graph_id)
            fingerprint = self.fingerprints[graph_id]
        key = item_key(kind, payload, graph=fingerprint, instruction=instruction)
        if key not in self.keys:
            self.keys[key] = len(self.keys)
            self.groups.setdefault((kind, instruction), []).append((key, payload, graph_id))
        return key


def _graph_fingerprint(index: SubgraphIndex | None, image_id: str) -> str:
    """The image id plus a hash of its subgraph's node ids and edge count, so a rebuilt subgraph is re-embedded."""
    if index is None:
        return image_id
    nodes = index.nodes_of(image_id)
    digest = hashlib.sha256("\x1f".join(nodes["node_id"].astype(str)).encode("utf-8")).hexdigest()[:16]
    return f"{image_id}:{len(index.edges_of(image_id))}:{digest}"


def _embed_all(
    model: EmbeddingModel, items: _Items, cache: EmbeddingCache, *, graphs: SubgraphIndex | None,
    image_root: Path | None, batch_size: int,
) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, bool]]:  # fmt: skip
    """Embed every item not yet cached; return ``key -> unit vector`` and per-kind ``instruction used``."""
    methods = {"text": model.embed_texts, "image": model.embed_images, "fusion": model.embed_fusion}
    # whether the model takes instructions is a property of its methods, so cached items report it the same way
    used = {kind: instruction_keyword(methods[kind]) is not None for kind, instruction in items.groups if instruction}
    for (kind, instruction), group in items.groups.items():
        keys = [k for k, _, _ in group]
        todo = cache.missing(keys)
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
                    args = (paths, [(graphs.nodes_of(g), graphs.edges_of(g)) for _, _, g in chunk])
            vectors, _ = call_with_instruction(methods[kind], args, instruction, len(chunk))
            cache.put([k for k, _, _ in chunk], vectors)
    vectors = cache.get(list(items.keys))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True) if len(vectors) else np.zeros((0, 1))
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    return dict(zip(items.keys, vectors, strict=True)), used


def _score_records(
    query_keys: Sequence[str], candidate_keys: Sequence[Sequence[str]], correct: npt.NDArray[np.int64],
    vectors: Mapping[str, npt.NDArray[np.float32]], tie_tol: float,
) -> dict[str, npt.NDArray[np.float64]]:  # fmt: skip
    """Per-record metrics from cosine scores, in chunks of records."""
    parts: list[dict[str, npt.NDArray[np.float64]]] = []
    dim = len(next(iter(vectors.values())))
    for start in range(0, len(query_keys), _SCORE_CHUNK):
        stop = start + _SCORE_CHUNK
        queries = np.stack([vectors[k] for k in query_keys[start:stop]]).astype(np.float64)
        cands = candidate_keys[start:stop]
        width = max(len(c) for c in cands)
        block = np.zeros((len(cands), width, dim))
        valid = np.zeros((len(cands), width), dtype=bool)
        for i, keys in enumerate(cands):
            block[i, : len(keys)] = np.stack([vectors[k] for k in keys])
            valid[i, : len(keys)] = True
        scores = np.einsum("rd,rcd->rc", queries, block)
        counts = rank_counts(scores, correct[start:stop], valid=valid, tie_tol=tie_tol)
        parts.append({**per_record_metrics(counts), "inv_c": 1.0 / counts.n_candidates})
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def evaluate(
    tasks: pd.DataFrame,
    models: Mapping[str, EmbeddingModel],
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
) -> pd.DataFrame:
    """
    Evaluate models on a tasks table.

    Parameters
    ----------
    tasks
        A UGBench tasks table (:func:`~.tasks.build_tasks` / :func:`~.tasks.load_benchmark`).
    models
        ``name -> model``; the names become the ``model`` column. A model's ``cache_id`` attribute (if any) keys
        its cache, else its name.
    modes
        Query modes to run (default all three); each task runs in the modes of :data:`TASK_MODES` it shares.
    bootstrap
        Bootstrap resamples for the 95 % intervals (0: no intervals, NaN).
    seed
        Bootstrap seed (mixed with each group's name).
    subgraph_nodes, subgraph_edges
        The long subgraph tables; needed for the ``fusion`` mode.
    image_root
        Directory the tasks' relative image paths are resolved against before they reach the model; cache keys
        use the relative paths.
    cache_dir
        Root of the on-disk embedding cache; ``None`` caches in memory for this call only.
    batch_size
        Items per model call.
    limit_per_group
        Keep only the first N records of each (task, query_type, city, split), like the reference's ``EVAL_LIMIT``.
    tie_tol
        Absolute score difference counted as a tie.

    Returns
    -------
    results
        Columns :data:`RESULT_COLUMNS`, one row per (task, query_type, city, split, mode, model).

    Raises
    ------
    BenchmarkInputError
        Unknown modes, an empty model mapping, or ``fusion`` without subgraph tables.
    """
    chosen = tuple(modes) if modes is not None else MODES
    unknown = sorted(set(chosen) - set(MODES))
    if unknown:
        msg = f"modes holds unknown mode(s) {unknown}; choose from {list(MODES)}"
        raise BenchmarkInputError(msg)
    if not models:
        msg = "models is empty; pass at least one {name: model}"
        raise BenchmarkInputError(msg)
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size!r}"
        raise BenchmarkInputError(msg)
    fusion_needed = "fusion" in chosen and len(tasks) > 0
    if fusion_needed and (subgraph_nodes is None or subgraph_edges is None):
        msg = ("the fusion mode needs subgraph_nodes and subgraph_edges (saved next to tasks.parquet by "
               "save_benchmark); pass them or run with modes excluding 'fusion'")  # fmt: skip
        raise BenchmarkInputError(msg)
    graphs = SubgraphIndex(subgraph_nodes, subgraph_edges) if fusion_needed else None
    if limit_per_group is not None:
        tasks = tasks.groupby(["task", "query_type", "city", "split"], sort=False, group_keys=False).head(
            limit_per_group)  # fmt: skip
    root = Path(image_root) if image_root is not None else None
    rows: list[dict[str, object]] = []
    for name, model in models.items():
        cache = EmbeddingCache(cache_dir, str(getattr(model, "cache_id", name)))
        for mode in chosen:
            if mode == "fusion" and not getattr(model, "supports_fusion", True):
                continue  # an image-text model (baseline, stage 1) has no graph side: no fusion rows for it
            subset = tasks[tasks["task"].map(lambda t, mode=mode: mode in TASK_MODES.get(t, ()))]
            if subset.empty:
                continue
            if mode == "fusion":
                missing = {g for g in subset["query_graph_id"].dropna().astype(str) if g not in graphs}  # type: ignore[operator]
                if missing:
                    msg = (f"{len(missing)} query image(s) have no subgraph rows, e.g. {sorted(missing)[:3]}; pass "
                           "the subgraph tables of the benchmark's cities")  # fmt: skip
                    raise BenchmarkInputError(msg)
            items = _Items()
            query_keys: list[str] = []
            candidate_keys: list[list[str]] = []
            for row in subset.itertuples(index=False):
                instruction = row.instruction if isinstance(row.instruction, str) and row.instruction else None
                if row.query_kind == "image":
                    graph_id = str(row.query_graph_id) if mode == "fusion" else None
                    query_keys.append(items.add(mode, str(row.query_image), instruction, graphs=graphs,
                                                graph_id=graph_id))  # fmt: skip
                else:
                    query_keys.append(items.add("text", str(row.query_text), instruction))
                if row.candidate_kind == "text":
                    candidate_keys.append([items.add("text", str(c), None) for c in row.candidates])
                else:
                    kind = "fusion" if mode == "fusion" else "image"
                    candidate_keys.append([
                        items.add(kind, str(c), None, graphs=graphs, graph_id=str(g) if kind == "fusion" else None)
                        for c, g in zip(row.candidates, row.candidate_graph_ids, strict=True)
                    ])
            vectors, used = _embed_all(model, items, cache, graphs=graphs, image_root=root, batch_size=batch_size)
            per_record = _score_records(query_keys, candidate_keys, subset["correct_idx"].to_numpy(dtype=np.int64),
                                        vectors, tie_tol)  # fmt: skip
            frame = subset[["task", "query_type", "city", "split"]].reset_index(drop=True)
            for key, group in frame.groupby(["task", "query_type", "city", "split"], sort=True):
                pos = group.index.to_numpy()
                part = {k: v[pos] for k, v in per_record.items()}
                summary = {f"hit@{k[4:]}": float(np.mean(v)) for k, v in part.items() if k.startswith("hit@")}
                summary["mrr"] = float(np.mean(part["rr"]))
                summary["mean_rank"] = float(np.mean(part["rank"]))
                intervals = bootstrap_intervals({k: v for k, v in part.items() if k != "inv_c"},
                                                n_resamples=bootstrap, seed=seed, group=(*key, mode))  # fmt: skip
                row_out: dict[str, object] = dict(zip(("task", "query_type", "city", "split"), key, strict=True))
                row_out |= {"mode": mode, "model": name, "n": len(pos), **summary}
                for metric, (lo, hi) in intervals.items():
                    row_out[f"{metric}_lo"], row_out[f"{metric}_hi"] = lo, hi
                row_out["chance_hit@1"] = float(np.mean(part["inv_c"]))
                query_kind = subset["query_kind"].iloc[int(pos[0])]
                row_out["instruction_used"] = bool(used.get("text" if query_kind == "text" else mode, False))
                rows.append(row_out)
        logger.info("evaluated %s: %s cached vectors (%s hits, %s computed)", name, f"{len(cache):,}",
                    f"{cache.hits:,}", f"{cache.misses:,}")  # fmt: skip
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return results.sort_values(list(GROUP_COLUMNS), kind="stable").reset_index(drop=True)


def relative_gains(results: pd.DataFrame, baseline: str = "baseline", *, metrics: Sequence[str] = METRICS) -> (
    pd.DataFrame
):  # fmt: skip
    """
    Gains of every model over ``baseline`` on the same (task, query_type, city, split, mode).

    Returns
    -------
    gains
        Long table: the group columns, ``model``, ``metric``, ``value``, ``baseline_value``, ``abs_gain``
        (``value - baseline_value``) and ``rel_gain_pct`` (``100 * abs_gain / baseline_value``; NaN when the
        baseline is 0). For ``mean_rank`` lower is better, so its gains are sign-flipped (positive = better).

    Raises
    ------
    BenchmarkInputError
        ``baseline`` is not a model in ``results``.
    """
    if baseline not in set(results["model"]):
        msg = f"baseline {baseline!r} is not a model in results (models: {sorted(set(results['model']))})"
        raise BenchmarkInputError(msg)
    keys = ["task", "query_type", "city", "split", "mode"]
    long = results.melt(id_vars=[*keys, "model"], value_vars=list(metrics), var_name="metric", value_name="value")
    base = long[long["model"] == baseline].drop(columns="model").rename(columns={"value": "baseline_value"})
    out = long[long["model"] != baseline].merge(base, on=[*keys, "metric"], how="inner")
    sign = np.where(out["metric"] == "mean_rank", -1.0, 1.0)
    out["abs_gain"] = sign * (out["value"] - out["baseline_value"])
    denominator = out["baseline_value"].where(out["baseline_value"] != 0)
    out["rel_gain_pct"] = 100.0 * out["abs_gain"] / denominator
    return out.sort_values([*keys, "model", "metric"], kind="stable").reset_index(drop=True)
