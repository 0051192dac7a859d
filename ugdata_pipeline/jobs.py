"""Jobs: what `make run`, CI, the schedule and the UI launch.

Per-city work is partitioned by city; training and the benchmark read every city they need and are not partitioned.
A Dagster run has one partition definition, so the end-to-end sample run is three jobs in order (see `make run`):
``city_dataset_job`` per city, then ``training_job``, then ``benchmark_job``.
"""

from __future__ import annotations

import dagster as dg

#: Groups built per city, in dependency order.
CITY_GROUPS = ("osm", "graph", "imagery", "reasoning", "context", "dataset", "benchmark_tasks")

#: Every dataset stage of one city, from OSM to training and benchmark records (partitioned by city).
city_dataset_job = dg.define_asset_job(
    "city_dataset_job",
    selection=dg.AssetSelection.groups(*CITY_GROUPS),
    description="Build every UGData stage of one city on the deployment's sources (offline twins locally).",
)

#: OSM extract and urban graph of one city.
city_graph_job = dg.define_asset_job(
    "city_graph_job",
    selection=dg.AssetSelection.groups("osm", "graph"),
    description="Acquire OSM data and build the urban graph of one city.",
)

#: What the weekly refresh re-runs for one city: new imagery and everything that depends on it.
city_refresh_job = dg.define_asset_job(
    "city_refresh_job",
    selection=dg.AssetSelection.groups(*CITY_GROUPS),
    description="Refresh a city's OSM data and imagery, then rebuild paths, subgraphs, captions and records.",
    tags={"ugdata/trigger": "refresh"},
)

#: Baseline, stage-1 and stage-2 UGE models on the training cities' records (GPU pool).
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("uge"),
    description="Train the baseline, stage-1 and stage-2 UGE models on the training cities.",
    tags={"ugdata/pool": "gpu"},
)

#: Embed every benchmark record with every model and write the UGBench report (GPU pool).
benchmark_job = dg.define_asset_job(
    "benchmark_job",
    selection=dg.AssetSelection.groups("ugbench"),
    description="Score baseline, stage 1 and stage 2 on UGBench for every built city and write the report.",
    tags={"ugdata/pool": "gpu"},
)

ALL_JOBS = [city_dataset_job, city_graph_job, city_refresh_job, training_job, benchmark_job]
