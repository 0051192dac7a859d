"""Training and benchmark records built from UGData, and their exports (Parquet, ms-swift JSONL, graph JSON)."""

from ugdata_pipeline.context.graph_json import validate_graph_json
from ugdata_pipeline.dataset.export import (
    MS_SWIFT_PAIR_TYPES,
    MsSwiftExport,
    export_ms_swift,
    read_ms_swift,
    subgraph_json_from_tables,
)
from ugdata_pipeline.dataset.records import (
    INSTRUCTIONS,
    PAIR_TYPES,
    TRAINING_RECORD_COLUMNS,
    build_training_records,
    negatives_within_split,
    path_positive,
    query_leaks,
    records_summary,
)

__all__ = [
    "INSTRUCTIONS",
    "MS_SWIFT_PAIR_TYPES",
    "PAIR_TYPES",
    "TRAINING_RECORD_COLUMNS",
    "MsSwiftExport",
    "build_training_records",
    "export_ms_swift",
    "negatives_within_split",
    "path_positive",
    "query_leaks",
    "read_ms_swift",
    "records_summary",
    "subgraph_json_from_tables",
    "validate_graph_json",
]
