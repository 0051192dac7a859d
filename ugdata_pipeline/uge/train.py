"""The UGE trainer: stage 1 (image <-> text), stage 2 (+ graph encoder), and the generic-caption baseline.

One loop on ``accelerate`` (device, precision, DDP) with AdamW, linear warmup + cosine decay, gradient clipping,
seeds, symmetric InfoNCE over in-batch negatives (gathered across processes), optional hard negatives and masking of
duplicate-text false negatives. Validation runs on the val split after every epoch (loss and query -> text
retrieval: Recall@1/5/10, MRR); the best checkpoint is kept. ``<out_dir>/checkpoints/last`` is rewritten at every
epoch end (and every ``checkpoint_every_steps``), so a killed run resumes where it stopped and reproduces the same
next step; a finished run is not redone.

Stage 2 resumes stage 1's weights (``init_from``), attaches a fresh graph encoder and fusion block and trains them at
``graph_lr`` while the backbone runs at ``lr * backbone_lr_scale``; the graph group is asserted non-empty and fully
trainable (the reference's graph encoder was silently frozen: notes §8 B1).

Outputs in ``out_dir``: ``checkpoints/{last,best}``, ``history.csv`` (per-step loss and lr, per-epoch validation),
``curve.png``. This module checks the inputs, resumes or starts a run and reports it; the loop itself (the training
state, one epoch, validation, the checkpoint saves) is :mod:`ugdata_pipeline.uge.loop`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
import torch

from ugdata_pipeline.atomic_files import write_file_atomic
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import TrainingDataError
from ugdata_pipeline.uge.backbone import Backbone, build_backbone
from ugdata_pipeline.uge.checkpoint import (
    STATE_FILE,
    build_model_from_config,
    load_model_weights,
    read_checkpoint_config,
    read_trainer_state,
    save_checkpoint,
)
from ugdata_pipeline.uge.data import (
    ImageStore,
    RecordBatch,
    build_graphs_shared,
    centre_only,
    epoch_batches,
    make_batch,
    shuffle_graphs,
    validate_records,
)
from ugdata_pipeline.uge.graph_encoder import GraphEncoderConfig
from ugdata_pipeline.uge.loop import RunPlan, start_state, train_one_epoch, write_history
from ugdata_pipeline.uge.losses import DEFAULT_TEMPERATURE

logger = logging.getLogger(__name__)

Precision = Literal["no", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
Variant = Literal["ugdata", "baseline"]
VARIANTS: tuple[str, ...] = get_args(Variant)
#: What stage 2's graph side sees: each record's own subgraph, another record's (the shuffled-graph ablation), or
#: only the image's centre node (the graph-dropped ablation; also at inference).
GraphInput = Literal["own", "shuffled", "none"]
GRAPH_INPUTS: tuple[str, ...] = get_args(GraphInput)
BEST_METRICS: tuple[str, ...] = ("mrr", "r@1", "r@5", "r@10", "loss")

__all__ = ["PRECISIONS", "VARIANTS", "TrainConfig", "TrainResult", "run_finished", "select_records", "train"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Every knob of one training run (saved in each checkpoint's ``config.json``)."""

    stage: int = 1  # 1: image <-> text; 2: + graph encoder (resumes stage 1 via init_from)
    variant: Variant = "ugdata"  # which records: "ugdata" (SCC/SRP) or "baseline" (generic captions)
    epochs: int = 3  # passes over the train split (ignored when `steps` is set)
    steps: int | None = None  # the budget in optimizer steps, cycling over the data as often as needed
    batch_size: int = 64  # records per step (in-batch negatives = batch_size - 1 per process)
    lr: float = 3e-4  # backbone learning rate (stage 2 uses lr * backbone_lr_scale)
    graph_lr: float = 1e-3  # graph encoder + fusion learning rate (stage 2)
    backbone_lr_scale: float = 0.1  # stage-2 backbone learning-rate factor
    temperature: float = DEFAULT_TEMPERATURE  # InfoNCE temperature (the initial one when it is learned)
    learn_temperature: bool = True  # learn the temperature with the model (CLIP's logit scale)
    warmup_ratio: float = 0.05  # share of steps with linear warmup
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and norms)
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    seed: int = 0  # model init, dropout and data order
    precision: Precision = "no"  # accelerate mixed precision
    max_steps: int | None = None  # stop (and end the LR schedule) after this many optimizer steps
    eval_every_epoch: bool = True  # validate on the val split after each epoch (or every eval_every_steps)
    eval_every_steps: int | None = None  # validate every N steps instead (default with `steps`: steps // 5)
    out_dir: str = "uge_run"  # run folder (checkpoints, history, curve)
    backbone: str = "compact"  # registry name (ugdata_pipeline.uge.backbone.BACKBONE_CLASSES)
    backbone_config: dict[str, Any] = field(default_factory=dict)  # backbone constructor config ({} = defaults)
    graph_encoder: dict[str, Any] = field(default_factory=dict)  # GraphEncoderConfig fields (stage 2)
    hard_negatives: int = 0  # hard-negative texts used per record (0 = in-batch negatives only)
    mask_duplicates: bool = True  # mask in-batch negatives with the same positive text / the same query
    max_nodes: int | None = 64  # nodes kept per subgraph (lowest rank first)
    pair_types: tuple[str, ...] | None = None  # restrict records to these pair types (None = all)
    best_metric: str = "mrr"  # validation metric that picks the best checkpoint ("loss": lowest)
    checkpoint_every_steps: int | None = None  # also save checkpoints/last every N steps
    cpu: bool = False  # force the CPU even when an accelerator is present
    val_batch_size: int = 256  # records per validation forward pass
    threads: int = 2  # torch threads inside training: fixed, so results do not depend on the machine's cores
    graph_input: GraphInput = "own"  # stage 2: "own" graphs, "shuffled" across records, or "none" (ablations)

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.stage in (1, 2), f"stage must be 1 or 2, got {self.stage!r}"),
            (self.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {self.variant!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs!r}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (InfoNCE needs negatives), got {self.batch_size!r}"),
            (self.lr > 0 and self.graph_lr > 0, f"lr and graph_lr must be > 0, got {self.lr!r}, {self.graph_lr!r}"),
            (self.backbone_lr_scale >= 0, f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale!r}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature!r}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps!r}"),
            (self.best_metric in BEST_METRICS, f"best_metric must be one of {BEST_METRICS}, got {self.best_metric!r}"),
            (self.hard_negatives >= 0, f"hard_negatives must be >= 0, got {self.hard_negatives!r}"),
            (self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps!r}"),
            (
                self.eval_every_steps is None or self.eval_every_steps >= 1,
                f"eval_every_steps must be >= 1, got {self.eval_every_steps!r}",
            ),
            (self.threads >= 1, f"threads must be >= 1, got {self.threads!r}"),
            (self.graph_input in GRAPH_INPUTS, f"graph_input must be one of {GRAPH_INPUTS}, got {self.graph_input!r}"),
        ]
        for ok, text in checks:
            if not ok:
                msg = f"TrainConfig: {text}."
                raise ValueError(msg)
        if self.graph_encoder:
            GraphEncoderConfig.from_dict(self.graph_encoder)  # validates the keys early

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["pair_types"] = list(self.pair_types) if self.pair_types is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"unknown TrainConfig keys {unknown}; known keys are {sorted(known)}."
            raise ValueError(msg)
        data = dict(data)
        if data.get("pair_types") is not None:
            data["pair_types"] = tuple(data["pair_types"])
        return cls(**data)


@dataclass(slots=True)
class TrainResult:
    """What :func:`train` returns (all figures metadata-friendly)."""

    checkpoint_dir: Path  # the best checkpoint (weights-only); load with embed.load_model
    last_checkpoint_dir: Path  # the resumable last checkpoint
    best_metrics: dict[str, float]  # validation metrics of the best epoch ({} without a val split)
    history: pd.DataFrame  # one row per step (split="train") and per validation (split="val")
    curve_png: bytes  # loss / MRR curve
    params_trained: dict[str, int]  # parameter counts: backbone and graph (trained), frozen (incl. frozen MiniLM)
    steps: int  # optimizer steps taken in total
    samples_per_s: float  # training throughput of this call (0 when nothing was trained)
    resumed: bool  # True when an earlier run in out_dir was continued or found finished


def select_records(
    records: pd.DataFrame, config: TrainConfig, *, splits: tuple[str, ...] | None = ("train", "val")
) -> pd.DataFrame:
    """
    The records one run trains and validates on: its stage and variant (and pair types), on ``splits``.

    ``splits=None`` keeps every split: the rows a run's fingerprint hashes
    (:func:`~ugdata_pipeline.uge.runs.run_fingerprint`), so a run is keyed by the same selection it trains on.

    Raises
    ------
    TrainingDataError
        No train record is left; the message lists the (stage, variant) pairs that do exist.
    """
    validate_records(records)
    stage = pd.to_numeric(records["stage"], errors="coerce")
    keep = (stage == config.stage) & (records["variant"].astype(str) == config.variant)
    if config.pair_types is not None:
        keep &= records["pair_type"].isin(config.pair_types)
    if splits is not None:
        keep &= records["split"].isin(list(splits))
    selected = records[keep].reset_index(drop=True)
    if not bool((selected["split"] == "train").any()):
        available = sorted({(int(s), str(v)) for s, v in zip(stage.fillna(-1), records["variant"], strict=True)})
        msg = (
            f"no train records for stage={config.stage}, variant={config.variant!r}"
            f"{f', pair_types={list(config.pair_types)}' if config.pair_types else ''}; "
            f"(stage, variant) pairs present: {available}."
        )
        raise TrainingDataError(msg)
    return selected


def _build_model(config: TrainConfig, init_from: Path | None) -> Backbone:
    torch.manual_seed(config.seed)
    if init_from is not None:
        saved = read_checkpoint_config(init_from)["model"]
        if saved["backbone"] != config.backbone:
            msg = (
                f"init_from {init_from} holds backbone {saved['backbone']!r}, but config.backbone={config.backbone!r}."
            )
            raise TrainingDataError(msg)
        model = build_model_from_config(
            {**saved, "graph_encoder": None if config.stage == 2 else saved.get("graph_encoder")}
        )
        if config.stage == 2:
            model.attach_graph_encoder(GraphEncoderConfig.from_dict(config.graph_encoder or {}))
        # stage 2 from a stage-1 checkpoint: the graph side is new, everything else must load
        load_model_weights(model, init_from, allow_missing_prefixes=model.GRAPH_PREFIXES)
        logger.info("initialised from %s", init_from)
        return model
    model = build_backbone(config.backbone, config.backbone_config)
    if config.stage == 2:
        logger.warning("stage 2 without init_from: the backbone starts untrained (the stage2_only ablation)")
        model.attach_graph_encoder(GraphEncoderConfig.from_dict(config.graph_encoder or {}))
    return model


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    # where the run and its parent live is not part of what it is: a moved data root resumes, never retrains
    ignored = ("out_dir", "init_from", "eval_every_epoch", "checkpoint_every_steps")
    return {k: v for k, v in config.items() if k not in ignored}


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """
    Run torch with exactly ``threads`` intra-op threads and deterministic algorithms, then restore both.

    CPU reductions (matrix products, sums) are split across threads, so their rounding depends on the thread
    count: the same training run on a 1-core and a 2-core machine drifted apart by several benchmark points.
    Fixing the count inside training and evaluation makes the numbers the same on any machine.
    """
    before_threads = torch.get_num_threads()
    before_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(before_threads)
        torch.use_deterministic_algorithms(before_deterministic)


def _curve_png(history: pd.DataFrame, title: str) -> bytes:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    train_rows = history[history["split"] == "train"]
    val_rows = history[history["split"] == "val"]
    if len(train_rows):
        ax.plot(train_rows["step"], train_rows["loss"], color="0.7", lw=0.8, label="train loss")
        smooth = train_rows["loss"].rolling(max(1, len(train_rows) // 20), min_periods=1).mean()
        ax.plot(train_rows["step"], smooth, color="C0", label="train loss (smoothed)")
    if len(val_rows):
        ax.plot(val_rows["step"], val_rows["loss"], "o-", color="C1", label="val loss")
        ax2 = ax.twinx()
        ax2.plot(val_rows["step"], val_rows["mrr"], "s--", color="C2", label="val MRR")
        ax2.set_ylabel("val MRR")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper center")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _count_params(model: Backbone) -> dict[str, int]:
    graph = sum(p.numel() for p in model.graph_parameters())
    backbone = sum(p.numel() for p in model.backbone_parameters())
    total = sum(p.numel() for p in model.parameters())
    frozen = total - backbone - graph + model.external_frozen_parameters()
    return {"backbone": backbone, "graph": graph, "frozen": frozen}


def train(
    records: pd.DataFrame,
    *,
    root: str | Path,
    subgraphs: SubgraphTables | None = None,
    config: TrainConfig,
    init_from: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """
    Train one UGE model (baseline, stage 1 or stage 2) and keep its best checkpoint.

    Parameters
    ----------
    records
        ``training_records`` (contract columns); rows of ``config.stage`` / ``config.variant`` on the train and val
        splits are used.
    root
        Storage root that ``image_path`` is relative to.
    subgraphs
        ``subgraph_nodes`` / ``subgraph_edges`` tables (required for stage 2).
    config
        :class:`TrainConfig`.
    init_from
        Checkpoint folder to start from (stage 2: the stage-1 best checkpoint).
    progress
        Show a tqdm progress bar.
    on_step
        Called after every optimizer step (and its checkpoint) with ``(step, {"loss": .., "lr": ..})``.

    Returns
    -------
    TrainResult
    """
    with fixed_threads(config.threads):
        return _train(
            records,
            root=root,
            subgraphs=subgraphs,
            config=config,
            init_from=init_from,
            progress=progress,
            on_step=on_step,
        )


def run_finished(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a finished run, which :func:`train` reuses as it is (training nothing)."""
    last_dir, best_dir = Path(out_dir) / "checkpoints" / "last", Path(out_dir) / "checkpoints" / "best"
    if not (last_dir / STATE_FILE).is_file() or not best_dir.is_dir():
        return False
    return bool(read_trainer_state(last_dir).get("finished"))


def _finished_result(out_dir: Path, best_dir: Path, last_dir: Path, state: dict[str, Any]) -> TrainResult:
    """The :class:`TrainResult` of a run that already finished, read back from its folder."""
    model = build_model_from_config(read_checkpoint_config(last_dir)["model"])
    history = pd.read_csv(out_dir / "history.csv") if (out_dir / "history.csv").is_file() else pd.DataFrame()
    curve = out_dir / "curve.png"
    logger.info("%s finished earlier (step %s): reusing it", out_dir, state.get("step"))
    return TrainResult(
        checkpoint_dir=best_dir,
        last_checkpoint_dir=last_dir,
        best_metrics=dict(state.get("best_metrics") or {}),
        history=history,
        curve_png=curve.read_bytes() if curve.is_file() else b"",
        params_trained=_count_params(model),
        steps=int(state.get("step", 0)),
        samples_per_s=0.0,
        resumed=True,
    )


def _stage2_graphs(graphs: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """The graphs stage 2 trains on, per :attr:`TrainConfig.graph_input` (own, shuffled across images, none)."""
    if config.graph_input == "shuffled":
        return shuffle_graphs(graphs, seed=config.seed)
    if config.graph_input == "none":
        return {image_id: centre_only(graph) for image_id, graph in graphs.items()}
    return graphs


def _check_inputs(
    records: pd.DataFrame,
    root: Path,
    subgraphs: SubgraphTables | None,
    config: TrainConfig,
    init_path: Path | None,
) -> pd.DataFrame:
    """The run's records (:func:`select_records`), after the cheap checks that must fail before any model is built."""
    if config.stage == 2 and subgraphs is None:
        msg = "stage 2 needs `subgraphs` (subgraph_nodes and subgraph_edges tables); pass SubgraphTables(nodes, edges)."
        raise TrainingDataError(msg)
    selected = select_records(records, config)
    n_train = int((selected["split"] == "train").sum())
    if n_train < 2:
        msg = f"only {n_train} train record(s) for stage {config.stage}; InfoNCE needs at least 2."
        raise TrainingDataError(msg)
    ImageStore(root, prepare=lambda image: image).check_exists(selected["image_path"].astype(str))
    if subgraphs is not None and config.stage == 2:
        covered = set(subgraphs.nodes["image_id"].astype(str)) if "image_id" in subgraphs.nodes.columns else set()
        uncovered = sorted(set(selected["image_id"].astype(str)) - covered)
        if uncovered:
            msg = (
                f"{len(uncovered)} stage-2 images have no subgraph (e.g. {uncovered[:3]}); build subgraphs for them "
                "or drop their records."
            )
            raise TrainingDataError(msg)
    if init_path is not None:
        read_checkpoint_config(init_path)  # raises naming what is missing
    return selected


def _resume_point(out_dir: Path, last_dir: Path, saved_config: dict[str, Any]) -> dict[str, Any] | None:
    """The trainer state of an earlier run in ``out_dir`` (None: start afresh); a run of another config is refused."""
    if not (last_dir / STATE_FILE).is_file():
        return None
    previous = read_checkpoint_config(last_dir)["train"]
    if _comparable(previous) != _comparable(saved_config):
        changed = sorted(k for k in _comparable(saved_config) if previous.get(k) != saved_config.get(k))
        msg = (
            f"{out_dir} holds a run with a different config (changed: {changed}); choose another out_dir or "
            "delete the old run to start over."
        )
        raise TrainingDataError(msg)
    return read_trainer_state(last_dir)


def _batch_maker(
    model: Backbone, root: Path, selected: pd.DataFrame, subgraphs: SubgraphTables | None, config: TrainConfig
) -> Callable[[pd.DataFrame], RecordBatch]:
    """Rows -> model-ready batches: the images, the stage-2 graphs and the text cache, loaded once per run."""
    images = ImageStore(root, model.prepare_image, model.prepare_identity())
    graphs = None
    if config.stage == 2:
        assert subgraphs is not None
        graphs = _stage2_graphs(
            build_graphs_shared(
                subgraphs,
                model.encode_node_texts,
                encoder_identity=model.node_text_identity(),
                image_ids=selected["image_id"].astype(str),
                max_nodes=config.max_nodes,
            ),
            config,
        )
    texts = [*selected["instruction"].fillna("").astype(str), *selected["positive"].astype(str)]
    if config.hard_negatives:
        texts += [t for v in selected["hard_negatives"] if v is not None for t in list(v)[: config.hard_negatives]]
    model.warm_text_cache(texts)

    def make(rows: pd.DataFrame) -> RecordBatch:
        return make_batch(
            rows,
            images=images,
            collate_images=model.collate_images,
            graphs=graphs,
            max_hard_negatives=config.hard_negatives,
        )

    return make


def _total_steps(n_train: int, config: TrainConfig) -> int:
    batches_per_epoch = len(epoch_batches(n_train, config.batch_size, seed=config.seed, epoch=0))
    total_steps = config.steps if config.steps is not None else config.epochs * batches_per_epoch
    return min(total_steps, config.max_steps) if config.max_steps is not None else total_steps


def _train(
    records: pd.DataFrame,
    *,
    root: str | Path,
    subgraphs: SubgraphTables | None,
    config: TrainConfig,
    init_from: str | Path | None,
    progress: bool,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    from tqdm.auto import tqdm

    root = Path(root)
    out_dir = Path(config.out_dir)
    subgraphs = SubgraphTables(*subgraphs) if subgraphs is not None else None  # a plain (nodes, edges) works too
    init_path = Path(init_from) if init_from is not None else None
    selected = _check_inputs(records, root, subgraphs, config, init_path)
    train_rows = selected[selected["split"] == "train"].reset_index(drop=True)
    val_rows = selected[selected["split"] == "val"].reset_index(drop=True)
    # checkpoints record where the parent lies relative to the run, never absolute: a data root moved or copied
    # elsewhere still names its parent (the run folder itself is where the checkpoint is, so it is not stored)
    parent = os.path.relpath(init_path, out_dir) if init_path else None
    saved_config = {**config.to_dict(), "out_dir": ".", "init_from": Path(parent).as_posix() if parent else None}

    # ---- resume or start -------------------------------------------------------------------------------------
    last_dir, best_dir = out_dir / "checkpoints" / "last", out_dir / "checkpoints" / "best"
    resume_state = _resume_point(out_dir, last_dir, saved_config)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume_state is not None and resume_state.get("finished") and best_dir.is_dir():
        # a finished run is reused as it is: no data to load, no text cache to fill
        return _finished_result(out_dir, best_dir, last_dir, resume_state)
    if resume_state is not None:
        model = build_model_from_config(read_checkpoint_config(last_dir)["model"])
        load_model_weights(model, last_dir)
    else:
        model = _build_model(config, init_path)
        if init_path is None:  # a fresh model starts from the configured temperature; stage 2 keeps stage 1's
            with torch.no_grad():
                model.logit_scale.fill_(math.log(1.0 / config.temperature))
    model.logit_scale.requires_grad_(config.learn_temperature)
    params_trained = _count_params(model)
    total_steps = _total_steps(len(train_rows), config)
    history = None
    if resume_state is not None and (out_dir / "history.csv").is_file():
        old = pd.read_csv(out_dir / "history.csv")
        history = old[old["step"] <= int(resume_state["step"])].to_dict("records")
    state = start_state(
        model,
        config,
        total_steps=total_steps,
        resume_from=last_dir if resume_state is not None else None,
        resume_state=resume_state,
        history=history,
    )
    if resume_state is not None:
        logger.info(
            "resuming %s at step %d (epoch %d, batch %d)", out_dir, state.step, state.epoch, state.batch_in_epoch
        )
    plan = RunPlan(
        config=config,
        saved_config=saved_config,
        out_dir=out_dir,
        train_rows=train_rows,
        val_rows=val_rows,
        make=_batch_maker(state.raw_model, root, selected, subgraphs, config),
        total_steps=total_steps,
        eval_every=config.eval_every_steps or (max(1, total_steps // 5) if config.steps is not None else None),
    )

    # ---- loop: one epoch at a time until the budget (steps or epochs) is spent --------------------------------
    state.finished = bool(resume_state and resume_state.get("finished"))
    started = time.perf_counter()
    state.model.train()
    bar = tqdm(
        total=total_steps,
        initial=state.step,
        desc=f"stage {config.stage} {config.variant}",
        disable=not progress or state.finished or not state.accelerator.is_main_process,
    )
    while not state.finished and state.step < total_steps and (config.steps is not None or state.epoch < config.epochs):
        train_one_epoch(state, plan, bar=bar, on_step=on_step)
    bar.close()
    elapsed = time.perf_counter() - started

    if not best_dir.is_dir() or (len(val_rows) < 2 and state.trained_samples):
        # no validation split: the last weights are the best we have
        save_checkpoint(
            best_dir, state.raw_model, step=state.step, config=saved_config, state=state.saved(config.epochs, 0, True)
        )
    frame = write_history(out_dir, state.history)
    png = _curve_png(frame, f"UGE stage {config.stage} ({config.variant}, {config.backbone})")
    write_file_atomic(out_dir / "curve.png", png)
    samples_per_s = state.trained_samples / elapsed if state.trained_samples else 0.0
    logger.info(
        "trained stage %d (%s): %d steps, %.1f samples/s, best %s",
        config.stage,
        config.variant,
        state.step,
        samples_per_s,
        {k: round(v, 4) for k, v in (state.best_metrics or {}).items()},
    )
    state.accelerator.free_memory()
    return TrainResult(
        checkpoint_dir=best_dir,
        last_checkpoint_dir=last_dir,
        best_metrics=dict(state.best_metrics or {}),
        history=frame,
        curve_png=png,
        params_trained=params_trained,
        steps=state.step,
        samples_per_s=samples_per_s,
        resumed=resume_state is not None,
    )
