"""Metadata helpers shared by the assets: previews, PNG images, check results."""

from __future__ import annotations

import base64

import dagster as dg
import pandas as pd
from upath import UPath

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.table_files import write_bytes_atomic


def preview(frame: pd.DataFrame, *, rows: int = 8, columns: list[str] | None = None) -> dg.MetadataValue:
    """The first ``rows`` rows as a Markdown table (geometry left out, long text cut)."""
    shown = frame.drop(columns=["geometry"], errors="ignore")
    if columns is not None:
        shown = shown[[c for c in columns if c in shown.columns]]
    shown = shown.head(rows).map(lambda v: (v[:77] + "...") if isinstance(v, str) and len(v) > 80 else v)
    return dg.MetadataValue.md(shown.to_markdown(index=False))


def png(path: UPath, payload: bytes, *, alt: str) -> dict[str, dg.MetadataValue]:
    """Store a PNG beside the tables and return metadata that shows it inline and links the file."""
    write_bytes_atomic(path, payload)
    encoded = base64.b64encode(payload).decode("ascii")
    return {
        f"{alt}_path": dg.MetadataValue.path(str(path)),
        alt: dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})"),
    }


def png_file(path: UPath, *, alt: str) -> dict[str, dg.MetadataValue]:
    """Metadata that shows an already written PNG inline and links the file."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return {
        f"{alt}_path": dg.MetadataValue.path(str(path)),
        alt: dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})"),
    }


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
