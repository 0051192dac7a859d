"""Run a job through the project's workspace (``workspace.yaml``), as the UI does, and wait for it (``make run``).

``dagster job execute -m ugdata_pipeline.definitions`` runs a job without a code location: its run records no remote
job origin, so the UI's job pages ("No runs found"), the Overview timeline and run-status sensors never see it.
Runs the UI or the daemon launch are created from the code location the workspace loads, which records that origin
(location and repository name) and the job snapshot the UI shows. :func:`create_workspace_run` creates a run the
same way (the code ``dagster job launch -w workspace.yaml`` uses); :func:`execute_workspace_run` then executes it
in this process from the run's code origin, as the run worker of Dagster's default run launcher does (``dagster api
execute_run``). ``dagster job launch`` alone would only queue the run: the instance's queued run coordinator needs
the daemon, and ``make run`` needs no daemon and must wait for the run and fail when it fails.

In-process or multiprocess execution is run config (``execution: {config: {in_process: {}}}``), never a different
job definition, so the run carries the snapshot the UI loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
from dagster._cli.job import _create_run
from dagster._cli.workspace.cli_target import (
    get_code_location_from_workspace,
    get_remote_job_from_remote_repo,
    get_remote_repository_from_code_location,
    get_run_config_from_file_list,
    get_workspace_from_cli_opts,
)
from dagster._core.execution.api import execute_run
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_representation.external_data import partition_set_snap_name_for_job_name
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster._utils.interrupts import capture_interrupts
from dagster.version import __version__ as dagster_version
from dagster_shared.cli import WorkspaceOpts

from ugdata_pipeline.errors import LaunchError

WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
IN_PROCESS_RUN_CONFIG: Mapping[str, object] = {"execution": {"config": {"in_process": {}}}}


def run_config_for(config_files: Sequence[str | Path] = (), *, in_process: bool = False) -> dict[str, object]:
    """Run config from YAML files (merged as ``dagster job execute -c`` merges them), plus in-process execution."""
    for file in config_files:
        if not Path(file).is_file():
            msg = f"run config file {file} does not exist; pass an existing YAML file with -c/--config"
            raise LaunchError(msg)
    run_config = dict(get_run_config_from_file_list([str(f) for f in config_files]))
    if in_process:
        if "execution" in run_config:
            msg = (
                f"run config {', '.join(map(str, config_files))} already sets `execution`; drop --in-process or "
                "the file's `execution` section"
            )
            raise LaunchError(msg)
        run_config.update(IN_PROCESS_RUN_CONFIG)
    return run_config


def create_workspace_run(
    instance: dg.DagsterInstance,
    job_name: str,
    *,
    workspace: Path = WORKSPACE,
    partition: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, object] | None = None,
    location: str | None = None,
) -> dg.DagsterRun:
    """
    Create (not start) a run of ``job_name`` from the code location ``workspace`` loads, as the UI would.

    The run records its remote job origin and the job snapshot of that code location. An unknown job, location or
    partition, or run config the job refuses, fails here, before any run exists.
    """
    if not workspace.is_file():
        msg = f"workspace file {workspace} does not exist; run from the project root or pass --workspace"
        raise LaunchError(msg)
    opts = WorkspaceOpts(workspace=[str(workspace)])
    with get_workspace_from_cli_opts(instance, version=dagster_version, workspace_opts=opts) as context:
        code_location = get_code_location_from_workspace(context, location)
        repo = get_remote_repository_from_code_location(code_location, None)
        remote_job = get_remote_job_from_remote_repo(repo, job_name)
        run_tags = dict(tags or {})
        if partition is not None:
            run_tags[PARTITION_NAME_TAG] = _checked_partition(instance, repo, job_name, partition)
        return _create_run(
            instance=instance,
            code_location=code_location,
            remote_repo=repo,
            remote_job=remote_job,
            run_config=dict(run_config or {}),
            tags=run_tags,
            op_selection=None,
            run_id=None,
        )


def _checked_partition(instance: dg.DagsterInstance, repo, job_name: str, partition: str) -> str:
    name = partition_set_snap_name_for_job_name(job_name)
    if not repo.has_partition_set(name):
        msg = f"{job_name} is not partitioned; drop --partition {partition}"
        raise LaunchError(msg)
    keys = repo.get_partition_set(name).get_partition_names(instance)
    if partition not in keys:
        msg = f"{partition!r} is not a partition of {job_name}; use one of {', '.join(keys)} (cities.yaml)"
        raise LaunchError(msg)
    return partition


def execute_workspace_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Execute a run created by :func:`create_workspace_run` in this process; True when it succeeded."""
    origin = run.job_code_origin
    if not isinstance(origin, JobPythonOrigin):
        msg = f"run {run.run_id} has no code origin to execute from; create it with create_workspace_run"
        raise LaunchError(msg)
    # as `dagster job execute` and the run worker do: Ctrl-C interrupts the run where Dagster can record its failure
    with capture_interrupts():
        return execute_run(recon_job_from_origin(origin), run, instance).success
