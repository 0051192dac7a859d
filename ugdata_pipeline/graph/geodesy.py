"""Geodesic distance and bearing, the one implementation used everywhere.

All functions take latitude and longitude in decimal degrees (EPSG:4326) and work on the WGS84 ellipsoid
through :class:`pyproj.Geod`. Distances are in metres; bearings are initial bearings in degrees clockwise
from true north, normalised to ``[0, 360)``. Scalars and numpy arrays are both accepted.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import numpy.typing as npt
from pyproj import Geod

WGS84 = Geod(ellps="WGS84")

FloatArray = npt.NDArray[np.float64]


def _inverse(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    lat1_a, lon1_a, lat2_a, lon2_a = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2))
    )
    azimuth_deg, _, distance_m = WGS84.inv(lon1_a, lat1_a, lon2_a, lat2_a)
    return np.asarray(azimuth_deg, dtype=np.float64), np.asarray(distance_m, dtype=np.float64)


def normalize_bearing_deg(bearing_deg: npt.ArrayLike) -> FloatArray:
    """
    Wrap angles in degrees into ``[0, 360)``.

    ``np.mod(-1e-15, 360)`` rounds to exactly 360.0, so the upper end is folded back to 0 explicitly.
    """
    wrapped = np.mod(np.asarray(bearing_deg, dtype=np.float64), 360.0)
    return np.where(wrapped >= 360.0, 0.0, wrapped) + 0.0  # + 0.0 turns -0.0 into 0.0


@overload
def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float: ...
@overload
def distance_m(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike) -> FloatArray: ...
def distance_m(lat1, lon1, lat2, lon2):  # type: ignore[no-untyped-def]
    """
    Geodesic distance between two points on the WGS84 ellipsoid.

    Parameters
    ----------
    lat1, lon1, lat2, lon2
        Decimal degrees, EPSG:4326; scalars or broadcastable arrays.

    Returns
    -------
    distance
        Metres, ``>= 0``; a float for scalar input, else an array.
    """
    _, dist = _inverse(lat1, lon1, lat2, lon2)
    dist = np.abs(dist)
    return float(dist) if dist.ndim == 0 else dist


@overload
def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float: ...
@overload
def bearing_deg(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike) -> FloatArray: ...
def bearing_deg(lat1, lon1, lat2, lon2):  # type: ignore[no-untyped-def]
    """
    Initial bearing from point 1 to point 2.

    Parameters
    ----------
    lat1, lon1, lat2, lon2
        Decimal degrees, EPSG:4326; scalars or broadcastable arrays.

    Returns
    -------
    bearing
        Degrees clockwise from true north in ``[0, 360)`` (0 when the points coincide).
    """
    azimuth, _ = _inverse(lat1, lon1, lat2, lon2)
    bearing = normalize_bearing_deg(azimuth)
    return float(bearing) if bearing.ndim == 0 else bearing


def distance_bearing(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """
    Distance in metres and bearing in degrees ``[0, 360)`` from point 1 to point 2, in one geodesic call.

    Returns
    -------
    distance_m, bearing_deg
        Arrays of the broadcast input shape.
    """
    azimuth, dist = _inverse(lat1, lon1, lat2, lon2)
    return np.abs(dist), normalize_bearing_deg(azimuth)
