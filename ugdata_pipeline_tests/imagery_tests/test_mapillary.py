"""The Mapillary source against a real HTTP server on 127.0.0.1 (``mapillary_server.MapillaryServer``).

Every test counts what the server received per path, so "retried", "not retried" and "never asked again" are
asserted exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
import shapely
from PIL import Image
from shapely.geometry import Polygon, box

from ugdata_pipeline.errors import ImageryInputError, MapillaryAuthError, UgdataError
from ugdata_pipeline.imagery.coverage_tiles import tiles_covering
from ugdata_pipeline.imagery.manifest import MANIFEST_COLUMNS
from ugdata_pipeline.imagery.mapillary import (
    DISCOVERY_COLUMNS,
    FAILURES_FILENAME,
    MapillaryClient,
    discover_images,
    download_images,
    token_from_env,
)
from ugdata_pipeline.imagery.source_outcome import FAILURE_COLUMNS
from ugdata_pipeline.throttle import RetryPolicy
from ugdata_pipeline_tests.imagery_tests.mapillary_server import (
    RATE_LIMIT_BODY,
    FakeImage,
    Fault,
    MapillaryServer,
    jpeg_bytes,
    tile_path,
)

TOKEN = "MLY|1234|test-secret"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=2.0)
AREA = box(24.940, 60.160, 24.950, 60.170)  # about 550 m x 1.1 km in central Helsinki: z14 tiles 9327/4742-4743
AREA_TILES = [tile_path(x, y) for x, y in tiles_covering(AREA)]
#: One pixel of a z14 tile (extent 4096) in degrees of longitude: how far a tile position may be from the truth.
TILE_PIXEL_DEG = 360 / 2**14 / 4096


def grid_images(n: int, *, lon0: float = 24.941, lat0: float = 60.161, step: float = 0.0002) -> list[FakeImage]:
    """``n`` images on a square grid starting at (lon0, lat0), ids img000..."""
    side = max(1, int(n**0.5 + 0.999))
    return [
        FakeImage(
            f"img{i:03d}",
            lon0 + (i % side) * step,
            lat0 + (i // side) * step,
            sequence=f"seq{i // 5}",
            captured_at_ms=1_600_000_000_000 + i * 1000,
        )
        for i in range(n)
    ]


def client_for(server: MapillaryServer, **options) -> MapillaryClient:
    token = options.pop("token", TOKEN)
    settings = {
        "concurrency": 4,
        "requests_per_second": 1000.0,
        "timeout_s": 5.0,
        "retry": FAST_RETRY,
        "tiles_url": server.tiles_url,
    }
    settings.update(options)
    return MapillaryClient(token, graph_url=server.url, **settings)


def images_frame(images: list[FakeImage]) -> pd.DataFrame:
    """The discovery rows for ``images`` without going through discovery (download tests)."""
    return pd.DataFrame(
        {
            "image_id": [i.image_id for i in images],
            "source": "mapillary",
            "lon": [i.lon for i in images],
            "lat": [i.lat for i in images],
            "compass_angle": [float(i.compass_angle or 0.0) for i in images],
            "captured_at": "2020-09-13T12:26:40Z",
            "sequence_id": [i.sequence for i in images],
            "is_pano": False,
            "creator": "alice",
        }
    )


def thumb(image_id: str) -> str:
    return f"/thumbs/{image_id}.jpg"


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --------------------------------------------------------------------------------------------------------------------
# discovery


def test_discovery_reads_each_covering_tile_once_and_a_rerun_reads_the_cache(tmp_path: Path) -> None:
    inside = grid_images(37)  # across both tiles of AREA (the tile edge is at lat 60.16338)
    outside = [FakeImage("far1", 24.955, 60.165), FakeImage("far2", 24.945, 60.1735)]  # in AREA's tiles, not AREA
    with MapillaryServer([*inside, *outside]) as server:
        client = client_for(server)
        result = discover_images(client, AREA, cache_dir=tmp_path / "cache")
        assert sorted(r.path for r in server.tile_requests()) == sorted(AREA_TILES) and len(AREA_TILES) == 2
        assert {r.query["access_token"] for r in server.tile_requests()} == {TOKEN}
        assert set(result.images["image_id"]) == {i.image_id for i in inside}
        assert result.complete
        assert result.counts["cells"] == result.counts["cells_queried"] == 2
        assert result.counts["images_found"] == len(inside) and result.counts["outside_polygon"] == len(outside)
        assert result.counts["points"] == len(inside) + len(outside) and result.counts["no_id"] == 0
        assert result.counts["requests"] == 2
        assert list(result.images.columns) == list(DISCOVERY_COLUMNS)
        row = result.images.set_index("image_id").loc["img000"]
        assert abs(row["lon"] - 24.941) <= TILE_PIXEL_DEG and abs(row["lat"] - 60.161) <= TILE_PIXEL_DEG
        assert row["captured_at"] == "2020-09-13T12:26:40Z"
        assert (row["sequence_id"], row["creator"], row["is_pano"], row["compass_angle"]) == ("seq0", "", False, 90.0)
        assert not [r for r in server.log if not r.path.startswith("/maps/")], "no Graph API call at discovery"

        again = discover_images(client, AREA, cache_dir=tmp_path / "cache")
        assert len(server.tile_requests()) == 2, "a rerun is answered from the disk cache"
        assert again.counts["requests"] == 0 and again.counts["cells_cached"] == 2
        pd.testing.assert_frame_equal(again.images, result.images)


def test_a_failing_tile_is_retried_then_recorded_and_not_cached(tmp_path: Path) -> None:
    with MapillaryServer(grid_images(3)) as server:
        server.inject(AREA_TILES[0], *[Fault(500, b"oops", {"Content-Type": "text/plain"})] * FAST_RETRY.max_attempts)
        result = discover_images(client_for(server), AREA, cache_dir=tmp_path)
        assert server.count(AREA_TILES[0]) == FAST_RETRY.max_attempts
        assert not result.complete and result.counts["cells_failed"] == 1
        assert result.failures[["image_id", "stage", "attempts"]].values.tolist() == [
            [AREA_TILES[0].replace("/maps/vtp/mly1_public/2/", "tile:"), "discover", FAST_RETRY.max_attempts]
        ]
        assert "HTTP 500" in result.failures["error"].iloc[0]
        assert len(list(tmp_path.glob("tile_*.mvt"))) == 1, "only the tile that answered is cached"


def test_a_tile_that_is_not_a_vector_tile_is_recorded_with_its_content_type(tmp_path: Path) -> None:
    with MapillaryServer(grid_images(3)) as server:
        server.inject(AREA_TILES[1], Fault(200, b"<html>maintenance</html>", {"Content-Type": "text/html"}))
        result = discover_images(client_for(server), AREA, cache_dir=tmp_path)
    assert result.counts["cells_failed"] == 1 and not result.complete
    error = result.failures["error"].iloc[0]
    assert "is not a Mapbox Vector Tile" in error and "Content-Type: text/html" in error
    assert len(list(tmp_path.glob("tile_*.mvt"))) == 1, "a malformed body is not cached"


def test_a_tile_dropped_mid_body_is_fetched_again(tmp_path: Path) -> None:
    images = grid_images(9)
    with MapillaryServer(images) as server:
        target = AREA_TILES[1]  # holds img000...
        server.inject(target, Fault(200, b"x" * 400, {"Content-Type": "application/x-protobuf"}, cut_at=100))
        found = discover_images(client_for(server), AREA, cache_dir=tmp_path)
        assert server.count(target) == 2
    assert found.complete and set(found.images["image_id"]) == {i.image_id for i in images}


def test_the_real_rate_limit_answer_is_retried_after_retry_after(tmp_path: Path) -> None:
    with MapillaryServer(grid_images(4)) as server:
        server.inject(AREA_TILES[1], Fault(429, RATE_LIMIT_BODY, {"Retry-After": "0.3"}))  # code 4, HTTP 429
        result = discover_images(client_for(server), AREA, cache_dir=tmp_path)
        first, second = server.requests_to(AREA_TILES[1])
        assert second.at - first.at >= 0.29, "Retry-After (0.3 s) is a floor on the wait"
        assert result.counts["retries"] == 1
        assert len(result.images) == 4


def test_filters_panoramas_and_capture_dates(tmp_path: Path) -> None:
    images = [
        FakeImage("old", 24.941, 60.161, captured_at_ms=1_500_000_000_000),  # 2017-07-14
        FakeImage("new", 24.942, 60.161, captured_at_ms=1_700_000_000_000),  # 2023-11-14
        FakeImage("pano", 24.943, 60.161, is_pano=True, captured_at_ms=1_700_000_000_000),
        FakeImage("nocompass", 24.944, 60.161, compass_angle=None, captured_at_ms=1_700_000_000_000),
    ]
    with MapillaryServer(images) as server:
        client = client_for(server)
        default = discover_images(client, AREA, cache_dir=tmp_path)
        assert set(default.images["image_id"]) == {"old", "new", "nocompass"}
        assert default.counts["panoramas_dropped"] == 1
        assert (
            default.images.set_index("image_id").loc["nocompass", "compass_angle"]
            != default.images.set_index("image_id").loc["nocompass", "compass_angle"]
        ), "a missing compass angle stays NaN"
        recent = discover_images(client, AREA, cache_dir=tmp_path, start="2020-01-01", include_panos=True)
        assert set(recent.images["image_id"]) == {"new", "pano", "nocompass"}
        assert recent.counts["out_of_date_range"] == 1
        window = discover_images(client, AREA, cache_dir=tmp_path, start="2017-01-01", end="2018-01-01")
        assert window.images["image_id"].tolist() == ["old"]
        assert len(server.tile_requests()) == len(AREA_TILES), "one cache serves every filter"


def test_daily_request_budget_stops_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    inside = grid_images(37)
    with MapillaryServer(inside) as server:
        client = client_for(server, concurrency=1)
        partial = discover_images(client, AREA, cache_dir=tmp_path, max_requests=1)
        assert len(server.tile_requests()) == 1
        assert not partial.complete and partial.counts["cells_pending"] == 1
        budget = json.loads((tmp_path / "_request_budget.json").read_text())
        assert budget["used"] == 1 and budget["exhausted"] and "exhausted_at" in budget
        # Same day, same budget: nothing more is spent.
        assert discover_images(client, AREA, cache_dir=tmp_path, max_requests=1).counts["requests"] == 0
        full = discover_images(client, AREA, cache_dir=tmp_path, max_requests=1000)
        assert full.complete
        assert set(full.images["image_id"]) == {i.image_id for i in inside}
        paths = [r.path for r in server.tile_requests()]
        assert sorted(paths) == sorted(AREA_TILES), "the resumed run does not ask the cached tile again"


@pytest.mark.parametrize("style", ["401", "oauth400"])
def test_bad_token_raises_one_clear_error_and_writes_nothing(tmp_path: Path, style: str) -> None:
    secret = "MLY|999|do-not-leak-me"
    with MapillaryServer(grid_images(20), auth_error_style=style) as server:
        client = client_for(server, token=secret)  # AREA has two tiles
        with pytest.raises(MapillaryAuthError) as discovered:
            discover_images(client, AREA, cache_dir=tmp_path / "cache")
        assert len(server.tile_requests()) == 1, "the first request goes alone; the rest never start"
        frame = images_frame(grid_images(20))
        with pytest.raises(MapillaryAuthError) as downloaded:
            download_images(client, frame, root=tmp_path / "root", city_slug="helsinki")
        assert sum(1 for r in server.log if not r.path.startswith("/maps/")) == 1
    for error in (discovered.value, downloaded.value):
        message = str(error)
        assert "MAPILLARY_ACCESS_TOKEN" in message and "MLY|" in message
        assert secret not in message and "do-not-leak-me" not in message
        assert isinstance(error, UgdataError)
    assert files_in(tmp_path) == [], "nothing written: no cache, no budget file, no images, no failures file"


def test_token_from_env() -> None:
    assert token_from_env({"MAPILLARY_ACCESS_TOKEN": " MLY|1|x \n"}) == "MLY|1|x"
    for environ in ({}, {"MAPILLARY_ACCESS_TOKEN": "  "}):
        with pytest.raises(MapillaryAuthError, match="MAPILLARY_ACCESS_TOKEN is not set"):
            token_from_env(environ)


def test_bad_input_is_rejected_before_any_request(tmp_path: Path) -> None:
    with MapillaryServer(grid_images(3)) as server:
        client = client_for(server)
        with pytest.raises(ImageryInputError, match="EPSG:4326"):
            discover_images(client, box(385000, 6672000, 385200, 6672200), cache_dir=tmp_path)
        with pytest.raises(ImageryInputError, match="must be before"):
            discover_images(client, AREA, cache_dir=tmp_path, start="2024-01-01", end="2023-01-01")
        frame = images_frame(grid_images(3))
        with pytest.raises(ImageryInputError, match="city_slug"):
            download_images(client, frame, root=tmp_path, city_slug="../etc")
        with pytest.raises(ImageryInputError, match="unique"):
            download_images(client, pd.concat([frame, frame]), root=tmp_path, city_slug="x")
        with pytest.raises(ImageryInputError, match="missing column"):
            download_images(client, frame.drop(columns="sequence_id"), root=tmp_path, city_slug="x")
        with pytest.raises(ImageryInputError, match="size"):
            download_images(client, frame, root=tmp_path, city_slug="x", size="thumb_99_url")
        assert server.log == []
    assert "test-secret" not in repr(client)


# --------------------------------------------------------------------------------------------------------------------
# download


def test_download_writes_verified_files_and_the_manifest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images = grid_images(6)
    caplog.set_level(logging.DEBUG)
    with MapillaryServer(images, thumb_size=(80, 60)) as server:
        result = download_images(client_for(server), images_frame(images), root=tmp_path, city_slug="helsinki")
        for image in images:
            assert server.count(f"/{image.image_id}") == 1
            assert server.count(thumb(image.image_id)) == 1
        graph_auth = {r.authorization for r in server.log if not r.path.startswith("/thumbs/")}
        cdn_auth = {r.authorization for r in server.log if r.path.startswith("/thumbs/")}
        assert graph_auth == {f"OAuth {TOKEN}"}
        assert cdn_auth == {None}, "the token is never sent to the CDN"
        assert all(TOKEN not in json.dumps(r.query) for r in server.log), "the token is never in a URL"
    manifest = result.manifest
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert manifest["image_id"].tolist() == [i.image_id for i in images]
    assert manifest["path"].tolist() == [f"helsinki/images/{i.image_id}.jpg" for i in images]
    assert set(manifest["source"]) == {"mapillary"} and set(manifest["scene_facts"]) == {"{}"}
    assert set(manifest["width"]) == {80} and set(manifest["height"]) == {60}
    for path in manifest["path"]:
        with Image.open(tmp_path / path) as image:
            image.load()
    assert result.failures.empty and list(result.failures.columns) == list(FAILURE_COLUMNS)
    assert result.counts["downloaded"] == 6 and result.counts["failed"] == 0
    assert json.loads((tmp_path / "helsinki" / FAILURES_FILENAME).read_text()) == []
    assert TOKEN not in caplog.text and "test-secret" not in caplog.text


def test_500_is_retried_then_recorded_and_retried_next_run(tmp_path: Path) -> None:
    images = grid_images(4)
    flaky, broken = images[0].image_id, images[1].image_id
    with MapillaryServer(images) as server:
        server.inject(thumb(flaky), Fault(500), Fault(503))
        server.inject(thumb(broken), *[Fault(500, {"error": {"message": "boom"}})] * 3)
        client = client_for(server)
        first = download_images(client, images_frame(images), root=tmp_path, city_slug="c")
        assert server.count(thumb(flaky)) == 3, "two 5xx, then success"
        assert server.count(thumb(broken)) == FAST_RETRY.max_attempts
        assert server.count(f"/{broken}") == 1, "a 5xx from the CDN does not re-resolve the URL"
        assert first.failures[["image_id", "stage", "attempts"]].values.tolist() == [[broken, "download", 3]]
        assert "HTTP 500" in first.failures["error"].iloc[0]
        assert not (tmp_path / "c" / "images" / f"{broken}.jpg").exists()
        assert len(first.manifest) == 3 and first.counts["retries"] == 2 + 2
        stored = json.loads((tmp_path / "c" / FAILURES_FILENAME).read_text())
        assert [row["image_id"] for row in stored] == [broken]

        server.clear_log()
        second = download_images(client, images_frame(images), root=tmp_path, city_slug="c")
        assert server.counts() == {f"/{broken}": 1, thumb(broken): 1}, "only the failed image is asked again"
        assert second.failures.empty and len(second.manifest) == 4
        assert second.counts["already_present"] == 3 and second.counts["downloaded"] == 1
        assert json.loads((tmp_path / "c" / FAILURES_FILENAME).read_text()) == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault(429, {"error": {"message": "Too many requests"}}, {"Retry-After": "0.25"}),
        Fault(
            400,
            {"error": {"message": "(#4) Application request limit reached", "type": "OAuthException", "code": 4}},
            {"Retry-After": "0.25"},
        ),
    ],
    ids=["http429", "graph-code-4"],
)
def test_rate_limited_resolve_waits_and_retries(tmp_path: Path, fault: Fault) -> None:
    images = grid_images(2)
    limited = images[1].image_id
    with MapillaryServer(images) as server:
        server.inject(f"/{limited}", fault)
        result = download_images(client_for(server), images_frame(images), root=tmp_path, city_slug="c")
        first, second = server.requests_to(f"/{limited}")
        assert second.at - first.at >= 0.24
        assert server.count(thumb(limited)) == 1 and server.count(f"/{images[0].image_id}") == 1
    assert result.failures.empty and result.counts["retries"] == 1


def test_truncated_jpeg_is_recorded_not_written_and_fixed_next_run(tmp_path: Path) -> None:
    images = grid_images(3)
    bad = images[2].image_id
    image_dir = tmp_path / "c" / "images"
    with MapillaryServer(images) as server:
        server.truncate_ids = {bad}
        client = client_for(server)
        first = download_images(client, images_frame(images), root=tmp_path, city_slug="c")
        assert server.count(thumb(bad)) == 1, "a corrupt body is not re-fetched in the same run"
        assert first.failures[["image_id", "stage", "attempts"]].values.tolist() == [[bad, "verify", 1]]
        assert "truncat" in first.failures["error"].iloc[0].lower() or "Truncated" in first.failures["error"].iloc[0]
        assert files_in(image_dir) == sorted(f"{i.image_id}.jpg" for i in images[:2]), "no partial or tmp file"
        assert first.counts["verify_failures"] == 1

        server.truncate_ids = set()
        server.clear_log()
        second = download_images(client, images_frame(images), root=tmp_path, city_slug="c")
        assert server.counts() == {f"/{bad}": 1, thumb(bad): 1}
        assert second.failures.empty and second.manifest["image_id"].tolist() == [i.image_id for i in images]
        with Image.open(image_dir / f"{bad}.jpg") as image:
            image.load()


def test_expired_thumbnail_url_is_resolved_again(tmp_path: Path) -> None:
    images = grid_images(3)
    stale = images[1].image_id
    with MapillaryServer(images) as server:
        server.expire_first_url = {stale}
        result = download_images(client_for(server), images_frame(images), root=tmp_path, city_slug="c")
        assert server.count(f"/{stale}") == 2, "resolved, rejected by the CDN (403), resolved again"
        assert server.count(thumb(stale)) == 2
        signatures = [r.query["sig"] for r in server.requests_to(thumb(stale))]
        assert len(set(signatures)) == 2, "the second download uses the fresh URL"
        for image in (images[0], images[2]):
            assert server.count(f"/{image.image_id}") == 1 and server.count(thumb(image.image_id)) == 1
    assert result.failures.empty and len(result.manifest) == 3
    assert result.counts["expired_urls"] == 1


def test_a_killed_download_resumes_without_fetching_finished_images_again(tmp_path: Path) -> None:
    images = grid_images(24)
    image_dir = tmp_path / "c" / "images"
    frame = images_frame(images)

    async def scenario(server: MapillaryServer) -> tuple[set[str], pd.DataFrame]:
        client = client_for(server, concurrency=3)
        task = asyncio.create_task(client.download(frame, root=tmp_path, city_slug="c"))
        while len(list(image_dir.glob("*.jpg"))) < 8:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)  # a verify/write thread that was running finishes its rename
        finished = {p.stem for p in image_dir.glob("*.jpg")}
        server.clear_log()
        result = await client.download(frame, root=tmp_path, city_slug="c")
        return finished, result.manifest

    with MapillaryServer(images, latency_s=0.02) as server:
        finished, manifest = asyncio.run(scenario(server))
        assert 8 <= len(finished) < 24, "the first run was interrupted mid-way"
        for image_id in finished:
            assert server.count(f"/{image_id}") == 0 and server.count(thumb(image_id)) == 0
        for image in images:
            if image.image_id not in finished:
                assert server.count(thumb(image.image_id)) == 1
    assert manifest["image_id"].tolist() == [i.image_id for i in images]
    assert not [p for p in image_dir.iterdir() if p.suffix != ".jpg"], "no temporary file survives the kill"


def test_an_unreadable_file_under_the_final_name_is_fetched_again(tmp_path: Path) -> None:
    images = grid_images(2)
    image_dir = tmp_path / "c" / "images"
    image_dir.mkdir(parents=True)
    (image_dir / f"{images[0].image_id}.jpg").write_bytes(b"not a jpeg")
    stale, fresh = image_dir / ".img001.jpg.dead.tmp", image_dir / ".img001.jpg.live.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (1.0, 1.0))  # left by a run killed long ago
    with MapillaryServer(images) as server:
        result = download_images(client_for(server), images_frame(images), root=tmp_path, city_slug="c")
        assert server.count(thumb(images[0].image_id)) == 1
    assert result.counts["already_present"] == 0 and len(result.manifest) == 2
    assert not stale.exists() and fresh.exists(), "only old temporaries go: a fresh one may be another run's"


def test_discovery_output_feeds_download(tmp_path: Path) -> None:
    images = grid_images(5)
    with MapillaryServer(images) as server:
        client = client_for(server)
        polygon = Polygon([(24.940, 60.160), (24.950, 60.160), (24.940, 60.170)])  # a triangle over the grid
        found = discover_images(client, polygon, cache_dir=tmp_path / "cache")
        result = download_images(client, found.images, root=tmp_path, city_slug="c")
    assert result.manifest["image_id"].tolist() == found.images["image_id"].tolist()
    assert len(found.images) >= 1
    assert result.manifest["captured_at"].str.endswith("Z").all()


def test_an_unreachable_service_is_recorded_not_retried_for_hours(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening: every request is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = MapillaryClient(TOKEN, graph_url=f"http://127.0.0.1:{port}", concurrency=2, retry=FAST_RETRY)
    images = grid_images(30)
    result = download_images(client, images_frame(images), root=tmp_path, city_slug="c")
    failures = result.failures
    assert len(failures) == 30 and set(failures["stage"]) == {"resolve"}
    attempted = failures[failures["attempts"] > 0]
    assert set(attempted["attempts"]) == {FAST_RETRY.max_attempts}
    assert 10 <= len(attempted) <= 10 + 2, "the breaker opens after max(10, 2 x concurrency) give-ups in a row"
    assert failures.loc[failures["attempts"] == 0, "error"].str.contains("looks down").all()
    assert result.manifest.empty and result.counts["resolve_requests"] == len(attempted) * FAST_RETRY.max_attempts
    assert json.loads((tmp_path / "c" / FAILURES_FILENAME).read_text())[0]["image_id"] == "img000"


def test_an_area_without_images_gives_an_empty_table(tmp_path: Path) -> None:
    with MapillaryServer(grid_images(3)) as server:
        result = discover_images(client_for(server), box(25.5, 61.0, 25.51, 61.01), cache_dir=tmp_path)
    assert result.images.empty and list(result.images.columns) == list(DISCOVERY_COLUMNS)
    assert result.complete and result.counts["images"] == 0


def real_jpeg() -> bytes:
    """A real camera JPEG (512 x 600, baseline, EXIF) that matplotlib ships as sample data."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


@pytest.mark.parametrize("load_truncated", [False, True], ids=["default", "LOAD_TRUNCATED_IMAGES"])
def test_a_file_cut_short_on_disk_is_verified_on_resume_fetched_again_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_truncated: bool
) -> None:
    from PIL import ImageFile

    # Some libraries switch this on process-wide; Pillow then pads a truncated JPEG instead of failing.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    images = grid_images(3)
    cut = images[1].image_id
    body = real_jpeg()
    image_dir = tmp_path / "c" / "images"
    with MapillaryServer(images) as server:
        server.bodies = {image.image_id: body for image in images}
        client = client_for(server)
        first = download_images(client, images_frame(images), root=tmp_path, city_slug="c")
        assert first.counts["downloaded"] == 3 and first.counts["corrupt_on_disk"] == 0
        assert (image_dir / f"{cut}.jpg").read_bytes() == body
        # A copy or a disk that filled up cut the file short; its header (and so its pixel size) is intact.
        (image_dir / f"{cut}.jpg").write_bytes(body[: len(body) * 2 // 3])
        server.clear_log()
        second = download_images(client, images_frame(images), root=tmp_path, city_slug="c")
        assert server.counts() == {f"/{cut}": 1, thumb(cut): 1}, "only the cut file is fetched again"
    assert second.counts["corrupt_on_disk"] == 1
    assert second.counts["already_present"] == 2 and second.counts["downloaded"] == 1
    assert (image_dir / f"{cut}.jpg").read_bytes() == body
    assert second.manifest["image_id"].tolist() == [i.image_id for i in images]
    assert set(second.manifest["width"]) == {512} and set(second.manifest["height"]) == {600}


def test_a_file_cut_short_stays_out_of_the_manifest_when_the_fetch_fails(tmp_path: Path) -> None:
    images = grid_images(2)
    cut = images[0].image_id
    image_dir = tmp_path / "c" / "images"
    image_dir.mkdir(parents=True)
    body = real_jpeg()
    (image_dir / f"{cut}.jpg").write_bytes(body[:-2])  # only the end-of-image marker is missing
    with MapillaryServer(images) as server:
        server.inject(thumb(cut), *[Fault(500)] * FAST_RETRY.max_attempts)
        result = download_images(client_for(server), images_frame(images), root=tmp_path, city_slug="c")
    assert result.counts["corrupt_on_disk"] == 1
    assert result.manifest["image_id"].tolist() == [images[1].image_id]
    assert result.failures["image_id"].tolist() == [cut]
    assert not (image_dir / f"{cut}.jpg").exists(), "a cut file never stays under the final name"


def test_downloaded_images_follow_the_umask_like_tables(tmp_path: Path) -> None:
    images = grid_images(2)
    previous = os.umask(0o022)
    try:
        with MapillaryServer(images) as server:
            download_images(client_for(server), images_frame(images), root=tmp_path, city_slug="c")
    finally:
        os.umask(previous)
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "c" / "images").iterdir()}
    assert modes == {oct(0o644)}
    assert oct((tmp_path / "c" / FAILURES_FILENAME).stat().st_mode & 0o777) == oct(0o644)


def test_only_images_inside_a_street_buffer_are_kept_not_its_bounding_box(tmp_path: Path) -> None:
    # the search area as production builds it: a buffer around two streets meeting at a corner (an L), so most of
    # its bounding box lies outside it
    streets = shapely.MultiLineString([[(24.941, 60.161), (24.949, 60.161)], [(24.941, 60.161), (24.941, 60.169)]])
    area = streets.buffer(0.0006)
    images = grid_images(100, lon0=24.9408, lat0=60.1608, step=0.0009)  # a 10 x 10 grid over the whole box
    inside = {i.image_id for i in images if area.contains(shapely.Point(i.lon, i.lat))}
    in_box = {i.image_id for i in images if shapely.box(*area.bounds).contains(shapely.Point(i.lon, i.lat))}
    assert 10 < len(inside) < len(in_box) / 2  # the test means something only if the box holds far more
    with MapillaryServer(images) as server:
        found = discover_images(client_for(server), area, cache_dir=tmp_path / "cache")
    assert set(found.images["image_id"]) == inside
    assert found.counts["images_found"] == len(inside)
    assert found.counts["outside_polygon"] == found.counts["points"] - len(inside) > 0


def test_a_tile_that_hangs_past_the_timeout_is_retried_and_the_area_completes(tmp_path: Path) -> None:
    images = grid_images(9)
    with MapillaryServer(images) as server:
        # answers only long after the client gave up; the 2 s timeout leaves a loaded machine room for the retry's
        # healthy answer (milliseconds) — a client that waited the hang out would get an empty tile, not all nine
        empty = Fault(200, b"", {"Content-Type": "application/x-protobuf"}, delay_s=30.0)
        server.inject(AREA_TILES[1], empty)
        client = client_for(server, timeout_s=2.0)
        found = discover_images(client, AREA, cache_dir=tmp_path / "cache")
        assert found.complete and set(found.images["image_id"]) == {i.image_id for i in images}
        assert server.count(AREA_TILES[1]) == 2  # the hung request and its retry; the late empty answer was not used


def test_a_thumbnail_dropped_mid_body_is_fetched_again_and_stored_whole(tmp_path: Path) -> None:
    images = grid_images(2)
    target = images[0].image_id
    with MapillaryServer(images) as server:
        whole = jpeg_bytes(target, server.thumb_size)  # what the CDN serves for it
        server.inject(thumb(target), Fault(200, whole, {"Content-Type": "image/jpeg"}, cut_at=len(whole) // 3))
        result = download_images(client_for(server), images_frame(images), root=tmp_path, city_slug="c")
        assert server.count(thumb(target)) == 2
    assert sorted(result.manifest["image_id"]) == sorted(i.image_id for i in images)
    stored = tmp_path / result.manifest.set_index("image_id").loc[target, "path"]
    assert stored.read_bytes() == whole
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".")]  # no partial file left
