"""Checkpoint, run-pointer and embedding-cache files cut short are named with the fix, not read anonymously."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ugdata_pipeline.errors import CorruptFileError
from ugdata_pipeline.ugbench.models import EmbeddingCache
from ugdata_pipeline.uge.checkpoint import load_model_weights, load_training_state, read_checkpoint_config
from ugdata_pipeline.uge.runs import _pointer, _write_pointer, current_checkpoints


def cut_in_half(path):
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])


def checkpoint(folder, model: nn.Module, optimizer: torch.optim.Optimizer):
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": None, "torch_rng": torch.get_rng_state()},
        folder / "optimizer.pt",
    )
    (folder / "trainer_state.json").write_text(json.dumps({"step": 3}))
    (folder / "config.json").write_text(json.dumps({"model": {"backbone": "x"}, "train": {"lr": 0.1}}))
    return folder


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_truncated_checkpoint_file_is_named(tmp_path, name):
    model = nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    folder = checkpoint(tmp_path / "best", model, optimizer)
    cut_in_half(folder / name)
    path = re.escape(str(folder / name))
    with pytest.raises(
        CorruptFileError,
        match=rf"checkpoint file {path} is truncated or corrupt \(.+\); delete "
        rf"the checkpoint folder .*best and train it again",
    ) as caught:
        read_checkpoint_config(folder)
        load_model_weights(model, folder)
        load_training_state(folder, optimizer)
    assert caught.value.__cause__ is not None


def test_truncated_run_pointer_is_named(tmp_path):
    _write_pointer(tmp_path, "stage1", 0, "abc", tmp_path / "models" / "stage1" / "runs" / "abc", ["helsinki"])
    cut_in_half(_pointer(tmp_path, "stage1"))
    with pytest.raises(
        CorruptFileError,
        match=rf"run pointer {re.escape(str(_pointer(tmp_path, 'stage1')))} is "
        r"truncated or corrupt \(.+\); delete it and re-materialize the "
        r"stage1 model",
    ):
        current_checkpoints(tmp_path, "stage1")


def test_truncated_embedding_cache_shard_is_named(tmp_path):
    cache = EmbeddingCache(tmp_path, "model-a")
    cache.put([f"k{i}" for i in range(50)], np.ones((50, 16)))
    (shard,) = cache.folder.iterdir()
    cut_in_half(shard)
    with pytest.raises(
        CorruptFileError,
        match=rf"embedding cache shard {re.escape(str(shard))} is truncated or "
        r"corrupt \(.+\); delete it \(its vectors are computed again\)",
    ):
        EmbeddingCache(tmp_path, "model-a")
