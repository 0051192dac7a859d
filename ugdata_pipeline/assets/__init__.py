"""Dagster assets and asset checks: thin wrappers over the core, one module per stage."""

from ugdata_pipeline.assets.graph import urban_graph
from ugdata_pipeline.assets.osm import osm_extract

ALL_ASSETS = [osm_extract, urban_graph]
