"""The UGE models on a CUDA device agree with the CPU: a training step, bf16 VLM steps, embeddings.

Marked ``gpu``: the root conftest skips them, with the reason, where ``torch.cuda.is_available()`` is false.
Comparisons run with TF32 off (``exact_fp32``), so float32 on the GPU matches the CPU to rounding; the bf16
VLM steps are compared with the float32 CPU model at a bf16 tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ugdata_pipeline._pyg import Batch
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.uge.embed import build_model_graphs, embed_fusion, embed_images, embed_texts, load_model
from ugdata_pipeline.uge.losses import retrieval_metrics, symmetric_info_nce
from ugdata_pipeline.uge.train import TrainConfig, TrainResult, train
from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT
from ugdata_pipeline_tests.uge_tests.test_hf_vlm import GRAPH_CONFIG, make_backbone, street_images, subgraph

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
#: the compact model without randomness in a training step (dropout, augmentation), so devices can be compared
NO_NOISE = {**SMALL_COMPACT, "dropout": 0.0, "lora_dropout": 0.0, "augment": 0.0}


@pytest.fixture
def exact_fp32() -> Iterator[None]:
    """TF32 off for matmuls and convolutions (cuDNN allows it by default): float32 means float32 on the GPU too."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def train_steps(records: pd.DataFrame, root: Path, out: Path, *, cpu: bool) -> TrainResult:
    config = TrainConfig(
        stage=1,
        steps=3,
        eval_every_steps=3,
        batch_size=8,
        lr=2e-3,
        seed=0,
        out_dir=str(out),
        backbone_config=NO_NOISE,
        cpu=cpu,
    )
    return train(records, root=root, config=config, progress=False)


def test_compact_training_steps_on_cuda_match_the_cpu_steps(synthetic, tmp_path, exact_fp32):
    root, records, _ = synthetic
    on_cpu = train_steps(records, root, tmp_path / "cpu", cpu=True)
    torch.cuda.reset_peak_memory_stats(CUDA)
    on_cuda = train_steps(records, root, tmp_path / "cuda", cpu=False)
    assert torch.cuda.max_memory_allocated(CUDA) > 0  # the second run did run on the GPU
    losses = {
        name: run.history.loc[run.history["split"] == "train", "loss"].to_numpy()
        for name, run in (("cpu", on_cpu), ("cuda", on_cuda))
    }
    assert len(losses["cpu"]) == len(losses["cuda"]) == 3
    # step 1 is the same weights on the same batch; later steps follow AdamW updates, whose first steps are
    # about lr * sign(gradient): a gradient element at rounding level may flip, hence the looser bound
    assert losses["cuda"][0] == pytest.approx(losses["cpu"][0], rel=1e-5)
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-3)
    val = {name: run.best_metrics for name, run in (("cpu", on_cpu), ("cuda", on_cuda))}
    assert val["cuda"]["loss"] == pytest.approx(val["cpu"]["loss"], rel=1e-2)


def test_embeddings_on_cuda_equal_the_cpu_embeddings(synthetic, stage1_run, stage2_run, exact_fp32):
    root, records, subgraphs = synthetic
    rows = records[(records["stage"] == 1) & (records["variant"] == "ugdata")].drop_duplicates("image_id")
    paths, instructions = rows["image_path"].tolist(), rows["instruction"].tolist()
    texts = sorted(set(records["positive"]))
    for name, run in (("stage 1", stage1_run), ("stage 2", stage2_run)):
        on_cpu, on_cuda = (load_model(run.checkpoint_dir, device=device) for device in ("cpu", CUDA))
        assert on_cuda.logit_scale.device.type == "cuda"
        images = [embed_images(m, paths, instructions, root=root) for m in (on_cpu, on_cuda)]
        np.testing.assert_allclose(images[1], images[0], atol=1e-5, err_msg=name)
        words = [embed_texts(m, texts) for m in (on_cpu, on_cuda)]
        np.testing.assert_allclose(words[1], words[0], atol=1e-5, err_msg=name)
    # fusion: graphs built by each model (node texts on its device), fused on its device
    ids = rows["image_id"].astype(str).tolist()
    tables = SubgraphTables(*subgraphs)
    fused = [
        embed_fusion(m, paths, build_model_graphs(m, tables, ids), instructions, root=root)
        for m in (load_model(stage2_run.checkpoint_dir, device=d) for d in ("cpu", CUDA))
    ]
    np.testing.assert_allclose(fused[1], fused[0], atol=1e-5)
    assert np.abs(fused[0] - images[0]).max() > 1e-3  # the graph changed the query: fusion was compared


# ----------------------------------------------------------------------------------------- tiny Qwen2-VL in bf16

INSTRUCTIONS = ["Describe the place.", "Where is this?", "What is nearby?"]
POSITIVES = ["Cafe Uno is 40 m ahead.", "Bank Two lies north.", "Central Park is on the left."]


def vlm_pair(stage: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The tiny VLM twice from seed 0: float32 on the CPU, and bf16 (the GPU default) moved to the GPU."""
    pair = []
    for dtype, device in (("float32", "cpu"), ("bfloat16", CUDA)):
        backbone = make_backbone(dtype=dtype, lora_dropout=0.0).to(device)
        if stage == 2:
            torch.manual_seed(0)  # the graph side starts from the same weights on both
            backbone.attach_graph_encoder(GRAPH_CONFIG)
        backbone.train()
        pair.append(backbone)
    return pair[0], pair[1]


@pytest.mark.parametrize("stage", [1, 2])
def test_tiny_vlm_step_in_bf16_on_cuda(stage):
    reference, backbone = vlm_pair(stage)
    assert backbone.device.type == "cuda" and backbone.token_embeddings.weight.dtype == torch.bfloat16
    graphs = None
    if stage == 2:
        # node texts come from each model's own frozen embedding table (bf16 on the GPU)
        graphs = [
            Batch.from_data_list([subgraph(m, n, seed) for seed, n in enumerate((4, 3, 6))])
            for m in (reference, backbone)
        ]
        assert next(backbone.graph_encoder.parameters()).device.type == "cuda"
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    optimizer = torch.optim.AdamW(
        [{"params": backbone.backbone_parameters(), "lr": 1e-3}, {"params": backbone.graph_parameters(), "lr": 1e-2}]
    )
    outs = [
        model(street_images(3), INSTRUCTIONS, POSITIVES, graph=None if graphs is None else graphs[i])
        for i, model in enumerate((reference, backbone))
    ]
    # the bf16 GPU model computes what the float32 CPU model computes, to bf16 precision (rows are unit vectors;
    # a random model's loss sits near log 3 whatever it computes, so the vectors are compared, not the loss)
    for side in ("query", "positive"):
        ref, got = getattr(outs[0], side), getattr(outs[1], side)
        assert got.device.type == "cuda" and got.dtype == torch.float32
        assert (got.detach().cpu() * ref.detach()).sum(-1).min() > 0.999, side
    loss = symmetric_info_nce(outs[1].query, outs[1].positive)
    assert torch.isfinite(loss)
    loss.backward()
    torch.cuda.synchronize(CUDA)
    params = dict(backbone.named_parameters())
    lora = {n for n in params if "lora_" in n}
    graph_side = {n for n in params if n.startswith(backbone.GRAPH_PREFIXES)}
    assert lora and all(params[n].grad is not None and torch.isfinite(params[n].grad).all() for n in lora)
    assert bool(graph_side) == (stage == 2)
    assert all(params[n].grad is not None and torch.isfinite(params[n].grad).all() for n in graph_side)
    optimizer.step()
    changed = {n for n, p in params.items() if not torch.equal(p.detach(), before[n])}
    assert {n for n in lora if "lora_B" in n} <= changed  # B starts at zero and gets the first gradient
    assert changed <= lora | graph_side  # the frozen VLM (LLM, ViT, embeddings) is untouched
    if stage == 2:
        assert "graph_fusion.gain" in changed
    assert all(p.device.type == "cuda" for p in params.values())


def test_info_nce_and_retrieval_metrics_on_cuda_with_ids_from_the_cpu(exact_fp32):
    # the data pipeline builds text ids on the CPU; the embeddings live on the GPU
    gen = torch.Generator().manual_seed(3)
    q, d, hard = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen), torch.randn(6, 2, 5, generator=gen)
    ids = {
        "positive_ids": torch.tensor([10, 11, 10, 12, 13, 14]),
        "query_ids": torch.tensor([20, 21, 22, 23, 23, 24]),
        "hard_negative_ids": torch.tensor([[30, 10], [31, 32], [10, 33], [34, 35], [36, 37], [38, 14]]),
    }
    on_cpu = symmetric_info_nce(q, d, temperature=0.3, hard_negatives=hard, **ids)
    on_cuda = symmetric_info_nce(q.to(CUDA), d.to(CUDA), temperature=0.3, hard_negatives=hard.to(CUDA), **ids)
    assert on_cuda.device.type == "cuda"
    assert float(on_cuda) == pytest.approx(float(on_cpu), rel=1e-5)
    metrics = retrieval_metrics(q.to(CUDA), d.to(CUDA), positive_ids=ids["positive_ids"])
    assert metrics == pytest.approx(retrieval_metrics(q, d, positive_ids=ids["positive_ids"]))
