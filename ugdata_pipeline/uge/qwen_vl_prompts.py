"""Prompts of the Qwen2-VL family for the ``hf_vlm`` backbone: a batch of texts, images and graph-token counts
tokenised into :class:`VLMInputs` with the family's chat template and image placeholders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_config import HFVLMConfig
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage, VLMInputs, to_pil
from ugdata_pipeline.uge.qwen_vl import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START, chat_prompt


class QwenVlPrompts:
    """Build the prompt of every item: system and user prefix, ``<graph>`` x n, image placeholders, text, suffix.

    Parameters
    ----------
    config
        The backbone configuration (system prompt, default instruction, text budget, graph token).
    tokenizer, image_processor
        The model's tokenizer and Qwen2-VL image processor.
    token_ids
        Ids from :func:`.qwen_vl.resolve_token_ids`.
    """

    def __init__(self, config: HFVLMConfig, tokenizer: Any, image_processor: Any, token_ids: dict[str, int]) -> None:
        self.system_prompt = config.system_prompt
        self.embedding_instruction = config.embedding_instruction
        self.max_text_tokens = config.max_text_tokens
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self._token_ids = token_ids
        self.graph_token_id = token_ids[config.graph_token]

    def _text_ids(self, texts: Sequence[str], what: str) -> list[list[int]]:
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        reserved = {self._token_ids[t] for t in (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)}
        reserved.add(self.graph_token_id)
        out = []
        for i, ids in enumerate(encoded):
            if reserved.intersection(ids):
                msg = (
                    f"{what}[{i}] contains a reserved placeholder token (image / video / graph); pass images and "
                    "graphs as arguments and remove the placeholders from the text"
                )
                raise HFVLMError(msg)
            out.append(list(ids[: self.max_text_tokens]))
        return out

    def _prompt_ids(self) -> tuple[list[int], list[int]]:
        prefix, suffix = chat_prompt(self.system_prompt)
        enc = self.tokenizer([prefix, suffix], add_special_tokens=False)["input_ids"]
        return list(enc[0]), list(enc[1])

    def _prepare_images(self, images: Sequence[Any]) -> dict[int, PreparedImage]:
        prepared: dict[int, PreparedImage] = {}
        raw: list[tuple[int, Image.Image]] = []
        for i, image in enumerate(images):
            if image is None:
                continue
            if isinstance(image, PreparedImage):
                prepared[i] = image
            else:
                raw.append((i, to_pil(image, i)))
        if raw:
            processed = self.image_processor(images=[img for _, img in raw], return_tensors="pt")
            grids = processed["image_grid_thw"]
            pieces = torch.split(processed["pixel_values"], [int(g.prod()) for g in grids])
            for (i, _), pixels, grid in zip(raw, pieces, grids, strict=True):
                prepared[i] = PreparedImage(pixels, grid)
        return prepared

    def prepare(
        self,
        texts: Sequence[str | None],
        images: Sequence[Any] | None = None,
        graph_counts: Sequence[int] | None = None,
    ) -> VLMInputs:
        """Tokenise a batch: system and user prefix, ``<graph>`` x n, image placeholders, text, pooled suffix.

        Parameters
        ----------
        texts
            Instruction (query) or document text per item; ``None`` / blank uses ``config.embedding_instruction``.
        images
            Per item: a PIL image, uint8 ``HxWx3`` array, file path, :class:`PreparedImage` or ``None``;
            ``None`` for a text-only batch.
        graph_counts
            ``<graph>`` tokens per item (0 for none); ``None`` for no graphs.

        Returns
        -------
        VLMInputs
            The padded batch, on the CPU.
        """
        batch = len(texts)
        if batch == 0:
            msg = "empty batch: pass at least one item"
            raise HFVLMError(msg)
        images = [None] * batch if images is None else list(images)
        counts = [0] * batch if graph_counts is None else [int(c) for c in graph_counts]
        if len(images) != batch or len(counts) != batch:
            msg = f"batch lengths differ: {batch} texts, {len(images)} images, {len(counts)} graph counts"
            raise HFVLMError(msg)
        if any(c < 0 for c in counts):
            msg = f"graph token counts must be >= 0, got {counts!r}"
            raise HFVLMError(msg)
        filled = [t if t is not None and t.strip() else self.embedding_instruction for t in texts]
        text_ids = self._text_ids(filled, "texts")
        prefix, suffix = self._prompt_ids()
        prepared = self._prepare_images(images)
        merge = int(self.image_processor.merge_size) ** 2

        ids = self._token_ids
        rows: list[list[int]] = []
        for i in range(batch):
            image_part: list[int] = []
            if i in prepared:
                n_image_tokens = int(prepared[i].grid_thw.prod()) // merge
                image_part = [ids[VISION_START], *([ids[IMAGE_PAD]] * n_image_tokens), ids[VISION_END]]
            rows.append(prefix + [self.graph_token_id] * counts[i] + image_part + text_ids[i] + suffix)
        length = max(len(r) for r in rows)
        input_ids = torch.full((batch, length), ids["pad"], dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        real = attention_mask.bool()
        order = sorted(prepared)
        return VLMInputs(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=((input_ids == ids[IMAGE_PAD]) & real).long(),
            graph_token_mask=(input_ids == self.graph_token_id) & real,
            graph_counts=counts,
            pixel_values=torch.cat([prepared[i].pixel_values for i in order]) if order else None,
            image_grid_thw=torch.stack([prepared[i].grid_thw for i in order]).long() if order else None,
        )
