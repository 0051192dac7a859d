"""Which weights a run keeps: the best validation epoch (by MRR or by loss), across a resume, and without a val split.

Validation is scripted (``loop.evaluate`` replaced) so the best epoch is known and is neither the first nor the last:
keeping the last weights, or overwriting the best with every epoch, fails these tests.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from ugdata_pipeline.uge import loop
from ugdata_pipeline.uge.checkpoint import WEIGHTS_FILE, load_checkpoint
from ugdata_pipeline.uge.train import TrainConfig, train
from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT

STEPS_PER_EPOCH = 2  # the synthetic set's stage-1 train split in batches of 8


class ScriptedValidation:
    """Validation figures per call, in order; ``fail_at`` raises on that call (a run killed mid-way)."""

    def __init__(self, mrr: list[float], loss: list[float], fail_at: int | None = None) -> None:
        self.mrr, self.loss, self.fail_at, self.calls = mrr, loss, fail_at, 0

    def __call__(self, *args, **kwargs) -> dict[str, float]:
        call = self.calls
        self.calls += 1
        if call == self.fail_at:
            raise KeyboardInterrupt("killed")
        return {"mrr": self.mrr[call], "loss": self.loss[call], "r@1": 0.0, "chance_mrr": 0.1}


def _config(out: Path, **overrides) -> TrainConfig:
    settings = {"stage": 1, "epochs": 4, "batch_size": 8, "lr": 2e-3, **overrides}
    return TrainConfig(out_dir=str(out), backbone_config=SMALL_COMPACT, **settings)


def _saved_step(result_dir: Path) -> int:
    return int(load_checkpoint(result_dir).state["step"])


@pytest.mark.parametrize(("best_metric", "best_epoch"), [("mrr", 1), ("loss", 2)])
def test_the_best_epoch_is_kept_not_the_last(synthetic, tmp_path, monkeypatch, best_metric, best_epoch) -> None:
    root, records, _ = synthetic
    # MRR peaks at epoch 1, loss bottoms at epoch 2; both get worse after
    monkeypatch.setattr(loop, "evaluate", ScriptedValidation([0.2, 0.6, 0.4, 0.3], [2.0, 1.5, 1.2, 1.8]))
    result = train(records, root=root, config=_config(tmp_path / "run", best_metric=best_metric), progress=False)
    assert result.best_metrics["mrr"] == [0.2, 0.6, 0.4, 0.3][best_epoch]
    assert _saved_step(result.checkpoint_dir) == (best_epoch + 1) * STEPS_PER_EPOCH
    last = load_file(result.last_checkpoint_dir / WEIGHTS_FILE)
    best = load_file(result.checkpoint_dir / WEIGHTS_FILE)
    assert any(not last[k].equal(best[k]) for k in best)  # the best weights are not the last ones


def test_best_survives_a_resume(synthetic, tmp_path, monkeypatch) -> None:
    root, records, _ = synthetic
    out = tmp_path / "run"
    # killed while validating epoch 2, after epoch 1 (the best) was saved
    monkeypatch.setattr(loop, "evaluate", ScriptedValidation([0.2, 0.6], [2.0, 1.5], fail_at=2))
    with pytest.raises(KeyboardInterrupt):
        train(records, root=root, config=_config(out), progress=False)
    # the resumed run validates epochs 2 and 3 worse than epoch 1: the best stays epoch 1, with its figures
    monkeypatch.setattr(loop, "evaluate", ScriptedValidation([0.4, 0.3], [1.2, 1.8]))
    result = train(records, root=root, config=_config(out), progress=False)
    assert result.resumed
    assert result.best_metrics["mrr"] == 0.6
    assert _saved_step(result.checkpoint_dir) == 2 * STEPS_PER_EPOCH
    history = pd.read_csv(out / "history.csv")
    assert history.loc[history["split"] == "val", "mrr"].tolist() == [0.2, 0.6, 0.4, 0.3]


def test_without_a_validation_split_the_last_weights_are_kept(synthetic, tmp_path, monkeypatch) -> None:
    root, records, _ = synthetic
    calls = ScriptedValidation([], [])
    monkeypatch.setattr(loop, "evaluate", calls)
    train_only = records[records["split"] == "train"]
    result = train(train_only, root=root, config=_config(tmp_path / "run", epochs=3), progress=False)
    assert calls.calls == 0 and result.best_metrics == {}
    assert _saved_step(result.checkpoint_dir) == 3 * STEPS_PER_EPOCH
    last = load_file(result.last_checkpoint_dir / WEIGHTS_FILE)
    best = load_file(result.checkpoint_dir / WEIGHTS_FILE)
    assert all(last[k].equal(best[k]) for k in best)
