"""The Dagster shell: definitions load, jobs resolve, the core never imports dagster, and real runs launched as
`make run` launches them (through workspace.yaml) build the bundled cities, visible to the UI as runs of their jobs."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ugdata_pipeline.definitions import defs, resources_for
from ugdata_pipeline.table_files import read_table, table_path

PACKAGE = Path(__file__).resolve().parent.parent / "ugdata_pipeline"
CORE = ("osm", "graph", "imagery", "reasoning", "context", "dataset", "uge", "ugbench")


def test_definitions_load_and_jobs_resolve():
    repo = defs.get_repository_def()
    assert {"city_dataset_job", "city_graph_job", "city_refresh_job", "training_job", "benchmark_job"} <= {
        job.name for job in repo.get_all_jobs()
    }
    assert [s.name for s in repo.schedule_defs] == ["city_refresh"]
    assert {s.name for s in repo.sensor_defs} == {"retrain_after_refresh", "benchmark_after_training"}
    assert repo.get_job("training_job").tags["ugdata/pool"] == "gpu"
    selected = {
        job.name: {k.to_user_string() for k in job.asset_layer.selected_asset_keys} for job in repo.get_all_jobs()
    }
    assert selected["training_job"] == {
        "uge_baseline",
        "uge_stage1",
        "uge_stage2",
        "uge_stage2_shuffled_graphs",
        "uge_stage2_no_graph",
    }
    assert selected["benchmark_job"] == {"benchmark_results"}
    assert selected["city_graph_job"] == {"osm_streets", "osm_pois", "osm_aois", "osm_trees", "nodes", "edges"}
    # the per-city jobs hold every per-city asset and nothing trained on several cities
    assert selected["city_dataset_job"] == selected["city_refresh_job"]
    assert selected["city_graph_job"] < selected["city_dataset_job"]
    assert not selected["city_dataset_job"] & (selected["training_job"] | selected["benchmark_job"])
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {
        "osm_streets",
        "osm_pois",
        "osm_aois",
        "nodes",
        "edges",
        "images",
        "srp",
        "subgraph_nodes",
        "captions",
        "training_records",
        "benchmark_tasks",
        "uge_baseline",
        "uge_stage1",
        "uge_stage2",
        "uge_stage2_shuffled_graphs",
        "uge_stage2_no_graph",
        "benchmark_results",
    } <= keys
    checks = {key.name for key in repo.asset_graph.asset_check_keys}
    assert {
        "no_test_near_train",
        "no_sequence_spans_splits",
        "paths_are_walks",
        "no_query_contains_target",
        "subgraph_sizes",
        "both_sections",
        "grounded_places",
        "benchmark_records_valid",
        "no_blind_shortcut",
        "graph_matters",
    } <= checks
    partitions = repo.asset_graph.get(
        next(k for k in repo.asset_graph.get_all_asset_keys() if k.to_user_string() == "nodes")
    ).partitions_def
    assert partitions.get_partition_keys()[:2] == ["helsinki", "karhula"]


def test_every_deployment_has_the_same_resource_keys():
    keys = {name: set(resources_for(name)) for name in ("local", "ci", "online")}
    assert keys["local"] == keys["ci"] == keys["online"]
    assert resources_for("online")["osm"].allow_network is True
    assert resources_for("local")["osm"].allow_network is False
    assert type(resources_for("local")["images"]).__name__ == "RenderedImagesResource"
    assert type(resources_for("online")["images"]).__name__ == "MapillaryResource"
    assert type(resources_for("local")["captioner"]).__name__ == "TemplateCaptionerResource"
    assert type(resources_for("online")["captioner"]).__name__ == "OpenAICaptionerResource"
    with pytest.raises(ValueError, match="UGDATA_DEPLOYMENT='prod' is unknown; use one of local, ci, online"):
        resources_for("prod")


def _imported_modules(file: Path) -> list[str]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def _module_file(module: str) -> Path | None:
    path = PACKAGE.parent / Path(*module.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _top_level_names(file: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {n.id for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_names_are_imported_from_the_module_that_defines_them():
    """One home per idea: nothing is imported through a module that merely imports it (a leftover of a move).

    Package ``__init__`` files are the packages' public API, and ``_pyg`` wraps torch_geometric on purpose.
    """
    files = [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "ugdata_pipeline_tests").rglob("*.py")]
    files += list((PACKAGE.parent / "benchmarks").glob("*.py"))
    defined: dict[Path, set[str]] = {}
    offenders = []
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ugdata_pipeline")):
                continue
            source = _module_file(node.module)
            if source is None or source.name == "__init__.py" or node.module == "ugdata_pipeline._pyg":
                continue
            names = defined.setdefault(source, _top_level_names(source))
            for alias in node.names:
                if alias.name not in names and _module_file(f"{node.module}.{alias.name}") is None:
                    offenders.append(f"{file.relative_to(PACKAGE.parent)}:{node.lineno} {alias.name} via {node.module}")
    assert offenders == []


def test_core_packages_never_import_dagster():
    """The core packages, and every top-level module they import (errors, atomic_files, table_files, ...)."""
    files = [file for package in CORE for file in sorted((PACKAGE / package).rglob("*.py"))]
    shared = {
        name.split(".")[1]
        for file in files
        for name in _imported_modules(file)
        if name.startswith("ugdata_pipeline.") and name.split(".")[1] not in CORE
    }
    files += [PACKAGE / f"{module}.py" for module in sorted(shared) if (PACKAGE / f"{module}.py").exists()]
    assert {"errors.py", "atomic_files.py", "table_files.py"} <= {f.name for f in files}
    offenders = []
    for file in files:
        if any(n == "dagster" or n.startswith("dagster.") for n in _imported_modules(file)):
            offenders.append(str(file.relative_to(PACKAGE)))
    assert offenders == []


def test_public_exceptions_live_in_errors_py():
    """One home for the exceptions callers catch; module-private signals (leading underscore) may stay put."""
    offenders = []
    for file in PACKAGE.rglob("*.py"):
        if file == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            if any(base.endswith(("Error", "Exception")) for base in bases):
                offenders.append(f"{file.relative_to(PACKAGE)}: {node.name}")
    assert offenders == []


def test_check_outcome_is_imported_from_its_neutral_module():
    """CheckOutcome serves every stage: it lives in ugdata_pipeline.checks and is imported from there only."""
    imports = set()
    for file in [*PACKAGE.rglob("*.py"), *Path(__file__).resolve().parent.rglob("*.py")]:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and any(a.name == "CheckOutcome" for a in node.names):
                imports.add(node.module)
    assert imports == {"ugdata_pipeline.checks"}


def _launch(job: str, env: dict[str, str], *extra: str) -> str:
    """One run as `make run` starts it: through workspace.yaml's code location, executed in process."""
    result = subprocess.run(
        [sys.executable, "-m", "ugdata_pipeline.cli", "launch", job, "--in-process", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stderr + result.stdout
    assert result.returncode == 0 and "RUN_SUCCESS" in output, output[-4000:]
    return output


def _workspace_job_snapshot_ids(instance, jobs: tuple[str, ...]) -> dict[str, str]:
    """The snapshot ids of `jobs` in the code location workspace.yaml loads (what `make dev` shows)."""
    from dagster._cli.workspace.cli_target import get_workspace_from_cli_opts
    from dagster.version import __version__
    from dagster_shared.cli import WorkspaceOpts

    opts = WorkspaceOpts(workspace=[str(PACKAGE.parent / "workspace.yaml")])
    with get_workspace_from_cli_opts(instance, version=__version__, workspace_opts=opts) as context:
        [location] = context.code_location_names
        repo = next(iter(context.get_code_location(location).get_repositories().values()))
        return {job: repo.get_full_job(job).identifying_job_snapshot_id for job in jobs}


def _failed_checks(output: str) -> list[str]:
    """Names of asset checks Dagster reports as not passed ("Asset check 'x' on asset 'y' did not pass")."""
    return re.findall(r"Asset check '([\w]+)'[^\n]*did not pass", output)


@pytest.mark.slow
@pytest.mark.timeout(4 * 900)  # four job subprocesses of up to 900 s each: the default 600 s would cut it short
def test_sample_run_end_to_end_through_the_workspace(tmp_path, monkeypatch):
    """What `make run` does, on a reduced configuration: both bundled cities, three models, the benchmark."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PACKAGE.parent / "deploy" / "dagster-local.yaml").read_text())
    data = tmp_path / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "UGDATA_ROOT": str(data),
        "UGDATA_MAX_VIEWS": "150",
        "UGDATA_TRAIN_STEPS": "3",
        "OMP_NUM_THREADS": "2",
    }
    outputs = [_launch("city_dataset_job", env, "--partition", city) for city in ("helsinki", "karhula")]
    outputs.append(_launch("training_job", env))
    config = tmp_path / "bench.yaml"
    config.write_text("ops:\n  benchmark_results:\n    config: {bootstrap: 20, limit_per_group: 15}\n")
    outputs.append(_launch("benchmark_job", env, "-c", str(config)))
    failed = [name for output in outputs for name in _failed_checks(output)]
    # three optimizer steps cannot teach stage 2 to read its graph: that check must run, and may say so
    assert [name for name in failed if name != "graph_matters"] == [], failed
    assert "graph_matters" in outputs[-1]

    # the runs are the jobs' runs in the UI: labelled with their code location, carrying the job snapshot the
    # workspace loads under the same environment (the executor is run config, not part of the definitions)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [location] = {run.remote_job_origin.repository_origin.get_label() for run in instance.get_runs()}
        runs = instance.get_runs(dg.RunsFilter(job_name="city_dataset_job", tags={".dagster/repository": location}))
        assert sorted(run.tags["dagster/partition"] for run in runs) == ["helsinki", "karhula"]
        assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert location == "__repository__@ugdata_pipeline.definitions"
        jobs = ("city_dataset_job", "training_job", "benchmark_job")
        run_snapshots = {
            job: {run.job_snapshot_id for run in instance.get_runs(dg.RunsFilter(job_name=job))} for job in jobs
        }
        assert run_snapshots == {job: {id_} for job, id_ in _workspace_job_snapshot_ids(instance, jobs).items()}

    nodes = read_table(table_path(str(data), "nodes", "karhula"))
    assert set(nodes["kind"]) >= {"street", "crossing", "poi"}
    images = read_table(table_path(str(data), "images", "karhula"))
    assert set(images["split"]) == {"test"} and len(images) == 150 and (images["source"] == "render").all()
    assert (data / images["path"].iloc[0]).read_bytes()[:4] == b"\x89PNG"
    records = read_table(table_path(str(data), "training_records", "helsinki"))
    stages = set(zip(records["stage"], records["variant"], strict=True))
    assert {(1, "ugdata"), (2, "ugdata"), (1, "baseline")} <= stages
    tasks = read_table(table_path(str(data), "benchmark_tasks", "karhula"))
    assert set(tasks["city"]) == {"karhula"} and set(tasks["split"]) == {"held_out"}
    assert tasks["image_id"].isin(set(images["image_id"])).all()
    results = pd.read_parquet(data / "reports" / "ugbench" / "results.parquet")
    family = {"baseline", "stage1", "stage2", "stage2_shuffled_graphs", "stage2_no_graph"}
    assert set(results.loc[results["kind"] == "model", "model"]) == family
    assert set(results.loc[results["kind"] == "blind", "model"]) >= {"blind:longest", "blind:label_prior"}
    assert set(results["city"]) == {"helsinki", "karhula"}
    fusion_models = set(results.loc[(results["mode"] == "fusion") & (results["kind"] == "model"), "model"])
    assert fusion_models == family - {"baseline", "stage1"}
    for name in family:
        pointer = json.loads((data / "models" / name / "current.json").read_text())
        checkpoint = pointer["seeds"]["0"]["checkpoint"]
        assert not Path(checkpoint).is_absolute()  # relative to the data root: a moved root keeps its models
        assert (data / checkpoint / "model.safetensors").exists()
    assert (data / "reports" / "ugbench" / "comparisons.parquet").exists()
    summary = subprocess.run(
        [sys.executable, "-m", "ugdata_pipeline.cli", "summary", "--root", str(data)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "UGBench headline" in summary.stdout and "report.md" in summary.stdout
    assert "karhula" in summary.stdout and "held_out" in summary.stdout
