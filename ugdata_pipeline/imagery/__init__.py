"""Street-level imagery: anchoring images into the urban graph and spatially disjoint splits.

Plain Python on DataFrames; never imports Dagster.
"""

from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.imagery.anchor import AnchorResult, anchor_images, validate_images
from ugdata_pipeline.imagery.splits import (
    CELL_SIZE_M,
    EXCLUDED,
    assign_splits,
    cell_id,
    no_sequence_spans_splits,
    no_test_near_train,
)

__all__ = [
    "CELL_SIZE_M",
    "EXCLUDED",
    "AnchorResult",
    "ImageryInputError",
    "anchor_images",
    "assign_splits",
    "cell_id",
    "no_sequence_spans_splits",
    "no_test_near_train",
    "validate_images",
]
