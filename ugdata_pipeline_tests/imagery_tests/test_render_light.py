"""The renderer's light per sequence (sun, season, time of day) and its several headings per camera point."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.cities import City, CitySource, load_registry
from ugdata_pipeline.errors import RenderInputError, SceneInputError
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.imagery.cameras import sample_cameras
from ugdata_pipeline.imagery.city_render import render_city
from ugdata_pipeline.imagery.lighting import SEASONS, make_lighting, sequence_lighting
from ugdata_pipeline.imagery.render import cast_walls, render_view, sequence_weather, view_rng
from ugdata_pipeline.imagery.render_config import RENDER_VERSION, RenderConfig
from ugdata_pipeline.imagery.scene import build_scene
from ugdata_pipeline.osm import load_city_osm
from ugdata_pipeline.resources import RenderedImagesResource
from ugdata_pipeline_tests.imagery_tests.test_render import CRS, box, make_extract
from ugdata_pipeline_tests.tiny_city import ORIGIN_E, ORIGIN_N, street_table

_LIGHT_KEYS = ("sun_azimuth_deg", "sun_elevation_deg", "season")


# ---- the light of a sequence


def test_sequence_light_is_deterministic_and_varies_between_sequences():
    lights = [sequence_lighting(0, f"city:street:0:f:{k}") for k in range(400)]
    again = sequence_lighting(0, "city:street:0:f:7")
    assert again.facts() == lights[7].facts()
    assert sequence_lighting(1, "city:street:0:f:7").facts() != lights[7].facts()  # the seed changes it
    azimuths = np.array([light.sun_azimuth_deg for light in lights])
    elevations = np.array([light.sun_elevation_deg for light in lights])
    # the sun comes from every side, not only the southern half: uniform over 0..360 degrees
    assert azimuths.min() >= 0 and azimuths.max() < 360
    assert np.histogram(azimuths, bins=8, range=(0, 360))[0].min() >= 30
    assert elevations.min() >= 15 and elevations.max() <= 65 and np.ptp(elevations) > 35
    seasons = pd.Series([light.season for light in lights]).value_counts()
    assert set(seasons.index) == set(SEASONS) and seasons.min() >= 70
    # a low sun gives a stronger, warmer contrast between lit and unlit walls than a high one
    low, high = make_lighting(120.0, 15.0), make_lighting(120.0, 65.0)
    toward, away = np.array([[math.sin(math.radians(120)), math.cos(math.radians(120))]]), np.array([[0.0, 0.0]])
    contrast = [(light.wall_shade(toward) / light.wall_shade(away)).mean() for light in (low, high)]
    assert contrast[0] > 1.5 and contrast[1] < 1.15
    assert low.wall_shade(toward)[0, 0] > low.wall_shade(toward)[0, 2]  # warm: more red than blue
    with pytest.raises(SceneInputError, match="season"):
        make_lighting(0.0, 30.0, "monsoon")


def test_render_city_lights_each_sequence_once(long_street_extract, tmp_path):
    config = RenderConfig(size=32, spacing_m=60.0, view_offsets_deg=(0.0, 90.0))
    result = render_city(long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path, config=config)
    facts = pd.DataFrame([json.loads(f) for f in result.images["scene_facts"]])
    facts["sequence_id"] = result.images["sequence_id"].to_numpy()
    per_sequence = facts.groupby("sequence_id")[list(_LIGHT_KEYS)].nunique()
    assert len(per_sequence) >= 12 and (per_sequence == 1).all().all()  # one light per sequence...
    first = facts.groupby("sequence_id")[list(_LIGHT_KEYS)].first()
    assert first["sun_azimuth_deg"].nunique() == len(first)  # ...and another for each sequence
    assert first["season"].nunique() >= 3
    for sequence_id, row in first.iterrows():
        assert row.to_dict() == sequence_lighting(0, sequence_id).facts()


def test_same_seed_and_camera_give_the_same_bytes_whatever_else_is_drawn(long_street_extract, tmp_path):
    config = RenderConfig(size=48, spacing_m=60.0, view_offsets_deg=(0.0, -90.0))
    cameras = sample_cameras(
        long_street_extract.streets,
        crs_metric=CRS,
        spacing_m=60.0,
        city_slug="longtown",
        view_offsets_deg=config.view_offsets_deg,
    )
    every = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "a", config=config, cameras=cameras
    )
    picked = cameras.iloc[[3, len(cameras) // 2, len(cameras) - 1]]
    some = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "b", config=config, cameras=picked
    )
    for rel in some.images["path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    pd.testing.assert_frame_equal(
        every.images.set_index("image_id").loc[some.images["image_id"]].reset_index(),
        some.images.reset_index(drop=True),
    )


def test_views_drawn_in_worker_processes_are_the_views_drawn_here(long_street_extract, tmp_path, monkeypatch):
    import ugdata_pipeline.imagery.city_render as render

    monkeypatch.setattr(render, "MIN_VIEWS_PER_WORKER", 4)  # this small city is enough to start two workers
    config = RenderConfig(size=32, spacing_m=90.0, view_offsets_deg=(0.0,))
    seen: list[tuple[int, int]] = []
    here = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "a", config=config, workers=1
    )
    pooled = render_city(
        long_street_extract,
        city_slug="longtown",
        crs_metric=CRS,
        root=tmp_path / "b",
        config=config,
        workers=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert len(here.images) >= 8 and pooled.counts["rendered"] == len(here.images)
    pd.testing.assert_frame_equal(here.images, pooled.images)
    for rel in here.images["path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert seen == [(k, len(here.images)) for k in range(1, len(here.images) + 1)]
    again = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "b", config=config, workers=2
    )
    assert again.counts["reused"] == len(here.images) and again.counts["rendered"] == 0


# ---- no heading in the shading


@pytest.fixture(scope="module")
def karhula_views():
    """Karhula's scene and one camera of each of its sequences, looking in a random direction."""
    extract = load_city_osm(load_registry().get("karhula"))
    scene = build_scene(extract, crs_metric=city_metric_crs(extract.streets))
    cameras = sample_cameras(extract.streets, crs_metric=scene.crs_metric, city_slug="karhula")
    views = cameras.drop_duplicates("sequence_id").reset_index(drop=True)
    views["heading_deg"] = np.random.default_rng(1).uniform(0.0, 360.0, len(views))
    return scene, views


def _shading_cues(scene, views, light_of) -> np.ndarray:
    """
    Per view, what a model could learn from the wall shading: (left minus right half, mean) of the wall pixels'
    log luminance relative to the same view under flat light (sun overhead, same season), which removes
    façade colours and leaves the shading. Walls within 60 m (little haze); NaN where a view has none.
    """
    config = RenderConfig(size=64, noise=0)
    size, half, eye = config.size, config.size // 2, config.eye_height_m
    focal = half / math.tan(math.radians(config.fov_deg) / 2)
    rows = np.arange(size)[:, None] + 0.5
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    cues = []
    for view in views.itertuples():
        light = light_of(view.sequence_id)
        flat = make_lighting(0.0, 90.0, light.season)
        drawn = [
            render_view(
                scene,
                view.x_m,
                view.y_m,
                view.heading_deg,
                config,
                view_rng(0, view.camera_id),
                weather=sequence_weather(0, view.sequence_id),
                lighting=lit,
            )[0]
            for lit in (light, flat)
        ]
        shading = np.log(drawn[0] @ weights) - np.log(drawn[1] @ weights)
        hits = cast_walls(scene, view.x_m, view.y_m, view.heading_deg, size=size, max_distance_m=60.0)
        height = scene.building_height_m[scene.wall_building[hits.wall]]
        with np.errstate(divide="ignore", invalid="ignore"):
            wall = (rows >= half - focal * (height - eye) / hits.depth) & (rows < half + focal * eye / hits.depth)
        wall &= np.isfinite(hits.depth)
        left, right = wall[:, :half], wall[:, half:]
        lr = shading[:, :half][left].mean() - shading[:, half:][right].mean() if left.any() and right.any() else np.nan
        cues.append((lr, shading[wall].mean() if wall.any() else np.nan))
    return np.array(cues)


def _heading_correlations(cues: np.ndarray, heading_deg: np.ndarray) -> np.ndarray:
    """|correlation| of each cue (columns) with sin and with cos of the heading: ``(cues, 2)``."""
    out = np.zeros((cues.shape[1], 2))
    for k in range(cues.shape[1]):
        ok = np.isfinite(cues[:, k])
        h = np.radians(heading_deg[ok])
        out[k] = [abs(np.corrcoef(cues[ok, k], f(h))[0, 1]) for f in (np.sin, np.cos)]
    return out


def test_wall_shading_does_not_tell_the_heading(karhula_views):
    scene, views = karhula_views
    assert len(views) >= 300 and views["sequence_id"].is_unique
    per_sequence = _shading_cues(scene, views, lambda sequence_id: sequence_lighting(0, sequence_id))
    assert np.isfinite(per_sequence).sum(axis=0).min() >= 200  # most views see walls on both halves
    leak = _heading_correlations(per_sequence, views["heading_deg"].to_numpy())
    assert leak.max() < 0.2, leak
    # the same test tells the old way apart: one fixed sun for the whole city gives the heading away
    fixed_sun = make_lighting(200.0, 30.0, "summer")
    fixed = _shading_cues(scene, views, lambda sequence_id: fixed_sun)
    old_leak = _heading_correlations(fixed, views["heading_deg"].to_numpy())
    assert old_leak.max() > 0.5, old_leak


# ---- seasons


@pytest.fixture(scope="module")
def park_with_tree():
    """A park around (0, 0) with one tree 8 m north of it; the street runs 60 m to the east."""
    park = [("w1", "Tree Park", "park", "leisure=park", None, box(-120, -120, 40, 120))]
    streets = street_table([(1, "Side Road", "residential", [1, 2], [(60, -300), (60, 300)])])
    extract = make_extract([], areas=park, trees=[("n1", 0.0, 8.0)], streets=streets)
    return build_scene(extract, crs_metric=CRS)


def test_seasons_change_colours_not_what_is_vegetation(park_with_tree):
    scene = park_with_tree
    config = RenderConfig(size=128, noise=0)
    focal = centre = 64.0
    crown_row = round(centre - (float(scene.tree_crown_height_m[0]) - config.eye_height_m) * focal / 8.0)
    drawn = {}
    for season in SEASONS:
        image, facts = render_view(
            scene,
            ORIGIN_E,
            ORIGIN_N,
            0.0,
            config,
            view_rng(0, "s"),
            weather=0.1,
            lighting=make_lighting(150.0, 35.0, season),
        )
        crown = image[crown_row - 1 : crown_row + 2, 63:66].reshape(-1, 3).mean(axis=0)
        lawn = image[100:, :24].reshape(-1, 3).mean(axis=0)  # near ground left of the tree: park lawn
        drawn[season] = (crown, lawn, facts)
    summer_facts = drawn["summer"][2]
    assert summer_facts["green_fraction"] > 0.3 and summer_facts["tree_count"] == 1
    for season, (_, _, facts) in drawn.items():
        assert facts["season"] == season
        assert abs(facts["green_fraction"] - summer_facts["green_fraction"]) <= 0.005
        same = {k: v for k, v in facts.items() if k not in _LIGHT_KEYS}
        assert same == {k: v for k, v in summer_facts.items() if k not in _LIGHT_KEYS}
    (s_crown, s_lawn, _), (p_crown, p_lawn, _) = drawn["summer"], drawn["spring"]
    assert p_lawn[1] > s_lawn[1] + 10  # fresh spring grass
    (a_crown, a_lawn, _), (w_crown, w_lawn, _) = drawn["autumn"], drawn["winter"]
    assert s_crown[1] > s_crown[0] + 20 and s_lawn[1] > s_lawn[0] + 20  # green leaves and lawn
    assert p_crown[1] > s_crown[1] + 15 and p_crown[1] > p_crown[0]  # fresh, lighter green
    assert a_crown[0] > a_crown[1] + 20 and a_lawn[0] / a_lawn[1] > s_lawn[0] / s_lawn[1] + 0.1  # turned, browner
    assert w_crown[0] >= w_crown[1] and np.ptp(w_crown) < 40  # bare brown-grey branches
    assert w_lawn.min() > 190 and w_lawn.min() > s_lawn.max()  # snow


# ---- several headings per camera point


@pytest.fixture(scope="module")
def long_street_extract():
    """A 1 km east-west street with a row of buildings on each side (north: w1.., south: w2..), and a lane."""
    buildings = []
    for k, x in enumerate(range(-220, 820, 30)):
        buildings.append((f"w1{k:02d}", None, "building", "building=yes", 12.0, box(x, 10, x + 24, 24)))
        buildings.append((f"w2{k:02d}", None, "building", "building=yes", 12.0, box(x, -24, x + 24, -10)))
    streets = street_table(
        [
            (1, "East Road", "residential", [1, 2, 3], [(-200, 0), (300, 0), (800, 0)]),
            (2, "West Lane", "residential", [4, 5], [(-350, -120), (-350, 120)]),
        ]
    )
    return make_extract(buildings, streets=streets)


def test_view_offsets_add_side_views_and_keep_the_forward_ids(long_street_extract):
    streets = long_street_extract.streets
    kwargs = {"crs_metric": CRS, "spacing_m": 40.0, "seed": 3, "heading_jitter_deg": 5.0, "city_slug": "t"}
    forward = sample_cameras(streets, **kwargs)
    three = sample_cameras(streets, **kwargs, view_offsets_deg=(0.0, 90.0, -90.0))
    assert len(three) == 3 * len(forward) and three["camera_id"].is_unique
    assert three["camera_id"].str.fullmatch(r"r[0-9a-f]{10}").all()
    assert (three["view_offset_deg"].value_counts() == len(forward)).all()
    kept = three[three["view_offset_deg"] == 0.0].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, forward)  # same ids, positions, headings and sequences as before
    # another order of the same offsets gives the same views; 360 is the forward view again
    shuffled = sample_cameras(streets, **kwargs, view_offsets_deg=(-90.0, 360.0, 90.0))
    pd.testing.assert_frame_equal(
        shuffled.sort_values("camera_id").reset_index(drop=True), three.sort_values("camera_id").reset_index(drop=True)
    )
    # the views of a point share its position and sequence; compasses differ by the offsets, up to the jitter
    points = three.groupby(["x_m", "y_m"], sort=False)
    assert (points.size() == 3).all() and (points["sequence_id"].nunique() == 1).all()
    for _, point in points:
        ahead = point.loc[point["view_offset_deg"] == 0.0, "compass_angle"].iloc[0]
        for offset, compass in zip(point["view_offset_deg"], point["compass_angle"], strict=True):
            turn = (compass - ahead - offset + 180.0) % 360.0 - 180.0
            assert abs(turn) <= 2 * 5.0 + 0.1, (offset, compass, ahead)
    for bad in [(), (0.0, 360.0), (0.0, float("nan")), "90"]:
        with pytest.raises(SceneInputError, match="view_offsets_deg"):
            sample_cameras(streets, **kwargs, view_offsets_deg=bad)
        with pytest.raises(RenderInputError, match="view_offsets_deg"):
            RenderConfig(view_offsets_deg=bad).validate()  # type: ignore[arg-type]


def test_side_views_see_the_side_they_face(long_street_extract, tmp_path):
    config = RenderConfig(size=64, spacing_m=40.0, view_offsets_deg=(0.0, 90.0, -90.0))
    cameras = sample_cameras(
        long_street_extract.streets,
        crs_metric=CRS,
        spacing_m=40.0,
        city_slug="t",
        view_offsets_deg=config.view_offsets_deg,
    )
    cameras = cameras[cameras["street_name"] == "East Road"]
    result = render_city(
        long_street_extract, city_slug="t", crs_metric=CRS, root=tmp_path, config=config, cameras=cameras
    )
    facts = [json.loads(f) for f in result.images["scene_facts"]]
    forward_sides: dict[tuple[str, str], str] = {}
    for camera, fact in zip(cameras.itertuples(), facts, strict=True):
        if camera.view_offset_deg == 0.0:
            forward_sides.update({(camera.sequence_id, e["osm_id"]): e["side"] for e in fact["visible"]})
    checked = {"right": 0, "left": 0, "ahead": 0}
    for camera, fact in zip(cameras.itertuples(), facts, strict=True):
        if camera.view_offset_deg == 0.0:
            continue
        eastward = ":f:" in camera.sequence_id  # travel east: the right-hand side is south (w2..)
        facing_south = eastward == (camera.view_offset_deg > 0)
        seen = [e for e in fact["visible"] if e["kind"] == "building"]
        assert seen, camera
        assert all(e["osm_id"].startswith("w2" if facing_south else "w1") for e in seen), (camera, seen)
        for e in seen:  # in the forward views of the sequence it is on that side too (or far ahead), never across
            side = forward_sides.get((camera.sequence_id, e["osm_id"]))
            if side is not None:
                assert side != ("left" if camera.view_offset_deg > 0 else "right"), (camera, e, side)
                checked[side] += 1
    assert checked["right"] >= 10 and checked["left"] >= 10, checked


def test_view_offsets_reach_the_resource_and_do_not_redraw_the_forward_views(long_street_extract, tmp_path):
    plain = City(slug="t", name="T", country="Finland", split="train", source=CitySource(kind="file"))
    dense = replace(plain, imagery={"spacing_m": 20.0, "view_offsets_deg": [0.0, 180.0]})
    assert RenderedImagesResource()._config(plain).view_offsets_deg == (0.0,)
    resource = RenderedImagesResource(view_offsets_deg=[0, 90, -90])
    assert resource._config(plain).view_offsets_deg == (0.0, 90.0, -90.0)
    # a city's own imagery options win over the deployment's
    assert resource._config(dense).view_offsets_deg == (0.0, 180.0) and resource._config(dense).spacing_m == 20.0
    assert RENDER_VERSION >= 2
    forward = RenderConfig(size=32, spacing_m=100.0)
    first = render_city(long_street_extract, city_slug="t", crs_metric=CRS, root=tmp_path, config=forward)
    sides = render_city(
        long_street_extract,
        city_slug="t",
        crs_metric=CRS,
        root=tmp_path,
        config=RenderConfig(size=32, spacing_m=100.0, view_offsets_deg=(0.0, 90.0)),
    )
    assert sides.counts["views"] == 2 * first.counts["views"]
    assert sides.counts["reused"] == first.counts["views"]  # the forward views are the same files
    assert set(first.images["image_id"]) < set(sides.images["image_id"])
