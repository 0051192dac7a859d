"""Shared fixtures: tiny cities built in code, and temporary registries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ugdata_pipeline.graph.build import UrbanGraph, build_urban_graph
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline_tests.tiny_city import tiny_city


@pytest.fixture
def tiny_extract() -> OsmExtract:
    return tiny_city()


@pytest.fixture
def tiny_graph(tiny_extract: OsmExtract) -> UrbanGraph:
    return build_urban_graph(tiny_extract, city_name="Tinytown", country="Finland")


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """An ephemeral instance, disposed after the test: one left to the GC removes its temporary folder with a
    ResourceWarning, which fails whichever later test happens to be running."""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def write_registry(tmp_path: Path):
    """Write a registry YAML from text and return its path."""

    def write(text: str, name: str = "cities.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests, saying why, where torch sees no CUDA device (they run wherever one is present)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch  # only when gpu tests were collected: most test runs never import torch here

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False on this machine")
    for item in gpu_items:
        item.add_marker(skip)
