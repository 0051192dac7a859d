"""What an image-source stage got, and whether it is enough to replace the city's last materialization.

An image source (the offline renderer, Mapillary) answers each stage with a :class:`SourceOutcome`: the table,
the items that failed, counts for metadata and, when the result is short, a ``shortfall`` message. A short result
must never replace a good one (an outage would otherwise empty a city and every table built on it), so the asset
raises :class:`~ugdata_pipeline.errors.IncompleteResultError` with that message and the step fails; the previous
materialization stays in place. The messages name the city, what is missing, the top failure reasons and how to
retry (finished cells and downloads are cached, so a retry redoes only the failures).

Plain Python; never imports Dagster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ugdata_pipeline.failures import describe_failures, failure_table

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

    from ugdata_pipeline.imagery.mapillary_discovery import DiscoveryResult
    from ugdata_pipeline.imagery.mapillary_download import DownloadResult

__all__ = [
    "FAILURE_COLUMNS",
    "SourceOutcome",
    "describe_source_failures",
    "discovery_shortfall",
    "download_shortfall",
    "failures_frame",
    "source_failure_table",
]

#: Columns of a failures table: the item (an image id, or ``cell:<bbox>`` for a discovery cell), the stage that
#: failed (discover | resolve | download | verify), tries over all runs, the last error, when (ISO-8601 UTC).
FAILURE_COLUMNS: tuple[str, ...] = ("image_id", "stage", "attempts", "error", "last_attempt_at")

# Ids and signatures inside error texts (``Object 1234567 does not exist``) would make every failure its own reason.
_LONG_NUMBER = re.compile(r"\d{6,}")


def failures_frame(rows: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """A failures table (:data:`FAILURE_COLUMNS`, ``attempts`` int64) from row dicts; empty but typed for none."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "attempts" else object) for c in FAILURE_COLUMNS})
    frame = pd.DataFrame(rows, columns=list(FAILURE_COLUMNS))
    frame["attempts"] = frame["attempts"].astype("int64")
    return frame


@dataclass(slots=True)
class SourceOutcome:
    """
    One stage of an image source for one city.

    Attributes
    ----------
    table
        The stage's table (candidates, or the ``images`` manifest).
    failures
        Items that failed (:data:`FAILURE_COLUMNS`); a failed
        discovery cell has ``image_id`` = ``"cell:<bbox>"``. Recorded on disk by the source and retried next run.
    counts
        Figures for asset metadata (scalars).
    shortfall
        None when the result may replace the last materialization; otherwise why not and how to retry (the
        message of the :class:`~ugdata_pipeline.errors.IncompleteResultError` the asset raises).
    """

    table: pd.DataFrame
    failures: pd.DataFrame = field(default_factory=failures_frame)
    counts: dict[str, object] = field(default_factory=dict)
    shortfall: str | None = None


def source_failure_table(failures: pd.DataFrame) -> pd.DataFrame:
    """Failures by reason (:func:`ugdata_pipeline.failures.failure_table`); a reason is ``"<stage>: <error>"``
    with long numbers (ids) replaced by ``#``."""
    errors = failures["error"].astype(str)
    reasons = failures["stage"].astype(str) + ": " + errors.str.replace(_LONG_NUMBER, "#", regex=True)
    return failure_table(reasons, failures["image_id"], errors)


def describe_source_failures(failures: pd.DataFrame, *, top: int = 3) -> str:
    """``"<n> x <stage>: <error>, ..."`` for the ``top`` most common reasons (and how many other reasons there are)."""
    return describe_failures(source_failure_table(failures), top=top, count_first=True, examples=False)


def _area_text(area: BaseGeometry) -> str:
    minx, miny, maxx, maxy = area.bounds
    return f"lon {minx:.4f}..{maxx:.4f}, lat {miny:.4f}..{maxy:.4f}"


def discovery_shortfall(
    found: DiscoveryResult, *, city: str, area: BaseGeometry, start: object, end: object, include_panos: bool
) -> str | None:
    """
    Why a Mapillary discovery must not replace the city's ``image_candidates``, or None when it may.

    Parameters
    ----------
    found
        The discovery result.
    city
        City slug (named in the message and in the retry instruction).
    area
        The polygon searched (EPSG:4326); its bounds are named when nothing was found.
    start, end, include_panos
        The filters applied, named when they dropped every image.

    Returns
    -------
    str or None
        Incomplete (cells failed or left by the daily request budget), or complete with zero images: the message;
        otherwise None.
    """
    counts = found.counts
    retry = (
        f"Retry: re-materialize image_candidates for {city} (city_dataset_job or city_refresh_job, partition "
        f"{city!r}); finished cells are cached and not asked again, failed ones are."
    )
    if not found.complete:
        finished = sum(int(counts.get(f"cells_{k}", 0)) for k in ("queried", "cached", "split", "truncated"))
        failed, pending = int(counts.get("cells_failed", 0)), int(counts.get("cells_pending", 0))
        requested = finished + failed + pending
        parts = []
        if failed:
            parts.append(f"{failed} of {requested} cells failed ({describe_source_failures(found.failures)})")
        if pending:
            parts.append(
                f"{pending} of {requested} cells are pending because the daily request budget "
                "(max_requests_per_day) is spent; they are asked tomorrow or after raising it"
            )
        return (
            f"Mapillary discovery for {city} is incomplete: {'; '.join(parts)}. The images found so far are "
            f"not stored, so the last image_candidates of {city} and everything built on it stay in place. "
            f"{retry}"
        )
    if found.images.empty:
        filters = (
            f"capture dates [{start or 'open'}, {end or 'open'}), panoramas {'kept' if include_panos else 'dropped'}"
        )
        return (
            f"Mapillary has no imagery for {city} in {_area_text(area)} with the filters {filters}: "
            f"{int(counts.get('images_found', 0))} image(s) found in the cells, "
            f"{int(counts.get('outside_polygon', 0))} outside the city's streets, "
            f"{int(counts.get('panoramas_dropped', 0))} panoramas dropped, "
            f"{int(counts.get('out_of_date_range', 0))} outside the capture dates, "
            f"{int(counts.get('no_position', 0))} without a position. Check start_date / end_date / "
            f"include_panos of the images resource (MapillaryResource) and the city's area; the last "
            f"image_candidates of {city} stay in place."
        )
    return None


def download_shortfall(result: DownloadResult, *, city: str, max_failed_share: float) -> str | None:
    """
    Why a Mapillary download must not replace the city's ``image_files``, or None when it may.

    Parameters
    ----------
    result
        The download result.
    city
        City slug.
    max_failed_share
        Largest share of requested images that may be missing (0..1); above it the stage is incomplete.

    Returns
    -------
    str or None
        Nothing requested, or more than ``max_failed_share`` of the images missing: the message; otherwise None.
    """
    requested = int(result.counts.get("requested", 0))
    retry = (
        f"Retry: re-materialize image_files for {city} (partition {city!r}); the images on disk are verified "
        "and reused, only the missing ones are fetched (they are listed in "
        f"{city}/mapillary_failures.json under the storage root)."
    )
    if requested == 0:
        return (
            f"image_candidates of {city} is empty, so there is nothing to download; re-materialize "
            f"image_candidates for {city} first. The last image_files of {city} stay in place."
        )
    missing = requested - len(result.manifest)
    share = missing / requested
    if share <= max_failed_share:
        return None
    return (
        f"Mapillary download for {city} is incomplete: {missing} of {requested} images failed "
        f"({100 * share:.1f} % > max_failed_share {100 * max_failed_share:.1f} %; "
        f"{describe_source_failures(result.failures)}). The last image_files of {city} and everything built on it stay "
        f"in place. {retry}"
    )
