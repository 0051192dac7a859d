"""Honest uncertainty for UGBench: spatial clusters, a clustered bootstrap, paired model differences, several seeds.

**Why cluster.** Benchmark records are not independent draws: street-view images come in runs along a street, and
a test split may hold a few hundred images on a couple of dozen streets of one strip. Neighbouring records share
scenery, candidates and difficulty (spatial autocorrelation), so a model that fails on one block tends to fail on
all of it. Resampling *records* treats each image as new evidence and understates the uncertainty (2-3x on the
splits we audited). :func:`cluster_bootstrap_intervals` resamples whole **clusters** instead: each resample draws
as many clusters as there are, with replacement, and averages the metric over all records of the drawn clusters
(a cluster drawn twice counts twice). That is the standard cluster (block) bootstrap; it is valid when clusters
are roughly independent of each other, and it reduces to the record bootstrap when every cluster holds one record.
:func:`spatial_clusters` makes such clusters from coordinates: ~250 m square blocks of a fixed UTM grid.
With few clusters (under ~20) any clustered interval is itself noisy; with a single cluster it degenerates to the
point value, because every resample redraws the same records -- a sign that the data cannot speak to
generalisation across places, not of certainty.

**Why pair.** Two models scored on the *same* records share the records' difficulty: per-record scores of a good and
a slightly better model are strongly correlated. Comparing their two marginal intervals (do they overlap?) ignores
that and hides real, consistent gains. :func:`paired_differences` bootstraps the per-record difference ``a - b``
under one cluster draw, so the shared difficulty cancels and only the disagreement between models is uncertain.

**Several seeds.** :func:`paired_differences_over_seeds` and :func:`seed_summary` average a model's per-record
metrics over its training seeds before resampling clusters (the same cluster draw for every seed), and report the
spread across seeds separately: the interval speaks to *which places* were sampled, the seed spread to *which
training run*.

All resampling uses ``numpy.random.default_rng(group_seed(seed, *group))``, so every interval is reproducible on
its own, and is vectorised: a resample is a row of cluster counts, and means come from one matrix product with the
per-cluster sums and sizes (1000 resamples over 2,000 records in 100 clusters take about a millisecond).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt
from pyproj import Transformer

from ugdata_pipeline.graph.crs import utm_epsg
from ugdata_pipeline.seeding import stable_seed

PerRecord = Mapping[str, npt.NDArray[np.float64]]
Verdict = Literal["a better", "b better", "no difference"]

#: Summary metrics where a lower value is better (all others: higher is better).
LOWER_IS_BETTER: frozenset[str] = frozenset({"mean_rank"})
#: Resample rows processed at once are capped so that ``rows * clusters`` stays near this (bounded memory).
_CHUNK_CELLS = 1 << 22


def group_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from ``seed`` and a group's name, stable across runs and platforms."""
    return stable_seed(seed, *names, scheme="sha256-le")


# --- spatial clusters ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


def spatial_clusters(lon: npt.ArrayLike, lat: npt.ArrayLike, *, cell_m: float = 250.0) -> npt.NDArray[np.str_]:
    """
    Label each point with the ~``cell_m`` square block of a fixed UTM grid it falls in.

    Each point is projected into **its own** standard 6-degree UTM zone (WGS84, EPSG:326zz north of the equator,
    327zz south; the Norway/Svalbard exceptions are not applied -- this is only a grid) and its block is
    ``floor(easting / cell_m), floor(northing / cell_m)`` from the zone's fixed false origin. UTM rather than an
    equirectangular approximation around the data's mean latitude, because the grid must not depend on which
    other points are passed: the same coordinates always get the same id, so ids can be compared across splits,
    tasks and runs. The price is that blocks are cut at zone borders and at the equator, which only splits a
    block in two.

    Parameters
    ----------
    lon, lat
        Longitudes and latitudes in decimal degrees (EPSG:4326), 1-D of the same length.
    cell_m
        Side of a block in metres (> 0).

    Returns
    -------
    ids
        ``(N,)`` strings ``"<zone><N|S>:<column>:<row>"``, e.g. ``"33N:1234:5678"`` (column and row count
        ``cell_m`` blocks from the zone's origin, so they depend on ``cell_m``).

    Raises
    ------
    ValueError
        On NaN or out-of-range coordinates, mismatched shapes, or a non-positive ``cell_m``.
    """
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        msg = f"lon and lat must be 1-D arrays of the same length, got shapes {x.shape} and {y.shape}"
        raise ValueError(msg)
    if not (np.isfinite(cell_m) and cell_m > 0):
        msg = f"cell_m must be a positive number of metres, got {cell_m!r}"
        raise ValueError(msg)
    bad = np.isnan(x) | np.isnan(y)
    if bad.any():
        msg = (
            f"lon/lat hold NaN at {int(bad.sum())} of {len(x)} points (first at index {int(np.argmax(bad))}); "
            "records without a position cannot be clustered; drop them or give them a cluster yourself"
        )
        raise ValueError(msg)
    out_of_range = (np.abs(x) > 180) | (np.abs(y) > 90)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        msg = f"lon/lat out of range (|lon| <= 180, |lat| <= 90) at index {i}: ({x[i]}, {y[i]}); are they swapped?"
        raise ValueError(msg)
    epsg = utm_epsg(x, y)
    ids = np.empty(len(x), dtype=object)
    for code in sorted(set(epsg.tolist())):  # a handful of zones at most
        sel = np.flatnonzero(epsg == code)
        z, is_north = code % 100, code < 32700
        east, northing = _to_utm(code).transform(x[sel], y[sel])
        col = np.floor(np.asarray(east) / cell_m)
        row = np.floor(np.asarray(northing) / cell_m)
        if not (np.isfinite(col).all() and np.isfinite(row).all()):
            msg = f"UTM zone {z}{'N' if is_north else 'S'} cannot project some points (too close to a pole?)"
            raise ValueError(msg)
        tag = f"{z}{'N' if is_north else 'S'}"
        ids[sel] = [
            f"{tag}:{c}:{r}" for c, r in zip(col.astype(np.int64).tolist(), row.astype(np.int64).tolist(), strict=True)
        ]
    return ids.astype(str) if len(ids) else np.empty(0, dtype=str)


# --- the clustered bootstrap --------------------------------------------------------------------------------------


def _check_resampling(n_resamples: int, level: float) -> None:
    if not 0 < level < 1:
        msg = f"level must be in (0, 1), got {level!r}"
        raise ValueError(msg)
    if n_resamples < 0:
        msg = f"n_resamples must be >= 0, got {n_resamples!r}"
        raise ValueError(msg)


def _summary_matrix(per_record: PerRecord, what: str = "per_record") -> tuple[list[str], npt.NDArray[np.float64]]:
    """Summary names (``hit@K``..., ``mrr``, ``mean_rank``) and the ``(R, M)`` per-record matrix behind them."""
    missing = {"rr", "rank"} - set(per_record)
    if missing:
        msg = f"{what} lacks {sorted(missing)}; pass the output of per_record_metrics"
        raise ValueError(msg)
    keys = [k for k in per_record if k.startswith("hit@")] + ["rr", "rank"]  # the order bootstrap_intervals uses
    columns = [np.asarray(per_record[k], dtype=np.float64) for k in keys]
    if any(c.ndim != 1 or c.shape != columns[0].shape for c in columns):
        msg = f"{what} arrays must be 1-D of one length, got shapes {[c.shape for c in columns]}"
        raise ValueError(msg)
    names = [{"rr": "mrr", "rank": "mean_rank"}.get(k, k) for k in keys]
    return names, np.stack(columns, axis=1)


def _cluster_codes(clusters: npt.ArrayLike, n_records: int) -> tuple[npt.NDArray[np.int64], int]:
    """Cluster labels as codes ``0..G-1`` in sorted-label order (so results do not depend on record order)."""
    labels = np.asarray(clusters)
    if labels.shape != (n_records,):
        msg = f"clusters must hold one label per record ({n_records}), got shape {labels.shape}"
        raise ValueError(msg)
    uniq, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), len(uniq)


def _resampled_means(
    values: npt.NDArray[np.float64],
    codes: npt.NDArray[np.int64],
    n_clusters: int,
    n_resamples: int,
    seed: int,
) -> npt.NDArray[np.float64]:
    """``(B, M)`` means of ``values`` ``(R, M)`` over all records of ``n_clusters`` clusters drawn with replacement."""
    sums = np.stack([np.bincount(codes, weights=col, minlength=n_clusters) for col in values.T], axis=1)
    sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n_clusters)
    out = np.empty((n_resamples, values.shape[1]))
    for start in range(0, n_resamples, rows):
        b = min(rows, n_resamples - start)
        picks = rng.integers(0, n_clusters, size=(b, n_clusters))
        # times each cluster is drawn in each resample: one bincount over row-offset cluster codes
        counts = np.bincount((picks + (np.arange(b) * n_clusters)[:, None]).ravel(), minlength=b * n_clusters)
        counts = counts.reshape(b, n_clusters).astype(np.float64)
        out[start : start + b] = (counts @ sums) / (counts @ sizes)[:, None]  # every drawn cluster has >= 1 record
    # a mean of records lies within their range; clipping removes last-bit rounding (1.0000000000000002 -> 1.0)
    return np.clip(out, values.min(axis=0), values.max(axis=0))


def _intervals(
    values: npt.NDArray[np.float64],
    codes: npt.NDArray[np.int64],
    n_clusters: int,
    *,
    n_resamples: int,
    seed: int,
    level: float,
    group: Sequence[object],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Percentile interval bounds ``(lo, hi)``, each ``(M,)``, of the clustered bootstrap of column means."""
    if n_resamples == 0 or len(values) == 0:
        nan = np.full(values.shape[1], np.nan)
        return nan, nan.copy()
    means = _resampled_means(values, codes, n_clusters, n_resamples, group_seed(seed, *group))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def cluster_bootstrap_intervals(
    per_record: PerRecord,
    clusters: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    group: Sequence[object] = (),
) -> dict[str, tuple[float, float]]:
    """
    Percentile bootstrap intervals of the summary metrics, resampling **clusters** of records with replacement.

    Each resample draws as many clusters as there are (with replacement) and averages over all records of the
    drawn clusters, a cluster drawn twice counting twice. With one record per cluster this is the record
    bootstrap of :func:`~ugdata_pipeline.ugbench.metrics.bootstrap_intervals` (equal in distribution, not draw by
    draw); with a single cluster every resample is the full data and the interval degenerates to the point value
    -- read that as "no information about other places", not as certainty.

    Parameters
    ----------
    per_record
        Output of :func:`~ugdata_pipeline.ugbench.metrics.per_record_metrics` for one group of records (other
        keys are ignored).
    clusters
        ``(R,)`` cluster label of each record (e.g. :func:`spatial_clusters`, or street ids); any sortable labels.
    n_resamples
        Number of bootstrap resamples; 0 gives ``(nan, nan)`` intervals, as does an empty group.
    seed
        Base seed; combined with ``group`` through :func:`group_seed`.
    level
        Coverage of the interval, in (0, 1).
    group
        Names identifying the group (task, city, ...), mixed into the seed.

    Returns
    -------
    intervals
        ``{"hit@1": (lo, hi), ..., "mrr": (lo, hi), "mean_rank": (lo, hi)}``, the keys of ``bootstrap_intervals``.
    """
    _check_resampling(n_resamples, level)
    names, values = _summary_matrix(per_record)
    codes, n_clusters = _cluster_codes(clusters, len(values))
    lo, hi = _intervals(values, codes, n_clusters, n_resamples=n_resamples, seed=seed, level=level, group=group)
    return {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(names)}


# --- paired differences and seeds ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """
    One metric of model ``a`` against model ``b`` on the same records.

    Attributes
    ----------
    mean_a, mean_b
        The metric of each model (mean over records; over seeds too where there are several).
    diff
        ``mean_a - mean_b``, for every metric -- also for ``mean_rank``, where lower is better, so a negative
        ``diff`` there favours ``a``.
    lo, hi
        Clustered percentile bootstrap interval of ``diff`` (NaN without resamples).
    verdict
        ``"a better"`` or ``"b better"`` when the interval excludes zero (in the metric's better direction),
        ``"no difference"`` otherwise (also when there is no interval).
    """

    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class SeedPairedDifference(PairedDifference):
    """
    A :class:`PairedDifference` over several training seeds; ``diff``, ``lo`` and ``hi`` are of the seed average.

    Attributes
    ----------
    per_seed
        ``mean_a - mean_b`` of each seed pair (``b`` broadcast when it has one seed), for a spread column.
    """

    per_seed: tuple[float, ...] = ()

    @property
    def seed_sd(self) -> float:
        """Sample SD (``ddof=1``) of the per-seed differences; NaN with one seed."""
        return _sd(self.per_seed)

    @property
    def seed_range(self) -> tuple[float, float]:
        """``(min, max)`` of the per-seed differences."""
        return min(self.per_seed), max(self.per_seed)


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """
    One metric of one model trained with several seeds, all evaluated on the same records.

    Attributes
    ----------
    mean
        Mean over seeds of the metric (each seed's metric being a mean over records).
    sd
        Sample SD (``ddof=1``) across seeds; NaN with one seed.
    lo, hi
        Clustered bootstrap interval of the seed-averaged metric (places resampled, seeds held fixed).
    per_seed
        The metric of each seed.
    """

    mean: float
    sd: float
    lo: float
    hi: float
    per_seed: tuple[float, ...]

    @property
    def seed_range(self) -> tuple[float, float]:
        """``(min, max)`` of the metric across seeds."""
        return min(self.per_seed), max(self.per_seed)


def _sd(values: Sequence[float]) -> float:
    # np.std(ddof=1) on one value warns (and the test suite turns warnings into errors); NaN is the honest answer
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _verdict(metric: str, lo: float, hi: float) -> Verdict:
    # NaN bounds compare False both ways: no interval, no claim
    if lo > 0:
        return "b better" if metric in LOWER_IS_BETTER else "a better"
    if hi < 0:
        return "a better" if metric in LOWER_IS_BETTER else "b better"
    return "no difference"


def _stack_seeds(by_seed: Sequence[PerRecord], what: str) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Summary names and the ``(S, R, M)`` per-record values of every seed, checked to cover the same records."""
    if isinstance(by_seed, Mapping) or len(by_seed) == 0:
        msg = f"{what} must be a non-empty sequence of per_record dicts, one per seed"
        raise ValueError(msg)
    stacked = [_summary_matrix(p, f"{what}[{i}]") for i, p in enumerate(by_seed)]
    names = stacked[0][0]
    if any(n != names for n, _ in stacked) or any(v.shape != stacked[0][1].shape for _, v in stacked):
        msg = (
            f"{what} seeds disagree on metrics or record count: "
            f"{[(n, v.shape[0]) for n, v in stacked]}; every seed must score the same records"
        )
        raise ValueError(msg)
    values = np.stack([v for _, v in stacked])
    if values.shape[1] == 0:
        msg = f"{what} holds no records; there is nothing to compare"
        raise ValueError(msg)
    return names, values


def _paired(
    a_by_seed: Sequence[PerRecord],
    b_by_seed: Sequence[PerRecord],
    clusters: npt.ArrayLike,
    *,
    n_resamples: int,
    seed: int,
    level: float,
    group: Sequence[object],
) -> dict[str, SeedPairedDifference]:
    _check_resampling(n_resamples, level)
    names_a, a = _stack_seeds(a_by_seed, "a")
    names_b, b = _stack_seeds(b_by_seed, "b")
    if names_a != names_b or a.shape[1] != b.shape[1]:
        msg = (
            f"a and b must be aligned (same records, same order, same metrics), got {a.shape[1]} records with "
            f"{names_a} against {b.shape[1]} records with {names_b}"
        )
        raise ValueError(msg)
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        msg = f"a has {len(a)} seeds and b {len(b)}; pair them one to one, or give one side a single seed"
        raise ValueError(msg)
    codes, n_clusters = _cluster_codes(clusters, a.shape[1])
    diffs = a - b  # (S, R, M), the single-seed side broadcast
    lo, hi = _intervals(
        diffs.mean(axis=0), codes, n_clusters, n_resamples=n_resamples, seed=seed, level=level, group=group
    )
    per_seed = diffs.mean(axis=1)  # (S, M)
    mean_a, mean_b = a.mean(axis=(0, 1)), b.mean(axis=(0, 1))
    return {
        name: SeedPairedDifference(
            mean_a=float(mean_a[j]),
            mean_b=float(mean_b[j]),
            diff=float(per_seed[:, j].mean()),
            lo=float(lo[j]),
            hi=float(hi[j]),
            verdict=_verdict(name, float(lo[j]), float(hi[j])),
            per_seed=tuple(float(v) for v in per_seed[:, j]),
        )
        for j, name in enumerate(names_a)
    }


def paired_differences(
    per_record_a: PerRecord,
    per_record_b: PerRecord,
    clusters: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    group: Sequence[object] = (),
) -> dict[str, PairedDifference]:
    """
    Model ``a`` against model ``b`` on the same records: the difference of each metric and its clustered interval.

    *Paired* means both models are resampled together: each bootstrap resample draws one set of clusters and
    takes the mean of the per-record difference ``a - b`` over it. Record difficulty shared by both models cancels,
    so a small but consistent gain is detected where two overlapping marginal intervals would hide it.

    Parameters
    ----------
    per_record_a, per_record_b
        :func:`~ugdata_pipeline.ugbench.metrics.per_record_metrics` of each model on the same records, in the same
        order.
    clusters
        ``(R,)`` cluster label of each record (see :func:`cluster_bootstrap_intervals`).
    n_resamples, seed, level, group
        As for :func:`cluster_bootstrap_intervals`.

    Returns
    -------
    differences
        ``{"hit@1": PairedDifference, ..., "mrr": ..., "mean_rank": ...}``; ``diff = a - b`` throughout, so for
        ``mean_rank`` (lower is better) a negative difference favours ``a``, and ``verdict`` accounts for that.

    Raises
    ------
    ValueError
        When the two models' records or metrics do not line up, or there are no records.
    """
    out = _paired(
        [per_record_a], [per_record_b], clusters, n_resamples=n_resamples, seed=seed, level=level, group=group
    )
    return {k: PairedDifference(v.mean_a, v.mean_b, v.diff, v.lo, v.hi, v.verdict) for k, v in out.items()}


def paired_differences_over_seeds(
    a_by_seed: Sequence[PerRecord],
    b_by_seed: Sequence[PerRecord],
    clusters: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    group: Sequence[object] = (),
) -> dict[str, SeedPairedDifference]:
    """
    :func:`paired_differences` for models trained with several seeds, each seed scored on the same records.

    Seed ``i`` of ``a`` is paired with seed ``i`` of ``b``; a side with a single entry (a blind scorer, a model
    trained once) is paired with every seed of the other. The point estimate is the mean over seed pairs of the
    difference; the interval resamples clusters of the seed-averaged per-record difference, which is the same
    cluster draw applied to every seed. It covers the sampling of places for these trained models, not the
    variability of a new training run: that is ``per_seed`` (and ``seed_sd`` / ``seed_range``), to be reported
    beside it.

    Parameters
    ----------
    a_by_seed, b_by_seed
        Per-seed :func:`~ugdata_pipeline.ugbench.metrics.per_record_metrics`, all on the same records in the same
        order; equal lengths, or one of them of length 1.
    clusters, n_resamples, seed, level, group
        As for :func:`paired_differences`.

    Returns
    -------
    differences
        ``{metric: SeedPairedDifference}``.

    Raises
    ------
    ValueError
        On misaligned records or metrics, empty seed lists, or seed counts that cannot be paired.
    """
    return _paired(a_by_seed, b_by_seed, clusters, n_resamples=n_resamples, seed=seed, level=level, group=group)


def seed_summary(
    per_record_by_seed: Sequence[PerRecord],
    clusters: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    group: Sequence[object] = (),
) -> dict[str, SeedSummary]:
    """
    One model over several training seeds: mean and SD across seeds, and a clustered interval of the seed average.

    Parameters
    ----------
    per_record_by_seed
        Per-seed :func:`~ugdata_pipeline.ugbench.metrics.per_record_metrics`, all on the same records in the same
        order.
    clusters, n_resamples, seed, level, group
        As for :func:`cluster_bootstrap_intervals`.

    Returns
    -------
    summary
        ``{metric: SeedSummary}``; with one seed, ``mean`` and ``lo``/``hi`` are those of
        :func:`cluster_bootstrap_intervals` and ``sd`` is NaN.
    """
    _check_resampling(n_resamples, level)
    names, values = _stack_seeds(per_record_by_seed, "per_record_by_seed")
    codes, n_clusters = _cluster_codes(clusters, values.shape[1])
    lo, hi = _intervals(
        values.mean(axis=0), codes, n_clusters, n_resamples=n_resamples, seed=seed, level=level, group=group
    )
    per_seed = values.mean(axis=1)  # (S, M)
    return {
        name: SeedSummary(
            mean=float(per_seed[:, j].mean()),
            sd=_sd(per_seed[:, j].tolist()),
            lo=float(lo[j]),
            hi=float(hi[j]),
            per_seed=tuple(float(v) for v in per_seed[:, j]),
        )
        for j, name in enumerate(names)
    }
