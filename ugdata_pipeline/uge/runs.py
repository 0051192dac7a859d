"""Training runs of the UGE model family: which models, on what budget, where they live, and which one is current.

The family (:data:`MODEL_SPECS`) is what the paper's claim needs side by side, under **one budget** of ``steps``
optimizer steps of ``batch_size`` records:

==========================  =====  ========================  ==========  =========================================
model                       stage  starts from               steps       what it tests
==========================  =====  ========================  ==========  =========================================
``baseline``                1      scratch                   2 x steps   generic (name-free) captions only: the
                                                                         matched control, as many steps as stage 2
                                                                         has in all
``stage1``                  1      scratch                   steps       spatial texts (captions, summaries, paths)
``stage2``                  2      ``stage1``                steps       + the image's own subgraph
``stage2_shuffled_graphs``  2      ``stage1``                steps       + another image's subgraph (ablation)
``stage2_no_graph``         2      ``stage1``                steps       + no neighbourhood at all (ablation)
==========================  =====  ========================  ==========  =========================================

Every model is trained once per seed. A run lives in ``<root>/models/<name>/seed-<k>/<fingerprint>/``; the
fingerprint hashes the records, the subgraphs (stage 2), the training config and the parent run's fingerprint,
so an unchanged rerun trains nothing and a killed run resumes. ``<root>/models/<name>/current.json`` points at the
current run of every seed, with paths **relative to the data root**, so a copied or moved root keeps its models.

:func:`training_inputs` gathers what a model trains on across the training cities; :func:`train_model` trains (or
reuses) every seed of one model, in this process or through a launcher (:mod:`ugdata_pipeline.uge.launch`), and
:func:`run_figures` summarises the runs. The Dagster assets only call these and report.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from ugdata_pipeline.atomic_files import write_file_atomic
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import CorruptFileError, TrainingDataError
from ugdata_pipeline.uge.data import table_digest
from ugdata_pipeline.uge.family import MODEL_SPECS, ModelSpec, model_spec
from ugdata_pipeline.uge.graph_encoder import GraphEncoderConfig
from ugdata_pipeline.uge.train import TrainConfig, TrainResult, run_finished, select_records, train

if TYPE_CHECKING:
    from ugdata_pipeline.cities import CityRegistry
    from ugdata_pipeline.uge.launch import Launch

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_SPECS",
    "ModelSpec",
    "TrainedRun",
    "TrainingInputs",
    "current_checkpoints",
    "model_spec",
    "run_config",
    "run_figures",
    "run_fingerprint",
    "train_model",
    "train_seed",
    "training_inputs",
]

POINTER_FILE = "current.json"


def run_config(spec: ModelSpec, base: TrainConfig, *, steps: int, seed: int) -> TrainConfig:
    """``base`` specialised to one model and seed: its stage, variant, graph input and its share of the budget."""
    return replace(
        base,
        stage=spec.stage,
        variant=spec.variant,
        graph_input=spec.graph_input,
        steps=steps * spec.step_factor,
        seed=seed,
    )


def run_fingerprint(
    records: pd.DataFrame, subgraphs: SubgraphTables | None, config: TrainConfig, parent_fingerprint: str | None
) -> str:
    """A 16-hex-digit hash of everything that changes a run's result (never of machine paths)."""
    digest = hashlib.sha256(table_digest(records, *(subgraphs if subgraphs is not None else ())).encode())
    settings = {
        k: v for k, v in config.to_dict().items() if k not in ("out_dir", "eval_every_epoch", "checkpoint_every_steps")
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode("utf-8"))
    if config.stage == 2:  # the graph encoder as built (its defaults included), not only the overrides
        resolved = GraphEncoderConfig.from_dict(config.graph_encoder or {}).to_dict()
        digest.update(json.dumps(resolved, sort_keys=True).encode("utf-8"))
    digest.update((parent_fingerprint or "").encode("utf-8"))
    return digest.hexdigest()[:16]


@dataclass(slots=True)
class TrainedRun:
    """One trained seed of one model."""

    seed: int
    fingerprint: str
    checkpoint: Path  # absolute, under the data root
    result: TrainResult

    @property
    def reused(self) -> bool:
        """The run had finished earlier with the same fingerprint: nothing was trained."""
        return self.result.resumed and self.result.samples_per_s == 0


def _pointer(root: Path, name: str) -> Path:
    return root / "models" / name / POINTER_FILE


def _read_pointer(root: Path, name: str) -> dict[str, Any]:
    path = _pointer(root, name)
    if not path.is_file():
        return {"seeds": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"run pointer {path} is truncated or corrupt ({exc}); delete it and re-materialize the {name} model"
        raise CorruptFileError(msg) from exc


def current_checkpoints(
    root: str | Path, name: str, seeds: Sequence[int] | None = None, *, require_present: bool = False
) -> dict[int, Path]:
    """
    ``seed -> best checkpoint`` of the current runs of model ``name`` (only those that exist on disk).

    Parameters
    ----------
    root
        The data root the pointer's relative paths are resolved against.
    seeds
        Restrict to these seeds (default: every seed the pointer lists).
    require_present
        Raise instead of leaving out a run the pointer lists whose checkpoint folder is gone (the benchmark: a
        model must not silently drop out of the comparison).

    Raises
    ------
    FileNotFoundError
        With ``require_present``: a listed checkpoint is missing; the message names it and how to retrain.
    """
    root = Path(root)
    entries = _read_pointer(root, name).get("seeds", {})
    out = {}
    for key, entry in sorted(entries.items(), key=lambda kv: int(kv[0])):
        seed = int(key)
        if seeds is not None and seed not in seeds:
            continue
        path = root / entry["checkpoint"]
        if path.is_dir():
            out[seed] = path
        elif require_present:
            msg = (
                f"{_pointer(root, name)} names {entry['checkpoint']} (relative to the data root {root}) as the "
                f"current {name} run of seed {seed}, but that folder is missing; rematerialize uge_{name} "
                "(training_job) to train it again"
            )
            raise FileNotFoundError(msg)
    return out


def current_fingerprint(root: str | Path, name: str, seed: int) -> str | None:
    """The fingerprint of the current run of ``name`` for ``seed`` (None when there is none)."""
    entry = _read_pointer(Path(root), name).get("seeds", {}).get(str(seed))
    return entry.get("fingerprint") if entry else None


def _write_pointer(
    root: Path,
    name: str,
    seed: int,
    fingerprint: str,
    checkpoint: Path,
    cities: Sequence[str],
) -> None:
    pointer = _read_pointer(root, name)
    pointer.setdefault("seeds", {})[str(seed)] = {
        "fingerprint": fingerprint,
        "checkpoint": checkpoint.relative_to(root).as_posix(),
    }
    pointer["cities"] = list(cities)
    payload = json.dumps(pointer, indent=1, sort_keys=True).encode("utf-8")
    write_file_atomic(_pointer(root, name), payload)  # the umask's mode, like the tables


def _parent_run(spec: ModelSpec, root: Path, seed: int) -> tuple[Path | None, str | None]:
    """The parent model's current checkpoint and fingerprint for ``seed`` (both None for a model from scratch)."""
    if spec.parent is None:
        return None, None
    checkpoint = current_checkpoints(root, spec.parent, [seed]).get(seed)
    fingerprint = current_fingerprint(root, spec.parent, seed)
    if checkpoint is None or fingerprint is None:
        msg = (
            f"{spec.name} (seed {seed}) starts from the {spec.parent} model, which has no trained run for this "
            f"seed; train {spec.parent} first (materialize uge_{spec.parent})"
        )
        raise TrainingDataError(msg)
    return checkpoint, fingerprint


def train_seed(
    spec: ModelSpec,
    records: pd.DataFrame,
    *,
    root: str | Path,
    base: TrainConfig,
    steps: int,
    seed: int,
    cities: Sequence[str],
    subgraphs: SubgraphTables | None = None,
    launch: Launch | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedRun:
    """
    Train (or find finished, or resume) one seed of one model and make it current.

    Parameters
    ----------
    spec
        The model.
    records
        The training cities' ``training_records`` (all stages and variants; the run selects its own).
    root
        The data root: runs go under ``<root>/models/``.
    base
        Settings shared by the family (batch size, learning rates, backbone, ...).
    steps, seed
        The family's step budget and this run's seed.
    cities
        The training cities (recorded in the pointer).
    subgraphs
        ``subgraph_nodes`` / ``subgraph_edges`` of the training cities (stage 2).
    launch
        How to train: default :func:`~ugdata_pipeline.uge.train.train` in this process; otherwise a
        :class:`~ugdata_pipeline.uge.launch.Launch` (Pipes + ``accelerate launch``), given the run's own records.
    on_step
        Progress callback of in-process training, ``(step, {"loss": .., "lr": .., ...})`` after every step.

    Raises
    ------
    TrainingDataError
        The parent model has no current run for this seed, or the records hold none of this model's.
    """
    root = Path(root)
    parent_checkpoint, parent_fingerprint = _parent_run(spec, root, seed)
    config = run_config(spec, base, steps=steps, seed=seed)
    # the model's stage and variant on every split: what the run is keyed by (train() takes its splits from them)
    chosen = select_records(records, config, splits=None)
    subgraphs = subgraphs if spec.stage == 2 else None
    fingerprint = run_fingerprint(chosen, subgraphs, config, parent_fingerprint)
    out_dir = root / "models" / spec.name / f"seed-{seed}" / fingerprint
    config = replace(config, out_dir=str(out_dir))
    if launch is None or run_finished(out_dir):
        # a finished run is read back here: no subprocess is started only to find it finished
        result = train(
            chosen,
            root=root,
            subgraphs=subgraphs,
            config=config,
            init_from=parent_checkpoint,
            progress=False,
            on_step=on_step,
        )
    else:
        result = launch(chosen, subgraphs, config, parent_checkpoint)
    _write_pointer(root, spec.name, seed, fingerprint, result.checkpoint_dir, cities)
    logger.info(
        "%s seed %s: %s steps, best %s",
        spec.name,
        seed,
        result.steps,
        {k: round(v, 4) for k, v in result.best_metrics.items()},
    )
    return TrainedRun(seed=seed, fingerprint=fingerprint, checkpoint=result.checkpoint_dir, result=result)


class TableSource(Protocol):
    """Where per-city tables are read (the Dagster shell's ``StorageResource``, or anything alike)."""

    def has_table(self, city: str, asset: str) -> bool: ...

    def read_table(self, city: str, asset: str) -> pd.DataFrame: ...


@dataclass(frozen=True, slots=True)
class TrainingInputs:
    """What the family trains on: the training cities' records, and their subgraph tables for stage 2."""

    cities: list[str]
    records: pd.DataFrame
    subgraphs: SubgraphTables | None


def training_inputs(registry: CityRegistry, tables: TableSource, *, stage: int) -> TrainingInputs:
    """
    ``training_records`` of every registry city with ``split: train`` that has them, concatenated (and, for
    ``stage`` 2, their ``subgraph_nodes`` / ``subgraph_edges``).

    Raises
    ------
    FileNotFoundError
        No training city has ``training_records``; the message lists the training cities and the job to run.
    """
    training = [slug for slug in registry.slugs() if registry.get(slug).split == "train"]
    cities = [slug for slug in training if tables.has_table(slug, "training_records")]
    if not cities:
        msg = (
            "no training city has training_records yet; run city_dataset_job for a city with split: train "
            f"(training cities: {training})"
        )
        raise FileNotFoundError(msg)

    def concat(asset: str) -> pd.DataFrame:
        return pd.concat([tables.read_table(slug, asset) for slug in cities], ignore_index=True)

    subgraphs = SubgraphTables(concat("subgraph_nodes"), concat("subgraph_edges")) if stage == 2 else None
    return TrainingInputs(cities=cities, records=concat("training_records"), subgraphs=subgraphs)


def train_model(
    spec: ModelSpec,
    inputs: TrainingInputs,
    *,
    root: str | Path,
    base: TrainConfig,
    steps: int,
    seeds: Sequence[int],
    launch: Launch | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[TrainedRun]:
    """
    Train (or reuse) every seed of model ``spec`` on ``inputs`` and make each run current (:func:`train_seed`).

    ``on_step`` gets ``(seed, step, figures)``. A stage-2 model checks that its parent has a run for every seed
    before it trains any, so a missing parent fails before work starts.
    """
    root = Path(root)
    for seed in seeds:
        _parent_run(spec, root, seed)
    runs = []
    for seed in seeds:
        logger.info("%s: seed %s, %s steps", spec.name, seed, steps * spec.step_factor)
        runs.append(
            train_seed(
                spec,
                inputs.records,
                root=root,
                base=base,
                steps=steps,
                seed=seed,
                cities=inputs.cities,
                subgraphs=inputs.subgraphs,
                launch=launch,
                on_step=(lambda step, figures, _seed=seed: on_step(_seed, step, figures)) if on_step else None,
            )
        )
    return runs


def run_figures(runs: Sequence[TrainedRun]) -> dict[str, str | int | float | bool]:
    """
    What the runs of one model report: their seeds and fingerprints, and the first seed's budget, reuse,
    throughput, final training loss (mean of the last 20 steps), parameter counts and best validation figures.
    """
    first = runs[0].result
    history = first.history
    train_loss = history.loc[history["split"] == "train", "loss"] if "split" in history.columns else pd.Series()
    return {
        "seeds": ", ".join(str(r.seed) for r in runs),
        "steps": first.steps,
        "fingerprints": ", ".join(r.fingerprint for r in runs),
        "reused_finished_run": runs[0].reused,
        "samples_per_s": float(round(first.samples_per_s, 1)),
        "final_train_loss": float(train_loss.tail(20).mean()) if len(train_loss) else float("nan"),
        **{f"params/{k}": v for k, v in first.params_trained.items()},
        **{f"val/{k}": float(v) for k, v in first.best_metrics.items()},
    }
