"""A real distributed run: ``city_dataset_job`` for a small city on a Dagster instance stored in PostgreSQL
(deploy/dagster-celery.yaml as written), its steps executed by two Celery workers through a Redis broker
(deploy/celery-executor.yaml), launched as ``make run`` launches runs. Its tables, image files and every other file
equal those of an in-process run, and the run's events in PostgreSQL show that both workers ran steps."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import pytest

from ugdata_pipeline_tests.distributed.servers import celery_workers, postgres_server, redis_server
from ugdata_pipeline_tests.tiny_city import write_tiny_city

PROJECT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT / "deploy"
CITY = "tinytown"
#: the tiny 3 x 3 grid city: every dataset step has rows to write (52 images, 8 captioned) in ~15 s of steps
REGISTRY = (
    f"cities:\n  {CITY}: {{name: Tinytown, country: Finland, split: train, source: {{kind: file, path: tiny.osm}}}}\n"
)
WORKERS = ("worker1", "worker2")


def _base_env(tmp_path: Path) -> dict[str, str]:
    """This environment without any project or instance switch (make test exports some), plus the tiny city."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UGDATA_", "DAGSTER_"))}
    return {**env, "UGDATA_CITIES": str(tmp_path / "cities.yaml"), "OMP_NUM_THREADS": "1"}


def _launch(env: dict[str, str], *extra: str) -> str:
    """One run of the city's dataset job, created through workspace.yaml as `make run` does."""
    command = [sys.executable, "-m", "ugdata_pipeline.cli", "launch", "city_dataset_job", "--partition", CITY]
    result = subprocess.run(
        [*command, *extra], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=400, check=False
    )
    output = result.stderr + result.stdout
    assert result.returncode == 0 and "RUN_SUCCESS" in output, output[-6000:]
    return output


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_outputs(expected_root: Path, actual_root: Path) -> None:
    """Every Parquet file equal as a data frame, every other file (images, previews, exports) byte for byte."""
    expected, actual = _files(expected_root), _files(actual_root)
    assert sorted(actual) == sorted(expected)
    tables = [name for name in expected if name.endswith(".parquet")]
    pictures = [name for name in expected if name.endswith(".png")]
    # the whole job ran: a table per asset, and the city's 52 rendered views
    assert len(tables) >= 20 and len([n for n in pictures if n.startswith(f"{CITY}/images/")]) == 52
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(actual[name]), pd.read_parquet(expected[name]), obj=name)
    different = [
        name for name in expected if name not in tables and actual[name].read_bytes() != expected[name].read_bytes()
    ]
    assert different == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_city_dataset_job_on_postgres_and_two_celery_workers_equals_the_in_process_run(tmp_path, monkeypatch):
    write_tiny_city(tmp_path)
    (tmp_path / "cities.yaml").write_text(REGISTRY, encoding="utf-8")

    # the reference: the laptop instance, every step in the launching process
    local_home = tmp_path / "local-home"
    local_home.mkdir()
    shutil.copy(DEPLOY / "dagster-local.yaml", local_home / "dagster.yaml")
    local_env = {**_base_env(tmp_path), "DAGSTER_HOME": str(local_home), "UGDATA_ROOT": str(tmp_path / "local")}
    _launch(local_env, "--in-process")

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster-celery.yaml", home / "dagster.yaml")  # the deployment's instance, unchanged
    logs = tmp_path / "logs"
    logs.mkdir()
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    with postgres_server() as postgres, redis_server() as redis_url:
        env = {
            **_base_env(tmp_path),
            **postgres.env(),
            "DAGSTER_HOME": str(home),
            "UGDATA_ROOT": str(tmp_path / "distributed"),
            "UGDATA_EXECUTOR": "celery",
            "DAGSTER_CELERY_BROKER_URL": f"{redis_url}/0",
            "DAGSTER_CELERY_BACKEND_URL": f"{redis_url}/1",
        }
        executor_config = DEPLOY / "celery-executor.yaml"
        with celery_workers(WORKERS, executor_config=executor_config, env=env, cwd=PROJECT, logs=logs) as nodes:
            _launch(env, "-c", str(executor_config))

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # the whole deployment instance loads: PostgreSQL storage and the queued run coordinator
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            [run] = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == CITY
            events = [
                record.event_log_entry.dagster_event for record in instance.get_records_for_run(run.run_id).records
            ]
            events = [event for event in events if event is not None]

    # the servers and workers (with their pool processes) are gone
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in children_before]
    assert left == [], [" ".join(p.cmdline()) for p in left]

    # every step ran in a worker, both workers ran steps, and none ran in the process that launched the run
    [launcher_pid] = {e.pid for e in events if e.event_type == dg.DagsterEventType.RUN_START}
    started = {e.step_key: e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START}
    delegated = {
        e.step_key: e.engine_event_data.metadata["Celery worker"].value
        for e in events
        if e.event_type == dg.DagsterEventType.ENGINE_EVENT and "in celery worker" in (e.message or "")
    }
    assert len(started) == 13 and set(delegated) == set(started)
    assert set(delegated.values()) == set(nodes)
    assert len(set(started.values())) == 2 and launcher_pid not in set(started.values())
    assert {e.step_key for e in events if e.event_type == dg.DagsterEventType.STEP_SUCCESS} == set(started)

    _assert_same_outputs(tmp_path / "local", tmp_path / "distributed")
