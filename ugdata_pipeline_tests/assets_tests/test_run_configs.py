"""Run configs: the shell's configs are derived from the core's option dataclasses (same fields, defaults and
descriptions, so they cannot drift), the launchpad shows them documented, and values reach the core."""

import dataclasses
import importlib
import inspect
import pkgutil

import dagster as dg
import pytest

import ugdata_pipeline.assets as assets_package
from ugdata_pipeline.assets import context, dataset, graph, imagery, reasoning, ugbench
from ugdata_pipeline.assets._config import CoreConfig, dagster_config
from ugdata_pipeline.context.subgraph import SubgraphConfig
from ugdata_pipeline.dataset.records import assemble_training_records
from ugdata_pipeline.definitions import defs
from ugdata_pipeline.errors import UgdataError
from ugdata_pipeline.graph.build import GraphConfig
from ugdata_pipeline.imagery.anchor import anchor_images
from ugdata_pipeline.imagery.splits import assign_splits
from ugdata_pipeline.reasoning.path_schema import PathConfig
from ugdata_pipeline.ugbench._records import BenchConfig
from ugdata_pipeline.ugbench.evaluate import evaluate

# shell config -> (core dataclass, fields whose pipeline-run default differs from the core's, with that default)
DERIVED = {
    graph.GraphConfig: (GraphConfig, {}),
    context.SubgraphConfig: (SubgraphConfig, {}),
    reasoning.PathConfig: (PathConfig, {}),
    ugbench.BenchConfig: (BenchConfig, {"max_records_per_task": 300}),
}

# Configs with no core dataclass behind them: their fields are keyword arguments of one core function. Fields named
# like an argument must keep its default, except the differences listed here (shell-only fields included).
SHELL_ONLY = {
    imagery.AnchorConfig: (anchor_images, {}),
    imagery.SplitConfig: (assign_splits, {"train_share": 0.7, "val_share": 0.1}),  # -> fractions (0.7, 0.1, 0.2)
    dataset.RecordsConfig: (assemble_training_records, {}),
    ugbench.BenchmarkConfig: (evaluate, {"modes": ["image", "fusion", "text"]}),  # evaluate's None means the same
}

# the asset (op) each config belongs to
OPS = {
    graph.GraphConfig: "urban_graph",
    context.SubgraphConfig: "spatial_subgraphs",
    reasoning.PathConfig: "spatial_reasoning_paths",
    ugbench.BenchConfig: "benchmark_tasks",
    imagery.AnchorConfig: "image_anchoring",
    imagery.SplitConfig: "images",
    dataset.RecordsConfig: "training_records",
    ugbench.BenchmarkConfig: "benchmark_results",
}


def _as_run_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def test_every_asset_config_is_derived_or_listed():
    found = set()
    for info in pkgutil.iter_modules(assets_package.__path__):
        module = importlib.import_module(f"ugdata_pipeline.assets.{info.name}")
        found |= {
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, dg.Config)
            and not issubclass(value, dg.ConfigurableResource | dg.ConfigurableIOManager)  # not run configs
            and value not in (dg.Config, CoreConfig)
        }
    assert found == set(DERIVED) | set(SHELL_ONLY)
    assert all(issubclass(shell, CoreConfig) for shell in DERIVED)
    assert not any(issubclass(shell, CoreConfig) for shell in SHELL_ONLY)


@pytest.mark.parametrize("shell", list(DERIVED), ids=lambda c: c.__name__)
def test_derived_config_has_the_core_fields_defaults_and_descriptions(shell):
    core, run_defaults = DERIVED[shell]
    assert shell.__name__ == core.__name__  # one name per idea: no PathsConfig next to PathConfig
    assert shell.core_type is core
    assert dict(shell.run_defaults) == run_defaults
    core_fields = {f.name: f for f in dataclasses.fields(core)}
    assert list(shell.model_fields) == list(core_fields)
    for name, spec in core_fields.items():
        info = shell.model_fields[name]
        assert info.default == _as_run_value(run_defaults.get(name, spec.default)), name
        assert info.description == spec.metadata["doc"], name
    # the defaults build the core's defaults (tuples from lists), apart from the listed run defaults
    assert shell().to_core() == dataclasses.replace(core(), **run_defaults)


@pytest.mark.parametrize("shell", list(SHELL_ONLY), ids=lambda c: c.__name__)
def test_shell_only_config_keeps_the_core_function_defaults(shell):
    function, differences = SHELL_ONLY[shell]
    parameters = inspect.signature(function).parameters
    for name, info in shell.model_fields.items():
        assert info.description, f"{shell.__name__}.{name} has no description"
        if name in differences:
            assert info.default == differences[name], name
        else:
            assert name in parameters, (
                f"{shell.__name__}.{name} is neither an argument of {function.__name__} nor listed"
            )
            assert info.default == parameters[name].default, name


@pytest.mark.parametrize("shell", list(OPS), ids=lambda c: c.__name__)
def test_launchpad_shows_every_field_with_its_description(shell):
    repo = defs.get_repository_def()
    op = OPS[shell]
    job = next(job for job in repo.get_all_jobs() if op in {node.name for node in job.graph.nodes})
    ops = job.run_config_schema.config_type.fields["ops"].config_type
    fields = ops.fields[op].config_type.fields["config"].config_type.fields
    assert set(fields) == set(shell.model_fields)
    for name, info in shell.model_fields.items():
        assert fields[name].description == info.description, name
        assert not fields[name].is_required, name


def test_run_config_values_reach_the_core_and_bad_values_fail_with_the_core_message():
    core = reasoning.PathConfig(max_paths=3, hop_band_edges=[3, 5], target_kinds=["poi"]).to_core()
    assert core == PathConfig(max_paths=3, hop_band_edges=(3, 5), target_kinds=("poi",))
    assert ugbench.BenchConfig(max_records_per_task=None).to_core().max_records_per_task is None
    with pytest.raises(UgdataError, match=r"^PathConfig\.max_paths must be >= 1, got 0$"):
        reasoning.PathConfig(max_paths=0).to_core()
    with pytest.raises(UgdataError, match=r"^SubgraphConfig\.radius_m must be a finite distance > 0 in metres"):
        context.SubgraphConfig(radius_m=-1.0).to_core()


def test_a_run_config_value_is_used_by_the_asset():
    @dg.asset
    def probe(config: reasoning.PathConfig) -> None:
        assert config.to_core() == PathConfig(max_hops=5, hop_band_edges=(3,))

    result = dg.materialize([probe], run_config={"ops": {"probe": {"config": {"max_hops": 5, "hop_band_edges": [3]}}}})
    assert result.success


def test_dagster_config_refuses_a_core_it_cannot_derive():
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        size: int = 3

    with pytest.raises(TypeError, match=r"field 'size' has no description; add metadata=\{\"doc\": \.\.\.\}"):
        dagster_config(Undocumented)

    @dataclasses.dataclass(frozen=True)
    class Documented:
        size: int = dataclasses.field(default=3, metadata={"doc": "Size."})

    with pytest.raises(TypeError, match=r"\['sise'\] are not fields of .*Documented \(fields: \['size'\]\)"):
        dagster_config(Documented, run_defaults={"sise": 4})
    shell = dagster_config(Documented, exclude=["size"])
    assert not shell.model_fields
    assert shell().to_core() == Documented()
