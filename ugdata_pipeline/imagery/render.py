"""The offline street-view renderer: the default image source, drawn from the city's own OSM geometry.

Each view is a pinhole camera ``eye_height_m`` above the ground, level, looking along ``heading_deg``
(clockwise from grid north of the scene's metric CRS). It is drawn by a vectorised 2.5D column raycaster:

1. the footprint edges within ``max_distance_m`` (STRtree query) that face the camera and meet the view
   frustum are intersected with one ray per image column; the nearest hit per column gives the wall's depth,
   building and position along the façade, hence the wall's top and bottom rows;
2. walls get the building's façade colour shaded by the sequence's sun on their outward normal, a window grid
   (bays by position along the wall, storeys of 3.2 m, a per-window tint), a darker cornice, and for POIs a
   shop window and a sign band in the POI category's colour at ground-floor height;
3. below the horizon every pixel's ground point is looked up in the land-cover raster (roads, parks, land use,
   water); above the walls is a sky gradient; both fade into haze with distance;
4. trees (``natural=tree``) and free-standing POI sign boards are billboards, far to near, hidden behind
   nearer walls;
5. the light is the sequence's (:mod:`ugdata_pipeline.imagery.lighting`: sun azimuth and elevation, season of
   trees and ground, time-of-day tint), so the shading does not give away the absolute heading; a per-view
   brightness variation and mild pixel noise come from the view's RNG.

The same scene, position, heading, config and RNG state give the same bytes. :func:`render_view` also
returns the *scene facts* it drew (visible buildings, POIs, areas and trees with names, categories, distances
and sides; pixel fractions), which the captioner and the perception task read, plus the light it was drawn in
(``sun_azimuth_deg``, ``sun_elevation_deg``, ``season``: recorded for inspection, never to be used as labels).

A whole city (cameras along its named streets, views written resumably with their scene facts and fingerprint
inside each file, the ``images`` manifest) is :func:`ugdata_pipeline.imagery.city_render.render_city`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely

from ugdata_pipeline.imagery.lighting import Lighting, place_lighting
from ugdata_pipeline.imagery.palette import GROUND_PALETTE
from ugdata_pipeline.imagery.render_config import RenderConfig
from ugdata_pipeline.imagery.scene import FLOOR_HEIGHT_M, SIGN_HALF_WIDTH_M, Scene
from ugdata_pipeline.imagery.view_facts import view_facts
from ugdata_pipeline.seeding import stable_hash

logger = logging.getLogger(__name__)

CREATOR = "ugdata-render (offline twin)"
SOURCE = "render"
_NEAR_M = 0.3
_TREE_RANGE_M = 150.0
_HAZE = np.array([196, 204, 212], dtype=np.float32)
_SKY_TOP = np.array([84, 134, 196], dtype=np.float32)
_SKY_HORIZON = np.array([190, 212, 232], dtype=np.float32)
_OVERCAST = np.array([176, 180, 186], dtype=np.float32)
_WINDOW_TINTS = np.array(
    [(44, 54, 66), (60, 72, 88), (96, 118, 140), (34, 38, 44), (70, 84, 96), (206, 192, 140)], dtype=np.float32
)
_GLASS = np.array([120, 150, 168], dtype=np.float32)
_TRUNK = np.array([88, 66, 48], dtype=np.float32)
_POST = np.array([70, 72, 76], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _Camera:
    """Per-(size, field of view, eye height, range) constants of the pinhole model."""

    focal_px: float
    centre: float
    u: np.ndarray  # (W,) tangent of each column's angle from the view axis
    secant: np.ndarray  # (W,) 1 / cos(column angle): forward depth -> distance
    rows: np.ndarray  # (H, 1) pixel-centre row coordinates
    cols: np.ndarray  # (1, W) pixel-centre column coordinates
    horizon_row: int  # first ground row
    ground_depth: np.ndarray  # (Hg, 1) forward depth of each ground row's ground point, metres
    ground_fog: np.ndarray  # (Hg, W) int32 haze level of each ground pixel, times the number of ground classes
    sky: np.ndarray  # (Hs, 1, 1) 0 at the top, 1 at the horizon
    noise_pool: np.ndarray  # packed int32 luminance noise (same value in R, G, B); a view takes a window


_FOG_LEVELS = 24


@lru_cache(maxsize=8)
def _camera(size: int, fov_deg: float, eye_m: float, reach_m: float, noise: float) -> _Camera:
    focal = (size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    centre = size / 2.0
    cols = np.arange(size, dtype=np.float32) + 0.5
    rows = np.arange(size, dtype=np.float32) + 0.5
    u = ((cols - centre) / focal).astype(np.float32)
    secant = np.sqrt(1.0 + u * u).astype(np.float32)
    horizon = size // 2
    ground_depth = (focal * eye_m / (rows[horizon:] - centre)).astype(np.float32)[:, None]
    fog = np.clip(ground_depth * secant / reach_m, 0.0, 1.0) ** 1.5
    ground_fog = (np.rint(fog * (_FOG_LEVELS - 1)).astype(np.int32)) * len(GROUND_PALETTE)
    # a fixed pool of Gaussian noise: each view reads a window at an offset drawn from its own RNG
    pool = np.rint(np.random.default_rng(20_240_501).standard_normal(4 * size * size) * noise)
    pool = np.clip(pool, -_NOISE_MAX, _NOISE_MAX).astype(np.int32) * _ONE_PER_CHANNEL
    return _Camera(
        focal_px=focal,
        centre=centre,
        u=u,
        secant=secant,
        rows=rows[:, None],
        cols=cols[None, :],
        horizon_row=horizon,
        ground_depth=ground_depth,
        ground_fog=ground_fog,
        sky=(rows[:horizon] / centre)[:, None, None].astype(np.float32),
        noise_pool=pool,
    )


def _to_u8(colour: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8)


# wall materials: an index into each column's palette
_FACADE, _CORNICE, _SHOP_GLASS, _SIGN, _WINDOW0 = 1, 2, 3, 4, 5
_MATERIALS = _WINDOW0 + len(_WINDOW_TINTS)


@dataclass(slots=True)
class WallHits:
    """
    Per-column result of the wall raycast (:func:`cast_walls`).

    Attributes
    ----------
    depth
        ``(W,)`` forward depth (along the view axis) of the nearest wall in metres; ``inf`` where none.
    wall
        ``(W,)`` index of the footprint edge hit (``Scene.wall_*``); meaningful where ``depth`` is finite.
    fraction
        ``(W,)`` position of the hit along that edge, 0 (start) to 1 (end).
    """

    depth: np.ndarray
    wall: np.ndarray
    fraction: np.ndarray


def cast_walls(
    scene: Scene,
    x: float,
    y: float,
    heading_deg: float,
    *,
    size: int = 256,
    fov_deg: float = 90.0,
    max_distance_m: float = 200.0,
) -> WallHits:
    """
    Cast one ray per image column against the footprint edges around ``(x, y)``; nearest hit per column.

    Only edges within ``max_distance_m`` (STRtree box query) that face the camera and touch the view frustum
    take part; a hit counts when its distance from the camera is below ``max_distance_m``.

    Parameters
    ----------
    scene
        The city's scene.
    x, y
        Camera position in metres in ``scene.crs_metric``.
    heading_deg
        View direction, degrees clockwise from grid north.
    size, fov_deg, max_distance_m
        Columns (pixels), horizontal field of view (degrees) and range (metres).

    Returns
    -------
    hits
        Depth, edge and position along the edge of the nearest wall, per column.
    """
    focal = (size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    u = ((np.arange(size, dtype=np.float32) + 0.5 - size / 2.0) / focal).astype(np.float32)
    secant = np.sqrt(1.0 + u * u)
    heading = math.radians(heading_deg)
    fwd = np.array([math.sin(heading), math.cos(heading)])
    right = np.array([math.cos(heading), -math.sin(heading)])
    depth = np.full(size, np.inf, dtype=np.float32)
    wall_index = np.zeros(size, dtype=np.int64)
    fraction = np.zeros(size, dtype=np.float32)
    reach = max_distance_m
    candidates = scene.wall_tree.query(shapely.box(x - reach, y - reach, x + reach, y + reach))
    if not candidates.size:
        return WallHits(depth, wall_index, fraction)
    a = scene.wall_start[candidates] - (x, y)
    b = scene.wall_end[candidates] - (x, y)
    d = b - a
    ax, az, bx, bz = a @ right, a @ fwd, b @ right, b @ fwd
    edge_u = float(u[-1]) * 1.02
    keep = (a[:, 0] * d[:, 1] - a[:, 1] * d[:, 0]) < 0  # the camera is on the outer side of the edge
    keep &= (az > _NEAR_M) | (bz > _NEAR_M)
    keep &= ~((ax > edge_u * az) & (bx > edge_u * bz)) & ~((ax < -edge_u * az) & (bx < -edge_u * bz))
    if not keep.any():
        return WallHits(depth, wall_index, fraction)
    candidates = candidates[keep]
    dx = (bx[keep] - ax[keep]).astype(np.float32)[:, None]
    dz = (bz[keep] - az[keep]).astype(np.float32)[:, None]
    ax, az = ax[keep].astype(np.float32)[:, None], az[keep].astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (u * az - ax) / (dx - u * dz)
        t = az + w * dz
        t[~((w >= -1e-5) & (w <= 1.00001) & (t > _NEAR_M) & (t * secant < reach))] = np.inf
    nearest = np.argmin(t, axis=0)
    columns = np.arange(size)
    return WallHits(t[nearest, columns], candidates[nearest], np.clip(w[nearest, columns], 0.0, 1.0))


def render_view(
    scene: Scene,
    x: float,
    y: float,
    heading_deg: float,
    config: RenderConfig,
    rng: np.random.Generator,
    *,
    street_name: str | None = None,
    weather: float | None = None,
    lighting: Lighting | None = None,
) -> tuple[np.ndarray, dict]:
    """
    Draw one street-level view and the facts of what it shows.

    Parameters
    ----------
    scene
        The city's scene (:func:`ugdata_pipeline.imagery.scene.build_scene`).
    x, y
        Camera position in metres in ``scene.crs_metric``.
    heading_deg
        View direction, degrees clockwise from grid north of ``scene.crs_metric``.
    config
        Size, field of view, eye height, range, noise (not validated here; :func:`render_city` validates).
    rng
        Source of the per-view lighting and noise; the image is a pure function of its state.
    street_name
        Recorded in the facts as ``street_name``.
    weather
        Cloud cover in ``[0, 1]`` (greys the sky and the haze); by default drawn from ``rng`` in
        ``[0, 0.3]``. :func:`render_city` fixes it per sequence, as one capture session has one sky.
    lighting
        Sun, season and time of day (:func:`ugdata_pipeline.imagery.lighting.sequence_lighting`, which
        :func:`render_city` passes per sequence); by default one hashed from the camera position
        (:func:`~ugdata_pipeline.imagery.lighting.place_lighting`), never from the heading.

    Returns
    -------
    image, facts
        ``(size, size, 3)`` uint8 RGB, and the ``scene_facts`` dict of the data contract (``visible`` nearest
        first, at most :data:`~ugdata_pipeline.imagery.view_facts.MAX_VISIBLE`; ``*_fraction`` shares of the
        image's pixels; the light's ``sun_azimuth_deg``, ``sun_elevation_deg`` and ``season``).
    """
    size = config.size
    eye, reach = float(config.eye_height_m), float(config.max_distance_m)
    cam = _camera(size, float(config.fov_deg), eye, reach, float(config.noise))
    focal, centre, horizon, u = cam.focal_px, cam.centre, cam.horizon_row, cam.u
    heading = math.radians(heading_deg)
    fwd = np.array([math.sin(heading), math.cos(heading)])
    right = np.array([math.cos(heading), -math.sin(heading)])

    # ---- per-view lighting (always drawn in this order, so the RNG stream is fixed)
    brightness = 1.0 + rng.uniform(-0.03, 0.03)
    drawn_weather = rng.uniform(0.0, 0.3)
    overcast = float(np.clip(drawn_weather if weather is None else weather, 0.0, 1.0))
    noise_offset = int(rng.integers(0, 3 * size * size))
    haze = _HAZE * (1.0 - 0.3 * overcast) + _OVERCAST * 0.3 * overcast
    lighting = place_lighting(x, y) if lighting is None else lighting
    light = brightness * lighting.tint  # (3,) time of day and per-view exposure, applied to every colour

    # Every pixel is an index into this view's palette of packed colours: sky rows, then ground classes by haze
    # level, then each column's wall materials, then billboard colours. Labels for the facts are index ranges.
    sky_top = _SKY_TOP * (1.0 - overcast) + _OVERCAST * overcast
    sky_low = _SKY_HORIZON * (1.0 - overcast) + _OVERCAST * overcast
    fogs = np.linspace(0.0, 1.0, _FOG_LEVELS, dtype=np.float32)[:, None, None]
    palettes = [
        _pack((sky_top * (1.0 - cam.sky[:, 0]) + sky_low * cam.sky[:, 0]) * light),
        _pack((lighting.ground_palette[None] * (1.0 - fogs) + haze * fogs) * light),
    ]
    ground_start = horizon
    walls_start = ground_start + len(palettes[1])
    billboards_start = walls_start + size * _MATERIALS
    index = np.empty((size, size), dtype=np.int32)
    index[:horizon] = np.arange(horizon, dtype=np.int32)[:, None]

    # ---- ground: each pixel's ground point looked up in the land-cover raster
    res = scene.ground_resolution_m
    raster_rows, raster_cols = scene.ground_class.shape
    origin_x, origin_y = (x - scene.ground_origin[0]) / res, (y - scene.ground_origin[1]) / res
    ray_x = ((fwd[0] + u * right[0]) / res).astype(np.float32)
    ray_y = ((fwd[1] + u * right[1]) / res).astype(np.float32)
    ix = (cam.ground_depth * ray_x + np.float32(origin_x)).astype(np.int32)
    iy = (cam.ground_depth * ray_y + np.float32(origin_y)).astype(np.int32)
    np.clip(ix, 0, raster_cols - 1, out=ix)  # the raster reaches max_distance_m beyond every street
    np.clip(iy, 0, raster_rows - 1, out=iy)
    ground_class = np.take(scene.ground_class, iy * raster_cols + ix)
    np.add(cam.ground_fog, ground_class, out=index[horizon:])
    index[horizon:] += ground_start

    # ---- walls: one ray per column, then a material per pixel and a palette per column
    hits = cast_walls(scene, x, y, heading_deg, size=size, fov_deg=float(config.fov_deg), max_distance_m=reach)
    depth, wall_index = hits.depth, hits.wall
    hit = np.isfinite(depth)
    building = scene.wall_building[wall_index] if len(scene.wall_building) else np.zeros(size, np.int64)
    sign_poi = np.full(size, -1, dtype=np.int64)
    band_pixels = np.zeros(size, dtype=np.int64)
    wall_palette = np.zeros((size, _MATERIALS, 3), dtype=np.float32)
    if hit.any():
        hit_depth = np.where(hit, depth, 0.0).astype(np.float32)
        height = np.where(hit, scene.building_height_m[building], 0.0).astype(np.float32)
        with np.errstate(divide="ignore"):
            top = np.where(hit, centre - focal * (height - eye) / depth, np.inf).astype(np.float32)
            bottom = np.where(hit, centre + focal * eye / depth, -np.inf).astype(np.float32)
        first = max(0, math.floor(float(top[hit].min())))
        last = min(size, math.ceil(float(bottom[hit].max())) + 1)
        rows = cam.rows[first:last]
        band_wall = (rows >= top) & (rows < bottom)
        z = eye + (centre - rows) * (hit_depth / np.float32(focal))  # height of each wall pixel above ground
        along = scene.wall_along_m[wall_index] + hits.fraction * scene.wall_length_m[wall_index]
        bay_pos = along / scene.building_bay_m[building]
        bay_index = np.floor(bay_pos)
        in_bay = bay_pos - bay_index
        storey = np.floor(z * np.float32(1.0 / FLOOR_HEIGHT_M))
        in_storey = z - storey * np.float32(FLOOR_HEIGHT_M)
        window = (in_storey > 0.9) & (in_storey < 2.3) & (z < height - 0.9) & ((in_bay > 0.2) & (in_bay < 0.8))
        column_seed = ((bay_index.astype(np.int64) * 7919 + scene.building_seed[building]) % 65_521).astype(np.int32)
        tint = (storey.astype(np.int32) * 104_729 + column_seed) % len(_WINDOW_TINTS)
        material = np.where(window, tint + _WINDOW0, _FACADE)
        material[z > height - 0.5] = _CORNICE
        sign_poi = np.where(hit, scene.wall_sign_poi[wall_index], -1)
        has_sign = sign_poi >= 0
        if has_sign.any():
            has_sign &= np.abs(along - scene.wall_sign_along_m[wall_index]) <= SIGN_HALF_WIDTH_M
            sign_poi = np.where(has_sign, sign_poi, -1)
        if has_sign.any():
            signed = np.flatnonzero(has_sign)
            zs = z[:, signed]
            shop = (zs > 0.3) & (zs < 2.3) & ((in_bay[signed] > 0.06) & (in_bay[signed] < 0.94))
            band = (zs >= 2.5) & (zs < 3.4)
            material[:, signed] = np.where(
                shop, _SHOP_GLASS, np.where(band, _SIGN, np.where(zs < 3.2, _FACADE, material[:, signed]))
            )
            band_pixels[signed] = (band & band_wall[:, signed]).sum(axis=0)
        material += walls_start + np.arange(size, dtype=np.int32) * _MATERIALS
        np.copyto(index[first:last], material, where=band_wall, casting="unsafe")
        # each column's palette: façade, cornice, glass, sign, window tints; shaded, hazed, lit
        base = scene.building_color[building]
        wall_palette[:, _FACADE] = base
        wall_palette[:, _CORNICE] = base * 0.72
        wall_palette[:, _SHOP_GLASS] = _GLASS
        wall_palette[:, _SIGN] = scene.poi_color[np.maximum(sign_poi, 0)] if len(scene.poi_color) else 0.0
        wall_palette[:, _WINDOW0:] = _WINDOW_TINTS[None] * 0.6 + base[:, None] * 0.4  # glass mirrors the wall
        # shaded per view from the wall's normal and this sequence's sun (W columns: cheap)
        shade = lighting.wall_shade(scene.wall_normal[wall_index], overcast)[:, None, :]
        fog = (np.clip(hit_depth * cam.secant / reach, 0.0, 1.0) ** 1.5)[:, None, None]
        wall_palette = ((wall_palette * shade) * (1.0 - fog) + haze * fog) * light
    palettes.append(_pack(wall_palette))

    # ---- billboards: trees and free-standing POI boards, far to near, hidden behind nearer walls
    drawn: list[tuple[str, int, int, float, float]] = []  # kind, index, pixels, distance, u
    extra: list[np.ndarray] = []
    for kind, item, across, ahead in _billboards(scene, x, y, fwd, right, float(u[-1]), reach):
        start = billboards_start + sum(len(p) for p in extra)
        pixels, colours = _draw_billboard(
            scene, kind, item, across, ahead, index, start, depth, cam, eye, reach, haze, light, lighting
        )
        if pixels:
            extra.append(colours)
            drawn.append((kind, item, pixels, math.hypot(across, ahead), across / ahead))
    palette = np.concatenate(palettes + extra)

    # ---- colours, plus mild luminance noise from a window of the fixed pool chosen by the view's RNG
    packed = np.take(palette, index)
    if config.noise > 0:
        packed += cam.noise_pool[noise_offset : noise_offset + size * size].reshape(size, size)
    channels = packed.view(np.uint8).reshape(size, size, 4)
    image = np.empty((size, size, 3), dtype=np.uint8)
    for channel in range(3):
        image[..., channel] = channels[..., channel]

    facts = view_facts(
        scene,
        index,
        (walls_start, billboards_start),
        building,
        depth,
        hit,
        sign_poi,
        band_pixels,
        ground_class,
        (iy, ix),
        u,
        (cam.horizon_row, cam.secant, cam.ground_depth),
        drawn,
        street_name,
        (x, y),
    )
    facts.update(lighting.facts())
    return image, facts


_NOISE_MAX = 8  # noise is clipped to +-_NOISE_MAX and colours to [_NOISE_MAX, 255 - _NOISE_MAX], so no channel wraps
_ONE_PER_CHANNEL = int(np.frombuffer(bytes([1, 1, 1, 0]), dtype=np.int32)[0])


def _pack(colour: np.ndarray) -> np.ndarray:
    """RGB floats ``(..., 3)`` -> flat int32 whose bytes are R, G, B, 0 (in memory order)."""
    rgb = np.clip(np.rint(colour.reshape(-1, 3)), _NOISE_MAX, 255 - _NOISE_MAX).astype(np.uint8)
    rgba = np.zeros((len(rgb), 4), dtype=np.uint8)
    rgba[:, :3] = rgb
    return rgba.view(np.int32).ravel()


def _billboards(
    scene: Scene,
    x: float,
    y: float,
    fwd: np.ndarray,
    right: np.ndarray,
    edge_u: float,
    reach: float,
) -> list[tuple[str, int, float, float]]:
    """Trees and free POI boards in view, as (kind, index, across, ahead), farthest first."""
    items: list[tuple[str, int, float, float]] = []
    limit = min(reach, _TREE_RANGE_M)
    free = scene.free_poi_index
    for kind, xy, index in (("tree", scene.tree_xy, np.arange(len(scene.tree_xy))), ("poi", scene.poi_xy[free], free)):
        if not len(index):
            continue
        rel = xy - (x, y)
        ahead, across = rel @ fwd, rel @ right
        keep = (ahead > 1.0) & (np.abs(across) < edge_u * ahead + 4.0) & (np.hypot(ahead, across) < limit)
        items.extend(
            (kind, int(i), float(c), float(a)) for i, c, a in zip(index[keep], across[keep], ahead[keep], strict=True)
        )
    items.sort(key=lambda item: (-item[3], item[0], item[1]))
    return items


_CROWN_TONES = np.array([0.8, 0.9, 1.0, 1.1], dtype=np.float32)


def _draw_billboard(
    scene: Scene,
    kind: str,
    item: int,
    across: float,
    ahead: float,
    index: np.ndarray,
    start: int,
    wall_depth: np.ndarray,
    cam: _Camera,
    eye: float,
    reach: float,
    haze: np.ndarray,
    light: np.ndarray,
    lighting: Lighting,
) -> tuple[int, np.ndarray]:
    """
    Draw one tree or sign board into ``index`` (its colours numbered from ``start``); pixels and colours.

    ``light`` is the view's RGB multiplier; ``lighting`` gives the crowns their season's colour (the crown's
    pixels, and so the facts, do not depend on it).
    """
    size = index.shape[0]
    focal, centre = cam.focal_px, cam.centre
    scale = focal / ahead
    column = centre + across * scale
    ground_row = centre + eye * scale
    if kind == "tree":
        radius_m, crown_m = float(scene.tree_crown_m[item]), float(scene.tree_crown_height_m[item])
        half_width = radius_m * scale
        top_row = centre - (crown_m + radius_m - eye) * scale
    else:
        half_width = 0.8 * scale
        top_row = centre - (2.7 - eye) * scale
    c0, c1 = max(0, math.floor(column - half_width)), min(size, math.ceil(column + half_width) + 1)
    r0, r1 = max(0, math.floor(top_row)), min(size, math.ceil(ground_row) + 1)
    empty = np.empty(0, dtype=np.int32)
    if c0 >= c1 or r0 >= r1:
        return 0, empty
    rows = cam.rows[r0:r1]
    cols = cam.cols[:, c0:c1]
    visible = ahead < wall_depth[c0:c1][None, :]
    fog = min(1.0, math.hypot(across, ahead) / reach) ** 1.5
    patch = index[r0:r1, c0:c1]
    if kind == "tree":
        crown_row = centre - (crown_m - eye) * scale
        crown = (((cols - column) ** 2 + ((rows - crown_row) * 1.15) ** 2) <= half_width**2) & visible
        trunk = (np.abs(cols - column) <= max(0.5, 0.18 * scale)) & (rows >= crown_row) & (rows < ground_row)
        trunk &= visible & ~crown
        # the crown is lighter at the top: four tones by height
        tone = np.clip(((crown_row + half_width - rows) / max(2 * half_width, 1e-3) * 4).astype(np.int32), 0, 3)
        crown_colour = lighting.crown_color(scene.tree_color[item], item)
        colours = np.concatenate([crown_colour[None] * _CROWN_TONES[:, None], _TRUNK[None]])
        np.copyto(patch, start + tone, where=crown)
        np.copyto(patch, start + 4, where=trunk)
        pixels = int(crown.sum() + trunk.sum())
    else:
        board_row0, board_row1 = centre - (2.7 - eye) * scale, centre - (1.7 - eye) * scale
        board = (np.abs(cols - column) <= half_width) & (rows >= board_row0) & (rows < board_row1) & visible
        post = (np.abs(cols - column) <= max(0.5, 0.06 * scale)) & (rows >= board_row1) & (rows < ground_row)
        post &= visible
        colours = np.stack([scene.poi_color[item], _POST])
        np.copyto(patch, start, where=board)
        np.copyto(patch, start + 1, where=post)
        pixels = int(board.sum() + post.sum())
    if not pixels:
        return 0, empty
    return pixels, _pack((colours * (1 - fog) + haze * fog) * light)


def view_rng(seed: int, image_id: str) -> np.random.Generator:
    """The RNG of one view: a function of the config seed and the image id only, never of render order."""
    return np.random.default_rng([seed & 0xFFFFFFFF, stable_hash("view", image_id, scheme="sha1-le") & 0xFFFFFFFF])


def sequence_weather(seed: int, sequence_id: str) -> float:
    """Cloud cover of a sequence (one capture session), in ``[0, 0.3]``, from the config seed."""
    return 0.3 * (stable_hash("weather", seed, sequence_id, scheme="sha1-le") % 10_007) / 10_007
