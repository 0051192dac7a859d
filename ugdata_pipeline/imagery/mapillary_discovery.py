"""Mapillary discovery: every image inside a city's polygon, with an adaptive quadtree of bbox searches.

The Graph API search ``GET /images?bbox=...&fields=...&limit=...`` returns at most 2,000 images per call with no
pagination, and large or dense boxes fail with HTTP 400 "Query Timeout". So the polygon's bounding box is cut
into a quadtree: start from cells of ``max_cell_deg`` aligned to a global grid (the same cells, hence the same
cache entries, whatever the polygon), skip cells that do not intersect the polygon, and split a cell into four
when it returns ``search_limit`` results or a query timeout, down to ``min_cell_deg``. Every answered cell is
cached on disk (one JSON file per cell) so a rerun costs no calls, and an optional daily request budget stops
discovery cleanly (the cells left are reported as pending and fetched by the next run). Results are
deduplicated by id, clipped to the polygon and filtered (panoramas off by default, capture-date range) on the
client, so one cache serves every filter setting. (The bbox search was chosen over z14 vector tiles because
the tile endpoint's reported budget of 10k-50k requests per day, not the search's 10k per minute, is what
limits whole-city discovery.)

Entry points: :meth:`MapillaryClient.discover <ugdata_pipeline.imagery.mapillary.MapillaryClient.discover>` and
:func:`~ugdata_pipeline.imagery.mapillary.discover_images`. Plain Python; never imports Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.graph.geodesy import normalize_bearing_deg
from ugdata_pipeline.imagery.mapillary import (
    _SERVICE_DOWN,
    BUDGET_FILENAME,
    DISCOVERY_COLUMNS,
    DISCOVERY_FIELDS,
    SOURCE,
    _BudgetExhaustedError,
    _describe,
    _gather_or_cancel,
    _GaveUpError,
    _is_query_timeout,
    _now_iso,
    _Session,
    _write_atomic,
)
from ugdata_pipeline.imagery.source_outcome import failures_frame
from ugdata_pipeline.throttle import redact

if TYPE_CHECKING:
    from ugdata_pipeline.imagery.mapillary import MapillaryClient

__all__ = ["FAILED_CELLS_FILENAME", "DiscoveryResult", "discover"]

logger = logging.getLogger(__name__)

#: Cells that failed in the last discovery run, in the cache folder (empty list once every cell answered).
FAILED_CELLS_FILENAME = "_failed_cells.json"


@dataclass(slots=True)
class DiscoveryResult:
    """
    Images found over a polygon.

    Attributes
    ----------
    images
        One row per image inside the polygon that passed the filters, columns :data:`DISCOVERY_COLUMNS`, sorted by
        ``image_id``: ``lon`` / ``lat`` in decimal degrees (EPSG:4326), ``compass_angle`` in degrees clockwise from
        north in ``[0, 360)``, ``captured_at`` an ISO-8601 UTC string (``...Z``), ``sequence_id`` and ``creator``
        (username) strings, ``is_pano`` bool.
    failures
        Cells that failed after all retries (columns :data:`FAILURE_COLUMNS`, ``image_id`` = ``"cell:<bbox>"``,
        ``stage`` = ``"discover"``); they are not cached, so the next run asks again. Also written to
        ``<cache_dir>/_failed_cells.json``.
    counts
        Figures for metadata: ``requests``, ``retries``, ``cells_queried``, ``cells_cached``, ``cells_split``,
        ``cells_truncated`` (at ``min_cell_deg`` and still at the limit), ``cells_pending`` (left by the request
        budget), ``cells_failed``, ``images_found``, ``outside_polygon``, ``panoramas_dropped``,
        ``out_of_date_range``, ``no_position`` (dropped: no geometry), ``no_compass`` (kept, with a NaN
        ``compass_angle``: Mapillary has neither ``compass_angle`` nor ``computed_compass_angle``), ``images``.
    complete
        False when the request budget ran out or a cell failed: rerun to finish (cached cells cost nothing).
    """

    images: pd.DataFrame
    failures: pd.DataFrame
    counts: dict[str, int]
    complete: bool


Cell = tuple[float, float, float, float]  # (min lon, min lat, max lon, max lat), decimal degrees
_CELL_DECIMALS = 9  # cell corners are rounded to this many decimals (~0.1 mm), also in the request and cache key


def _cell_text(cell: Cell) -> str:
    return ",".join(f"{v:.{_CELL_DECIMALS}f}".rstrip("0").rstrip(".") for v in cell)


def _quarters(cell: Cell) -> list[Cell]:
    minx, miny, maxx, maxy = cell
    midx, midy = round((minx + maxx) / 2, _CELL_DECIMALS), round((miny + maxy) / 2, _CELL_DECIMALS)
    return [(minx, miny, midx, midy), (midx, miny, maxx, midy), (minx, midy, midx, maxy), (midx, midy, maxx, maxy)]


def _overlaps(area: BaseGeometry, cell: Cell) -> bool:
    """Whether a cell shares area with the polygon (a cell that only touches its edge adds nothing: the neighbour
    across that edge holds the same boundary points, since a bbox search includes its edges)."""
    cell_box = box(*cell)
    return area.intersects(cell_box) and not area.touches(cell_box)


def _initial_cells(area: BaseGeometry, size_deg: float) -> list[Cell]:
    """Cells of a global ``size_deg`` grid that intersect ``area`` (grid-aligned, so caches survive polygon edits)."""
    minx, miny, maxx, maxy = area.bounds
    cells = []
    for ix in range(math.floor(minx / size_deg), math.floor(maxx / size_deg) + 1):
        for iy in range(math.floor(miny / size_deg), math.floor(maxy / size_deg) + 1):
            # Rounded so that 1504 * 0.04 is 60.16, not 60.160000000000004 (which would graze a neighbour cell).
            cell = tuple(
                round(v, _CELL_DECIMALS)
                for v in (ix * size_deg, iy * size_deg, (ix + 1) * size_deg, (iy + 1) * size_deg)
            )
            if _overlaps(area, cell):
                cells.append(cell)
    return cells


class _DailyBudget:
    """Requests allowed per UTC day, counted across runs in ``<cache_dir>/_request_budget.json``."""

    def __init__(self, path: Path, limit: int | None) -> None:
        self.path = path
        self.limit = limit
        self.day = datetime.now(UTC).date().isoformat()
        self.used = 0
        self.exhausted = False
        if path.is_file():
            with contextlib.suppress(ValueError, OSError):
                stored = json.loads(path.read_text(encoding="utf-8"))
                if stored.get("day") == self.day:
                    self.used = int(stored.get("used", 0))

    def take(self) -> bool:
        if self.limit is not None and self.used >= self.limit:
            self.exhausted = True
            return False
        self.used += 1
        return True

    def save(self) -> None:
        record = {"day": self.day, "used": self.used, "limit": self.limit, "exhausted": self.exhausted}
        if self.exhausted:
            record["exhausted_at"] = _now_iso()
        _write_atomic(self.path, json.dumps(record).encode())


def _validate_area(polygon_wgs84: object) -> BaseGeometry:
    if isinstance(polygon_wgs84, tuple | list) and len(polygon_wgs84) == 4:
        polygon_wgs84 = box(*map(float, polygon_wgs84))
    if not isinstance(polygon_wgs84, BaseGeometry):
        msg = (
            f"polygon_wgs84 must be a shapely Polygon/MultiPolygon in EPSG:4326 or a (min_lon, min_lat, max_lon, "
            f"max_lat) bbox, got {type(polygon_wgs84).__name__}"
        )
        raise ImageryInputError(msg)
    if polygon_wgs84.is_empty or polygon_wgs84.geom_type not in ("Polygon", "MultiPolygon"):
        msg = f"polygon_wgs84 must be a non-empty Polygon or MultiPolygon, got {polygon_wgs84.geom_type}"
        raise ImageryInputError(msg)
    if not polygon_wgs84.is_valid:
        msg = "polygon_wgs84 is not a valid geometry; repair it first (shapely.make_valid(polygon))"
        raise ImageryInputError(msg)
    minx, miny, maxx, maxy = polygon_wgs84.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        msg = (
            f"polygon_wgs84 bounds {polygon_wgs84.bounds!r} are outside lon ±180 / lat ±90; the polygon must "
            "be in decimal degrees (EPSG:4326), not metres; reproject it with to_crs('EPSG:4326')"
        )
        raise ImageryInputError(msg)
    return polygon_wgs84


def _to_epoch_ms(name: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        msg = f"`{name}` must be a date, datetime or ISO-8601 string, got {value!r}"
        raise ImageryInputError(msg) from exc
    if stamp is pd.NaT:
        msg = f"`{name}` must be a date, datetime or ISO-8601 string, got {value!r}"
        raise ImageryInputError(msg)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1_000_000)


def _parse_record(record: dict[str, Any]) -> dict[str, Any] | None:
    """One Graph API image object as a discovery row (with ``captured_ms`` for filtering); None without a position."""
    geometry = record.get("geometry") or {}
    coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if not coordinates or len(coordinates) < 2 or record.get("id") is None:
        return None
    angle = record.get("compass_angle")
    if angle is None:
        angle = record.get("computed_compass_angle")
    captured_ms = record.get("captured_at")
    captured = (
        datetime.fromtimestamp(captured_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(captured_ms, int | float)
        else ""
    )
    creator = record.get("creator")
    if isinstance(creator, dict):
        creator = creator.get("username") or creator.get("id") or ""
    sequence = record.get("sequence")
    if isinstance(sequence, dict):  # some responses nest the sequence as an object
        sequence = sequence.get("id")
    return {
        "image_id": str(record["id"]),
        "source": SOURCE,
        "lon": float(coordinates[0]),
        "lat": float(coordinates[1]),
        "compass_angle": float(angle) if angle is not None else math.nan,
        "captured_at": captured,
        "sequence_id": "" if sequence is None else str(sequence),
        "is_pano": bool(record.get("is_pano", False)),
        "creator": "" if creator is None else str(creator),
        "captured_ms": float(captured_ms) if isinstance(captured_ms, int | float) else math.nan,
    }


# --------------------------------------------------------------------------------------------------------------------
# discovery


async def discover(
    client: MapillaryClient,
    polygon_wgs84: BaseGeometry | tuple[float, float, float, float],
    *,
    cache_dir: str | os.PathLike[str],
    start: object = None,
    end: object = None,
    include_panos: bool = False,
    max_requests: int | None = None,
    cache_max_age_days: float | None = None,
) -> DiscoveryResult:
    """
    Find the images inside a polygon with the adaptive bbox search.

    Parameters
    ----------
    polygon_wgs84
        The area: a shapely (Multi)Polygon in EPSG:4326 decimal degrees, or a ``(min_lon, min_lat, max_lon,
        max_lat)`` bbox.
    cache_dir
        Folder of the per-cell response cache and of the daily request counter (created on first write).
    start, end
        Capture-date range ``[start, end)`` (date, datetime, ISO string; naive means UTC); None = open.
    include_panos
        Keep 360° panoramas (off by default: the pipeline reasons about a view direction).
    max_requests
        Daily budget of Graph API requests (UTC day, counted across runs in ``cache_dir``); None = unlimited.
        When it runs out, the cells left are counted in ``cells_pending`` and ``complete`` is False.
    cache_max_age_days
        Cached cells older than this are fetched again (for scheduled refreshes); None = cache never expires.

    Returns
    -------
    DiscoveryResult
    """
    area = _validate_area(polygon_wgs84)
    start_ms, end_ms = _to_epoch_ms("start", start), _to_epoch_ms("end", end)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        msg = f"`start` ({start!r}) must be before `end` ({end!r})"
        raise ImageryInputError(msg)
    if max_requests is not None and (not isinstance(max_requests, int) or max_requests < 0):
        msg = f"`max_requests` must be a non-negative integer or None, got {max_requests!r}"
        raise ImageryInputError(msg)
    cache = Path(cache_dir)
    budget = _DailyBudget(cache / BUDGET_FILENAME, max_requests)
    max_age_s = None if cache_max_age_days is None else float(cache_max_age_days) * 86400.0
    shapely.prepare(area)
    found: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    counts = dict.fromkeys(
        ("cells_queried", "cells_cached", "cells_split", "cells_truncated", "cells_pending", "cells_failed"), 0
    )
    semaphore = asyncio.Semaphore(client.concurrency)

    async with client._session() as session, session.new_client(client.concurrency) as http:

        async def visit(cell: Cell) -> tuple[str, Any]:
            async with semaphore:
                return await _discover_cell(client, session, http, cell, cache, budget, max_age_s)

        level = _initial_cells(area, client.max_cell_deg)
        try:
            while level:
                outcomes = await _gather_or_cancel([visit(cell) for cell in level])
                next_level: list[Cell] = []
                for cell, (kind, payload) in zip(level, outcomes, strict=True):
                    counts[f"cells_{kind}"] = counts.get(f"cells_{kind}", 0) + 1
                    if kind in ("queried", "cached", "truncated"):
                        for record in payload:
                            found.setdefault(str(record.get("id")), record)
                    elif kind == "split":
                        next_level.extend(q for q in _quarters(cell) if _overlaps(area, q))
                    elif kind == "failed":
                        failures.append(payload)
                level = next_level
        finally:
            if (budget.used or budget.exhausted) and session.token_ok:  # an auth failure writes nothing
                budget.save()
        stats = session.stats

    images, filter_counts = _discovery_frame(found, area, start_ms, end_ms, include_panos)
    counts.update(filter_counts)
    counts["requests"] = stats.get("search_requests", 0)
    counts["retries"] = stats.get("retries", 0)
    complete = counts["cells_pending"] == 0 and counts["cells_failed"] == 0
    # Failed cells are not cached, so the next run asks them again; the file says which, for people and tools.
    failed_path = cache / FAILED_CELLS_FILENAME
    if failures or failed_path.exists():
        _write_atomic(failed_path, json.dumps(failures, indent=1).encode())
    if budget.exhausted:
        logger.warning(
            "Mapillary daily request budget (%s) exhausted: %d cell(s) left for the next run",
            max_requests,
            counts["cells_pending"],
        )
    logger.info(
        "Mapillary discovery: %d images kept of %d found; %d requests, %d cells from cache, %d split, "
        "%d pending, %d failed",
        len(images),
        counts["images_found"],
        counts["requests"],
        counts["cells_cached"],
        counts["cells_split"],
        counts["cells_pending"],
        counts["cells_failed"],
    )
    return DiscoveryResult(images=images, failures=failures_frame(failures), counts=counts, complete=complete)


def _cache_path(client: MapillaryClient, cache: Path, cell: Cell) -> Path:
    key = json.dumps([client.graph_url, _cell_text(cell), DISCOVERY_FIELDS, client.search_limit])
    return cache / f"cell_{hashlib.sha1(key.encode()).hexdigest()}.json"


async def _discover_cell(
    client: MapillaryClient,
    session: _Session,
    http: httpx.AsyncClient,
    cell: Cell,
    cache: Path,
    budget: _DailyBudget,
    max_age_s: float | None,
) -> tuple[str, Any]:
    """One cell: ``(kind, payload)`` with kind queried|cached|truncated (records), split, pending or failed."""
    path = _cache_path(client, cache, cell)
    cached = _read_cache(path, max_age_s)
    if cached is not None:
        logger.debug("Mapillary cell %s from cache %s", _cell_text(cell), path)
        return ("split", None) if cached.get("split") else ("cached", cached.get("data", []))
    if session.service_down:
        return "failed", _cell_failure(cell, _SERVICE_DOWN, 0)
    can_split = (cell[2] - cell[0]) / 2 >= client.min_cell_deg and (cell[3] - cell[1]) / 2 >= client.min_cell_deg
    params = {"bbox": _cell_text(cell), "fields": DISCOVERY_FIELDS, "limit": str(client.search_limit)}
    try:
        response = await client._request(
            session,
            http,
            f"{client.graph_url}/images",
            params=params,
            graph=True,
            counter="search_requests",
            retry_query_timeout=not can_split,
            budget=budget,
        )
    except _BudgetExhaustedError:
        return "pending", None
    except _GaveUpError as exc:
        return "failed", _cell_failure(cell, exc.error, exc.attempts)
    if response.status_code == 400 and _is_query_timeout(response) and can_split:
        _write_cache(path, cell, split=True, data=[], budget=budget)
        return "split", None
    if response.status_code != 200:
        return "failed", _cell_failure(cell, redact(_describe(response), client._token), 1)
    try:
        data = response.json().get("data", [])
    except (ValueError, AttributeError):
        return "failed", _cell_failure(cell, "response is not the Graph API's {'data': [...]} JSON", 1)
    if len(data) >= client.search_limit and can_split:
        _write_cache(path, cell, split=True, data=[], budget=budget)
        return "split", None
    truncated = len(data) >= client.search_limit
    if truncated:
        logger.warning(
            "Mapillary cell %s still holds >= %d images at the minimum cell size; keeping the first %d",
            _cell_text(cell),
            client.search_limit,
            len(data),
        )
    _write_cache(path, cell, split=False, data=data, budget=budget)
    return ("truncated" if truncated else "queried"), data


def _read_cache(path: Path, max_age_s: float | None) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    if max_age_s is not None and datetime.now(UTC).timestamp() - path.stat().st_mtime > max_age_s:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        logger.warning("discovery cache file %s is unreadable; asking Mapillary again", path)
        return None


def _write_cache(path: Path, cell: Cell, *, split: bool, data: list[Any], budget: _DailyBudget) -> None:
    record = {"bbox": list(cell), "split": split, "fetched_at": _now_iso(), "data": data}
    _write_atomic(path, json.dumps(record).encode())
    budget.save()  # so a killed run still counts what it spent today


def _cell_failure(cell: Cell, error: str, attempts: int) -> dict[str, Any]:
    logger.warning("Mapillary cell %s failed after %d attempt(s): %s", _cell_text(cell), attempts, error)
    return {
        "image_id": f"cell:{_cell_text(cell)}",
        "stage": "discover",
        "attempts": attempts,
        "error": error,
        "last_attempt_at": _now_iso(),
    }


def _discovery_frame(
    found: dict[str, dict[str, Any]],
    area: BaseGeometry,
    start_ms: int | None,
    end_ms: int | None,
    include_panos: bool,
) -> tuple[pd.DataFrame, dict[str, int]]:
    rows = [row for row in map(_parse_record, found.values()) if row is not None]
    counts = {"images_found": len(found), "no_position": len(found) - len(rows)}
    frame = pd.DataFrame(rows, columns=[*DISCOVERY_COLUMNS, "captured_ms"])
    frame = frame.astype({"lon": float, "lat": float, "compass_angle": float, "captured_ms": float, "is_pano": bool})
    inside = shapely.intersects_xy(area, frame["lon"].to_numpy(), frame["lat"].to_numpy())
    counts["outside_polygon"] = int((~inside).sum())
    frame = frame[inside]
    if not include_panos:
        counts["panoramas_dropped"] = int(frame["is_pano"].sum())
        frame = frame[~frame["is_pano"]]
    else:
        counts["panoramas_dropped"] = 0
    keep = np.ones(len(frame), dtype=bool)
    captured = frame["captured_ms"].to_numpy()
    if start_ms is not None:
        keep &= captured >= start_ms  # NaN (unknown date) fails both bounds
    if end_ms is not None:
        keep &= captured < end_ms
    counts["out_of_date_range"] = int((~keep).sum())
    frame = frame[keep].drop(columns="captured_ms")
    frame["compass_angle"] = normalize_bearing_deg(frame["compass_angle"].to_numpy())  # NaN stays NaN
    counts["no_compass"] = int(frame["compass_angle"].isna().sum())
    frame = frame.sort_values("image_id", kind="stable").reset_index(drop=True)
    counts["images"] = len(frame)
    return frame, counts
