"""Light and season of the offline renderer's views: one sun, season and time of day per capture sequence.

A real capture session (a Mapillary sequence) happens at one time of one day: one sun, one season, one sky.
The renderer mirrors that: :func:`sequence_lighting` derives a :class:`Lighting` from ``(seed, sequence_id)``
with a stable hash, so every view of a sequence shares it and different sequences differ:

* **sun**: azimuth uniform over the full 0..360 degrees, elevation by season (15..65 degrees overall). The
  azimuth is independent of the camera heading, so wall shading says nothing about the absolute heading (with
  one fixed sun per city it did: the lit side of the street gave the heading away). Walls are shaded per view
  from their outward normals (:meth:`Lighting.wall_shade`): a low sun gives strong, warm lit/unlit contrast,
  a high sun flatter light;
* **season**: tree crowns (green, light green, yellow-orange-red, bare brown) and grass, park and field ground
  (green, fresh, browner, snow); only colours change, never which pixels are vegetation, so ``green_fraction``
  and the other scene facts keep their meaning;
* **time of day**: a brightness and colour tint of the whole view, warmer and dimmer with a low sun.

These are recorded in each view's scene facts (:meth:`Lighting.facts`) for inspection only; they are
rendering nuisance variables, not labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ugdata_pipeline.errors import SceneInputError
from ugdata_pipeline.imagery.palette import (
    CEMETERY,
    FIELD,
    FOREST,
    GRASS,
    GROUND_DEFAULT,
    GROUND_PALETTE,
    PARK,
    PATH,
    PAVED,
    PITCH,
    RESIDENTIAL,
    WATER,
)
from ugdata_pipeline.seeding import stable_hash

#: Seasons, in the order :func:`sequence_lighting` picks them from the hash.
SEASONS: tuple[str, ...] = ("spring", "summer", "autumn", "winter")
#: Sun elevation range per season, degrees above the horizon (a winter sun stays low).
SUN_ELEVATION_DEG: dict[str, tuple[float, float]] = {
    "spring": (15.0, 50.0),
    "summer": (25.0, 65.0),
    "autumn": (15.0, 45.0),
    "winter": (15.0, 30.0),
}

_GREEN_GROUND = [GRASS, PARK, CEMETERY, PITCH]


def _season_ground(season: str) -> np.ndarray:
    """The land-cover palette (RGB 0..255, ``(classes, 3)``) of ``season``; summer is the scene's own."""
    palette = GROUND_PALETTE.copy()

    def blend(classes: list[int], colour: tuple[int, int, int], weight: float) -> None:
        palette[classes] = palette[classes] * (1.0 - weight) + np.asarray(colour, np.float32) * weight

    if season == "spring":  # fresh, lighter green
        blend([*_GREEN_GROUND, FIELD], (132, 184, 88), 0.4)
        blend([FOREST], (84, 138, 64), 0.35)
        blend([RESIDENTIAL], (130, 160, 104), 0.3)
    elif season == "autumn":  # dry, browner
        blend(_GREEN_GROUND, (146, 132, 78), 0.45)
        blend([FIELD], (170, 142, 92), 0.5)
        blend([FOREST], (118, 92, 48), 0.5)
        blend([RESIDENTIAL], (148, 138, 108), 0.35)
    elif season == "winter":  # snow on everything soft; roads ploughed, kerbs and paths half white
        blend([*_GREEN_GROUND, FIELD, RESIDENTIAL], (226, 230, 236), 0.85)
        blend([FOREST], (164, 172, 174), 0.6)
        blend([GROUND_DEFAULT, PAVED, PATH], (214, 218, 224), 0.45)
        blend([WATER], (150, 164, 176), 0.5)  # ice
    return palette


_GROUND_BY_SEASON = {season: _season_ground(season) for season in SEASONS}
for _palette in _GROUND_BY_SEASON.values():
    _palette.setflags(write=False)
_SPRING_CROWN = np.array([142, 190, 96], dtype=np.float32)
_AUTUMN_CROWNS = np.array([(204, 150, 40), (214, 112, 34), (176, 70, 40), (190, 172, 62)], dtype=np.float32)
_WINTER_CROWN = np.array([112, 98, 86], dtype=np.float32)  # bare branches
# Colours of the light on a wall: the shaded part is lit by the (bluish) sky, the sunlit part warms as the sun sinks.
_SKYLIGHT = np.array([0.97, 0.99, 1.03], dtype=np.float32)
_WARM_SUN = np.array([0.14, 0.02, -0.14], dtype=np.float32)
_WARM_TINT = np.array([0.04, 0.0, -0.05], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Lighting:
    """
    The light of one capture sequence. Build it with :func:`make_lighting` or :func:`sequence_lighting`.

    Attributes
    ----------
    sun_azimuth_deg
        Direction the sunlight comes from, degrees clockwise from grid north, in ``[0, 360)``.
    sun_elevation_deg
        Height of the sun above the horizon, degrees in ``(0, 90]``.
    season
        One of :data:`SEASONS`.
    sun_xy
        ``(2,)`` horizontal unit vector towards the sun (east, north).
    ambient
        ``(3,)`` RGB shade factor of a wall the sun does not reach (sky light only).
    direct
        ``(3,)`` RGB shade factor added to a wall facing the sun squarely, before cloud cover.
    tint
        ``(3,)`` RGB multiplier of the whole view: time-of-day brightness and colour.
    ground_palette
        ``(classes, 3)`` land-cover colours (RGB 0..255) of the season, indexed like ``GROUND_PALETTE``.
    """

    sun_azimuth_deg: float
    sun_elevation_deg: float
    season: str
    sun_xy: np.ndarray
    ambient: np.ndarray
    direct: np.ndarray
    tint: np.ndarray
    ground_palette: np.ndarray

    def wall_shade(self, normals: np.ndarray, overcast: float = 0.0) -> np.ndarray:
        """
        Lambert shade of vertical walls.

        Parameters
        ----------
        normals
            ``(n, 2)`` outward unit normals of the walls (east, north).
        overcast
            Cloud cover in ``[0, 1]``; clouds take away the direct part of the light.

        Returns
        -------
        shade
            ``(n, 3)`` float32 RGB factors to multiply the walls' colours by.
        """
        facing = np.maximum(normals.astype(np.float32, copy=False) @ self.sun_xy, np.float32(0.0))  # unit vectors: <= 1
        return self.ambient + facing[:, None] * (self.direct * np.float32(1.0 - overcast))

    def crown_color(self, summer: np.ndarray, key: int) -> np.ndarray:
        """
        A tree crown's colour in this season.

        Parameters
        ----------
        summer
            ``(3,)`` the tree's summer colour (``Scene.tree_color``), RGB 0..255.
        key
            The tree's index; picks its autumn colour, so neighbouring trees turn differently.

        Returns
        -------
        colour
            ``(3,)`` float32 RGB 0..255.
        """
        if self.season == "spring":
            return summer * 0.55 + _SPRING_CROWN * 0.45
        if self.season == "autumn":
            return summer * 0.2 + _AUTUMN_CROWNS[key % len(_AUTUMN_CROWNS)] * 0.8
        if self.season == "winter":
            return summer * 0.1 + _WINTER_CROWN * 0.9
        return summer

    def facts(self) -> dict[str, float | str]:
        """The ``scene_facts`` entries of this light (recorded for inspection; not labels)."""
        return {
            "sun_azimuth_deg": round(self.sun_azimuth_deg, 1),
            "sun_elevation_deg": round(self.sun_elevation_deg, 1),
            "season": self.season,
        }


def make_lighting(sun_azimuth_deg: float, sun_elevation_deg: float, season: str = "summer") -> Lighting:
    """
    The light of a sun at ``sun_azimuth_deg`` / ``sun_elevation_deg`` in ``season``.

    Parameters
    ----------
    sun_azimuth_deg
        Direction the light comes from, degrees clockwise from grid north (any value; taken modulo 360).
    sun_elevation_deg
        Degrees above the horizon in ``(0, 90]``; 90 (overhead) lights every wall the same.
    season
        One of :data:`SEASONS`.

    Returns
    -------
    lighting
        Shade factors, tint and seasonal ground palette derived from the sun and season.

    Raises
    ------
    SceneInputError
        Non-finite azimuth, elevation outside ``(0, 90]``, or an unknown season.
    """
    if not (isinstance(sun_azimuth_deg, int | float) and math.isfinite(sun_azimuth_deg)):
        msg = f"`sun_azimuth_deg` must be a finite number of degrees, got {sun_azimuth_deg!r}"
        raise SceneInputError(msg)
    if not (isinstance(sun_elevation_deg, int | float) and 0 < sun_elevation_deg <= 90):
        msg = f"`sun_elevation_deg` must be in (0, 90] degrees, got {sun_elevation_deg!r}"
        raise SceneInputError(msg)
    if season not in SEASONS:
        msg = f"`season` must be one of {SEASONS}, got {season!r}"
        raise SceneInputError(msg)
    azimuth, elevation = float(sun_azimuth_deg) % 360.0, float(sun_elevation_deg)
    az, el = math.radians(azimuth), math.radians(elevation)
    # A vertical wall catches cos(elevation) of the direct beam, while the diffuse sky light on every wall grows
    # with the sun's height: a low sun gives strong contrast between lit and unlit walls, a high sun flat light.
    # Unlit / sunlit wall: 0.58 / 1.03 at 15 degrees, 0.72 / 0.97 at 40, 0.87 / 0.94 at 65, 0.94 flat overhead.
    ambient_level = 0.56 + 0.38 * math.sin(el) ** 2
    direct_level = (1.04 - ambient_level) * math.cos(el)
    warmth = min(1.0, max(0.0, (40.0 - elevation) / 25.0))  # 1 at 15 degrees (morning / evening), 0 above 40
    tint = (0.93 + 0.08 * math.sin(el)) * (1.0 + warmth * _WARM_TINT)
    arrays = {
        "sun_xy": np.array([math.sin(az), math.cos(az)], dtype=np.float32),
        "ambient": (ambient_level * _SKYLIGHT).astype(np.float32),
        "direct": (direct_level * (1.0 + warmth * _WARM_SUN)).astype(np.float32),
        "tint": tint.astype(np.float32),
    }
    for array in arrays.values():
        array.setflags(write=False)  # one Lighting is shared by every view of a sequence (cached)
    return Lighting(
        sun_azimuth_deg=azimuth,
        sun_elevation_deg=elevation,
        season=season,
        ground_palette=_GROUND_BY_SEASON[season],
        **arrays,
    )


def _unit(*parts: object) -> float:
    """A deterministic number in ``[0, 1)`` from ``parts``."""
    return (stable_hash(*parts, scheme="sha1-le") % 1_000_003) / 1_000_003


def _hashed_lighting(seed: int, key: str, season: str | None) -> Lighting:
    """Sun azimuth, season (unless given) and elevation within the season's range, each from its own hash."""
    if season is None:
        season = SEASONS[stable_hash("season", seed, key, scheme="sha1-le") % len(SEASONS)]
    low, high = SUN_ELEVATION_DEG[season]
    elevation = low + (high - low) * _unit("sun-elevation", seed, key)
    return make_lighting(360.0 * _unit("sun-azimuth", seed, key), elevation, season)


@lru_cache(maxsize=4096)
def sequence_lighting(seed: int, sequence_id: str) -> Lighting:
    """
    The light of one sequence (capture session): a pure function of the config seed and the sequence id.

    Parameters
    ----------
    seed
        The render config seed.
    sequence_id
        The camera's sequence (``sample_cameras``' ``sequence_id``).

    Returns
    -------
    lighting
        Sun azimuth uniform over ``[0, 360)`` degrees, a season uniform over :data:`SEASONS`, a sun elevation
        uniform within the season's :data:`SUN_ELEVATION_DEG` range; each from its own hash.
    """
    return _hashed_lighting(seed, sequence_id, None)


@lru_cache(maxsize=4096)
def place_lighting(x: float, y: float) -> Lighting:
    """
    The light of a view drawn outside any sequence: summer, the sun hashed from the position (to the metre).

    Views from one spot share a light, as they would in one capture session, and the light never depends on
    the heading. Only direct :func:`~ugdata_pipeline.imagery.render.render_view` calls without ``lighting``
    (checks, benchmarks) use this; :func:`~ugdata_pipeline.imagery.city_render.render_city` always passes
    :func:`sequence_lighting`, which also varies the season.

    Parameters
    ----------
    x, y
        Camera position in metres in the scene's metric CRS.

    Returns
    -------
    lighting
        A summer light whose sun azimuth (uniform over ``[0, 360)``) and elevation come from the position.
    """
    return _hashed_lighting(0, f"at:{round(x)}:{round(y)}", "summer")
