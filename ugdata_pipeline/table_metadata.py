"""Dagster's standard metadata of a stored table (``dagster/row_count``, ``dagster/column_schema``), added to every
table by the IO manager and used by the assets' previews. A module of the shell's own, so the IO manager does not
import the assets package."""

from __future__ import annotations

import dagster as dg
import pandas as pd

__all__ = ["column_schema", "table_metadata"]


def _column_type(column: pd.Series) -> str:
    """The dtype's name; for ``object`` columns what they hold (``string``, ``mixed``, ...), which says more."""
    if column.dtype == object:
        return pd.api.types.infer_dtype(column, skipna=True)
    return str(column.dtype)


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The frame's columns and their types as Dagster's ``TableSchema`` (the UI's Columns tab)."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name=str(name), type=_column_type(frame[name])) for name in frame.columns]
    )


def table_metadata(frame: pd.DataFrame) -> dict[str, object]:
    """``dagster/row_count`` and ``dagster/column_schema`` of a stored table (the IO manager adds them to every one)."""
    return {"dagster/row_count": len(frame), "dagster/column_schema": column_schema(frame)}
