"""Dagster assets and asset checks: thin wrappers over the core, one module per stage."""

from ugdata_pipeline.assets.context import spatial_subgraphs, subgraph_descriptions
from ugdata_pipeline.assets.dataset import captions, ms_swift_export, training_records
from ugdata_pipeline.assets.graph import urban_graph
from ugdata_pipeline.assets.imagery import image_anchoring, image_candidates, image_files, images
from ugdata_pipeline.assets.osm import osm_extract
from ugdata_pipeline.assets.reasoning import spatial_reasoning_paths
from ugdata_pipeline.assets.ugbench import benchmark_results, benchmark_tasks
from ugdata_pipeline.assets.uge import ALL_UGE_ASSETS

ALL_ASSETS = [
    osm_extract,
    urban_graph,
    image_candidates,
    image_files,
    image_anchoring,
    images,
    spatial_reasoning_paths,
    spatial_subgraphs,
    subgraph_descriptions,
    captions,
    training_records,
    ms_swift_export,
    benchmark_tasks,
    *ALL_UGE_ASSETS,
    benchmark_results,
]
