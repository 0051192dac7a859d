"""Spatial reasoning paths (SRP) from street-level images to places, and their text."""

from ugdata_pipeline.reasoning.path_schema import MISSING_COLUMNS, SRP_COLUMNS, STEP_COLUMNS, PathConfig, PathResult
from ugdata_pipeline.reasoning.paths import build_paths
from ugdata_pipeline.reasoning.plot import distance_histogram_png, hop_histogram_png
from ugdata_pipeline.reasoning.validate import (
    every_image_has_path_or_reason,
    no_query_contains_target,
    paths_are_walks,
    paths_stay_with_their_image,
)

__all__ = [
    "MISSING_COLUMNS",
    "SRP_COLUMNS",
    "STEP_COLUMNS",
    "PathConfig",
    "PathResult",
    "build_paths",
    "distance_histogram_png",
    "every_image_has_path_or_reason",
    "hop_histogram_png",
    "no_query_contains_target",
    "paths_are_walks",
    "paths_stay_with_their_image",
]
