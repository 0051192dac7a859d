"""Mapillary discovery: every image inside a city's polygon, from the z14 vector coverage tiles.

This is Mapillary's recommended route for large areas: the tiles of the ``mly1_public`` tile set that cover the
polygon (:func:`~ugdata_pipeline.imagery.coverage_tiles.tiles_covering`) are fetched, decoded
(:func:`~ugdata_pipeline.imagery.coverage_tiles.decode_image_points`: id, position, capture time, compass angle,
sequence, panorama flag per image), de-duplicated by id, clipped exactly to the polygon and filtered (panoramas
off by default, capture-date range) on the client, so one tile cache serves every filter setting. A city is a
few dozen tile requests with no per-request result cap, so the Graph API's bbox search (2,000 results, query
timeouts on dense boxes) is not used at all; the Graph API is asked only for the details of the images kept
after thinning (:mod:`~ugdata_pipeline.imagery.mapillary_details`).

Every answered tile is cached on disk (its ``.mvt`` body) so a rerun costs no requests, and an optional daily
request budget stops discovery cleanly (the tiles left are reported as pending and fetched by the next run).

Entry points: :meth:`MapillaryClient.discover <ugdata_pipeline.imagery.mapillary.MapillaryClient.discover>` and
:func:`~ugdata_pipeline.imagery.mapillary.discover_images`. Plain Python; never imports Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
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
from ugdata_pipeline.imagery.coverage_tiles import TILE_ZOOM, decode_image_points, iso_from_ms, tiles_covering
from ugdata_pipeline.imagery.mapillary import (
    _SERVICE_DOWN,
    BUDGET_FILENAME,
    DISCOVERY_COLUMNS,
    SOURCE,
    _BudgetExhaustedError,
    _describe,
    _gather_or_cancel,
    _GaveUpError,
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

#: Tiles that failed in the last discovery run, in the cache folder (empty list once every tile answered).
FAILED_CELLS_FILENAME = "_failed_cells.json"


@dataclass(slots=True)
class DiscoveryResult:
    """
    Images found over a polygon.

    Attributes
    ----------
    images
        One row per image inside the polygon that passed the filters, columns :data:`DISCOVERY_COLUMNS`, sorted by
        ``image_id``: ``lon`` / ``lat`` in decimal degrees (EPSG:4326, the tile position: within ~0.6 m),
        ``compass_angle`` in degrees clockwise from north in ``[0, 360)`` (NaN when the tile has none),
        ``captured_at`` an ISO-8601 UTC string (``...Z``; ``""`` when unknown), ``sequence_id`` string,
        ``creator`` ``""`` (not in the tiles: :func:`~ugdata_pipeline.imagery.mapillary_details.fetch_details`
        fills it in for the images kept), ``is_pano`` bool.
    failures
        Tiles that failed after all retries (columns :data:`FAILURE_COLUMNS`, ``image_id`` = ``"tile:14/<x>/<y>"``,
        ``stage`` = ``"discover"``); they are not cached, so the next run asks again. Also written to
        ``<cache_dir>/_failed_cells.json``.
    counts
        Figures for metadata: ``cells`` (tiles covering the polygon), ``requests``, ``retries``, ``cells_queried``,
        ``cells_cached``, ``cells_pending`` (left by the request budget), ``cells_failed``, ``points`` (tile
        points decoded), ``outside_polygon`` (points outside it), ``no_id`` (points inside without an image id,
        dropped), ``images_found`` (distinct ids inside), ``panoramas_dropped``, ``out_of_date_range``,
        ``no_position`` (always 0: a tile point has a position), ``no_compass`` (kept, with a NaN
        ``compass_angle``), ``images``.
    complete
        False when the request budget ran out or a tile failed: rerun to finish (cached tiles cost nothing).
    """

    images: pd.DataFrame
    failures: pd.DataFrame
    counts: dict[str, int]
    complete: bool


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
    Find the images inside a polygon from the z14 coverage tiles that cover it.

    Parameters
    ----------
    polygon_wgs84
        The area: a shapely (Multi)Polygon in EPSG:4326 decimal degrees, or a ``(min_lon, min_lat, max_lon,
        max_lat)`` bbox.
    cache_dir
        Folder of the tile cache (one ``.mvt`` file per tile) and of the daily request counter (created on first
        write).
    start, end
        Capture-date range ``[start, end)`` (date, datetime, ISO string; naive means UTC); None = open.
    include_panos
        Keep 360° panoramas (off by default: the pipeline reasons about a view direction).
    max_requests
        Daily budget of tile requests (UTC day, counted across runs in ``cache_dir``); None = unlimited. When it
        runs out, the tiles left are counted in ``cells_pending`` and ``complete`` is False.
    cache_max_age_days
        Cached tiles older than this are fetched again (for scheduled refreshes); None = cache never expires.

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
    tiles = tiles_covering(area, TILE_ZOOM)
    counts = dict.fromkeys(("cells_queried", "cells_cached", "cells_pending", "cells_failed"), 0)
    counts["cells"] = len(tiles)
    failures: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    semaphore = asyncio.Semaphore(client.concurrency)

    async with client._session() as session, session.new_client(client.concurrency) as http:

        async def visit(tile: tuple[int, int]) -> tuple[str, Any]:
            async with semaphore:
                return await _discover_tile(client, session, http, tile, cache, budget, max_age_s)

        try:
            outcomes = await _gather_or_cancel([visit(tile) for tile in tiles])
        finally:
            if (budget.used or budget.exhausted) and session.token_ok:  # an auth failure writes nothing
                budget.save()
        stats = session.stats
    for kind, payload in outcomes:
        counts[f"cells_{kind}"] += 1
        if kind in ("queried", "cached"):
            frames.append(payload)
        elif kind == "failed":
            failures.append(payload)

    images, filter_counts = _discovery_frame(frames, area, start_ms, end_ms, include_panos)
    counts.update(filter_counts)
    counts["requests"] = stats.get("tile_requests", 0)
    counts["retries"] = stats.get("retries", 0)
    complete = counts["cells_pending"] == 0 and counts["cells_failed"] == 0
    # Failed tiles are not cached, so the next run asks them again; the file says which, for people and tools.
    failed_path = cache / FAILED_CELLS_FILENAME
    if failures or failed_path.exists():
        _write_atomic(failed_path, json.dumps(failures, indent=1).encode())
    if budget.exhausted:
        logger.warning(
            "Mapillary daily request budget (%s) exhausted: %d tile(s) left for the next run",
            max_requests,
            counts["cells_pending"],
        )
    logger.info(
        "Mapillary discovery: %d images kept of %d found in %d tile(s); %d requests, %d tiles from cache, "
        "%d pending, %d failed",
        len(images),
        counts["images_found"],
        len(tiles),
        counts["requests"],
        counts["cells_cached"],
        counts["cells_pending"],
        counts["cells_failed"],
    )
    return DiscoveryResult(images=images, failures=failures_frame(failures), counts=counts, complete=complete)


def _tile_text(tile: tuple[int, int]) -> str:
    return f"{TILE_ZOOM}/{tile[0]}/{tile[1]}"


def _cache_path(client: MapillaryClient, cache: Path, tile: tuple[int, int]) -> Path:
    # The service URL is part of the name, so a test server's tiles never stand in for the real service's.
    key = hashlib.sha1(client.tiles_url.encode()).hexdigest()[:10]
    return cache / f"tile_{key}_{TILE_ZOOM}_{tile[0]}_{tile[1]}.mvt"


def _read_cached_tile(path: Path, tile: tuple[int, int], max_age_s: float | None) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    if max_age_s is not None and datetime.now(UTC).timestamp() - path.stat().st_mtime > max_age_s:
        return None
    try:
        return decode_image_points(path.read_bytes(), *tile, TILE_ZOOM)
    except (ValueError, OSError):
        logger.warning("cached coverage tile %s is unreadable; asking Mapillary again", path)
        return None


async def _discover_tile(
    client: MapillaryClient,
    session: _Session,
    http: httpx.AsyncClient,
    tile: tuple[int, int],
    cache: Path,
    budget: _DailyBudget,
    max_age_s: float | None,
) -> tuple[str, Any]:
    """One tile: ``(kind, payload)`` with kind queried|cached (its points), pending or failed (a failure row)."""
    path = _cache_path(client, cache, tile)
    cached = _read_cached_tile(path, tile, max_age_s)
    if cached is not None:
        return "cached", cached
    if session.service_down:
        return "failed", _tile_failure(tile, _SERVICE_DOWN, 0)
    try:
        response = await client._request(
            session,
            http,
            f"{client.tiles_url}/{_tile_text(tile)}",
            graph=True,
            token_in_query=True,
            counter="tile_requests",
            budget=budget,
        )
    except _BudgetExhaustedError:
        return "pending", None
    except _GaveUpError as exc:
        return "failed", _tile_failure(tile, exc.error, exc.attempts)
    if response.status_code == 204 or (response.status_code == 200 and not response.content):
        points = decode_image_points(b"", *tile, TILE_ZOOM)  # no imagery in this tile
    elif response.status_code != 200:
        return "failed", _tile_failure(tile, redact(_describe(response), client._token), 1)
    else:
        try:
            points = decode_image_points(response.content, *tile, TILE_ZOOM)
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "no content type")
            return "failed", _tile_failure(tile, f"{exc} (Content-Type: {kind})", 1)
    _write_atomic(path, response.content)
    budget.save()  # so a killed run still counts what it spent today
    return "queried", points


def _tile_failure(tile: tuple[int, int], error: str, attempts: int) -> dict[str, Any]:
    logger.warning("Mapillary coverage tile %s failed after %d attempt(s): %s", _tile_text(tile), attempts, error)
    return {
        "image_id": f"tile:{_tile_text(tile)}",
        "stage": "discover",
        "attempts": attempts,
        "error": error,
        "last_attempt_at": _now_iso(),
    }


def _discovery_frame(
    frames: list[pd.DataFrame],
    area: BaseGeometry,
    start_ms: int | None,
    end_ms: int | None,
    include_panos: bool,
) -> tuple[pd.DataFrame, dict[str, int]]:
    points = pd.concat(frames, ignore_index=True) if frames else decode_image_points(b"", 0, 0, TILE_ZOOM)
    counts = {"points": len(points)}
    inside = shapely.intersects_xy(area, points["lon"].to_numpy(), points["lat"].to_numpy())
    counts["outside_polygon"] = int((~inside).sum())
    points = points[inside]
    # A point without an id cannot be asked for or downloaded (the published test tiles blank every id).
    has_id = points["image_id"] != ""
    counts["no_id"] = int((~has_id).sum())
    frame = points[has_id].drop_duplicates("image_id", keep="first")
    counts["images_found"] = len(frame)
    counts["no_position"] = 0  # a tile point always has one; kept for the metadata that names it
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
    frame = frame[keep].copy()
    frame["source"] = SOURCE
    frame["captured_at"] = [iso_from_ms(ms) for ms in frame["captured_ms"]]
    frame["creator"] = ""  # not in the tiles: filled in by the details of the images kept
    frame["compass_angle"] = normalize_bearing_deg(frame["compass_angle"].to_numpy())  # NaN stays NaN
    counts["no_compass"] = int(frame["compass_angle"].isna().sum())
    frame = frame[list(DISCOVERY_COLUMNS)].sort_values("image_id", kind="stable").reset_index(drop=True)
    counts["images"] = len(frame)
    return frame, counts
