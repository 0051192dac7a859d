"""Jobs: what `make run`, CI and the UI launch. All are partitioned by city."""

from __future__ import annotations

import dagster as dg

#: Everything a city needs, from OSM to the last built stage; `make run` executes it for the bundled cities.
sample_job = dg.define_asset_job(
    "sample_job",
    selection=dg.AssetSelection.groups("osm", "graph"),
    description="Build every dataset stage of one city on the deployment's sources (offline twins locally).",
)

#: OSM extract and urban graph of one city.
city_graph_job = dg.define_asset_job(
    "city_graph_job",
    selection=dg.AssetSelection.groups("osm", "graph"),
    description="Acquire OSM data and build the urban graph of one city.",
)

ALL_JOBS = [sample_job, city_graph_job]
