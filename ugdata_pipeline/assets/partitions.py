"""City partitions, read from the registry when the definitions load (UGDATA_CITIES or cities.yaml)."""

from __future__ import annotations

import dagster as dg

from ugdata_pipeline.cities import load_registry

city_partitions = dg.StaticPartitionsDefinition(load_registry().slugs())
