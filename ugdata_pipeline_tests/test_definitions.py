"""The Dagster shell: definitions load, jobs resolve, the core never imports dagster, and a real
`dagster job execute` run builds a bundled city."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ugdata_pipeline.definitions import defs, resources_for
from ugdata_pipeline.io_managers import read_table, table_path

PACKAGE = Path(__file__).resolve().parent.parent / "ugdata_pipeline"
CORE = ("osm", "graph", "imagery", "reasoning", "context", "dataset", "uge", "ugbench")


def test_definitions_load_and_jobs_resolve():
    repo = defs.get_repository_def()
    assert {"sample_job", "city_graph_job"} <= {job.name for job in repo.get_all_jobs()}
    for job in repo.get_all_jobs():
        job.get_subset  # noqa: B018 - touching a resolved job proves it was built
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {"osm_streets", "osm_pois", "osm_aois", "nodes", "edges"} <= keys
    partitions = repo.asset_graph.get(next(k for k in repo.asset_graph.get_all_asset_keys()
                                           if k.to_user_string() == "nodes")).partitions_def  # fmt: skip
    assert partitions.get_partition_keys()[:2] == ["helsinki", "karhula"]


def test_every_deployment_has_the_same_resource_keys():
    keys = {name: set(resources_for(name)) for name in ("local", "ci", "online")}
    assert keys["local"] == keys["ci"] == keys["online"]
    assert resources_for("online")["osm"].allow_network is True
    assert resources_for("local")["osm"].allow_network is False
    with pytest.raises(ValueError, match="UGDATA_DEPLOYMENT='prod' is unknown; use one of local, ci, online"):
        resources_for("prod")


def test_core_packages_never_import_dagster():
    offenders = []
    for package in CORE:
        folder = PACKAGE / package
        for file in folder.rglob("*.py") if folder.exists() else []:
            tree = ast.parse(file.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n == "dagster" or n.startswith("dagster.") for n in names):
                    offenders.append(str(file.relative_to(PACKAGE)))
    assert offenders == []


@pytest.mark.slow
def test_dagster_job_execute_builds_karhula(tmp_path):
    """The same command `make run` uses, on a temporary instance and data root."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PACKAGE.parent / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "UGDATA_ROOT": str(tmp_path / "data")}
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "job", "execute", "-m", "ugdata_pipeline.definitions", "-j", "sample_job",
         "--tags", json.dumps({"dagster/partition": "karhula"})],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN_SUCCESS" in result.stderr + result.stdout
    nodes = read_table(table_path(str(tmp_path / "data"), "nodes", "karhula"))
    edges = read_table(table_path(str(tmp_path / "data"), "edges", "karhula"))
    assert set(nodes["kind"]) >= {"street", "crossing", "poi"}
    assert len(edges) > 200
    assert (tmp_path / "data" / "karhula" / "previews" / "graph_map.png").read_bytes()[:4] == b"\x89PNG"
    summary = subprocess.run([sys.executable, "-m", "ugdata_pipeline.cli", "summary", "--root", str(tmp_path / "data")],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert "karhula" in summary.stdout and "held_out" in summary.stdout
