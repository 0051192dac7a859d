"""Deployment switches: the executor named by UGDATA_EXECUTOR, roots that cannot hold files, the instance template."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.config import dagster_instance_config

from ugdata_pipeline.definitions import LOCAL_EXECUTOR, defs, executor_for
from ugdata_pipeline.resources import StorageResource

PROJECT = Path(__file__).resolve().parent.parent


def test_executor_names() -> None:
    assert executor_for(None) is executor_for("multiprocess") is LOCAL_EXECUTOR
    with pytest.raises(ValueError, match=r"UGDATA_EXECUTOR='spark' is unknown; use multiprocess, k8s or celery"):
        executor_for("spark")


def test_in_process_execution_is_run_config_not_another_definition() -> None:
    """The UI and `make run` load one job definition; in-process execution is chosen per run."""
    from dagster._core.system_config.objects import ResolvedRunConfig

    with pytest.raises(ValueError, match=r"UGDATA_EXECUTOR=in_process is no longer a definitions switch .* unset it"):
        executor_for("in_process")
    job = defs.resolve_job_def("city_dataset_job")
    assert job.executor_def is LOCAL_EXECUTOR

    def engine(run_config: dict) -> dict:
        return ResolvedRunConfig.build(job, run_config).execution.execution_engine_config

    assert engine({})["multiprocess"]["max_concurrent"] == 2  # a 2-core laptop is not oversubscribed
    assert list(engine({"execution": {"config": {"in_process": {}}}})) == ["in_process"]


@pytest.mark.parametrize(("name", "package"), [("k8s", "dagster_k8s"), ("celery", "dagster_celery")])
def test_cluster_executors_name_their_missing_package(name: str, package: str, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without(module, *args, **kwargs):  # the cluster packages are not installed in every environment
        if module == package:
            raise ModuleNotFoundError(f"No module named {package!r}", name=package)
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(
        ValueError, match=rf"UGDATA_EXECUTOR={name} needs the package {package}; pip install -e '\.\[distributed\]'$"
    ):
        executor_for(name)


def test_an_object_store_root_refuses_files_and_says_what_to_do(tmp_path) -> None:
    with pytest.raises(
        ValueError,
        match=r"models/stage2 writes files .* needs a local data root, but UGDATA_ROOT is "
        r"'s3://bucket/ugdata'; set UGDATA_ROOT to a local or mounted folder",
    ):
        StorageResource(root="s3://bucket/ugdata").local_dir("models", "stage2")
    local = StorageResource(root=str(tmp_path)).local_dir("models", "stage2")
    assert local == tmp_path / "models" / "stage2" and local.is_dir()


def _instance_template() -> Path:
    """The file `make home` copies to $DAGSTER_HOME/dagster.yaml (the Makefile's INSTANCE_TEMPLATE)."""
    makefile = (PROJECT / "Makefile").read_text(encoding="utf-8")
    return PROJECT / re.search(r"^INSTANCE_TEMPLATE := (\S+)$", makefile, re.MULTILINE).group(1)


def test_no_instance_config_in_the_project_root() -> None:
    """`dagster dev` warns "Found a dagster instance configuration ... will not be used" about any such file."""
    assert [name for name in ("dagster.yaml", "dagster.yml") if (PROJECT / name).exists()] == []
    assert _instance_template() == PROJECT / "deploy" / "dagster-local.yaml"


def test_the_instance_template_validates_and_turns_off_telemetry_and_the_first_use_dialog(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(_instance_template(), home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config, custom_class = dagster_instance_config(str(home))  # Dagster's own schema check; raises on a bad key
    assert custom_class is None
    assert config["nux"] == {"enabled": False} and config["telemetry"] == {"enabled": False}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.nux_enabled is False  # the UI's shouldShowNux reads this
        assert instance.telemetry_enabled is False
        assert instance.run_monitoring_enabled is True
        assert instance.wait_for_local_code_server_processes_on_shutdown is True
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
