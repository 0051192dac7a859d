"""
The metric CRS: one per city, chosen once from its named streets and passed down to every stage.

Every distance, snap, grid cell, buffer and subgraph radius of a city is measured in the same UTM zone, so the
stages agree with each other and with the graph (``UrbanGraph.crs_metric``). :func:`city_metric_crs` is the
rule; the graph build and the assets call it on the city's street table. :func:`metric_crs_for` is the one
estimator, for ad-hoc geometries that belong to no city (a notebook, a benchmark script, a test).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import numpy.typing as npt
from pyproj import CRS
from pyproj.exceptions import CRSError

from ugdata_pipeline.errors import EmptyAreaError, MetricCrsError

#: How a caller gets the city's metric CRS; every "crs_metric is missing" error says it.
HOW_TO_PASS = (
    "pass crs_metric=UrbanGraph.crs_metric (or city_metric_crs(osm_streets) in an asset; "
    "metric_crs_for(geometries) for points of no city)"
)


def metric_crs_for(geometries: gpd.GeoSeries | gpd.GeoDataFrame) -> str:
    """
    The UTM zone of ``geometries`` as a CRS string, e.g. ``"EPSG:32635"``.

    Parameters
    ----------
    geometries
        Non-empty geometries with a CRS (usually EPSG:4326); the zone is the one at the centre of their bounds
        (``GeoSeries.estimate_utm_crs``).

    Raises
    ------
    ValueError
        No geometries or no CRS: nothing to estimate the zone from.
    """
    if len(geometries) == 0:
        msg = "cannot choose a metric CRS for an empty table; pass the city's streets or set crs_metric explicitly"
        raise ValueError(msg)
    if geometries.crs is None:
        msg = "cannot choose a metric CRS for geometries without a CRS; set it first (e.g. .set_crs('EPSG:4326'))"
        raise ValueError(msg)
    return geometries.estimate_utm_crs().to_string()


def utm_epsg(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """
    The EPSG code of each point's own standard 6-degree UTM zone (WGS84: 326zz north of the equator, 327zz south).

    Not a city's metric CRS: a fixed global grid for labels that must not depend on which other points are given
    (UGBench's spatial clusters). The Norway/Svalbard exceptions are not applied; ``lon = 180`` is zone 60.
    """
    x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    zone = np.clip(np.floor((x + 180.0) / 6.0).astype(np.int64) + 1, 1, 60)
    return np.where(y >= 0, 32600, 32700) + zone


def city_metric_crs(streets: gpd.GeoDataFrame, *, where: str = "the area") -> str:
    """
    The metric CRS of a city: the UTM zone of its named streets (the rule ``build_urban_graph`` uses).

    Parameters
    ----------
    streets
        The city's normalized street table (``osm_streets``, EPSG:4326, with ``name``).
    where
        How to name the city in errors (``"city 'helsinki'"``).

    Raises
    ------
    EmptyAreaError
        The table holds no named streets.
    """
    named = streets[streets["name"].notna()] if len(streets) else streets
    if len(named) == 0:
        msg = (
            f"{where} has no named streets ({len(streets)} street ways), so it has no metric CRS; "
            "check the extract covers a built-up area, or choose a larger one"
        )
        raise EmptyAreaError(msg)
    return metric_crs_for(named)


def metric_crs(crs_metric: object, *, needed_by: str) -> CRS:
    """
    The pyproj CRS of a ``crs_metric`` argument, checked: given, readable and in metres.

    Parameters
    ----------
    crs_metric
        What the caller passed, e.g. ``"EPSG:32635"``.
    needed_by
        The function or asset that needs it, named in the error.

    Raises
    ------
    MetricCrsError
        ``crs_metric`` is missing, unreadable or not a projected CRS in metres.
    """
    if crs_metric is None or (isinstance(crs_metric, str) and not crs_metric.strip()):
        msg = f"{needed_by} needs the city's metric CRS, got crs_metric={crs_metric!r}; {HOW_TO_PASS}"
        raise MetricCrsError(msg)
    try:
        crs = CRS.from_user_input(crs_metric)
    except CRSError as exc:
        msg = f"{needed_by}: crs_metric={crs_metric!r} is not a CRS pyproj can read ({exc}); {HOW_TO_PASS}"
        raise MetricCrsError(msg) from exc
    unit = crs.axis_info[0].unit_name if crs.axis_info else None
    if not crs.is_projected or unit not in ("metre", "meter"):
        msg = f"{needed_by}: crs_metric={crs_metric!r} is not a projected CRS in metres (unit {unit!r}); {HOW_TO_PASS}"
        raise MetricCrsError(msg)
    return crs
