"""One failure summary for every stage that fetches or generates: counted by reason, most frequent first."""

import pandas as pd

from ugdata_pipeline.context.caption_quality import caption_failure_table
from ugdata_pipeline.failures import FAILURE_TABLE_COLUMNS, describe_failures, failure_table
from ugdata_pipeline.imagery.source_outcome import describe_source_failures, failures_frame, source_failure_table


def _table(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    reasons, items, errors = (pd.Series(list(column), dtype=object) for column in zip(*rows, strict=True))
    return failure_table(reasons, items, errors)


def test_reasons_are_counted_most_frequent_first_ties_by_reason_whatever_the_row_order():
    rows = [("b", "i1", "b: one"), ("a", "i2", "a: two"), ("c", "i3", "c: x"), ("c", "i4", "c: y"), ("c", "i5", "c: z")]
    for order in (rows, rows[::-1]):
        table = _table(order)
        assert list(table.columns) == list(FAILURE_TABLE_COLUMNS)
        assert table[["reason", "count"]].values.tolist() == [["c", 3], ["a", 1], ["b", 1]]
    # two examples per reason at most, in row order
    assert _table(rows).loc[0, "examples"] == "i3: c: x; i4: c: y"
    empty = failure_table(pd.Series([], dtype=object), pd.Series([], dtype=object), pd.Series([], dtype=object))
    assert list(empty.columns) == list(FAILURE_TABLE_COLUMNS) and empty.empty


def test_one_line_names_the_top_reasons_the_rest_and_examples():
    rows = [("c", "i3", "c: x"), ("c", "i4", "c: y"), ("a", "i2", "a: two"), ("b", "i1", "b: one"), ("d", "i6", "d")]
    table = _table(rows)
    assert describe_failures(table) == "c x 2, a x 1, b x 1, 1 more reason(s); e.g. i3: c: x; i2: a: two; i1: b: one"
    assert describe_failures(table, top=1, count_first=True, examples=False) == "2 x c, 3 more reason(s)"
    assert describe_failures(table.iloc[:0]) == "no failures"


def test_image_sources_and_captions_use_the_same_table():
    failures = failures_frame(
        [
            {"image_id": "1", "stage": "download", "attempts": 3, "error": "Object 1234567 does not exist"},
            {"image_id": "2", "stage": "download", "attempts": 3, "error": "Object 7654321 does not exist"},
            {"image_id": "3", "stage": "resolve", "attempts": 1, "error": "HTTP 500"},
        ]
    )
    table = source_failure_table(failures)
    assert table[["reason", "count"]].values.tolist() == [
        ["download: Object # does not exist", 2],
        ["resolve: HTTP 500", 1],
    ]
    assert table.loc[0, "examples"] == "1: Object 1234567 does not exist; 2: Object 7654321 does not exist"
    assert describe_source_failures(failures) == "2 x download: Object # does not exist, 1 x resolve: HTTP 500"
    assert describe_source_failures(failures_frame()) == "no failures"

    captions = pd.DataFrame(
        {"image_id": ["p1", "p2", "p3"], "status": ["failed", "done", "failed"], "error": ["HTTP 503: x", "", "y"]}
    )
    assert caption_failure_table(captions).values.tolist() == [["HTTP 503", 1, "p1: HTTP 503: x"], ["y", 1, "p3: y"]]
