"""What the ``hf_vlm`` backbone needs to know about the Qwen2-VL family (Qwen2-VL and Qwen2.5-VL).

Token strings of its chat template, the model types it covers, where the vision tower and the language model sit,
which image-processor settings must match the vision config, and the token ids the prompts are built from. The
backbone itself is family-agnostic beyond these functions.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from torch import nn

from ugdata_pipeline.errors import HFVLMError

logger = logging.getLogger(__name__)

VlmFamily = Literal["qwen2_vl", "qwen2_5_vl"]

# Token strings of the Qwen2-VL family (shared by Qwen2.5-VL).
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
END_OF_TEXT = "<|endoftext|>"


def model_family(model: nn.Module) -> VlmFamily:
    """The model's family (``config.model_type``), refused unless this module covers it."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        return model_type
    msg = f"unsupported model type {model_type!r}: the hf_vlm backbone handles 'qwen2_vl' and 'qwen2_5_vl'"
    raise HFVLMError(msg)


def core_model(model: nn.Module) -> nn.Module:
    """The inner ``Qwen2VLModel`` / ``Qwen2_5_VLModel`` (vision tower + language model, no LM head)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "language_model") and hasattr(inner, "visual"):
        return inner
    msg = f"{type(model).__name__} has no `.model.language_model` / `.model.visual`; pass a Qwen2(.5)-VL model"
    raise HFVLMError(msg)


def check_image_processor(model: nn.Module, image_processor: Any) -> None:
    """Refuse an image processor whose patch / merge sizes differ from the model's vision config."""
    vision = model.config.vision_config
    for attr, expected in (
        ("patch_size", vision.patch_size),
        ("merge_size", vision.spatial_merge_size),
        ("temporal_patch_size", vision.temporal_patch_size),
    ):
        got = getattr(image_processor, attr, None)
        if got != expected:
            msg = (
                f"image processor `{attr}`={got!r} does not match the model's vision config ({expected!r}); "
                "build the processor with the model's patch / merge sizes"
            )
            raise HFVLMError(msg)


def resolve_token_ids(model: nn.Module, tokenizer: Any, graph_token: str) -> dict[str, int]:
    """Ids of the template tokens, the image placeholder and ``graph_token`` (added to the tokenizer if absent).

    ``"pad"`` maps to the padding id (``<|endoftext|>`` when the tokenizer has no pad token). Grows the model's
    embedding table when a new token falls outside it.
    """
    if graph_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([graph_token], special_tokens=True)
        logger.info("added graph token %r to the tokenizer", graph_token)
    ids: dict[str, int] = {}
    for token in (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, graph_token):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id):
            msg = f"tokenizer has no {token!r} token; a Qwen2-VL-family tokenizer is required"
            raise HFVLMError(msg)
        ids[token] = int(token_id)
    if ids[IMAGE_PAD] != model.config.image_token_id:
        msg = (
            f"tokenizer id of {IMAGE_PAD!r} ({ids[IMAGE_PAD]}) differs from the model's `image_token_id` "
            f"({model.config.image_token_id}); the tokenizer and the model do not belong together"
        )
        raise HFVLMError(msg)
    if max(ids.values()) >= model.get_input_embeddings().num_embeddings:
        # Qwen vocabularies carry spare rows, so this only runs for tokenizers without them; the new
        # <graph> row is always overwritten, never read
        model.resize_token_embeddings(len(tokenizer))
    pad_id = tokenizer.pad_token_id
    ids["pad"] = int(pad_id if pad_id is not None else tokenizer.convert_tokens_to_ids(END_OF_TEXT))
    return ids


def chat_prompt(system_prompt: str) -> tuple[str, str]:
    """The text before a user message's content and after it, ending where the embedding is pooled."""
    prefix = f"{IM_START}system\n{system_prompt}{IM_END}\n{IM_START}user\n"
    suffix = f"{IM_END}\n{IM_START}assistant\n"
    return prefix, suffix
