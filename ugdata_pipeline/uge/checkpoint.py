"""Checkpoints: trainable weights (safetensors), optimizer/scheduler/RNG state, trainer state, config, peft adapter.

Layout of a checkpoint folder, written atomically (a temporary sibling folder, then a rename)::

    model.safetensors     every trainable parameter and every buffer (frozen pretrained weights are rebuilt from
                          the backbone config, so checkpoints stay small)
    optimizer.pt          optimizer, scheduler and torch RNG state (absent in weights-only checkpoints)
    trainer_state.json    step, epoch, position in the epoch, best metric, finished flag
    config.json           {"model": Backbone.full_config(), "train": TrainConfig dict}
    adapter/              the peft adapter, when LoRA is used (``PeftModel.from_pretrained(base, adapter_dir)``)

The config is complete (backbone, graph encoder, every training knob), so no loader has to guess shapes (the
reference saved an incomplete config: notes §8 B9).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ugdata_pipeline.errors import CheckpointError, CorruptFileError
from ugdata_pipeline.uge.backbone import Backbone, build_backbone
from ugdata_pipeline.uge.graph_encoder import GraphEncoderConfig

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.json"
ADAPTER_DIR = "adapter"

__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "build_model_from_config",
    "load_checkpoint",
    "load_model_weights",
    "load_training_state",
    "read_checkpoint_config",
    "read_trainer_state",
    "save_checkpoint",
    "trainable_state_dict",
]


@dataclass(slots=True)
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint folder."""

    model: Backbone
    config: dict[str, Any]  # config.json
    state: dict[str, Any]  # trainer_state.json
    directory: Path


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers of ``model``, as contiguous CPU tensors (what checkpoints store)."""
    keys = _saved_keys(model)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if k in keys}


def _saved_keys(model: nn.Module) -> set[str]:
    """State-dict keys a checkpoint stores: trainable parameters and persistent buffers."""
    params = dict(model.named_parameters())
    return {k for k in model.state_dict() if k not in params or params[k].requires_grad}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")


def save_checkpoint(
    directory: str | Path,
    model: Backbone,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int = 0,
    config: dict[str, Any] | None = None,
    *,
    state: dict[str, Any] | None = None,
) -> Path:
    """
    Write a checkpoint folder atomically (replacing an older one at the same path).

    Parameters
    ----------
    directory
        Target folder (its parent is created).
    model
        The (unwrapped) backbone.
    optimizer, scheduler
        Saved with the torch RNG state in ``optimizer.pt`` when given (needed to resume exactly).
    step
        Optimizer steps taken.
    config
        Training config dict, stored under ``"train"`` in ``config.json`` next to ``model.full_config()``.
    state
        Extra trainer state (epoch, position in the epoch, best metric, ...), merged into ``trainer_state.json``.

    Returns
    -------
    directory
        The written folder.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state_dict(model), str(tmp / WEIGHTS_FILE))
    if optimizer is not None:
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "torch_rng": torch.get_rng_state(),
            },
            tmp / OPTIMIZER_FILE,
        )
    _write_json(tmp / STATE_FILE, {"step": int(step), **(state or {})})
    _write_json(tmp / CONFIG_FILE, {"model": model.full_config(), "train": config or {}})
    peft_model = model.peft_model()
    if peft_model is not None:
        peft_model.save_pretrained(str(tmp / ADAPTER_DIR))
    # swap in: the old folder is moved aside first so a crash never leaves neither
    old = directory.parent / f".{directory.name}.old-{os.getpid()}"
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    logger.debug("saved checkpoint %s (step %d)", directory, step)
    return directory


def _corrupt(path: Path, exc: Exception) -> CorruptFileError:
    msg = (
        f"checkpoint file {path} is truncated or corrupt ({exc}); delete the checkpoint folder {path.parent} and "
        "train it again (re-materialize the model that wrote it)"
    )
    return CorruptFileError(msg)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, exc) from exc


def read_trainer_state(directory: str | Path) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint folder (:class:`CorruptFileError` naming it when it is damaged)."""
    return _read_json(Path(directory) / STATE_FILE)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder (raises :class:`CheckpointError` naming what is missing)."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE):
        if not (directory / name).is_file():
            msg = f"checkpoint {directory} lacks {name}; pass a folder written by save_checkpoint (e.g. <out>/best)."
            raise CheckpointError(msg)
    return _read_json(directory / CONFIG_FILE)


def build_model_from_config(model_config: dict[str, Any]) -> Backbone:
    """A fresh backbone (with its graph encoder, if the config has one) from ``config.json["model"]``."""
    model = build_backbone(model_config["backbone"], model_config.get("backbone_config") or {})
    if model_config.get("graph_encoder"):
        model.attach_graph_encoder(GraphEncoderConfig.from_saved(model_config["graph_encoder"]))
    return model


def load_model_weights(
    model: nn.Module, directory: str | Path, *, allow_missing_prefixes: tuple[str, ...] = ()
) -> None:
    """
    Load ``model.safetensors`` into ``model``.

    Every key in the file must exist in the model. Model keys absent from the file must be frozen parameters
    (rebuilt from the pretrained package) or start with one of ``allow_missing_prefixes`` (e.g. the graph encoder
    a stage-2 run adds to a stage-1 checkpoint).
    """
    path = Path(directory) / WEIGHTS_FILE
    try:
        weights = load_file(str(path))
    except SafetensorError as exc:
        raise _corrupt(path, exc) from exc
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        msg = (
            f"checkpoint {directory} holds weights the model lacks: {result.unexpected_keys[:5]}; build the model "
            "from the checkpoint's config.json (load_checkpoint) instead."
        )
        raise CheckpointError(msg)
    trainable = _saved_keys(model)
    missing = [k for k in result.missing_keys if k in trainable and not k.startswith(allow_missing_prefixes)]
    if missing:
        msg = f"checkpoint {directory} lacks trainable weights {missing[:5]} ({len(missing)} in all)."
        raise CheckpointError(msg)


def load_checkpoint(directory: str | Path) -> LoadedCheckpoint:
    """
    Rebuild the model saved in a checkpoint folder (weights loaded, in eval mode).

    Returns
    -------
    LoadedCheckpoint
        ``model``, ``config`` (``config.json``), ``state`` (``trainer_state.json``), ``directory``.
    """
    directory = Path(directory)
    config = read_checkpoint_config(directory)
    model = build_model_from_config(config["model"])
    load_model_weights(model, directory)
    model.eval()
    state = read_trainer_state(directory)
    return LoadedCheckpoint(model=model, config=config, state=state, directory=directory)


def load_training_state(
    directory: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any | None = None
) -> dict[str, Any]:
    """
    Restore optimizer, scheduler and torch RNG state from ``optimizer.pt``; return ``trainer_state.json``.

    Raises
    ------
    CheckpointError
        The folder is a weights-only checkpoint (no ``optimizer.pt``).
    """
    directory = Path(directory)
    path = directory / OPTIMIZER_FILE
    if not path.is_file():
        msg = f"checkpoint {directory} has no {OPTIMIZER_FILE}; it is weights-only and cannot be resumed."
        raise CheckpointError(msg)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:  # torch's truncated-archive errors
        raise _corrupt(path, exc) from exc
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved.get("scheduler") is not None:
        scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    return read_trainer_state(directory)
