"""What a user reads in the UI, read the way the UI reads it: Dagster's GraphQL API, over the project's code location,
on an instance that materialized a city's graph tables (a partitioned table asset) and ``benchmark_results``.

The types are what matters: a row count and a column schema on the table, previews as tables, figures as floats
(plottable), and pictures as files linked by path with only a small thumbnail in the event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql
from PIL import Image

from ugdata_pipeline.assets import ALL_ASSETS
from ugdata_pipeline.io_managers import ParquetIOManager
from ugdata_pipeline.resources import CityRegistryResource, OsmSourceResource, StorageResource, TrainerResource
from ugdata_pipeline.table_files import read_table, table_path
from ugdata_pipeline.ugbench import BenchConfig, build_tasks
from ugdata_pipeline.uge.runs import _write_pointer
from ugdata_pipeline_tests.tiny_city import write_tiny_city
from ugdata_pipeline_tests.ugbench_tests.bench_city import build_city

DEFINITIONS = Path(__file__).resolve().parents[2] / "ugdata_pipeline" / "definitions.py"
ASSETS = {key.to_user_string(): asset for asset in ALL_ASSETS for key in asset.keys}
#: a shipped slug (a partition) pointed at the tiny city, and a grid city whose benchmark records are built in code
REGISTRY = (
    "cities:\n"
    "  karhula: {name: Tinytown, country: Finland, split: train, source: {kind: file, path: tiny.osm}}\n"
    "  gridtown: {name: Gridtown, country: Finland, split: train, source: {kind: bundled, extract: test.osm.pbf}}\n"
)
#: the bytes of one event's metadata that the run history may keep (the full PNGs were 20-320 kB each)
MAX_EVENT_BYTES = 40_000

QUERY = """
query Materialization($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        partition
        metadataEntries {
          __typename
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on MarkdownMetadataEntry { mdStr }
          ... on PathMetadataEntry { path }
          ... on JsonMetadataEntry { jsonString }
          ... on TableSchemaMetadataEntry { schema { columns { name type } } }
          ... on TableMetadataEntry { table { records schema { columns { name type } } } }
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dg.DagsterInstance, Path]]:
    """An instance that materialized ``nodes``/``edges`` of karhula and ``benchmark_results`` over gridtown."""
    from ugdata_pipeline.uge.backbone import build_backbone
    from ugdata_pipeline.uge.checkpoint import save_checkpoint
    from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT

    home = tmp_path_factory.mktemp("graphql")
    root = home / "data"
    write_tiny_city(home)
    (home / "cities.yaml").write_text(REGISTRY, encoding="utf-8")
    city = build_city("gridtown")
    tasks, _ = build_tasks([city.inputs], config=BenchConfig(seed=7, max_records_per_task=20))
    for name, frame in {
        "benchmark_tasks": tasks,
        "subgraph_nodes": city.subgraph_nodes,
        "subgraph_edges": city.subgraph_edges,
    }.items():
        path = table_path(str(root), name, "gridtown")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path.path, index=False)
    for index, relative in enumerate(city.images["path"]):  # the model embeds the images: any picture will do
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (index % 256, 80, 160)).save(root / relative)
    # one model of the family, untrained: what is scored does not matter here, only what is reported
    checkpoint = root / "models" / "stage1" / "seed-0" / "f00" / "checkpoints" / "best"
    save_checkpoint(checkpoint, build_backbone("compact", SMALL_COMPACT), config={})
    _write_pointer(root, "stage1", 0, "f00", checkpoint, ["gridtown"])

    resources = {
        "table_io_manager": ParquetIOManager(root=str(root)),
        "storage": StorageResource(root=str(root)),
        "cities": CityRegistryResource(path=str(home / "cities.yaml")),
        "osm": OsmSourceResource(allow_network=False),
        "trainer": TrainerResource(seeds="0"),
    }
    with dg.instance_for_test() as instance:
        graph = [ASSETS["osm_streets"], ASSETS["nodes"]]
        assert dg.materialize(graph, partition_key="karhula", instance=instance, resources=resources).success
        config = {"ops": {"benchmark_results": {"config": {"bootstrap": 20, "limit_per_group": 5, "modes": ["text"]}}}}
        result = dg.materialize(
            [ASSETS["benchmark_results"]], instance=instance, resources=resources, run_config=config
        )
        assert result.success
        yield instance, root


def read_metadata(instance: dg.DagsterInstance, asset: str) -> tuple[str | None, dict[str, dict]]:
    """The latest materialization's partition and metadata entries (by label), through the GraphQL API."""
    with define_out_of_process_context(str(DEFINITIONS), "defs", instance) as context:
        result = execute_dagster_graphql(context, QUERY, variables={"key": {"path": [asset]}})
    assert not result.errors, result.errors
    [materialization] = result.data["assetOrError"]["assetMaterializations"]
    return materialization["partition"], {entry["label"]: entry for entry in materialization["metadataEntries"]}


def event_bytes(entries: dict[str, dict]) -> int:
    return len(json.dumps(entries).encode("utf-8"))


def test_a_city_table_reports_row_count_columns_a_table_preview_and_a_linked_map(instance):
    instance, root = instance
    partition, entries = read_metadata(instance, "nodes")
    assert partition == "karhula"
    nodes = read_table(table_path(str(root), "nodes", "karhula"))
    assert entries["dagster/row_count"]["__typename"] == "IntMetadataEntry"
    assert entries["dagster/row_count"]["intValue"] == len(nodes)
    columns = entries["dagster/column_schema"]["schema"]["columns"]
    assert [c["name"] for c in columns] == list(nodes.columns)
    assert {c["name"]: c["type"] for c in columns}["geometry"] == "geometry"
    preview = entries["preview"]
    assert preview["__typename"] == "TableMetadataEntry"
    rows = [json.loads(record) for record in preview["table"]["records"]]
    assert 0 < len(rows) <= 8 and set(rows[0]) == {c["name"] for c in preview["table"]["schema"]["columns"]}
    assert {"count", "rows"}.isdisjoint(entries)  # the standard key only
    assert entries["map_path"]["__typename"] == "PathMetadataEntry"
    assert Path(entries["map_path"]["path"]) == root / "karhula" / "previews" / "graph_map.png"
    assert Path(entries["map_path"]["path"]).read_bytes()[:4] == b"\x89PNG"
    assert entries["map"]["mdStr"].startswith("![map](data:image/png;base64,") and len(entries["map"]["mdStr"]) <= 1000
    assert event_bytes(entries) < MAX_EVENT_BYTES


def test_benchmark_results_reports_float_figures_and_linked_charts(instance):
    instance, root = instance
    partition, entries = read_metadata(instance, "benchmark_results")
    assert partition is None
    figures = {label: entry for label, entry in entries.items() if label.startswith(("hit@1/", "hit@5/"))}
    assert "hit@5/retrieval/stage1" in figures  # text mode: the retrieval records
    assert {entry["__typename"] for entry in figures.values()} == {"FloatMetadataEntry"}
    assert all(0.0 <= entry["floatValue"] <= 1.0 for entry in figures.values())
    assert entries["dagster/row_count"]["intValue"] > 0 and entries["dagster/column_schema"]["schema"]["columns"]
    charts = {label: entry for label, entry in entries.items() if label.endswith("_path") and label != "report_path"}
    assert charts, list(entries)
    for label, entry in charts.items():
        path = Path(entry["path"])
        assert path.parent == root / "reports" / "ugbench" and path.read_bytes()[:4] == b"\x89PNG", label
        thumbnail = entries.get(label.removesuffix("_path"))
        assert thumbnail is None or len(thumbnail["mdStr"]) <= 1000, label
    assert event_bytes(entries) < MAX_EVENT_BYTES
