"""Words for directions and distances, and the one renderer of ``node_text``.

Every later stage (reasoning paths, subgraph descriptions, captions, benchmark candidates) phrases directions
and distances through these helpers, so the same bearing is always the same word.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from ugdata_pipeline.graph.geodesy import normalize_bearing_deg

#: 8-point compass, clockwise from north; each word covers 45 degrees centred on its heading.
COMPASS_WORDS: tuple[str, ...] = (
    "north",
    "north-east",
    "east",
    "south-east",
    "south",
    "south-west",
    "west",
    "north-west",
)
COMPASS_SECTOR_DEG = 360.0 / len(COMPASS_WORDS)

#: Distance bands used when a phrase should not give away an exact figure (upper bound in metres, label).
DISTANCE_BANDS_M: tuple[tuple[float, str], ...] = (
    (50.0, "right next to"),
    (200.0, "close to"),
    (500.0, "a short walk from"),
    (math.inf, "far from"),
)


def compass_index(bearing_deg: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Index into :data:`COMPASS_WORDS` for bearings in degrees clockwise from north (any real value)."""
    wrapped = normalize_bearing_deg(bearing_deg)
    return (np.floor((wrapped + COMPASS_SECTOR_DEG / 2) / COMPASS_SECTOR_DEG).astype(np.int64)) % len(COMPASS_WORDS)


def compass_word(bearing_deg: float) -> str:
    """
    8-point compass word for a bearing.

    Parameters
    ----------
    bearing_deg
        Degrees clockwise from true north; any real value, wrapped into ``[0, 360)``.

    Returns
    -------
    word
        One of :data:`COMPASS_WORDS`, e.g. ``"north-east"`` for 45°.
    """
    return COMPASS_WORDS[int(compass_index(bearing_deg))]


def distance_phrase(distance_m: float) -> str:
    """
    Human phrase for a distance: ``"8 m"``, ``"120 m"``, ``"1.3 km"``.

    Parameters
    ----------
    distance_m
        Metres, ``>= 0``. Below 100 m rounded to the metre, below 1 km to 10 m, above to 0.1 km.
    """
    if not math.isfinite(distance_m) or distance_m < 0:
        msg = f"distance_m must be a finite number >= 0, got {distance_m!r}"
        raise ValueError(msg)
    if distance_m < 100:
        return f"{round(distance_m)} m"
    if distance_m < 995:
        return f"{round(distance_m / 10) * 10} m"
    return f"{distance_m / 1000:.1f} km"


def distance_band(distance_m: float) -> str:
    """Binned distance label from :data:`DISTANCE_BANDS_M` (``"close to"`` for 120 m)."""
    for upper_m, label in DISTANCE_BANDS_M:
        if distance_m < upper_m:
            return label
    return DISTANCE_BANDS_M[-1][1]


#: Field order of ``node_text``; compatible with the reference's ``Key: value`` layout, whose parser reads
#: ``Name:``, ``Category:`` and ``Coordinates:`` back out.
NODE_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("Name", "name"),
    ("ID", "node_id"),
    ("Category", "category"),
    ("Address", "address"),
    ("City", "city"),
    ("Country", "country"),
)


def render_node_text(node: Mapping[str, object], *, city: str, country: str) -> str:
    """
    Render one node as ``node_text``.

    ``Name: Mannerheimintie, ID: street:mannerheimintie, Category: major_road, City: Helsinki,
    Country: Finland, Coordinates: (24.938000, 60.170000)``. Empty fields are left out; the country is the
    city's own, never a constant.

    Parameters
    ----------
    node
        A mapping with ``node_id``, ``name``, ``category``, ``lon``, ``lat`` and optionally ``address``.
    city, country
        The display name and country of the node's city, from the registry.
    """
    values = dict(node)
    values["city"] = city
    values["country"] = country
    parts = []
    for label, key in NODE_TEXT_FIELDS:
        value = values.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
            continue
        parts.append(f"{label}: {value}")
    lon, lat = values.get("lon"), values.get("lat")
    if isinstance(lon, int | float) and isinstance(lat, int | float) and math.isfinite(lon + lat):
        parts.append(f"Coordinates: ({lon:.6f}, {lat:.6f})")
    else:
        parts.append("Coordinates: unavailable")
    return ", ".join(parts)
