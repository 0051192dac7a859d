"""Failed items counted by reason, and the one-line summary that log warnings and step-failure messages quote.

Every stage that fetches or generates (image discovery and download, captioning) records failed items; each says
what a failure's *reason* is (its own rule), and this module does the rest the same way for all of them: count by
reason, most frequent first, keep a few examples, and write the top reasons as one line.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["FAILURE_TABLE_COLUMNS", "describe_failures", "failure_table"]

#: Columns of :func:`failure_table`: the reason, how many items failed for it, and examples (``item: error``).
FAILURE_TABLE_COLUMNS: tuple[str, ...] = ("reason", "count", "examples")


def failure_table(reasons: pd.Series, items: pd.Series, errors: pd.Series, *, examples: int = 2) -> pd.DataFrame:
    """
    Failed items by reason, most frequent first (ties by reason, so the order does not depend on the row order).

    Parameters
    ----------
    reasons, items, errors
        One entry per failed item, aligned: its reason, its id, its error text.
    examples
        Examples kept per reason, ``"<item>: <error>"`` joined by ``"; "``, in row order.

    Returns
    -------
    pandas.DataFrame
        :data:`FAILURE_TABLE_COLUMNS`; empty (with those columns) when nothing failed.
    """
    frame = pd.DataFrame(
        {"reason": reasons.astype(str).to_numpy(), "item": items.astype(str).to_numpy(), "error": errors.to_numpy()}
    )
    rows = []
    for reason, group in frame.groupby("reason", sort=False):
        shown = zip(group["item"].head(examples), group["error"].head(examples), strict=True)
        rows.append({"reason": reason, "count": len(group), "examples": "; ".join(f"{i}: {e}" for i, e in shown)})
    table = pd.DataFrame(rows, columns=list(FAILURE_TABLE_COLUMNS))
    return table.sort_values(["count", "reason"], ascending=[False, True], kind="stable").reset_index(drop=True)


def describe_failures(table: pd.DataFrame, *, top: int = 3, count_first: bool = False, examples: bool = True) -> str:
    """
    One line from :func:`failure_table`: the ``top`` reasons with their counts, how many other reasons there are,
    and (``examples``) the first example of each shown reason.

    ``count_first`` writes ``2 x download: HTTP 500`` instead of ``HTTP 500 x 2``: reasons that carry their own
    ``stage: error`` text read better behind the count. E.g. ``circuit open x 10, HTTP 500 x 2; e.g. p01: ...``.
    """
    if table.empty:
        return "no failures"
    head = table.head(top)
    counts = ", ".join(
        f"{c} x {r}" if count_first else f"{r} x {c}" for r, c in zip(head["reason"], head["count"], strict=True)
    )
    more = f", {len(table) - top} more reason(s)" if len(table) > top else ""
    if not examples:
        return f"{counts}{more}"
    example = "; ".join(e.split("; ")[0] for e in head["examples"])
    return f"{counts}{more}; e.g. {example}"
