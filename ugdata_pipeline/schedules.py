"""Schedules and sensors: the weekly city refresh, and retraining once refreshed records land."""

from __future__ import annotations

import os

import dagster as dg

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.jobs import benchmark_job, city_refresh_job, training_job

#: Monday 03:00 UTC by default; UGDATA_REFRESH_CRON overrides it (e.g. "0 3 1 * *" monthly).
REFRESH_CRON = os.environ.get("UGDATA_REFRESH_CRON", "0 3 * * 1")


def refreshable_cities(*, online: bool) -> list[str]:
    """Cities the refresh covers: all of them online, only those with local sources offline."""
    registry = load_registry(os.environ.get("UGDATA_CITIES"))
    return registry.slugs() if online else registry.offline_slugs()


@dg.schedule(cron_schedule=REFRESH_CRON, job=city_refresh_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Weekly: re-acquire OSM data and imagery per city, rebuild what depends on them.")
def city_refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """One run per city; the run key makes a tick idempotent if the daemon evaluates it twice."""
    online = os.environ.get("UGDATA_DEPLOYMENT", "local") == "online"
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"{slug}-{tick}", partition_key=slug, tags={"ugdata/refresh": tick})
            for slug in refreshable_cities(online=online)]  # fmt: skip


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[city_refresh_job],
                      request_job=training_job, default_status=dg.DefaultSensorStatus.STOPPED,
                      description="After a refreshed training city succeeds, retrain the models.")  # fmt: skip
def retrain_after_refresh(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    """Retrain when a training city's refresh finished; held-out cities only need a new benchmark."""
    slug = context.dagster_run.tags.get("dagster/partition")
    registry = load_registry(os.environ.get("UGDATA_CITIES"))
    if slug is None or slug not in registry.slugs() or registry.get(slug).split != "train":
        return dg.SkipReason(f"refreshed city {slug!r} is not a training city")
    return dg.RunRequest(run_key=f"retrain-{context.dagster_run.run_id}")


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[training_job],
                      request_job=benchmark_job, default_status=dg.DefaultSensorStatus.STOPPED,
                      description="After training succeeds, benchmark the new models.")  # fmt: skip
def benchmark_after_training(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"benchmark-{context.dagster_run.run_id}")


ALL_SCHEDULES = [city_refresh]
ALL_SENSORS = [retrain_after_refresh, benchmark_after_training]
