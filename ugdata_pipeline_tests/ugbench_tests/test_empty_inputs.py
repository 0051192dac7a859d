"""A city whose imagery came back empty: the task builders give empty, well-typed results; missing columns fail clearly.

(Issue 13 reported ``KeyError: 'split'`` from the geolocation builder on an empty city.)
"""

from __future__ import annotations

import pytest

from ugdata_pipeline.context.describe import describe_subgraph
from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.ugbench import TASK_COLUMNS, BenchConfig, BuildStats, build_tasks
from ugdata_pipeline.ugbench.geolocation import build_location_records
from ugdata_pipeline_tests.ugbench_tests.bench_city import build_city
from ugdata_pipeline_tests.ugbench_tests.test_tasks import replace


@pytest.fixture(scope="module")
def empty_city():
    inputs = build_city("gridtown").inputs
    return replace(inputs, **{t: getattr(inputs, t).iloc[:0] for t in ("images", "subgraph_nodes", "subgraph_edges")})


def test_geolocation_on_a_city_without_images_gives_no_records(empty_city) -> None:
    stats = BuildStats()
    geo, ret = build_location_records(empty_city, describe=describe_subgraph, config=BenchConfig(), stats=stats)
    assert (geo, ret) == ([], [])
    assert stats.records == {"geolocation/geolocation/gridtown": 0, "retrieval/retrieval/gridtown": 0}


def test_all_tasks_on_a_city_without_images_give_an_empty_typed_table(empty_city) -> None:
    tasks, _ = build_tasks([empty_city], config=BenchConfig(), describe=describe_subgraph)
    assert tasks.empty and list(tasks.columns) == list(TASK_COLUMNS)


def test_an_images_table_without_split_names_the_column(empty_city) -> None:
    broken = replace(empty_city, images=empty_city.images.drop(columns="split"))
    with pytest.raises(
        BenchmarkInputError, match=r"CityInputs.images of 'gridtown' is missing column\(s\) \['split'\]"
    ):
        build_tasks([broken], config=BenchConfig(), describe=describe_subgraph)
