"""Mapillary download: resumable, verified thumbnail downloads into ``<root>/<city>/images/<image_id>.jpg``.

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

Entry points: :meth:`MapillaryClient.download <ugdata_pipeline.imagery.mapillary.MapillaryClient.download>` and
:func:`~ugdata_pipeline.imagery.mapillary.download_images`. Plain Python; never imports Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
from PIL import Image

from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.imagery.manifest import MANIFEST_COLUMNS
from ugdata_pipeline.imagery.mapillary import (
    _EXPIRED_URL_STATUSES,
    _ID_PATTERN,
    _SERVICE_DOWN,
    _SLUG_PATTERN,
    DISCOVERY_COLUMNS,
    FAILURES_FILENAME,
    SOURCE,
    THUMBNAIL_SIZES,
    _describe,
    _gather_or_cancel,
    _GaveUpError,
    _load_failures,
    _now_iso,
    _Session,
    _StageFailedError,
    _write_atomic,
)
from ugdata_pipeline.imagery.source_outcome import FAILURE_COLUMNS, failures_frame
from ugdata_pipeline.tables import require_columns
from ugdata_pipeline.throttle import redact

if TYPE_CHECKING:
    from ugdata_pipeline.imagery.mapillary import MapillaryClient

__all__ = ["DownloadResult", "download"]

logger = logging.getLogger(__name__)


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
        ``requested``, ``already_present``, ``corrupt_on_disk`` (files found unreadable or cut short, removed and
        fetched again), ``downloaded``, ``failed``, ``resolve_requests``,
        ``download_requests``, ``retries``, ``expired_urls``, ``verify_failures``, ``bytes_downloaded``.
    """

    manifest: pd.DataFrame
    failures: pd.DataFrame
    counts: dict[str, int]


_EOI = b"\xff\xd9"
#: Bytes allowed after the end-of-image marker (some encoders pad or append a trailer).
_EOI_TAIL_BYTES = 1024
#: Bytes read from the start of a file to find its first start-of-scan marker (EXIF can take up to 64 KiB).
_HEAD_BYTES = 65_536 + 4096


def _first_scan_offset(head: bytes) -> int | None:
    """Offset of the first start-of-scan marker (``FFDA``), found by walking the marker segments from the
    start-of-image marker; None when ``head`` is not a JPEG or ends before its first scan."""
    if head[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xDA:
            return pos
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(head[pos + 2 : pos + 4], "big")
    return None


def _jpeg_is_complete(head: bytes, tail: bytes, tail_offset: int) -> bool:
    """Whether a JPEG (its first bytes ``head``, its last bytes ``tail`` starting at ``tail_offset``) ends with
    an end-of-image marker after its first scan, at most :data:`_EOI_TAIL_BYTES` before the end.

    A cut removes the marker, and ``FF D9`` cannot occur inside entropy-coded data (every ``FF`` there is followed
    by ``00`` or a restart marker), so this catches truncation at any point; requiring the marker after the first
    scan keeps the EXIF thumbnail's own end marker (in the header) from passing for it.
    """
    scan = _first_scan_offset(head)
    eoi = tail[-_EOI_TAIL_BYTES:].rfind(_EOI)
    if scan is None or eoi < 0:
        return False
    return tail_offset + max(0, len(tail) - _EOI_TAIL_BYTES) + eoi > scan


def _verify_jpeg(content: bytes) -> tuple[int, int]:
    """Width and height of a complete, decodable JPEG; raises ``ValueError``/``OSError`` otherwise."""
    with Image.open(io.BytesIO(content)) as image:
        image.verify()
    with Image.open(io.BytesIO(content)) as image:
        image.load()  # verify() does not decode pixel data; a full load catches truncated scans
        image_format, size = image.format, image.size
    # Pillow fills in truncated JPEGs silently when ImageFile.LOAD_TRUNCATED_IMAGES is on (some libraries set it),
    # so also require the end-of-image marker at the end of the body.
    if image_format == "JPEG" and not _jpeg_is_complete(content[:_HEAD_BYTES], content, 0):
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
    """
    Pixel size of a finished image file; None when it is absent, unreadable or cut short (then it is fetched again).

    Resume must not trust a file by its header alone: a copy interrupted or a disk that filled up leaves a file
    whose header (and pixel size) is intact. A full decode would catch that but costs 4-8 ms per 1024 px image
    (minutes over a city on every resume), so the check reads the header with Pillow and the first 68 KiB and last
    1 KiB of the file for the end-of-image marker (0.03-0.1 ms): see :func:`_jpeg_is_complete`. Files are
    written only after a full decode (:func:`_verify_jpeg`), so a cut is the damage left to catch here.
    """
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
            length = handle.seek(0, os.SEEK_END)
            tail_offset = max(0, length - _EOI_TAIL_BYTES)
            handle.seek(tail_offset)
            tail = handle.read()
            handle.seek(0)
            with Image.open(handle) as image:
                image_format, size = image.format, image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if image_format != "JPEG" or not _jpeg_is_complete(head, tail, tail_offset):
        return None
    return size


# --------------------------------------------------------------------------------------------------------------------
# download


async def download(
    client: MapillaryClient,
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
    images = _validate_download_input(images_df, city_slug, size)
    root_path = Path(root)
    city_dir = root_path / city_slug
    image_dir = city_dir / "images"
    failures_path = city_dir / FAILURES_FILENAME
    ids = images["image_id"].tolist()
    _remove_stale_temporaries(image_dir)
    sizes: dict[str, tuple[int, int]] = {}
    corrupt_on_disk = 0
    for image_id in ids:
        path = image_dir / f"{image_id}.jpg"
        found = _finished_size(path)
        if found is not None:
            sizes[image_id] = found
        elif path.is_file():
            # Removed, not just re-fetched: a file under the final name is always a finished image, also when
            # the new fetch fails.
            logger.warning("existing image %s is unreadable or cut short; downloading it again", path)
            path.unlink(missing_ok=True)
            corrupt_on_disk += 1
    already_present = len(sizes)
    pending = [image_id for image_id in ids if image_id not in sizes]
    new_failures: dict[str, _StageFailedError] = {}
    stats: dict[str, int] = {}
    if pending:
        logger.info(
            "Mapillary download for %s: %d to fetch, %d already on disk", city_slug, len(pending), already_present
        )
        async with client._session() as session:
            queue = iter(pending)
            progress = {"done": 0, "step": max(1, len(pending) // 10), "down_logged": 0}

            async def worker() -> None:
                # Two connections: the Graph API and the CDN are different hosts in production.
                async with session.new_client(2) as http:
                    for image_id in queue:  # a shared iterator: each id goes to exactly one worker
                        try:
                            if session.service_down:
                                raise _StageFailedError(_SERVICE_DOWN, 0, stage="resolve")
                            sizes[image_id] = await _fetch_one(client, session, http, image_id, image_dir, size)
                        except _StageFailedError as exc:
                            new_failures[image_id] = exc
                            if exc.attempts:
                                logger.warning(
                                    "Mapillary image %s failed at %s after %d attempt(s): %s",
                                    image_id,
                                    exc.stage,
                                    exc.attempts,
                                    exc.error,
                                )
                            elif not progress["down_logged"]:
                                progress["down_logged"] = 1
                                logger.error(
                                    "Mapillary download for %s: %d requests in a row failed; the images "
                                    "left are recorded as failed for the next run",
                                    city_slug,
                                    session.consecutive_give_ups,
                                )
                        progress["done"] += 1
                        if progress["done"] % progress["step"] == 0:
                            logger.info("Mapillary download for %s: %d / %d", city_slug, progress["done"], len(pending))

            await _gather_or_cancel([worker() for _ in range(min(client.concurrency, len(pending)))])
            stats = session.stats
    failures = _merge_failures(_load_failures(failures_path), new_failures, ids, sizes)
    if pending or failures_path.exists():
        _write_atomic(failures_path, json.dumps(failures, indent=1).encode())
    manifest = _manifest(images, sizes, city_slug)
    counts = {
        "requested": len(ids),
        "already_present": already_present,
        "corrupt_on_disk": corrupt_on_disk,
        "downloaded": len(sizes) - already_present,
        "failed": len(new_failures),
        "resolve_requests": stats.get("resolve_requests", 0),
        "download_requests": stats.get("download_requests", 0),
        "retries": stats.get("retries", 0),
        "expired_urls": stats.get("expired_urls", 0),
        "verify_failures": stats.get("verify_failures", 0),
        "bytes_downloaded": stats.get("bytes_downloaded", 0),
    }
    logger.info(
        "Mapillary download for %s: %d images on disk (%d new), %d failed",
        city_slug,
        len(manifest),
        counts["downloaded"],
        counts["failed"],
    )
    return DownloadResult(manifest=manifest, failures=failures_frame(failures), counts=counts)


async def _resolve(
    client: MapillaryClient, session: _Session, http: httpx.AsyncClient, image_id: str, size: str
) -> str:
    try:
        response = await client._request(
            session,
            http,
            f"{client.graph_url}/{image_id}",
            params={"fields": size},
            graph=True,
            counter="resolve_requests",
        )
    except _GaveUpError as exc:
        raise _StageFailedError(exc.error, exc.attempts, stage="resolve") from None
    if response.status_code != 200:
        raise _StageFailedError(redact(_describe(response), client._token), 1, stage="resolve")
    try:
        url = response.json().get(size)
    except (ValueError, AttributeError):
        url = None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        msg = f"the Graph API answer for image {image_id} has no {size}"
        raise _StageFailedError(msg, 1, stage="resolve")
    return url


async def _fetch_one(
    client: MapillaryClient, session: _Session, http: httpx.AsyncClient, image_id: str, image_dir: Path, size: str
) -> tuple[int, int]:
    """Resolve, download, verify and store one image; its pixel size, or :class:`_StageFailedError`."""
    fresh_urls = 0
    while True:
        url = await _resolve(client, session, http, image_id, size)
        fresh_urls += 1
        try:
            # The CDN URL is signed: never send the token there.
            response = await client._request(session, http, url, graph=False, counter="download_requests")
        except _GaveUpError as exc:
            raise _StageFailedError(exc.error, exc.attempts, stage="download") from None
        if response.status_code in _EXPIRED_URL_STATUSES:
            session.stats["expired_urls"] = session.stats.get("expired_urls", 0) + 1
            if fresh_urls >= client.retry.max_attempts:
                error = f"thumbnail URL rejected ({_describe(response)}) with {fresh_urls} freshly resolved URLs"
                raise _StageFailedError(error, fresh_urls, stage="download")
            logger.info(
                "Mapillary thumbnail URL of %s expired (HTTP %d); resolving it again", image_id, response.status_code
            )
            continue
        if response.status_code != 200:
            raise _StageFailedError(redact(_describe(response), client._token), 1, stage="download")
        content = response.content
        session.stats["bytes_downloaded"] = session.stats.get("bytes_downloaded", 0) + len(content)
        try:
            # Decoding releases the GIL; the rename happens in the thread, so a cancelled run never leaves a
            # half-written file under the final name.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                session.writers, _verify_and_store, content, image_dir / f"{image_id}.jpg"
            )
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            session.stats["verify_failures"] = session.stats.get("verify_failures", 0) + 1
            msg = f"not a complete image ({type(exc).__name__}: {exc})"
            raise _StageFailedError(msg, 1, stage="verify") from None


def _merge_failures(
    previous: dict[str, dict[str, Any]],
    new: dict[str, _StageFailedError],
    ids: list[str],
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
            rows.append(
                {
                    "image_id": image_id,
                    "stage": failure.stage,
                    "attempts": prior + failure.attempts,
                    "error": failure.error,
                    "last_attempt_at": _now_iso(),
                }
            )
        elif earlier is not None:
            rows.append({column: earlier.get(column) for column in FAILURE_COLUMNS})
    return rows


def _validate_download_input(images_df: pd.DataFrame, city_slug: str, size: str) -> pd.DataFrame:
    if not isinstance(images_df, pd.DataFrame):
        msg = f"images_df must be a pandas DataFrame (DiscoveryResult.images), got {type(images_df).__name__}"
        raise ImageryInputError(msg)
    required = [c for c in DISCOVERY_COLUMNS if c != "source"]
    require_columns(
        images_df,
        required,
        table="images_df",
        fix="Pass DiscoveryResult.images (or a thinned copy of it).",
        error=ImageryInputError,
    )
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
        msg = (
            f"images_df.image_id must be letters, digits, '_' or '-' (it names the file), but {len(bad)} are "
            f"not, e.g. {bad[:5]!r}"
        )
        raise ImageryInputError(msg)
    duplicated = images["image_id"].duplicated()
    if duplicated.any():
        msg = (
            f"images_df.image_id must be unique, but {sorted(set(images.loc[duplicated, 'image_id']))[:5]!r} "
            "repeat; deduplicate with drop_duplicates('image_id')"
        )
        raise ImageryInputError(msg)
    return images.reset_index(drop=True)


def _manifest(images: pd.DataFrame, sizes: dict[str, tuple[int, int]], city_slug: str) -> pd.DataFrame:
    kept = images[images["image_id"].isin(sizes)].copy()
    kept["source"] = SOURCE
    kept["path"] = [f"{city_slug}/images/{image_id}.jpg" for image_id in kept["image_id"]]
    kept["width"] = [sizes[image_id][0] for image_id in kept["image_id"]]
    kept["height"] = [sizes[image_id][1] for image_id in kept["image_id"]]
    kept["scene_facts"] = "{}"
    manifest = kept[list(MANIFEST_COLUMNS)].reset_index(drop=True)
    return manifest.astype(
        {"lon": float, "lat": float, "compass_angle": float, "width": "int64", "height": "int64", "is_pano": bool}
    )
