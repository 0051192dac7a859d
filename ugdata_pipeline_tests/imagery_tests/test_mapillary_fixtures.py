"""The Mapillary source against real API v4 responses (``mapillary_fixtures/``; © Mapillary contributors, CC BY-SA 4.0).

Real z14 coverage tiles, real image entities, the real error bodies and ten real image rows: the tile decoder, the
entity parser and the loopback server must agree with what the service really returns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mapbox_vector_tile
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import Polygon, box

from ugdata_pipeline.errors import MapillaryAuthError
from ugdata_pipeline.imagery.coverage_tiles import decode_image_points, tile_bounds, tiles_covering
from ugdata_pipeline.imagery.mapillary import MapillaryClient, discover_images, fetch_image_details
from ugdata_pipeline.imagery.mapillary_details import parse_image_entity
from ugdata_pipeline.throttle import RetryPolicy
from ugdata_pipeline_tests.imagery_tests.mapillary_server import (
    FIXTURES,
    INVALID_OAUTH_BODY,
    RATE_LIMIT_BODY,
    FakeImage,
    Fault,
    MapillaryServer,
    fixture_tile,
    tile_path,
)

TOKEN = "MLY|1234|test-secret"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=2.0)
HALF_WORLD_M = 20037508.342789244  # web mercator


def client_for(server: MapillaryServer, **options) -> MapillaryClient:
    token = options.pop("token", TOKEN)
    settings = {"concurrency": 4, "requests_per_second": 1000.0, "timeout_s": 5.0, "retry": FAST_RETRY}
    settings.update(options)
    return MapillaryClient(token, graph_url=server.url, tiles_url=server.tiles_url, **settings)


def reference_points(x: int, y: int) -> np.ndarray:
    """The tile's image points as lon/lat computed independently: raw pixels -> EPSG:3857 metres -> pyproj."""
    layer = mapbox_vector_tile.decode(fixture_tile(x, y), default_options={"y_coord_down": True})["image"]
    pixels = np.array([f["geometry"]["coordinates"] for f in layer["features"]], dtype=float)
    size = 2 * HALF_WORLD_M / 2**14
    mx = -HALF_WORLD_M + (x + pixels[:, 0] / layer["extent"]) * size
    my = HALF_WORLD_M - (y + pixels[:, 1] / layer["extent"]) * size
    lon, lat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(mx, my)
    return np.column_stack([lon, lat])


def singapore_images() -> list[FakeImage]:
    rows = pd.read_csv(FIXTURES / "image_rows_singapore.csv", dtype={"id": str, "organization_id": str})
    return [
        FakeImage(
            row.id,
            row.lon,
            row.lat,
            compass_angle=row.compass_angle,
            captured_at_ms=int(row.captured_at),
            sequence=row.sequence_id,
            is_pano=bool(row.is_pano),
            creator=f"user{row.creator_id}",
            organization_id="" if pd.isna(row.organization_id) else row.organization_id.removesuffix(".0"),
        )
        for row in rows.itertuples()
    ]


def tile_rows(images: list[FakeImage], *, lon: float = 1.0, lat: float = 2.0) -> pd.DataFrame:
    """Discovery rows for ``images`` with made-up tile values (``lon``, ``lat``, no creator)."""
    return pd.DataFrame(
        {
            "image_id": [i.image_id for i in images],
            "source": "mapillary",
            "lon": lon,
            "lat": lat,
            "compass_angle": 0.0,
            "captured_at": "",
            "sequence_id": "",
            "is_pano": False,
            "creator": "",
        }
    )


# --------------------------------------------------------------------------------------------------------------------
# tiles


def test_a_real_coverage_tile_decodes_to_its_documented_points_inside_its_bounds() -> None:
    points = decode_image_points(fixture_tile(3251, 6257), 3251, 6257)
    assert len(points) == 31_261
    west, south, east, north = tile_bounds(3251, 6257)
    assert (west, east) == (-108.56689453125, -108.544921875)
    assert points["lon"].between(west, east, inclusive="left").all()
    assert points["lat"].between(south, north, inclusive="right").all()
    # The positions agree with an independent projection (pixel -> EPSG:3857 -> pyproj), y flipped correctly.
    np.testing.assert_allclose(points[["lon", "lat"]].to_numpy(), reference_points(3251, 6257), rtol=0, atol=1e-9)
    # In the published tiles the ids, times, angles and panorama flags are blank; sequences are real.
    assert (points["image_id"] == "").all() and points["captured_ms"].isna().all()
    assert points["compass_angle"].isna().all() and not points["is_pano"].any()
    assert points["sequence_id"].nunique() == 383 and (points["sequence_id"] != "").all()


def test_tile_arithmetic_known_answers() -> None:
    west, south, east, north = tile_bounds(0, 0, 0)
    assert (west, east) == (-180.0, 180.0)
    assert south == pytest.approx(-85.0511287798066) and north == pytest.approx(85.0511287798066)
    inside = box(-108.560, 39.065, -108.550, 39.070)
    assert tiles_covering(inside) == [(3251, 6257)]
    across = box(-108.550, 39.065, -108.540, 39.070)  # over the 3251 | 3252 edge at -108.544921875
    assert tiles_covering(across) == [(3251, 6257), (3252, 6257)]
    touching = box(-108.56689453125 - 0.01, 39.065, -108.56689453125, 39.070)  # only touches 3251's west edge
    assert (3251, 6257) not in tiles_covering(touching)


def test_discovery_over_real_tiles_keeps_exactly_the_points_inside_the_polygon(tmp_path: Path) -> None:
    polygon = Polygon([(-108.565, 39.063), (-108.530, 39.066), (-108.548, 39.077)])  # over both fixture tiles
    assert tiles_covering(polygon) == [(3251, 6257), (3252, 6257)]
    reference = np.vstack([reference_points(3251, 6257), reference_points(3252, 6257)])
    expected_inside = int(shapely.intersects_xy(polygon, reference[:, 0], reference[:, 1]).sum())
    assert 1000 < expected_inside < len(reference) - 1000  # the polygon really cuts through the tiles
    with MapillaryServer() as server:
        server.tile_files = {(3251, 6257): fixture_tile(3251, 6257), (3252, 6257): fixture_tile(3252, 6257)}
        found = discover_images(client_for(server), polygon, cache_dir=tmp_path)
        assert sorted(r.path for r in server.tile_requests()) == [tile_path(3251, 6257), tile_path(3252, 6257)]
    assert found.counts["points"] == len(reference) == 31_261 + 8_695
    assert found.counts["outside_polygon"] == len(reference) - expected_inside
    # Every point inside has a blank id in the published tiles: counted, and dropped (it cannot be fetched).
    assert found.counts["no_id"] == expected_inside
    assert found.images.empty and found.complete


def test_the_ten_real_singapore_rows_come_back_from_the_tiles_and_their_details(tmp_path: Path) -> None:
    images = singapore_images()
    expected = {image.image_id: image for image in images}
    area = box(103.790, 1.312, 103.795, 1.315)
    with MapillaryServer(images) as server:
        client = client_for(server)
        found = discover_images(client, area, cache_dir=tmp_path / "tiles")
        assert found.complete and sorted(found.images["image_id"]) == sorted(expected)
        pixel = 360 / 2**14 / 4096
        for row in found.images.itertuples():
            truth = expected[row.image_id]
            assert abs(row.lon - truth.lon) <= pixel and abs(row.lat - truth.lat) <= pixel
            assert row.compass_angle == pytest.approx(truth.compass_angle)
            assert row.sequence_id == truth.sequence and row.is_pano is False and row.creator == ""
        first = found.images.set_index("image_id").loc["4181467471904806"]
        assert first["captured_at"] == "2018-09-24T03:33:16Z"
        assert not [r for r in server.log if not r.path.startswith("/maps/")], "discovery asks no entity"

        kept = fetch_image_details(client, found.images.iloc[:4], cache_dir=tmp_path / "details")
        asked = [r.path for r in server.log if not r.path.startswith("/maps/")]
        assert sorted(asked) == sorted(f"/{i}" for i in found.images["image_id"].iloc[:4]), "only the kept images"
        for row in kept.images.itertuples():
            truth = expected[row.image_id]
            assert (row.lon, row.lat) == (truth.lon, truth.lat), "the entity's exact geometry replaces the tile's"
            assert row.creator == truth.creator
        assert kept.counts == {
            "details_requested": 4,
            "details_cached": 0,
            "details_fetched": 4,
            "details_gone": 0,
            "details_failed": 0,
        }
        server.clear_log()
        again = fetch_image_details(client, found.images.iloc[:4], cache_dir=tmp_path / "details")
        assert server.log == [] and again.counts["details_cached"] == 4
        pd.testing.assert_frame_equal(again.images, kept.images)


# --------------------------------------------------------------------------------------------------------------------
# entities and errors


def test_the_real_image_entities_parse() -> None:
    paths = sorted((FIXTURES / "graph").glob("*.json"))
    assert len(paths) == 7
    for path in paths:
        record = json.loads(path.read_text())
        row = parse_image_entity(record)
        assert row is not None, path.name
        assert row["image_id"] == path.stem
        assert [row["lon"], row["lat"]] == record["geometry"]["coordinates"]
        assert row["compass_angle"] == record["compass_angle"]
        assert row["sequence_id"] == "7nfcwfvjdtphz7yj6zat6a" and row["creator"] == "" and row["is_pano"] is False
        assert row["captured_ms"] == record["captured_at"]
    row = parse_image_entity(json.loads((FIXTURES / "graph" / "135511895288847.json").read_text()))
    assert row["captured_at"] == "2019-07-21T14:57:52Z"
    without_geometry = {"id": "1", "computed_geometry": {"type": "Point", "coordinates": [1.5, 2.5]}}
    assert (parse_image_entity(without_geometry)["lon"], parse_image_entity(without_geometry)["lat"]) == (1.5, 2.5)
    assert parse_image_entity({"id": "1"}) is None


def test_the_real_invalid_token_body_raises_one_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    images = singapore_images()
    frame = tile_rows(images)
    with MapillaryServer(images) as server:
        server.inject(f"/{images[0].image_id}", Fault(401, INVALID_OAUTH_BODY))
        client = client_for(server, concurrency=1)
        with pytest.raises(MapillaryAuthError, match=r"Invalid OAuth 2\.0 Access Token") as raised:
            fetch_image_details(client, frame.iloc[:3], cache_dir=tmp_path)
        assert len(server.log) == 1, "the first request goes alone; the rest never start"
    assert "MAPILLARY_ACCESS_TOKEN" in str(raised.value) and TOKEN not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_the_real_rate_limit_body_is_retried_and_a_gone_image_is_dropped(tmp_path: Path) -> None:
    images = singapore_images()[:3]
    frame = tile_rows([*images, FakeImage("999", 0.0, 0.0)])
    with MapillaryServer(images) as server:
        server.inject(f"/{images[1].image_id}", Fault(429, RATE_LIMIT_BODY, {"Retry-After": "0.2"}))
        kept = fetch_image_details(client_for(server), frame, cache_dir=tmp_path)
        first, second = server.requests_to(f"/{images[1].image_id}")
        assert second.at - first.at >= 0.19
    assert kept.images["image_id"].tolist() == [i.image_id for i in images], "999 does not exist (HTTP 404)"
    assert kept.counts["details_gone"] == 1 and kept.counts["details_failed"] == 0
    assert kept.failures.empty


def test_a_failed_detail_keeps_the_tile_values_and_is_asked_again_next_run(tmp_path: Path) -> None:
    images = singapore_images()[:2]
    frame = tile_rows(images)
    broken = images[0].image_id
    with MapillaryServer(images) as server:
        server.inject(f"/{broken}", *[Fault(500, b"<html>oops</html>", {"Content-Type": "text/html"})] * 3)
        kept = fetch_image_details(client_for(server), frame, cache_dir=tmp_path)
        assert kept.failures[["image_id", "stage", "attempts"]].values.tolist() == [[broken, "details", 3]]
        assert kept.images.set_index("image_id").loc[broken, ["lon", "lat", "creator"]].tolist() == [1.0, 2.0, ""]
        server.clear_log()
        again = fetch_image_details(client_for(server), frame, cache_dir=tmp_path)
        assert [r.path for r in server.log] == [f"/{broken}"]
    assert again.failures.empty and again.images.set_index("image_id").loc[broken, "lon"] == images[0].lon


def test_the_token_in_a_tile_url_never_reaches_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with MapillaryServer(singapore_images()) as server:
        discover_images(client_for(server), box(103.790, 1.312, 103.795, 1.315), cache_dir=tmp_path)
        assert server.tile_requests()[0].query["access_token"] == TOKEN
    assert "access_token=***" in caplog.text, "httpx logged the request line, redacted"
    assert TOKEN not in caplog.text and "test-secret" not in caplog.text


def test_points_in_a_tile_buffer_or_repeated_by_two_tiles_count_once(tmp_path: Path) -> None:
    area = box(24.940, 60.160, 24.950, 60.170)  # tiles 9327/4742 (north) and 9327/4743 (south)
    south_image = FakeImage("111", 24.945, 60.161)
    with MapillaryServer([south_image]) as server:
        south = south_image.tile_feature(9327, 4743)
        assert south is not None
        north_features = [
            # The same image again, in the north tile's buffer below its bottom edge (y > extent), as tile
            # services add so that symbols at an edge are drawn whole: it belongs to the south tile.
            {"geometry": "POINT(2000 4100)", "properties": dict(south["properties"])},
            # An image both tiles list inside their extent (the service should not, but ids are the key).
            {"geometry": "POINT(2000 4000)", "properties": {"id": 111, "sequence_id": "s"}},
        ]
        server.tile_files[(9327, 4742)] = mapbox_vector_tile.encode(
            [{"name": "image", "features": north_features}], default_options={"y_coord_down": True}
        )
        found = discover_images(client_for(server), area, cache_dir=tmp_path)
    assert found.counts["points"] == 2, "the buffer point is left to the tile that owns it"
    assert found.counts["images_found"] == 1 and found.images["image_id"].tolist() == ["111"]
    # Tiles are read in (x, y) order and the first listing wins: the north tile's point, 96 px above its edge.
    north_edge = tile_bounds(9327, 4742)[1]
    assert 0 < found.images["lat"].iloc[0] - north_edge < 100 * (tile_bounds(9327, 4742)[3] - north_edge) / 4096
