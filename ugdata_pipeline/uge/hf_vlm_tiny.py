"""Random-weight Qwen2-VL / Qwen2.5-VL models built in code (no hub access): tiny for tests, or at
Qwen2.5-VL-7B size (:data:`QWEN2_5_VL_7B_SIZES`) for the GPU benchmark."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.qwen_vl import (
    END_OF_TEXT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    VlmFamily,
)

CPU_PARAMETER_LIMIT = 1_000_000_000  # tiny_qwen2_vl refuses bigger random models on the CPU (tests never need one)


class TinyVLM(NamedTuple):
    """A random-weight VLM built in code: the model, its tokenizer and its image processor."""

    model: Any
    tokenizer: Any
    image_processor: Any


@dataclass(frozen=True)
class VLMSizes:
    """Sizes of a random-weight Qwen2-VL / Qwen2.5-VL built by :func:`tiny_qwen2_vl`.

    The defaults are tiny (CPU tests in well under a second per step); :data:`QWEN2_5_VL_7B_SIZES` matches
    Qwen2.5-VL-7B-Instruct and must only be instantiated on a GPU.
    """

    family: VlmFamily = "qwen2_vl"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int | None = None  # None: the tokenizer's size rounded up to a multiple of 64
    vision_depth: int = 1
    vision_hidden_size: int = 32
    vision_heads: int = 2
    vision_intermediate_size: int = 64  # qwen2_5_vl; qwen2_vl uses mlp_ratio = intermediate / hidden
    patch_size: int = 4
    merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int = 16  # qwen2_5_vl windowed attention, in pixels
    fullatt_block_indexes: tuple[int, ...] = (0,)
    rope_theta: float = 10_000.0
    image_min_pixels: int = 16 * 16
    image_max_pixels: int = 32 * 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "fullatt_block_indexes", tuple(int(i) for i in self.fullatt_block_indexes))
        if self.family not in ("qwen2_vl", "qwen2_5_vl"):
            msg = f"`family` must be 'qwen2_vl' or 'qwen2_5_vl', got {self.family!r}"
            raise HFVLMError(msg)
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            msg = (
                f"hidden_size {self.hidden_size} must divide by num_heads {self.num_heads}, which must divide by "
                f"num_kv_heads {self.num_kv_heads}"
            )
            raise HFVLMError(msg)
        if (self.hidden_size // self.num_heads) % 2 or self.vision_hidden_size % self.vision_heads:
            msg = "head dimensions must be even and vision_hidden_size must divide by vision_heads"
            raise HFVLMError(msg)


QWEN2_5_VL_7B_SIZES = VLMSizes(
    family="qwen2_5_vl",
    hidden_size=3584,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    intermediate_size=18944,
    vocab_size=152064,
    vision_depth=32,
    vision_hidden_size=1280,
    vision_heads=16,
    vision_intermediate_size=3420,
    patch_size=14,
    merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=(7, 15, 23, 31),
    rope_theta=1_000_000.0,
    image_min_pixels=56 * 56,
    image_max_pixels=448 * 448,
)
"""Qwen2.5-VL-7B-Instruct sizes (8.3 B parameters): GPU only."""


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension in Qwen's 16:24:24 proportion."""
    half = head_dim // 2
    temporal = max(1, half // 4)
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def tiny_tokenizer(graph_token: str = "<graph>") -> Any:
    """A byte-level BPE tokenizer (no merges: one token per UTF-8 byte) with Qwen2-VL's special tokens.

    Any text is encodable; the 256 byte tokens come first, then ``<|endoftext|>`` (padding),
    ``<|im_start|>``, ``<|im_end|>``, the vision tokens and ``graph_token``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    specials = [END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, graph_token]
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=END_OF_TEXT, eos_token=IM_END, padding_side="right")


def tiny_qwen2_vl(
    seed: int = 0,
    *,
    sizes: VLMSizes | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    attn_implementation: str = "sdpa",
    graph_token: str = "<graph>",
) -> TinyVLM:
    """Build a random-weight Qwen2-VL (or Qwen2.5-VL) with its tokenizer and image processor, offline.

    Parameters
    ----------
    seed
        Seed of the weight initialisation (the global RNG state is left untouched).
    sizes
        Model sizes; default tiny (hidden 64, 2 layers, vision depth 1, patch 4). ``QWEN2_5_VL_7B_SIZES`` for
        the benchmark (GPU only).
    dtype, device
        Where and in which dtype the weights are created (created in place: no CPU copy of a 7B model).
    attn_implementation
        ``"sdpa"`` or ``"eager"``.
    graph_token
        Graph placeholder added to the tokenizer.

    Returns
    -------
    TinyVLM
        ``(model, tokenizer, image_processor)``.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    sizes = sizes or VLMSizes()
    tokenizer = tiny_tokenizer(graph_token)
    token_id = tokenizer.convert_tokens_to_ids
    vocab_size = sizes.vocab_size or 64 * math.ceil(len(tokenizer) / 64)
    if vocab_size < len(tokenizer):
        msg = f"`vocab_size` {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)"
        raise HFVLMError(msg)
    head_dim = sizes.hidden_size // sizes.num_heads
    text = {
        "vocab_size": vocab_size,
        "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "num_hidden_layers": sizes.num_layers,
        "num_attention_heads": sizes.num_heads,
        "num_key_value_heads": sizes.num_kv_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": sizes.rope_theta,
            "mrope_section": _mrope_section(head_dim),
        },
        "pad_token_id": token_id(END_OF_TEXT),
        "eos_token_id": token_id(IM_END),
        "bos_token_id": None,
    }
    special_ids = {
        "image_token_id": token_id(IMAGE_PAD),
        "video_token_id": token_id(VIDEO_PAD),
        "vision_start_token_id": token_id(VISION_START),
        "vision_end_token_id": token_id(VISION_END),
    }
    common_vision = {
        "depth": sizes.vision_depth,
        "num_heads": sizes.vision_heads,
        "patch_size": sizes.patch_size,
        "spatial_merge_size": sizes.merge_size,
        "temporal_patch_size": sizes.temporal_patch_size,
    }
    if sizes.family == "qwen2_vl":
        vision = {
            **common_vision,
            "embed_dim": sizes.vision_hidden_size,
            "hidden_size": sizes.hidden_size,  # output of the merger
            "mlp_ratio": max(1, sizes.vision_intermediate_size // sizes.vision_hidden_size),
        }
        config: Any = Qwen2VLConfig(text_config=text, vision_config=vision, **special_ids)
        model_cls: Any = Qwen2VLForConditionalGeneration
    else:
        vision = {
            **common_vision,
            "hidden_size": sizes.vision_hidden_size,
            "intermediate_size": sizes.vision_intermediate_size,
            "out_hidden_size": sizes.hidden_size,
            "window_size": sizes.window_size,
            "fullatt_block_indexes": list(sizes.fullatt_block_indexes),
        }
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special_ids)
        model_cls = Qwen2_5_VLForConditionalGeneration

    device = torch.device(device)
    h = sizes.hidden_size
    approx_params = sizes.num_layers * (4 * h * h + 3 * h * sizes.intermediate_size) + 2 * vocab_size * h
    if device.type == "cpu" and approx_params > CPU_PARAMETER_LIMIT:
        msg = (
            f"refusing to build a {approx_params / 1e9:.1f} B-parameter random model on the CPU; pass "
            "device='cuda' (or 'meta' to inspect shapes)"
        )
        raise HFVLMError(msg)
    fork_devices = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices), torch.device(device):
        torch.manual_seed(seed)
        model = model_cls._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=sizes.patch_size,
        merge_size=sizes.merge_size,
        temporal_patch_size=sizes.temporal_patch_size,
        min_pixels=sizes.image_min_pixels,
        max_pixels=sizes.image_max_pixels,
    )
    return TinyVLM(model=model, tokenizer=tokenizer, image_processor=image_processor)
