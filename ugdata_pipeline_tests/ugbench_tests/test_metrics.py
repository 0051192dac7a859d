"""Ranking metrics against hand-computed rankings, the tie rule, and the bootstrap under a seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.ugbench.metrics import (
    bootstrap_intervals,
    chance_levels,
    per_record_metrics,
    rank_counts,
    summarize,
)
from ugdata_pipeline.ugbench.stats import group_seed


def metrics_of(scores, correct, **kwargs):
    return per_record_metrics(rank_counts(np.asarray(scores, dtype=float), correct, **kwargs))


def test_ranks_without_ties_match_hand_computed():
    # record 0: correct 0.5 is below 0.9 and 0.7 -> rank 3; record 1: correct 0.3 is the top -> rank 1;
    # record 2: correct 0.2 below 0.8 only -> rank 2
    scores = [[0.9, 0.5, 0.7, 0.1], [0.1, 0.2, 0.3, 0.0], [0.8, 0.2, 0.1, 0.0]]
    m = metrics_of(scores, [1, 2, 1])
    np.testing.assert_allclose(m["rank"], [3, 1, 2])
    np.testing.assert_allclose(m["hit@1"], [0, 1, 0])
    np.testing.assert_allclose(m["hit@3"], [1, 1, 1])
    np.testing.assert_allclose(m["rr"], [1 / 3, 1, 1 / 2])
    summary = summarize(m)
    assert summary["hit@1"] == pytest.approx(1 / 3)
    assert summary["mrr"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert summary["mean_rank"] == pytest.approx(2.0)


def test_ties_count_at_the_expected_rank_under_random_tie_breaking():
    # correct tied with two others at the top: rank uniform on {1, 2, 3}
    m = metrics_of([[0.5, 0.5, 0.5, 0.1]], [0])
    assert m["rank"][0] == pytest.approx(2.0)
    assert m["hit@1"][0] == pytest.approx(1 / 3)
    assert m["hit@3"][0] == pytest.approx(1.0)
    assert m["rr"][0] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # one strictly higher, then a three-way tie: rank uniform on {2, 3, 4}
    m = metrics_of([[0.9, 0.5, 0.5, 0.5, 0.0]], [2])
    assert m["rank"][0] == pytest.approx(3.0)
    assert m["hit@1"][0] == 0.0
    assert m["hit@3"][0] == pytest.approx(2 / 3)
    assert m["hit@5"][0] == pytest.approx(1.0)
    assert m["rr"][0] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)


@pytest.mark.parametrize("n_candidates", [1, 2, 20, 37])
def test_constant_scores_give_exactly_chance(n_candidates):
    m = metrics_of(np.zeros((3, n_candidates)), [0, n_candidates - 1, n_candidates // 2])
    assert m["hit@1"] == pytest.approx(np.full(3, 1 / n_candidates))
    assert m["rank"] == pytest.approx(np.full(3, (n_candidates + 1) / 2))
    expected_rr = sum(1 / r for r in range(1, n_candidates + 1)) / n_candidates
    assert m["rr"] == pytest.approx(np.full(3, expected_rr))


def test_scores_within_the_tolerance_tie_and_padding_is_ignored():
    m = metrics_of([[0.5 + 1e-9, 0.5, 0.0]], [1])
    assert m["hit@1"][0] == pytest.approx(0.5)
    m = metrics_of([[0.5 + 1e-9, 0.5, 0.0]], [1], tie_tol=0.0)
    assert m["hit@1"][0] == 0.0
    m = metrics_of([[0.2, 0.9, 0.1]], [0], valid=[[True, False, True]])
    assert m["rank"][0] == 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=2, max_size=12), st.data())
def test_metrics_do_not_depend_on_candidate_order(values, data):
    scores = np.asarray(values, dtype=float)
    correct = data.draw(st.integers(0, len(values) - 1))
    perm = np.asarray(data.draw(st.permutations(list(range(len(values))))))
    a = metrics_of(scores[None, :], [correct])
    b = metrics_of(scores[perm][None, :], [int(np.flatnonzero(perm == correct)[0])])
    for name in a:
        assert a[name] == pytest.approx(b[name])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="correct_idx must lie in"):
        rank_counts(np.zeros((1, 3)), [3])
    with pytest.raises(ValueError, match="NaN"):
        rank_counts(np.array([[np.nan, 0.0]]), [1])
    with pytest.raises(ValueError, match="2-D"):
        rank_counts(np.zeros(3), [0])
    with pytest.raises(ValueError, match="padding"):
        rank_counts(np.zeros((1, 2)), [1], valid=[[True, False]])


def test_bootstrap_is_deterministic_under_a_seed_and_brackets_the_mean():
    rng = np.random.default_rng(0)
    per_record = metrics_of(rng.normal(size=(200, 20)), rng.integers(0, 20, size=200))
    a = bootstrap_intervals(per_record, n_resamples=500, seed=3, group=("geolocation", "x"))
    b = bootstrap_intervals(per_record, n_resamples=500, seed=3, group=("geolocation", "x"))
    c = bootstrap_intervals(per_record, n_resamples=500, seed=4, group=("geolocation", "x"))
    d = bootstrap_intervals(per_record, n_resamples=500, seed=3, group=("retrieval", "x"))
    assert a == b
    assert a != c
    assert a != d
    summary = summarize(per_record)
    for name, (lo, hi) in a.items():
        assert lo <= summary[name] <= hi
        assert lo < hi
    empty = bootstrap_intervals(per_record, n_resamples=0)
    assert all(np.isnan(lo) and np.isnan(hi) for lo, hi in empty.values())


def test_group_seed_is_stable_and_name_sensitive():
    assert group_seed(0, "a", "b") == group_seed(0, "a", "b")
    assert group_seed(0, "a", "b") != group_seed(0, "ab")
    assert 0 <= group_seed(5, "x") < 2**63


def test_bootstrap_draws_every_record_and_names_every_metric() -> None:
    # one record answered, three not: a resample holds the answered one or not, so the interval must reach 0 (never
    # drawn) and above the mean; a sampler that skips a record (say the first) gives a degenerate interval
    per_record = {
        "hit@1": np.array([1.0, 0.0, 0.0, 0.0]),
        "hit@5": np.array([1.0, 1.0, 0.0, 0.0]),
        "rr": np.array([1.0, 0.2, 0.1, 0.1]),
        "rank": np.array([1.0, 5.0, 10.0, 10.0]),
    }
    intervals = bootstrap_intervals(per_record, n_resamples=400, seed=1, level=0.9)
    assert set(intervals) == {"hit@1", "hit@5", "mrr", "mean_rank"}
    lo, hi = intervals["hit@1"]
    assert lo == 0.0 and 0.25 < hi <= 1.0
    lo, hi = intervals["mrr"]
    assert lo < 0.35 < hi  # the mean, 0.35, lies inside
    assert intervals == bootstrap_intervals(per_record, n_resamples=400, seed=1, level=0.9)  # seeded
    empty = bootstrap_intervals(per_record, n_resamples=0)
    assert set(empty) == set(intervals) and all(np.isnan(v).all() for v in empty.values())
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"level must be in \(0, 1\), got {bad}"):
            bootstrap_intervals(per_record, level=bad)


# --- surviving mutants of make mutation (rank_counts, per_record_metrics, chance_levels, bootstrap_intervals) ------


def test_a_candidate_at_exactly_the_tolerance_ties_and_is_not_higher():
    # |0.75 - 0.5| = 0.25 = tie_tol (exact in binary): a tie, so rank 1 or 2 with equal chance, never 2 for sure
    m = metrics_of([[0.75, 0.5]], [1], tie_tol=0.25)
    assert (m["hit@1"][0], m["rank"][0]) == (0.5, 1.5)
    # equal scores tie at tie_tol=0 too
    m = metrics_of([[0.5, 0.5, 0.0]], [1], tie_tol=0.0)
    assert (m["hit@1"][0], m["rank"][0], m["rr"][0]) == (0.5, 1.5, 0.75)


def test_rank_counts_report_valid_candidates_per_record_and_take_a_column_of_float_indices():
    # correct_idx as a pandas-style float column [[1.0], [0.0]] (ints that went through NaN-capable storage)
    counts = rank_counts(
        np.array([[0.9, 0.5, 0.1], [0.2, 0.7, 0.3]]), np.array([[1.0], [0.0]]), valid=[[1, 1, 1], [1, 1, 0]]
    )
    assert counts.higher.tolist() == [1, 1] and counts.ties.tolist() == [0, 0]
    assert counts.n_candidates.tolist() == [3, 2]  # what chance levels are computed from
    assert counts.n_candidates.dtype == np.int64


def test_no_records_give_empty_metrics():
    counts = rank_counts(np.zeros((0, 4)), np.zeros(0, dtype=int))
    m = per_record_metrics(counts)
    assert set(m) == {"hit@1", "hit@3", "hit@5", "hit@10", "rr", "rank"}
    assert all(v.shape == (0,) for v in m.values())


def test_rank_count_errors_name_the_problem_exactly():
    cases = [
        (
            {"scores": np.zeros((2, 3)), "correct_idx": [0, 1, 2]},
            "correct_idx must hold one index per record (2), got shape (3,)",
        ),
        (
            {"scores": np.zeros((1, 3)), "correct_idx": [0], "valid": [[True, True]]},
            "valid must have the shape of scores (1, 3), got (1, 2)",
        ),
        ({"scores": np.zeros((1, 3)), "correct_idx": [0], "tie_tol": -1.0}, "tie_tol must be >= 0, got -1.0"),
        ({"scores": np.zeros((1, 3)), "correct_idx": [7]}, "correct_idx must lie in [0, 3), got values [7]"),
        (
            {"scores": np.zeros((1, 2)), "correct_idx": [1], "valid": [[True, False]]},
            "correct_idx points at padding (valid == False) in some records; fix the candidate mask",
        ),
        (
            {"scores": np.array([[np.nan, 0.0]]), "correct_idx": [1]},
            "scores hold NaN for valid candidates; check the embeddings (a NaN vector scores NaN)",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as caught:
            rank_counts(**kwargs)
        assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        rank_counts(np.zeros((1, 8)), [9])
    assert str(caught.value) == "correct_idx must lie in [0, 8), got values [9]"
    many = np.arange(8, 16)
    with pytest.raises(ValueError) as caught:
        rank_counts(np.zeros((8, 8)), many)
    assert str(caught.value) == "correct_idx must lie in [0, 8), got values [8, 9, 10, 11, 12]"  # the first five


def test_chance_levels_take_whole_floats_and_refuse_fractions():
    assert chance_levels(np.array([3.0, 20.0])) == chance_levels(np.array([3, 20]))
    with pytest.raises(ValueError) as caught:
        chance_levels(np.array([2.5, 20.0]))
    assert str(caught.value) == "n_candidates must be whole numbers of candidates"


def test_bootstrap_defaults_and_edge_cases():
    rng = np.random.default_rng(0)
    per_record = metrics_of(rng.normal(size=(60, 20)), rng.integers(0, 20, size=60))
    # the documented defaults: 1000 resamples, seed 0 (reports are reproducible without naming them)
    assert bootstrap_intervals(per_record) == bootstrap_intervals(per_record, n_resamples=1000, seed=0)
    assert bootstrap_intervals(per_record) != bootstrap_intervals(per_record, n_resamples=1000, seed=1)
    assert bootstrap_intervals(per_record) != bootstrap_intervals(per_record, n_resamples=1001, seed=0)
    # one record: every resample is that record, a zero-width interval at its value (not NaN)
    one = {"hit@1": np.array([1.0]), "rr": np.array([1.0]), "rank": np.array([1.0])}
    assert bootstrap_intervals(one) == {"hit@1": (1.0, 1.0), "mrr": (1.0, 1.0), "mean_rank": (1.0, 1.0)}
    with pytest.raises(ValueError) as caught:
        bootstrap_intervals(per_record, n_resamples=-1)
    assert str(caught.value) == "n_resamples must be >= 0, got -1"


def test_bootstrap_interval_is_the_central_level_of_the_resampled_means():
    # two records 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4. The central 40 % (the
    # 30th to 70th percentiles) is 0.5 on both ends; a wider tail cut (say the 20th to 80th) reaches 0 and 1.
    per_record = {"hit@1": np.array([0.0, 1.0]), "rr": np.array([0.0, 1.0]), "rank": np.array([1.0, 2.0])}
    intervals = bootstrap_intervals(per_record, n_resamples=4000, seed=0, level=0.4)
    assert intervals == {"hit@1": (0.5, 0.5), "mrr": (0.5, 0.5), "mean_rank": (1.5, 1.5)}
    wide = bootstrap_intervals(per_record, n_resamples=4000, seed=0, level=0.95)
    assert wide == {"hit@1": (0.0, 1.0), "mrr": (0.0, 1.0), "mean_rank": (1.0, 2.0)}
