"""Clipping a city's OSM tables to a box: the tiny city with known answers, and the bundled Karhula extract."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from ugdata_pipeline.cities import bundled_extract_path, load_registry
from ugdata_pipeline.errors import EmptyAreaError
from ugdata_pipeline.osm import load_city_osm
from ugdata_pipeline.osm.clip import clip_extract
from ugdata_pipeline.osm.offline import read_osm_file
from ugdata_pipeline_tests.tiny_city import grid_node_id, lonlat, tiny_city, write_tiny_city

KARHULA_BOX = (26.94, 60.525, 26.96, 60.535)  # inside the extract's header bbox (26.93, 60.52, 26.97, 60.54)
TOLERANCE_M = 3.0


@pytest.fixture(scope="module")
def karhula():
    return read_osm_file(bundled_extract_path("test.osm.pbf"))


def _layout_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """A lon/lat box from the tiny city's layout metres (south-west and north-east corners)."""
    west, south = lonlat(x0, y0)
    east, north = lonlat(x1, y1)
    return west, south, east, north


def _outside_m(geometries: gpd.GeoSeries, box: tuple[float, float, float, float]) -> np.ndarray:
    """How far each geometry reaches outside the box, metres (0 inside)."""
    crs = geometries.estimate_utm_crs()
    frame = gpd.GeoSeries([shapely.box(*box)], crs="EPSG:4326").to_crs(crs).iloc[0]
    metric = geometries.to_crs(crs).values
    return np.array(
        [
            0.0 if g.is_empty else g.hausdorff_distance(g.intersection(frame)) if not g.within(frame) else 0.0
            for g in metric
        ]
    )


def test_tiny_city_clip_cuts_streets_keeps_points_inside_and_areas_whole():
    city = tiny_city()
    box = _layout_box(-20, -20, 150, 220)  # cuts the three streets halfway between x = 100 and x = 200
    clipped = clip_extract(city, box)

    streets = clipped.streets.set_index("way_id")
    # First and Second Avenue (107-110) and the western street halves (101, 103, 105) inside; Third Avenue out
    assert sorted(streets.index) == [101, 102, 103, 104, 105, 106, 107, 108, 109, 110]
    original = city.streets.set_index("way_id")
    for way in (101, 103, 105, 107, 108, 109, 110):
        assert streets.loc[way, "node_ids"] == original.loc[way, "node_ids"]
        assert streets.loc[way, "geometry"].equals(original.loc[way, "geometry"])
    synthetic = []
    for way, j in ((102, 0), (104, 1), (106, 2)):
        row = streets.loc[way]
        assert (row["name"], row["highway"], row["category"]) == tuple(
            original.loc[way, ["name", "highway", "category"]]
        )
        assert row["node_ids"][0] == grid_node_id(1, j) and row["node_ids"][1] < 0
        synthetic.append(row["node_ids"][1])
        length = gpd.GeoSeries([row["geometry"]], crs="EPSG:4326").to_crs("EPSG:32635").length.iloc[0]
        assert length == pytest.approx(50.0, abs=8.0)  # the box edge is a meridian, the layout is UTM
        assert np.isclose(shapely.get_coordinates(row["geometry"])[-1, 0], box[2])  # ends on the east edge
    assert len(set(synthetic)) == 3
    assert clipped.counts["cut_streets"] == 3

    assert clipped.pois["name"].tolist() == ["Cafe Uno"]  # Bank Two (x = 185) is outside
    assert clipped.aois["name"].tolist() == ["Central Park"]  # x 110..190: intersects, kept whole
    assert clipped.aois.geometry.iloc[0].equals(city.aois.geometry.iloc[0])
    assert "clip [" in clipped.source and clipped.snapshot == city.snapshot


def test_karhula_clip_keeps_only_what_is_in_the_box_with_names(karhula):
    clipped = clip_extract(karhula, KARHULA_BOX)
    streets = clipped.streets
    assert 0 < len(streets) < len(karhula.streets)
    assert streets["name"].notna().sum() >= 20

    assert _outside_m(streets.geometry, KARHULA_BOX).max() < TOLERANCE_M
    assert _outside_m(clipped.pois.geometry, KARHULA_BOX).max() < TOLERANCE_M
    assert len(clipped.aois) and clipped.aois.geometry.intersects(shapely.box(*KARHULA_BOX)).all()
    assert clipped.trees.empty or _outside_m(clipped.trees.geometry, KARHULA_BOX).max() < TOLERANCE_M

    # the pieces cover exactly the part of each way inside the box, with the way's name and tags
    area = shapely.box(*KARHULA_BOX)
    inside = karhula.streets[karhula.streets.intersects(area)]
    assert set(streets["way_id"]) == set(inside["way_id"])
    expected = shapely.length(shapely.intersection(inside.geometry.values, area)).sum()  # degrees: a comparison
    assert shapely.length(streets.geometry.values).sum() == pytest.approx(expected, rel=1e-9)
    tags = ["name", "highway", "category"]
    original = karhula.streets.set_index("way_id")
    kept = original.loc[streets["way_id"], tags].fillna("").to_numpy()
    assert np.array_equal(streets[tags].fillna("").to_numpy(), kept)
    for row in streets.itertuples():
        source = original.loc[row.way_id]
        coords = shapely.get_coordinates(row.geometry)
        assert len(row.node_ids) == len(coords) >= 2
        osm = dict(zip(source["node_ids"], shapely.get_coordinates(source["geometry"]), strict=True))
        for k, node in enumerate(row.node_ids):
            if node > 0:
                assert np.array_equal(coords[k], osm[node])
            else:  # a synthetic node: only where the piece meets the box edge
                assert k in (0, len(row.node_ids) - 1)
    ids = np.concatenate(streets["node_ids"].to_numpy())
    synthetic = ids[ids < 0]
    assert len(synthetic) == len(set(synthetic)) > 0


def test_clip_changes_the_tables_and_no_clip_leaves_them_unchanged(write_registry, karhula):
    text = f"""
cities:
  whole: {{name: Karhula, country: Finland, split: held_out, source: {{kind: bundled, extract: test.osm.pbf}}}}
  part:
    name: Karhula
    country: Finland
    split: held_out
    source: {{kind: bundled, extract: test.osm.pbf, clip: {list(KARHULA_BOX)}}}
"""
    registry = load_registry(write_registry(text))
    whole, part = load_city_osm(registry.get("whole")), load_city_osm(registry.get("part"))
    assert whole.source == karhula.source == "file test.osm.pbf"
    assert whole.streets["way_id"].tolist() == karhula.streets["way_id"].tolist()
    assert whole.streets["node_ids"].tolist() == karhula.streets["node_ids"].tolist()
    assert (len(whole.pois), len(whole.aois)) == (len(karhula.pois), len(karhula.aois))
    assert len(part.streets) < len(whole.streets)
    assert part.streets["name"].notna().sum() < whole.streets["name"].notna().sum()
    assert len(part.pois) < len(whole.pois) and len(part.aois) < len(whole.aois)
    assert part.snapshot == whole.snapshot  # the file's snapshot date, clip or not
    assert part.source == "file test.osm.pbf clip [26.94, 60.525, 26.96, 60.535]"
    assert registry.get("part").source.describe() == "bundled test.osm.pbf clip [26.94, 60.525, 26.96, 60.535]"


def test_clip_beside_the_data_of_a_file_without_extent(write_registry, tmp_path):
    write_tiny_city(tmp_path)  # OSM XML without <bounds>: the clip cannot be checked before reading
    west, south = lonlat(1000, 1000)
    east, north = lonlat(1200, 1200)
    text = f"""
cities:
  town:
    name: Town
    country: Finland
    split: train
    source: {{kind: file, path: tiny.osm, clip: [{west}, {south}, {east}, {north}]}}
"""
    city = load_registry(write_registry(text)).get("town")
    with pytest.raises(EmptyAreaError, match=r"city 'town': source.clip \[.*\] holds no named streets of tiny.osm"):
        load_city_osm(city)
