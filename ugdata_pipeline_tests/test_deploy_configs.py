"""Every configuration file under deploy/ is loaded and validated, so none can rot unseen: Dagster instance files
through Dagster's own instance schema and each configured class's config schema (PostgreSQL storage, run launcher,
compute logs: their packages are installed, nothing connects), the Celery executor config through the executor's
schema, and the Helm values against the chart's documented structure and this project's code location.
A broken file fails with its path in the message."""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parent.parent
DEPLOY = PROJECT / "deploy"
#: any environment variable a file reads gets this value: it is a valid string and a valid integer
DUMMY_ENV_VALUE = "1"


class _InvalidDeployFileError(AssertionError):
    """A deploy file that does not validate; the message starts with the file's path."""


def _env_names(node: object) -> Iterator[str]:
    """The names of the environment variables a YAML tree reads (``{env: NAME}``)."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            yield node["env"]
        for value in node.values():
            yield from _env_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _env_names(value)


def _load(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise _InvalidDeployFileError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise _InvalidDeployFileError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def _set_env(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _env_names(_load(path)):
        monkeypatch.setenv(name, DUMMY_ENV_VALUE)


def validate_instance(path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Dagster's instance schema, then the config schema of every class the file names (storage included)."""
    from dagster._config import process_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    _set_env(path, monkeypatch)
    home.mkdir(exist_ok=True)
    shutil.copy(path, home / "dagster.yaml")
    try:
        config, _ = dagster_instance_config(str(home))
    except DagsterInvalidConfigError as error:
        raise _InvalidDeployFileError(f"{path}: {error}") from error
    classes = {
        section: (value["module"], value["class"], value.get("config") or {})
        for section, value in config.items()
        if isinstance(value, dict) and {"module", "class"} <= set(value)
    }
    storage = config.get("storage") or {}
    if "postgres" in storage:
        classes["storage"] = ("dagster_postgres", "DagsterPostgresStorage", storage["postgres"])
    elif "sqlite" in storage:
        classes["storage"] = ("dagster._core.storage.sqlite_storage", "DagsterSqliteStorage", storage["sqlite"])
    for section, (module, name, class_config) in classes.items():
        try:
            klass = class_from_code_pointer(module, name)
        except ImportError as error:
            msg = f"{path}: {section} names {module}.{name}, which does not import ({error}); pip install -e '.[dev]'"
            raise _InvalidDeployFileError(msg) from error
        result = process_config(klass.config_type(), class_config)
        if not result.success:
            messages = "; ".join(e.message for e in result.errors or [])
            raise _InvalidDeployFileError(f"{path}: {section} ({module}.{name}) config is invalid: {messages}")
    return config


def validate_executor(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The Celery executor's own schema, read as `dagster-celery worker start -y FILE` reads it."""
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster_celery.cli import get_validated_config

    data = _load(path)
    if set(data) != {"execution"} or set(data["execution"]) != {"config"}:
        raise _InvalidDeployFileError(
            f"{path}: expected only `execution: {{config: ...}}` (the run config the workers also read)"
        )
    _set_env(path, monkeypatch)
    try:
        return get_validated_config(str(path))
    except DagsterInvalidConfigError as error:
        raise _InvalidDeployFileError(f"{path}: {error}") from error


#: Top-level keys of the official Dagster Helm chart's values.yaml (chart 1.x) that a values file may set.
HELM_TOP_LEVEL = {
    "global",
    "nameOverride",
    "fullnameOverride",
    "rbacEnabled",
    "postgresqlSecretName",
    "dagsterWebserver",
    "computeLogManager",
    "pythonLogs",
    "dagster-user-deployments",
    "pipelineRun",
    "imagePullSecrets",
    "serviceAccount",
    "postgresql",
    "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret",
    "rabbitmq",
    "redis",
    "flower",
    "ingress",
    "runLauncher",
    "dagsterDaemon",
    "busybox",
    "migrate",
    "telemetry",
    "serviceMonitor",
    "extraManifests",
    "scheduler",
    "additionalInstanceConfig",
    "retention",
}
HELM_PULL_POLICIES = {"Always", "IfNotPresent", "Never"}
HELM_RUN_LAUNCHERS = {"K8sRunLauncher", "CeleryK8sRunLauncher", "CustomRunLauncher"}
HELM_RUN_COORDINATORS = {"QueuedRunCoordinator", "CustomRunCoordinator"}


def _project_module() -> str:
    """The code location module pyproject.toml names ([tool.dagster] module_name)."""
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["tool"]["dagster"]["module_name"]


def validate_helm_values(path: Path) -> dict:
    """The chart's required keys and types for what the file sets, and a user deployment serving this project."""
    values = _load(path)
    problems: list[str] = []
    unknown = sorted(set(values) - HELM_TOP_LEVEL)
    if unknown:
        problems.append(f"keys the Dagster chart does not have: {unknown}")
    user = values.get("dagster-user-deployments") or {}
    deployments = user.get("deployments") or []
    if user.get("enabled") is not True or not deployments:
        problems.append("dagster-user-deployments must be enabled with at least one deployment")
    for index, deployment in enumerate(deployments):
        where = f"dagster-user-deployments.deployments[{index}]"
        image = deployment.get("image") or {}
        if not isinstance(deployment.get("name"), str) or not isinstance(deployment.get("port"), int):
            problems.append(f"{where} needs a name (string) and a port (integer)")
        if not isinstance(image.get("repository"), str) or image.get("pullPolicy") not in HELM_PULL_POLICIES:
            problems.append(f"{where}.image needs a repository and a pullPolicy in {sorted(HELM_PULL_POLICIES)}")
        args = deployment.get("dagsterApiGrpcArgs") or deployment.get("codeServerArgs") or []
        module = _project_module()
        if [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--module-name", "-m")] != [module]:
            problems.append(
                f"{where} must serve the project's code location: dagsterApiGrpcArgs --module-name {module}"
            )
        for key in ("envConfigMaps", "envSecrets"):
            if not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in deployment.get(key) or []):
                problems.append(f"{where}.{key} entries must be {{name: ...}}")
    if (values.get("runLauncher") or {}).get("type") not in HELM_RUN_LAUNCHERS:
        problems.append(f"runLauncher.type must be one of {sorted(HELM_RUN_LAUNCHERS)}")
    postgresql = values.get("postgresql") or {}
    if postgresql.get("enabled") is False:
        missing = [k for k in ("postgresqlHost", "postgresqlDatabase", "postgresqlUsername") if not postgresql.get(k)]
        if missing:
            problems.append(f"postgresql.enabled is false, so an external database needs {missing}")
    if "postgresqlPassword" in postgresql:
        problems.append("postgresql.postgresqlPassword must come from a Kubernetes secret, never from this file")
    coordinator = (values.get("dagsterDaemon") or {}).get("runCoordinator") or {}
    if coordinator.get("enabled") and coordinator.get("type") not in HELM_RUN_COORDINATORS:
        problems.append(f"dagsterDaemon.runCoordinator.type must be one of {sorted(HELM_RUN_COORDINATORS)}")
    if problems:
        raise _InvalidDeployFileError(f"{path}: " + "; ".join(problems))
    return values


def _validator(path: Path) -> Callable[..., dict] | None:
    if re.fullmatch(r"dagster-[\w-]+\.yaml", path.name):
        return validate_instance
    if path.name == "celery-executor.yaml":
        return validate_executor
    if path.name == "values.yaml":
        return validate_helm_values
    return None


def _validate(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    validator = _validator(path)
    if validator is validate_instance:
        return validate_instance(path, tmp_path / "home", monkeypatch)
    if validator is validate_executor:
        return validate_executor(path, monkeypatch)
    if validator is validate_helm_values:
        return validate_helm_values(path)
    raise _InvalidDeployFileError(f"{path}: no test validates this file; add a validator in {Path(__file__).name}")


DEPLOY_FILES = sorted(p for p in DEPLOY.iterdir() if p.is_file() and p.name != "README.md")


def test_deploy_holds_the_files_this_test_knows() -> None:
    assert [p.name for p in DEPLOY_FILES] == [
        "celery-executor.yaml",
        "dagster-celery.yaml",
        "dagster-k8s.yaml",
        "dagster-local.yaml",
        "values.yaml",
    ]


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: p.name)
def test_every_deploy_file_validates(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _validator(path) is not None, f"{path}: no test validates this file"
    _validate(path, tmp_path, monkeypatch)


def test_the_instances_keep_secrets_in_the_environment(tmp_path, monkeypatch) -> None:
    for name in ("dagster-celery.yaml", "dagster-k8s.yaml"):
        config = validate_instance(DEPLOY / name, tmp_path / name, monkeypatch)
        database = config["storage"]["postgres"]["postgres_db"]
        assert database["password"] == {"env": "DAGSTER_PG_PASSWORD"} and database["scheme"] == "postgresql+psycopg2"
    executor = validate_executor(DEPLOY / "celery-executor.yaml", monkeypatch)
    assert executor["broker"] == executor["backend"] == DUMMY_ENV_VALUE  # both read from the environment


def test_the_helm_values_deploy_this_projects_code_location_with_the_k8s_instances_env() -> None:
    values = validate_helm_values(DEPLOY / "values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    launcher = _load(DEPLOY / "dagster-k8s.yaml")["run_launcher"]["config"]
    # the code server and the run pods it launches read the same config map and secret
    assert [e["name"] for e in deployment["envConfigMaps"]] == launcher["env_config_maps"]
    assert [e["name"] for e in deployment["envSecrets"]] == launcher["env_secrets"]


BROKEN = [
    ("dagster-celery.yaml", "run_coordinator:", "run_coordinatr:", r"run_coordinatr"),
    ("dagster-k8s.yaml", "job_namespace:", "job_namespac:", r"run_launcher \(dagster_k8s.K8sRunLauncher\) config"),
    ("dagster-celery.yaml", "      hostname:", "      host_name:", r'unexpected config entry "host_name"'),
    ("celery-executor.yaml", "    broker:", "    brokr:", r"brokr"),
    ("values.yaml", "pullPolicy: IfNotPresent", "pullPolicy: Sometimes", r"image needs a repository and a pullPolicy"),
    ("values.yaml", '"ugdata_pipeline.definitions"', '"other.definitions"', r"--module-name ugdata_pipeline"),
    ("values.yaml", "runLauncher:", "runLaunchr:", r"keys the Dagster chart does not have: \['runLaunchr'\]"),
]


@pytest.mark.parametrize(("name", "old", "new", "message"), BROKEN, ids=[f"{b[0]}:{b[2].strip()}" for b in BROKEN])
def test_a_broken_deploy_file_fails_with_its_path(name, old, new, message, tmp_path, monkeypatch) -> None:
    text = (DEPLOY / name).read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "deploy" / name
    broken.parent.mkdir()
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(_InvalidDeployFileError, match=rf"(?s)^{re.escape(str(broken))}: .*{message}"):
        _validate(broken, tmp_path, monkeypatch)


def test_a_file_without_a_validator_is_named(tmp_path, monkeypatch) -> None:
    stray = tmp_path / "deploy" / "kustomization.yaml"
    stray.parent.mkdir()
    stray.write_text("resources: []\n", encoding="utf-8")
    with pytest.raises(_InvalidDeployFileError, match=rf"^{re.escape(str(stray))}: no test validates this file"):
        _validate(stray, tmp_path, monkeypatch)
