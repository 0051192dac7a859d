"""OSM acquisition: offline from files, online through osmnx, into one normalized schema."""

from __future__ import annotations

from pathlib import Path

from ugdata_pipeline.cities import City, check_source
from ugdata_pipeline.errors import NetworkDisabledError
from ugdata_pipeline.osm.schema import OsmExtract

__all__ = ["OsmExtract", "load_city_osm"]


def load_city_osm(city: City, *, allow_network: bool = False, cache_dir: Path | None = None) -> OsmExtract:
    """
    Acquire a city's OSM data as normalized tables.

    Parameters
    ----------
    city
        A registry city.
    allow_network
        Whether ``place`` / ``bbox`` sources may be downloaded (the ``online`` deployment).
    cache_dir
        The osmnx response cache for online sources.

    Raises
    ------
    NetworkDisabledError
        The city needs network and ``allow_network`` is false.
    OsmSourceError
        The source file is missing, unreadable, not OSM, or over the area limit.
    """
    if city.source.requires_network:
        if not allow_network:
            msg = (f"city {city.slug!r}: source kind {city.source.kind!r} downloads from OpenStreetMap, and "
                   "this deployment is offline; run with UGDATA_DEPLOYMENT=online or give a file source")  # fmt: skip
            raise NetworkDisabledError(msg)
        from ugdata_pipeline.osm.online import download_city_osm

        return download_city_osm(city, cache_dir=cache_dir)
    check_source(city)
    from ugdata_pipeline.osm.offline import read_osm_file

    assert city.source.path is not None
    return read_osm_file(city.source.path)
