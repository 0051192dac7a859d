"""The renderer draws the cameras it is handed as ``image_files`` hands them: read back from Parquet, maybe moved."""

from __future__ import annotations

import dataclasses
import io

import pandas as pd
from pyproj import Transformer

from ugdata_pipeline.imagery.cameras import sample_cameras
from ugdata_pipeline.imagery.city_render import render_city
from ugdata_pipeline.imagery.render_config import RenderConfig
from ugdata_pipeline.table_files import frame_to_parquet_bytes
from ugdata_pipeline_tests.imagery_tests.test_render import CRS, long_street_extract  # noqa: F401 (fixture)


def _through_parquet(frame: pd.DataFrame) -> pd.DataFrame:
    """What ``image_candidates`` stores and ``image_files`` reads back."""
    return pd.read_parquet(io.BytesIO(frame_to_parquet_bytes(frame)))


def test_a_moved_camera_read_back_from_parquet_is_drawn_where_it_now_stands(long_street_extract, tmp_path):  # noqa: F811
    config = RenderConfig(size=64, spacing_m=60.0)
    cameras = sample_cameras(
        long_street_extract.streets,
        crs_metric=CRS,
        spacing_m=60.0,
        seed=0,
        heading_jitter_deg=config.heading_jitter_deg,
        city_slug="longtown",
    )
    picked = cameras.iloc[[3]].reset_index(drop=True)
    moved = picked.copy()
    # 40 m along the street and turned to face the other way
    moved["x_m"] += 40.0
    moved["heading_deg"] = (moved["heading_deg"] + 180.0) % 360.0
    moved["compass_angle"] = (moved["compass_angle"] + 180.0) % 360.0
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(moved["x_m"], moved["y_m"])
    moved["lon"], moved["lat"] = lon, lat

    original = render_city(
        long_street_extract,
        city_slug="longtown",
        crs_metric=CRS,
        root=tmp_path / "a",
        config=config,
        cameras=_through_parquet(picked),
    )
    shifted = render_city(
        long_street_extract,
        city_slug="longtown",
        crs_metric=CRS,
        root=tmp_path / "b",
        config=config,
        cameras=_through_parquet(moved),
    )
    row = shifted.images.iloc[0]
    assert row["image_id"] == picked["camera_id"].iloc[0]
    assert (row["lon"], row["lat"], row["compass_angle"]) == (lon[0], lat[0], moved["compass_angle"].iloc[0])
    # the picture is another one: drawn from the moved camera, not from cameras sampled again
    before = (tmp_path / "a" / original.images["path"].iloc[0]).read_bytes()
    after = (tmp_path / "b" / row["path"]).read_bytes()
    assert before != after
    facts_before = original.images["scene_facts"].iloc[0]
    assert facts_before != row["scene_facts"]


def test_a_rerun_redraws_a_moved_camera_and_a_changed_city_and_reuses_the_rest(long_street_extract, tmp_path):  # noqa: F811
    config = RenderConfig(size=48, spacing_m=60.0)
    cameras = sample_cameras(
        long_street_extract.streets,
        crs_metric=CRS,
        spacing_m=60.0,
        seed=0,
        heading_jitter_deg=config.heading_jitter_deg,
        city_slug="longtown",
    ).head(4)
    first = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path, config=config, cameras=cameras
    )
    again = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path, config=config, cameras=cameras
    )
    assert (first.counts["rendered"], again.counts["rendered"], again.counts["reused"]) == (4, 0, 4)

    moved = cameras.copy()
    moved.loc[moved.index[1], "x_m"] += 25.0  # same id, another place: its stored view is stale
    redrawn = render_city(
        long_street_extract, city_slug="longtown", crs_metric=CRS, root=tmp_path, config=config, cameras=moved
    )
    assert (redrawn.counts["rendered"], redrawn.counts["reused"]) == (1, 3)

    # a refresh brought new OSM data: the buildings changed, so every view is drawn again
    fewer = long_street_extract.aois.iloc[: len(long_street_extract.aois) // 2]  # buildings and areas
    changed = dataclasses.replace(long_street_extract, aois=fewer)
    refreshed = render_city(changed, city_slug="longtown", crs_metric=CRS, root=tmp_path, config=config, cameras=moved)
    assert refreshed.counts["rendered"] == 4
