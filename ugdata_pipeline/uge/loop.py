"""The training loop of :func:`ugdata_pipeline.uge.train.train`, around an explicit :class:`TrainingState`.

:func:`start_state` builds the optimizer, schedule and ``accelerate`` wrapping for a model (restoring a killed run's
optimizer and schedule); :func:`train_one_epoch` runs one pass over the train split from where the state stands,
validating (:func:`evaluate`), keeping the best checkpoint and rewriting ``checkpoints/last`` on the way. The state
holds everything a resumed run needs to take the same next step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ugdata_pipeline.atomic_files import write_text_atomic
from ugdata_pipeline.uge.backbone import Backbone
from ugdata_pipeline.uge.checkpoint import load_training_state, save_checkpoint
from ugdata_pipeline.uge.data import RecordBatch, epoch_batches
from ugdata_pipeline.uge.losses import retrieval_metrics, symmetric_info_nce

if TYPE_CHECKING:
    from ugdata_pipeline.uge.train import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["RunPlan", "TrainingState", "evaluate", "start_state", "train_one_epoch", "write_history"]

HISTORY_COLUMNS = [
    "step",
    "epoch",
    "split",
    "loss",
    "lr",
    "batch_acc",
    "temperature",
    "r@1",
    "r@5",
    "r@10",
    "mrr",
    "mean_rank",
    "chance_mrr",
]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What one run trains on and how far: fixed before the first step."""

    config: TrainConfig
    saved_config: dict[str, Any]  # the config as checkpoints record it (with init_from)
    out_dir: Path
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    make: Callable[[pd.DataFrame], RecordBatch]  # rows -> a model-ready batch (images, texts, graphs)
    total_steps: int
    eval_every: int | None  # validate every N steps (None: once per epoch)

    @property
    def last_dir(self) -> Path:
        return self.out_dir / "checkpoints" / "last"

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "checkpoints" / "best"

    @property
    def can_validate(self) -> bool:
        return self.config.eval_every_epoch and len(self.val_rows) >= 2


@dataclass(slots=True)
class TrainingState:
    """Everything a run carries from step to step; ``checkpoints/last`` stores enough of it to resume exactly."""

    model: torch.nn.Module  # as accelerate prepared it (DDP-wrapped under several processes)
    raw_model: Backbone  # the same model unwrapped: checkpoints, temperature, validation
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    accelerator: Any  # accelerate.Accelerator (imported lazily: a heavy import)
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # the epoch the next step belongs to
    batch_in_epoch: int = 0  # the batch of ``epoch`` the next step takes (a resumed run starts mid-epoch)
    best_metrics: dict[str, float] | None = None  # validation figures of the best checkpoint so far
    history: list[dict[str, Any]] = field(default_factory=list)  # per-step and per-validation rows
    trained_samples: int = 0  # records trained on by this call (throughput; 0 for a reused run)
    finished: bool = False

    def saved(self, epoch: int, batch_in_epoch: int, finished: bool) -> dict[str, Any]:
        """The trainer state a checkpoint records: where training continues, and the best figures so far."""
        return {
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "finished": finished,
            "best_metrics": self.best_metrics,
        }


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _param_groups(model: Backbone, config: TrainConfig) -> list[dict[str, Any]]:
    no_decay = ("bias", "norm", "Norm", "embedding")

    def split(params_named: list[tuple[str, torch.nn.Parameter]], lr: float, name: str) -> list[dict[str, Any]]:
        decay = [p for n, p in params_named if not any(k in n for k in no_decay) and p.ndim > 1]
        rest = [p for n, p in params_named if any(k in n for k in no_decay) or p.ndim <= 1]
        groups = [
            {"params": decay, "lr": lr, "weight_decay": config.weight_decay, "name": f"{name}_decay"},
            {"params": rest, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"},
        ]
        return [g for g in groups if g["params"]]

    graph_named = [(n, p) for n, p in model.named_parameters() if n.startswith(model.GRAPH_PREFIXES)]
    backbone_named = [
        (n, p) for n, p in model.named_parameters() if not n.startswith(model.GRAPH_PREFIXES) and p.requires_grad
    ]
    backbone_lr = config.lr * (config.backbone_lr_scale if config.stage == 2 else 1.0)
    groups = split(backbone_named, backbone_lr, "backbone")
    if config.stage == 2:
        frozen = [n for n, p in graph_named if not p.requires_grad]
        if not graph_named or frozen:
            msg = f"stage 2 needs a fully trainable graph encoder; frozen graph parameters: {frozen[:5]}."
            raise RuntimeError(msg)
        groups += split(graph_named, config.graph_lr, "graph")
    return groups


def start_state(
    model: Backbone,
    config: TrainConfig,
    *,
    total_steps: int,
    resume_from: Path | None = None,
    resume_state: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> TrainingState:
    """
    The state before the first step: AdamW (no decay on biases and norms), linear warmup + cosine decay, the model
    and optimizer prepared by ``accelerate``; with ``resume_from`` (a ``checkpoints/last`` folder) and its
    ``resume_state``, the optimizer, schedule, position, best figures and ``history`` of the killed run.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=config.cpu, mixed_precision=config.precision)
    optimizer = torch.optim.AdamW(_param_groups(model, config), foreach=True)  # one fused pass over the params
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, round(config.warmup_ratio * total_steps))
    )
    prepared, optimizer = accelerator.prepare(model, optimizer)
    state = TrainingState(
        model=prepared,
        raw_model=accelerator.unwrap_model(prepared),
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
    )
    if resume_from is not None and resume_state is not None:
        load_training_state(resume_from, optimizer, scheduler)
        state.step = int(resume_state["step"])
        state.epoch, state.batch_in_epoch = int(resume_state["epoch"]), int(resume_state["batch_in_epoch"])
        state.best_metrics = resume_state.get("best_metrics")
        state.history = list(history or [])
    return state


def temperature(model: Backbone, config: TrainConfig) -> torch.Tensor | float:
    """The InfoNCE temperature: the model's learned one, or the configured constant."""
    return model.temperature() if config.learn_temperature else config.temperature


def contrastive_loss(
    out: Any, batch: RecordBatch, config: TrainConfig, temperature: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE of one batch, with duplicate texts masked and hard negatives as configured."""
    return symmetric_info_nce(
        out.query,
        out.positive,
        temperature=temperature,
        hard_negatives=out.hard_negatives,
        positive_ids=batch.positive_ids if config.mask_duplicates else None,
        query_ids=batch.query_ids if config.mask_duplicates else None,
        hard_negative_ids=batch.hard_negative_ids if out.hard_negatives is not None else None,
        gather=gather,
    )


@torch.no_grad()
def evaluate(
    model: Backbone, val: pd.DataFrame, make: Callable[[pd.DataFrame], RecordBatch], config: TrainConfig
) -> dict[str, float]:
    """
    Val loss, and query -> text retrieval **within each pair type** (averaged over records).

    Within a pair type, because across types a model can tell captions from route texts by the instruction
    alone: over all val records at once that scored ~3x chance with images that carried no information.
    ``chance_mrr`` is the MRR of a random ranking of the same groups.
    """
    model.eval()
    queries, positives, ids, losses = [], [], [], []
    for start in range(0, len(val), config.val_batch_size):
        batch = make(val.iloc[start : start + config.val_batch_size])
        out = model(batch.images, batch.instructions, batch.positives, batch.graph, None)
        queries.append(out.query.float())
        positives.append(out.positive.float())
        ids.append(batch.positive_ids)
        if len(batch) >= 2:
            # every process validates the whole split, so nothing is gathered here
            loss = contrastive_loss(out, batch, config, temperature(model, config), gather=False)
            losses.append(float(loss) * len(batch))
    model.train()
    query, positive, positive_ids = torch.cat(queries), torch.cat(positives), torch.cat(ids)
    totals: dict[str, float] = {}
    by_type: dict[str, float] = {}
    types = val["pair_type"].astype(str).to_numpy()
    for pair_type in sorted(set(types)):
        rows = torch.from_numpy(np.flatnonzero(types == pair_type))
        if len(rows) < 2:
            continue
        part = retrieval_metrics(query[rows], positive[rows], positive_ids=positive_ids[rows])
        part["chance_mrr"] = sum(1.0 / k for k in range(1, len(rows) + 1)) / len(rows)
        by_type[f"mrr/{pair_type}"] = part["mrr"]
        for key, value in part.items():
            totals[key] = totals.get(key, 0.0) + value * len(rows)
    counted = max(1, sum(int((types == t).sum()) for t in set(types) if int((types == t).sum()) >= 2))
    metrics = {key: value / counted for key, value in totals.items()} | by_type
    metrics["loss"] = sum(losses) / max(1, len(val))
    return metrics


def _is_better(metrics: dict[str, float], best: dict[str, float] | None, key: str) -> bool:
    if best is None:
        return True
    if key == "loss":
        return metrics[key] < best[key]
    return metrics[key] > best[key]


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> pd.DataFrame:
    """``<out_dir>/history.csv`` (one row per step and per validation), written atomically; returns the frame."""
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    write_text_atomic(out_dir / "history.csv", frame.to_csv(index=False))
    return frame


def save_last(state: TrainingState, plan: RunPlan, epoch: int, batch_in_epoch: int, finished: bool = False) -> None:
    """Rewrite ``checkpoints/last`` (weights, optimizer, schedule, position) and the history: a resume point."""
    if state.accelerator.is_main_process:
        save_checkpoint(
            plan.last_dir,
            state.raw_model,
            state.optimizer,
            state.scheduler,
            state.step,
            plan.saved_config,
            state=state.saved(epoch, batch_in_epoch, finished),
        )
        write_history(plan.out_dir, state.history)


def validate_and_keep_best(state: TrainingState, plan: RunPlan, epoch: int, next_epoch: int, next_batch: int) -> None:
    """Validate, record the figures, and save ``checkpoints/best`` when they beat the best so far."""
    metrics = evaluate(state.raw_model, plan.val_rows, plan.make, plan.config)
    state.history.append({"step": state.step, "epoch": epoch, "split": "val", **metrics})
    logger.info("epoch %d step %d val %s", epoch, state.step, {k: round(v, 4) for k, v in metrics.items()})
    if _is_better(metrics, state.best_metrics, plan.config.best_metric):
        state.best_metrics = metrics
        if state.accelerator.is_main_process:
            save_checkpoint(
                plan.best_dir,
                state.raw_model,
                step=state.step,
                config=plan.saved_config,
                state=state.saved(next_epoch, next_batch, False),
            )


def _train_step(state: TrainingState, plan: RunPlan, rows: pd.DataFrame) -> dict[str, float]:
    """One optimizer step on ``rows``; returns the step's figures (loss, lr, in-batch accuracy, temperature)."""
    config, accelerator, raw_model = plan.config, state.accelerator, state.raw_model
    batch = plan.make(rows)
    with accelerator.autocast():
        out = state.model(batch.images, batch.instructions, batch.positives, batch.graph, batch.hard_negatives or None)
        loss = contrastive_loss(out, batch, config, temperature(raw_model, config))
    accelerator.backward(loss)
    if config.grad_clip > 0:
        accelerator.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.trained_samples += len(batch)
    with torch.no_grad():
        scores = out.query.float() @ out.positive.float().T
        batch_acc = float((scores.argmax(1) == torch.arange(len(batch), device=scores.device)).float().mean())
    return {
        "loss": float(loss.detach()),
        "lr": float(state.scheduler.get_last_lr()[0]),
        "batch_acc": batch_acc,
        "temperature": float(torch.as_tensor(temperature(raw_model, config)).detach()),
    }


def train_one_epoch(
    state: TrainingState,
    plan: RunPlan,
    *,
    bar: Any,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> None:
    """
    Train the rest of ``state.epoch`` (or up to the step budget), then move the state to the next epoch.

    Validation runs every ``plan.eval_every`` steps, or once at the end of the epoch; ``checkpoints/last`` is
    rewritten after each validation, every ``checkpoint_every_steps`` and at the epoch's end, so a killed run
    resumes at the next batch. ``bar`` is a tqdm bar (updated once per step).
    """
    config, accelerator = plan.config, state.accelerator
    epoch = state.epoch
    batches = epoch_batches(len(plan.train_rows), config.batch_size, seed=config.seed, epoch=epoch)
    saved_at = None
    for index in range(state.batch_in_epoch, len(batches)):
        # under DDP each process takes an equal share (all_gather needs equal sizes); the remainder is skipped
        global_rows = batches[index]
        global_rows = global_rows[: len(global_rows) - len(global_rows) % accelerator.num_processes]
        rows = global_rows[accelerator.process_index :: accelerator.num_processes]
        figures = _train_step(state, plan, plan.train_rows.iloc[rows])
        state.history.append({"step": state.step, "epoch": epoch, "split": "train", **figures})
        bar.update(1)
        bar.set_postfix(loss=f"{figures['loss']:.3f}", acc=f"{figures['batch_acc']:.2f}")
        at_end_of_epoch = index + 1 == len(batches)
        resume_at = (epoch + 1, 0) if at_end_of_epoch else (epoch, index + 1)
        budget_spent = state.step >= plan.total_steps
        if plan.can_validate and plan.eval_every is not None and (state.step % plan.eval_every == 0 or budget_spent):
            validate_and_keep_best(state, plan, epoch, *resume_at)
            save_last(state, plan, *resume_at, finished=budget_spent)
            saved_at = state.step
        elif config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0 and not at_end_of_epoch:
            save_last(state, plan, *resume_at)
        if on_step is not None:
            on_step(state.step, figures)
        if budget_spent:
            break
    # end of the epoch (or of the step budget): validate once per epoch unless validated by steps
    if plan.can_validate and plan.eval_every is None:
        validate_and_keep_best(state, plan, epoch, epoch + 1, 0)
    done = state.step >= plan.total_steps or (config.steps is None and epoch + 1 == config.epochs)
    if saved_at != state.step:
        save_last(state, plan, epoch + 1, 0, finished=done)
    state.finished = done
    state.epoch, state.batch_in_epoch = epoch + 1, 0
