"""
Checks on the tables a stage is given, shared by every stage (plain pandas, no Dagster).

A stage that reads a column its input lacks would fail deep inside with a bare ``KeyError``; checking up front
names the table, the city, every missing column and the fix instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ugdata_pipeline.errors import TableInputError, UgdataError


def missing_columns(frame: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The names in ``columns`` that ``frame`` lacks, in the order given."""
    return [c for c in columns if c not in frame.columns]


def _subject(table: str, city: str | None) -> str:
    return table if city is None else f"{table} of {city!r}"


def require_columns(
    frame: object,
    columns: Iterable[str],
    *,
    table: str,
    city: str | None = None,
    fix: str | None = None,
    error: type[UgdataError] = TableInputError,
) -> None:
    """
    Raise unless ``frame`` is a DataFrame with every one of ``columns``.

    The message reads ``"<table> [of '<city>'] is missing column(s) [...]; it has [...]. <fix>"``.

    Parameters
    ----------
    frame
        The table to check.
    columns
        The columns the caller reads.
    table
        What the table is called where the caller got it, e.g. ``"images"``, ``"CityInputs.nodes"``.
    city
        The city the table belongs to, when the caller knows it.
    fix
        How to get a table with these columns, e.g. ``"pass the output of anchor_images"``.
    error
        The stage's input error class (a :class:`~ugdata_pipeline.errors.UgdataError` that is also a
        ``ValueError``), so callers that catch the stage's error keep catching it.

    Raises
    ------
    error
        ``frame`` is not a DataFrame, or lacks columns.
    """
    columns = list(columns)
    tail = f" {fix}" if fix else ""
    if not isinstance(frame, pd.DataFrame):
        msg = f"{_subject(table, city)} must be a pandas DataFrame, got {type(frame).__name__}.{tail}"
        raise error(msg)
    missing = missing_columns(frame, columns)
    if missing:
        msg = f"{_subject(table, city)} is missing column(s) {missing}; it has {list(frame.columns)}.{tail}"
        raise error(msg)
