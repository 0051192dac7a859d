"""Online street-level imagery from the Mapillary API v4: the client, its HTTP plumbing and the shared tables.

The work is split in five modules:

* this one: :class:`MapillaryClient` (rate limit, retries, auth check, token handling), the errors, the column
  contracts and the failures file shared by the stages, and the synchronous entry points
  :func:`discover_images` / :func:`fetch_image_details` / :func:`download_images`;
* :mod:`~ugdata_pipeline.imagery.coverage_tiles`: which z14 tiles cover an area, and the image points of one;
* :mod:`~ugdata_pipeline.imagery.mapillary_discovery`: discovery over a polygon from the z14 coverage tiles
  (:class:`~ugdata_pipeline.imagery.mapillary_discovery.DiscoveryResult`);
* :mod:`~ugdata_pipeline.imagery.mapillary_details`: the Graph API details of the images kept after thinning;
* :mod:`~ugdata_pipeline.imagery.mapillary_download`: resumable, verified thumbnail downloads
  (:class:`~ugdata_pipeline.imagery.mapillary_download.DownloadResult`).

Secrets
    The access token is sent as the header ``Authorization: OAuth <token>`` to the Graph API and, because the
    tile service documents only that form, as the ``access_token`` query parameter to the coverage tiles; never
    to the CDN. It is redacted from every message and from httpx's request log line. An invalid token (HTTP 401,
    or an ``OAuthException`` / code 190 error body) raises one :class:`MapillaryAuthError` naming
    ``MAPILLARY_ACCESS_TOKEN``; the first authenticated request of a run is made alone, so a bad token fails
    before anything is written.

Usage::

    client = MapillaryClient(token_from_env(), concurrency=16, requests_per_second=10)
    found = discover_images(client, city_polygon_wgs84, cache_dir=work / "mapillary_tiles", start="2020-01-01")
    thinned = thin_images(found.images)  # ugdata_pipeline.imagery.thin
    kept = fetch_image_details(client, thinned.images, cache_dir=work / "mapillary_details")
    result = download_images(client, kept.images, root=root, city_slug="helsinki")
    result.manifest, result.failures, result.counts

Plain Python; never imports Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import pandas as pd
from shapely.geometry.base import BaseGeometry

from ugdata_pipeline.atomic_files import write_file_atomic
from ugdata_pipeline.errors import ImageryInputError, MapillaryAuthError, MapillaryError
from ugdata_pipeline.imagery.source_outcome import FAILURE_COLUMNS  # re-exported: the failures file's columns
from ugdata_pipeline.throttle import AsyncTokenBucket, RetryPolicy, install_query_redaction, parse_retry_after, redact

if TYPE_CHECKING:
    from ugdata_pipeline.imagery.mapillary_details import DetailsResult
    from ugdata_pipeline.imagery.mapillary_discovery import DiscoveryResult, _DailyBudget
    from ugdata_pipeline.imagery.mapillary_download import DownloadResult

__all__ = [
    "DISCOVERY_COLUMNS",
    "FAILURES_FILENAME",
    "FAILURE_COLUMNS",
    "GRAPH_URL",
    "THUMBNAIL_SIZES",
    "TILES_URL",
    "TOKEN_ENV_VAR",
    "MapillaryAuthError",
    "MapillaryClient",
    "MapillaryError",
    "discover_images",
    "download_images",
    "fetch_image_details",
    "token_from_env",
]

logger = logging.getLogger(__name__)

#: Environment variable that holds the Mapillary client token.
TOKEN_ENV_VAR = "MAPILLARY_ACCESS_TOKEN"
GRAPH_URL = "https://graph.mapillary.com"
#: The coverage tile set (``{TILES_URL}/{z}/{x}/{y}``); its z14 ``image`` layer has one point per image.
TILES_URL = "https://tiles.mapillary.com/maps/vtp/mly1_public/2"
#: Fields asked per kept image. ``computed_*`` fill in a missing ``geometry`` / ``compass_angle``.
DETAIL_FIELDS = (
    "id,geometry,computed_geometry,compass_angle,computed_compass_angle,captured_at,sequence,is_pano,creator"
)
THUMBNAIL_SIZES: tuple[str, ...] = ("thumb_256_url", "thumb_1024_url", "thumb_2048_url", "thumb_original_url")
#: Columns of :attr:`DiscoveryResult.images` (and the columns :meth:`MapillaryClient.download` needs).
DISCOVERY_COLUMNS: tuple[str, ...] = (
    "image_id",
    "source",
    "lon",
    "lat",
    "compass_angle",
    "captured_at",
    "sequence_id",
    "is_pano",
    "creator",
)
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


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing


# The three signals below are private control flow of the Mapillary client (a request or an image gave up, the
# budget is spent): mapillary_discovery and mapillary_download catch them and record failure rows or raise an
# IncompleteResultError; they never reach callers of the package, so they stay here rather than in errors.py.
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


# httpx logs every request URL at INFO, and tile URLs carry the token.
install_query_redaction(logging.getLogger("httpx"), "access_token")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (downloads and discovery cells are finished work)."""
    write_file_atomic(path, data, fsync=True)


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
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            limits=limits,
            follow_redirects=True,
            headers={"User-Agent": _USER_AGENT},
            verify=self.ssl_context,
        )


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
    Mapillary API v4 client: discovery from coverage tiles, details of the kept images, resumable downloads.

    Parameters
    ----------
    token
        Mapillary access token (read it with :func:`token_from_env`). Sent only as ``Authorization: OAuth <token>``
        to the Graph API and never shown in messages or ``repr``.
    graph_url
        Base URL of the Graph API (a loopback server in tests).
    tiles_url
        Base URL of the coverage tile set, ``{tiles_url}/{z}/{x}/{y}`` (a loopback server in tests).
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
    """

    def __init__(
        self,
        token: str,
        *,
        graph_url: str = GRAPH_URL,
        tiles_url: str = TILES_URL,
        concurrency: int = 16,
        requests_per_second: float = 50.0,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            msg = f"the Mapillary token is empty. {_FIX_TOKEN}"
            raise MapillaryAuthError(msg)
        if not token.startswith("MLY|"):
            logger.warning("the Mapillary token does not start with 'MLY|'; Mapillary will probably reject it")
        for name, value in (("graph_url", graph_url), ("tiles_url", tiles_url)):
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                msg = f"`{name}` must be an http(s) URL, got {value!r}"
                raise ImageryInputError(msg)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            msg = f"`concurrency` must be a positive integer, got {concurrency!r}"
            raise ImageryInputError(msg)
        for name, value in (
            ("requests_per_second", requests_per_second),
            ("timeout_s", timeout_s),
        ):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                msg = f"`{name}` must be a positive number, got {value!r}"
                raise ImageryInputError(msg)
        self._token = token.strip()
        self.graph_url = graph_url.rstrip("/")
        self.tiles_url = tiles_url.rstrip("/")
        self.concurrency = concurrency
        self.requests_per_second = float(requests_per_second)
        self.timeout_s = float(timeout_s)
        self.retry = retry if retry is not None else RetryPolicy()

    def __repr__(self) -> str:
        return (
            f"MapillaryClient(graph_url={self.graph_url!r}, concurrency={self.concurrency}, "
            f"requests_per_second={self.requests_per_second:g}, token='***')"
        )

    # ---------------------------------------------------------------------------------------------------- plumbing

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        bucket = AsyncTokenBucket(self.requests_per_second, capacity=max(1.0, self.requests_per_second))
        writers = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mapillary-write")
        try:
            yield _Session(
                bucket=bucket,
                ssl_context=httpx.create_ssl_context(),
                timeout_s=self.timeout_s,
                stats={},
                writers=writers,
                breaker_threshold=max(10, 2 * self.concurrency),
            )
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
        token_in_query: bool = False,
        budget: _DailyBudget | None = None,
    ) -> httpx.Response:
        """GET with rate limit and retries; returns the last response that is not worth retrying.

        Graph requests (``graph=True``: the Graph API and the coverage tiles) carry the token, as a header or with
        ``token_in_query`` as the ``access_token`` parameter (the tiles), and are checked for an auth failure
        (raised at once). The first such request of a session is made alone, so a bad token is found before any
        other work starts.
        """
        if graph and not session.token_ok:
            async with session.auth_lock:
                if not session.token_ok:
                    response = await self._retrying_get(
                        session,
                        http,
                        url,
                        params,
                        graph=True,
                        counter=counter,
                        token_in_query=token_in_query,
                        budget=budget,
                    )
                    session.token_ok = True
                    return response
        return await self._retrying_get(
            session,
            http,
            url,
            params,
            graph=graph,
            counter=counter,
            token_in_query=token_in_query,
            budget=budget,
        )

    async def _retrying_get(
        self,
        session: _Session,
        http: httpx.AsyncClient,
        url: str,
        params: dict[str, str] | None,
        *,
        graph: bool,
        counter: str,
        token_in_query: bool,
        budget: _DailyBudget | None,
    ) -> httpx.Response:
        headers = {"Authorization": f"OAuth {self._token}"} if graph and not token_in_query else None
        if graph and token_in_query:
            params = {**(params or {}), "access_token": self._token}
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
                error = redact(f"{type(exc).__name__}: {exc}", self._token)
            else:
                if graph and _is_auth_failure(response):
                    raise self._auth_error(response)
                if response.status_code == 200 or not _is_transient(response):
                    session.consecutive_give_ups = 0
                    return response
                error = _describe(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt < self.retry.max_attempts:
                session.stats["retries"] = session.stats.get("retries", 0) + 1
                await asyncio.sleep(self.retry.delay_s(attempt, retry_after))
        session.consecutive_give_ups += 1
        raise _GaveUpError(redact(error, self._token), self.retry.max_attempts)

    # ---------------------------------------------------------------------------------------------------- stages
    # The stages live in their own modules, which import this one; hence the imports inside the methods.

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
        """Find the images inside a polygon: :func:`ugdata_pipeline.imagery.mapillary_discovery.discover`."""
        from ugdata_pipeline.imagery.mapillary_discovery import discover

        return await discover(
            self,
            polygon_wgs84,
            cache_dir=cache_dir,
            start=start,
            end=end,
            include_panos=include_panos,
            max_requests=max_requests,
            cache_max_age_days=cache_max_age_days,
        )

    async def details(self, images_df: pd.DataFrame, *, cache_dir: str | os.PathLike[str]) -> DetailsResult:
        """Graph API details of the kept images: :func:`ugdata_pipeline.imagery.mapillary_details.fetch_details`."""
        from ugdata_pipeline.imagery.mapillary_details import fetch_details

        return await fetch_details(self, images_df, cache_dir=cache_dir)

    async def download(
        self,
        images_df: pd.DataFrame,
        *,
        root: str | os.PathLike[str],
        city_slug: str,
        size: str = "thumb_1024_url",
    ) -> DownloadResult:
        """Download thumbnails resumably: :func:`ugdata_pipeline.imagery.mapillary_download.download`."""
        from ugdata_pipeline.imagery.mapillary_download import download

        return await download(self, images_df, root=root, city_slug=city_slug, size=size)


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
    return asyncio.run(
        client.discover(
            polygon_wgs84,
            cache_dir=cache_dir,
            start=start,
            end=end,
            include_panos=include_panos,
            max_requests=max_requests,
            cache_max_age_days=cache_max_age_days,
        )
    )


def fetch_image_details(
    client: MapillaryClient, images_df: pd.DataFrame, *, cache_dir: str | os.PathLike[str]
) -> DetailsResult:
    """Synchronous :meth:`MapillaryClient.details` (runs its own event loop; call it outside a running loop)."""
    return asyncio.run(client.details(images_df, cache_dir=cache_dir))


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
