"""The offline street-view renderer: determinism, spatial properties, scene facts, empty areas, bad geometry."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pyproj import Transformer

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.errors import RenderInputError
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.imagery.cameras import CAMERA_COLUMNS, sample_cameras
from ugdata_pipeline.imagery.city_render import render_city
from ugdata_pipeline.imagery.lighting import make_lighting
from ugdata_pipeline.imagery.manifest import MANIFEST_COLUMNS
from ugdata_pipeline.imagery.render import CREATOR, cast_walls, render_view, view_rng
from ugdata_pipeline.imagery.render_config import RenderConfig
from ugdata_pipeline.imagery.scene import build_scene
from ugdata_pipeline.imagery.view_files import contact_sheet, image_distance, read_image_facts
from ugdata_pipeline.osm import load_city_osm
from ugdata_pipeline.osm.schema import AOI_COLUMNS, POI_COLUMNS, TREE_COLUMNS, OsmExtract, frame
from ugdata_pipeline_tests.tiny_city import ORIGIN_E, ORIGIN_N, lonlat, street_table, tiny_city

CRS = "EPSG:32635"
_TO_UTM = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)


def local_xy(lon: float, lat: float) -> tuple[float, float]:
    """lon/lat -> the test layout's local metres."""
    e, n = _TO_UTM.transform(lon, lat)
    return e - ORIGIN_E, n - ORIGIN_N


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.Polygon([lonlat(x0, y0), lonlat(x1, y0), lonlat(x1, y1), lonlat(x0, y1)])


def make_extract(buildings, pois=(), areas=(), trees=(), streets=None) -> OsmExtract:
    """An extract from rows in local metres: buildings (osm_id, name, category, tag, height, polygon), ..."""
    aoi_rows = {c: [] for c in AOI_COLUMNS}
    geoms = []
    for osm_id, name, category, tag, height, polygon in [*buildings, *areas]:
        aoi_rows["osm_id"].append(osm_id)
        aoi_rows["name"].append(name)
        aoi_rows["category"].append(category)
        aoi_rows["tag"].append(tag)
        aoi_rows["address"].append(None)
        aoi_rows["height_m"].append(height)
        aoi_rows["is_building"].append(tag.startswith("building") or category == "building" or height is not None)
        geoms.append(polygon)
    poi_rows = {c: [] for c in POI_COLUMNS}
    for osm_id, name, category, tag, _x, _y in pois:
        for key, value in zip(POI_COLUMNS, (osm_id, name, category, tag, None, None), strict=True):
            poi_rows[key].append(value)
    tree_frame = frame({"osm_id": [t[0] for t in trees]}, TREE_COLUMNS, [shapely.Point(lonlat(*t[1:])) for t in trees])
    if streets is None:
        streets = street_table([(1, "Test Road", "residential", [1, 2], [(0, -300), (0, 300)])])
    return OsmExtract(
        streets=streets,
        pois=frame(poi_rows, POI_COLUMNS, [shapely.Point(lonlat(p[4], p[5])) for p in pois]),
        aois=frame(aoi_rows, AOI_COLUMNS, geoms),
        source="test",
        trees=tree_frame,
    )


@pytest.fixture(scope="module")
def front_back_extract() -> OsmExtract:
    """A north-south road; a hall with a bakery ahead (north) of (0, 0), a bank with a café behind it."""
    buildings = [
        ("w10", "Front Hall", "culture", "amenity=arts_centre", 18.0, box(-15, 40, 15, 60)),
        ("w11", "Back Bank", "financial", "amenity=bank", 18.0, box(-15, -60, 15, -40)),
        ("w12", "Right House", "building", "building=house", None, box(12, 5, 30, 20)),
    ]
    pois = [
        ("n20", "Front Bakery", "commercial", "shop=bakery", 0.0, 39.0),
        ("n21", "Back Cafe", "food", "amenity=cafe", 0.0, -39.0),
    ]
    trees = [("n30", -5.0, 25.0), ("n31", -5.0, -25.0)]
    return make_extract(buildings, pois, trees=trees)


@pytest.fixture(scope="module")
def front_back_scene(front_back_extract):
    return build_scene(front_back_extract, crs_metric=CRS)


@pytest.fixture(scope="module")
def long_street_extract() -> OsmExtract:
    """A 1.2 km east-west street lined with buildings of varied heights and categories, a park and trees."""
    rng = np.random.default_rng(7)
    categories = [
        ("building", "building=yes"),
        ("commercial", "shop=supermarket"),
        ("education", "amenity=school"),
        ("building", "building=house"),
        ("religious", "amenity=place_of_worship"),
    ]
    buildings = []
    x = -100.0
    k = 0
    while x < 1100:
        width = float(rng.uniform(12, 30))
        for side in (1, -1):
            if rng.random() < 0.15:
                continue
            depth = float(rng.uniform(10, 20))
            y0 = side * float(rng.uniform(8, 14))
            y1 = y0 + side * depth
            category, tag = categories[int(rng.integers(len(categories)))]
            height = float(rng.choice([None, 6.0, 9.0, 15.0, 24.0, 40.0]) or 0) or None
            buildings.append((f"w{1000 + k}", None, category, tag, height, box(x, min(y0, y1), x + width, max(y0, y1))))
            k += 1
        x += width + float(rng.uniform(2, 12))
    areas = [("w5000", "Long Park", "park", "leisure=park", None, box(300, 20, 420, 120))]
    trees = [(f"n{6000 + i}", float(tx), 7.0) for i, tx in enumerate(range(600, 800, 12))]
    streets = street_table(
        [
            (1, "Long Street", "residential", [1, 2], [(-150, 0), (1150, 0)]),
            (2, "Cross Avenue", "tertiary", [3, 4], [(500, -200), (500, 200)]),
        ]
    )
    return make_extract(buildings, areas=areas, trees=trees, streets=streets)


CONFIG = RenderConfig(size=128)


def view(scene, x, y, heading, *, config=CONFIG, key="v"):
    return render_view(scene, x, y, heading, config, view_rng(config.seed, key))


# ---- determinism and files


def test_render_city_draws_the_cameras_it_is_given(long_street_extract, tmp_path):
    config = RenderConfig(size=64, spacing_m=60.0)
    sampled = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "a", config=config, max_views=5
    )
    cameras = sample_cameras(
        long_street_extract.streets,
        crs_metric=CRS,
        spacing_m=60.0,
        seed=0,
        heading_jitter_deg=config.heading_jitter_deg,
        city_slug="longtown",
    )
    given = render_city(
        long_street_extract,
        city_slug="longtown",
        crs_metric=CRS,
        root=tmp_path / "b",
        config=config,
        max_views=5,
        cameras=cameras,
    )
    pd.testing.assert_frame_equal(sampled.images, given.images)
    only_two = render_city(
        long_street_extract,
        city_slug="longtown",
        crs_metric=CRS,
        root=tmp_path / "c",
        config=config,
        cameras=cameras.head(2),
    )
    assert list(only_two.images["image_id"]) == list(cameras["camera_id"].head(2))


def test_render_city_is_deterministic_and_resumable(long_street_extract, tmp_path):
    config = RenderConfig(size=96, spacing_m=60.0)
    first = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "a", config=config, max_views=8
    )
    second = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "b", config=config, max_views=8
    )
    assert list(first.images.columns) == list(MANIFEST_COLUMNS)
    assert len(first.images) == 8 and first.counts["cameras"] > 8
    pd.testing.assert_frame_equal(first.images, second.images)
    for rel in first.images["path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    row = first.images.iloc[0]
    assert row["source"] == "render" and row["creator"] == CREATOR and not row["is_pano"]
    assert row["path"] == f"longtown/images/{row['image_id']}.png"
    assert row["captured_at"] == "1970-01-01T00:00:00Z"  # the test extract has no snapshot
    assert (row["width"], row["height"]) == (96, 96)
    assert json.loads(row["scene_facts"])["street_name"] in {"Long Street", "Cross Avenue"}

    # a rerun draws nothing and lists the same facts; a lost or truncated file is drawn again
    (tmp_path / "a" / first.images["path"].iloc[1]).unlink()
    broken = tmp_path / "a" / first.images["path"].iloc[2]
    broken.write_bytes(broken.read_bytes()[:200])
    again = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path / "a", config=config, max_views=8
    )
    assert (again.counts["rendered"], again.counts["reused"]) == (2, 6)
    pd.testing.assert_frame_equal(again.images, first.images)

    # another seed changes the pixels, so every file is drawn again
    reseeded = render_city(
        long_street_extract,
        city_slug="longtown",
        crs_metric=CRS,
        root=tmp_path / "a",
        config=RenderConfig(size=96, spacing_m=60.0, seed=1),
        max_views=8,
    )
    assert reseeded.counts["rendered"] == 8
    assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "b" / rel).read_bytes()


def test_render_view_same_rng_same_pixels_other_rng_other_pixels(long_street_extract):
    scene = build_scene(long_street_extract, crs_metric=CRS)
    x, y = ORIGIN_E + 200, ORIGIN_N - 1.5
    a, facts_a = view(scene, x, y, 90.0, key="one")
    b, facts_b = view(scene, x, y, 90.0, key="one")
    c, _ = view(scene, x, y, 90.0, key="two")
    assert a.dtype == np.uint8 and a.shape == (128, 128, 3)
    assert np.array_equal(a, b) and facts_a == facts_b
    assert 0 < image_distance(a, c) < 10  # lighting and noise differ, the scene does not


def test_jpeg_images_carry_their_facts(front_back_extract, tmp_path):
    config = RenderConfig(size=64, image_format="jpeg", spacing_m=100.0)
    result = render_city(front_back_extract, city_slug="fb", crs_metric=CRS, root=tmp_path, config=config)
    assert result.images["path"].str.endswith(".jpg").all()
    stored = read_image_facts(tmp_path / result.images["path"].iloc[0])
    assert stored is not None and stored[1] == json.loads(result.images["scene_facts"].iloc[0])
    rerun = render_city(front_back_extract, city_slug="fb", crs_metric=CRS, root=tmp_path, config=config)
    assert rerun.counts["rendered"] == 0


# ---- spatial properties (mean absolute pixel difference)


def test_views_far_apart_differ_and_nearby_headings_agree_on_a_built_city(long_street_extract):
    scene = build_scene(long_street_extract, crs_metric=CRS)
    far, near = [], []
    for k, x in enumerate((0.0, 100.0, 200.0, 300.0, 450.0)):
        here, _ = view(scene, ORIGIN_E + x, ORIGIN_N - 1.5, 90.0, key=f"a{k}")
        there, _ = view(scene, ORIGIN_E + x + 500, ORIGIN_N - 1.5, 90.0, key=f"b{k}")
        turned, _ = view(scene, ORIGIN_E + x, ORIGIN_N - 1.5, 93.0, key=f"c{k}")
        far.append(image_distance(here, there))  # 16 x 16 block means: a tiny-image distance
        near.append(image_distance(here, turned))
    assert min(far) > 12.5, far
    assert max(near) < 10.5, near
    assert np.median(far) > 2.0 * np.median(near)


@pytest.fixture(scope="module")
def karhula():
    extract = load_city_osm(load_registry().get("karhula"))
    return extract, build_scene(extract, crs_metric=city_metric_crs(extract.streets))


def test_views_far_apart_differ_and_nearby_headings_agree_in_karhula(karhula):
    extract, scene = karhula
    assert scene.counts["buildings"] > 2000
    assert {"invalid_geometry_repaired", "invalid_geometry_skipped"} <= set(scene.counts)
    cameras = sample_cameras(extract.streets, crs_metric=scene.crs_metric, city_slug="karhula")
    xy = cameras[["x_m", "y_m"]].to_numpy()
    far, near = [], []
    for i in np.linspace(0, len(cameras) - 1, 10).astype(int):
        gap = np.hypot(*(xy - xy[i]).T)
        j = int(np.argmin(np.abs(gap - 500.0)))
        assert 450 < gap[j] < 550
        here, _ = view(scene, *xy[i], cameras["heading_deg"].iloc[i], key=f"k{i}")
        there, _ = view(scene, *xy[j], cameras["heading_deg"].iloc[i], key=f"k{j}")
        turned, _ = view(scene, *xy[i], cameras["heading_deg"].iloc[i] + 3.0, key=f"t{i}")
        far.append(image_distance(here, there))
        near.append(image_distance(here, turned))
    assert np.median(far) > 2.5 * np.median(near), (far, near)
    assert np.median(far) > 12.5 and np.median(near) < 9.0, (far, near)


# ---- scene facts


def test_facts_list_what_is_in_front_and_not_what_is_behind(front_back_scene):
    scene = front_back_scene
    image, facts = render_view(
        scene, ORIGIN_E + 1.0, ORIGIN_N, 0.0, RenderConfig(size=128), view_rng(0, "x"), street_name="Test Road"
    )
    by_name = {e["name"]: e for e in facts["visible"] if e["name"]}
    assert by_name["Front Hall"]["kind"] == "building" and by_name["Front Hall"]["side"] == "ahead"
    assert by_name["Front Hall"]["category"] == "culture"
    assert 38.0 < by_name["Front Hall"]["distance_m"] < 45.0
    assert by_name["Front Bakery"]["kind"] == "poi" and by_name["Front Bakery"]["category"] == "commercial"
    assert "Back Bank" not in by_name and "Back Cafe" not in by_name
    assert {e["osm_id"] for e in facts["visible"]} >= {"w10", "w12", "n20", "n30"}
    assert "n31" not in {e["osm_id"] for e in facts["visible"]}  # the tree behind
    assert next(e for e in facts["visible"] if e["osm_id"] == "w12")["side"] == "right"
    distances = [e["distance_m"] for e in facts["visible"]]
    assert distances == sorted(distances)
    assert facts["tree_count"] == 1 and facts["street_name"] == "Test Road"
    fractions = [facts[k] for k in ("building_fraction", "green_fraction", "sky_fraction", "road_fraction")]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert sum(fractions) <= 1.0 + 1e-3
    assert facts["building_fraction"] > 0.08 and facts["sky_fraction"] > 0.1 and facts["road_fraction"] > 0.05
    assert facts["mean_building_height_m"] is not None
    # the bakery's sign band is drawn in the commercial (amber) sign colour, low on the hall's facade
    r, g, b = (image.astype(int)[..., k] for k in range(3))
    amber_rows = np.flatnonzero(((r - b > 100) & (r > g) & (g > b)).sum(axis=1))
    assert len(amber_rows) and amber_rows.min() >= 128 // 2 - 4  # at most a few metres up, far from the roof
    assert ((r - b > 100) & (r > g) & (g > b)).sum() > 12

    # turning round swaps what is seen
    _, behind = render_view(scene, ORIGIN_E - 1.0, ORIGIN_N, 180.0, RenderConfig(size=128), view_rng(0, "y"))
    names = {e["name"] for e in behind["visible"]}
    assert {"Back Bank", "Back Cafe"} <= names and "Front Hall" not in names


def test_empty_area_renders_sky_and_ground(tmp_path):
    empty = tiny_city()
    nothing = OsmExtract(empty.streets.iloc[:0], empty.pois.iloc[:0], empty.aois.iloc[:0], source="empty")
    scene = build_scene(nothing, crs_metric=CRS)
    image, facts = render_view(scene, ORIGIN_E, ORIGIN_N, 45.0, RenderConfig(size=64), view_rng(0, "e"))
    assert facts["visible"] == [] and facts["building_fraction"] == 0.0
    assert facts["sky_fraction"] == 0.5 and facts["mean_building_height_m"] is None
    assert image[:32].mean(axis=(0, 1))[2] > image[32:].mean(axis=(0, 1))[2]  # blue sky over grey ground
    result = render_city(nothing, city_slug="nowhere", crs_metric=CRS, root=tmp_path)
    assert result.images.empty and list(result.images.columns) == list(MANIFEST_COLUMNS)
    assert result.counts["views"] == 0

    streets_only = OsmExtract(empty.streets, empty.pois.iloc[:0], empty.aois.iloc[:0], source="streets only")
    drawn = render_city(
        streets_only, city_slug="bare", crs_metric=CRS, root=tmp_path, config=RenderConfig(size=64), max_views=4
    )
    assert len(drawn.images) == 4
    for facts_json in drawn.images["scene_facts"]:
        facts = json.loads(facts_json)
        assert facts["building_fraction"] == 0.0 and facts["road_fraction"] > 0.05


def test_invalid_footprints_are_repaired_or_skipped_and_counted():
    bowtie = shapely.Polygon([lonlat(-10, 30), lonlat(10, 50), lonlat(10, 30), lonlat(-10, 50)])
    flat = shapely.Polygon([lonlat(-10, 70), lonlat(0, 70), lonlat(10, 70), lonlat(-10, 70)])
    assert not bowtie.is_valid
    buildings = [
        ("w1", "Bow", "building", "building=yes", 12.0, bowtie),
        ("w2", None, "building", "building=yes", 12.0, flat),
        ("w3", None, "building", "building=yes", 12.0, box(-10, 90, 10, 110)),
    ]
    scene = build_scene(make_extract(buildings), crs_metric=CRS)
    assert scene.counts["invalid_geometry_repaired"] == 1
    assert scene.counts["invalid_geometry_skipped"] == 1
    assert scene.counts["buildings"] == 2
    _, facts = render_view(scene, ORIGIN_E + 1.0, ORIGIN_N, 0.0, RenderConfig(size=96), view_rng(0, "b"))
    assert "Bow" in {e["name"] for e in facts["visible"]}


def test_walls_stand_where_the_pinhole_model_puts_them():
    wall = [("w1", "Wall", "building", "building=yes", 18.0, box(-200, 50, 200, 70))]
    scene = build_scene(make_extract(wall), crs_metric=CRS)
    hits = cast_walls(scene, ORIGIN_E, ORIGIN_N, 0.0, size=128, fov_deg=90.0)
    assert np.allclose(hits.depth, 50.0, atol=0.01)  # forward depth of a wall square to the view axis
    behind = cast_walls(scene, ORIGIN_E, ORIGIN_N, 180.0, size=128, fov_deg=90.0)
    assert np.isinf(behind.depth).all()
    # a clear sky and the sun behind the camera light the wall, so its colour stands out from the ground
    image, facts = render_view(
        scene,
        ORIGIN_E,
        ORIGIN_N,
        0.0,
        RenderConfig(size=128, noise=0),
        view_rng(0, "p"),
        weather=0.0,
        lighting=make_lighting(180.0, 30.0),
    )
    # focal length 64 px: the wall spans rows 64 - 64 * 15.5 / 50 = 44.2 to 64 + 64 * 2.5 / 50 = 67.2
    column = image[:, 10].astype(int)
    facade = column[50]
    is_wall = np.abs(column - facade).sum(axis=1) < 60
    assert not is_wall[43] and is_wall[45] and is_wall[65] and not is_wall[68]
    assert facts["building_fraction"] == pytest.approx(23 / 128, abs=0.01)  # rows 44..66 in every column


@settings(max_examples=25, deadline=None)
@given(x=st.floats(-40, 40), y=st.floats(-80, 80), heading=st.floats(0, 360, exclude_max=True))
def test_facts_are_consistent_anywhere(front_back_scene, x, y, heading):
    scene = front_back_scene
    image, facts = render_view(scene, ORIGIN_E + x, ORIGIN_N + y, heading, RenderConfig(size=32), view_rng(0, "h"))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    fractions = [facts[k] for k in ("building_fraction", "green_fraction", "sky_fraction", "road_fraction")]
    assert all(0.0 <= f <= 1.0 for f in fractions) and sum(fractions) <= 1.0 + 1e-3
    assert facts["sky_fraction"] <= 0.5
    assert len(facts["visible"]) <= 20
    assert [e["distance_m"] for e in facts["visible"]] == sorted(e["distance_m"] for e in facts["visible"])
    assert all(
        e["side"] in {"ahead", "left", "right"} and e["kind"] in {"building", "poi", "area", "tree"}
        for e in facts["visible"]
    )
    json.dumps(facts)


# ---- cameras, options, contact sheet


def test_cameras_every_spacing_both_ways_along_the_street():
    streets = street_table(
        [
            (1, "East Road", "residential", [1, 2, 3], [(0, 0), (200, 0), (400, 0)]),
            (2, None, "service", [4, 5], [(0, 50), (400, 50)]),
        ]
    )
    cameras = sample_cameras(streets, crs_metric=CRS, spacing_m=40.0, seed=3, heading_jitter_deg=5.0, city_slug="t")
    assert list(cameras.columns) == list(CAMERA_COLUMNS)
    assert len(cameras) == 20 and cameras["camera_id"].is_unique
    assert cameras["camera_id"].str.fullmatch(r"r[0-9a-f]{10}").all()
    # one sequence per direction and 200 m stretch of the 400 m street
    assert sorted(cameras["sequence_id"].unique()) == [
        "t:east-road:0:b:0",
        "t:east-road:0:b:1",
        "t:east-road:0:f:0",
        "t:east-road:0:f:1",
    ]
    assert (cameras.groupby("sequence_id")["x_m"].agg(np.ptp) <= 200.0).all()
    forward = cameras[cameras["sequence_id"].str.contains(":f:")]
    backward = cameras[cameras["sequence_id"].str.contains(":b:")]
    assert np.allclose(np.diff(forward["x_m"] - ORIGIN_E), 40.0) and np.allclose(np.diff(backward["x_m"]), -40.0)
    assert np.allclose(forward["y_m"] - ORIGIN_N, -1.5) and np.allclose(backward["y_m"] - ORIGIN_N, 1.5)
    assert forward["heading_deg"].between(85, 95).all() and backward["heading_deg"].between(265, 275).all()
    assert forward["heading_deg"].std() > 0.5  # jittered
    assert cameras["compass_angle"].between(0, 360, inclusive="left").all()
    # true north differs from grid north by the meridian convergence, about a degree here
    assert np.abs(((cameras["compass_angle"] - cameras["heading_deg"] + 180) % 360) - 180).max() < 3.0
    again = sample_cameras(streets, crs_metric=CRS, spacing_m=40.0, seed=3, heading_jitter_deg=5.0, city_slug="t")
    pd.testing.assert_frame_equal(cameras, again)
    lon, lat = cameras[["lon", "lat"]].iloc[0]
    x, y = local_xy(lon, lat)
    assert abs(x - 20.0) < 0.01 and abs(y + 1.5) < 0.01


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("size", 8, r"RenderConfig.size must be an integer in 16..2048, got 8"),
        ("fov_deg", 180, r"RenderConfig.fov_deg must be degrees in \(10, 170\), got 180"),
        ("image_format", "gif", r"RenderConfig.image_format must be \"png\" or \"jpeg\", got 'gif'"),
        ("spacing_m", -1.0, r"RenderConfig.spacing_m must be a positive number of metres, got -1.0"),
    ],
)
def test_bad_options_are_refused_before_work(front_back_extract, tmp_path, option, value, message):
    with pytest.raises(RenderInputError, match=message):
        render_city(
            front_back_extract, city_slug="fb", crs_metric=CRS, root=tmp_path, config=RenderConfig(**{option: value})
        )
    assert not (tmp_path / "fb").exists()


def test_bad_city_slug_is_refused(front_back_extract, tmp_path):
    with pytest.raises(RenderInputError, match=r"`city_slug` must be a plain folder name"):
        render_city(front_back_extract, city_slug="../up", crs_metric=CRS, root=tmp_path)


def test_contact_sheet_tiles_views(tmp_path):
    views = [np.full((32, 32, 3), 40 * k, dtype=np.uint8) for k in range(5)]
    path = tmp_path / "one.png"
    Image.fromarray(views[0]).save(path)
    sheet = Image.open(io.BytesIO(contact_sheet([*views, path], ncols=4, tile_px=16)))
    assert sheet.size == (4 * 18 + 2, 2 * 18 + 2)
    assert sheet.getpixel((2 + 18 + 8, 2 + 8)) == (40, 40, 40)
    with pytest.raises(RenderInputError, match="`ncols` must be an integer >= 1"):
        contact_sheet(views, ncols=0)
