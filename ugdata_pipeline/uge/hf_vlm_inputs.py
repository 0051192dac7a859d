"""Batches of the ``hf_vlm`` backbone: prepared images, the tokenised :class:`VLMInputs` and image coercion."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.images import load_image

GraphVectors = Tensor | Sequence[Tensor | None]


class PreparedImage(NamedTuple):
    """One image after its family's image processor (see the family adapter).

    Attributes
    ----------
    pixel_values
        Qwen: flattened patches ``[t * h * w, channels * temporal_patch * patch * patch]``; LLaVA-NeXT and
        Phi-3-Vision: crops ``[n_crops, 3, H, W]``.
    grid
        Qwen: the ``(t, h, w)`` patch grid; LLaVA-NeXT and Phi-3-Vision: the original ``(height, width)``.
    num_tokens
        Placeholder tokens the image takes in the prompt (each receives one image feature).
    """

    pixel_values: Tensor
    grid: Tensor
    num_tokens: int


@dataclass
class VLMInputs:
    """A tokenised, right-padded batch ready for the model.

    Attributes
    ----------
    input_ids, attention_mask
        ``[B, T]`` long tensors.
    image_token_mask
        ``[B, T]`` bool: True at image placeholder tokens (the rows the model fills with image features).
    graph_token_mask
        ``[B, T]`` bool: True at the ``<graph>`` tokens whose embeddings get replaced.
    graph_counts
        Number of ``<graph>`` tokens of each item.
    image_inputs
        The model's image keyword inputs for the images of the batch, in batch order (family-specific:
        ``pixel_values`` and ``image_grid_thw`` for Qwen, ``pixel_values`` and ``image_sizes`` for LLaVA-NeXT and
        Phi-3-Vision); empty when no item has an image.
    """

    input_ids: Tensor
    attention_mask: Tensor
    image_token_mask: Tensor
    graph_token_mask: Tensor
    graph_counts: list[int]
    image_inputs: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> VLMInputs:
        """Copy of the batch on ``device``."""
        return VLMInputs(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            image_token_mask=self.image_token_mask.to(device),
            graph_token_mask=self.graph_token_mask.to(device),
            graph_counts=list(self.graph_counts),
            image_inputs={k: v.to(device) for k, v in self.image_inputs.items()},
        )

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens in the batch (what tokens/s counts)."""
        return int(self.attention_mask.sum())

    @property
    def last_token_index(self) -> Tensor:
        """``[B]`` index of each row's last non-padding token (right or left padding alike)."""
        positions = torch.arange(1, self.attention_mask.shape[1] + 1, device=self.attention_mask.device)
        return (self.attention_mask.long() * positions).argmax(dim=1)


def to_pil(image: Any, index: int) -> Image.Image:
    """An RGB PIL image from a PIL image, a uint8 ``HxWx3`` array or a file path (named on failure)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            msg = f"images[{index}]: a numpy image must be uint8 HxWx3 (or x4), got {image.dtype} {image.shape}"
            raise HFVLMError(msg)
        return Image.fromarray(image).convert("RGB")
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.is_file():
            msg = f"images[{index}]: file {str(path)!r} does not exist; pass absolute paths or PIL images"
            raise HFVLMError(msg)
        return load_image(path).convert("RGB")  # a damaged file is named with its city
    msg = f"images[{index}]: expected a PIL image, uint8 array, path, PreparedImage or None, got {type(image).__name__}"
    raise HFVLMError(msg)
