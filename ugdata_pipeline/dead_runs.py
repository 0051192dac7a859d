"""Release what runs whose process died still hold: their concurrency-pool slots and their STARTED status.

A run killed with SIGKILL (an out-of-memory kill, a closed laptop, a CI timeout) never writes its failure event, so
the instance keeps it STARTED and keeps its ``gpu`` pool slot claimed. With a pool limit of 1, every later
training or benchmark step then waits forever ("Step blocked by limit for pool gpu"). The Dagster daemon's run
monitoring catches this for runs it launched (``dagster dev``, schedules, sensors), but ``dagster job execute``
runs no daemon -- so :func:`release_dead_runs` runs before every job ``make run`` starts, and is a CLI command
(``python -m ugdata_pipeline.cli release-dead-runs``) for anyone who executes jobs by hand.

A run is dead when no process that wrote one of its events is alive any more: every Dagster event records its
writer's pid, and a live pid counts only if that process started before the event was written (so a recycled pid
is not mistaken for the run). Only runs of a local instance (SQLite storage, this machine's processes) are judged; a
shared instance (PostgreSQL on a cluster) relies on the daemon's run monitoring, configured in ``deploy/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import psutil
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

# Statuses of a run whose process should be alive.
_LIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# Process start times are rounded by the OS; a writer that started this long after an event is another process.
_PID_CLOCK_SLACK_S = 2.0


@dataclass(frozen=True, slots=True)
class ReleasedRun:
    """A run that was found dead, marked failed and had its pool slots freed."""

    run_id: str
    job_name: str
    status: str
    pids: tuple[int, ...]
    freed_slots: bool


def _writer_alive(pid: int, written_at: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.is_running() and process.create_time() <= written_at + _PID_CLOCK_SLACK_S
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def run_writers(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """``pid -> time of its latest event`` over every process that wrote an event of the run."""
    writers: dict[int, float] = {}
    for entry in instance.all_logs(run_id):
        pid = entry.dagster_event.pid if entry.dagster_event is not None else None
        if pid is not None:
            writers[pid] = max(writers.get(pid, 0.0), entry.timestamp)
    return writers


def is_local_instance(instance: dg.DagsterInstance) -> bool:
    """True when runs and their events live on this machine (SQLite storage), so pids can be checked here."""
    return isinstance(instance.event_log_storage, SqliteEventLogStorage)


def release_dead_runs(
    instance: dg.DagsterInstance, *, ignore_run_ids: frozenset[str] = frozenset()
) -> list[ReleasedRun]:
    """
    Mark every STARTING / STARTED / CANCELING run whose processes are all gone as failed, and free its pool slots.

    Runs with no event yet are left alone (they may be about to start); so are runs of a non-local instance.

    Returns
    -------
    released
        The runs that were released, in the order found.
    """
    if not is_local_instance(instance):
        return []
    released = []
    for run in instance.get_runs(dg.RunsFilter(statuses=_LIVE_STATUSES)):
        if run.run_id in ignore_run_ids:
            continue
        writers = run_writers(instance, run.run_id)
        if not writers or any(_writer_alive(pid, at) for pid, at in writers.items()):
            continue
        message = (
            f"run {run.run_id} of {run.job_name} was {run.status.value} but none of its processes "
            f"(pids {sorted(writers)}) is alive: it was killed; marked failed and its pool slots freed so "
            "later runs are not blocked"
        )
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(
            ReleasedRun(
                run_id=run.run_id,
                job_name=run.job_name,
                status=run.status.value,
                pids=tuple(sorted(writers)),
                freed_slots=True,
            )
        )
    return released
