"""A whole city drawn by the offline renderer: cameras along its named streets, one view each, written resumably.

:func:`render_city` is the offline twin of an image source (the ``image_files`` step): it samples cameras (or takes
the ones ``image_candidates`` stored), reuses every view whose file records the same scene, options and camera
pose, and draws the rest -- in worker processes when there are many. The single view is
:func:`ugdata_pipeline.imagery.render.render_view`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import numpy as np
import pandas as pd

from ugdata_pipeline.atomic_files import write_file_atomic
from ugdata_pipeline.errors import RenderInputError
from ugdata_pipeline.imagery.cameras import sample_cameras
from ugdata_pipeline.imagery.lighting import sequence_lighting
from ugdata_pipeline.imagery.manifest import MANIFEST_COLUMNS
from ugdata_pipeline.imagery.render import CREATOR, SOURCE, render_view, sequence_weather, view_rng
from ugdata_pipeline.imagery.render_config import RenderConfig
from ugdata_pipeline.imagery.scene import Scene, build_scene
from ugdata_pipeline.imagery.view_files import encode_image, read_image_facts
from ugdata_pipeline.osm.schema import OsmExtract

logger = logging.getLogger(__name__)

__all__ = ["MIN_VIEWS_PER_WORKER", "RenderResult", "render_city", "usable_cores"]


@dataclass(slots=True)
class RenderResult:
    """
    The rendered views of one city.

    Attributes
    ----------
    images
        The ``images`` manifest (:data:`MANIFEST_COLUMNS`), one row per view, in camera order.
    counts
        ``views``, ``rendered`` (drawn this run), ``reused`` (finished files kept), ``cameras`` (before the
        ``max_views`` cap), the scene's counts (``buildings``, ``invalid_geometry_repaired``, ...), and mean
        fractions over the views, for asset metadata.
    """

    images: pd.DataFrame
    counts: dict[str, float | int] = field(default_factory=dict)


def _empty_manifest() -> pd.DataFrame:
    types = {
        "lon": "float64",
        "lat": "float64",
        "compass_angle": "float64",
        "width": "int64",
        "height": "int64",
        "is_pano": "bool",
    }
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, "object")) for c in MANIFEST_COLUMNS})


def _captured_at(extract: OsmExtract) -> str:
    if extract.snapshot is None:
        return "1970-01-01T00:00:00Z"  # unknown snapshot: a fixed, obviously synthetic date keeps runs identical
    stamp = extract.snapshot if extract.snapshot.tzinfo else extract.snapshot.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class _ViewJob:
    """One view to draw and write (the camera fields :func:`render_view` needs, and the target file)."""

    path: Path
    x_m: float
    y_m: float
    heading_deg: float
    camera_id: str
    street_name: str | None
    sequence_id: str


#: Fewer views than this are drawn in the calling process: starting workers costs about as much.
MIN_VIEWS_PER_WORKER = 200
_WORKER_STATE: tuple[Scene, RenderConfig, str] | None = None


def _view_fingerprint(fingerprint: str, job: _ViewJob) -> str:
    """The city's render fingerprint narrowed to one camera pose: a camera moved under the same id is redrawn."""
    pose = f"{fingerprint}|{job.x_m:.3f}|{job.y_m:.3f}|{job.heading_deg:.4f}"
    return hashlib.sha1(pose.encode()).hexdigest()[:16]


def _draw_and_write(scene: Scene, config: RenderConfig, fingerprint: str, job: _ViewJob) -> dict:
    image, facts = render_view(
        scene,
        job.x_m,
        job.y_m,
        job.heading_deg,
        config,
        view_rng(config.seed, job.camera_id),
        street_name=job.street_name,
        weather=sequence_weather(config.seed, job.sequence_id),
        lighting=sequence_lighting(config.seed, job.sequence_id),
    )
    write_file_atomic(
        job.path,
        encode_image(image, facts, image_format=config.image_format, fingerprint=_view_fingerprint(fingerprint, job)),
    )
    return facts


def _start_worker(scene: Scene, config: RenderConfig, fingerprint: str) -> None:
    global _WORKER_STATE
    _WORKER_STATE = (scene, config, fingerprint)


def _worker_draw(job: _ViewJob) -> dict:
    assert _WORKER_STATE is not None
    return _draw_and_write(*_WORKER_STATE, job)


def usable_cores(cap: int = 8) -> int:
    """Cores this process may run on (its CPU affinity), at most ``cap``."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(usable, cap))


def _render_views(
    scene: Scene, config: RenderConfig, fingerprint: str, jobs: list[_ViewJob], *, workers: int | None
) -> Iterator[dict]:
    """Draw and write ``jobs``, yielding each view's facts in order; in worker processes when there are many."""
    workers = min(workers or 1, max(1, len(jobs) // MIN_VIEWS_PER_WORKER))
    if workers <= 1:
        for job in jobs:
            yield _draw_and_write(scene, config, fingerprint, job)
        return
    # spawn, not fork: the calling process (a Dagster step) runs threads that a fork would copy mid-flight
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(scene, config, fingerprint)) as pool:
        yield from pool.imap(_worker_draw, jobs, chunksize=16)


def render_city(
    extract: OsmExtract,
    *,
    city_slug: str,
    root: Path,
    config: RenderConfig | None = None,
    max_views: int | None = None,
    crs_metric: str,
    progress: Callable[[int, int], None] | None = None,
    cameras: pd.DataFrame | None = None,
    workers: int | None = None,
) -> RenderResult:
    """
    Render street-level views along a city's named streets into ``<root>/<city_slug>/images/``.

    Parameters
    ----------
    extract
        The city's OSM tables (EPSG:4326).
    city_slug
        Registry slug: the folder name and part of every image id.
    root
        Storage root; image paths in the manifest are relative to it (POSIX).
    config
        Renderer options (defaults: 256 x 256 PNG, a camera every 40 m both ways, seed 0).
    max_views
        Cap on views (overrides ``config.max_views``); cameras are thinned evenly along the camera order.
    crs_metric
        The city's metric CRS (``UrbanGraph.crs_metric``; ``city_metric_crs(extract.streets)``).
    progress
        Called as ``progress(done, total)`` after each view.
    cameras
        The cameras :func:`sample_cameras` gave for this city and config (e.g. stored by an earlier step), so they
        are not sampled again; by default they are sampled here.
    workers
        Processes drawing views (default 1: this process). Every view has its own seeded generator, so the files
        do not depend on it. Workers are spawned, so a script that passes more than one needs the usual
        ``if __name__ == "__main__":`` guard; :func:`usable_cores` is a good value.

    Returns
    -------
    result
        Manifest rows with ``source="render"``, ``creator`` :data:`CREATOR`, ``captured_at`` = the extract's
        snapshot (UTC), ``scene_facts`` JSON; and counts. A file that is already complete and was drawn with the
        same options is not drawn again; its facts are read back from the file.

    Raises
    ------
    RenderInputError
        A bad option or ``city_slug``, before any work.
    """
    config = config or RenderConfig()
    config.validate()
    if not city_slug or any(ch in city_slug for ch in "/\\") or city_slug.startswith("."):
        msg = f"`city_slug` must be a plain folder name such as 'helsinki', got {city_slug!r}"
        raise RenderInputError(msg)
    cap = max_views if max_views is not None else config.max_views
    if cap is not None and (not isinstance(cap, int) or cap < 0):
        msg = f"`max_views` must be None or an integer >= 0, got {cap!r}"
        raise RenderInputError(msg)
    root = Path(root)
    streets = extract.streets
    scene = build_scene(
        extract,
        crs_metric=crs_metric,
        default_building_height_m=config.default_building_height_m,
        margin_m=config.max_distance_m + 50.0,
    )
    if cameras is None:
        cameras = sample_cameras(
            streets,
            crs_metric=scene.crs_metric,
            spacing_m=config.spacing_m,
            seed=config.seed,
            heading_jitter_deg=config.heading_jitter_deg,
            city_slug=city_slug,
            view_offsets_deg=config.view_offsets_deg,
        )
    n_cameras = len(cameras)
    if cap is not None and n_cameras > cap:
        picked = np.unique(np.linspace(0, n_cameras - 1, cap).round().astype(int)) if cap else np.empty(0, int)
        cameras = cameras.iloc[picked].reset_index(drop=True)
    # what is drawn (options, and the city's buildings, trees and ground) and, per view, where the camera stands
    fingerprint = f"{config.fingerprint(city_slug)}:{scene.digest()}"
    folder = root / city_slug / "images"
    captured_at = _captured_at(extract)
    facts_out: list[str] = []
    paths: list[str] = []
    sums = dict.fromkeys(("building_fraction", "green_fraction", "sky_fraction", "road_fraction"), 0.0)
    stored_facts: dict[int, dict] = {}
    jobs: list[tuple[int, _ViewJob]] = []
    for index, camera in enumerate(cameras.itertuples(index=False)):
        path = folder / f"{camera.camera_id}.{config.extension}"
        paths.append(path.relative_to(root).as_posix())
        job = _ViewJob(
            path,
            camera.x_m,
            camera.y_m,
            camera.heading_deg,
            str(camera.camera_id),
            camera.street_name,
            str(camera.sequence_id),
        )
        stored = read_image_facts(path) if path.exists() else None
        if stored is not None and stored[0] == _view_fingerprint(fingerprint, job):
            stored_facts[index] = stored[1]
        else:
            jobs.append((index, job))
    reused, rendered = len(stored_facts), len(jobs)
    if progress is not None and reused:
        progress(reused, len(cameras))
    drawn = _render_views(scene, config, fingerprint, [job for _, job in jobs], workers=workers)
    for done, ((index, _), facts) in enumerate(zip(jobs, drawn, strict=True), start=reused + 1):
        stored_facts[index] = facts
        if progress is not None:
            progress(done, len(cameras))
    for index in range(len(cameras)):
        facts = stored_facts[index]
        for key in sums:
            sums[key] += float(facts.get(key, 0.0))
        facts_out.append(json.dumps(facts, ensure_ascii=False, separators=(",", ":")))
    if len(cameras):
        images = pd.DataFrame(
            {
                "image_id": cameras["camera_id"].astype(str),
                "source": SOURCE,
                "lon": cameras["lon"].astype(float),
                "lat": cameras["lat"].astype(float),
                "compass_angle": cameras["compass_angle"].astype(float),
                "captured_at": captured_at,
                "sequence_id": cameras["sequence_id"].astype(str),
                "path": paths,
                "width": config.size,
                "height": config.size,
                "is_pano": False,
                "creator": CREATOR,
                "scene_facts": facts_out,
            }
        )[list(MANIFEST_COLUMNS)]
    else:
        images = _empty_manifest()
    views = len(images)
    counts: dict[str, float | int] = {
        "views": views,
        "rendered": rendered,
        "reused": reused,
        "cameras": n_cameras,
        **scene.counts,
        **{f"mean_{k}": round(v / views, 4) if views else 0.0 for k, v in sums.items()},
    }
    logger.info(
        "%s: %s views (%s rendered, %s reused) from %s cameras",
        city_slug,
        f"{views:,}",
        f"{rendered:,}",
        f"{reused:,}",
        f"{n_cameras:,}",
    )
    return RenderResult(images=images, counts=counts)
