"""Deployment switches: the executor named by UGDATA_EXECUTOR, and roots that cannot hold files."""

from __future__ import annotations

import dagster as dg
import pytest

from ugdata_pipeline.definitions import executor_for
from ugdata_pipeline.resources import StorageResource


def test_executor_names() -> None:
    assert executor_for(None).name == executor_for("multiprocess").name == "multiprocess"
    assert executor_for("in_process") is dg.in_process_executor
    with pytest.raises(ValueError, match=r"UGDATA_EXECUTOR='spark' is unknown; use multiprocess, in_process, k8s"):
        executor_for("spark")


@pytest.mark.parametrize(("name", "package"), [("k8s", "dagster_k8s"), ("celery", "dagster_celery")])
def test_cluster_executors_name_their_missing_package(name: str, package: str, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without(module, *args, **kwargs):  # the cluster packages are not installed in every environment
        if module == package:
            raise ModuleNotFoundError(f"No module named {package!r}", name=package)
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(ValueError, match=f"UGDATA_EXECUTOR={name} needs the package {package}; pip install"):
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
