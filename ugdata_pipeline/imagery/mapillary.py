"""Online street-level imagery from the Mapillary API v4: discovery over a city's polygon and resumable download.

Discovery
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

Download
    Thumbnail URLs expire, so each one is resolved (``GET /{image_id}?fields=thumb_1024_url``) just before its
    download, and re-resolved when the CDN answers 403/410. Requests run under bounded concurrency and a token
    bucket (:class:`~ugdata_pipeline.throttle.AsyncTokenBucket`); 429 (``Retry-After`` honoured), 5xx, timeouts and
    transport errors are retried with :class:`~ugdata_pipeline.throttle.RetryPolicy`. A JPEG is verified with
    Pillow (``verify()`` plus a full decode and an end-of-image marker check) and only then written to a temporary
    file in the target folder and renamed, so a file at ``<root>/<city>/images/<image_id>.jpg`` is always a finished
    image: the next run skips it. Images that still fail are recorded (``stage``: discover | resolve | download |
    verify) in ``<root>/<city>/mapillary_failures.json`` and retried by the next run; a corrupt body is not
    retried within the run (the CDN would send the same bytes again). When ``max(10, 2 x concurrency)``
    requests in a row fail after every retry, the service is taken to be down and the images left are recorded
    as failed without being asked for (rather than hours of backoff), to be retried by the next run.

Secrets
    The access token is sent only as the header ``Authorization: OAuth <token>`` to the Graph API (never in a URL,
    never to the CDN) and is redacted from every message. An invalid token (HTTP 401, or an ``OAuthException`` /
    code 190 error body) raises one :class:`MapillaryAuthError` naming ``MAPILLARY_ACCESS_TOKEN``; the first Graph
    request of a run is made alone, so a bad token fails before anything is written.

Usage::

    client = MapillaryClient(token_from_env(), concurrency=16, requests_per_second=10)
    found = discover_images(client, city_polygon_wgs84, cache_dir=work / "mapillary_cells", start="2020-01-01")
    thinned = thin_images(found.images)  # ugdata_pipeline.imagery.thin
    result = download_images(client, thinned.images, root=root, city_slug="helsinki")
    result.manifest, result.failures, result.counts

Plain Python; never imports Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import pandas as pd
import shapely
from PIL import Image
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ugdata_pipeline.errors import ImageryInputError, UgdataError
from ugdata_pipeline.graph.geodesy import normalize_bearing_deg
from ugdata_pipeline.throttle import AsyncTokenBucket, RetryPolicy, parse_retry_after, redact

__all__ = [
    "DISCOVERY_COLUMNS",
    "FAILURES_FILENAME",
    "FAILURE_COLUMNS",
    "GRAPH_URL",
    "MANIFEST_COLUMNS",
    "SEARCH_LIMIT",
    "THUMBNAIL_SIZES",
    "TOKEN_ENV_VAR",
    "DiscoveryResult",
    "DownloadResult",
    "MapillaryAuthError",
    "MapillaryClient",
    "MapillaryError",
    "discover_images",
    "download_images",
    "token_from_env",
]

logger = logging.getLogger(__name__)

#: Environment variable that holds the Mapillary client token.
TOKEN_ENV_VAR = "MAPILLARY_ACCESS_TOKEN"
GRAPH_URL = "https://graph.mapillary.com"
#: Most results one bbox search returns (the API has no pagination).
SEARCH_LIMIT = 2000
#: Fields requested per image at discovery. ``computed_compass_angle`` fills in a missing ``compass_angle``.
DISCOVERY_FIELDS = "id,geometry,compass_angle,computed_compass_angle,captured_at,sequence,is_pano,creator"
THUMBNAIL_SIZES: tuple[str, ...] = ("thumb_256_url", "thumb_1024_url", "thumb_2048_url", "thumb_original_url")
#: Columns of :attr:`DiscoveryResult.images` (and the columns :meth:`MapillaryClient.download` needs).
DISCOVERY_COLUMNS: tuple[str, ...] = (
    "image_id", "source", "lon", "lat", "compass_angle", "captured_at", "sequence_id", "is_pano", "creator",
)  # fmt: skip
#: Columns of the ``images`` manifest (data contract shared with the offline renderer).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id", "source", "lon", "lat", "compass_angle", "captured_at", "sequence_id", "path", "width", "height",
    "is_pano", "creator", "scene_facts",
)  # fmt: skip
FAILURE_COLUMNS: tuple[str, ...] = ("image_id", "stage", "attempts", "error", "last_attempt_at")
#: Failures of the last download run, in the city folder; the next run retries them.
FAILURES_FILENAME = "mapillary_failures.json"
SOURCE = "mapillary"
BUDGET_FILENAME = "_request_budget.json"

_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Graph API error codes that mean "slow down" (Facebook-style app/user/call rate limits), retried like a 429.
_RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
_AUTH_ERROR_CODE = 190
_EXPIRED_URL_STATUSES = frozenset({403, 410})
_USER_AGENT = "ugdata-pipeline (Mapillary API v4)"
_SERVICE_DOWN = "not attempted: too many requests in a row failed after every retry (Mapillary looks down)"
_FIX_TOKEN = (
    f"Set the environment variable {TOKEN_ENV_VAR} to a valid Mapillary access token (a client token from "
    "https://www.mapillary.com/dashboard/developers; it starts with 'MLY|') and run again"
)


class MapillaryError(UgdataError, RuntimeError):
    """The Mapillary API answered in a way the pipeline cannot work with."""


class MapillaryAuthError(UgdataError, PermissionError):
    """The Mapillary access token is missing, malformed or rejected (the message names ``MAPILLARY_ACCESS_TOKEN``)."""


def token_from_env(environ: Mapping[str, str] | None = None) -> str:
    """
    Read the Mapillary access token from ``MAPILLARY_ACCESS_TOKEN``.

    Parameters
    ----------
    environ
        Mapping to read from; ``os.environ`` by default.

    Returns
    -------
    str
        The token, stripped of surrounding whitespace.

    Raises
    ------
    MapillaryAuthError
        When the variable is unset or blank.
    """
    source = os.environ if environ is None else environ
    token = (source.get(TOKEN_ENV_VAR) or "").strip()
    if not token:
        msg = f"{TOKEN_ENV_VAR} is not set (or is blank), so Mapillary cannot be queried. {_FIX_TOKEN}"
        raise MapillaryAuthError(msg)
    return token


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
        ``stage`` = ``"discover"``); they are not cached, so the next run asks again.
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


@dataclass(slots=True)
class DownloadResult:
    """
    Outcome of a download run.

    Attributes
    ----------
    manifest
        The ``images`` manifest (:data:`MANIFEST_COLUMNS`) of every input image whose file is on disk, finished
        now or by an earlier run, in input order: ``source`` = ``"mapillary"``, ``path`` =
        ``<city>/images/<image_id>.jpg`` relative to the storage root, ``width`` / ``height`` in pixels,
        ``scene_facts`` = ``"{}"``.
    failures
        Images still missing (:data:`FAILURE_COLUMNS`); ``attempts`` adds up the tries of all runs so far. Also
        written to ``<root>/<city>/mapillary_failures.json``.
    counts
        ``requested``, ``already_present``, ``downloaded``, ``failed``, ``resolve_requests``,
        ``download_requests``, ``retries``, ``expired_urls``, ``verify_failures``, ``bytes_downloaded``.
    """

    manifest: pd.DataFrame
    failures: pd.DataFrame
    counts: dict[str, int]


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing


class _GaveUpError(Exception):
    """A request still failed after every retry (message already redacted)."""

    def __init__(self, error: str, attempts: int) -> None:
        super().__init__(error)
        self.error = error
        self.attempts = attempts


class _BudgetExhaustedError(Exception):
    """The daily request budget is spent."""


class _StageFailedError(Exception):
    """One image failed at ``stage`` (resolve | download | verify) after ``attempts`` tries."""

    def __init__(self, error: str, attempts: int, *, stage: str) -> None:
        super().__init__(error)
        self.stage = stage
        self.error = error
        self.attempts = attempts


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """The Graph API ``{"error": {...}}`` object of a response, or ``{}``."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _is_auth_failure(response: httpx.Response) -> bool:
    """HTTP 401, or an error body saying the token is invalid (code 190, or an ``OAuthException`` on a 400).

    Graph-style rate-limit errors (codes 4, 17, 32, 613) also come as ``OAuthException`` and permission errors
    (code 10, 200-299) concern one object, not the token: neither is an auth failure.
    """
    if response.status_code == 401:
        return True
    if response.status_code not in (400, 403):
        return False
    error = _error_body(response)
    code = error.get("code")
    if code == _AUTH_ERROR_CODE:
        return True
    if code in _RATE_LIMIT_CODES or code == 10 or (isinstance(code, int) and 200 <= code < 300):
        return False
    return response.status_code == 400 and error.get("type") == "OAuthException"


def _is_query_timeout(response: httpx.Response) -> bool:
    """Mapillary's HTTP 400 answer to a search that is too heavy ("Query Timeout"): split the cell."""
    if response.status_code != 400:
        return False
    error = _error_body(response)
    text = " ".join(str(error.get(key, "")) for key in ("message", "error_user_title", "error_user_msg", "type"))
    return "timeout" in text.lower() or "timed out" in text.lower()


def _is_transient(response: httpx.Response) -> bool:
    status = response.status_code
    if status in (408, 429) or status >= 500:
        return True
    return status in (400, 403) and _error_body(response).get("code") in _RATE_LIMIT_CODES


def _describe(response: httpx.Response) -> str:
    """A short description of an unwanted response: status, and the API's error message when there is one."""
    error = _error_body(response)
    detail = error.get("message") or response.reason_phrase or ""
    return f"HTTP {response.status_code} {detail}".strip()[:300]


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class _Session:
    """Per-run state: one token bucket, one TLS context, the counters (all bound to one event loop)."""

    bucket: AsyncTokenBucket
    ssl_context: ssl.SSLContext
    timeout_s: float
    stats: dict[str, int]
    auth_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token_ok: bool = False
    #: Threads that verify and write images; as many as requests in flight, so a slow fsync never queues
    #: finished downloads behind the default executor's few threads.
    writers: ThreadPoolExecutor | None = None
    #: Requests in a row that failed after all retries; at ``breaker_threshold`` the service is taken to be down
    #: and the work left is recorded as failed without asking (instead of hours of serial backoff).
    consecutive_give_ups: int = 0
    breaker_threshold: int = 20

    @property
    def service_down(self) -> bool:
        return self.consecutive_give_ups >= self.breaker_threshold

    def new_client(self, max_connections: int) -> httpx.AsyncClient:
        """An HTTP client with its own small connection pool.

        Download workers each get their own client: httpcore scans its whole pool on every request (cost grows
        with connections x waiting requests), which made one shared 32-connection pool CPU-bound. The TLS context
        is shared because building one costs ~0.2 s.
        """
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits, follow_redirects=True,
                                 headers={"User-Agent": _USER_AGENT}, verify=self.ssl_context)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# discovery helpers

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
            cell = tuple(round(v, _CELL_DECIMALS) for v in (ix * size_deg, iy * size_deg, (ix + 1) * size_deg,
                                                             (iy + 1) * size_deg))  # fmt: skip
            if _overlaps(area, cell):
                cells.append(cell)
    return cells


async def _gather_or_cancel(coroutines: list[Any]) -> list[Any]:
    """``asyncio.gather`` that cancels (and awaits) the other tasks when one fails, so none outlives its session."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


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
        msg = (f"polygon_wgs84 must be a shapely Polygon/MultiPolygon in EPSG:4326 or a (min_lon, min_lat, max_lon, "
               f"max_lat) bbox, got {type(polygon_wgs84).__name__}")  # fmt: skip
        raise ImageryInputError(msg)
    if polygon_wgs84.is_empty or polygon_wgs84.geom_type not in ("Polygon", "MultiPolygon"):
        msg = f"polygon_wgs84 must be a non-empty Polygon or MultiPolygon, got {polygon_wgs84.geom_type}"
        raise ImageryInputError(msg)
    if not polygon_wgs84.is_valid:
        msg = "polygon_wgs84 is not a valid geometry; repair it first (shapely.make_valid(polygon))"
        raise ImageryInputError(msg)
    minx, miny, maxx, maxy = polygon_wgs84.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        msg = (f"polygon_wgs84 bounds {polygon_wgs84.bounds!r} are outside lon ±180 / lat ±90; the polygon must "
               "be in decimal degrees (EPSG:4326), not metres; reproject it with to_crs('EPSG:4326')")  # fmt: skip
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
    captured = (datetime.fromtimestamp(captured_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                if isinstance(captured_ms, int | float) else "")  # fmt: skip
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


def _verify_jpeg(content: bytes) -> tuple[int, int]:
    """Width and height of a complete, decodable JPEG; raises ``ValueError``/``OSError`` otherwise."""
    with Image.open(io.BytesIO(content)) as image:
        image.verify()
    with Image.open(io.BytesIO(content)) as image:
        image.load()  # verify() does not decode pixel data; a full load catches truncated scans
        image_format, size = image.format, image.size
    # Pillow fills in truncated JPEGs silently when ImageFile.LOAD_TRUNCATED_IMAGES is on (some libraries set it),
    # so also require the end-of-image marker near the end of the body.
    if image_format == "JPEG" and b"\xff\xd9" not in content[-1024:]:
        msg = "JPEG has no end-of-image marker (truncated)"
        raise ValueError(msg)
    return size


def _verify_and_store(content: bytes, target: Path) -> tuple[int, int]:
    size = _verify_jpeg(content)
    _write_atomic(target, content)
    return size


def _remove_stale_temporaries(folder: Path, max_age_s: float = 3600.0) -> int:
    """Delete temporary files that a killed run left behind (older than ``max_age_s``, so a concurrent run's
    file in the middle of being written is left alone); the number removed."""
    if not folder.is_dir():
        return 0
    cutoff = datetime.now(UTC).timestamp() - max_age_s
    removed = 0
    for tmp in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
    if removed:
        logger.info("removed %d stale temporary file(s) from %s", removed, folder)
    return removed


def _finished_size(path: Path) -> tuple[int, int] | None:
    """Pixel size of a finished image file, or None when absent or unreadable (then it is fetched again)."""
    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        logger.warning("existing image %s is unreadable; downloading it again", path)
        return None


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "attempts" else object) for c in FAILURE_COLUMNS})


def _failures_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return _empty_failures()
    frame = pd.DataFrame(rows, columns=list(FAILURE_COLUMNS))
    frame["attempts"] = frame["attempts"].astype("int64")
    return frame


def _load_failures(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        logger.warning("failures file %s is unreadable; starting a fresh one", path)
        return {}
    return {str(row["image_id"]): row for row in rows if isinstance(row, dict) and "image_id" in row}


# --------------------------------------------------------------------------------------------------------------------
# the client


class MapillaryClient:
    """
    Mapillary API v4 client: adaptive bbox discovery over a polygon and resumable thumbnail download.

    Parameters
    ----------
    token
        Mapillary access token (read it with :func:`token_from_env`). Sent only as ``Authorization: OAuth <token>``
        to the Graph API and never shown in messages or ``repr``.
    graph_url
        Base URL of the Graph API (a loopback server in tests).
    concurrency
        Most requests (and images) in flight at once.
    requests_per_second
        Average request rate of the token bucket shared by Graph API and thumbnail requests (Mapillary allows
        60,000 entity requests per minute per app; stay well below to avoid a ban).
    timeout_s
        Timeout of one HTTP request in seconds (connect, read, write and pool).
    retry
        Backoff for 429 (``Retry-After`` honoured), 5xx, timeouts and transport errors, and the number of fresh
        thumbnail URLs tried per image.
    search_limit
        ``limit`` of a bbox search; a cell returning this many images is split. Must equal the server's cap
        (2,000 on Mapillary).
    max_cell_deg
        Side of the first, grid-aligned discovery cells in degrees (0.1° × 0.1° = 0.01 deg², the reported cap).
    min_cell_deg
        Cells are not split below this side in degrees (1e-4° ≈ 11 m of latitude); such a cell at the limit is
        kept truncated and counted in ``cells_truncated``.
    """

    def __init__(
        self,
        token: str,
        *,
        graph_url: str = GRAPH_URL,
        concurrency: int = 16,
        requests_per_second: float = 50.0,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        search_limit: int = SEARCH_LIMIT,
        max_cell_deg: float = 0.1,
        min_cell_deg: float = 1e-4,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            msg = f"the Mapillary token is empty. {_FIX_TOKEN}"
            raise MapillaryAuthError(msg)
        if not token.startswith("MLY|"):
            logger.warning("the Mapillary token does not start with 'MLY|'; Mapillary will probably reject it")
        if not isinstance(graph_url, str) or not graph_url.startswith(("http://", "https://")):
            msg = f"`graph_url` must be an http(s) URL, got {graph_url!r}"
            raise ImageryInputError(msg)
        for name, value in (("concurrency", concurrency), ("search_limit", search_limit)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"`{name}` must be a positive integer, got {value!r}"
                raise ImageryInputError(msg)
        for name, value in (("requests_per_second", requests_per_second), ("timeout_s", timeout_s),
                            ("max_cell_deg", max_cell_deg), ("min_cell_deg", min_cell_deg)):  # fmt: skip
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                msg = f"`{name}` must be a positive number, got {value!r}"
                raise ImageryInputError(msg)
        if min_cell_deg > max_cell_deg:
            msg = f"`min_cell_deg` ({min_cell_deg!r}) must not exceed `max_cell_deg` ({max_cell_deg!r})"
            raise ImageryInputError(msg)
        self._token = token.strip()
        self.graph_url = graph_url.rstrip("/")
        self.concurrency = concurrency
        self.requests_per_second = float(requests_per_second)
        self.timeout_s = float(timeout_s)
        self.retry = retry if retry is not None else RetryPolicy()
        self.search_limit = search_limit
        self.max_cell_deg = float(max_cell_deg)
        self.min_cell_deg = float(min_cell_deg)

    def __repr__(self) -> str:
        return (f"MapillaryClient(graph_url={self.graph_url!r}, concurrency={self.concurrency}, "
                f"requests_per_second={self.requests_per_second:g}, token='***')")  # fmt: skip

    # ---------------------------------------------------------------------------------------------------- plumbing

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        bucket = AsyncTokenBucket(self.requests_per_second, capacity=max(1.0, self.requests_per_second))
        writers = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mapillary-write")
        try:
            yield _Session(bucket=bucket, ssl_context=httpx.create_ssl_context(), timeout_s=self.timeout_s, stats={},
                           writers=writers, breaker_threshold=max(10, 2 * self.concurrency))  # fmt: skip
        finally:
            writers.shutdown(wait=True)  # a write still running finishes its rename (it is a finished image)

    def _auth_error(self, response: httpx.Response) -> MapillaryAuthError:
        msg = f"Mapillary rejected the access token ({redact(_describe(response), self._token)}). {_FIX_TOKEN}."
        return MapillaryAuthError(msg)

    async def _request(
        self,
        session: _Session,
        http: httpx.AsyncClient,
        url: str,
        *,
        params: dict[str, str] | None = None,
        graph: bool,
        counter: str,
        retry_query_timeout: bool = False,
        budget: _DailyBudget | None = None,
    ) -> httpx.Response:
        """GET with rate limit and retries; returns the last response that is not worth retrying.

        Graph requests carry the token header and are checked for an auth failure (raised at once). The first
        Graph request of a session is made alone, so a bad token is found before any other work starts.
        """
        if graph and not session.token_ok:
            async with session.auth_lock:
                if not session.token_ok:
                    response = await self._retrying_get(session, http, url, params, graph=True, counter=counter,
                                                        retry_query_timeout=retry_query_timeout, budget=budget)
                    session.token_ok = True
                    return response
        return await self._retrying_get(session, http, url, params, graph=graph, counter=counter,
                                        retry_query_timeout=retry_query_timeout, budget=budget)  # fmt: skip

    async def _retrying_get(
        self,
        session: _Session,
        http: httpx.AsyncClient,
        url: str,
        params: dict[str, str] | None,
        *,
        graph: bool,
        counter: str,
        retry_query_timeout: bool,
        budget: _DailyBudget | None,
    ) -> httpx.Response:
        headers = {"Authorization": f"OAuth {self._token}"} if graph else None
        error = ""
        for attempt in range(1, self.retry.max_attempts + 1):
            if budget is not None and not budget.take():
                raise _BudgetExhaustedError
            await session.bucket.acquire()
            session.stats[counter] = session.stats.get(counter, 0) + 1
            retry_after: float | None = None
            try:
                # The query goes into the URL string here: httpx merging ``params=`` re-parses the URL (~0.5 ms).
                target = f"{url}?{urlencode(params, safe=',|')}" if params else url
                response = await http.get(target, headers=headers)
            except httpx.TimeoutException as exc:
                error = f"timed out after {self.timeout_s:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if graph and _is_auth_failure(response):
                    raise self._auth_error(response)
                transient = _is_transient(response) or (retry_query_timeout and _is_query_timeout(response))
                if response.status_code == 200 or not transient:
                    session.consecutive_give_ups = 0
                    return response
                error = _describe(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt < self.retry.max_attempts:
                session.stats["retries"] = session.stats.get("retries", 0) + 1
                await asyncio.sleep(self.retry.delay_s(attempt, retry_after))
        session.consecutive_give_ups += 1
        raise _GaveUpError(redact(error, self._token), self.retry.max_attempts)

    # ---------------------------------------------------------------------------------------------------- discovery

    async def discover(
        self,
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
        counts = dict.fromkeys(("cells_queried", "cells_cached", "cells_split", "cells_truncated", "cells_pending",
                                "cells_failed"), 0)  # fmt: skip
        semaphore = asyncio.Semaphore(self.concurrency)

        async with self._session() as session, session.new_client(self.concurrency) as http:

            async def visit(cell: Cell) -> tuple[str, Any]:
                async with semaphore:
                    return await self._discover_cell(session, http, cell, cache, budget, max_age_s)

            level = _initial_cells(area, self.max_cell_deg)
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

        images, filter_counts = self._discovery_frame(found, area, start_ms, end_ms, include_panos)
        counts.update(filter_counts)
        counts["requests"] = stats.get("search_requests", 0)
        counts["retries"] = stats.get("retries", 0)
        complete = counts["cells_pending"] == 0 and counts["cells_failed"] == 0
        if budget.exhausted:
            logger.warning("Mapillary daily request budget (%s) exhausted: %d cell(s) left for the next run",
                           max_requests, counts["cells_pending"])  # fmt: skip
        logger.info("Mapillary discovery: %d images kept of %d found; %d requests, %d cells from cache, %d split, "
                    "%d pending, %d failed", len(images), counts["images_found"], counts["requests"],
                    counts["cells_cached"], counts["cells_split"], counts["cells_pending"],
                    counts["cells_failed"])  # fmt: skip
        return DiscoveryResult(images=images, failures=_failures_frame(failures), counts=counts, complete=complete)

    def _cache_path(self, cache: Path, cell: Cell) -> Path:
        key = json.dumps([self.graph_url, _cell_text(cell), DISCOVERY_FIELDS, self.search_limit])
        return cache / f"cell_{hashlib.sha1(key.encode()).hexdigest()}.json"

    async def _discover_cell(
        self,
        session: _Session,
        http: httpx.AsyncClient,
        cell: Cell,
        cache: Path,
        budget: _DailyBudget,
        max_age_s: float | None,
    ) -> tuple[str, Any]:
        """One cell: ``(kind, payload)`` with kind queried|cached|truncated (records), split, pending or failed."""
        path = self._cache_path(cache, cell)
        cached = self._read_cache(path, max_age_s)
        if cached is not None:
            logger.debug("Mapillary cell %s from cache %s", _cell_text(cell), path)
            return ("split", None) if cached.get("split") else ("cached", cached.get("data", []))
        if session.service_down:
            return "failed", self._cell_failure(cell, _SERVICE_DOWN, 0)
        can_split = (cell[2] - cell[0]) / 2 >= self.min_cell_deg and (cell[3] - cell[1]) / 2 >= self.min_cell_deg
        params = {"bbox": _cell_text(cell), "fields": DISCOVERY_FIELDS, "limit": str(self.search_limit)}
        try:
            response = await self._request(session, http, f"{self.graph_url}/images", params=params, graph=True,
                                           counter="search_requests", retry_query_timeout=not can_split,
                                           budget=budget)  # fmt: skip
        except _BudgetExhaustedError:
            return "pending", None
        except _GaveUpError as exc:
            return "failed", self._cell_failure(cell, exc.error, exc.attempts)
        if response.status_code == 400 and _is_query_timeout(response) and can_split:
            self._write_cache(path, cell, split=True, data=[], budget=budget)
            return "split", None
        if response.status_code != 200:
            return "failed", self._cell_failure(cell, redact(_describe(response), self._token), 1)
        try:
            data = response.json().get("data", [])
        except (ValueError, AttributeError):
            return "failed", self._cell_failure(cell, "response is not the Graph API's {'data': [...]} JSON", 1)
        if len(data) >= self.search_limit and can_split:
            self._write_cache(path, cell, split=True, data=[], budget=budget)
            return "split", None
        truncated = len(data) >= self.search_limit
        if truncated:
            logger.warning("Mapillary cell %s still holds >= %d images at the minimum cell size; keeping the first %d",
                           _cell_text(cell), self.search_limit, len(data))  # fmt: skip
        self._write_cache(path, cell, split=False, data=data, budget=budget)
        return ("truncated" if truncated else "queried"), data

    @staticmethod
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

    @staticmethod
    def _write_cache(path: Path, cell: Cell, *, split: bool, data: list[Any], budget: _DailyBudget) -> None:
        record = {"bbox": list(cell), "split": split, "fetched_at": _now_iso(), "data": data}
        _write_atomic(path, json.dumps(record).encode())
        budget.save()  # so a killed run still counts what it spent today

    @staticmethod
    def _cell_failure(cell: Cell, error: str, attempts: int) -> dict[str, Any]:
        logger.warning("Mapillary cell %s failed after %d attempt(s): %s", _cell_text(cell), attempts, error)
        return {"image_id": f"cell:{_cell_text(cell)}", "stage": "discover", "attempts": attempts, "error": error,
                "last_attempt_at": _now_iso()}  # fmt: skip

    @staticmethod
    def _discovery_frame(
        found: dict[str, dict[str, Any]], area: BaseGeometry, start_ms: int | None, end_ms: int | None,
        include_panos: bool,
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        rows = [row for row in map(_parse_record, found.values()) if row is not None]
        counts = {"images_found": len(found), "no_position": len(found) - len(rows)}
        frame = pd.DataFrame(rows, columns=[*DISCOVERY_COLUMNS, "captured_ms"])
        frame = frame.astype({"lon": float, "lat": float, "compass_angle": float, "captured_ms": float,
                              "is_pano": bool})  # fmt: skip
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

    # ---------------------------------------------------------------------------------------------------- download

    async def download(
        self,
        images_df: pd.DataFrame,
        *,
        root: str | os.PathLike[str],
        city_slug: str,
        size: str = "thumb_1024_url",
    ) -> DownloadResult:
        """
        Download the thumbnails of ``images_df`` into ``<root>/<city_slug>/images/<image_id>.jpg``, resumably.

        Images whose file already exists are not requested again. Failures are recorded (returned and written to
        ``<root>/<city_slug>/mapillary_failures.json``), never raised; only an invalid token raises.

        Parameters
        ----------
        images_df
            Images to fetch, with the :data:`DISCOVERY_COLUMNS` (``source`` may be absent), e.g.
            :attr:`DiscoveryResult.images`, possibly thinned; ``image_id`` unique, letters, digits, ``_`` or ``-``.
        root
            Storage root; manifest paths are relative to it.
        city_slug
            City folder name (lower-case letters, digits, ``_``, ``-``).
        size
            Thumbnail field, one of :data:`THUMBNAIL_SIZES`.

        Returns
        -------
        DownloadResult

        Raises
        ------
        ImageryInputError
            On a bad table or option (before any request).
        MapillaryAuthError
            When Mapillary rejects the token (the first Graph request is made alone, so nothing is written).
        """
        images = self._validate_download_input(images_df, city_slug, size)
        root_path = Path(root)
        city_dir = root_path / city_slug
        image_dir = city_dir / "images"
        failures_path = city_dir / FAILURES_FILENAME
        ids = images["image_id"].tolist()
        _remove_stale_temporaries(image_dir)
        sizes: dict[str, tuple[int, int]] = {}
        for image_id in ids:
            found = _finished_size(image_dir / f"{image_id}.jpg")
            if found is not None:
                sizes[image_id] = found
        already_present = len(sizes)
        pending = [image_id for image_id in ids if image_id not in sizes]
        new_failures: dict[str, _StageFailedError] = {}
        stats: dict[str, int] = {}
        if pending:
            logger.info("Mapillary download for %s: %d to fetch, %d already on disk", city_slug, len(pending),
                        already_present)  # fmt: skip
            async with self._session() as session:
                queue = iter(pending)
                progress = {"done": 0, "step": max(1, len(pending) // 10), "down_logged": 0}

                async def worker() -> None:
                    # Two connections: the Graph API and the CDN are different hosts in production.
                    async with session.new_client(2) as http:
                        for image_id in queue:  # a shared iterator: each id goes to exactly one worker
                            try:
                                if session.service_down:
                                    raise _StageFailedError(_SERVICE_DOWN, 0, stage="resolve")
                                sizes[image_id] = await self._fetch_one(session, http, image_id, image_dir, size)
                            except _StageFailedError as exc:
                                new_failures[image_id] = exc
                                if exc.attempts:
                                    logger.warning("Mapillary image %s failed at %s after %d attempt(s): %s",
                                                   image_id, exc.stage, exc.attempts, exc.error)  # fmt: skip
                                elif not progress["down_logged"]:
                                    progress["down_logged"] = 1
                                    logger.error("Mapillary download for %s: %d requests in a row failed; the images "
                                                 "left are recorded as failed for the next run", city_slug,
                                                 session.consecutive_give_ups)  # fmt: skip
                            progress["done"] += 1
                            if progress["done"] % progress["step"] == 0:
                                logger.info("Mapillary download for %s: %d / %d", city_slug, progress["done"],
                                            len(pending))  # fmt: skip

                await _gather_or_cancel([worker() for _ in range(min(self.concurrency, len(pending)))])
                stats = session.stats
        failures = self._merge_failures(_load_failures(failures_path), new_failures, ids, sizes)
        if pending or failures_path.exists():
            _write_atomic(failures_path, json.dumps(failures, indent=1).encode())
        manifest = self._manifest(images, sizes, city_slug)
        counts = {
            "requested": len(ids),
            "already_present": already_present,
            "downloaded": len(sizes) - already_present,
            "failed": len(new_failures),
            "resolve_requests": stats.get("resolve_requests", 0),
            "download_requests": stats.get("download_requests", 0),
            "retries": stats.get("retries", 0),
            "expired_urls": stats.get("expired_urls", 0),
            "verify_failures": stats.get("verify_failures", 0),
            "bytes_downloaded": stats.get("bytes_downloaded", 0),
        }
        logger.info("Mapillary download for %s: %d images on disk (%d new), %d failed", city_slug, len(manifest),
                    counts["downloaded"], counts["failed"])  # fmt: skip
        return DownloadResult(manifest=manifest, failures=_failures_frame(failures), counts=counts)

    async def _resolve(self, session: _Session, http: httpx.AsyncClient, image_id: str, size: str) -> str:
        try:
            response = await self._request(session, http, f"{self.graph_url}/{image_id}", params={"fields": size},
                                           graph=True, counter="resolve_requests")  # fmt: skip
        except _GaveUpError as exc:
            raise _StageFailedError(exc.error, exc.attempts, stage="resolve") from None
        if response.status_code != 200:
            raise _StageFailedError(redact(_describe(response), self._token), 1, stage="resolve")
        try:
            url = response.json().get(size)
        except (ValueError, AttributeError):
            url = None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            msg = f"the Graph API answer for image {image_id} has no {size}"
            raise _StageFailedError(msg, 1, stage="resolve")
        return url

    async def _fetch_one(
        self, session: _Session, http: httpx.AsyncClient, image_id: str, image_dir: Path, size: str
    ) -> tuple[int, int]:
        """Resolve, download, verify and store one image; its pixel size, or :class:`_StageFailedError`."""
        fresh_urls = 0
        while True:
            url = await self._resolve(session, http, image_id, size)
            fresh_urls += 1
            try:
                # The CDN URL is signed: never send the token there.
                response = await self._request(session, http, url, graph=False, counter="download_requests")
            except _GaveUpError as exc:
                raise _StageFailedError(exc.error, exc.attempts, stage="download") from None
            if response.status_code in _EXPIRED_URL_STATUSES:
                session.stats["expired_urls"] = session.stats.get("expired_urls", 0) + 1
                if fresh_urls >= self.retry.max_attempts:
                    error = f"thumbnail URL rejected ({_describe(response)}) with {fresh_urls} freshly resolved URLs"
                    raise _StageFailedError(error, fresh_urls, stage="download")
                logger.info("Mapillary thumbnail URL of %s expired (HTTP %d); resolving it again", image_id,
                            response.status_code)  # fmt: skip
                continue
            if response.status_code != 200:
                raise _StageFailedError(redact(_describe(response), self._token), 1, stage="download")
            content = response.content
            session.stats["bytes_downloaded"] = session.stats.get("bytes_downloaded", 0) + len(content)
            try:
                # Decoding releases the GIL; the rename happens in the thread, so a cancelled run never leaves a
                # half-written file under the final name.
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(session.writers, _verify_and_store, content,
                                                  image_dir / f"{image_id}.jpg")  # fmt: skip
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                session.stats["verify_failures"] = session.stats.get("verify_failures", 0) + 1
                msg = f"not a complete image ({type(exc).__name__}: {exc})"
                raise _StageFailedError(msg, 1, stage="verify") from None

    @staticmethod
    def _merge_failures(
        previous: dict[str, dict[str, Any]], new: dict[str, _StageFailedError], ids: list[str],
        sizes: dict[str, tuple[int, int]],
    ) -> list[dict[str, Any]]:
        """Failure rows of the images still missing: this run's errors, attempts summed with earlier runs'."""
        rows = []
        for image_id in ids:
            if image_id in sizes:
                continue
            earlier = previous.get(image_id)
            if image_id in new:
                failure = new[image_id]
                prior = int(earlier.get("attempts", 0)) if earlier else 0
                rows.append({"image_id": image_id, "stage": failure.stage, "attempts": prior + failure.attempts,
                             "error": failure.error, "last_attempt_at": _now_iso()})  # fmt: skip
            elif earlier is not None:
                rows.append({column: earlier.get(column) for column in FAILURE_COLUMNS})
        return rows

    @staticmethod
    def _validate_download_input(images_df: pd.DataFrame, city_slug: str, size: str) -> pd.DataFrame:
        if not isinstance(images_df, pd.DataFrame):
            msg = f"images_df must be a pandas DataFrame (DiscoveryResult.images), got {type(images_df).__name__}"
            raise ImageryInputError(msg)
        required = [c for c in DISCOVERY_COLUMNS if c != "source"]
        missing = [c for c in required if c not in images_df.columns]
        if missing:
            msg = (f"images_df is missing column(s) {missing}; it has {list(images_df.columns)}. Pass "
                   "DiscoveryResult.images (or a thinned copy of it)")  # fmt: skip
            raise ImageryInputError(msg)
        if not isinstance(city_slug, str) or not _SLUG_PATTERN.match(city_slug):
            msg = f"`city_slug` must be lower-case letters, digits, '_' or '-', got {city_slug!r}"
            raise ImageryInputError(msg)
        if size not in THUMBNAIL_SIZES:
            msg = f"`size` must be one of {list(THUMBNAIL_SIZES)}, got {size!r}"
            raise ImageryInputError(msg)
        images = images_df.copy()
        images["image_id"] = images["image_id"].astype(str)
        bad = [i for i in images["image_id"] if not _ID_PATTERN.match(i)]
        if bad:
            msg = (f"images_df.image_id must be letters, digits, '_' or '-' (it names the file), but {len(bad)} are "
                   f"not, e.g. {bad[:5]!r}")  # fmt: skip
            raise ImageryInputError(msg)
        duplicated = images["image_id"].duplicated()
        if duplicated.any():
            msg = (f"images_df.image_id must be unique, but {sorted(set(images.loc[duplicated, 'image_id']))[:5]!r} "
                   "repeat; deduplicate with drop_duplicates('image_id')")  # fmt: skip
            raise ImageryInputError(msg)
        return images.reset_index(drop=True)

    @staticmethod
    def _manifest(images: pd.DataFrame, sizes: dict[str, tuple[int, int]], city_slug: str) -> pd.DataFrame:
        kept = images[images["image_id"].isin(sizes)].copy()
        kept["source"] = SOURCE
        kept["path"] = [f"{city_slug}/images/{image_id}.jpg" for image_id in kept["image_id"]]
        kept["width"] = [sizes[image_id][0] for image_id in kept["image_id"]]
        kept["height"] = [sizes[image_id][1] for image_id in kept["image_id"]]
        kept["scene_facts"] = "{}"
        manifest = kept[list(MANIFEST_COLUMNS)].reset_index(drop=True)
        return manifest.astype({"lon": float, "lat": float, "compass_angle": float, "width": "int64",
                                "height": "int64", "is_pano": bool})  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# sync wrappers (Dagster assets are synchronous)


def discover_images(
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
    """Synchronous :meth:`MapillaryClient.discover` (runs its own event loop; call it outside a running loop)."""
    return asyncio.run(client.discover(polygon_wgs84, cache_dir=cache_dir, start=start, end=end,
                                       include_panos=include_panos, max_requests=max_requests,
                                       cache_max_age_days=cache_max_age_days))  # fmt: skip


def download_images(
    client: MapillaryClient,
    images_df: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    city_slug: str,
    size: str = "thumb_1024_url",
) -> DownloadResult:
    """Synchronous :meth:`MapillaryClient.download` (runs its own event loop; call it outside a running loop)."""
    return asyncio.run(client.download(images_df, root=root, city_slug=city_slug, size=size))
