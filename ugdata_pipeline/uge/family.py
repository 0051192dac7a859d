"""The UGE model family: which models are trained side by side, from what, and on what share of the budget.

Plain data, no torch: the Dagster definitions read it to declare one asset per model without importing the trainer.
Training runs of these models live in :mod:`ugdata_pipeline.uge.runs` (its docstring has the table).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODEL_SPECS", "ModelSpec", "model_spec"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One member of the model family (see the module docstring)."""

    name: str
    stage: int
    variant: str
    parent: str | None
    graph_input: str
    step_factor: int  # multiples of the family's step budget
    description: str


MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "baseline",
        1,
        "baseline",
        None,
        "own",
        2,
        "Generic-caption control: stage-1 training on name-free image captions only, for as many steps as "
        "stage 1 and stage 2 together.",
    ),
    ModelSpec(
        "stage1",
        1,
        "ugdata",
        None,
        "own",
        1,
        "UGE stage 1: image <-> spatial texts (captions, spatial summaries, reasoning paths).",
    ),
    ModelSpec(
        "stage2",
        2,
        "ugdata",
        "stage1",
        "own",
        1,
        "UGE stage 2: stage 1 + the graph encoder over each image's own 700 m subgraph, fused with the image.",
    ),
    ModelSpec(
        "stage2_shuffled_graphs",
        2,
        "ugdata",
        "stage1",
        "shuffled",
        1,
        "Ablation: stage 2 trained on subgraphs of other images (a seeded derangement).",
    ),
    ModelSpec(
        "stage2_no_graph",
        2,
        "ugdata",
        "stage1",
        "none",
        1,
        "Ablation: stage 2 trained with the graph reduced to the image's own node (no neighbourhood).",
    ),
)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``."""
    for spec in MODEL_SPECS:
        if spec.name == name:
            return spec
    msg = f"unknown UGE model {name!r}; the family is {[s.name for s in MODEL_SPECS]}"
    raise ValueError(msg)
