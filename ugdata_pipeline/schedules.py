"""Schedules and sensors: the weekly city refresh, and retraining once refreshed records land."""

from __future__ import annotations

import os

import dagster as dg

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.jobs import benchmark_job, city_refresh_job, training_job

#: Monday 03:00 UTC by default; UGDATA_REFRESH_CRON overrides it (e.g. "0 3 1 * *" monthly).
REFRESH_CRON = os.environ.get("UGDATA_REFRESH_CRON", "0 3 * * 1")
#: Tag of every run one refresh tick starts: the tick's date.
REFRESH_TAG = "ugdata/refresh"


def refreshable_cities(*, online: bool) -> list[str]:
    """Cities the refresh covers: all of them online, only those with local sources offline."""
    registry = load_registry(os.environ.get("UGDATA_CITIES"))
    return registry.slugs() if online else registry.offline_slugs()


@dg.schedule(
    cron_schedule=REFRESH_CRON,
    job=city_refresh_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly: re-acquire OSM data and imagery per city, rebuild what depends on them.",
)
def city_refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """One run per city; the run key makes a tick idempotent if the daemon evaluates it twice."""
    online = os.environ.get("UGDATA_DEPLOYMENT", "local") == "online"
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [
        dg.RunRequest(run_key=f"{slug}-{tick}", partition_key=slug, tags={REFRESH_TAG: tick})
        for slug in refreshable_cities(online=online)
    ]


def _latest_refresh_by_city(instance: dg.DagsterInstance, tick: str) -> dict[str, dg.DagsterRun]:
    """The newest ``city_refresh_job`` run of each city for one refresh tick (a re-execution replaces a failure)."""
    runs = instance.get_runs(dg.RunsFilter(job_name=city_refresh_job.name, tags={REFRESH_TAG: tick}))
    latest: dict[str, dg.DagsterRun] = {}
    for run in runs:  # newest first
        slug = run.tags.get("dagster/partition")
        if slug is not None and slug not in latest:
            latest[slug] = run
    return latest


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[city_refresh_job],
    request_job=training_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="After every refreshed training city of a tick succeeded, retrain the models once.",
)
def retrain_after_refresh(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    """
    Retrain once per refresh, when the last training city of the tick has succeeded.

    The weekly schedule starts one run per city; retraining after each training city's run would start as many full
    retrains (and benchmarks) as there are training cities, all but the last on half-refreshed data. A tick with a
    failed training city does not retrain: its re-execution (which keeps the tick's tags) triggers it instead. A
    refresh started by hand (no tick tag) retrains after that one run. Held-out cities only need a new benchmark.
    """
    slug = context.dagster_run.tags.get("dagster/partition")
    registry = load_registry(os.environ.get("UGDATA_CITIES"))
    if slug is None or slug not in registry.slugs() or registry.get(slug).split != "train":
        return dg.SkipReason(f"refreshed city {slug!r} is not a training city")
    tick = context.dagster_run.tags.get(REFRESH_TAG)
    if tick is None:
        return dg.RunRequest(run_key=f"retrain-{context.dagster_run.run_id}")
    latest = _latest_refresh_by_city(context.instance, tick)
    training = {s: run for s, run in latest.items() if s in registry.slugs() and registry.get(s).split == "train"}
    pending = sorted(s for s, run in training.items() if run.status != dg.DagsterRunStatus.SUCCESS)
    if pending:
        states = ", ".join(f"{s} ({training[s].status.value})" for s in pending)
        return dg.SkipReason(f"refresh {tick}: waiting for the training cities {states} before retraining once")
    return dg.RunRequest(run_key=f"retrain-{tick}", tags={REFRESH_TAG: tick})


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[training_job],
    request_job=benchmark_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="After training succeeds, benchmark the new models.",
)
def benchmark_after_training(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"benchmark-{context.dagster_run.run_id}")


ALL_SCHEDULES = [city_refresh]
ALL_SENSORS = [retrain_after_refresh, benchmark_after_training]
