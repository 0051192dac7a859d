"""Spatial clusters, the clustered bootstrap, paired model differences, several seeds, and chance levels."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from ugdata_pipeline.ugbench.metrics import (
    RankCounts,
    bootstrap_intervals,
    chance_levels,
    per_record_metrics,
    summarize,
)
from ugdata_pipeline.ugbench.stats import (
    cluster_bootstrap_intervals,
    paired_differences,
    paired_differences_over_seeds,
    seed_summary,
    spatial_clusters,
)

N_CAND = 20


def from_ranks(ranks) -> dict[str, np.ndarray]:
    """Per-record metrics of records whose correct candidate sits at ``ranks`` (no ties) among 20."""
    r = np.asarray(ranks, dtype=np.int64)
    return per_record_metrics(RankCounts(r - 1, np.zeros_like(r), np.full_like(r, N_CAND)))


def width(interval: tuple[float, float]) -> float:
    return interval[1] - interval[0]


# --- spatial_clusters ---------------------------------------------------------------------------------------------


def block_centre(lon: float, lat: float, cell_m: float = 250.0) -> tuple[Transformer, float, float]:
    """The UTM 35N transformer and the metric centre of the 250 m block holding (lon, lat), away from its edges."""
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32635", always_xy=True)
    x, y = to_utm.transform(lon, lat)
    return to_utm, (math.floor(x / cell_m) + 0.5) * cell_m, (math.floor(y / cell_m) + 0.5) * cell_m


def test_spatial_clusters_join_near_points_and_split_far_ones():
    to_utm, x, y = block_centre(24.94, 60.17)  # Helsinki, UTM 35N
    east = np.array([x - 5.0, x + 5.0, x + 400.0, x])
    north = np.array([y, y, y, y - 400.0])
    lon, lat = to_utm.transform(east, north, direction="INVERSE")
    ids = spatial_clusters(lon, lat)
    assert ids[0] == ids[1]  # 10 m apart, both inside the block
    assert len(set(ids[[0, 2, 3]])) == 3  # 400 m east or south is another block
    assert all(re.fullmatch(r"35N:\d+:\d+", i) for i in ids)
    assert ids[0] == f"35N:{math.floor(x / 250)}:{math.floor(y / 250)}"  # the grid starts at the zone's origin
    # 250 m blocks nest in 1 km blocks (both grids start at the zone's origin)
    big = spatial_clusters(lon, lat, cell_m=1000.0)
    assert big[0] == big[1] == f"35N:{math.floor(x / 1000)}:{math.floor(y / 1000)}"


def test_spatial_clusters_ids_do_not_depend_on_the_other_points():
    rng = np.random.default_rng(1)
    lon = 24.9 + rng.uniform(0, 0.02, 50)
    lat = 60.15 + rng.uniform(0, 0.01, 50)
    alone = spatial_clusters(lon, lat)
    # far-away points in other zones and hemispheres, shuffled in front
    extra_lon = np.array([-70.65, 151.2, 13.4, 179.99, -180.0])
    extra_lat = np.array([-33.45, -33.87, 52.52, 0.0, -0.1])
    mixed = spatial_clusters(np.concatenate([extra_lon, lon[::-1]]), np.concatenate([extra_lat, lat[::-1]]))
    np.testing.assert_array_equal(mixed[len(extra_lon) :][::-1], alone)
    assert mixed[0].startswith("19S:") and mixed[1].startswith("56S:") and mixed[2].startswith("33N:")
    assert mixed[3].startswith("60N:") and mixed[4].startswith("1S:")
    np.testing.assert_array_equal(spatial_clusters(lon[:7], lat[:7]), alone[:7])


def test_spatial_clusters_reject_bad_coordinates():
    with pytest.raises(ValueError, match="NaN"):
        spatial_clusters([24.9, np.nan], [60.1, 60.2])
    with pytest.raises(ValueError, match="out of range"):
        spatial_clusters([60.1], [124.9])
    with pytest.raises(ValueError, match="same length"):
        spatial_clusters([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="cell_m"):
        spatial_clusters([1.0], [1.0], cell_m=0.0)
    assert spatial_clusters([], []).shape == (0,)


# --- the clustered bootstrap --------------------------------------------------------------------------------------


def correlated_records(n_clusters: int, size: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Clusters whose records are identical copies (perfect within-cluster correlation)."""
    rng = np.random.default_rng(seed)
    ranks = np.repeat(rng.integers(1, N_CAND + 1, n_clusters), size)
    return from_ranks(ranks), np.repeat(np.arange(n_clusters), size)


def test_clustered_interval_is_wider_when_records_of_a_cluster_move_together():
    per_record, clusters = correlated_records(20, 10)
    clustered = cluster_bootstrap_intervals(per_record, clusters, n_resamples=2000, seed=1)
    records = bootstrap_intervals(per_record, n_resamples=2000, seed=1)
    # 200 copies of 20 values: the record bootstrap believes in 200 draws, the truth is 20 (~sqrt(10) = 3.2x)
    for name in ("mrr", "mean_rank", "hit@10"):
        assert width(clustered[name]) >= 2.0 * width(records[name]), name
    point = summarize(per_record)
    for name, (lo, hi) in clustered.items():
        assert lo <= point[name] <= hi, name


def test_singleton_clusters_agree_with_the_record_bootstrap():
    rng = np.random.default_rng(2)
    per_record = from_ranks(rng.integers(1, N_CAND + 1, 300))
    clustered = cluster_bootstrap_intervals(per_record, [f"c{i}" for i in range(300)], n_resamples=4000, seed=5)
    records = bootstrap_intervals(per_record, n_resamples=4000, seed=6)
    for name, (lo, hi) in records.items():
        # Monte-Carlo error of a 2.5 % quantile over 4000 resamples is ~1.5 % of the width; allow 10 %
        assert clustered[name][0] == pytest.approx(lo, abs=0.1 * (hi - lo)), name
        assert clustered[name][1] == pytest.approx(hi, abs=0.1 * (hi - lo)), name


def test_cluster_bootstrap_is_deterministic_and_group_seeded():
    per_record, clusters = correlated_records(15, 4, seed=3)
    a = cluster_bootstrap_intervals(per_record, clusters, n_resamples=500, seed=3, group=("geolocation", "x"))
    b = cluster_bootstrap_intervals(per_record, clusters, n_resamples=500, seed=3, group=("geolocation", "x"))
    c = cluster_bootstrap_intervals(per_record, clusters, n_resamples=500, seed=4, group=("geolocation", "x"))
    d = cluster_bootstrap_intervals(per_record, clusters, n_resamples=500, seed=3, group=("retrieval", "x"))
    assert a == b
    assert a != c
    assert a != d
    assert list(a) == list(bootstrap_intervals(per_record, n_resamples=10))  # same keys, same order


def test_cluster_bootstrap_edge_cases():
    rng = np.random.default_rng(4)
    per_record = from_ranks(rng.integers(1, N_CAND + 1, 40))
    point = summarize(per_record)
    one = cluster_bootstrap_intervals(per_record, np.zeros(40, dtype=int), n_resamples=200)
    for name, (lo, hi) in one.items():  # a single cluster: every resample is the whole data
        assert lo == pytest.approx(point[name]) and hi == pytest.approx(point[name])
    none = cluster_bootstrap_intervals(per_record, np.arange(40), n_resamples=0)
    assert all(np.isnan(lo) and np.isnan(hi) for lo, hi in none.values())
    perfect = cluster_bootstrap_intervals(from_ranks(np.ones(30, dtype=int)), np.arange(30) // 3)
    assert perfect["hit@1"] == (1.0, 1.0)  # no rounding above 1
    with pytest.raises(ValueError, match="one label per record"):
        cluster_bootstrap_intervals(per_record, np.arange(39))
    with pytest.raises(ValueError, match="level"):
        cluster_bootstrap_intervals(per_record, np.arange(40), level=1.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, N_CAND), st.integers(0, 7)), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_cluster_bootstrap_bounds_and_relabelling(records, rnd):
    ranks = np.array([r for r, _ in records])
    labels = np.array([c for _, c in records])
    per_record = from_ranks(ranks)
    base = cluster_bootstrap_intervals(per_record, labels, n_resamples=200, seed=9)
    for key, name in [("hit@1", "hit@1"), ("hit@10", "hit@10"), ("rr", "mrr"), ("rank", "mean_rank")]:
        lo, hi = base[name]
        assert per_record[key].min() <= lo <= hi <= per_record[key].max()
    # renamed clusters (order-preserving) and shuffled records: the same intervals
    order = list(range(len(ranks)))
    rnd.shuffle(order)
    renamed = np.array([f"street-{c:02d}" for c in labels[order]])
    again = cluster_bootstrap_intervals({k: v[order] for k, v in per_record.items()}, renamed, n_resamples=200, seed=9)
    for name, (lo, hi) in base.items():
        assert again[name][0] == pytest.approx(lo, abs=1e-9) and again[name][1] == pytest.approx(hi, abs=1e-9)


def test_cluster_bootstrap_is_fast():
    rng = np.random.default_rng(5)
    per_record = from_ranks(rng.integers(1, N_CAND + 1, 2000))
    clusters = rng.integers(0, 100, 2000)
    cluster_bootstrap_intervals(per_record, clusters, n_resamples=1000)  # warm up
    # CPU time of this process, not wall time: other processes on a busy machine do not count against it
    start = time.process_time()
    cluster_bootstrap_intervals(per_record, clusters, n_resamples=1000)
    assert time.process_time() - start < 0.25  # ~3 ms here


# --- paired differences -------------------------------------------------------------------------------------------


def two_close_models(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """b: ranks driven by cluster difficulty; a: the same records, one place better on 60 % of them."""
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(30), 10)
    difficulty = np.repeat(rng.integers(1, 16, 30), 10)
    ranks_b = np.clip(difficulty + rng.integers(-2, 3, 300), 1, N_CAND)
    ranks_a = np.where(rng.random(300) < 0.6, np.maximum(ranks_b - 1, 1), ranks_b)
    return from_ranks(ranks_a), from_ranks(ranks_b), clusters


def test_pairing_detects_a_small_consistent_gain_that_unpaired_intervals_miss():
    a, b, clusters = two_close_models()
    diffs = paired_differences(a, b, clusters, n_resamples=2000, seed=1, group=("geolocation",))
    ia = cluster_bootstrap_intervals(a, clusters, n_resamples=2000, seed=1)
    ib = cluster_bootstrap_intervals(b, clusters, n_resamples=2000, seed=1)
    for name in ("mrr", "mean_rank"):
        d = diffs[name]
        assert d.verdict == "a better", name
        assert d.lo > 0 or d.hi < 0, name  # the paired interval excludes zero ...
        assert ia[name][0] < ib[name][1] and ib[name][0] < ia[name][1], name  # ... the marginal ones overlap
        assert d.diff == pytest.approx(d.mean_a - d.mean_b)
        assert d.lo <= d.diff <= d.hi
    # direction: lower mean rank is better, so a's gain is a negative difference there
    assert diffs["mean_rank"].diff < 0 < diffs["mrr"].diff
    flipped = paired_differences(b, a, clusters, n_resamples=2000, seed=1, group=("geolocation",))
    assert flipped["mean_rank"].verdict == flipped["mrr"].verdict == "b better"
    assert flipped["mean_rank"].diff == pytest.approx(-diffs["mean_rank"].diff)


def test_identical_models_show_no_difference():
    a, _, clusters = two_close_models(seed=1)
    diffs = paired_differences(a, {k: v.copy() for k, v in a.items()}, clusters, n_resamples=300)
    for name, d in diffs.items():
        assert (d.diff, d.lo, d.hi, d.verdict) == (0.0, 0.0, 0.0, "no difference"), name
        assert d.mean_a == d.mean_b
    no_interval = paired_differences(a, a, clusters, n_resamples=0)
    assert no_interval["mrr"].verdict == "no difference" and np.isnan(no_interval["mrr"].lo)


def test_paired_differences_reject_misaligned_records():
    a, b, clusters = two_close_models()
    with pytest.raises(ValueError, match="aligned"):
        paired_differences(a, {k: v[:-1] for k, v in b.items()}, clusters)
    with pytest.raises(ValueError, match="aligned"):
        paired_differences(a, {k: v for k, v in b.items() if k != "hit@10"}, clusters)
    with pytest.raises(ValueError, match="one label per record"):
        paired_differences(a, b, clusters[:-1])
    with pytest.raises(ValueError, match="lacks"):
        paired_differences(a, {"hit@1": b["hit@1"]}, clusters)


# --- several seeds ------------------------------------------------------------------------------------------------


def seeded_models(n_seeds: int = 3):
    rng = np.random.default_rng(7)
    clusters = np.repeat(np.arange(25), 8)
    difficulty = np.repeat(rng.integers(1, 7, 25), 8)  # a good model against a blind scorer
    a_by_seed = [from_ranks(np.clip(difficulty - 1 + rng.integers(-2, 3, 200), 1, N_CAND)) for _ in range(n_seeds)]
    blind = from_ranks(rng.integers(1, N_CAND + 1, 200))
    return a_by_seed, blind, clusters


def test_paired_differences_over_seeds_broadcast_a_single_b_and_report_the_spread():
    a_by_seed, blind, clusters = seeded_models()
    out = paired_differences_over_seeds(a_by_seed, [blind], clusters, n_resamples=500, seed=2)
    per_seed_mrr = [summarize(a)["mrr"] - summarize(blind)["mrr"] for a in a_by_seed]
    d = out["mrr"]
    assert d.per_seed == pytest.approx(per_seed_mrr)
    assert d.diff == pytest.approx(np.mean(per_seed_mrr))
    assert d.mean_a == pytest.approx(np.mean([summarize(a)["mrr"] for a in a_by_seed]))
    assert d.mean_b == pytest.approx(summarize(blind)["mrr"])
    assert d.seed_sd == pytest.approx(np.std(per_seed_mrr, ddof=1))
    assert d.seed_range == (min(d.per_seed), max(d.per_seed))
    assert d.lo <= d.diff <= d.hi
    assert out["mrr"].verdict == out["mean_rank"].verdict == "a better"
    # deterministic, and the single side may also be a
    assert paired_differences_over_seeds(a_by_seed, [blind], clusters, n_resamples=500, seed=2) == out
    swapped = paired_differences_over_seeds([blind], a_by_seed, clusters, n_resamples=500, seed=2)
    assert swapped["mrr"].diff == pytest.approx(-d.diff) and swapped["mrr"].verdict == "b better"
    # one seed each: exactly paired_differences
    one = paired_differences_over_seeds(a_by_seed[:1], [blind], clusters, n_resamples=300, seed=4)
    plain = paired_differences(a_by_seed[0], blind, clusters, n_resamples=300, seed=4)
    for name, p in plain.items():
        assert (one[name].diff, one[name].lo, one[name].hi, one[name].verdict) == (p.diff, p.lo, p.hi, p.verdict)
        assert np.isnan(one[name].seed_sd)
    with pytest.raises(ValueError, match="seeds"):
        paired_differences_over_seeds(a_by_seed, a_by_seed[:2], clusters)
    with pytest.raises(ValueError, match="non-empty"):
        paired_differences_over_seeds([], [blind], clusters)


def test_paired_seeds_share_one_cluster_draw():
    # pairing seed i with seed i: the interval is that of the seed-averaged per-record difference
    a_by_seed, blind, clusters = seeded_models(2)
    b_by_seed = [blind, from_ranks(np.clip(blind["rank"].astype(int) + 1, 1, N_CAND))]
    out = paired_differences_over_seeds(a_by_seed, b_by_seed, clusters, n_resamples=400, seed=8, group=("g",))
    averaged_diff = {
        k: np.mean([a[k] - b[k] for a, b in zip(a_by_seed, b_by_seed, strict=True)], axis=0)
        for k in ("hit@1", "hit@3", "hit@5", "hit@10", "rr", "rank")
    }
    direct = cluster_bootstrap_intervals(averaged_diff, clusters, n_resamples=400, seed=8, group=("g",))
    for name, (lo, hi) in direct.items():
        assert out[name].lo == pytest.approx(lo) and out[name].hi == pytest.approx(hi)


def test_seed_summary_means_sd_and_interval():
    a_by_seed, _, clusters = seeded_models()
    out = seed_summary(a_by_seed, clusters, n_resamples=500, seed=1, group=("retrieval",))
    per_seed = [summarize(a)["mean_rank"] for a in a_by_seed]
    s = out["mean_rank"]
    assert s.per_seed == pytest.approx(per_seed)
    assert s.mean == pytest.approx(np.mean(per_seed))
    assert s.sd == pytest.approx(np.std(per_seed, ddof=1))
    assert s.seed_range == (min(per_seed), max(per_seed))
    assert s.lo <= s.mean <= s.hi
    assert seed_summary(a_by_seed, clusters, n_resamples=500, seed=1, group=("retrieval",)) == out
    single = seed_summary(a_by_seed[:1], clusters, n_resamples=500, seed=1, group=("retrieval",))
    plain = cluster_bootstrap_intervals(a_by_seed[0], clusters, n_resamples=500, seed=1, group=("retrieval",))
    for name, (lo, hi) in plain.items():
        assert (single[name].lo, single[name].hi) == (lo, hi)
        assert np.isnan(single[name].sd)
    with pytest.raises(ValueError, match="same records"):
        seed_summary([a_by_seed[0], {k: v[:-1] for k, v in a_by_seed[1].items()}], clusters)


# --- chance -------------------------------------------------------------------------------------------------------


def test_chance_levels_match_hand_computed_values():
    h20 = sum(1 / r for r in range(1, 21))  # 3.5977...
    c20 = chance_levels(np.full(5, 20))
    assert c20 == pytest.approx(
        {"hit@1": 0.05, "hit@3": 0.15, "hit@5": 0.25, "hit@10": 0.5, "mrr": h20 / 20, "mean_rank": 10.5}
    )
    mixed = chance_levels(np.array([3, 20]))
    assert mixed == pytest.approx(
        {
            "hit@1": (1 / 3 + 1 / 20) / 2,
            "hit@3": (1 + 3 / 20) / 2,
            "hit@5": (1 + 5 / 20) / 2,
            "hit@10": (1 + 10 / 20) / 2,
            "mrr": ((1 + 1 / 2 + 1 / 3) / 3 + h20 / 20) / 2,
            "mean_rank": (2 + 10.5) / 2,
        }
    )
    # the same as a model that ties every candidate
    c = np.array([1, 3, 7, 20])
    ties = summarize(per_record_metrics(RankCounts(np.zeros_like(c), c - 1, c)))
    assert chance_levels(c) == pytest.approx(ties)
    with pytest.raises(ValueError, match="at least one candidate"):
        chance_levels(np.array([0, 3]))
    with pytest.raises(ValueError, match="non-empty"):
        chance_levels(np.array([], dtype=int))
