"""The Qwen VL families: Qwen2-VL, Qwen2.5-VL (the paper's headline backbone) and Qwen3-VL.

All three share the ChatML template and the vision placeholders ``<|vision_start|><|image_pad|> x n
<|vision_end|>`` (n = patches / merge_size², computed from the processor's patch grid), and a multimodal rotary
position index that the model computes from ``input_ids``. Because graph vectors enter as input embeddings, the
position index is computed explicitly from the token ids and passed in with the embeddings: Qwen3-VL accepts only
one of ``input_ids`` / ``inputs_embeds``, and from embeddings alone it would fall back to 1-D positions.

Prompt layout (pooled at the final ``\\n``)::

    <|im_start|>system\\n{system_prompt}<|im_end|>\\n<|im_start|>user\\n
    [<graph> x n][<|vision_start|><|image_pad|> x m<|vision_end|>]{text}<|im_end|>\\n<|im_start|>assistant\\n
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage, VLMInputs
from ugdata_pipeline.uge.vlm_adapters.base import VlmAdapter

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
END_OF_TEXT = "<|endoftext|>"


class QwenVlAdapter(VlmAdapter):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL (one instance per family)."""

    def __init__(self, family: str, checkpoints: tuple[str, ...]) -> None:
        self.family = family
        self.model_types = (family,)
        self.checkpoints = checkpoints

    def core_model(self, model: nn.Module) -> nn.Module:
        inner = getattr(model, "model", None)
        if inner is not None and hasattr(inner, "language_model") and hasattr(inner, "visual"):
            return inner
        msg = f"{type(model).__name__} has no `.model.language_model` / `.model.visual`; pass a {self.family} model"
        raise HFVLMError(msg)

    def check_image_processor(self, model: nn.Module, processor: Any) -> None:
        image_processor = getattr(processor, "image_processor", processor)
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

    def template_tokens(self) -> tuple[str, ...]:
        return (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

    def image_token_key(self) -> str:
        return IMAGE_PAD

    def pad_token(self) -> str:
        return END_OF_TEXT

    def reserved_token_ids(self, ids: dict[str, int]) -> set[int]:
        return {ids[t] for t in (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)}

    def prompt_ids(self, tokenizer: Any, system_prompt: str) -> tuple[list[int], list[int]]:
        prefix = f"{IM_START}system\n{system_prompt}{IM_END}\n{IM_START}user\n"
        suffix = f"{IM_END}\n{IM_START}assistant\n"
        enc = tokenizer([prefix, suffix], add_special_tokens=False)["input_ids"]
        return list(enc[0]), list(enc[1])

    def prepare_images(self, processor: Any, images: Sequence[Image.Image]) -> list[PreparedImage]:
        image_processor = getattr(processor, "image_processor", processor)
        processed = image_processor(images=list(images), return_tensors="pt")
        grids = processed["image_grid_thw"]
        merge = int(image_processor.merge_size) ** 2
        pieces = torch.split(processed["pixel_values"], [int(g.prod()) for g in grids])
        return [PreparedImage(p, g, int(g.prod()) // merge) for p, g in zip(pieces, grids, strict=True)]

    def image_placeholder(self, prepared: PreparedImage, ids: dict[str, int]) -> list[int]:
        return [ids[VISION_START], *([ids[IMAGE_PAD]] * prepared.num_tokens), ids[VISION_END]]

    def batch_images(self, prepared: Sequence[PreparedImage]) -> dict[str, Tensor]:
        if not prepared:
            return {}
        return {
            "pixel_values": torch.cat([p.pixel_values for p in prepared]),
            "image_grid_thw": torch.stack([p.grid for p in prepared]).long(),
        }

    def last_hidden_state(self, core: nn.Module, inputs: VLMInputs, embeds: Tensor) -> Tensor:
        mm_token_type_ids = (inputs.image_token_mask & inputs.attention_mask.bool()).long()
        grid = inputs.image_inputs.get("image_grid_thw")
        position_ids = core.compute_3d_position_ids(
            input_ids=inputs.input_ids,
            inputs_embeds=embeds,
            image_grid_thw=grid,
            video_grid_thw=None,
            attention_mask=inputs.attention_mask,
            cache=None,
            mm_token_type_ids=mm_token_type_ids,
        )
        if position_ids is None:
            # a text-only batch: ordinary positions. The model keeps the rope deltas of its last image batch and,
            # given embeddings without ids, would shift this batch by them
            core.rope_deltas = None
        outputs = core(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=inputs.attention_mask,
            mm_token_type_ids=mm_token_type_ids,
            use_cache=False,
            **inputs.image_inputs,
        )
        return outputs.last_hidden_state

    def load(self, config: Any) -> tuple[Any, Any, Any]:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        # the tokenizer and the image processor are loaded on their own: the full AutoProcessor would also
        # build a video processor (which needs torchvision) that embeddings never use
        path, local = config.model_name_or_path, config.local_files_only
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        processor = AutoImageProcessor.from_pretrained(
            path,
            local_files_only=local,
            min_pixels=config.image_min_pixels,  # the Qwen2-VL image processors' documented pixel budget
            max_pixels=config.image_max_pixels,
        )
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=config.torch_dtype, attn_implementation=config.attn_implementation, local_files_only=local
        )
        return model, tokenizer, processor


QWEN2_VL = QwenVlAdapter("qwen2_vl", ("Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2-VL-2B-Instruct"))
QWEN2_5_VL = QwenVlAdapter("qwen2_5_vl", ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct"))
QWEN3_VL = QwenVlAdapter("qwen3_vl", ("Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen3-VL-4B-Instruct"))
