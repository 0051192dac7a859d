"""Phi-3-Vision: ``microsoft/Phi-3-vision-128k-instruct`` (model type ``phi3_v``).

Its modeling and processing code ship on the model hub (``trust_remote_code``), not in transformers, so this
adapter follows that code's published conventions and is only exercised end to end where the checkpoint's code
can be loaded (it cannot here: see the README). What it relies on:

- the processor (``Phi3VProcessor``) has an ``image_processor`` returning ``pixel_values`` ``[B, crops, 3, 336,
  336]``, ``image_sizes`` ``[B, 2]`` and ``num_img_tokens`` per image (HD transform: a global view plus 336 px
  crops);
- an image stands in the prompt as ``num_img_tokens`` token ids of value ``-1`` (the processor expands
  ``<|image_1|>`` so); the model's ``vision_embed_tokens(input_ids, pixel_values, image_sizes)`` embeds the text
  and writes the image features at the negative ids, and ``Phi3VModel(inputs_embeds=...)`` runs the decoder;
- the language model's layers are ``model.layers.<i>`` with fused ``qkv_proj`` / ``gate_up_proj``; the CLIP tower
  lives under ``model.vision_embed_tokens`` (its ``q_proj`` / ``v_proj`` never get LoRA).

Prompt layout (pooled at the final ``\\n``)::

    <|system|>\\n{system_prompt}<|end|>\\n<|user|>\\n[<graph> x n][-1 x m]\\n{text}<|end|>\\n<|assistant|>\\n
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage, VLMInputs
from ugdata_pipeline.uge.vlm_adapters.base import VlmAdapter, stack_crops

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
END_OF_TEXT = "<|endoftext|>"
IMAGE_ID = -1  # the processor's placeholder id for the first image of a prompt


class Phi3VisionAdapter(VlmAdapter):
    """Phi-3-Vision through its hub code (``trust_remote_code=True``)."""

    family = "phi3_v"
    model_types = ("phi3_v",)
    checkpoints = ("microsoft/Phi-3-vision-128k-instruct",)
    default_lora_targets = ("qkv_proj", "o_proj")
    needs_remote_code = True
    after_image = "\n"
    # decoder layers sit at model.layers.<i>; "vision_model.encoder.layers" must not match (no "." before "model")
    language_model_prefix = r"(.*\.)?model\.layers\.\d+\."

    def core_model(self, model: nn.Module) -> nn.Module:
        inner = getattr(model, "model", None)
        if inner is not None and hasattr(inner, "vision_embed_tokens") and hasattr(inner, "layers"):
            return inner
        msg = f"{type(model).__name__} has no `.model.vision_embed_tokens` / `.model.layers`; pass a Phi-3-Vision model"
        raise HFVLMError(msg)

    def hidden_size(self, model: nn.Module) -> int:
        return int(model.config.hidden_size)

    def template_tokens(self) -> tuple[str, ...]:
        return (SYSTEM, USER, ASSISTANT, END)

    def image_token_key(self) -> str | None:
        return None  # images are negative ids, not a tokenizer token

    def pad_token(self) -> str:
        return END_OF_TEXT

    def extra_token_ids(self) -> dict[str, int]:
        return {"image": IMAGE_ID}

    def reserved_token_ids(self, ids: dict[str, int]) -> set[int]:
        return set()  # image placeholders are negative ids, which no text can produce

    def image_token_mask(self, input_ids: Tensor, ids: dict[str, int]) -> Tensor:
        return input_ids < 0

    def prompt_ids(self, tokenizer: Any, system_prompt: str) -> tuple[list[int], list[int]]:
        prefix = f"{SYSTEM}\n{system_prompt}{END}\n{USER}\n" if system_prompt else f"{USER}\n"
        enc = tokenizer([prefix, f"{END}\n{ASSISTANT}\n"], add_special_tokens=False)["input_ids"]
        return list(enc[0]), list(enc[1])

    def prepare_images(self, processor: Any, images: Sequence[Image.Image]) -> list[PreparedImage]:
        image_processor = getattr(processor, "image_processor", processor)
        processed = image_processor(images=list(images), return_tensors="pt")
        counts = [int(n) for n in processed["num_img_tokens"]]
        return [
            PreparedImage(pixels, size, n)
            for pixels, size, n in zip(processed["pixel_values"], processed["image_sizes"], counts, strict=True)
        ]

    def image_placeholder(self, prepared: PreparedImage, ids: dict[str, int]) -> list[int]:
        return [IMAGE_ID] * prepared.num_tokens

    def batch_images(self, prepared: Sequence[PreparedImage]) -> dict[str, Tensor]:
        return stack_crops(prepared)

    def token_embeddings(self, core: nn.Module, inputs: VLMInputs) -> Tensor:
        if not inputs.image_inputs:
            return core.embed_tokens(inputs.input_ids)
        # the hub code clamps the ids in place: hand it a copy
        return core.vision_embed_tokens(inputs.input_ids.clone(), **inputs.image_inputs)

    def last_hidden_state(self, core: nn.Module, inputs: VLMInputs, embeds: Tensor) -> Tensor:
        return core(inputs_embeds=embeds, attention_mask=inputs.attention_mask, use_cache=False).last_hidden_state

    def load(self, config: Any) -> tuple[Any, Any, Any]:
        if not config.trust_remote_code:
            msg = (
                f"{config.model_name_or_path!r} is a Phi-3-Vision checkpoint, whose model code ships on the hub; "
                "set `trust_remote_code: true` in the hf_vlm config to run that code (review it first)"
            )
            raise HFVLMError(msg)
        from transformers import AutoModelForCausalLM, AutoProcessor

        path, local = config.model_name_or_path, config.local_files_only
        processor = AutoProcessor.from_pretrained(path, local_files_only=local, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=config.torch_dtype,
            attn_implementation=config.attn_implementation,
            local_files_only=local,
            trust_remote_code=True,
        )
        return model, processor.tokenizer, processor


PHI3_V = Phi3VisionAdapter()
