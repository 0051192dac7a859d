"""City partitions, read from the registry when the definitions load (UGDATA_CITIES or cities.yaml)."""

from __future__ import annotations

import warnings

import dagster as dg

from ugdata_pipeline.cities import load_registry

city_partitions = dg.StaticPartitionsDefinition(load_registry().slugs())


def city_check(name: str, *, asset: str, blocking: bool, description: str) -> dg.AssetCheckSpec:
    """
    A check on a city-partitioned asset, partitioned by city too: each city's result is recorded under its partition
    and stands on its own (an unpartitioned spec records partition "—" and the last city overwrites the others).
    """
    # Partitioned checks are a Dagster "preview" feature (1.13); the project relies on it knowingly (the test of
    # per-city results guards it on upgrade), so its warning is not repeated for every spec at every load.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, blocking=blocking, description=description, partitions_def=city_partitions
        )
