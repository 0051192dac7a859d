"""The refresh schedule and its sensors, evaluated the way the daemon evaluates them (runs in an instance)."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.storage.dagster_run import DagsterRun

from ugdata_pipeline.schedules import REFRESH_TAG, benchmark_after_training, retrain_after_refresh

REGISTRY = """
cities:
  helsinki: {name: Helsinki, country: Finland, split: train, source: {kind: bundled, extract: Helsinki.osm.pbf}}
  turku: {name: Turku, country: Finland, split: train, source: {kind: bbox, bbox: [22.2, 60.4, 22.3, 60.5]}}
  karhula: {name: Karhula, country: Finland, split: held_out, source: {kind: bundled, extract: test.osm.pbf}}
"""


@pytest.fixture
def instance(write_registry, monkeypatch):
    monkeypatch.setenv("UGDATA_CITIES", str(write_registry(REGISTRY)))
    with dg.instance_for_test() as instance:
        yield instance


def _refresh_run(instance, city: str, status: dg.DagsterRunStatus, tick: str | None = "2026-11-30") -> DagsterRun:
    tags = {"dagster/partition": city, **({REFRESH_TAG: tick} if tick else {})}
    run = DagsterRun(job_name="city_refresh_job", run_id=str(uuid.uuid4()), status=status, tags=tags)
    return instance.add_run(run)


def _after_success(instance, run: DagsterRun):
    event = DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name)
    context = dg.build_run_status_sensor_context(
        sensor_name="retrain_after_refresh", dagster_event=event, dagster_instance=instance, dagster_run=run
    )
    return retrain_after_refresh(context)


def test_one_refresh_of_several_training_cities_retrains_once(instance) -> None:
    helsinki = _refresh_run(instance, "helsinki", dg.DagsterRunStatus.SUCCESS)
    turku = _refresh_run(instance, "turku", dg.DagsterRunStatus.STARTED)
    karhula = _refresh_run(instance, "karhula", dg.DagsterRunStatus.SUCCESS)

    waiting = _after_success(instance, helsinki)
    assert isinstance(waiting, dg.SkipReason)
    assert waiting.skip_message == (
        "refresh 2026-11-30: waiting for the training cities turku (STARTED) before retraining once"
    )
    assert _after_success(instance, karhula).skip_message == "refreshed city 'karhula' is not a training city"

    instance.handle_run_event(
        turku.run_id, DagsterEvent(event_type_value=DagsterEventType.RUN_FAILURE.value, job_name=turku.job_name)
    )
    assert "turku (FAILURE)" in _after_success(instance, helsinki).skip_message
    # the failed city's re-execution keeps the tick's tag; its success retrains, once for the whole tick
    rerun = _refresh_run(instance, "turku", dg.DagsterRunStatus.SUCCESS)
    requests = [_after_success(instance, run) for run in (rerun, helsinki)]
    assert all(isinstance(r, dg.RunRequest) for r in requests)
    assert {r.run_key for r in requests} == {"retrain-2026-11-30"}  # one run key: the daemon starts one run
    assert requests[0].tags == {REFRESH_TAG: "2026-11-30"}


def test_a_refresh_by_hand_retrains_after_its_own_run(instance) -> None:
    manual = _refresh_run(instance, "helsinki", dg.DagsterRunStatus.SUCCESS, tick=None)
    request = _after_success(instance, manual)
    assert request.run_key == f"retrain-{manual.run_id}"


def test_the_benchmark_follows_each_training_run_once(instance) -> None:
    run = instance.add_run(
        DagsterRun(job_name="training_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.SUCCESS)
    )
    event = DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name)
    context = dg.build_run_status_sensor_context(
        sensor_name="benchmark_after_training", dagster_event=event, dagster_instance=instance, dagster_run=run
    )
    assert benchmark_after_training(context).run_key == f"benchmark-{run.run_id}"
