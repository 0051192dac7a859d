"""Row ranges of grouped long tables (one image's rows of the subgraph tables are one contiguous run)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["key_runs"]


def key_runs(keys: np.ndarray, labels: Sequence[object] | None = None) -> dict[str, tuple[int, int]]:
    """
    ``key -> (start, stop)`` of each run of equal values in ``keys`` (a table's grouping column, grouped).

    With ``labels``, ``keys`` are integer codes and each run is named ``str(labels[code])`` (codes from
    ``pandas.factorize`` compare faster than millions of strings). A key that occurs in two separate runs keeps
    only its last, so the ranges then cover fewer rows than ``keys`` has: callers that cannot rule this out
    compare the covered rows with ``len(keys)`` and sort first.
    """
    if not len(keys):
        return {}
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    stops = np.r_[starts[1:], len(keys)]
    name = (lambda k: str(k)) if labels is None else (lambda k: str(labels[k]))
    return {name(keys[a]): (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}
