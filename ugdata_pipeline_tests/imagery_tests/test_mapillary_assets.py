"""The Mapillary source inside Dagster: short results fail the step and keep the last tables; run config and token.

The imagery assets are materialized in process for a tiny city (``tiny_city``, registered as ``karhula``) against
the loopback Mapillary server; an outage is a port where nothing listens.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ugdata_pipeline.assets.imagery import image_candidates, image_files
from ugdata_pipeline.assets.osm import osm_extract
from ugdata_pipeline.imagery.mapillary_discovery import FAILED_CELLS_FILENAME
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.resources import CityRegistryResource, MapillaryResource, OsmSourceResource, StorageResource
from ugdata_pipeline.table_files import read_table, table_path
from ugdata_pipeline_tests.imagery_tests.mapillary_server import TILE_PREFIX, FakeImage, Fault, MapillaryServer
from ugdata_pipeline_tests.tiny_city import tiny_city, write_tiny_city

TOKEN = "MLY|1234|test-secret"
CITY = "karhula"  # a shipped slug (a partition key); the registry points it at the tiny city


def street_images() -> list[FakeImage]:
    """One image at the middle of each street of the tiny city, in different sequences."""
    # The streets are in EPSG:4326 and ~100 m long: the middle in degrees is the middle on the ground.
    points = [line.interpolate(0.5, normalized=True) for line in tiny_city().streets.geometry]
    return [FakeImage(f"img{i:03d}", p.x, p.y, sequence=f"seq{i}") for i, p in enumerate(points)]


def dead_url() -> str:
    with socket.socket() as probe:  # nothing listens here: every request is refused at once
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def city_root(tmp_path: Path, write_registry) -> tuple[Path, Path]:
    write_tiny_city(tmp_path)
    registry = write_registry(
        f"cities:\n  {CITY}:\n    name: Tiny\n    country: Finland\n    split: train\n"
        "    source: {kind: file, path: tiny.osm}\n",
        name="reg.yaml",
    )
    return tmp_path / "data", registry


def materialize(
    root: Path,
    registry: Path,
    images: MapillaryResource,
    instance: dg.DagsterInstance,
    *,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [osm_extract, image_candidates, image_files],
        partition_key=CITY,
        instance=instance,
        raise_on_error=False,
        run_config=run_config,
        resources={
            "table_io_manager": ParquetIOManager(root=str(root)),
            "storage": StorageResource(root=str(root)),
            "cities": CityRegistryResource(path=str(registry)),
            "osm": OsmSourceResource(),
            "images": images,
        },
    )


def resource(url: str, **options) -> MapillaryResource:
    return MapillaryResource(
        graph_url=url,
        tiles_url=f"{url}{TILE_PREFIX}",
        concurrency=2,
        requests_per_second=1000.0,
        **options,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.event_specific_data.error.message + "".join(
        cause.message for cause in [failure.event_specific_data.error.cause] if cause is not None
    )


def logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    return [(logging.getLevelName(entry.level), entry.user_message) for entry in instance.all_logs(result.run_id)]


def test_an_outage_fails_the_step_and_keeps_the_last_tables_then_a_retry_redoes_only_the_failures(
    city_root: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, dagster_instance: dg.DagsterInstance
) -> None:
    root, registry = city_root
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", TOKEN)
    instance = dagster_instance
    images = street_images()
    with MapillaryServer(images) as server:
        good = materialize(root, registry, resource(server.url), instance)
        assert good.success
        stored = read_table(table_path(str(root), "image_candidates", CITY))
        files = read_table(table_path(str(root), "image_files", CITY))
        assert len(stored) == len(images) and len(files) == len(images)

        # A refresh (cached tiles expired) while Mapillary is down.
        down = materialize(root, registry, resource(dead_url(), cache_max_age_days=0.0), instance)
        assert not down.success
        message = failure_message(down)
        assert "IncompleteResultError" in message
        assert f"Mapillary discovery for {CITY} is incomplete: 1 of 1 coverage tiles failed" in message
        assert "ConnectError" in message
        assert f"re-materialize image_candidates for {CITY}" in message
        pd.testing.assert_frame_equal(read_table(table_path(str(root), "image_candidates", CITY)), stored)
        pd.testing.assert_frame_equal(read_table(table_path(str(root), "image_files", CITY)), files)
        warnings = [text for level, text in logs(instance, down) if "WARNING" in level]
        assert any(
            f"mapillary discovery of {CITY}: 1 failed; by reason: 1 x discover: ConnectError" in text
            for text in warnings
        ), warnings
        cache = root / CITY / "_work" / "mapillary_tiles"
        [failed_tile] = json.loads((cache / FAILED_CELLS_FILENAME).read_text())
        assert failed_tile["stage"] == "discover" and failed_tile["image_id"].startswith("tile:14/")
        assert TOKEN not in message and all(TOKEN not in text for _, text in logs(instance, down))

        server.clear_log()
        retried = materialize(root, registry, resource(server.url, cache_max_age_days=0.0), instance)
        assert retried.success
        assert len(server.tile_requests()) == 1, "the failed (and only) tile is asked again"
        assert not [r for r in server.log if r.path.startswith("/img")], "the kept images' details are cached"
        assert not [r for r in server.log if r.path.startswith("/thumbs/")], "finished downloads are reused"
        assert json.loads((cache / FAILED_CELLS_FILENAME).read_text()) == []


def test_a_complete_discovery_without_images_fails_with_the_filters_to_check(
    city_root: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, dagster_instance: dg.DagsterInstance
) -> None:
    root, registry = city_root
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", TOKEN)
    with MapillaryServer(street_images()) as server:  # every image was captured in 2020
        result = materialize(root, registry, resource(server.url, start_date="2024-01-01"), dagster_instance)
    assert not result.success
    message = failure_message(result)
    assert f"Mapillary has no imagery for {CITY} in lon " in message
    assert "capture dates [2024-01-01, open), panoramas dropped" in message
    assert f"{len(street_images())} outside the capture dates" in message
    assert "Check start_date / end_date / include_panos" in message
    assert not table_path(str(root), "image_candidates", CITY).exists()


def test_a_download_over_the_failure_threshold_fails_and_under_it_warns(
    city_root: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, dagster_instance: dg.DagsterInstance
) -> None:
    root, registry = city_root
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", TOKEN)
    instance = dagster_instance
    images = street_images()
    broken = images[0].image_id
    with MapillaryServer(images) as server:
        server.inject(f"/thumbs/{broken}.jpg", *[Fault(500, {"error": {"message": "boom"}})] * 5)
        strict = materialize(root, registry, resource(server.url, max_failed_share=0.0), instance)
        assert not strict.success
        message = failure_message(strict)
        assert (
            f"Mapillary download for {CITY} is incomplete: 1 of {len(images)} images failed "
            f"({100 / len(images):.1f} % > max_failed_share 0.0 %; 1 x download: HTTP 500 boom)"
        ) in message
        assert f"re-materialize image_files for {CITY}" in message
        assert not table_path(str(root), "image_files", CITY).exists()

        server.inject(f"/thumbs/{broken}.jpg", *[Fault(500, {"error": {"message": "boom"}})] * 5)
        lenient = materialize(root, registry, resource(server.url, max_failed_share=0.5), instance)
    assert lenient.success
    stored = read_table(table_path(str(root), "image_files", CITY))
    assert sorted(stored["image_id"]) == sorted(i.image_id for i in images[1:])
    [event] = [e for e in lenient.get_asset_materialization_events() if e.asset_key.path == ["image_files"]]
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["failed"].value == 1
    assert metadata["failures_by_reason"].value == {"download: HTTP 500 boom": 1}
    warnings = [text for level, text in logs(instance, lenient) if "WARNING" in level]
    assert any(f"mapillary images of {CITY}: 1 failed" in t and broken in t for t in warnings), warnings


def test_run_config_overrides_a_setting_and_the_token_still_comes_from_the_environment(
    city_root: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, dagster_instance: dg.DagsterInstance
) -> None:
    from ugdata_pipeline.definitions import resources_for

    root, registry = city_root
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", TOKEN)
    deployed = resources_for("online")["images"]
    assert isinstance(deployed, MapillaryResource) and deployed.access_token is None
    # Two images in one ~35 m H3 cell: max_per_cell 1 (run config) keeps one, the default 2 keeps both.
    base = street_images()[0]
    images = [base, FakeImage("a2", base.lon + 0.00001, base.lat, sequence="seqx")]
    instance = dagster_instance
    run_config = {"resources": {"images": {"config": {"max_per_cell": 1, "graph_url": "", "concurrency": 2}}}}
    with MapillaryServer(images) as server:
        run_config["resources"]["images"]["config"]["graph_url"] = server.url
        run_config["resources"]["images"]["config"]["tiles_url"] = server.tiles_url
        result = materialize(root, registry, MapillaryResource(), instance, run_config=run_config)
        assert result.success, failure_message(result) if not result.success else ""
        assert {r.query["access_token"] for r in server.tile_requests()} == {TOKEN}
        graph = [r for r in server.log if not r.path.startswith(("/maps/", "/thumbs/"))]
        assert {r.authorization for r in graph} == {f"OAuth {TOKEN}"}
        # Details are asked only for the image kept by thinning (then its thumbnail URL is resolved).
        kept = read_table(table_path(str(root), "image_candidates", CITY))["image_id"].tolist()
        assert len(kept) == 1
        assert [r.path for r in graph if "creator" in r.query.get("fields", "")] == [f"/{kept[0]}"]
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["image_candidates"]]
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["dagster/row_count"].value == 1 and metadata["thin_dropped_cell_full"].value == 1
    run = instance.get_run_by_id(result.run_id)
    metadata_values = [
        str(value.value)
        for event in result.get_asset_materialization_events()
        for value in event.event_specific_data.materialization.metadata.values()
    ]
    everything = json.dumps(run.run_config) + "".join(metadata_values)
    everything += "".join(text for _, text in logs(instance, result))
    assert TOKEN not in everything and "test-secret" not in everything


def test_without_the_environment_variable_the_resource_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from ugdata_pipeline.errors import MapillaryAuthError

    monkeypatch.delenv("MAPILLARY_ACCESS_TOKEN", raising=False)
    with pytest.raises(MapillaryAuthError, match="MAPILLARY_ACCESS_TOKEN is not set"):
        MapillaryResource()._client()
