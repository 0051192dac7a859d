"""LLaVA-1.6 (LLaVA-NeXT) on Mistral-7B: ``llava-hf/llava-v1.6-mistral-7b-hf``, ``llava_next`` in transformers.

A CLIP ViT-L/336 tower sees the image at its base resolution and in "anyres" crops chosen from the checkpoint's
grid pinpoints; the features (minus padding, plus one learned newline per row) replace the ``<image>``
placeholders. How many placeholders an image takes is computed by the checkpoint's own processor
(``LlavaNextProcessor``), so the count always matches what the model produces. Mistral's instruction template has
no system turn: as in Mistral's own chat template, the system prompt opens the user message.

Prompt layout (pooled at the final token of ``[/INST]``)::

    <s>[INST] {system_prompt}\\n\\n[<graph> x n][<image> x m]\\n{text} [/INST]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage, VLMInputs
from ugdata_pipeline.uge.vlm_adapters.base import VlmAdapter, stack_crops

IMAGE = "<image>"
BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"


class LlavaNextAdapter(VlmAdapter):
    """LLaVA-1.6-Mistral (transformers ``LlavaNextForConditionalGeneration``)."""

    family = "llava_next"
    model_types = ("llava_next",)
    checkpoints = ("llava-hf/llava-v1.6-mistral-7b-hf",)
    after_image = "\n"

    def core_model(self, model: nn.Module) -> nn.Module:
        inner = getattr(model, "model", None)
        if inner is not None and hasattr(inner, "language_model") and hasattr(inner, "vision_tower"):
            return inner
        msg = f"{type(model).__name__} has no `.model.language_model` / `.model.vision_tower`; pass a LLaVA-NeXT model"
        raise HFVLMError(msg)

    def check_image_processor(self, model: nn.Module, processor: Any) -> None:
        if not callable(getattr(processor, "_get_number_of_features", None)):
            msg = (
                "llava_next needs the full LlavaNextProcessor (it knows how many <image> tokens an image takes), "
                f"got {type(processor).__name__}; pass AutoProcessor.from_pretrained(<checkpoint>)"
            )
            raise HFVLMError(msg)
        patch = getattr(processor, "patch_size", None)
        if patch != model.config.vision_config.patch_size:
            msg = (
                f"processor `patch_size`={patch!r} does not match the vision tower's "
                f"({model.config.vision_config.patch_size!r}); load the processor of the same checkpoint"
            )
            raise HFVLMError(msg)

    def template_tokens(self) -> tuple[str, ...]:
        return (BOS, EOS, IMAGE)

    def image_token_key(self) -> str:
        return IMAGE

    def model_image_token_id(self, model: nn.Module) -> int:
        return int(model.config.image_token_id)

    def pad_token(self) -> str:
        return UNK

    def prompt_ids(self, tokenizer: Any, system_prompt: str) -> tuple[list[int], list[int]]:
        opening = f"[INST] {system_prompt}\n\n" if system_prompt else "[INST] "
        enc = tokenizer([opening, " [/INST]"], add_special_tokens=False)["input_ids"]
        return [tokenizer.convert_tokens_to_ids(BOS), *enc[0]], list(enc[1])

    def prepare_images(self, processor: Any, images: Sequence[Image.Image]) -> list[PreparedImage]:
        processed = processor.image_processor(images=list(images), return_tensors="pt")
        out = []
        for pixels, size in zip(processed["pixel_values"], processed["image_sizes"], strict=True):
            crops = pixels.shape[0]
            n = processor._get_number_of_features(int(size[0]), int(size[1]), pixels.shape[-2], pixels.shape[-1])
            if processor.vision_feature_select_strategy == "default":
                n -= 1  # the CLS feature is dropped
            out.append(PreparedImage(pixels[:crops], size, int(n)))
        return out

    def image_placeholder(self, prepared: PreparedImage, ids: dict[str, int]) -> list[int]:
        return [ids[IMAGE]] * prepared.num_tokens

    def batch_images(self, prepared: Sequence[PreparedImage]) -> dict[str, Tensor]:
        return stack_crops(prepared)

    def last_hidden_state(self, core: nn.Module, inputs: VLMInputs, embeds: Tensor) -> Tensor:
        # LlavaNextModel takes exactly one of input_ids / inputs_embeds; the placeholders are found in the
        # embeddings (the <image> rows still hold the <image> token embedding)
        outputs = core(
            inputs_embeds=embeds, attention_mask=inputs.attention_mask, use_cache=False, **inputs.image_inputs
        )
        return outputs.last_hidden_state


LLAVA_NEXT = LlavaNextAdapter()
