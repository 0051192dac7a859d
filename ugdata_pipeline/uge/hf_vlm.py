"""The ``hf_vlm`` backbone: the paper's VLM backbones through transformers, with a peft LoRA adapter.

Families (one adapter each, :mod:`.vlm_adapters`): Qwen2-VL, Qwen2.5-VL (the paper's headline), Qwen3-VL,
LLaVA-1.6-Mistral (``llava_next``) and Phi-3-Vision (hub code, ``trust_remote_code``). A query (street-view image +
instruction, optionally the image's subgraph) or a text becomes one L2-normalised vector: the final-layer hidden
state of the last token of the family's chat prompt, which ends where the assistant's answer would start (the
reference's pooling point, reference notes §2 and §4). Every item is laid out as::

    {template prefix}[<graph> x n][image placeholders]{instruction or text}{template suffix}  <- pooled: last token

Graph fusion is early fusion, as in the reference (§3) but with its bugs B1-B4 and B13 (§8) fixed: a query
with a graph gets one ``<graph>`` token per graph vector, and the model's input embeddings at those positions
are replaced by the vectors (``masked_scatter`` in row-major order, so item i receives exactly its own vectors),
in training and at inference alike. The vectors come from the trainable :class:`GraphEncoder` (which projects
to the LLM hidden size) followed by :class:`GraphTokenProjector`, which RMS-normalises them and scales them to
the token-embedding scale (a learnable per-dimension gain). Image features are merged by the model's own code;
graph tokens take ordinary text positions.

Trainables: the LoRA A/B matrices only, pinned by regex to the language model's projections (the family's
defaults: ``q_proj`` / ``v_proj``; Phi-3-Vision's fused ``qkv_proj`` / ``o_proj``), so the vision tower, the
projector / merger and the token embeddings stay frozen; plus, in stage 2, the graph encoder and the projector
(see :class:`Backbone`).

:mod:`.hf_vlm_config` holds the configuration, :mod:`.hf_vlm_inputs` the batch types, :mod:`.hf_vlm_prompts` the
prompt builder, :mod:`.hf_vlm_peft` the LoRA adapter mechanics and :mod:`.hf_vlm_tiny` the random-weight models
built in code for tests and benchmarks.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.backbone import Backbone
from ugdata_pipeline.uge.graph_encoder import GraphEncoder, GraphEncoderConfig
from ugdata_pipeline.uge.hf_vlm_config import NODE_TEXT_CHUNK, NODE_TEXT_MAX_TOKENS, HFVLMConfig
from ugdata_pipeline.uge.hf_vlm_inputs import GraphVectors, PreparedImage, VLMInputs
from ugdata_pipeline.uge.hf_vlm_peft import (
    drop_input_grad_hooks,
    peft_reads_deprecated_checkpointing_flag,
    reload_adapter,
    save_adapter_folder,
)
from ugdata_pipeline.uge.hf_vlm_prompts import VlmPrompts
from ugdata_pipeline.uge.hf_vlm_tiny import VLMSizes, tiny_vlm
from ugdata_pipeline.uge.vlm_adapters import adapter_for_model, adapter_named

logger = logging.getLogger(__name__)

__all__ = ["GraphTokenProjector", "HFVLMBackbone", "HfVlmBackbone"]


class GraphTokenProjector(nn.Module):
    """Bring graph vectors to the scale of token embeddings: ``gain * v / rms(v)``.

    The reference injected LayerNorm outputs (norm about sqrt(H), some 60x a token embedding) with no scale
    matching (notes §8 B13). Here every vector is RMS-normalised and multiplied by a learnable per-dimension gain
    initialised to the RMS of the model's token-embedding table.

    Shapes
    ------
    forward: ``[..., dim]`` -> ``[..., dim]`` (float32).
    """

    def __init__(self, dim: int, init_rms: float, eps: float = 1e-6) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((dim,), float(init_rms)))
        self.eps = eps

    def forward(self, vectors: Tensor) -> Tensor:
        """Scale ``vectors`` (any leading shape) to token-embedding RMS."""
        vectors = vectors.float()
        return vectors * torch.rsqrt(vectors.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain


# ---------------------------------------------------------------------------------------------------------- backbone


class HfVlmBackbone(Backbone):
    """Qwen2-VL / Qwen2.5-VL embedding backbone: LoRA adapter, last-token pooling, graph tokens as embeddings.

    Parameters
    ----------
    config
        The backbone configuration.
    model
        A ``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration`` without an adapter;
        ``None`` builds it from ``config.random_init`` or loads ``config.model_name_or_path``.
    tokenizer
        Its tokenizer; ``None`` takes the processor's ``tokenizer`` or loads one with the model.
    processor
        A Qwen2-VL image processor, or a full processor with ``image_processor`` (and ``tokenizer``)
        attributes; ``None`` loads one with the model.

    Attributes
    ----------
    vlm
        The ``peft.PeftModel`` (also returned by :meth:`peft_model`); its trainable parameters are the LoRA
        matrices, kept in float32 by peft when the base is bf16.
    embed_dim, node_text_dim
        Both the language model's hidden size.

    Notes
    -----
    ``train()`` / ``eval()`` switch dropout and gradient checkpointing; gradient flow is the caller's business
    (wrap inference in ``torch.no_grad()``). Every embedding is float32 ``[B, embed_dim]`` with unit rows.
    """

    name = "hf_vlm"
    GRAPH_PREFIXES = ("graph_encoder.", "graph_fusion.")

    def __init__(
        self,
        config: HFVLMConfig,
        model: Any | None = None,
        tokenizer: Any | None = None,
        processor: Any | None = None,
    ) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.config = config
        if model is None:
            model, tokenizer, processor = self._build_model(config, tokenizer, processor)
        tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        if tokenizer is None or processor is None:
            msg = "HfVlmBackbone needs a tokenizer and an image processor with the model; pass both"
            raise HFVLMError(msg)
        self.adapter = adapter_for_model(model)
        if config.family is not None and config.family != self.adapter.family:
            msg = f"config names family {config.family!r} but the model is a {self.adapter.family!r} model"
            raise HFVLMError(msg)
        self.family = self.adapter.family
        self.tokenizer = tokenizer
        self.processor = processor
        self.adapter.check_image_processor(model, processor)
        self._token_ids = self.adapter.resolve_token_ids(model, tokenizer, config.graph_token)
        self.prompts = VlmPrompts(self.adapter, config, tokenizer, processor, self._token_ids)
        self.lora_targets = config.lora_targets or self.adapter.default_lora_targets

        model = model.to(dtype=config.torch_dtype)
        model.requires_grad_(False)
        model.config.use_cache = False
        target_regex = self.adapter.lora_target_regex(self.lora_targets)
        if not any(re.fullmatch(target_regex, name) for name, _ in model.named_modules()):
            msg = (
                f"no language-model module matches `lora_targets` {self.lora_targets!r}; "
                "use leaf names such as 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj'"
            )
            raise HFVLMError(msg)
        if config.gradient_checkpointing:
            # non-reentrant: needs no input that requires grad, so frozen embeddings and graph tokens both work
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=target_regex,
            bias="none",
        )
        with peft_reads_deprecated_checkpointing_flag():
            self.vlm = get_peft_model(model, lora)
        self._drop_input_grad_hooks()
        hidden = self.adapter.hidden_size(model)
        self.embed_dim = hidden
        self.node_text_dim = hidden
        counts = self.parameter_counts()
        logger.info(
            "hf_vlm backbone %s: %s parameters, %s LoRA (r=%d on %s)",
            self.family,
            f"{counts['total']:,}",
            f"{counts['lora']:,}",
            config.lora_r,
            ",".join(self.lora_targets),
        )

    # ---- construction -------------------------------------------------------------------------------------------
    @staticmethod
    def _build_model(config: HFVLMConfig, tokenizer: Any, processor: Any) -> tuple[Any, Any, Any]:
        if config.random_init is not None:
            spec = dict(config.random_init)
            seed = int(spec.pop("seed", 0))
            tiny = tiny_vlm(
                seed,
                sizes=VLMSizes(**spec),
                dtype=config.torch_dtype,
                attn_implementation=config.attn_implementation,
                graph_token=config.graph_token,
            )
            return tiny.model, tiny.tokenizer, tiny.processor
        if config.model_name_or_path is None:
            msg = (
                "HfVlmBackbone needs a model: pass `model`, set `model_name_or_path` (e.g. "
                "'Qwen/Qwen2.5-VL-7B-Instruct' or a local directory) or `random_init` ({} for the tiny test model)"
            )
            raise HFVLMError(msg)
        family = config.resolved_family()
        try:
            model, loaded_tokenizer, loaded_processor = adapter_named(family).load(config)
        except OSError as exc:  # not on disk, and the hub unreachable or forbidden (local_files_only)
            msg = (
                f"cannot load {config.model_name_or_path!r} ({family}): {exc}. Download the checkpoint where the hub "
                "is reachable (e.g. `hf download <id> --local-dir <folder>`) and pass the folder as model_name_or_path"
            )
            raise HFVLMError(msg) from exc
        return model, tokenizer or loaded_tokenizer, processor or loaded_processor

    def _drop_input_grad_hooks(self) -> None:
        drop_input_grad_hooks(self.vlm)

    # ---- Backbone contract: config, peft, images ----------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """JSON-ready :class:`HFVLMConfig` (a model passed in by object is not recorded: see ``random_init``)."""
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HfVlmBackbone:
        """Build from :meth:`to_config` output (loads ``model_name_or_path`` or builds ``random_init``)."""
        return cls(HFVLMConfig.from_dict(config))

    def peft_model(self) -> Any:
        """The ``peft.PeftModel`` holding the LoRA adapter."""
        return self.vlm

    def prepare_image(self, image: Image.Image) -> PreparedImage:
        """Run the image processor on one image (cacheable, can run in data-loader workers)."""
        return self.adapter.prepare_images(self.processor, [image.convert("RGB")])[0]

    def collate_images(self, items: Sequence[Any]) -> list[Any]:
        """Keep prepared images as a list (patch counts differ per image); raw images pass through."""
        return list(items)

    # ---- properties ---------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Embedding dimension: the language model's hidden size."""
        return self.embed_dim

    @property
    def graph_token_id(self) -> int:
        """Token id of ``config.graph_token``."""
        return self._token_ids[self.config.graph_token]

    @property
    def device(self) -> torch.device:
        """Device of the model weights."""
        return self.token_embeddings.weight.device

    @property
    def token_embeddings(self) -> nn.Embedding:
        """The language model's frozen input-embedding table."""
        return self._core.get_input_embeddings()

    @property
    def _core(self) -> nn.Module:
        return self.adapter.core_model(self.vlm.get_base_model())

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Switch activation checkpointing of the decoder (and vision) layers on or off, in place."""
        base = self.vlm.get_base_model()
        if enabled:
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            self._drop_input_grad_hooks()
        else:
            base.activation_checkpointing_disable()

    def lora_parameters(self) -> list[nn.Parameter]:
        """The trainable LoRA matrices of the adapter."""
        return [p for n, p in self.vlm.named_parameters() if p.requires_grad and "lora_" in n]

    def parameter_counts(self) -> dict[str, int]:
        """``{"total", "trainable", "lora", "graph"}`` parameter counts (metadata-friendly)."""
        params = list(self.parameters())
        return {
            "total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "lora": sum(p.numel() for p in self.lora_parameters()),
            "graph": sum(p.numel() for p in self.graph_parameters()),
        }

    # ---- graph side ---------------------------------------------------------------------------------------------
    def attach_graph_encoder(self, config: GraphEncoderConfig | None = None) -> GraphEncoder:
        """Add a trainable graph encoder (output width = hidden size) and the :class:`GraphTokenProjector`.

        The projector takes the ``graph_fusion`` slot of the base class: here the graph is fused inside the LLM,
        as input embeddings, so the base class's late-fusion block is not used.
        """
        encoder = super().attach_graph_encoder(config)
        with torch.no_grad():
            table = self.token_embeddings.weight
            sample = table[:: max(1, table.shape[0] // 8192)].float()  # RMS from a row sample: no 2 GB temporary
            init_rms = float(sample.pow(2).mean().sqrt())
        self.graph_fusion = GraphTokenProjector(self.embed_dim, init_rms).to(self.device)
        self.graph_encoder = encoder.to(self.device)
        return encoder

    def graph_token_vectors(self, graph: Any) -> Tensor:
        """The ``<graph>`` token embeddings of a PyG ``Batch``: ``[G, hidden_size]`` float32, graph g in row g."""
        if self.graph_encoder is None or self.graph_fusion is None:
            msg = (
                "a graph was passed but this backbone has no graph encoder; load a stage-2 checkpoint or call "
                "attach_graph_encoder() first"
            )
            raise HFVLMError(msg)
        return self.graph_fusion(self.graph_encoder(graph.to(self.device)))

    def encode_node_texts(self, texts: Sequence[str]) -> Tensor:
        """Frozen node-text features ``[N, hidden_size]`` (float32, CPU-cacheable).

        As the reference's QwenNodeEncoder (§1.2): the texts are tokenised with the VLM's own tokenizer (at most
        128 tokens), looked up in its frozen input-embedding table and mean-pooled over real tokens.
        """
        texts = list(texts)
        out = torch.zeros((len(texts), self.embed_dim), dtype=torch.float32)
        table = self.token_embeddings
        with torch.no_grad():
            for start in range(0, len(texts), NODE_TEXT_CHUNK):
                chunk = [t if t else " " for t in texts[start : start + NODE_TEXT_CHUNK]]
                enc = self.tokenizer(
                    chunk,
                    add_special_tokens=False,
                    padding=True,
                    truncation=True,
                    max_length=NODE_TEXT_MAX_TOKENS,
                    return_tensors="pt",
                )
                mask = enc["attention_mask"].to(self.device).unsqueeze(-1).float()
                rows = table(enc["input_ids"].to(self.device)).float()
                pooled = (rows * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                out[start : start + len(chunk)] = pooled.cpu()
        return out

    # ---- tokenisation -------------------------------------------------------------------------------------------
    def prepare(
        self,
        texts: Sequence[str | None],
        images: Sequence[Any] | None = None,
        graph_counts: Sequence[int] | None = None,
    ) -> VLMInputs:
        """Tokenise a batch (see :meth:`.VlmPrompts.prepare`): the padded batch, on the CPU."""
        return self.prompts.prepare(texts, images, graph_counts)

    # ---- graph vectors ------------------------------------------------------------------------------------------
    def _split_graph_vectors(self, graph_vectors: GraphVectors | None, batch: int) -> list[Tensor | None]:
        if graph_vectors is None:
            return [None] * batch
        if isinstance(graph_vectors, Tensor):
            if graph_vectors.ndim == 2:  # [B, H]: one vector per item
                graph_vectors = graph_vectors.unsqueeze(1)
            if graph_vectors.ndim != 3:
                msg = f"`graph_vectors` tensor must be [B, H] or [B, k, H], got shape {tuple(graph_vectors.shape)}"
                raise HFVLMError(msg)
            items: list[Tensor | None] = list(graph_vectors.unbind(0))
        else:
            items = list(graph_vectors)
        if len(items) != batch:
            msg = f"got graph vectors for {len(items)} items in a batch of {batch}; pass one entry per item, in order"
            raise HFVLMError(msg)
        out: list[Tensor | None] = []
        for i, vectors in enumerate(items):
            if vectors is not None:
                vectors = vectors.unsqueeze(0) if vectors.ndim == 1 else vectors
                if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[-1] != self.embed_dim:
                    msg = (
                        f"graph_vectors[{i}] must be [n >= 1, {self.embed_dim}] (projected to the LLM hidden size), "
                        f"got shape {tuple(vectors.shape)}"
                    )
                    raise HFVLMError(msg)
                k = self.config.num_graph_tokens
                if k is not None and vectors.shape[0] != k:
                    msg = f"graph_vectors[{i}] has {vectors.shape[0]} vectors but `num_graph_tokens` is {k}"
                    raise HFVLMError(msg)
            out.append(vectors)
        return out

    def input_embeddings(self, inputs: VLMInputs, graph_vectors: Sequence[Tensor | None]) -> Tensor:
        """Token embeddings of ``inputs`` with the ``<graph>`` rows replaced by ``graph_vectors``.

        Item i's j-th vector lands on item i's j-th ``<graph>`` token (row-major ``masked_scatter``). Image
        placeholders keep their token embeddings; the model merges the image features itself. Gradients flow
        into ``graph_vectors``.

        Returns
        -------
        Tensor
            ``[B, T, hidden_size]`` in the model dtype.
        """
        embeds = self.adapter.token_embeddings(self._core, inputs.to(self.device))
        given = [v for v in graph_vectors if v is not None]
        if [v.shape[0] for v in given] != [c for c in inputs.graph_counts if c]:
            msg = (
                f"graph vectors per item {[0 if v is None else v.shape[0] for v in graph_vectors]} do not match the "
                f"<graph> tokens per item {inputs.graph_counts}"
            )
            raise HFVLMError(msg)
        if not given:
            return embeds
        flat = torch.cat(given, dim=0).to(device=embeds.device, dtype=embeds.dtype)
        return embeds.masked_scatter(inputs.graph_token_mask.to(embeds.device).unsqueeze(-1), flat)

    # ---- forward and embeddings ---------------------------------------------------------------------------------
    def forward_inputs(self, inputs: VLMInputs, graph_vectors: GraphVectors | None = None) -> Tensor:
        """Run a prepared batch and pool the last real token: float32 ``[B, hidden_size]`` unit vectors."""
        inputs = inputs.to(self.device)
        vectors = self._split_graph_vectors(graph_vectors, inputs.input_ids.shape[0])
        embeds = self.input_embeddings(inputs, vectors)
        hidden = self.adapter.last_hidden_state(self._core, inputs, embeds)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return F.normalize(hidden[rows, inputs.last_token_index].float(), p=2, dim=-1)

    def embed_query_unfused(self, images: Any, instructions: Sequence[str | None] | None) -> Tensor:
        """Instruction-conditioned image vectors without a graph: ``[B, hidden_size]``, unit rows."""
        return self.embed_query(images, instructions)

    def embed_query(
        self,
        images: Any,
        instructions: Sequence[str | None] | None = None,
        graph: Any = None,
        *,
        graph_vectors: GraphVectors | None = None,
    ) -> Tensor:
        """Query vectors: image + instruction, with the image's subgraph as ``<graph>`` token(s) when given.

        Parameters
        ----------
        images
            B items, each a PIL image, uint8 ``HxWx3`` array, file path, :class:`PreparedImage` or ``None``
            (a text / graph-only query); ``None`` for B text-only queries (then ``instructions`` sets B).
        instructions
            B instructions, or ``None``; ``None`` / blank entries use ``config.embedding_instruction``.
        graph
            ``None`` or a PyG ``Batch`` of exactly B graphs (graph i belongs to query i), encoded by the attached
            graph encoder into one ``<graph>`` token each.
        graph_vectors
            Instead of ``graph``: token vectors already at hidden size, ``[B, H]``, ``[B, k, H]`` or a list with
            one ``[n_i, H]`` tensor (or ``None``) per query.

        Returns
        -------
        Tensor
            float32 ``[B, hidden_size]``, unit rows; differentiable w.r.t. LoRA and the graph side.
        """
        if images is None and instructions is None:
            msg = "pass `images`, `instructions` or both"
            raise HFVLMError(msg)
        batch = len(images) if images is not None else len(instructions or [])
        texts = [None] * batch if instructions is None else list(instructions)
        if len(texts) != batch:
            msg = f"got {len(texts)} instructions for {batch} images; pass one per image"
            raise HFVLMError(msg)
        if graph is not None and graph_vectors is not None:
            msg = "pass `graph` or `graph_vectors`, not both"
            raise HFVLMError(msg)
        if graph is not None:
            num_graphs = int(getattr(graph, "num_graphs", 1))
            if num_graphs != batch:
                msg = f"got {num_graphs} graphs for {batch} queries; pass exactly one graph per query, in order"
                raise HFVLMError(msg)
            graph_vectors = self.graph_token_vectors(graph)
        vectors = self._split_graph_vectors(graph_vectors, batch)
        inputs = self.prepare(texts, images, [0 if v is None else int(v.shape[0]) for v in vectors])
        return self.forward_inputs(inputs, vectors)

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Document vectors (captions, summaries, answers) as text-only user messages: ``[B, hidden_size]``."""
        texts = list(texts)
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            msg = "`texts` must be a non-empty list of non-blank strings"
            raise HFVLMError(msg)
        return self.forward_inputs(self.prepare(texts))

    # ---- adapter persistence ------------------------------------------------------------------------------------
    def save_adapter(self, directory: str | os.PathLike[str]) -> dict[str, Any]:
        """Write the LoRA adapter (peft layout) and the backbone config to ``directory``, atomically.

        ``directory`` gets ``adapter_config.json`` + ``adapter_model.safetensors`` (loadable with
        ``peft.PeftModel.from_pretrained(base_model, directory)``) and ``hf_vlm_config.json``. Everything is
        written to a temporary sibling first and swapped in, so a killed run never leaves a half-written adapter.

        Returns
        -------
        dict
            ``{"path", "lora_parameters", "bytes"}``.
        """
        target = save_adapter_folder(self.vlm, self.config.to_dict(), directory)
        size = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
        n_lora = sum(p.numel() for p in self.lora_parameters())
        logger.info("saved hf_vlm adapter to %s (%s LoRA parameters, %s bytes)", target, f"{n_lora:,}", f"{size:,}")
        return {"path": str(target), "lora_parameters": n_lora, "bytes": size}

    def load_adapter(self, directory: str | os.PathLike[str], *, trainable: bool = True) -> dict[str, Any]:
        """Replace the current adapter by the one in ``directory``.

        The saved ``adapter_config.json`` wins (rank, alpha, targets), as in the reference's stage-2 start from
        the stage-1 checkpoint (§3).

        Parameters
        ----------
        directory
            A directory written by :meth:`save_adapter` (or any peft LoRA adapter of this base model).
        trainable
            Keep the loaded LoRA weights (and the learned temperature) trainable (stage 2) or freeze them
            (inference).

        Returns
        -------
        dict
            ``{"path", "lora_parameters"}``.
        """
        source = Path(directory)
        self.vlm = reload_adapter(self.vlm, source, trainable=trainable)
        self.logit_scale.requires_grad_(trainable)  # inference freezes everything, the temperature included
        n_lora = sum(p.numel() for n, p in self.vlm.named_parameters() if "lora_" in n)
        logger.info("loaded hf_vlm adapter from %s (%s LoRA parameters)", source, f"{n_lora:,}")
        return {"path": str(source), "lora_parameters": n_lora}


HFVLMBackbone = HfVlmBackbone
"""Alias: the issue's spelling of :class:`HfVlmBackbone` (the registry name)."""


HFVLMBackbone = HfVlmBackbone
"""Alias: the issue's spelling of :class:`HfVlmBackbone` (the registry name)."""
