"""UGBench: geolocation ranking, image retrieval, urban perception and spatial grounding, scored by Hit@K and MRR.

Plain Python (no Dagster). Build tasks with :func:`build_tasks` from each city's anchored images, graph and
subgraph tables; score any set of embedding models with :func:`evaluate`; write a report with
:func:`write_report`. The CLI (``python -m ugdata_pipeline.ugbench.cli``) compares checkpoints on a saved benchmark.
Clustered, paired and multi-seed statistics (spatial clusters, paired model differences) live in :mod:`.stats`.
"""

from __future__ import annotations

from ugdata_pipeline.ugbench._records import (
    GROUNDING_TYPES,
    MODES,
    TASK_COLUMNS,
    TASK_MODES,
    TASKS,
    BenchConfig,
    BuildStats,
    CityInputs,
)
from ugdata_pipeline.ugbench.blind import BLIND_SCORERS, blind_scores, shortcut_problems
from ugdata_pipeline.ugbench.evaluate import RESULT_COLUMNS, Evaluation, compare, evaluate
from ugdata_pipeline.ugbench.metrics import (
    HIT_KS,
    METRICS,
    bootstrap_intervals,
    chance_levels,
    per_record_metrics,
    rank_counts,
)
from ugdata_pipeline.ugbench.models import EmbeddingCache, EmbeddingModel, UgeModel
from ugdata_pipeline.ugbench.perception import perception_measures
from ugdata_pipeline.ugbench.placepulse import load_place_pulse, place_pulse_levels, place_pulse_scores
from ugdata_pipeline.ugbench.report import results_metadata, results_table, write_report
from ugdata_pipeline.ugbench.stats import (
    PairedDifference,
    SeedPairedDifference,
    SeedSummary,
    cluster_bootstrap_intervals,
    paired_differences,
    paired_differences_over_seeds,
    seed_summary,
    spatial_clusters,
)
from ugdata_pipeline.ugbench.tasks import (
    build_tasks,
    export_jsonl,
    load_benchmark,
    save_benchmark,
    task_summary,
    validate_tasks,
)

__all__ = [
    "BLIND_SCORERS",
    "GROUNDING_TYPES",
    "HIT_KS",
    "METRICS",
    "MODES",
    "RESULT_COLUMNS",
    "TASKS",
    "TASK_COLUMNS",
    "TASK_MODES",
    "BenchConfig",
    "BuildStats",
    "CityInputs",
    "EmbeddingCache",
    "EmbeddingModel",
    "Evaluation",
    "PairedDifference",
    "SeedPairedDifference",
    "SeedSummary",
    "UgeModel",
    "blind_scores",
    "bootstrap_intervals",
    "build_tasks",
    "chance_levels",
    "cluster_bootstrap_intervals",
    "compare",
    "evaluate",
    "export_jsonl",
    "load_benchmark",
    "load_place_pulse",
    "paired_differences",
    "paired_differences_over_seeds",
    "per_record_metrics",
    "perception_measures",
    "place_pulse_levels",
    "place_pulse_scores",
    "rank_counts",
    "results_metadata",
    "results_table",
    "save_benchmark",
    "seed_summary",
    "shortcut_problems",
    "spatial_clusters",
    "task_summary",
    "validate_tasks",
    "write_report",
]
