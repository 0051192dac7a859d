"""The one place where assets, checks, jobs and resources meet.

Resources are chosen by ``UGDATA_DEPLOYMENT``: ``local`` (default, offline twins), ``ci`` (offline, like
local) or ``online`` (real services). Every deployment provides the same resource keys. Tables live under
``UGDATA_ROOT`` (default ``data/`` in the project; an ``s3://`` URL works too).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ugdata_pipeline.assets import ALL_ASSETS
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.jobs import ALL_JOBS
from ugdata_pipeline.resources import CityRegistryResource, OsmSourceResource, StorageResource

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
        "table_io_manager": ParquetIOManager(root=root),
        "storage": StorageResource(root=root),
        "cities": CityRegistryResource(path=os.environ.get("UGDATA_CITIES")),
        "osm": OsmSourceResource(allow_network=online,
                                 cache_dir=str(Path(root) / "_cache" / "osmnx") if online else None),  # fmt: skip
    }


DEPLOYMENT = os.environ.get("UGDATA_DEPLOYMENT", "local")

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=ALL_JOBS,
    resources=resources_for(DEPLOYMENT),
    # Pools throttle across runs only; inside a run, cap processes so a 2-core laptop is not oversubscribed.
    executor=dg.multiprocess_executor.configured({"max_concurrent": 2}),
)
