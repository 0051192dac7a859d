"""What the ``hf_vlm`` backbone asks of a VLM family: one :class:`VlmAdapter` per architecture.

The backbone is family-agnostic: it builds every prompt as ``prefix + <graph> x n + image placeholders + text +
suffix``, replaces the ``<graph>`` rows of the input embeddings by graph vectors, runs the model and pools the
final-layer hidden state of the last token of the suffix. An adapter supplies everything that differs between
families: the chat template around that layout, the template and placeholder tokens, how images are processed and
how many placeholder tokens each one takes, how the input embeddings are made and the model is run, where the
language model sits (so that LoRA is pinned to it, never to the vision tower), and how a checkpoint is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage, VLMInputs


class VlmAdapter:
    """Family-specific behaviour behind :class:`~ugdata_pipeline.uge.hf_vlm.HfVlmBackbone` (stateless).

    Attributes
    ----------
    family
        The name used in configuration (``HFVLMConfig.family``, ``VLMSizes.family``).
    model_types
        ``config.model_type`` values of the transformers models this adapter runs.
    checkpoints
        Published checkpoints of the family (the README shows how to train each).
    default_lora_targets
        Leaf names of the language model's projections that get LoRA by default.
    needs_remote_code
        The modeling code ships on the model hub (``trust_remote_code``), not in transformers.
    """

    family: str = ""
    model_types: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    default_lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    needs_remote_code: bool = False
    #: regex (peft full match) of the module-name prefix under which the language model's layers live
    language_model_prefix: str = r".*language_model\."
    #: text between an image's placeholders and the item's text ("" when the template puts none)
    after_image: str = ""

    # ---- model structure ---------------------------------------------------------------------------------------
    def lora_target_regex(self, targets: Sequence[str]) -> str:
        """Regex (peft full match) selecting ``targets`` inside the language model only, never the vision tower."""
        names = "|".join(re.escape(t) for t in targets)
        return rf"{self.language_model_prefix}.*\.({names})"

    def core_model(self, model: nn.Module) -> nn.Module:
        """The inner multimodal model (vision tower + language model, no LM head)."""
        inner = getattr(model, "model", None)
        if inner is not None and hasattr(inner, "language_model"):
            return inner
        msg = f"{type(model).__name__} has no `.model.language_model`; pass a {self.family} model"
        raise HFVLMError(msg)

    def hidden_size(self, model: nn.Module) -> int:
        """The language model's hidden size (the embedding width)."""
        return int(model.config.text_config.hidden_size)

    def check_image_processor(self, model: nn.Module, processor: Any) -> None:
        """Refuse an image processor that does not fit the model (default: no check)."""

    # ---- tokens and prompt -------------------------------------------------------------------------------------
    def template_tokens(self) -> tuple[str, ...]:
        """Special tokens the prompt template and the image placeholders need (all must be in the tokenizer)."""
        raise NotImplementedError

    def image_token_key(self) -> str | None:
        """The template token whose id must equal the model config's image-token id (None: no such token)."""
        raise NotImplementedError

    def model_image_token_id(self, model: nn.Module) -> int:
        """The image-token id the model expects."""
        return int(model.config.image_token_id)

    def pad_token(self) -> str:
        """Padding token used when the tokenizer has none."""
        raise NotImplementedError

    def resolve_token_ids(self, model: nn.Module, tokenizer: Any, graph_token: str) -> dict[str, int]:
        """Ids of the template tokens and ``graph_token`` (added to the tokenizer if absent), plus ``"pad"``.

        Grows the model's embedding table when a token falls outside it (the new ``<graph>`` row is always
        overwritten by graph vectors, never read).
        """
        if graph_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([graph_token], special_tokens=True)
        ids: dict[str, int] = {}
        for token in (*self.template_tokens(), graph_token):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id):
                msg = f"tokenizer has no {token!r} token; a {self.family} tokenizer is required"
                raise HFVLMError(msg)
            ids[token] = int(token_id)
        image = self.image_token_key()
        if image is not None and ids[image] != self.model_image_token_id(model):
            msg = (
                f"tokenizer id of {image!r} ({ids[image]}) differs from the model's image token id "
                f"({self.model_image_token_id(model)}); the tokenizer and the model do not belong together"
            )
            raise HFVLMError(msg)
        if max(ids.values()) >= model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        pad_id = tokenizer.pad_token_id
        ids["pad"] = int(pad_id if pad_id is not None else tokenizer.convert_tokens_to_ids(self.pad_token()))
        return {**ids, **self.extra_token_ids()}

    def extra_token_ids(self) -> dict[str, int]:
        """Placeholder ids that are not tokenizer tokens (none by default)."""
        return {}

    def reserved_token_ids(self, ids: dict[str, int]) -> set[int]:
        """Ids a caller's text must not contain (image placeholders): images are passed as images."""
        return {ids[self.image_token_key()]}

    def image_token_mask(self, input_ids: Tensor, ids: dict[str, int]) -> Tensor:
        """``[B, T]`` bool: the image placeholder positions of a batch."""
        return input_ids == ids[self.image_token_key()]

    def prompt_ids(self, tokenizer: Any, system_prompt: str) -> tuple[list[int], list[int]]:
        """Token ids before an item's content (graph tokens, image, text) and after it (ends at the pooled token)."""
        raise NotImplementedError

    # ---- images ------------------------------------------------------------------------------------------------
    def prepare_images(self, processor: Any, images: Sequence[Image.Image]) -> list[PreparedImage]:
        """Run the family's image processor on RGB images: one :class:`PreparedImage` per image, in order."""
        raise NotImplementedError

    def image_placeholder(self, prepared: PreparedImage, ids: dict[str, int]) -> list[int]:
        """The token ids that stand for one image in the prompt (``prepared.num_tokens`` of them are features)."""
        raise NotImplementedError

    def batch_images(self, prepared: Sequence[PreparedImage]) -> dict[str, Tensor]:
        """Model keyword inputs for the images of a batch, in batch order (empty when there are none)."""
        raise NotImplementedError

    # ---- forward -----------------------------------------------------------------------------------------------
    def token_embeddings(self, core: nn.Module, inputs: VLMInputs) -> Tensor:
        """Input embeddings before graph vectors are scattered in (image rows hold placeholder embeddings)."""
        return core.get_input_embeddings()(inputs.input_ids)

    def last_hidden_state(self, core: nn.Module, inputs: VLMInputs, embeds: Tensor) -> Tensor:
        """Run the model on ``embeds`` (images merged by the model) and return ``[B, T, hidden]``."""
        raise NotImplementedError

    # ---- loading -----------------------------------------------------------------------------------------------
    def load(self, config: Any) -> tuple[Any, Any, Any]:
        """``(model, tokenizer, processor)`` of ``config.model_name_or_path`` (hub id or local folder)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = config.model_name_or_path
        processor = AutoProcessor.from_pretrained(
            path, local_files_only=config.local_files_only, trust_remote_code=config.trust_remote_code
        )
        model = AutoModelForImageTextToText.from_pretrained(
            path,
            dtype=config.torch_dtype,
            attn_implementation=config.attn_implementation,
            local_files_only=config.local_files_only,
            trust_remote_code=config.trust_remote_code,
        )
        return model, processor.tokenizer, processor


def stack_crops(prepared: Sequence[PreparedImage]) -> dict[str, Tensor]:
    """``pixel_values`` ``[B, max crops, 3, H, W]`` (zero-padded; the model cuts each image back by its size) and
    ``image_sizes`` ``[B, 2]`` of crop-based images (LLaVA-NeXT, Phi-3-Vision)."""
    if not prepared:
        return {}
    crops = max(p.pixel_values.shape[0] for p in prepared)
    first = prepared[0].pixel_values
    pixels = first.new_zeros((len(prepared), crops, *first.shape[1:]))
    for i, p in enumerate(prepared):
        pixels[i, : p.pixel_values.shape[0]] = p.pixel_values
    return {"pixel_values": pixels, "image_sizes": torch.stack([p.grid for p in prepared]).long()}


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` ``[B, T]`` of token-id rows."""
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask
