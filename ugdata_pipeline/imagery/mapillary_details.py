"""Mapillary details: one Graph API entity request per image kept after thinning, never per image discovered.

Coverage tiles (:mod:`~ugdata_pipeline.imagery.mapillary_discovery`) give every image's id, position, time, angle
and sequence; the Graph API adds what a tile lacks for the images that survive thinning: the exact position
(``geometry``), ``computed_compass_angle`` where the camera recorded none, the ``creator`` and the authoritative
``captured_at`` / ``sequence`` / ``is_pano``. The request is ``GET /<image_id>?fields=...`` (the entity form the
real responses in the test fixtures come from; the v4 API documents no batched ``?ids=`` form). Each answer is
cached as ``<cache_dir>/<image_id>.json``, so a rerun asks only for images not seen before. An image the API no
longer has (HTTP 404) is dropped; one whose request failed keeps its tile values and is recorded as a failure
(``stage`` = ``details``), to be asked again by the next run.

Plain Python; never imports Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.imagery.coverage_tiles import iso_from_ms
from ugdata_pipeline.imagery.mapillary import (
    _ID_PATTERN,
    _SERVICE_DOWN,
    DETAIL_FIELDS,
    DISCOVERY_COLUMNS,
    SOURCE,
    _describe,
    _gather_or_cancel,
    _GaveUpError,
    _now_iso,
    _Session,
    _write_atomic,
)
from ugdata_pipeline.imagery.source_outcome import failures_frame
from ugdata_pipeline.tables import require_columns
from ugdata_pipeline.throttle import redact

if TYPE_CHECKING:
    from ugdata_pipeline.imagery.mapillary import MapillaryClient

__all__ = ["DetailsResult", "fetch_details", "parse_image_entity"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class DetailsResult:
    """
    The kept images with their Graph API details.

    Attributes
    ----------
    images
        The input rows (:data:`DISCOVERY_COLUMNS` plus any extra input columns, input order) with ``lon``,
        ``lat``, ``compass_angle``, ``captured_at``, ``sequence_id``, ``is_pano`` and ``creator`` taken from the
        entity; images the API no longer has are dropped.
    failures
        Images whose request failed (:data:`FAILURE_COLUMNS`, ``stage`` = ``"details"``); they keep their tile
        values.
    counts
        ``details_requested``, ``details_cached``, ``details_fetched``, ``details_gone``, ``details_failed``.
    """

    images: pd.DataFrame
    failures: pd.DataFrame
    counts: dict[str, int]


def parse_image_entity(record: dict[str, Any]) -> dict[str, Any] | None:
    """
    One Graph API image entity (``GET /<image_id>?fields=...``) as a discovery row, with ``captured_ms``.

    ``geometry`` (the camera's own GPS position, as in the coverage tiles) is used, ``computed_geometry`` when it
    is absent; ``compass_angle``, ``computed_compass_angle`` when it is absent. None without an id or a position.
    """
    geometry = record.get("geometry") or record.get("computed_geometry") or {}
    coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if not coordinates or len(coordinates) < 2 or record.get("id") is None:
        return None
    angle = record.get("compass_angle")
    if angle is None:
        angle = record.get("computed_compass_angle")
    captured_ms = record.get("captured_at")
    captured = iso_from_ms(captured_ms)
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


async def fetch_details(
    client: MapillaryClient, images: pd.DataFrame, *, cache_dir: str | os.PathLike[str]
) -> DetailsResult:
    """
    Ask the Graph API for the details of ``images`` (e.g. the thinned discovery rows), with a disk cache.

    Parameters
    ----------
    images
        Rows with the :data:`DISCOVERY_COLUMNS`; ``image_id`` letters, digits, ``_`` or ``-``.
    cache_dir
        Folder of the per-image answers (created on first write).

    Returns
    -------
    DetailsResult

    Raises
    ------
    MapillaryAuthError
        When Mapillary rejects the token (the first Graph request is made alone, so nothing is written).
    """
    require_columns(
        images,
        [c for c in DISCOVERY_COLUMNS if c != "source"],
        table="images",
        fix="Pass DiscoveryResult.images (or a thinned copy of it).",
        error=ImageryInputError,
    )
    cache = Path(cache_dir)
    ids = [str(i) for i in images["image_id"]]
    bad = [i for i in ids if not _ID_PATTERN.match(i)]
    if bad:
        msg = f"image ids must be letters, digits, '_' or '-' (they name cache files), got {bad[:5]!r}"
        raise ImageryInputError(msg)
    details: dict[str, dict[str, Any] | None] = {}
    for image_id in ids:
        cached = _read_cached(cache / f"{image_id}.json")
        if cached is not None:
            details[image_id] = cached
    counts = {"details_requested": len(ids), "details_cached": len(details), "details_fetched": 0}
    failures: list[dict[str, Any]] = []
    pending = [i for i in ids if i not in details]
    if pending:
        semaphore = asyncio.Semaphore(client.concurrency)
        async with client._session() as session, session.new_client(client.concurrency) as http:

            async def one(image_id: str) -> None:
                async with semaphore:
                    kind, payload = await _fetch_one(client, session, http, image_id)
                if kind == "failed":
                    failures.append(payload)
                    return
                details[image_id] = payload
                if kind == "found":
                    _write_atomic(cache / f"{image_id}.json", json.dumps(payload).encode())

            await _gather_or_cancel([one(i) for i in pending])
        counts["details_fetched"] = sum(1 for i in pending if details.get(i) is not None)
    gone = {i for i in ids if i in details and details[i] is None}
    counts["details_gone"] = len(gone)
    counts["details_failed"] = len(failures)
    out = images.copy()
    out["image_id"] = ids
    out = out[~out["image_id"].isin(gone)].reset_index(drop=True)
    for position, image_id in enumerate(out["image_id"]):
        row = parse_image_entity(details[image_id]) if details.get(image_id) else None
        if row is None:
            continue
        for column in ("lon", "lat", "compass_angle", "captured_at", "sequence_id", "is_pano", "creator"):
            if row[column] == "" or (isinstance(row[column], float) and math.isnan(row[column])):
                continue  # the entity lacks it: the tile's value stands
            out.at[position, column] = row[column]
    if failures:
        logger.warning("Mapillary details: %d of %d requests failed; their tile values stand", len(failures), len(ids))
    return DetailsResult(images=out, failures=failures_frame(failures), counts=counts)


def _read_cached(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with contextlib.suppress(ValueError, OSError):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict):
            return record
    return None


async def _fetch_one(
    client: MapillaryClient, session: _Session, http: httpx.AsyncClient, image_id: str
) -> tuple[str, dict[str, Any] | None]:
    """``("found", entity)``, ``("gone", None)`` when the API no longer has the image, or ``("failed", row)``."""
    if session.service_down:
        return "failed", _failure(image_id, _SERVICE_DOWN, 0)
    try:
        response = await client._request(
            session,
            http,
            f"{client.graph_url}/{image_id}",
            params={"fields": DETAIL_FIELDS},
            graph=True,
            counter="detail_requests",
        )
    except _GaveUpError as exc:
        return "failed", _failure(image_id, exc.error, exc.attempts)
    if response.status_code == 404:
        return "gone", None
    if response.status_code != 200:
        return "failed", _failure(image_id, redact(_describe(response), client._token), 1)
    try:
        record = response.json()
    except ValueError:
        record = None
    if not isinstance(record, dict) or str(record.get("id")) != image_id:
        return "failed", _failure(image_id, "the answer is not the image's Graph API entity JSON", 1)
    return "found", record


def _failure(image_id: str, error: str, attempts: int) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "stage": "details",
        "attempts": attempts,
        "error": error,
        "last_attempt_at": _now_iso(),
    }
