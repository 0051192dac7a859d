"""Blind scorers: rankings made without the part of the query a task is meant to test.

Every UGBench row is reported beside scorers that cannot know the answer from what the task tests. When one of
them beats chance, the row can be answered by a shortcut and a model's score there says little; the
``benchmark_tasks`` asset fails a blocking check when a blind scorer beats chance by more than
:data:`MAX_EXCESS_OVER_CHANCE` on a headline row (:func:`shortcut_problems`).

Candidate-only (never look at the query):

``blind:longest`` / ``blind:shortest``
    The longest / shortest candidate text first.
``blind:word_prior``
    Centrality: the candidate whose words recur most among the record's other candidates first (the answer of a
    query surrounded by its own distractors shares more with them than any distractor does).
``blind:label_prior``
    How often each candidate text is the correct one in *other* folds of the same task and question type
    (cross-fitted over candidate groups or spatial clusters, so a record's own label never scores it).

Query-text only (the question and instruction, never the image):

``blind:query_overlap``
    Word overlap between the query text and each candidate.

Graph only (``fusion`` rows; the graphs exactly as the record gives them to a model, own or group context):

``blind:graph_names``
    How many names of the graph occur in the candidate (retrieval: of each candidate's graph in the query text).
``blind:graph_rule``
    A rule that reads the graph the way a person would: geolocation / retrieval re-render the location
    description from the graph and compare words; grounding takes the nearest node named by the candidate, the
    image's street, or the distance and direction to the node the question names; perception counts the places
    the dimension is about and compares their rank with each level.

Scores are plain arrays (higher = ranked first); ties are scored at their expected rank like any model's.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ugdata_pipeline.graph.text import COMPASS_WORDS, compass_index
from ugdata_pipeline.seeding import stable_hash
from ugdata_pipeline.ugbench._records import TASK_MODES, FusionGraphs, fusion_graph_refs, normalize_text, row_role

__all__ = [
    "BLIND_SCORERS",
    "CANDIDATE_ONLY",
    "GRAPH_ONLY",
    "MAX_EXCESS_OVER_CHANCE",
    "QUERY_ONLY",
    "blind_scores",
    "shortcut_problems",
]

CANDIDATE_ONLY: tuple[str, ...] = ("blind:longest", "blind:shortest", "blind:word_prior", "blind:label_prior")
QUERY_ONLY: tuple[str, ...] = ("blind:query_overlap",)
GRAPH_ONLY: tuple[str, ...] = ("blind:graph_names", "blind:graph_rule")
BLIND_SCORERS: tuple[str, ...] = (*CANDIDATE_ONLY, *QUERY_ONLY, *GRAPH_ONLY)
#: A blind scorer more than this far above chance (Hit@1 or Hit@5, as a share) marks a row as answerable blind.
MAX_EXCESS_OVER_CHANCE = 0.05
#: Spatial folds of the cross-fitted label prior.
LABEL_PRIOR_FOLDS = 5

_WORD = re.compile(r"[a-z0-9]+")
_DISTANCE = re.compile(r"(\d+(?:\.\d+)?)\s*(km|m)\b")
Describe = Callable[..., str]


def _words(text: str) -> frozenset[str]:
    return _word_set(str(text))


@functools.lru_cache(maxsize=1 << 16)
def _word_set(text: str) -> frozenset[str]:  # memoised: a candidate group's 20 records share their texts
    return frozenset(_WORD.findall(text.lower()))


def _jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _fold(unit: object) -> int:
    return stable_hash(unit, scheme="sha256-le", bits=32) % LABEL_PRIOR_FOLDS


def _label_prior(tasks: pd.DataFrame) -> list[np.ndarray]:
    """
    Cross-fitted P(correct | candidate text) per (task, query type): counts from the other folds.

    Folds are drawn by candidate group where a record has one, else by spatial cluster: the records of a group
    share their candidates, each correct once, so counting a group's other records would make the prior point
    *away* from the answer -- a property of the benchmark's design that no model can see, not a shortcut.
    """
    units = [
        g if isinstance(g, str) and g else f"cluster:{c}"
        for g, c in zip(tasks["group_id"], tasks["cluster"], strict=True)
    ]
    folds = np.asarray([_fold(u) for u in units], dtype=np.int64)
    keys = (tasks["task"].astype(str) + "/" + tasks["query_type"].astype(str)).to_numpy(dtype=object)
    seen: dict[tuple[str, int], Counter[str]] = {}
    right: dict[tuple[str, int], Counter[str]] = {}
    normalized = [[normalize_text(c) for c in cands] for cands in tasks["candidates"]]
    for key, fold, cands, truth in zip(keys, folds, normalized, tasks["correct_idx"], strict=True):
        seen.setdefault((key, fold), Counter()).update(cands)
        right.setdefault((key, fold), Counter())[cands[int(truth)]] += 1
    seen_all: dict[str, Counter[str]] = {}
    right_all: dict[str, Counter[str]] = {}
    for (key, _), counts in seen.items():
        seen_all.setdefault(key, Counter()).update(counts)
    for (key, _), counts in right.items():
        right_all.setdefault(key, Counter()).update(counts)
    out = []
    for key, fold, cands in zip(keys, folds, normalized, strict=True):
        own_seen, own_right = seen[key, fold], right[key, fold]
        # counts of the other folds = all folds less this one
        n = np.asarray([seen_all[key][c] - own_seen[c] for c in cands], dtype=float)
        k = np.asarray([right_all[key][c] - own_right[c] for c in cands], dtype=float)
        out.append((k + 1.0) / (n + 2.0))  # Laplace: an unseen text scores 1/2, ties with the other unseen
    return out


def _word_prior(candidates: Sequence[str]) -> np.ndarray:
    return np.asarray(_word_prior_of(tuple(candidates)))


@functools.lru_cache(maxsize=1 << 12)
def _word_prior_of(candidates: tuple[str, ...]) -> list[float]:
    words = [_words(c) for c in candidates]
    log_frequency = {w: math.log(n) for w, n in Counter(w for ws in words for w in ws).items()}
    # fsum is exact, so the mean does not depend on the (hash-seeded) iteration order of the word sets
    return [math.fsum(log_frequency[w] for w in ws) / len(ws) if ws else 0.0 for ws in words]


def _names_in(text: str, names: Sequence[str]) -> int:
    padded = f" {normalize_text(text)} "
    return sum(1 for n in names if n and f" {n} " in padded)


@dataclass(frozen=True)
class _GraphColumns:
    """The node columns the graph scorers read, converted once per graph (a group graph serves 20 records)."""

    names: list[str]  # normalised, "" where a node has no name
    kinds: list[str]
    distance_m: np.ndarray
    dx_m: np.ndarray
    dy_m: np.ndarray
    rank: np.ndarray

    @classmethod
    def of(cls, graph: tuple[pd.DataFrame, pd.DataFrame]) -> _GraphColumns:
        nodes = graph[0]
        names = [normalize_text(v) if isinstance(v, str) else "" for v in nodes["name"].astype(object).tolist()]
        number = {
            c: pd.to_numeric(nodes[c], errors="coerce").to_numpy(dtype=float)
            for c in ("distance_m", "dx_m", "dy_m", "rank")
        }
        return cls(names, nodes["kind"].astype(str).tolist(), **number)

    def place_names(self) -> list[str]:
        """Normalised names of the graph's named nodes other than the centre (``rank > 0``)."""
        return sorted({n for n, r in zip(self.names, self.rank, strict=True) if n and r > 0})


def _phrase_distance_m(text: str) -> float:
    match = _DISTANCE.search(text)
    if match is None:
        return float("nan")
    value = float(match.group(1))
    return value * 1000.0 if match.group(2) == "km" else value


def _phrase_word(text: str) -> int:
    lowered = text.lower()
    for index, word in sorted(enumerate(COMPASS_WORDS), key=lambda iw: -len(iw[1])):
        if word in lowered:
            return index
    return -1


def _grounding_rule(row: object, graph: _GraphColumns) -> np.ndarray:
    """Answer a grounding question from the graph alone (see the module docstring)."""
    names, dist = graph.names, graph.distance_m
    candidates = list(row.candidates)  # type: ignore[attr-defined]
    qtype = row.query_type  # type: ignore[attr-defined]
    if qtype == "distance_direction":
        question = normalize_text(row.query_text)  # type: ignore[attr-defined]
        named = [i for i, n in enumerate(names) if n and f" {n} " in f" {question} "]
        if not named:
            return np.zeros(len(candidates))
        target = max(named, key=lambda i: len(names[i]))
        dx, dy = float(graph.dx_m[target]), float(graph.dy_m[target])
        true_d, true_word = math.hypot(dx, dy), int(compass_index(math.degrees(math.atan2(dx, dy))))
        scores = []
        for c in candidates:
            d, w = _phrase_distance_m(c), _phrase_word(c)
            angle = min(abs(w - true_word) % 8, 8 - abs(w - true_word) % 8) if w >= 0 else 4
            ratio = abs(math.log(max(d, 1.0) / max(true_d, 1.0))) if math.isfinite(d) else 5.0
            scores.append(-(ratio + angle))
        return np.asarray(scores)
    kinds = graph.kinds
    wanted = {"which_street": {"street"}, "which_crossing": {"crossing"}}.get(qtype, {"poi", "aoi"})
    best: dict[str, float] = {}
    for n, k, d in zip(names, kinds, dist, strict=True):
        if n and k in wanted and math.isfinite(d):
            best[n] = min(best.get(n, math.inf), d)
    return np.asarray([-best.get(normalize_text(c), math.inf) for c in candidates])


_PERCEPTION_GRAPH = {
    "commercial": ({"poi", "aoi"}, {"commercial", "food", "financial"}, 200.0),
    "connectivity": ({"crossing"}, None, 300.0),
    "greenery": ({"aoi"}, {"park", "green"}, 100.0),
}


def _perception_rule(subset: pd.DataFrame, graphs: list[tuple[pd.DataFrame, pd.DataFrame]]) -> list[np.ndarray]:
    """Rank of a graph count among the rows of its dimension, compared with each level's tercile centre."""
    import json

    from ugdata_pipeline.ugbench.perception import LEVELS, STATEMENTS

    dims = [json.loads(m).get("dimension") for m in subset["meta"]]
    counts = np.full(len(subset), np.nan)
    for i, (dim, graph) in enumerate(zip(dims, graphs, strict=True)):
        if dim not in _PERCEPTION_GRAPH:
            continue
        kinds, categories, radius = _PERCEPTION_GRAPH[dim]
        nodes = graph[0]
        keep = nodes["kind"].astype(str).isin(kinds) & (pd.to_numeric(nodes["distance_m"], errors="coerce") <= radius)
        if categories is not None:
            keep &= nodes["category"].astype(str).isin(categories)
        counts[i] = float(keep.sum())
    pct = pd.Series(counts).groupby(pd.Series(dims)).rank(pct=True).to_numpy()
    centre = {"low": 1 / 6, "mid": 1 / 2, "high": 5 / 6}
    level_of = {s: lv for (d, lv), phrasings in STATEMENTS.items() for s in phrasings if lv in LEVELS}
    out = []
    for p, cands in zip(pct, subset["candidates"], strict=True):
        if not np.isfinite(p):
            out.append(np.zeros(len(cands)))
            continue
        out.append(np.asarray([-abs(p - centre.get(level_of.get(c, ""), 2.0)) for c in cands]))
    return out


def blind_scores(
    tasks: pd.DataFrame,
    mode: str,
    *,
    graphs: FusionGraphs | None = None,
    describe: Describe | None = None,
) -> dict[str, list[np.ndarray]]:
    """
    Scores of every blind scorer for the records of ``tasks`` that run in ``mode``.

    Parameters
    ----------
    tasks
        A UGBench tasks table (with ``cluster``); rows whose task does not run in ``mode`` are skipped.
    mode
        ``image``, ``text`` or ``fusion``. Graph-only scorers run in ``fusion`` only, on the graphs exactly as
        evaluation builds them (:func:`~._records.fusion_graph_refs`).
    graphs
        The subgraph index; required for ``fusion``.
    describe
        The location-description renderer, for ``blind:graph_rule`` on geolocation and retrieval (default:
        :func:`ugdata_pipeline.context.describe.describe_subgraph`).

    Returns
    -------
    scores
        ``scorer -> one score array per selected record`` (in table order), one entry per candidate.
    """
    subset = tasks[tasks["task"].map(lambda t: mode in TASK_MODES.get(t, ()))].reset_index(drop=True)
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*CANDIDATE_ONLY, *QUERY_ONLY)}
    for row in subset.itertuples(index=False):
        cands = [str(c) for c in row.candidates]
        lengths = np.asarray([len(c) for c in cands], dtype=float)
        out["blind:longest"].append(lengths)
        out["blind:shortest"].append(-lengths)
        out["blind:word_prior"].append(_word_prior(cands))
        query = _words(f"{row.query_text or ''} {row.instruction or ''}")
        out["blind:query_overlap"].append(np.asarray([_jaccard(query, _words(c)) for c in cands]))
    out["blind:label_prior"] = _label_prior(subset) if len(subset) else []
    if mode != "fusion":
        return out
    if graphs is None:
        msg = "blind graph scorers need the subgraph index (graphs=...) in fusion mode"
        raise ValueError(msg)
    if describe is None:
        from ugdata_pipeline.context.describe import describe_subgraph as describe
    described: dict[str, set[str]] = {}
    columns: dict[str, _GraphColumns] = {}
    named: dict[str, list[str]] = {}

    def columns_of(ref: str) -> _GraphColumns:
        if ref not in columns:
            columns[ref] = _GraphColumns.of(graphs.graph_of(ref))
        return columns[ref]

    def words_of(ref: str) -> set[str]:  # a group graph is shared by 20 records and their candidates
        if ref not in described:
            described[ref] = _words(describe(*graphs.graph_of(ref)))
        return described[ref]

    def names_of(ref: str) -> list[str]:
        if ref not in named:
            named[ref] = columns_of(ref).place_names()
        return named[ref]

    hits: dict[tuple[str, str], int] = {}

    def names_in(text: str, ref: str) -> int:  # the records of a group share both the graph and the texts
        if (text, ref) not in hits:
            hits[text, ref] = _names_in(text, names_of(ref))
        return hits[text, ref]

    names_scores: list[np.ndarray] = []
    rule_scores: list[np.ndarray | None] = []
    query_graphs: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    for row in subset.itertuples(index=False):
        query_ref, candidate_refs = fusion_graph_refs(row)
        cands = [str(c) for c in row.candidates]
        if row.candidate_kind == "image":  # retrieval: each candidate's graph against the query text
            names_scores.append(np.asarray([names_in(row.query_text, ref) for ref in candidate_refs], dtype=float))
            query_words = _words(row.query_text)
            rule_scores.append(np.asarray([_jaccard(query_words, words_of(ref)) for ref in candidate_refs]))
            query_graphs.append((pd.DataFrame(), pd.DataFrame()))
            continue
        graph = graphs.graph_of(str(query_ref))
        query_graphs.append(graph)
        names_scores.append(np.asarray([names_in(c, str(query_ref)) for c in cands], dtype=float))
        if row.task == "geolocation":
            words = words_of(str(query_ref))
            rule_scores.append(np.asarray([_jaccard(words, _words(c)) for c in cands]))
        elif row.task == "grounding":
            rule_scores.append(_grounding_rule(row, columns_of(str(query_ref))))
        else:
            rule_scores.append(None)  # perception: filled below, it ranks counts across records
    perception = [i for i, row in enumerate(subset.itertuples(index=False)) if row.task == "perception"]
    if perception:
        filled = _perception_rule(subset.iloc[perception], [query_graphs[i] for i in perception])
        for i, scores in zip(perception, filled, strict=True):
            rule_scores[i] = scores
    out["blind:graph_names"] = names_scores
    out["blind:graph_rule"] = [
        s if s is not None else np.zeros(len(c)) for s, c in zip(rule_scores, subset["candidates"], strict=True)
    ]
    return out


def shortcut_problems(results: pd.DataFrame, *, max_excess: float = MAX_EXCESS_OVER_CHANCE) -> list[str]:
    """
    Headline rows where a blind scorer beats chance by more than ``max_excess`` (Hit@1 or Hit@5).

    "Beats chance" means beyond noise as well: when the rows carry clustered intervals (``hit@K_lo``), a row is
    flagged only if its point value is more than ``max_excess`` above chance **and** its interval lies above
    chance. A scorer that is exactly at chance by construction (the candidate-only scorers on grouped tasks) has
    no noise at all; the rule matters for small perception rows, where a scorer at chance in expectation can sit
    a few points off it in a given sample. Without intervals the point value alone decides.

    Parameters
    ----------
    results
        Evaluation results with ``kind == "blind"`` rows and the ``chance_hit@1`` / ``chance_hit@5`` columns.

    Returns
    -------
    problems
        One line per offending (row, scorer), naming the figure and chance; empty when the benchmark is clean.
    """
    problems = []
    blind = results[results["kind"] == "blind"]
    for row in blind.to_dict("records"):
        if row_role(row["task"], row["mode"]) != "headline":
            continue
        for metric in ("hit@1", "hit@5"):
            value, chance = float(row[metric]), float(row[f"chance_{metric}"])
            lower = float(row.get(f"{metric}_lo", float("nan")))
            beyond_noise = not math.isfinite(lower) or lower > chance
            if value - chance > max_excess and beyond_noise:
                where = f"{row['task']}/{row['query_type']}/{row['city']}/{row['split']}/{row['mode']}"
                problems.append(
                    f"{where}: {row['model']} scores {metric} {100 * value:.1f} against chance "
                    f"{100 * chance:.1f} (+{100 * (value - chance):.1f} points, n={row['n']})"
                )
    return problems
