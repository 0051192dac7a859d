"""Runs launched through a workspace: they record their code location, carry the job snapshot the workspace (and
so the UI) loads, run in process or not by run config, and bad input is refused before a run exists."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from ugdata_pipeline.cli import main
from ugdata_pipeline.errors import LaunchError
from ugdata_pipeline.launch import create_workspace_run, execute_workspace_run, run_config_for

DEFINITIONS = """
import os

import dagster as dg

letters = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=letters)
def letter(context) -> str:
    # the pid shows which process ran the step: the launcher's own with in-process execution
    context.add_output_metadata({"pid": os.getpid()})
    return context.partition_key


@dg.asset
def broken() -> None:
    raise RuntimeError("broken on purpose")


defs = dg.Definitions(
    assets=[letter, broken],
    jobs=[
        dg.define_asset_job("letter_job", selection=[letter]),
        dg.define_asset_job("broken_job", selection=[broken]),
    ],
    executor=dg.multi_or_in_process_executor,
)
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "tiny_defs.py").write_text(DEFINITIONS, encoding="utf-8")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        textwrap.dedent(
            """
            load_from:
              - python_file:
                  relative_path: tiny_defs.py
                  location_name: tiny
            """
        ),
        encoding="utf-8",
    )
    return workspace


@pytest.fixture
def instance(tmp_path: Path):
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield instance


def _workspace_snapshot_id(instance: dg.DagsterInstance, workspace: Path, job_name: str) -> str:
    """The job snapshot id a fresh load of the workspace (what `dagster dev` does) gives the job."""
    from dagster._cli.workspace.cli_target import get_workspace_from_cli_opts
    from dagster.version import __version__
    from dagster_shared.cli import WorkspaceOpts

    opts = WorkspaceOpts(workspace=[str(workspace)])
    with get_workspace_from_cli_opts(instance, version=__version__, workspace_opts=opts) as context:
        repo = next(iter(context.get_code_location("tiny").get_repositories().values()))
        return repo.get_full_job(job_name).identifying_job_snapshot_id


def test_a_workspace_run_records_its_code_location_and_the_workspace_job_snapshot(instance, workspace) -> None:
    run = create_workspace_run(
        instance, "letter_job", workspace=workspace, partition="b", run_config=run_config_for(in_process=True)
    )
    assert execute_workspace_run(instance, run) is True

    # what the job's Runs tab asks for: the job's runs labelled with its repository and code location
    [found] = instance.get_runs(
        dg.RunsFilter(job_name="letter_job", tags={".dagster/repository": "__repository__@tiny"})
    )
    assert found.run_id == run.run_id and found.status == dg.DagsterRunStatus.SUCCESS
    repository = found.remote_job_origin.repository_origin
    assert (repository.code_location_origin.location_name, repository.repository_name) == ("tiny", "__repository__")
    assert found.tags["dagster/partition"] == "b"
    assert found.job_snapshot_id == _workspace_snapshot_id(instance, workspace, "letter_job")
    materialization = instance.get_latest_materialization_event(dg.AssetKey("letter")).asset_materialization
    assert materialization.partition == "b"
    assert materialization.metadata["pid"].value == os.getpid()  # in process: this process ran it


def test_multiprocess_and_in_process_runs_carry_the_same_job_snapshot(instance, workspace) -> None:
    runs = [
        create_workspace_run(instance, "letter_job", workspace=workspace, partition="a", run_config=config)
        for config in (run_config_for(in_process=True), {})
    ]
    assert runs[0].job_snapshot_id == runs[1].job_snapshot_id
    assert runs[0].run_config == {"execution": {"config": {"in_process": {}}}} and runs[1].run_config == {}


def test_a_failed_workspace_run_is_recorded_as_failed_and_the_cli_exits_1(
    instance, workspace, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    assert main(["launch", "broken_job", "--workspace", str(workspace), "--in-process"]) == 1
    [run] = instance.get_runs(dg.RunsFilter(job_name="broken_job"))
    assert run.status == dg.DagsterRunStatus.FAILURE and run.remote_job_origin is not None
    assert f"run {run.run_id} of broken_job failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["letter_job", "--partition", "z"],
            "ugdata launch: 'z' is not a partition of letter_job; use one of a, b (cities.yaml)",
        ),
        (["broken_job", "--partition", "a"], "ugdata launch: broken_job is not partitioned; drop --partition a"),
        (["no_such_job"], 'ugdata launch: Job "no_such_job" not found in repository "__repository__"'),
        (
            ["letter_job", "-c", "missing.yaml"],
            "ugdata launch: run config file missing.yaml does not exist; pass an existing YAML file",
        ),
    ],
)
def test_bad_launch_input_is_refused_before_a_run_exists(
    instance, workspace, monkeypatch, capsys, args, message
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    assert main(["launch", *args, "--workspace", str(workspace)]) == 2
    assert message in capsys.readouterr().err
    assert instance.get_runs() == []


def test_in_process_and_an_execution_section_in_the_config_clash(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("execution:\n  config:\n    multiprocess: {}\n", encoding="utf-8")
    with pytest.raises(LaunchError, match=f"run config {config} already sets `execution`; drop --in-process"):
        run_config_for([config], in_process=True)
    assert run_config_for([config]) == {"execution": {"config": {"multiprocess": {}}}}


def test_a_missing_workspace_file_is_named(instance, tmp_path) -> None:
    with pytest.raises(LaunchError, match=f"workspace file {tmp_path / 'nope.yaml'} does not exist; run from"):
        create_workspace_run(instance, "letter_job", workspace=tmp_path / "nope.yaml")
