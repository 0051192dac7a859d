"""Options of the offline renderer (:class:`RenderConfig`), their validation and the fingerprint of what they draw."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from ugdata_pipeline.errors import RenderInputError, SceneInputError
from ugdata_pipeline.imagery.cameras import normalize_offsets

__all__ = ["RENDER_VERSION", "RenderConfig"]

#: Bump when the drawing changes, so that existing files are re-rendered.
#: 2: light per sequence (sun azimuth and elevation, season, time of day) instead of one sun per city.
RENDER_VERSION = 2
#: The ``creator`` of every rendered image (the offline twin of Mapillary).


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """
    Options of the offline renderer.

    Attributes
    ----------
    size
        Image width and height in pixels (square), 16..2048.
    spacing_m
        Distance between cameras along a street, metres.
    fov_deg
        Horizontal field of view, degrees in (10, 170).
    eye_height_m
        Camera height above the ground, metres.
    max_distance_m
        Nothing farther than this is drawn (haze instead), metres.
    heading_jitter_deg
        Half-width of the uniform jitter around the street tangent (applied to every view), degrees.
    view_offsets_deg
        One view per camera point and offset, degrees clockwise from the direction of travel: ``(0.0,)``
        looks forward only, ``(0.0, 90.0, -90.0)`` adds right- and left-facing views. Forward views keep
        their ids whatever else is asked for.
    default_building_height_m
        Typical height of a building without height tags, metres.
    image_format
        ``"png"`` (lossless, the default) or ``"jpeg"``.
    seed
        Seeds heading jitter, each sequence's light (sun, season, time of day) and noise; same seed, same images.
    noise
        Standard deviation of the pixel noise, in 0..255 units.
    max_views
        Cap on views per city (evenly spread over all cameras), ``None`` for all.
    """

    size: int = 256
    spacing_m: float = 40.0
    fov_deg: float = 90.0
    eye_height_m: float = 2.5
    max_distance_m: float = 200.0
    heading_jitter_deg: float = 8.0
    view_offsets_deg: tuple[float, ...] = (0.0,)
    default_building_height_m: float = 10.0
    image_format: str = "png"
    seed: int = 0
    noise: float = 2.5
    max_views: int | None = None

    def validate(self) -> None:
        """Raise :class:`RenderInputError` naming the first bad option."""
        checks = (
            ("size", isinstance(self.size, int) and 16 <= self.size <= 2048, "an integer in 16..2048"),
            ("spacing_m", _positive(self.spacing_m), "a positive number of metres"),
            ("fov_deg", _positive(self.fov_deg) and 10 < self.fov_deg < 170, "degrees in (10, 170)"),
            ("eye_height_m", _positive(self.eye_height_m), "a positive number of metres"),
            ("max_distance_m", _positive(self.max_distance_m), "a positive number of metres"),
            (
                "heading_jitter_deg",
                _positive(self.heading_jitter_deg, zero=True) and self.heading_jitter_deg < 90,
                "degrees in [0, 90)",
            ),
            ("view_offsets_deg", _offsets_ok(self.view_offsets_deg), "a non-empty tuple of distinct finite degrees"),
            ("default_building_height_m", _positive(self.default_building_height_m), "a positive number of metres"),
            ("image_format", self.image_format in {"png", "jpeg"}, '"png" or "jpeg"'),
            ("seed", isinstance(self.seed, int) and not isinstance(self.seed, bool), "an integer"),
            ("noise", _positive(self.noise, zero=True), "a number >= 0"),
            (
                "max_views",
                self.max_views is None or (isinstance(self.max_views, int) and self.max_views >= 0),
                "None or an integer >= 0",
            ),
        )
        for name, ok, accepted in checks:
            if not ok:
                msg = f"RenderConfig.{name} must be {accepted}, got {getattr(self, name)!r}"
                raise RenderInputError(msg)

    @property
    def extension(self) -> str:
        """File extension of the images (``png`` or ``jpg``)."""
        return "jpg" if self.image_format == "jpeg" else "png"

    def fingerprint(self, city_slug: str) -> str:
        """
        A short hash of everything that changes the pixels of ``city_slug``'s images.

        Camera sampling options that only choose which views exist (``max_views``, ``spacing_m``,
        ``view_offsets_deg``) are left out: a view's id already names its position and offset, so adding
        side views does not redraw the forward ones.
        """
        options = {k: v for k, v in asdict(self).items() if k not in {"max_views", "spacing_m", "view_offsets_deg"}}
        return hashlib.sha1(json.dumps([RENDER_VERSION, city_slug, options], sort_keys=True).encode()).hexdigest()[:16]


def _offsets_ok(value: object) -> bool:
    try:
        normalize_offsets(value)
    except SceneInputError:
        return False
    return True


def _positive(value: object, *, zero: bool = False) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value >= 0 if zero else value > 0
