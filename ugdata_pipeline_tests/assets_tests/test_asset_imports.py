"""Asset modules import the core and the shell's helpers, never each other (issue 15): what two assets share is
core code, so it is tested without Dagster and has one home."""

from __future__ import annotations

import ast
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "ugdata_pipeline" / "assets"
#: shell helpers every asset module may use (train_entry is the Pipes subprocess's entry, never imported)
HELPERS = {"_metadata", "partitions"}


def asset_module_imports(source: str) -> list[str]:
    """Asset modules (``ugdata_pipeline.assets.<name>``) that ``source`` imports, anywhere in it, helpers aside."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from .x import y" or "from . import x"
                base = [node.module] if node.module else [alias.name for alias in node.names]
                modules = [f"ugdata_pipeline.assets.{name}" for name in base]
            elif node.module == "ugdata_pipeline.assets":
                modules = [f"ugdata_pipeline.assets.{alias.name}" for alias in node.names]
            else:
                modules = [node.module or ""]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[:2] == ["ugdata_pipeline", "assets"] and len(parts) > 2 and parts[2] not in HELPERS:
                found.append(".".join(parts[:3]))
    return found


def test_the_checker_sees_every_form_of_import() -> None:
    source = (
        "import ugdata_pipeline.assets.uge\n"
        "from ugdata_pipeline.assets.reasoning import anchored_graph\n"
        "from ugdata_pipeline.assets import context\n"
        "from .dataset import captions\n"
        "def f():\n    from . import graph\n"
        "from ugdata_pipeline.assets._metadata import png\n"
        "from ugdata_pipeline.assets.partitions import city_partitions\n"
        "from ugdata_pipeline.uge.runs import train_model\n"
    )
    assert asset_module_imports(source) == [
        "ugdata_pipeline.assets.uge",
        "ugdata_pipeline.assets.reasoning",
        "ugdata_pipeline.assets.context",
        "ugdata_pipeline.assets.dataset",
        "ugdata_pipeline.assets.graph",
    ]


def test_no_asset_module_imports_another() -> None:
    modules = sorted(path for path in ASSETS.glob("*.py") if path.name != "__init__.py")  # __init__ collects them
    assert {path.stem for path in modules} >= {"uge", "ugbench", "context", "reasoning", "train_entry"}
    offenders = {
        path.name: imported for path in modules if (imported := asset_module_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
