"""Ranking metrics of UGBench: Hit@K, MRR and mean rank, with bootstrap confidence intervals.

Every benchmark record has exactly one correct candidate. Its **rank** among the record's candidates follows
from the scores (higher is better):

* ``h`` = number of candidates scoring strictly higher than the correct one;
* ``t`` = number of *other* candidates scoring the same (within ``tie_tol``, absolute).

**Ties are broken uniformly at random, in expectation.** The correct candidate's rank is then uniform on
``{h + 1, ..., h + t + 1}``, and every metric is its expectation under that draw, computed exactly:

* ``rank`` (mean rank) = ``h + 1 + t / 2``;
* ``hit@K`` = ``P(rank <= K)`` = ``clip((K - h) / (t + 1), 0, 1)``;
* ``rr`` (reciprocal rank, averaged to MRR) = ``(H(h + t + 1) - H(h)) / (t + 1)`` with ``H`` the harmonic numbers.

So a model that gives every candidate the same score gets exactly chance (Hit@1 = 1/C, mean rank = (C + 1) / 2),
never the optimistic 1 nor the pessimistic C, and results do not depend on candidate order. Without ties the
rules reduce to the usual ``1[rank <= K]`` and ``1 / rank``.

Chance: :func:`chance_levels` gives the metrics of a random ranking (what the all-tie rule above yields), the
yardstick for blind scorers and models alike.

**Uncertainty.** :func:`bootstrap_intervals` resamples records with replacement (``numpy.random.default_rng``,
seeded from ``seed`` and the group's name, so each group's interval is reproducible on its own) and reports the
2.5 / 97.5 percentiles. Records are not independent, though: images come in runs along streets, and neighbours
share scenery, candidates and difficulty (spatial autocorrelation), so the record bootstrap understates the
uncertainty (2-3x on the splits audited). The functions of :mod:`.stats` do better:

* :func:`.stats.spatial_clusters` labels records with ~250 m blocks of a fixed UTM grid;
* :func:`.stats.cluster_bootstrap_intervals` resamples those clusters, not records (same output as
  ``bootstrap_intervals``);
* :func:`.stats.paired_differences` compares two models on the same records by bootstrapping the per-record
  difference under one cluster draw ("paired": difficulty shared by both models cancels, so consistent small gains
  show);
* :func:`.stats.paired_differences_over_seeds` and :func:`.stats.seed_summary` do the same for models trained with
  several seeds, reporting the spread across seeds beside the interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ugdata_pipeline.ugbench.stats import group_seed

__all__ = [
    "HIT_KS",
    "METRICS",
    "TIE_TOL",
    "RankCounts",
    "bootstrap_intervals",
    "chance_levels",
    "per_record_metrics",
    "rank_counts",
    "summarize",
]

#: The K of Hit@K reported everywhere (the reference's ``1,3,5,10``).
HIT_KS: tuple[int, ...] = (1, 3, 5, 10)
#: Metric column names, in report order.
METRICS: tuple[str, ...] = (*(f"hit@{k}" for k in HIT_KS), "mrr", "mean_rank")
#: Scores closer than this (absolute) count as a tie; float32 cosine scores differ by ~1e-7 from rounding alone.
TIE_TOL = 1e-6


@dataclass(frozen=True, slots=True)
class RankCounts:
    """
    Where the correct candidate stands in each record.

    Attributes
    ----------
    higher
        ``(R,)`` int, candidates scoring strictly higher than the correct one.
    ties
        ``(R,)`` int, other candidates scoring the same (within the tie tolerance).
    n_candidates
        ``(R,)`` int, valid candidates per record (the correct one included).
    """

    higher: npt.NDArray[np.int64]
    ties: npt.NDArray[np.int64]
    n_candidates: npt.NDArray[np.int64]


def rank_counts(
    scores: npt.ArrayLike, correct_idx: npt.ArrayLike, *, valid: npt.ArrayLike | None = None, tie_tol: float = TIE_TOL
) -> RankCounts:
    """
    Count candidates above and level with the correct one, for a batch of records at once.

    Parameters
    ----------
    scores
        ``(R, C)`` similarity scores (higher = better); records with fewer candidates are padded.
    correct_idx
        ``(R,)`` column of the correct candidate in each row.
    valid
        ``(R, C)`` bool, ``False`` on padding; default all valid.
    tie_tol
        Absolute score difference up to which two candidates tie (``>= 0``).

    Returns
    -------
    RankCounts
        ``higher``, ``ties`` and ``n_candidates`` per record.

    Raises
    ------
    ValueError
        On mismatched shapes, a ``correct_idx`` out of range or on padding, NaN scores, or a negative tolerance.
    """
    score = np.asarray(scores, dtype=np.float64)
    if score.ndim != 2:
        msg = f"scores must be a 2-D (records, candidates) array, got shape {score.shape}"
        raise ValueError(msg)
    n_rec, n_cand = score.shape
    correct = np.asarray(correct_idx, dtype=np.int64).reshape(-1)
    if correct.shape != (n_rec,):
        msg = f"correct_idx must hold one index per record ({n_rec}), got shape {correct.shape}"
        raise ValueError(msg)
    mask = np.ones_like(score, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != score.shape:
        msg = f"valid must have the shape of scores {score.shape}, got {mask.shape}"
        raise ValueError(msg)
    if not tie_tol >= 0:
        msg = f"tie_tol must be >= 0, got {tie_tol!r}"
        raise ValueError(msg)
    if n_rec and ((correct < 0) | (correct >= n_cand)).any():
        msg = f"correct_idx must lie in [0, {n_cand}), got values {sorted(set(correct.tolist()))[:5]}"
        raise ValueError(msg)
    rows = np.arange(n_rec)
    if n_rec and not mask[rows, correct].all():
        msg = "correct_idx points at padding (valid == False) in some records; fix the candidate mask"
        raise ValueError(msg)
    if np.isnan(score[mask]).any():
        msg = "scores hold NaN for valid candidates; check the embeddings (a NaN vector scores NaN)"
        raise ValueError(msg)
    target = score[rows, correct][:, None]
    higher = ((score > target + tie_tol) & mask).sum(axis=1)
    level = ((np.abs(score - target) <= tie_tol) & mask).sum(axis=1) - 1  # minus the correct one itself
    return RankCounts(higher.astype(np.int64), level.astype(np.int64), mask.sum(axis=1).astype(np.int64))


def per_record_metrics(counts: RankCounts, *, ks: Sequence[int] = HIT_KS) -> dict[str, npt.NDArray[np.float64]]:
    """
    Expected Hit@K, reciprocal rank and rank of each record under random tie-breaking (module docstring).

    Returns
    -------
    metrics
        ``{"hit@1": (R,), ..., "rr": (R,), "rank": (R,)}`` as float64 arrays.
    """
    h = counts.higher.astype(np.float64)
    t = counts.ties.astype(np.float64)
    out: dict[str, npt.NDArray[np.float64]] = {}
    for k in ks:
        out[f"hit@{k}"] = np.clip((k - h) / (t + 1.0), 0.0, 1.0)
    top = int((counts.higher + counts.ties).max(initial=0)) + 1
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])  # harmonic[n] = H(n)
    out["rr"] = (harmonic[counts.higher + counts.ties + 1] - harmonic[counts.higher]) / (t + 1.0)
    out["rank"] = h + 1.0 + t / 2.0
    return out


def summarize(per_record: dict[str, npt.NDArray[np.float64]]) -> dict[str, float]:
    """Means over records: ``hit@K``, ``mrr`` (mean of ``rr``) and ``mean_rank`` (mean of ``rank``)."""
    out = {name: float(np.mean(values)) for name, values in per_record.items() if name.startswith("hit@")}
    out["mrr"] = float(np.mean(per_record["rr"]))
    out["mean_rank"] = float(np.mean(per_record["rank"]))
    return out


def chance_levels(n_candidates: npt.ArrayLike, *, ks: Sequence[int] = HIT_KS) -> dict[str, float]:
    """
    Expected metrics of a uniformly random ranking, averaged over records.

    A record with ``C`` candidates has the correct one at a uniform rank in ``1..C``: ``hit@K = min(K, C) / C``,
    reciprocal rank ``H(C) / C`` (``H`` the harmonic numbers) and rank ``(C + 1) / 2`` -- exactly what the tie rule
    gives a model that scores every candidate the same.

    Parameters
    ----------
    n_candidates
        ``(R,)`` candidates per record (``>= 1``), e.g. ``RankCounts.n_candidates``.
    ks
        The K of Hit@K.

    Returns
    -------
    chance
        ``{"hit@1": ..., "mrr": ..., "mean_rank": ...}``, the keys of :func:`summarize`.
    """
    c = np.asarray(n_candidates)
    if c.ndim != 1 or len(c) == 0:
        msg = f"n_candidates must be a non-empty 1-D array, got shape {c.shape}"
        raise ValueError(msg)
    if not np.issubdtype(c.dtype, np.integer) and not np.array_equal(c, np.round(c)):
        msg = "n_candidates must be whole numbers of candidates"
        raise ValueError(msg)
    c = c.astype(np.int64)
    if (c < 1).any():
        msg = f"every record needs at least one candidate, got n_candidates down to {int(c.min())}"
        raise ValueError(msg)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, int(c.max()) + 1))])  # harmonic[n] = H(n)
    out = {f"hit@{k}": float(np.mean(np.minimum(k, c) / c)) for k in ks}
    out["mrr"] = float(np.mean(harmonic[c] / c))
    out["mean_rank"] = float(np.mean((c + 1) / 2))
    return out


def bootstrap_intervals(
    per_record: dict[str, npt.NDArray[np.float64]],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    group: Sequence[object] = (),
) -> dict[str, tuple[float, float]]:
    """
    Percentile bootstrap intervals of the summary metrics, resampling records with replacement.

    Parameters
    ----------
    per_record
        Output of :func:`per_record_metrics` for one group of records.
    n_resamples
        Number of bootstrap resamples; 0 gives ``(nan, nan)`` intervals.
    seed
        Base seed; combined with ``group`` through :func:`group_seed`, so the same inputs give the same intervals.
    level
        Coverage of the interval, in (0, 1).
    group
        Names identifying the group (task, city, ...), mixed into the seed.

    Returns
    -------
    intervals
        ``{"hit@1": (lo, hi), ..., "mrr": (lo, hi), "mean_rank": (lo, hi)}``.
    """
    if not 0 < level < 1:
        msg = f"level must be in (0, 1), got {level!r}"
        raise ValueError(msg)
    if n_resamples < 0:
        msg = f"n_resamples must be >= 0, got {n_resamples!r}"
        raise ValueError(msg)
    names = {**{k: k for k in per_record if k.startswith("hit@")}, "rr": "mrr", "rank": "mean_rank"}
    n = len(per_record["rr"])
    if n_resamples == 0 or n == 0:
        return {out: (float("nan"), float("nan")) for out in names.values()}
    rng = np.random.default_rng(group_seed(seed, *group))
    picks = rng.integers(0, n, size=(n_resamples, n))
    alpha = (1.0 - level) / 2.0
    intervals = {}
    for key, out in names.items():
        means = per_record[key][picks].mean(axis=1)
        lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
        intervals[out] = (float(lo), float(hi))
    return intervals
