"""Prompts of the ``hf_vlm`` backbone: a batch of texts, images and graph-token counts tokenised into
:class:`VLMInputs` with the family's chat template and image placeholders (from its adapter).

Every item is ``prefix + <graph> x n + image placeholders [+ separator] + text + suffix``; the suffix ends at the
token whose final hidden state is the embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_config import HFVLMConfig
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage, VLMInputs, to_pil
from ugdata_pipeline.uge.vlm_adapters import VlmAdapter
from ugdata_pipeline.uge.vlm_adapters.base import pad_batch


class VlmPrompts:
    """Tokenise batches for one backbone.

    Parameters
    ----------
    adapter
        The model's family adapter.
    config
        The backbone configuration (system prompt, default instruction, text budget, graph token).
    tokenizer, processor
        The model's tokenizer and (image) processor.
    token_ids
        Ids from the adapter's ``resolve_token_ids``.
    """

    def __init__(
        self, adapter: VlmAdapter, config: HFVLMConfig, tokenizer: Any, processor: Any, token_ids: dict[str, int]
    ) -> None:
        self.adapter = adapter
        self.embedding_instruction = config.embedding_instruction
        self.max_text_tokens = config.max_text_tokens
        self.tokenizer = tokenizer
        self.processor = processor
        self._token_ids = token_ids
        self.graph_token_id = token_ids[config.graph_token]
        self._prefix, self._suffix = adapter.prompt_ids(tokenizer, config.system_prompt)
        separator = adapter.after_image
        self._after_image = list(tokenizer(separator, add_special_tokens=False)["input_ids"]) if separator else []
        self._reserved = adapter.reserved_token_ids(token_ids) | {self.graph_token_id}

    def _text_ids(self, texts: Sequence[str], what: str) -> list[list[int]]:
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        out = []
        for i, ids in enumerate(encoded):
            if self._reserved.intersection(ids):
                msg = (
                    f"{what}[{i}] contains a reserved placeholder token (image / video / graph); pass images and "
                    "graphs as arguments and remove the placeholders from the text"
                )
                raise HFVLMError(msg)
            out.append(list(ids[: self.max_text_tokens]))
        return out

    def prepare_images(self, images: Sequence[Any]) -> dict[int, PreparedImage]:
        """Prepared images by batch position (``None`` items have none; prepared ones pass through)."""
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
            done = self.adapter.prepare_images(self.processor, [img for _, img in raw])
            for (i, _), item in zip(raw, done, strict=True):
                prepared[i] = item
        return prepared

    def prepare(
        self,
        texts: Sequence[str | None],
        images: Sequence[Any] | None = None,
        graph_counts: Sequence[int] | None = None,
    ) -> VLMInputs:
        """Tokenise a batch: prefix, ``<graph>`` x n, image placeholders, text, pooled suffix.

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
        prepared = self.prepare_images(images)

        rows: list[list[int]] = []
        for i in range(batch):
            image_part: list[int] = []
            if i in prepared:
                image_part = self.adapter.image_placeholder(prepared[i], self._token_ids) + self._after_image
            graphs = [self.graph_token_id] * counts[i]
            rows.append(self._prefix + graphs + image_part + text_ids[i] + self._suffix)
        input_ids, attention_mask = pad_batch(rows, self._token_ids["pad"])
        real = attention_mask.bool()
        return VLMInputs(
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_token_mask=self.adapter.image_token_mask(input_ids, self._token_ids) & real,
            graph_token_mask=(input_ids == self.graph_token_id) & real,
            graph_counts=counts,
            image_inputs=self.adapter.batch_images([prepared[i] for i in sorted(prepared)]),
        )
