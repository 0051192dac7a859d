"""One metric CRS per city: chosen once from the named streets, passed down, and never guessed."""

from __future__ import annotations

import dataclasses

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from ugdata_pipeline.errors import EmptyAreaError, MetricCrsError
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.graph.crs import city_metric_crs, metric_crs, metric_crs_for, utm_epsg
from ugdata_pipeline.imagery.scene import build_scene
from ugdata_pipeline.imagery.splits import assign_splits
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline_tests.tiny_city import CRS_METRIC, lonlat, street_table, tiny_city

HOW = r"pass crs_metric=UrbanGraph\.crs_metric \(or city_metric_crs\(osm_streets\) in an asset; "


def _with_far_unnamed_way(extract: OsmExtract) -> OsmExtract:
    # an unnamed service road ~700 km west, in UTM zone 33: it would pull a zone estimated from all streets west
    far = street_table([(99, None, "service", [9001, 9002], [(-700_000.0, 0.0), (-699_900.0, 0.0)])])
    streets = gpd.GeoDataFrame(pd.concat([extract.streets, far], ignore_index=True), crs="EPSG:4326")
    return dataclasses.replace(extract, streets=streets)


def test_the_graph_and_every_asset_use_the_zone_of_the_named_streets():
    extract = _with_far_unnamed_way(tiny_city())
    graph = build_urban_graph(extract, city_name="Tinytown", country="Finland")
    assert graph.crs_metric == city_metric_crs(extract.streets) == CRS_METRIC
    # the estimate the imagery assets made before: all streets, so another zone than the graph's
    assert metric_crs_for(extract.streets) != graph.crs_metric


def test_a_city_without_named_streets_has_no_metric_crs():
    unnamed = street_table([(1, None, "service", [1, 2], [(0.0, 0.0), (100.0, 0.0)])])
    with pytest.raises(EmptyAreaError, match=r"^city 'nowhere' has no named streets \(1 street ways\)"):
        city_metric_crs(unnamed, where="city 'nowhere'")
    with pytest.raises(ValueError, match="cannot choose a metric CRS for an empty table"):
        metric_crs_for(unnamed.iloc[:0])


def test_points_of_no_city_get_the_zone_they_lie_in():
    points = gpd.GeoSeries([shapely.Point(lonlat(0.0, 0.0)), shapely.Point(2.35, 48.86)], crs="EPSG:4326")
    assert metric_crs_for(points.iloc[:1]) == "EPSG:32635"  # Helsinki
    assert metric_crs_for(points.iloc[1:]) == "EPSG:32631"  # Paris


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, r"^assign_splits needs the city's metric CRS, got crs_metric=None; " + HOW),
        ("", r"^assign_splits needs the city's metric CRS, got crs_metric=''; "),
        ("EPSG:4326", r"^assign_splits: crs_metric='EPSG:4326' is not a projected CRS in metres \(unit 'degree'\); "),
        ("no such crs", r"^assign_splits: crs_metric='no such crs' is not a CRS pyproj can read"),
    ],
)
def test_a_missing_or_non_metric_crs_is_refused_by_name(value, message):
    with pytest.raises(MetricCrsError, match=message):
        metric_crs(value, needed_by="assign_splits")
    assert metric_crs("EPSG:32635", needed_by="assign_splits").to_epsg() == 32635


def test_stages_refuse_a_missing_crs_before_work_instead_of_guessing_one():
    empty = tiny_city()
    nothing = OsmExtract(empty.streets.iloc[:0], empty.pois.iloc[:0], empty.aois.iloc[:0], source="nothing")
    # the renderer used to fall back to a hard-coded EPSG:32635 for an extract with nothing in it
    with pytest.raises(MetricCrsError, match=r"^build_scene needs the city's metric CRS, got crs_metric=None; "):
        build_scene(nothing, crs_metric=None)  # type: ignore[arg-type]
    assert build_scene(nothing, crs_metric=CRS_METRIC).crs_metric == CRS_METRIC
    images = pd.DataFrame({"image_id": ["a"], "lon": [lonlat(0, 0)[0]], "lat": [lonlat(0, 0)[1]]})
    with pytest.raises(MetricCrsError, match=r"^assign_splits needs the city's metric CRS"):
        assign_splits(images, city_split="held_out", crs_metric=None)  # type: ignore[arg-type]


def test_each_point_gets_its_own_standard_utm_zone():
    # Helsinki, Sydney, the antimeridian (zone 60), Quito just south of the equator
    codes = utm_epsg([24.94, 151.21, 180.0, -78.5], [60.17, -33.87, 10.0, -0.2])
    assert codes.tolist() == [32635, 32756, 32660, 32717]
