"""What blocking checks block: each blocking asset check of the definitions, fed a table that violates it, stops the
asset downstream of the checked asset in the same run.

Each case replaces the core function that produces the checked table inside the asset with one that returns a
violating table; the asset's own check code (the real validators) then judges it. Inputs come from an in-memory
IO manager, so no earlier stage runs.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import dagster as dg
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import ugdata_pipeline.assets.context as context_assets
import ugdata_pipeline.assets.dataset as dataset_assets
import ugdata_pipeline.assets.graph as graph_assets
import ugdata_pipeline.assets.imagery as imagery_assets
import ugdata_pipeline.assets.reasoning as reasoning_assets
import ugdata_pipeline.assets.ugbench as ugbench_assets
from ugdata_pipeline.assets.partitions import city_partitions
from ugdata_pipeline.context.subgraph_stream import StreamedSubgraphs
from ugdata_pipeline.dataset.records import TRAINING_RECORD_COLUMNS, TrainingRecords
from ugdata_pipeline.definitions import defs
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.reasoning.sharded import ShardPaths
from ugdata_pipeline.resources import CityRegistryResource, StorageResource
from ugdata_pipeline.ugbench._records import TASK_COLUMNS
from ugdata_pipeline.ugbench.tasks import QuerySubgraphs
from ugdata_pipeline_tests.tiny_city import tiny_city

# the package exports a function of the same name, which hides the module from `import ... as`
evaluate_module = importlib.import_module("ugdata_pipeline.ugbench.evaluate")

CITY = "karhula"  # a shipped slug: the partition must exist; the inputs come from memory


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _tiny_png()  # previews are not under test; any small picture will do (the thumbnailer decodes it)


class MemoryIOManager(dg.IOManager):
    """Serves the upstream tables of a case and keeps what the steps store, by asset name."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        self.tables = dict(tables)
        self.stored: dict[str, object] = {}

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        self.stored[context.asset_key.to_user_string()] = obj

    def load_input(self, context: dg.InputContext) -> object:
        name = context.asset_key.to_user_string()
        return self.stored[name] if name in self.stored else self.tables[name]


@dataclass(frozen=True)
class Case:
    check: str  # the blocking check
    asset: str  # the asset it checks
    node: dg.AssetsDefinition  # the asset (or multi-asset) that yields it
    patches: Callable[[], dict[tuple[object, str], object]]  # (module, name) -> replacement
    inputs: Callable[[], dict[str, pd.DataFrame]] = field(default=dict)
    observed: int = 1  # violations the check reports


# -- graph: the real build of the tiny city, then one invariant broken -------------------------------------------


def graph_inputs() -> dict[str, pd.DataFrame]:
    extract = tiny_city()
    return {"osm_streets": extract.streets, "osm_pois": extract.pois, "osm_aois": extract.aois}


def broken_graph(breaks: Callable[[pd.DataFrame, pd.DataFrame], None]) -> Callable[[], dict]:
    def build(*args, **kwargs):
        graph = build_urban_graph(*args, **kwargs)
        breaks(graph.nodes, graph.edges)
        return graph

    return lambda: {(graph_assets, "build_urban_graph"): build, (graph_assets, "graph_map_png"): lambda *a, **k: PNG}


def _duplicate_id(nodes: pd.DataFrame, edges: pd.DataFrame) -> None:
    nodes.loc[1, "node_id"] = nodes.loc[0, "node_id"]


def _dangling(nodes: pd.DataFrame, edges: pd.DataFrame) -> None:
    edges.loc[0, "dst"] = "street:nowhere"


def _no_lon(nodes: pd.DataFrame, edges: pd.DataFrame) -> None:
    nodes.loc[0, "lon"] = np.nan


def _self_loop(nodes: pd.DataFrame, edges: pd.DataFrame) -> None:
    edges.loc[0, "dst"] = edges.loc[0, "src"]


def _zero_distance(nodes: pd.DataFrame, edges: pd.DataFrame) -> None:
    edges.loc[0, "distance_m"] = 0.0


# -- images: a split table with a test image 10 m from a train image, or a sequence over two splits --------------


def split_table(lon: list[float], split: list[str], sequence: list[str]) -> Callable[[], dict]:
    table = pd.DataFrame(
        {"image_id": ["a", "b", "c"], "lon": lon, "lat": [60.17] * 3, "split": split, "sequence_id": sequence}
    )
    return lambda: {
        (imagery_assets, "assign_splits"): lambda *a, **k: table.copy(),
        (imagery_assets, "split_map_png"): lambda *a, **k: PNG,
    }


# -- subgraphs: one image whose subgraph lost its street (1 node) ----------------------------------------------


def one_node_subgraph() -> dict:
    summary = pd.DataFrame({"image_id": ["a", "b"], "center_node": ["image:a", "image:b"], "n_nodes": [1, 5]})
    # the asset streams its long tables to their paths itself; the stand-in writes none and keeps the summary
    tables = StreamedSubgraphs(summary=summary, counts={}, nodes_path=None, edges_path=None)
    return {
        (context_assets, "anchored_graph"): lambda nodes, edges, *a: (nodes, edges),
        (context_assets, "write_subgraphs"): lambda *a, **k: tables,
        (context_assets, "read_image_range"): lambda *a, **k: pd.DataFrame(),
        (context_assets, "size_histogram_png"): lambda *a, **k: PNG,
    }


# -- reasoning paths: image a has one path image -> street -> cafe; image b has a recorded reason ------------------

IMAGE_A = "image:render:a"


def srp_case(check: str, *, reasons=("b",), edges=2, text="Walk along Alpha Street.", split="train") -> Case:
    """A case for one srp check: the defaults pass every check; each keyword breaks one of them."""
    paths = pd.DataFrame(
        {
            "image_id": ["a"],
            "split": [split],
            "path_nodes": [[IMAGE_A, "street:alpha", "poi:cafe"]],
            "path_relations": [["image_street", "nearest"]],
            "hops": [2],
            "path_type": ["shortest"],
            "target_node": ["poi:cafe"],
            "target_name": ["Blue Cafe"],
            "path_text": [text],
            "path_sentence": [text],
            "target_text": ["Blue Cafe, a cafe."],
        }
    )
    missing = pd.DataFrame({"image_id": list(reasons), "reason": ["no target in range"] * len(reasons)})
    graph_edges = pd.DataFrame({"src": [IMAGE_A, "street:alpha"][:edges], "dst": ["street:alpha", "poi:cafe"][:edges]})
    inputs = {
        "nodes": pd.DataFrame({"node_id": ["street:alpha", "poi:cafe"], "name": ["Alpha Street", "Blue Cafe"]}),
        "edges": graph_edges,
        "images": pd.DataFrame({"image_id": ["a", "b"], "source": ["render"] * 2, "split": ["train", "train"]}),
        "osm_streets": pd.DataFrame(),
    }

    def build_in_one_shard(nodes, edges, images, shards, *, city, config, on_shard):
        result = SimpleNamespace(paths=paths, missing=missing, counts={})
        on_shard(ShardPaths("e0_n0", images, nodes, edges, result))  # the asset checks each shard as it comes
        return result

    patches = {
        (reasoning_assets, "anchored_graph"): lambda nodes, edges, *a: (nodes, edges),
        (reasoning_assets, "city_metric_crs"): lambda *a, **k: "EPSG:32635",
        (reasoning_assets, "image_shards"): lambda images, **k: pd.Series("e0_n0", index=images.index),
        (reasoning_assets, "build_paths_by_shard"): build_in_one_shard,
        (reasoning_assets, "hop_histogram_png"): lambda *a, **k: PNG,
        (reasoning_assets, "distance_histogram_png"): lambda *a, **k: PNG,
    }
    return Case(check, "srp", reasoning_assets.spatial_reasoning_paths, lambda: patches, lambda: inputs)


# -- training records: a query that holds its positive, or a hard negative from another split -------------------


def record_rows(instruction: str, negatives: list[str]) -> Callable[[], dict]:
    rows = pd.DataFrame(
        [
            ("r1", 1, "ugdata", "a", "train", instruction, "img/a.png", "A red house on Alpha Street.", "caption"),
            ("r2", 1, "ugdata", "b", "val", "Describe the place.", "img/b.png", "A blue kiosk by the park.", "caption"),
        ],
        columns=[c for c in TRAINING_RECORD_COLUMNS if c != "hard_negatives"],
    ).assign(hard_negatives=[negatives, []])[list(TRAINING_RECORD_COLUMNS)]

    def assemble(*args, stage: int, variant: str, **kwargs) -> TrainingRecords:
        # the first build (stage 1, ugdata) gets the rows; the other two builds are empty
        mine = rows if (stage, variant) == (1, "ugdata") else rows.iloc[:0]
        return TrainingRecords(records=mine.copy(), dropped=pd.DataFrame(columns=["record_id", "rule", "detail"]))

    return lambda: {(dataset_assets, "assemble_training_records"): assemble}


# -- benchmark tasks: a record whose correct_idx misses its answer, or a blind scorer far above chance ------------


def task_row(correct_idx: int) -> pd.DataFrame:
    candidates = [f"Street {i}" for i in range(20)]
    row = {
        "record_id": "geolocation/geolocation/karhula/a",
        "task": "geolocation",
        "query_type": "geolocation",
        "city": CITY,
        "split": "held_out",
        "image_id": "a",
        "query_kind": "image",
        "query_text": "Where was this taken?",
        "instruction": "Where was this taken?",
        "fusion_instruction": "Where was this taken?",
        "query_image": "img/a.png",
        "query_graph_id": "a",
        "candidate_kind": "text",
        "candidates": candidates,
        "candidate_graph_ids": [],
        "candidate_distance_m": [0.0] + [1000.0] * 19,
        "correct_idx": correct_idx,
        "ground_truth": candidates[0],
        "lon": 26.9,
        "lat": 60.5,
        "meta": "{}",
        "group_id": None,
        "cluster": "c0",
        "fusion_graph": "own",
    }
    return pd.DataFrame([row])[list(TASK_COLUMNS)]


def blind_results(hit: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "kind": "blind",
                "task": "geolocation",
                "query_type": "geolocation",
                "city": CITY,
                "split": "held_out",
                "mode": "image",
                "model": "blind_candidate_only",
                "hit@1": hit,
                "hit@5": 0.25,  # at chance: only Hit@1 beats it
                "chance_hit@1": 0.05,
                "chance_hit@5": 0.25,
                "n": 40,
            }
        ]
    )


def bench_tables(correct_idx: int, hit: float) -> Callable[[], dict]:
    def build(*args, **kwargs):
        return task_row(correct_idx), SimpleNamespace(as_metadata=dict)

    # the asset reads the test images' rows from the subgraph files; the patched builders need none
    query = QuerySubgraphs(pd.DataFrame(), pd.DataFrame(), frozenset())
    return lambda: {
        (ugbench_assets, "read_query_subgraphs"): lambda *a, **k: query,
        (ugbench_assets, "build_tasks"): build,
        (evaluate_module, "evaluate"): lambda *a, **k: SimpleNamespace(results=blind_results(hit)),
    }


def bench_inputs() -> dict[str, pd.DataFrame]:
    return {"images": pd.DataFrame({"image_id": ["a"]})}


CASES = [
    Case("node_ids_unique", "nodes", graph_assets.urban_graph, broken_graph(_duplicate_id), graph_inputs, 0),
    Case("edge_endpoints_exist", "edges", graph_assets.urban_graph, broken_graph(_dangling), graph_inputs),
    Case("coordinates_valid", "nodes", graph_assets.urban_graph, broken_graph(_no_lon), graph_inputs),
    Case("no_self_loops", "edges", graph_assets.urban_graph, broken_graph(_self_loop), graph_inputs),
    Case("distances_positive", "edges", graph_assets.urban_graph, broken_graph(_zero_distance), graph_inputs),
    Case(
        "no_test_near_train",
        "images",
        imagery_assets.images,
        split_table([24.94, 24.9402, 25.2], ["train", "test", "val"], ["s1", "s2", "s3"]),
    ),
    Case(
        "no_sequence_spans_splits",
        "images",
        imagery_assets.images,
        split_table([24.94, 25.1, 25.3], ["train", "test", "val"], ["s1", "s1", "s3"]),
    ),
    srp_case("every_image_has_path_or_reason", reasons=()),
    srp_case("paths_are_walks", edges=1),
    srp_case("no_query_contains_target", text="Walk along Alpha Street to Blue Cafe."),
    srp_case("paths_stay_with_their_image", split="val"),
    Case("subgraph_sizes", "subgraphs", context_assets.spatial_subgraphs, one_node_subgraph),
    Case(
        "no_query_contains_target",
        "training_records",
        dataset_assets.training_records,
        record_rows("Find: A red house on Alpha Street.", []),
    ),
    Case(
        "negatives_within_split",
        "training_records",
        dataset_assets.training_records,
        record_rows("Describe the place.", ["A blue kiosk by the park."]),
    ),
    Case(
        "benchmark_records_valid",
        "benchmark_tasks",
        ugbench_assets.benchmark_tasks,
        bench_tables(3, 0.05),
        bench_inputs,
    ),
    Case("no_blind_shortcut", "benchmark_tasks", ugbench_assets.benchmark_tasks, bench_tables(0, 0.6), bench_inputs),
]


def test_every_blocking_check_of_the_definitions_has_a_case():
    blocking = {
        (spec.asset_key.to_user_string(), spec.name)
        for node in defs.get_repository_def().assets_defs_by_key.values()
        for spec in node.check_specs
        if spec.blocking
    }
    assert blocking == {(case.asset, case.check) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.check)
def test_a_failing_blocking_check_stops_the_downstream_asset(case, tmp_path, monkeypatch):
    for (module, name), replacement in case.patches().items():
        monkeypatch.setattr(module, name, replacement)
    ran = []

    @dg.asset(ins={"upstream": dg.AssetIn(case.asset)}, partitions_def=city_partitions, io_manager_key="memory")
    def downstream(upstream: pd.DataFrame) -> None:
        ran.append(len(upstream))

    # every input the asset declares; those a case leaves out are empty tables (its producer is replaced)
    upstream = sorted({key.to_user_string() for key in case.node.keys_by_input_name.values()})
    # (as GeoDataFrames, which pass the type check of inputs typed DataFrame and of those typed GeoDataFrame)
    # osm_streets always holds the tiny city's streets: the assets take the city's metric CRS from them
    defaults = {name: tiny_city().streets if name == "osm_streets" else pd.DataFrame() for name in upstream}
    tables = defaults | case.inputs()
    io = MemoryIOManager({name: gpd.GeoDataFrame(frame) for name, frame in tables.items()})
    sources = [
        dg.SourceAsset(name, io_manager_key="table_io_manager", partitions_def=city_partitions) for name in upstream
    ]
    # an instance disposed here removes its temporary folder (left to the GC, it warns in a later test)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [case.node, downstream, *sources],
            partition_key=CITY,
            raise_on_error=False,
            instance=instance,
            resources={
                "table_io_manager": io,
                "memory": io,
                "storage": StorageResource(root=str(tmp_path)),
                "cities": CityRegistryResource(),
            },
        )
    assert not result.success
    assert ran == [] and "downstream" not in io.stored
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("downstream")]
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    if case.observed == 0:
        # duplicated ids stop the step by name before anything is stored or checked (graph_tests cover the text)
        assert "duplicated node id(s)" in failure.event_specific_data.error.cause.message
        assert io.stored == {} and not result.get_asset_check_evaluations()
        return
    # Dagster evaluates in-asset checks after the step stored its outputs: the violating table itself is written
    assert case.asset in io.stored
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {case.check}
    assert failed[case.check].asset_key == dg.AssetKey(case.asset)
    assert failed[case.check].metadata["observed"].value == case.observed
    assert message.startswith(
        "dagster._core.errors.DagsterAssetCheckFailedError: 1 blocking asset check failed with ERROR severity:\n"
        f"{case.asset}: {case.check}"
    )
