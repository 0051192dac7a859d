"""How big each VLM family is and how much GPU memory training it takes (bf16 weights, LoRA, checkpointing).

Parameter counts follow each architecture's layer shapes (checked against the models transformers builds: see the
tests); the training-memory figure is an estimate of the peak on one GPU, component by component, for the README's
backbone table and for choosing a batch. Measured peaks come from ``benchmarks/bench_hf_vlm.py`` on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ugdata_pipeline.uge.hf_vlm_tiny import VLMSizes

GIB = 1024**3
CUDA_OVERHEAD_GIB = 1.0  # CUDA context, cuBLAS / attention workspaces, allocator slack


def _head_dim(s: VLMSizes) -> int:
    return s.head_dim or s.hidden_size // s.num_heads


def language_model_parameters(s: VLMSizes) -> int:
    """Decoder, token embeddings and LM head (untied in every family's 7-8 B checkpoint)."""
    h, hd, inter = s.hidden_size, _head_dim(s), s.intermediate_size
    q, kv = s.num_heads * hd, s.num_kv_heads * hd
    attention = h * q + 2 * h * kv + q * h
    if s.family in ("qwen2_vl", "qwen2_5_vl"):
        attention += q + 2 * kv  # q / k / v biases
    if s.family == "qwen3_vl":
        attention += 2 * hd  # q / k RMS norms
    layer = attention + 3 * h * inter + 2 * h
    return s.num_layers * layer + 2 * (s.vocab_size or 0) * h + h


def _clip_parameters(s: VLMSizes) -> int:
    vh, vi, p = s.vision_hidden_size, s.vision_intermediate_size, s.patch_size
    positions = (s.vision_image_size // p) ** 2 + 1
    layer = 4 * (vh * vh + vh) + (vh * vi + vi) + (vi * vh + vh) + 4 * vh
    return 3 * p * p * vh + vh + positions * vh + 4 * vh + s.vision_depth * layer


def vision_parameters(s: VLMSizes) -> int:
    """Vision tower and its projection into the language model (merger / projector)."""
    vh, vi, h, p, t = (
        s.vision_hidden_size,
        s.vision_intermediate_size,
        s.hidden_size,
        s.patch_size,
        s.temporal_patch_size,
    )
    merged = vh * s.merge_size**2
    if s.family == "llava_next":
        return _clip_parameters(s) + (vh * h + h) + (h * h + h) + h  # + projector + image newline
    if s.family == "phi3_v":
        return _clip_parameters(s) + (4 * vh * h + h) + (h * h + h) + 2 * 4 * vh  # + projector + GN separators
    attention = 3 * vh * vh + 3 * vh + vh * vh + vh
    merger = (merged * merged + merged) + (merged * h + h)
    if s.family == "qwen2_vl":
        block = attention + (vh * vi + vi) + (vi * vh + vh) + 4 * vh
        return 3 * t * p * p * vh + s.vision_depth * block + 2 * vh + merger
    if s.family == "qwen2_5_vl":
        block = attention + 3 * vh * vi + 2 * vi + vh + 2 * vh
        return 3 * t * p * p * vh + s.vision_depth * block + vh + merger
    # qwen3_vl: biased patch embedding, learned positions, LayerNorm blocks, deepstack mergers
    side = max(math.isqrt(s.image_max_pixels) // p, 2)  # the learned position table, as the model builds it
    block = attention + (vh * vi + vi) + (vi * vh + vh) + 4 * vh
    deepstack = len(s.deepstack_layers) * (2 * merged + merger)
    return 3 * t * p * p * vh + vh + side * side * vh + s.vision_depth * block + 2 * vh + merger + deepstack


def lora_parameters(s: VLMSizes, targets: Sequence[str], r: int) -> int:
    """LoRA A + B parameters on ``targets`` of every decoder layer."""
    h, hd, inter = s.hidden_size, _head_dim(s), s.intermediate_size
    q, kv = s.num_heads * hd, s.num_kv_heads * hd
    shapes = {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "qkv_proj": (h, q + 2 * kv),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "gate_up_proj": (h, 2 * inter),
        "down_proj": (inter, h),
    }
    return s.num_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


@dataclass(frozen=True)
class TrainingMemory:
    """Estimated peak GPU memory of one training step, GiB, by component."""

    weights: float
    lora_and_optimizer: float
    activations: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.lora_and_optimizer + self.activations + self.overhead


def training_memory(
    s: VLMSizes,
    *,
    sequences: int,
    tokens: int,
    image_tokens: int,
    lora_targets: Sequence[str],
    lora_r: int = 16,
) -> TrainingMemory:
    """Peak memory of a stage-2 step in bf16 with LoRA and activation checkpointing (estimate).

    Parameters
    ----------
    sequences, tokens
        Sequences per step (queries + texts) and tokens per sequence.
    image_tokens
        Vision-tower patches per query image (before merging).

    Notes
    -----
    Weights: 2 bytes per parameter. LoRA: float32 weights, gradients and two AdamW moments (16 bytes each).
    Activations: with checkpointing every decoder layer keeps its bf16 input, and one layer at a time is recomputed
    in the backward pass (q, k, v, o, the MLP's three projections and norms, forward and gradient); the vision tower
    likewise, for half the sequences (the queries). No logits are made: embeddings are pooled hidden states.
    """
    params = language_model_parameters(s) + vision_parameters(s)
    h, inter, hd = s.hidden_size, s.intermediate_size, _head_dim(s)
    kv = s.num_kv_heads * hd
    token_count = sequences * tokens
    kept = s.num_layers * token_count * h * 2
    recompute = 2 * token_count * (4 * h + 2 * kv + 3 * inter) * 2
    patches = (sequences // 2) * image_tokens
    vh, vi = s.vision_hidden_size, s.vision_intermediate_size
    vision = s.vision_depth * patches * vh * 2 + 2 * patches * (6 * vh + 2 * vi) * 2
    return TrainingMemory(
        weights=params * 2 / GIB,
        lora_and_optimizer=lora_parameters(s, lora_targets, lora_r) * 16 / GIB,
        activations=(kept + recompute + vision) / GIB,
        overhead=CUDA_OVERHEAD_GIB,
    )
