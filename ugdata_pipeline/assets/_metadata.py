"""Metadata helpers shared by the assets: table previews, pictures (a file on disk, a thumbnail small enough to show
inline), check results. The standard table metadata (row count, column schema) is :mod:`ugdata_pipeline.table_metadata`,
which the IO manager uses too."""

from __future__ import annotations

import base64
import io
import math
from datetime import date, datetime

import dagster as dg
import numpy as np
import pandas as pd
from PIL import Image
from upath import UPath

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.table_files import write_bytes_atomic
from ugdata_pipeline.table_metadata import column_schema

#: Dagster folds Markdown longer than this behind "[Show Markdown]"; an inline thumbnail must stay under it.
INLINE_MARKDOWN_CHARS = 1000
#: Longest text shown in a preview cell; longer strings (and geometry WKT) are cut with "...".
PREVIEW_CELL_CHARS = 80
#: Thumbnail widths tried, largest first, until the Markdown fits :data:`INLINE_MARKDOWN_CHARS`.
_THUMBNAIL_WIDTHS = (120, 96, 80, 64, 48, 40, 32)


def _cell(value: object) -> str | int | float | bool | None:
    """A preview cell as a JSON-safe value: geometry as WKT, numpy scalars as Python ones, long text cut."""
    if value is None:
        return None
    if hasattr(value, "wkt"):  # shapely geometry
        value = value.wkt
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    text = str(value)
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 3] + "..."


def preview(frame: pd.DataFrame, *, rows: int = 8, columns: list[str] | None = None) -> dg.MetadataValue:
    """The first ``rows`` rows as a Dagster table (geometry as WKT, long text cut), with the shown columns' schema."""
    shown = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    shown = shown.head(rows)
    records = [
        dg.TableRecord({str(k): _cell(v) for k, v in zip(shown.columns, row, strict=True)})
        for row in shown.itertuples(index=False, name=None)
    ]
    return dg.MetadataValue.table(records=records, schema=column_schema(shown))


def thumbnail_markdown(payload: bytes, *, alt: str) -> str | None:
    """
    The PNG as an inline Markdown image small enough that Dagster shows it without a click, or ``None`` when even
    the smallest thumbnail would not fit (the full picture is always linked by path).
    """
    image = Image.open(io.BytesIO(payload)).convert("RGB")
    for width in _THUMBNAIL_WIDTHS:
        small = image.copy()
        small.thumbnail((width, width))
        # a thumbnail is a glance at the picture: a small palette buys width (16 colours at 48 px, 4 at 96 px)
        for colors in (16, 8, 4):
            buffer = io.BytesIO()
            small.quantize(colors=colors).save(buffer, format="PNG", optimize=True)
            text = f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"
            if len(text) <= INLINE_MARKDOWN_CHARS:
                return text
    return None


def picture(path: UPath, payload: bytes, *, alt: str) -> dict[str, dg.MetadataValue]:
    """
    Metadata of a picture stored at ``path``: ``<alt>_path`` links the full-size file and ``<alt>`` shows a small
    inline thumbnail. The full PNG never goes into the event (maps and charts are 20-320 kB; the run history keeps
    every event of every refresh).
    """
    out: dict[str, dg.MetadataValue] = {f"{alt}_path": dg.MetadataValue.path(str(path))}
    thumbnail = thumbnail_markdown(payload, alt=alt)
    if thumbnail is not None:
        out[alt] = dg.MetadataValue.md(thumbnail)
    return out


def png(path: UPath, payload: bytes, *, alt: str) -> dict[str, dg.MetadataValue]:
    """Store a PNG under ``path`` (a ``previews/`` or ``reports/`` folder) and return its :func:`picture` metadata."""
    write_bytes_atomic(path, payload)
    return picture(path, payload, alt=alt)


def png_file(path: UPath, *, alt: str) -> dict[str, dg.MetadataValue]:
    """The :func:`picture` metadata of an already written PNG."""
    return picture(path, path.read_bytes(), alt=alt)


def check_result(
    name: str,
    outcome: CheckOutcome,
    *,
    asset_key: str,
    blocking_severity: bool = True,
) -> dg.AssetCheckResult:
    """An asset check result from a validator outcome."""
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=asset_key,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if blocking_severity else dg.AssetCheckSeverity.WARN,
        metadata=outcome.metadata(),
    )
