"""Benchmark hf_vlm training and embedding for every VLM family at its real size (random weights).

Run from the repository root::

    .venv/bin/python benchmarks/bench_hf_vlm.py                         # CUDA: every family at 7-8 B, batch 4 x 1024
    .venv/bin/python benchmarks/bench_hf_vlm.py --family llava_next     # one family
    .venv/bin/python benchmarks/bench_hf_vlm.py --steps 5 --warmup 2    # quicker
    .venv/bin/python benchmarks/bench_hf_vlm.py --size tiny --steps 1   # smoke run (what runs without CUDA; make test)
    .venv/bin/python benchmarks/bench_hf_vlm.py --json benchmarks/_work/bench_hf_vlm.json

What is measured, per family (Qwen2-VL-7B, Qwen2.5-VL-7B, Qwen3-VL-8B, LLaVA-1.6-Mistral-7B)
    stage 1   B queries (a street-view image at ``--image-px`` square + an instruction, filled to ``--seq`` tokens)
              and B text positives (``--seq`` tokens) through ``HfVlmBackbone.forward_inputs`` (last-token
              pooling), ``symmetric_info_nce``, backward and an AdamW step on the LoRA parameters (r 16, alpha 32,
              the family's default targets); with gradient checkpointing, and without it as the baseline.
    stage 2   the same, each query with one ``<graph>`` token fed by the GATv2 graph encoder over a 48-node
              subgraph (the encoder and projector train too).
    embed     batched query embedding under ``torch.inference_mode`` (queries/s).
    Tokenisation and image preprocessing are done once before timing (a data loader's job). Every timed step ends
    with ``torch.cuda.synchronize()``; the figures are MEDIANS over ``--steps`` steps after ``--warmup`` ones.

    The models are ``tiny_vlm(sizes=REAL_SIZES[family])``: the published checkpoints' exact sizes built with random
    bf16 weights directly on the GPU (no download). Never instantiated without CUDA. Phi-3-Vision's model code
    ships on the model hub, so it cannot be built here and is not benchmarked.

Figures
    step_s          median wall time of one optimizer step
    tokens_per_s    non-padding LLM tokens of the step (queries + positives) / step_s
    mfu             6 * N * T / step_s / peak, the usual estimate: N = language-model parameters without the
                    embedding table (the LM head is never run: hidden states are pooled), T = LLM tokens per step,
                    peak = dense bf16 peak of the card (H100/H200 989 TFLOP/s; ``--peak-tflops`` overrides).
                    With a frozen base, LoRA skips weight gradients (4NT) but checkpointing recomputes the forward
                    (+2NT), so 6NT is also close to the matmul work actually done.
    mfu_with_vision adds the frozen vision tower's forward, 2 * N_vit * patches, to the numerator.
    peak_mem_gib    torch.cuda.max_memory_allocated over the timed steps, beside ``uge.vlm_memory``'s estimate.

Targets (7-8 B size, one H100/H200, batch 4 x 1024, bf16): every step fits with checkpointing; MFU >= 0.35 on
stage-2 steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ugdata_pipeline.uge.graph_encoder import GraphEncoderConfig  # noqa: E402
from ugdata_pipeline.uge.hf_vlm import HfVlmBackbone  # noqa: E402 - after the path tweak, so the script runs from anywhere
from ugdata_pipeline.uge.hf_vlm_config import HFVLMConfig  # noqa: E402
from ugdata_pipeline.uge.hf_vlm_inputs import VLMInputs  # noqa: E402
from ugdata_pipeline.uge.hf_vlm_tiny import BUILDABLE_FAMILIES, REAL_SIZES, VLMSizes, tiny_vlm  # noqa: E402
from ugdata_pipeline.uge.losses import symmetric_info_nce  # noqa: E402
from ugdata_pipeline.uge.vlm_memory import training_memory  # noqa: E402

#: dense bf16 peak FLOP/s by a substring of ``torch.cuda.get_device_name()`` (no sparsity)
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100": 989e12,
    "H200": 989e12,
    "H800": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "B200": 2250e12,
}
WORDS = ("north", "street", "cafe", "park", "avenue", "corner", "bank", "tower", "left", "right", "bridge", "square")
MFU_TARGET = 0.35  # on stage-2 steps, bf16


def filler_text(n_chars: int, seed: int) -> str:
    """ASCII words, exactly ``n_chars`` long (the bench tokenizer is byte-level: one token per character)."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(" ".join(words)) < n_chars:
        words.append(str(rng.choice(WORDS)))
    text = " ".join(words)[:n_chars]
    return text[:-1] + "x" if text.endswith(" ") else text


def build_batch(
    backbone: HfVlmBackbone, batch: int, seq: int, image_px: int, graphs: int = 0
) -> tuple[VLMInputs, VLMInputs]:
    """Query and positive batches whose rows are ``seq`` tokens long (queries include image and graph tokens)."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (image_px, image_px, 3), dtype=np.uint8)) for _ in range(batch)]
    query_overhead = backbone.prepare(["x"], images[:1], [graphs]).num_tokens - 1
    text_overhead = backbone.prepare(["x"]).num_tokens - 1
    if seq <= query_overhead + 1:
        msg = f"--seq {seq} is too short: the prompt and a {image_px}px image already take {query_overhead} tokens"
        raise SystemExit(msg)
    instructions = [filler_text(seq - query_overhead, seed=i) for i in range(batch)]
    positives = [filler_text(seq - text_overhead, seed=100 + i) for i in range(batch)]
    return backbone.prepare(instructions, images, [graphs] * batch), backbone.prepare(positives)


def llm_and_vision_parameters(backbone: HfVlmBackbone) -> tuple[int, int]:
    """(language-model parameters without the embedding table, vision-tower parameters)."""
    core = backbone._core
    llm = sum(p.numel() for p in core.language_model.parameters())
    embedding = core.language_model.get_input_embeddings().weight.numel()
    vision = sum(p.numel() for p in core.parameters()) - llm  # vision tower + merger / projector
    return llm - embedding, vision


def vision_patches(backbone: HfVlmBackbone, queries: VLMInputs) -> int:
    """Patches the vision tower sees per step (Qwen: flattened patches; CLIP towers: crops x patches + CLS)."""
    pixels = queries.image_inputs["pixel_values"]
    if pixels.ndim == 2:
        return int(pixels.shape[0])
    vision = backbone._core.config.vision_config
    per_crop = (vision.image_size // vision.patch_size) ** 2 + 1
    return int(pixels.shape[0] * pixels.shape[1] * per_crop)


def star_graphs(backbone: HfVlmBackbone, count: int, nodes: int) -> Any:
    """``count`` star-shaped subgraphs of ``nodes`` nodes (edges both ways), as uge.data.build_graphs makes."""
    from torch_geometric.data import Batch, Data

    gen = torch.Generator().manual_seed(0)
    leaves = torch.arange(1, nodes)
    edge_index = torch.cat([torch.stack([leaves * 0, leaves]), torch.stack([leaves, leaves * 0])], dim=1)
    texts = backbone.encode_node_texts([f"place {i}, a cafe on a street" for i in range(nodes)])
    center = torch.zeros(nodes, dtype=torch.bool)
    center[0] = True
    graphs = [
        Data(
            x_text=texts,
            node_kind=torch.randint(0, 4, (nodes,), generator=gen),
            pos_m=torch.randn(nodes, 2, generator=gen) * 150,
            edge_index=edge_index,
            edge_attr=torch.randn(edge_index.shape[1], 5, generator=gen),
            center_mask=center,
            num_nodes=nodes,
        )
        for _ in range(count)
    ]
    return Batch.from_data_list(graphs)


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops is not None:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops:g}"
    if device.type != "cuda":
        return None, "no peak for CPU"
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops, f"{name} ({key} dense bf16)"
    return None, f"{name}: unknown peak, pass --peak-tflops"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(
    backbone: HfVlmBackbone,
    queries: VLMInputs,
    positives: VLMInputs,
    *,
    checkpointing: bool,
    steps: int,
    warmup: int,
    graphs: Any = None,
) -> dict[str, Any]:
    """Time ``warmup + steps`` optimizer steps (stage 2 when ``graphs`` is given); medians, or an OOM error."""
    device = backbone.device
    backbone.set_gradient_checkpointing(checkpointing)
    backbone.train()
    trainable = backbone.lora_parameters() + (list(backbone.graph_parameters()) if graphs is not None else [])
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, weight_decay=0.1)
    times: list[float] = []
    losses: list[float] = []
    out_of_memory = ""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        for step in range(warmup + steps):
            synchronize(device)
            start = time.perf_counter()
            vectors = backbone.graph_token_vectors(graphs) if graphs is not None else None
            query = backbone.forward_inputs(queries, vectors)
            positive = backbone.forward_inputs(positives)
            loss = symmetric_info_nce(query, positive)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
                losses.append(float(loss.detach()))
    except torch.OutOfMemoryError as error:
        out_of_memory = str(error).splitlines()[0]
    if out_of_memory:
        # after the except block, so the traceback (and the activations its frames hold) is gone
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"stage": 2 if graphs is not None else 1, "checkpointing": checkpointing, "error": out_of_memory}
    result: dict[str, Any] = {
        "stage": 2 if graphs is not None else 1,
        "checkpointing": checkpointing,
        "step_s": statistics.median(times),
        "step_s_min": min(times),
        "step_s_max": max(times),
        "loss_last": losses[-1],
    }
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del optimizer
    return result


def time_embedding(backbone: HfVlmBackbone, queries: VLMInputs, *, steps: int, warmup: int) -> dict[str, Any]:
    """Batched query embedding under inference mode: median seconds per batch and queries/s."""
    device = backbone.device
    backbone.eval()
    times: list[float] = []
    with torch.inference_mode():
        for step in range(warmup + steps):
            synchronize(device)
            start = time.perf_counter()
            backbone.forward_inputs(queries)
            synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
    batch_s = statistics.median(times)
    return {"batch_s": batch_s, "queries_per_s": queries.input_ids.shape[0] / batch_s}


def bench_family(family: str, args: argparse.Namespace, size: str, device: torch.device) -> dict[str, Any]:
    """Build one family's model, time stage 1 (with its baseline), stage 2 and embedding, then free it."""
    cuda = device.type == "cuda"
    seq = args.seq or (1024 if size == "7b" else 320)
    image_px = args.image_px or (448 if size == "7b" else 32)
    if size == "7b":
        sizes = REAL_SIZES[family]
        dtype, config_dtype = torch.bfloat16, "bfloat16"
    else:
        sizes = VLMSizes(family=family, image_max_pixels=image_px * image_px)
        dtype, config_dtype = (torch.bfloat16, "bfloat16") if cuda else (torch.float32, "float32")

    started = time.perf_counter()
    built = tiny_vlm(0, sizes=sizes, dtype=dtype, device=device)
    backbone = HfVlmBackbone(HFVLMConfig(dtype=config_dtype), built.model, built.tokenizer, built.processor)
    build_s = time.perf_counter() - started
    queries, positives = build_batch(backbone, args.batch, seq, image_px)
    queries, positives = queries.to(device), positives.to(device)
    tokens = queries.num_tokens + positives.num_tokens
    patches = vision_patches(backbone, queries)
    n_llm, n_vit = llm_and_vision_parameters(backbone)
    counts = backbone.parameter_counts()  # before the graph encoder joins
    peak, peak_source = peak_flops(device, args.peak_tflops)
    estimate = training_memory(
        sizes,
        sequences=2 * args.batch,
        tokens=seq,
        image_tokens=patches // args.batch,
        lora_targets=backbone.lora_targets,
        lora_r=backbone.config.lora_r,
    )

    timing = {"steps": args.steps, "warmup": args.warmup}
    runs = [run_config(backbone, queries, positives, checkpointing=True, **timing)]
    if not args.no_baseline:
        runs.append(run_config(backbone, queries, positives, checkpointing=False, **timing))
    backbone.attach_graph_encoder(GraphEncoderConfig())
    graph_queries, _ = build_batch(backbone, args.batch, seq, image_px, graphs=1)
    graphs = star_graphs(backbone, args.batch, nodes=48)
    runs.append(run_config(backbone, graph_queries.to(device), positives, checkpointing=True, graphs=graphs, **timing))
    for run in runs:
        if "error" in run:
            continue
        run["tokens_per_s"] = tokens / run["step_s"]
        model_flops = 6 * n_llm * tokens
        run["tflops_per_s"] = model_flops / run["step_s"] / 1e12
        run["mfu"] = model_flops / run["step_s"] / peak if peak else None
        run["mfu_with_vision"] = (model_flops + 2 * n_vit * patches) / run["step_s"] / peak if peak else None
    embed = time_embedding(backbone, queries, **timing)
    del backbone, built
    if cuda:
        torch.cuda.empty_cache()
    return {
        "family": family,
        "parameters_total": counts["total"],
        "parameters_lora": counts["lora"],
        "parameters_llm_non_embedding": n_llm,
        "parameters_vision": n_vit,
        "seq_target": seq,
        "image_px": image_px,
        "llm_tokens_per_step": tokens,
        "vision_patches_per_step": patches,
        "build_s": build_s,
        "peak_flops": peak,
        "peak_source": peak_source,
        "estimated_mem_gib": estimate.total,
        "runs": runs,
        "embed": embed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("7b", "tiny"), default=None, help="default: 7b on CUDA, tiny otherwise")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 1024; tiny: 320)")
    parser.add_argument("--image-px", type=int, default=None, help="square image side (default 448; tiny: 32)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--family", choices=(*BUILDABLE_FAMILIES, "all"), default="all")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the card's dense bf16 peak")
    parser.add_argument("--no-baseline", action="store_true", help="skip the stage-1 run without checkpointing")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    cuda = torch.cuda.is_available()
    size = args.size or ("7b" if cuda else "tiny")
    if size == "7b" and not cuda:
        print("bench_hf_vlm: the 7B-sized benchmark needs a CUDA GPU; run with --size tiny for a CPU smoke figure.")
        return 2
    if not cuda:
        print("bench_hf_vlm: no CUDA GPU here, so the 7B figures are not measured; running the tiny configs on CPU.")
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = torch.device("cuda" if cuda else "cpu")
    families = BUILDABLE_FAMILIES if args.family == "all" else (args.family,)
    report: dict[str, Any] = {
        "bench": "hf_vlm",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "size": size,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "families": [bench_family(family, args, size, device) for family in families],
        "not_benchmarked": {"phi3_v": "model code ships on the model hub (trust_remote_code); not buildable offline"},
    }
    print_report(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _count(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.3f} M"


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\nhf_vlm benchmark: {report['size']} models on {report['device']}; batch {report['batch']} queries + "
        f"{report['batch']} positives; medians over {report['steps']} steps after {report['warmup']} warm-up"
    )
    header = (
        f"  {'family':<11}{'step':<24}{'step s':>8}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'MFU+ViT':>9}"
        f"{'mem GiB':>9}{'est GiB':>9}"
    )
    for fam in report["families"]:
        print(
            f"\n  {fam['family']}: {_count(fam['parameters_total'])} parameters (LLM w/o embeddings "
            f"{_count(fam['parameters_llm_non_embedding'])}, vision {_count(fam['parameters_vision'])}), LoRA "
            f"{fam['parameters_lora']:,}; {fam['llm_tokens_per_step']:,} LLM tokens and "
            f"{fam['vision_patches_per_step']:,} vision patches per step; built in {fam['build_s']:.1f} s; "
            f"peak: {fam['peak_source']}"
        )
        print(header)
        for run in fam["runs"]:
            label = f"stage {run['stage']} " + ("ckpt" if run["checkpointing"] else "no ckpt (base)")
            if "error" in run:
                print(f"  {fam['family']:<11}{label:<24}out of memory: {run['error']}")
                continue
            print(
                f"  {fam['family']:<11}{label:<24}{run['step_s']:>8.3f}{run['tokens_per_s']:>11,.0f}"
                f"{run['tflops_per_s']:>9.1f}{_fmt(run['mfu'], '.3f'):>7}{_fmt(run['mfu_with_vision'], '.3f'):>9}"
                f"{_fmt(run.get('peak_mem_gib'), '.1f'):>9}{fam['estimated_mem_gib']:>9.1f}"
            )
        done = [r for r in fam["runs"] if "error" not in r and r["stage"] == 1]
        if len(done) == 2:
            on, off = done
            line = f"  ratio checkpointing on / off (stage 1): time x{on['step_s'] / off['step_s']:.2f}"
            if on.get("peak_mem_gib") and off.get("peak_mem_gib"):
                line += f", memory x{on['peak_mem_gib'] / off['peak_mem_gib']:.2f}"
            print(line)
        print(
            f"  embedding: {fam['embed']['queries_per_s']:,.1f} queries/s ({fam['embed']['batch_s']:.3f} s per batch)"
        )
        stage2 = [r for r in fam["runs"] if r["stage"] == 2 and "error" not in r]
        if report["size"] == "7b" and stage2 and stage2[0]["mfu"] is not None:
            verdict = "meets" if stage2[0]["mfu"] >= MFU_TARGET else "misses"
            print(f"  target MFU >= {MFU_TARGET:.2f} on stage-2 steps: {verdict} ({stage2[0]['mfu']:.3f})")
    for family, why in report["not_benchmarked"].items():
        print(f"\n  {family}: not benchmarked: {why}")


if __name__ == "__main__":
    raise SystemExit(main())
