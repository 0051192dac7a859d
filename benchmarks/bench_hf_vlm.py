"""Benchmark one hf_vlm training step: step time, tokens/s and MFU at Qwen2.5-VL-7B size (random weights).

Run from the repository root::

    .venv/bin/python benchmarks/bench_hf_vlm.py                       # CUDA: 7B-sized model, batch 4 x seq 1024
    .venv/bin/python benchmarks/bench_hf_vlm.py --steps 5 --warmup 2  # quicker
    .venv/bin/python benchmarks/bench_hf_vlm.py --size tiny           # smoke run (what runs without CUDA)
    .venv/bin/python benchmarks/bench_hf_vlm.py --json benchmarks/_work/bench_hf_vlm.json

What is measured
    The stage-1 step of UGE: B queries (a street-view image at ``--image-px`` square + an instruction, filled to
    ``--seq`` tokens) and B text positives (filled to ``--seq`` tokens) go through
    ``HfVlmBackbone.forward_inputs`` (last-token pooling), ``symmetric_info_nce``, backward and an AdamW step on
    the LoRA parameters (r 16, alpha 32, q_proj/v_proj). Tokenisation and image preprocessing are done once before
    timing (a data loader's job). Every timed step ends with ``torch.cuda.synchronize()``; the figures are MEDIANS
    over ``--steps`` steps after ``--warmup`` untimed ones.

    The model is ``tiny_qwen2_vl(sizes=QWEN2_5_VL_7B_SIZES)``: Qwen2.5-VL-7B-Instruct's exact sizes (8.29 B
    parameters: hidden 3584, 28 layers, 28 heads, 4 KV heads, MLP 18944, ViT depth 32) built with random bf16
    weights directly on the GPU (no download). Never instantiated without CUDA.

Figures
    step_s          median wall time of one optimizer step
    tokens_per_s    non-padding LLM tokens of the step (queries + positives) / step_s
    mfu             6 * N * T / step_s / peak, the usual estimate: N = language-model parameters without the
                    embedding table (the LM head is never run: hidden states are pooled), T = LLM tokens per step,
                    peak = dense bf16 peak of the card (H100/H200 989 TFLOP/s; ``--peak-tflops`` overrides).
                    With a frozen base, LoRA skips weight gradients (4NT) but checkpointing recomputes the forward
                    (+2NT), so 6NT is also close to the matmul work actually done.
    mfu_with_vision adds the frozen ViT's forward, 2 * N_vit * patches, to the numerator.
    peak_mem_gib    torch.cuda.max_memory_allocated over the timed steps.

Baseline, side by side
    The same model and batch with gradient checkpointing OFF (the reference trained with it on): the ratio shows
    what checkpointing costs in time and saves in memory. Out-of-memory is reported, not raised.

Targets (7B size, one H100, batch 4 x 1024): the step fits in memory with checkpointing; MFU >= 0.30.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from ugdata_pipeline.uge.hf_vlm import HfVlmBackbone  # noqa: E402 - after the path tweak, so the script runs from anywhere
from ugdata_pipeline.uge.hf_vlm_config import HFVLMConfig  # noqa: E402
from ugdata_pipeline.uge.hf_vlm_inputs import VLMInputs  # noqa: E402
from ugdata_pipeline.uge.hf_vlm_tiny import QWEN2_5_VL_7B_SIZES, VLMSizes, tiny_qwen2_vl  # noqa: E402
from ugdata_pipeline.uge.losses import symmetric_info_nce  # noqa: E402

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
MFU_TARGET = 0.30


def filler_text(n_chars: int, seed: int) -> str:
    """ASCII words, exactly ``n_chars`` long (the bench tokenizer is byte-level: one token per character)."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(" ".join(words)) < n_chars:
        words.append(str(rng.choice(WORDS)))
    text = " ".join(words)[:n_chars]
    return text[:-1] + "x" if text.endswith(" ") else text


def build_batch(backbone: HfVlmBackbone, batch: int, seq: int, image_px: int) -> tuple[VLMInputs, VLMInputs]:
    """Query and positive batches whose rows are ``seq`` tokens long (queries include the image tokens)."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (image_px, image_px, 3), dtype=np.uint8)) for _ in range(batch)]
    query_overhead = backbone.prepare(["x"], images[:1]).num_tokens - 1
    text_overhead = backbone.prepare(["x"]).num_tokens - 1
    if seq <= query_overhead + 1:
        msg = f"--seq {seq} is too short: the prompt and a {image_px}px image already take {query_overhead} tokens"
        raise SystemExit(msg)
    instructions = [filler_text(seq - query_overhead, seed=i) for i in range(batch)]
    positives = [filler_text(seq - text_overhead, seed=100 + i) for i in range(batch)]
    return backbone.prepare(instructions, images), backbone.prepare(positives)


def llm_and_vision_parameters(backbone: HfVlmBackbone) -> tuple[int, int]:
    """(language-model parameters without the embedding table, vision-tower parameters)."""
    core = backbone._core
    llm = sum(p.numel() for p in core.language_model.parameters())
    embedding = core.language_model.get_input_embeddings().weight.numel()
    vision = sum(p.numel() for p in core.visual.parameters())
    return llm - embedding, vision


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
) -> dict[str, Any]:
    """Time ``warmup + steps`` optimizer steps; returns medians, or ``{"error": ...}`` on out-of-memory."""
    device = backbone.device
    backbone.set_gradient_checkpointing(checkpointing)
    backbone.train()
    optimizer = torch.optim.AdamW(backbone.lora_parameters(), lr=1e-5, weight_decay=0.1)
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
            query = backbone.forward_inputs(queries)
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
        return {"checkpointing": checkpointing, "error": f"out of memory: {out_of_memory}"}
    result: dict[str, Any] = {
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("7b", "tiny"), default=None, help="default: 7b on CUDA, tiny otherwise")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 1024; tiny: 128)")
    parser.add_argument("--image-px", type=int, default=None, help="square image side (default 448; tiny: 32)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--family", choices=("qwen2_5_vl", "qwen2_vl"), default="qwen2_5_vl")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the card's dense bf16 peak")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without gradient checkpointing")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cuda = torch.cuda.is_available()
    size = args.size or ("7b" if cuda else "tiny")
    if size == "7b" and not cuda:
        print("bench_hf_vlm: the 7B-sized benchmark needs a CUDA GPU; run with --size tiny for a CPU smoke figure.")
        return 2
    if not cuda:
        print("bench_hf_vlm: no CUDA GPU here, so the 7B figures are not measured; running the tiny config on CPU.")
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = torch.device("cuda" if cuda else "cpu")
    seq = args.seq or (1024 if size == "7b" else 128)
    image_px = args.image_px or (448 if size == "7b" else 32)
    if size == "7b":
        sizes = QWEN2_5_VL_7B_SIZES
        if args.family == "qwen2_vl":  # Qwen2-VL-7B: same LLM, ViT with MLP ratio 4 and full attention
            sizes = dataclasses.replace(sizes, family="qwen2_vl", vision_intermediate_size=5120)
        dtype, config_dtype = torch.bfloat16, "bfloat16"
    else:
        sizes = VLMSizes(family=args.family, image_max_pixels=image_px * image_px)
        dtype, config_dtype = (torch.bfloat16, "bfloat16") if cuda else (torch.float32, "float32")

    started = time.perf_counter()
    tiny = tiny_qwen2_vl(0, sizes=sizes, dtype=dtype, device=device)
    config = HFVLMConfig(dtype=config_dtype, gradient_checkpointing=True)
    backbone = HfVlmBackbone(config, tiny.model, tiny.tokenizer, tiny.image_processor)
    build_s = time.perf_counter() - started
    queries, positives = build_batch(backbone, args.batch, seq, image_px)
    queries, positives = queries.to(device), positives.to(device)
    tokens = queries.num_tokens + positives.num_tokens
    patches = int(queries.pixel_values.shape[0])
    n_llm, n_vit = llm_and_vision_parameters(backbone)
    counts = backbone.parameter_counts()
    peak, peak_source = peak_flops(device, args.peak_tflops)

    runs = [run_config(backbone, queries, positives, checkpointing=True, steps=args.steps, warmup=args.warmup)]
    if not args.no_baseline:
        runs.append(run_config(backbone, queries, positives, checkpointing=False, steps=args.steps, warmup=args.warmup))
    for run in runs:
        if "error" in run:
            continue
        run["tokens_per_s"] = tokens / run["step_s"]
        model_flops = 6 * n_llm * tokens
        run["tflops_per_s"] = model_flops / run["step_s"] / 1e12
        run["mfu"] = model_flops / run["step_s"] / peak if peak else None
        run["mfu_with_vision"] = (model_flops + 2 * n_vit * patches) / run["step_s"] / peak if peak else None

    report: dict[str, Any] = {
        "bench": "hf_vlm",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "size": size,
        "family": sizes.family,
        "parameters_total": counts["total"],
        "parameters_lora": counts["lora"],
        "parameters_llm_non_embedding": n_llm,
        "parameters_vision": n_vit,
        "batch": args.batch,
        "seq_target": seq,
        "image_px": image_px,
        "llm_tokens_per_step": tokens,
        "vision_patches_per_step": patches,
        "build_s": build_s,
        "peak_flops": peak,
        "peak_source": peak_source,
        "steps": args.steps,
        "warmup": args.warmup,
        "runs": runs,
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
        f"\nhf_vlm step benchmark: {report['size']} {report['family']} on {report['device']}\n"
        f"  parameters {_count(report['parameters_total'])} (LLM w/o embeddings "
        f"{_count(report['parameters_llm_non_embedding'])}, ViT {_count(report['parameters_vision'])}), "
        f"LoRA {report['parameters_lora']:,}; built in {report['build_s']:.1f} s\n"
        f"  batch {report['batch']} queries + {report['batch']} positives, ~{report['seq_target']} tokens each "
        f"({report['llm_tokens_per_step']:,} LLM tokens, {report['vision_patches_per_step']:,} ViT patches per step)\n"
        f"  peak: {report['peak_source']}; medians over {report['steps']} steps after {report['warmup']} warm-up"
    )
    header = f"  {'checkpointing':<14}{'step s':>9}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'MFU+ViT':>9}{'mem GiB':>9}"
    print(header)
    for run in report["runs"]:
        label = "on" if run["checkpointing"] else "off (baseline)"
        if "error" in run:
            print(f"  {label:<14}{run['error']}")
            continue
        print(
            f"  {label:<14}{run['step_s']:>9.3f}{run['tokens_per_s']:>11,.0f}{run['tflops_per_s']:>9.1f}"
            f"{_fmt(run['mfu'], '.3f'):>7}{_fmt(run['mfu_with_vision'], '.3f'):>9}"
            f"{_fmt(run.get('peak_mem_gib'), '.1f'):>9}"
        )
    done = [r for r in report["runs"] if "error" not in r]
    if len(done) == 2:
        on, off = done
        line = f"  ratio checkpointing on / off: time x{on['step_s'] / off['step_s']:.2f}"
        if on.get("peak_mem_gib") and off.get("peak_mem_gib"):
            line += f", memory x{on['peak_mem_gib'] / off['peak_mem_gib']:.2f}"
        print(line)
    if report["size"] == "7b" and done and done[0]["checkpointing"] and done[0]["mfu"] is not None:
        verdict = "meets" if done[0]["mfu"] >= MFU_TARGET else "misses"
        print(f"  target MFU >= {MFU_TARGET:.2f} with checkpointing: {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
