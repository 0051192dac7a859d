"""What the UI shows about every asset before it runs: an owner, a stage tag, a gpu tag where the asset takes the gpu
pool, and a code reference that opens the function that computes it."""

from __future__ import annotations

import inspect
from pathlib import Path

import dagster as dg

from ugdata_pipeline.assets import ALL_ASSETS, OWNER, linked_to_git


def test_every_asset_has_the_owner_and_its_stage_tag():
    specs = [(asset, spec) for asset in ALL_ASSETS for spec in asset.specs]
    assert len(specs) >= 27
    for asset, spec in specs:
        assert list(spec.owners) == [OWNER] == ["team:ugdata"], spec.key
        gpu = {"gpu": ""} if asset.op.pool == "gpu" else {}
        # the city is the partition (dagster/partition), never a tag: an asset holds every city's partitions
        tags = {k: v for k, v in spec.tags.items() if not k.startswith("dagster/kind/")}  # kinds are tags too
        assert tags == {"stage": spec.group_name, **gpu}, spec.key
    gpu_assets = {spec.key.to_user_string() for asset, spec in specs if "gpu" in spec.tags}
    assert "benchmark_results" in gpu_assets and "uge_stage2" in gpu_assets and "nodes" not in gpu_assets


def test_every_asset_links_the_source_line_of_its_function():
    for asset in ALL_ASSETS:
        for spec in asset.specs:
            [reference] = spec.metadata["dagster/code_references"].code_references
            assert isinstance(reference, dg.LocalFileCodeReference), spec.key
            path = Path(reference.file_path)
            assert path.is_file() and path.parts[-3:-1] == ("ugdata_pipeline", "assets"), spec.key
            line = path.read_text(encoding="utf-8").splitlines()[reference.line_number - 1]
            assert line.lstrip().startswith(("def ", "@")), (spec.key, line)
            source, first = inspect.getsourcelines(asset.op.compute_fn.decorated_fn)
            assert first <= reference.line_number < first + len(source), spec.key


def test_code_references_link_to_the_repository_when_a_git_url_is_given():
    url = "https://github.com/example/ugdata-pipeline"
    assert linked_to_git(ALL_ASSETS, None, "main") is ALL_ASSETS
    linked = {spec.key: spec for asset in linked_to_git(ALL_ASSETS, url, "dev") for spec in asset.specs}
    local = {spec.key: spec for asset in ALL_ASSETS for spec in asset.specs}
    assert linked.keys() == local.keys()
    for key, spec in linked.items():
        [reference] = spec.metadata["dagster/code_references"].code_references
        [source] = local[key].metadata["dagster/code_references"].code_references
        relative = Path(source.file_path).relative_to(Path(__file__).resolve().parents[2]).as_posix()
        assert isinstance(reference, dg.UrlCodeReference), key
        assert reference.url == f"{url}/tree/dev/{relative}#L{source.line_number}", key
