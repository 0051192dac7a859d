"""Exchangeable candidate groups: records whose candidates are the answers of their own group.

A ranking record built as "the correct answer plus distractors drawn around the query" is answerable without
looking at the query: the query's own answer sits at the centre of its distractors (it shares streets and places
with more of them than any distractor does), an answer that is often correct elsewhere is likely correct here,
and the way distractors were sampled leaves traces (length, vocabulary). A blind scorer that reads only the
candidates then beats chance.

UGBench therefore builds such tasks from **groups**: ``size`` queries whose answers are all distinct and
compatible with each other; every member becomes one record whose candidates are the answers of the whole group,
so each candidate set is used ``size`` times, once with each of its members correct. Any score that depends on the
candidate texts alone ranks the same set the same way in all ``size`` records, so it puts the correct answer in
its top K in exactly ``K`` of them: **Hit@K of every candidate-only scorer is exactly chance**, by construction
rather than by luck.

Groups are formed greedily in a seeded random order: each item joins the first open group it is compatible with
(pairwise distance band, same key, distinct answer, an optional pairwise rule), or opens a new one; full groups
close. Groups still short of ``size`` at the end are dropped, and their items counted as left over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["GroupResult", "form_groups"]

#: ``compatible(i, j) -> bool`` for two item positions; must be symmetric.
PairRule = Callable[[int, int], bool]


@dataclass(slots=True)
class GroupResult:
    """
    Groups of item positions and what was left over.

    Attributes
    ----------
    groups
        Each group is a list of ``size`` item positions (into the arrays given to :func:`form_groups`), in the
        order they joined.
    leftover
        Positions of items that ended in no complete group.
    """

    groups: list[list[int]]
    leftover: list[int]


def form_groups(
    x_m: npt.ArrayLike,
    y_m: npt.ArrayLike,
    answers: Sequence[str],
    *,
    size: int,
    rng: np.random.Generator,
    min_m: float = 0.0,
    max_m: float = float("inf"),
    keys: Sequence[object] | None = None,
    compatible: PairRule | None = None,
) -> GroupResult:
    """
    Partition items into groups of ``size`` mutually compatible items with distinct answers.

    Parameters
    ----------
    x_m, y_m
        Item positions in metres on a local metric grid (e.g. the city's UTM zone).
    answers
        One normalised answer per item; answers within a group are distinct.
    size
        Items per group (the number of candidates of each record), >= 2.
    rng
        Seeded generator: fixes the order in which items are placed, so the grouping is reproducible.
    min_m, max_m
        Every pair within a group lies at least ``min_m`` and at most ``max_m`` metres apart.
    keys
        Optional group key per item (e.g. the category a question asks about); a group holds one key.
    compatible
        Optional extra pairwise rule (e.g. "the two answers are clearly different").

    Returns
    -------
    GroupResult
        Complete groups and left-over items.

    Raises
    ------
    ValueError
        ``size`` < 2, mismatched lengths or a distance band that is empty.
    """
    x = np.asarray(x_m, dtype=float)
    y = np.asarray(y_m, dtype=float)
    n = len(answers)
    if size < 2:
        msg = f"`size` must be >= 2 (a record needs a distractor), got {size!r}"
        raise ValueError(msg)
    if x.shape != (n,) or y.shape != (n,) or (keys is not None and len(keys) != n):
        msg = f"x_m, y_m, answers (and keys) must have one entry per item, got {x.shape}, {y.shape}, {n}"
        raise ValueError(msg)
    if not 0 <= min_m < max_m:
        msg = f"the distance band needs 0 <= min_m < max_m (metres), got {min_m!r} and {max_m!r}"
        raise ValueError(msg)
    order = rng.permutation(n)
    open_groups: list[list[int]] = []
    open_answers: list[set[str]] = []
    open_keys: list[object] = []
    closed: list[list[int]] = []
    for item in order.tolist():
        key = keys[item] if keys is not None else None
        placed = False
        for g, members in enumerate(open_groups):
            if open_keys[g] != key or answers[item] in open_answers[g]:
                continue
            d = np.hypot(x[members] - x[item], y[members] - y[item])
            if (d < min_m).any() or (d > max_m).any():
                continue
            if compatible is not None and not all(compatible(item, m) for m in members):
                continue
            members.append(item)
            open_answers[g].add(answers[item])
            placed = True
            if len(members) == size:
                closed.append(members)
                del open_groups[g], open_answers[g], open_keys[g]
            break
        if not placed:
            open_groups.append([item])
            open_answers.append({answers[item]})
            open_keys.append(key)
    leftover = sorted(i for members in open_groups for i in members)
    closed.sort(key=min)  # a stable, order-independent listing of the groups
    return GroupResult(groups=closed, leftover=leftover)
