"""Dagster assets and asset checks: thin wrappers over the core, one module per stage."""

from ugdata_pipeline.assets.graph import urban_graph
from ugdata_pipeline.assets.imagery import image_anchoring, image_candidates, image_files, images
from ugdata_pipeline.assets.osm import osm_extract

ALL_ASSETS = [osm_extract, urban_graph, image_candidates, image_files, image_anchoring, images]
