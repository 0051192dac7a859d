"""Batches of the ``hf_vlm`` backbone: prepared images, the tokenised :class:`VLMInputs` and image coercion."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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
    """One image after the Qwen2-VL image processor: flattened patches and their ``(t, h, w)`` patch grid."""

    pixel_values: Tensor  # [t * h * w, channels * temporal_patch * patch * patch]
    grid_thw: Tensor  # [3] long


@dataclass
class VLMInputs:
    """A tokenised, right-padded batch ready for the model.

    Attributes
    ----------
    input_ids, attention_mask
        ``[B, T]`` long tensors.
    mm_token_type_ids
        ``[B, T]``: 1 at image placeholder tokens, else 0 (drives Qwen's multimodal RoPE).
    graph_token_mask
        ``[B, T]`` bool: True at the ``<graph>`` tokens whose embeddings get replaced.
    graph_counts
        Number of ``<graph>`` tokens of each item.
    pixel_values, image_grid_thw
        Patches of all images in batch order and their ``(t, h, w)`` grids; ``None`` when no item has an image.
    """

    input_ids: Tensor
    attention_mask: Tensor
    mm_token_type_ids: Tensor
    graph_token_mask: Tensor
    graph_counts: list[int]
    pixel_values: Tensor | None = None
    image_grid_thw: Tensor | None = None

    def to(self, device: torch.device | str) -> VLMInputs:
        """Copy of the batch on ``device``."""
        return VLMInputs(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            mm_token_type_ids=self.mm_token_type_ids.to(device),
            graph_token_mask=self.graph_token_mask.to(device),
            graph_counts=list(self.graph_counts),
            pixel_values=None if self.pixel_values is None else self.pixel_values.to(device),
            image_grid_thw=None if self.image_grid_thw is None else self.image_grid_thw.to(device),
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
