"""form_groups: the invariants of exchangeable groups, for any input, and its errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.ugbench.groups import form_groups


@st.composite
def items(draw):
    n = draw(st.integers(0, 40))
    coords = st.floats(0, 3000, allow_nan=False)
    x = np.asarray(draw(st.lists(coords, min_size=n, max_size=n)))
    y = np.asarray(draw(st.lists(coords, min_size=n, max_size=n)))
    answers = draw(st.lists(st.sampled_from("abcdefgh"), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    return x, y, answers, keys


@settings(max_examples=150, deadline=None)
@given(items(), st.integers(2, 5), st.floats(0, 500), st.floats(600, 4000), st.integers(0, 2**32 - 1))
def test_groups_hold_distinct_answers_in_band_one_key_and_partition_the_items(data, size, min_m, max_m, seed):
    x, y, answers, keys = data

    def far_apart(i, j):  # an extra pairwise rule: answers in alphabet order at least 2 letters apart
        return abs(ord(answers[i]) - ord(answers[j])) >= 2

    kwargs = {"size": size, "min_m": min_m, "max_m": max_m, "keys": keys, "compatible": far_apart}
    result = form_groups(x, y, answers, rng=np.random.default_rng(seed), **kwargs)
    grouped = [i for g in result.groups for i in g]
    # every item is in exactly one place: one group or the left-overs
    assert len(grouped) == len(set(grouped))
    assert sorted(grouped + result.leftover) == list(range(len(answers)))
    for group in result.groups:
        assert len(group) == size
        assert len({answers[i] for i in group}) == size
        assert len({keys[i] for i in group}) == 1
        for i, j in itertools.combinations(group, 2):
            d = float(np.hypot(x[i] - x[j], y[i] - y[j]))
            assert min_m <= d <= max_m, (i, j, d)
            assert far_apart(i, j)
    assert [min(g) for g in result.groups] == sorted(min(g) for g in result.groups)
    # the same seed gives the same groups
    again = form_groups(x, y, answers, rng=np.random.default_rng(seed), **kwargs)
    assert again.groups == result.groups and again.leftover == result.leftover


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_mutually_compatible_items_all_end_in_groups(n_groups, size, seed):
    # items on a 150 m lattice with all answers distinct: every pair is compatible, nothing is left over
    n = n_groups * size
    x = 150.0 * (np.arange(n) % 5)
    y = 150.0 * (np.arange(n) // 5)
    result = form_groups(
        x, y, [f"answer {i}" for i in range(n)], size=size, min_m=100, max_m=5000, rng=np.random.default_rng(seed)
    )
    assert len(result.groups) == n_groups
    assert result.leftover == []


@pytest.mark.parametrize("seed", range(8))
def test_items_that_fit_no_group_are_left_over(seed):
    # items 1 and 2 stand on the same spot: only (0, 1) and (0, 2) are pairs, so one of 1, 2 is always left over
    x, y = np.array([0.0, 1000.0, 1000.0]), np.zeros(3)
    pairs = form_groups(x, y, ["a", "b", "c"], size=2, min_m=100, max_m=2000, rng=np.random.default_rng(seed))
    assert len(pairs.groups) == 1 and 0 in pairs.groups[0]
    assert len(pairs.leftover) == 1 and pairs.leftover[0] not in pairs.groups[0]
    triples = form_groups(x, y, ["a", "b", "c"], size=3, min_m=100, max_m=2000, rng=np.random.default_rng(seed))
    assert triples.groups == [] and triples.leftover == [0, 1, 2]
    # the same answer twice never shares a group, however close the rest fits
    same = form_groups(x, y, ["a", "a", "a"], size=2, rng=np.random.default_rng(seed))
    assert same.groups == [] and same.leftover == [0, 1, 2]


def test_bad_arguments_raise_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="`size` must be >= 2"):
        form_groups([0.0], [0.0], ["a"], size=1, rng=rng)
    with pytest.raises(ValueError, match="one entry per item"):
        form_groups([0.0, 1.0], [0.0], ["a", "b"], size=2, rng=rng)
    with pytest.raises(ValueError, match="one entry per item"):
        form_groups([0.0], [0.0], ["a"], size=2, keys=[1, 2], rng=rng)
    with pytest.raises(ValueError, match="0 <= min_m < max_m"):
        form_groups([0.0], [0.0], ["a"], size=2, min_m=500, max_m=100, rng=rng)
