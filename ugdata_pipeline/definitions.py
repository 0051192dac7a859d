"""The one place where assets, checks, jobs and resources meet.

Resources are chosen by ``UGDATA_DEPLOYMENT``: ``local`` (default, offline twins), ``ci`` (offline, like
local) or ``online`` (real services). Every deployment provides the same resource keys. Tables live under
``UGDATA_ROOT`` (default ``data/`` in the project; an ``s3://`` URL works too).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ugdata_pipeline.assets import ALL_ASSETS, linked_to_git
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.jobs import ALL_JOBS
from ugdata_pipeline.resources import (
    CityRegistryResource,
    MapillaryResource,
    OpenAICaptionerResource,
    OsmSourceResource,
    RenderedImagesResource,
    StorageResource,
    TemplateCaptionerResource,
    TrainerResource,
)
from ugdata_pipeline.schedules import ALL_SCHEDULES, ALL_SENSORS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = ("local", "ci", "online")


def data_root() -> str:
    """``UGDATA_ROOT`` or ``<project>/data``."""
    return os.environ.get("UGDATA_ROOT") or str(PROJECT_ROOT / "data")


def resources_for(deployment: str) -> dict[str, object]:
    """The resource dict of a deployment; every deployment has the same keys."""
    if deployment not in DEPLOYMENTS:
        msg = f"UGDATA_DEPLOYMENT={deployment!r} is unknown; use one of {', '.join(DEPLOYMENTS)}"
        raise ValueError(msg)
    root = data_root()
    online = deployment == "online"
    return {
        "table_io_manager": ParquetIOManager(
            root=root, allow_emptying=os.environ.get("UGDATA_ALLOW_EMPTYING", "") == "1"
        ),
        "storage": StorageResource(root=root),
        "cities": CityRegistryResource(path=os.environ.get("UGDATA_CITIES")),
        "osm": OsmSourceResource(
            allow_network=online, cache_dir=str(Path(root) / "_cache" / "osmnx") if online else None
        ),
        "images": (
            MapillaryResource()
            if online  # the token: MAPILLARY_ACCESS_TOKEN at run time
            else RenderedImagesResource(max_views=_int_env("UGDATA_MAX_VIEWS"))
        ),
        "captioner": (
            OpenAICaptionerResource(api_key=dg.EnvVar("OPENAI_API_KEY"), base_url=dg.EnvVar("OPENAI_BASE_URL"))
            if online
            else TemplateCaptionerResource()
        ),
        "trainer": TrainerResource(
            **{
                k: v
                for k, v in (
                    ("steps", _int_env("UGDATA_TRAIN_STEPS")),
                    ("seeds", os.environ.get("UGDATA_SEEDS")),
                    ("backbone", os.environ.get("UGDATA_BACKBONE")),
                    ("vlm_checkpoint", os.environ.get("UGDATA_VLM_CHECKPOINT")),
                    ("vlm_family", os.environ.get("UGDATA_VLM_FAMILY")),
                    ("vlm_trust_remote_code", os.environ.get("UGDATA_VLM_TRUST_REMOTE_CODE") == "1"),
                )
                if v
            }
        ),
    }


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        msg = f"{name}={value!r} must be an integer"
        raise ValueError(msg) from None


# The local executor: multiprocess (at most 2 step processes, so a 2-core laptop is not oversubscribed; pools
# throttle across runs only) or in-process, chosen per run by run config (`execution: {config: {in_process: {}}}`),
# so every run carries the job snapshot the UI loads.
LOCAL_EXECUTOR = dg.multi_or_in_process_executor.configured(
    lambda config: config,
    config_schema=dg.Field(
        dg.multi_or_in_process_executor.config_schema.as_field().config_type,
        default_value={"multiprocess": {"max_concurrent": 2}},
    ),
)


def executor_for(name: str | None) -> dg.ExecutorDefinition:
    """``UGDATA_EXECUTOR``: local (multiprocess or in-process by run config), ``k8s`` (pod per step), ``celery``."""
    if name in (None, "", "multiprocess"):
        return LOCAL_EXECUTOR
    if name == "in_process":
        msg = (
            "UGDATA_EXECUTOR=in_process is no longer a definitions switch (it gave the runs another job snapshot "
            "than the UI loads); unset it and choose in-process execution per run with the run config "
            "`execution: {config: {in_process: {}}}` (`python -m ugdata_pipeline.cli launch JOB --in-process`)"
        )
        raise ValueError(msg)
    try:
        if name == "k8s":
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
        if name == "celery":
            from dagster_celery import celery_executor

            return celery_executor
    except ImportError as error:
        msg = f"UGDATA_EXECUTOR={name} needs the package {error.name}; pip install -e '.[distributed]'"
        raise ValueError(msg) from error
    msg = f"UGDATA_EXECUTOR={name!r} is unknown; use multiprocess, k8s or celery"
    raise ValueError(msg)


DEPLOYMENT = os.environ.get("UGDATA_DEPLOYMENT", "local")

defs = dg.Definitions(
    assets=linked_to_git(ALL_ASSETS, os.environ.get("UGDATA_GIT_URL"), os.environ.get("UGDATA_GIT_BRANCH", "main")),
    jobs=ALL_JOBS,
    schedules=ALL_SCHEDULES,
    sensors=ALL_SENSORS,
    resources=resources_for(DEPLOYMENT),
    executor=executor_for(os.environ.get("UGDATA_EXECUTOR")),
)
