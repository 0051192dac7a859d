"""OSM acquisition: offline from files, online through osmnx, into one normalized schema."""

from __future__ import annotations

from pathlib import Path

from ugdata_pipeline.cities import City
from ugdata_pipeline.errors import EmptyAreaError, NetworkDisabledError
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline.osm.source_check import check_source

__all__ = ["OsmExtract", "load_city_osm"]


def load_city_osm(city: City, *, allow_network: bool = False, cache_dir: Path | None = None) -> OsmExtract:
    """
    Acquire a city's OSM data as normalized tables, limited to the source's ``clip`` box when it has one.

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
        The source file is missing, unreadable, not OSM, or over the area limit, or its clip lies outside it.
    CorruptFileError
        The source file is OSM data that is truncated or damaged (the message names the file, city and fix).
    EmptyAreaError
        The clip holds no named streets of the file.
    """
    if city.source.requires_network:
        if not allow_network:
            msg = (
                f"city {city.slug!r}: source kind {city.source.kind!r} downloads from OpenStreetMap, and "
                "this deployment is offline; run with UGDATA_DEPLOYMENT=online or give a file source"
            )
            raise NetworkDisabledError(msg)
        from ugdata_pipeline.osm.online import download_city_osm

        return download_city_osm(city, cache_dir=cache_dir)
    check_source(city)
    from ugdata_pipeline.osm.offline import read_osm_file

    assert city.source.path is not None
    extract = read_osm_file(city.source.path, city=city)
    if city.source.clip is None:
        return extract
    from ugdata_pipeline.osm.clip import clip_extract

    clipped = clip_extract(extract, city.source.clip)
    # a file without a header bbox cannot be checked before reading: a clip beside its data shows up here
    if not clipped.streets["name"].notna().any():
        msg = (
            f"city {city.slug!r}: source.clip {list(city.source.clip)} holds no named streets of "
            f"{city.source.path.name}; give a [west, south, east, north] box over the file's streets"
        )
        raise EmptyAreaError(msg)
    return clipped
