"""The trainer: learning on a tiny synthetic set, stage 2 wiring and learning rates, LoRA adapters, resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import TrainingDataError
from ugdata_pipeline.uge.backbone import build_backbone
from ugdata_pipeline.uge.checkpoint import OPTIMIZER_FILE, WEIGHTS_FILE, load_checkpoint, read_checkpoint_config
from ugdata_pipeline.uge.data import ImageStore, build_graphs, make_batch
from ugdata_pipeline.uge.embed import embed_images, embed_texts
from ugdata_pipeline.uge.losses import retrieval_metrics, symmetric_info_nce
from ugdata_pipeline.uge.train import TrainConfig, TrainResult, _build_model, select_records, train
from ugdata_pipeline_tests.pictures import assert_drawn_png
from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT, SMALL_GRAPH

Synthetic = tuple[Path, pd.DataFrame, SubgraphTables]


def _val_retrieval(model: torch.nn.Module, records: pd.DataFrame, root: Path) -> dict[str, float]:
    val = records[(records["stage"] == 1) & (records["variant"] == "ugdata") & (records["split"] == "val")]
    queries = embed_images(model, val["image_path"].tolist(), val["instruction"].tolist(), root=root)
    texts = embed_texts(model, val["positive"].tolist())
    return retrieval_metrics(torch.from_numpy(queries), torch.from_numpy(texts))


def test_training_drives_loss_down_and_retrieval_up(synthetic: Synthetic, stage1_run: TrainResult) -> None:
    root, records, _ = synthetic
    torch.manual_seed(0)
    untrained = build_backbone("compact", SMALL_COMPACT).eval()
    before = _val_retrieval(untrained, records, root)
    after = _val_retrieval(load_checkpoint(stage1_run.checkpoint_dir).model, records, root)
    train_loss = stage1_run.history.loc[stage1_run.history["split"] == "train", "loss"].to_numpy()
    assert train_loss[-2:].mean() < 0.5 * train_loss[:2].mean()
    assert after["mrr"] > before["mrr"] + 0.2, (before, after)
    assert after["r@1"] > before["r@1"]
    assert stage1_run.best_metrics["mrr"] == pytest.approx(after["mrr"], abs=1e-5)
    assert_drawn_png(stage1_run.curve_png)
    assert (Path(stage1_run.checkpoint_dir).parent.parent / "history.csv").is_file()
    assert stage1_run.params_trained["graph"] == 0 and stage1_run.params_trained["backbone"] > 0
    assert stage1_run.params_trained["frozen"] > 20_000_000  # the frozen MiniLM


def test_select_records_picks_stage_and_variant(synthetic: Synthetic) -> None:
    _, records, _ = synthetic
    baseline = select_records(records, TrainConfig(stage=1, variant="baseline"))
    assert set(baseline["pair_type"]) == {"generic"} and set(baseline["stage"]) == {1}
    assert len(select_records(records, TrainConfig(stage=2))) == len(baseline)
    with pytest.raises(TrainingDataError, match=r"\(stage, variant\) pairs present"):
        select_records(records, TrainConfig(stage=2, variant="baseline"))


def test_stage2_needs_subgraphs(synthetic: Synthetic, tmp_path: Path) -> None:
    root, records, _ = synthetic
    with pytest.raises(TrainingDataError, match="stage 2 needs `subgraphs`"):
        train(records, root=root, config=TrainConfig(stage=2, out_dir=str(tmp_path)), progress=False)


def _lora_stage1(root: Path, records: pd.DataFrame, out: Path) -> TrainResult:
    config = TrainConfig(
        stage=1,
        epochs=1,
        max_steps=2,
        batch_size=6,
        lr=2e-3,
        out_dir=str(out),
        backbone_config={**SMALL_COMPACT, "text_tuning": "lora", "max_text_tokens": 24},
    )
    return train(records, root=root, config=config, progress=False)


@pytest.mark.slow
def test_stage2_trains_graph_encoder_and_lora_at_lower_rate(synthetic: Synthetic, tmp_path: Path) -> None:
    root, records, subgraphs = synthetic
    stage1 = _lora_stage1(root, records, tmp_path / "s1")
    # the peft adapter folder loads with PeftModel.from_pretrained and holds the trained LoRA weights
    from peft import PeftModel
    from transformers import AutoModel

    from ugdata_pipeline.uge.compact import minilm_model_dir

    adapter_dir = stage1.checkpoint_dir / "adapter"
    assert (adapter_dir / "adapter_config.json").is_file()
    with warnings.catch_warnings():  # peft 0.21 touches a transformers 5 deprecated alias
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_model_dir()), str(adapter_dir))
    saved = load_file(str(stage1.checkpoint_dir / WEIGHTS_FILE))
    lora_saved = {k: v for k, v in saved.items() if "lora_B" in k}
    assert lora_saved and any(float(v.abs().max()) > 0 for v in lora_saved.values())  # LoRA B trained off zero
    loaded = dict(peft_model.named_parameters())
    for key, value in lora_saved.items():
        peft_key = key.removeprefix("text_lora.")
        torch.testing.assert_close(loaded[peft_key], value)

    lr, graph_lr = 1e-3, 1e-3
    config = TrainConfig(
        stage=2,
        epochs=1,
        max_steps=1,
        batch_size=6,
        lr=lr,
        graph_lr=graph_lr,
        backbone_lr_scale=0.1,
        warmup_ratio=0.0,
        out_dir=str(tmp_path / "s2"),
        graph_encoder=SMALL_GRAPH,
        backbone_config={**SMALL_COMPACT, "text_tuning": "lora", "max_text_tokens": 24},
    )
    initial = _build_model(config, stage1.checkpoint_dir)
    # stage 2 starts from stage 1's weights: every saved stage-1 tensor is in the initial stage-2 model
    init_state = initial.state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(init_state[key], value, rtol=0, atol=0)
    graph_names = [n for n, _ in initial.named_parameters() if n.startswith(initial.GRAPH_PREFIXES)]
    assert graph_names and all(p.requires_grad for p in initial.graph_parameters())

    # every graph parameter gets a gradient from a fused step
    stage2 = records[(records["stage"] == 2) & (records["split"] == "train")].iloc[:6]
    graphs = build_graphs(subgraphs, initial.encode_node_texts, image_ids=stage2["image_id"])
    batch = make_batch(
        stage2, images=ImageStore(root, initial.prepare_image), collate_images=initial.collate_images, graphs=graphs
    )
    initial.train()
    out = initial(batch.images, batch.instructions, batch.positives, batch.graph)
    symmetric_info_nce(out.query, out.positive, positive_ids=batch.positive_ids).backward()
    no_grad = [n for n, p in initial.named_parameters() if n in graph_names and (p.grad is None or not p.grad.any())]
    assert no_grad == []

    before = {n: p.detach().clone() for n, p in _build_model(config, stage1.checkpoint_dir).named_parameters()}
    result = train(
        records, root=root, subgraphs=subgraphs, config=config, init_from=stage1.checkpoint_dir, progress=False
    )
    after = load_file(str(result.last_checkpoint_dir / WEIGHTS_FILE))
    unchanged = [n for n in graph_names if torch.equal(after[n], before[n])]
    assert unchanged == []
    graph_step = max(float((after[n] - before[n]).abs().max()) for n in graph_names)
    lora_names = [n for n in after if "lora_" in n]
    lora_step = max(float((after[n] - before[n]).abs().max()) for n in lora_names)
    # AdamW's first step moves each weight by about its group's learning rate
    assert 0.5 * lr * 0.1 < lora_step <= 1.05 * lr * 0.1
    assert graph_step > 0.5 * graph_lr
    groups = torch.load(result.last_checkpoint_dir / OPTIMIZER_FILE, weights_only=False)["optimizer"]["param_groups"]
    lrs = {g["name"]: g["initial_lr"] for g in groups}
    assert lrs["backbone_decay"] == pytest.approx(lr * 0.1) and lrs["graph_decay"] == pytest.approx(graph_lr)
    assert result.params_trained["graph"] == sum(before[n].numel() for n in graph_names)
    # the checkpoint names its parent relative to its own run folder: a copied data root still finds it
    saved = read_checkpoint_config(result.last_checkpoint_dir)["train"]
    assert saved["out_dir"] == "."
    assert (Path(config.out_dir) / saved["init_from"]).resolve() == Path(stage1.checkpoint_dir).resolve()
    assert not Path(saved["init_from"]).is_absolute()


def test_resume_reproduces_the_next_step_exactly(synthetic: Synthetic, tmp_path: Path) -> None:
    root, records, _ = synthetic

    def config(name: str) -> TrainConfig:
        return TrainConfig(
            stage=1,
            epochs=1,
            max_steps=3,
            batch_size=6,
            out_dir=str(tmp_path / name),
            backbone_config=SMALL_COMPACT,
            checkpoint_every_steps=1,
            eval_every_epoch=False,
        )

    straight = train(records, root=root, config=config("a"), progress=False)

    class KilledError(Exception):
        pass

    def kill_after_two(step: int, figures: dict[str, float]) -> None:
        if step == 2:
            raise KilledError

    with pytest.raises(KilledError):
        train(records, root=root, config=config("b"), progress=False, on_step=kill_after_two)
    resumed = train(records, root=root, config=config("b"), progress=False)
    assert resumed.resumed and resumed.steps == 3 == straight.steps
    a = load_file(str(straight.last_checkpoint_dir / WEIGHTS_FILE))
    b = load_file(str(resumed.last_checkpoint_dir / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses_a = straight.history.query("split == 'train'")["loss"].tolist()
    losses_b = resumed.history.query("split == 'train'")["loss"].tolist()
    assert losses_a == losses_b and len(losses_a) == 3
    # a finished run is not redone
    again = train(records, root=root, config=config("b"), progress=False)
    assert again.resumed and again.samples_per_s == 0 and again.steps == 3
    # the same out_dir with another config is refused
    with pytest.raises(TrainingDataError, match=r"different config \(changed: \['lr'\]\)"):
        train(records, root=root, config=TrainConfig.from_dict({**config("b").to_dict(), "lr": 1.0}), progress=False)


def test_bad_inputs_fail_before_any_model_is_built(synthetic: Synthetic, tmp_path: Path) -> None:
    root, records, subgraphs = synthetic
    config = TrainConfig(stage=2, out_dir=str(tmp_path / "run"), backbone_config=SMALL_COMPACT)
    with pytest.raises(TrainingDataError, match="image files are missing"):
        train(records, root=tmp_path / "elsewhere", subgraphs=subgraphs, config=config, progress=False)
    partial = SubgraphTables(subgraphs.nodes[subgraphs.nodes["image_id"] != "p0v0"], subgraphs.edges)
    with pytest.raises(TrainingDataError, match=r"1 stage-2 images have no subgraph \(e.g. \['p0v0'\]\)"):
        train(records, root=root, subgraphs=partial, config=config, progress=False)
    from ugdata_pipeline.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"lacks config\.json"):
        train(records, root=root, subgraphs=subgraphs, config=config, init_from=tmp_path, progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainConfig(batch_size=1)
