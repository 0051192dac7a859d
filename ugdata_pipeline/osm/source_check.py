"""Is a city's OSM source usable? Checked before any work starts; the registry itself only parses."""

from __future__ import annotations

import os

from ugdata_pipeline.cities import City, bbox_area_km2
from ugdata_pipeline.errors import OsmSourceError
from ugdata_pipeline.osm.offline import osm_file_header

__all__ = ["check_source"]


def check_source(city: City) -> None:
    """
    Check that a city's source can be used, before any work: the file exists, is readable, is OSM data and
    covers no more than the area limit. With a ``clip``, the clip must lie inside the file's header bbox (not
    checked when the file has no header bbox) and the area limit was already applied to the clip when the
    registry loaded, so the file may be larger. Online sources are checked when their area is geocoded.

    Raises
    ------
    OsmSourceError
        Naming the city and the ``source`` field.
    """
    source = city.source
    if source.path is None:
        return
    where = f"city {city.slug!r}: source.{'extract' if source.kind == 'bundled' else 'path'}"
    if not source.path.exists():
        msg = f"{where} {str(source.path)!r} does not exist; fix the path in the registry"
        raise OsmSourceError(msg)
    if not source.path.is_file() or not os.access(source.path, os.R_OK):
        msg = f"{where} {str(source.path)!r} is not a readable file; check its permissions"
        raise OsmSourceError(msg)
    try:
        header = osm_file_header(source.path)
    except OsmSourceError as exc:
        msg = f"{where}: {exc}"
        raise OsmSourceError(msg) from exc
    extent: tuple[float, float, float, float] | None = header["bbox"]  # type: ignore[assignment]
    if source.clip is not None:
        if extent is not None and not _box_within(source.clip, extent):
            shown = ", ".join(f"{v:g}" for v in extent)
            west, south, east, north = source.clip
            swapped = (south, west, north, east)
            # both orders are valid degrees wherever |longitude| < 90, so only the extent shows a swap
            if _box_within(swapped, extent):
                fix = f"it looks like [south, west, north, east]: give [{', '.join(f'{v:g}' for v in swapped)}]"
            else:
                fix = "give a [west, south, east, north] box within that extent"
            msg = (
                f"city {city.slug!r}: source.clip {list(source.clip)} is not inside the extent of "
                f"{source.path.name} [{shown}] (its header bbox); {fix}"
            )
            raise OsmSourceError(msg)
        return
    if extent is not None:
        area = bbox_area_km2(extent)
        if area > city.max_area_km2:
            msg = (
                f"{where} covers {area:,.0f} km², over the limit of {city.max_area_km2:,.0f} km²; "
                "give a source.clip box, cut the extract (osmium extract) or raise max_area_km2 for this "
                "city"
            )
            raise OsmSourceError(msg)


def _box_within(inner: tuple[float, float, float, float], outer: tuple[float, float, float, float]) -> bool:
    """Whether ``inner`` lies inside ``outer`` (both ``(west, south, east, north)``; edges may touch)."""
    # header boxes are stored with 1e-7 degree (about 1 cm) resolution: allow that much rounding
    tolerance = 1e-7
    return (
        inner[0] >= outer[0] - tolerance
        and inner[1] >= outer[1] - tolerance
        and inner[2] <= outer[2] + tolerance
        and inner[3] <= outer[3] + tolerance
    )
