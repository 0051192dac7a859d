"""Random-weight VLMs built in code (no hub access): tiny for tests, or at a published checkpoint's exact sizes
for the GPU benchmark (:data:`REAL_SIZES`).

Families: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (byte-level tokenizer with Qwen's special tokens, Qwen2-VL image
processor) and LLaVA-1.6-Mistral (CLIP tower + Mistral decoder, byte-level tokenizer with ``<s>``, ``</s>``,
``<image>``, and the real ``LlavaNextProcessor`` around a PIL image processor). Phi-3-Vision's model code ships on
the model hub, so no random Phi-3-Vision can be built here; :data:`REAL_SIZES` still holds its sizes for the memory
estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.vlm_adapters.qwen import (
    END_OF_TEXT,
    IM_END,
    IM_START,
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)

#: families whose sizes can be described (all but phi3_v can also be built: see the module docstring)
SIZED_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_next", "phi3_v")
BUILDABLE_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_next")
CPU_PARAMETER_LIMIT = 1_000_000_000  # tiny_vlm refuses bigger random models on the CPU (tests never need one)


class TinyVLM(NamedTuple):
    """A random-weight VLM built in code: the model, its tokenizer and its processor."""

    model: Any
    tokenizer: Any
    processor: Any


@dataclass(frozen=True)
class VLMSizes:
    """Sizes of a random-weight VLM built by :func:`tiny_vlm`.

    The defaults are tiny (CPU tests in well under a second per step); :data:`REAL_SIZES` holds the published
    checkpoints' sizes, which must only be instantiated on a GPU. Fields a family does not use are ignored
    (``window_size`` / ``fullatt_block_indexes``: Qwen2.5-VL; ``deepstack_layers``: Qwen3-VL;
    ``vision_image_size``, ``grid_pinpoints``: LLaVA-NeXT).
    """

    family: str = "qwen2_vl"
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
    head_dim: int | None = None  # None: hidden_size // num_heads
    deepstack_layers: tuple[int, ...] = (0,)  # Qwen3-VL: vision layers whose features also enter the decoder
    vision_image_size: int = 32  # LLaVA-NeXT: the CLIP tower's input size (base view and crops)
    grid_pinpoints: tuple[tuple[int, int], ...] = ((32, 32), (32, 64), (64, 32), (64, 64))

    def __post_init__(self) -> None:
        object.__setattr__(self, "fullatt_block_indexes", tuple(int(i) for i in self.fullatt_block_indexes))
        object.__setattr__(self, "deepstack_layers", tuple(int(i) for i in self.deepstack_layers))
        object.__setattr__(self, "grid_pinpoints", tuple((int(h), int(w)) for h, w in self.grid_pinpoints))
        if self.family not in SIZED_FAMILIES:
            msg = f"`family` must be one of {list(SIZED_FAMILIES)}, got {self.family!r}"
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


_QWEN2_5_VL_7B = VLMSizes(
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
)  # Qwen2.5-VL-7B-Instruct (8.3 B parameters)
_CLIP_L_336 = {  # LLaVA-NeXT's and Phi-3-Vision's vision tower: CLIP ViT-L/14 at 336 px
    "vision_depth": 24,
    "vision_hidden_size": 1024,
    "vision_heads": 16,
    "vision_intermediate_size": 4096,
    "patch_size": 14,
    "vision_image_size": 336,
}

#: The published checkpoints' sizes (from their ``config.json``), one per family: GPU only (7-8 B parameters; Phi-3-
#: Vision 4.2 B). ``tiny_vlm(sizes=REAL_SIZES[f], device="cuda")`` builds a random model of that exact shape.
REAL_SIZES: dict[str, VLMSizes] = {
    # Qwen2-VL-7B-Instruct: Qwen2.5-VL-7B's language model; ViT with MLP ratio 4 and full attention everywhere
    "qwen2_vl": replace(_QWEN2_5_VL_7B, family="qwen2_vl", vision_intermediate_size=5120),
    "qwen2_5_vl": _QWEN2_5_VL_7B,
    "qwen3_vl": VLMSizes(  # Qwen3-VL-8B-Instruct
        family="qwen3_vl",
        hidden_size=4096,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=12288,
        vocab_size=151936,
        vision_depth=27,
        vision_hidden_size=1152,
        vision_heads=16,
        vision_intermediate_size=4304,
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        deepstack_layers=(8, 16, 24),
        rope_theta=5_000_000.0,
        image_min_pixels=64 * 64,
        image_max_pixels=768 * 768,
    ),
    "llava_next": VLMSizes(  # llava-v1.6-mistral-7b-hf: Mistral-7B-Instruct-v0.2 + CLIP ViT-L/336, anyres crops
        family="llava_next",
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=14336,
        vocab_size=32064,
        rope_theta=1_000_000.0,
        grid_pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)),
        **_CLIP_L_336,
    ),
    "phi3_v": VLMSizes(  # Phi-3-vision-128k-instruct: Phi-3-mini (fused qkv) + CLIP ViT-L/336; sizes only
        family="phi3_v",
        hidden_size=3072,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        intermediate_size=8192,
        vocab_size=32064,
        rope_theta=10_000.0,
        **_CLIP_L_336,
    ),
}


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension in Qwen's 16:24:24 proportion."""
    half = head_dim // 2
    temporal = max(1, half // 4)
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _byte_tokenizer(specials: list[str], **roles: str) -> Any:
    """A byte-level BPE tokenizer (no merges: one token per UTF-8 byte) with ``specials`` after the 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="right", **roles)


def tiny_tokenizer(graph_token: str = "<graph>", family: str = "qwen2_vl") -> Any:
    """A byte-level tokenizer (any text encodes) with the family's special tokens and ``graph_token``.

    Qwen: ``<|endoftext|>`` (padding), ``<|im_start|>``, ``<|im_end|>``, the vision tokens; LLaVA-NeXT: ``<unk>``
    (padding), ``<s>``, ``</s>``, ``<image>``.
    """
    if family == "llava_next":
        from ugdata_pipeline.uge.vlm_adapters.llava_next import BOS, EOS, IMAGE, UNK

        return _byte_tokenizer(
            [UNK, BOS, EOS, IMAGE, graph_token], unk_token=UNK, pad_token=UNK, bos_token=BOS, eos_token=EOS
        )
    specials = [END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, graph_token]
    return _byte_tokenizer(specials, pad_token=END_OF_TEXT, eos_token=IM_END)


def _qwen_config(sizes: VLMSizes, tokenizer: Any, vocab_size: int) -> tuple[Any, Any]:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    token_id = tokenizer.convert_tokens_to_ids
    head_dim = sizes.head_dim or sizes.hidden_size // sizes.num_heads
    rope = {"rope_type": "default", "rope_theta": sizes.rope_theta, "mrope_section": _mrope_section(head_dim)}
    if sizes.family == "qwen3_vl":
        rope["mrope_interleaved"] = True
    text = {
        "vocab_size": vocab_size,
        "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "num_hidden_layers": sizes.num_layers,
        "num_attention_heads": sizes.num_heads,
        "num_key_value_heads": sizes.num_kv_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": rope,
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
        return Qwen2VLConfig(text_config=text, vision_config=vision, **special_ids), Qwen2VLForConditionalGeneration
    if sizes.family == "qwen2_5_vl":
        vision = {
            **common_vision,
            "hidden_size": sizes.vision_hidden_size,
            "intermediate_size": sizes.vision_intermediate_size,
            "out_hidden_size": sizes.hidden_size,
            "window_size": sizes.window_size,
            "fullatt_block_indexes": list(sizes.fullatt_block_indexes),
        }
        return Qwen2_5_VLConfig(
            text_config=text, vision_config=vision, **special_ids
        ), Qwen2_5_VLForConditionalGeneration
    text["head_dim"] = head_dim
    side = math.isqrt(sizes.image_max_pixels) // sizes.patch_size  # learned position table: one row per patch
    vision = {
        **common_vision,
        "hidden_size": sizes.vision_hidden_size,
        "intermediate_size": sizes.vision_intermediate_size,
        "out_hidden_size": sizes.hidden_size,
        "num_position_embeddings": max(side, 2) ** 2,
        "deepstack_visual_indexes": list(sizes.deepstack_layers),
    }
    return Qwen3VLConfig(text_config=text, vision_config=vision, **special_ids), Qwen3VLForConditionalGeneration


def _llava_next_config(sizes: VLMSizes, tokenizer: Any, vocab_size: int) -> tuple[Any, Any]:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    from ugdata_pipeline.uge.vlm_adapters.llava_next import IMAGE

    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": sizes.vision_hidden_size,
        "intermediate_size": sizes.vision_intermediate_size,
        "num_hidden_layers": sizes.vision_depth,
        "num_attention_heads": sizes.vision_heads,
        "image_size": sizes.vision_image_size,
        "patch_size": sizes.patch_size,
        "projection_dim": sizes.hidden_size,
    }
    text = {
        "model_type": "mistral",
        "vocab_size": vocab_size,
        "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "num_hidden_layers": sizes.num_layers,
        "num_attention_heads": sizes.num_heads,
        "num_key_value_heads": sizes.num_kv_heads,
        "max_position_embeddings": 32768,
        "rope_theta": sizes.rope_theta,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_grid_pinpoints=[list(p) for p in sizes.grid_pinpoints],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return config, LlavaNextForConditionalGeneration


def _processor(sizes: VLMSizes, tokenizer: Any) -> Any:
    if sizes.family == "llava_next":
        from transformers import LlavaNextProcessor
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        from ugdata_pipeline.uge.vlm_adapters.llava_next import IMAGE

        side = sizes.vision_image_size
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_grid_pinpoints=[list(p) for p in sizes.grid_pinpoints],
        )
        return LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=sizes.patch_size,
            vision_feature_select_strategy="default",
            image_token=IMAGE,
            num_additional_image_tokens=1,  # the CLIP tower's CLS feature, dropped by the "default" strategy
        )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=sizes.patch_size,
        merge_size=sizes.merge_size,
        temporal_patch_size=sizes.temporal_patch_size,
        min_pixels=sizes.image_min_pixels,
        max_pixels=sizes.image_max_pixels,
    )


def tiny_vlm(
    seed: int = 0,
    *,
    sizes: VLMSizes | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    attn_implementation: str = "sdpa",
    graph_token: str = "<graph>",
) -> TinyVLM:
    """Build a random-weight VLM of ``sizes.family`` with its tokenizer and processor, offline.

    Parameters
    ----------
    seed
        Seed of the weight initialisation (the global RNG state is left untouched).
    sizes
        Model sizes and family; default a tiny Qwen2-VL (hidden 64, 2 layers, vision depth 1, patch 4).
        :data:`REAL_SIZES` for the benchmark (GPU only).
    dtype, device
        Where and in which dtype the weights are created (created in place: no CPU copy of a 7B model).
    attn_implementation
        ``"sdpa"`` or ``"eager"``.
    graph_token
        Graph placeholder added to the tokenizer.

    Returns
    -------
    TinyVLM
        ``(model, tokenizer, processor)``: a Qwen2-VL image processor, or a full ``LlavaNextProcessor``.
    """
    sizes = sizes or VLMSizes()
    if sizes.family not in BUILDABLE_FAMILIES:
        msg = (
            f"no random {sizes.family!r} model can be built: its model code ships on the model hub "
            f"(trust_remote_code); buildable families are {list(BUILDABLE_FAMILIES)}"
        )
        raise HFVLMError(msg)
    tokenizer = tiny_tokenizer(graph_token, sizes.family)
    vocab_size = sizes.vocab_size or 64 * math.ceil(len(tokenizer) / 64)
    if vocab_size < len(tokenizer):
        msg = f"`vocab_size` {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)"
        raise HFVLMError(msg)
    if sizes.family == "llava_next":
        config, model_cls = _llava_next_config(sizes, tokenizer, vocab_size)
    else:
        config, model_cls = _qwen_config(sizes, tokenizer, vocab_size)

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
    return TinyVLM(model=model, tokenizer=tokenizer, processor=_processor(sizes, tokenizer))
