"""Ranking metrics against hand-computed rankings, the tie rule, and the bootstrap under a seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.ugbench.metrics import bootstrap_intervals, per_record_metrics, rank_counts, summarize
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
