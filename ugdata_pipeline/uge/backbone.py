"""The backbone interface shared by every UGE model, the gated image-graph fusion, and the backbone registry.

A backbone embeds a *query* (an image, conditioned on an instruction, optionally fused with the image's spatial
subgraph) and a *text* (a caption, a summary, a path answer) into one space of width ``embed_dim``; both sides are
L2-normalised. Two implementations exist: ``compact`` (:mod:`ugdata_pipeline.uge.compact`, offline CPU default)
and ``hf_vlm`` (:mod:`ugdata_pipeline.uge.hf_vlm`, Hugging Face VLMs with LoRA on GPU).

What a subclass implements:

- :meth:`Backbone.embed_query_unfused` -- the instruction-conditioned image vector (no graph);
- :meth:`Backbone.embed_text` -- the text vector;
- :meth:`Backbone.encode_node_texts` -- frozen node-text features for the graph encoder (``node_text_dim`` wide);
- :meth:`Backbone.to_config` / :meth:`Backbone.from_config` -- a JSON round trip for checkpoints;
- optionally :meth:`Backbone.prepare_image` / :meth:`Backbone.collate_images` (default: RGB PIL images in a list)
  and :meth:`Backbone.peft_model` (the peft model whose adapter folder checkpoints save).

What the base class provides: :meth:`Backbone.attach_graph_encoder` (adds a trainable :class:`GraphEncoder` and a
:class:`GatedFusion` block), :meth:`Backbone.embed_query` (unfused query, then fused with the graph when one is
given -- the same path in training and at inference, unlike the reference: notes §8 B4), the parameter groups the
trainer gives different learning rates, and :meth:`Backbone.forward` (what the trainer calls, so DDP sees it).
"""

from __future__ import annotations

import abc
import importlib
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.uge.graph_encoder import GraphEncoder, GraphEncoderConfig
from ugdata_pipeline.uge.losses import DEFAULT_TEMPERATURE

#: The learned logit scale is capped here (temperature >= 0.01), as in CLIP: beyond it training gets unstable.
MAX_LOGIT_SCALE = math.log(100.0)
#: backbone name -> "module:Class" (imported lazily so the compact path never imports the VLM stack).
BACKBONE_CLASSES: dict[str, str] = {
    "compact": "ugdata_pipeline.uge.compact:CompactBackbone",
    "hf_vlm": "ugdata_pipeline.uge.hf_vlm:HfVlmBackbone",
}

__all__ = [
    "BACKBONE_CLASSES",
    "Backbone",
    "ContrastiveOutput",
    "GatedFusion",
    "backbone_class",
    "build_backbone",
]


class ContrastiveOutput(NamedTuple):
    """What :meth:`Backbone.forward` returns; every tensor is L2-normalised."""

    query: Tensor  # [B, D]
    positive: Tensor  # [B, D]
    hard_negatives: Tensor | None  # [M, D] (the batch's hard-negative texts) or None


class GatedFusion(nn.Module):
    """
    Late fusion of a query vector with a graph vector: ``LayerNorm(q + sigmoid(W[q; g]) * V g)``.

    The gate is per dimension and per sample, so the model can lean on the graph where the image is ambiguous.

    Shapes
    ------
    query, graph: ``[B, D]`` -> ``[B, D]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, dim)
        self.value = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: Tensor, graph: Tensor) -> Tensor:
        """Fuse ``query`` ``[B, D]`` with ``graph`` ``[B, D]`` (row i with row i)."""
        gate = torch.sigmoid(self.gate(torch.cat([query, graph], dim=-1)))
        return self.norm(query + gate * self.value(graph))


class Backbone(nn.Module, abc.ABC):
    """
    Base class of every UGE backbone (see the module docstring for the contract).

    Attributes
    ----------
    name
        Registry name (``"compact"``, ``"hf_vlm"``).
    embed_dim
        Width of every embedding this backbone returns.
    node_text_dim
        Width of :meth:`encode_node_texts` rows (the graph encoder's text input).
    graph_encoder, graph_fusion
        ``None`` until :meth:`attach_graph_encoder` (stage 2) adds them.
    """

    name: ClassVar[str] = ""
    #: parameter-name prefixes that belong to the graph side (stage-2 learning rate)
    GRAPH_PREFIXES: ClassVar[tuple[str, ...]] = ("graph_encoder.", "graph_fusion.")

    embed_dim: int
    node_text_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.graph_encoder: GraphEncoder | None = None
        self.graph_fusion: GatedFusion | None = None
        #: node cap of the training run's subgraphs (set by ``embed.load_model``; inference builds graphs alike)
        self.graph_max_nodes: int | None = None
        #: what the graph side was trained on ("own", "shuffled", "none"; set by ``embed.load_model``): a model
        #: trained without graphs is given none at inference either
        self.graph_input: str = "own"
        #: log of the inverse InfoNCE temperature, learned with the model (CLIP); trained in stage 1, kept after
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / DEFAULT_TEMPERATURE)))

    def temperature(self) -> Tensor:
        """The InfoNCE temperature ``1 / exp(logit_scale)``, with the scale capped at :data:`MAX_LOGIT_SCALE`."""
        return 1.0 / self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    # ---- to implement -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def embed_query_unfused(self, images: Any, instructions: Sequence[str] | None) -> Tensor:
        """
        Instruction-conditioned image vectors, before any graph fusion.

        Parameters
        ----------
        images
            Output of :meth:`collate_images` (or a list of PIL images), B of them.
        instructions
            B instructions, or None for none.

        Returns
        -------
        query
            ``[B, embed_dim]``, not necessarily normalised.
        """

    @abc.abstractmethod
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Text vectors ``[len(texts), embed_dim]``, L2-normalised."""

    @abc.abstractmethod
    def encode_node_texts(self, texts: Sequence[str]) -> Tensor:
        """Frozen (no-grad, cacheable) node-text features ``[len(texts), node_text_dim]`` for graph inputs."""

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-ready constructor config (without the graph encoder, which :meth:`full_config` adds)."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict[str, Any]) -> Backbone:
        """Build a fresh backbone from :meth:`to_config` output."""

    # ---- optional hooks -----------------------------------------------------------------------------------------
    def prepare_image(self, image: Image.Image) -> Any:
        """Turn one decoded image into a cacheable model input (default: the RGB PIL image)."""
        return image.convert("RGB")

    def prepare_identity(self) -> str | None:
        """
        Names what :meth:`prepare_image` computes when it depends on nothing but a few settings (two models with
        the same identity prepare an image identically), so prepared images are shared across the runs and
        benchmarks of one process; None: not shared.
        """
        return None

    def collate_images(self, items: Sequence[Any]) -> Any:
        """Stack :meth:`prepare_image` outputs into the ``images`` argument of :meth:`embed_query`."""
        return list(items)

    def peft_model(self) -> Any | None:
        """The ``peft.PeftModel`` whose adapter checkpoints save as ``adapter/`` (None without LoRA)."""
        return None

    def external_frozen_parameters(self) -> int:
        """Parameters of frozen helpers kept outside the module tree (not saved, not trained); default 0."""
        return 0

    def warm_text_cache(self, texts: Sequence[str]) -> None:
        """Precompute cached text features for ``texts`` before training (no-op unless the backbone caches)."""

    def node_text_identity(self) -> str | None:
        """
        Names the function :meth:`encode_node_texts` computes when it is shared by other models in the process (the
        same frozen encoder gives the same features), so graphs built for one run serve the next; None: not shared.
        """
        return None

    # ---- provided -----------------------------------------------------------------------------------------------
    def attach_graph_encoder(self, config: GraphEncoderConfig | None = None) -> GraphEncoder:
        """
        Add a trainable graph encoder and fusion block (stage 2).

        ``node_text_dim`` and ``out_dim`` are set from this backbone whatever ``config`` says. Every parameter of
        both modules has ``requires_grad=True`` (the reference froze them by accident: notes §8 B1).
        """
        config = replace(config or GraphEncoderConfig(), node_text_dim=self.node_text_dim, out_dim=self.embed_dim)
        self.graph_encoder = GraphEncoder(config)
        self.graph_fusion = GatedFusion(self.embed_dim)
        for param in [*self.graph_encoder.parameters(), *self.graph_fusion.parameters()]:
            param.requires_grad_(True)
        return self.graph_encoder

    def full_config(self) -> dict[str, Any]:
        """:meth:`to_config` plus the backbone name and the graph encoder config (None without one)."""
        return {
            "backbone": self.name,
            "backbone_config": self.to_config(),
            "graph_encoder": self.graph_encoder.config.to_dict() if self.graph_encoder is not None else None,
        }

    def embed_query(self, images: Any, instructions: Sequence[str] | None = None, graph: Any = None) -> Tensor:
        """
        Query vectors: the instruction-conditioned image, fused with its own subgraph when ``graph`` is given.

        Parameters
        ----------
        images
            B images (see :meth:`embed_query_unfused`).
        instructions
            B instructions or None.
        graph
            None (image-only query) or a PyG ``Batch`` of exactly B graphs, graph i belonging to image i.

        Returns
        -------
        query
            ``[B, embed_dim]``, L2-normalised.
        """
        query = self.embed_query_unfused(images, instructions)
        if graph is not None:
            query = self.fuse_graph(query, graph)
        return F.normalize(query, dim=-1)

    def fuse_graph(self, query: Tensor, graph: Any) -> Tensor:
        """Fuse ``[B, D]`` query vectors with the B graphs of ``graph`` (row i with graph i)."""
        if self.graph_encoder is None or self.graph_fusion is None:
            msg = (
                "a graph was passed but this backbone has no graph encoder; load a stage-2 checkpoint or call "
                "attach_graph_encoder() first."
            )
            raise ValueError(msg)
        num_graphs = int(getattr(graph, "num_graphs", 1))
        if num_graphs != query.shape[0]:
            msg = f"got {num_graphs} graphs for {query.shape[0]} images; pass exactly one graph per image, in order."
            raise ValueError(msg)
        graph = graph.to(next(self.graph_encoder.parameters()).device)  # data.py builds graphs on the CPU
        graph_vectors = self.graph_encoder(graph).to(query.dtype)
        return self.graph_fusion(query, graph_vectors)

    def graph_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the graph side (encoder + fusion)."""
        return [p for n, p in self.named_parameters() if n.startswith(self.GRAPH_PREFIXES) and p.requires_grad]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of everything else (LoRA, adapters, the image encoder)."""
        return [p for n, p in self.named_parameters() if not n.startswith(self.GRAPH_PREFIXES) and p.requires_grad]

    def forward(
        self,
        images: Any,
        instructions: Sequence[str] | None,
        positives: Sequence[str],
        graph: Any = None,
        hard_negatives: Sequence[str] | None = None,
    ) -> ContrastiveOutput:
        """
        One contrastive step's embeddings (the trainer calls this so DDP hooks see the computation).

        Returns
        -------
        ContrastiveOutput
            ``query`` ``[B, D]``, ``positive`` ``[B, D]``, ``hard_negatives`` ``[M, D]`` or None.
        """
        query = self.embed_query(images, instructions, graph)
        positive = self.embed_text(positives)
        negatives = self.embed_text(hard_negatives) if hard_negatives else None
        return ContrastiveOutput(query, positive, negatives)


def backbone_class(name: str) -> type[Backbone]:
    """The :class:`Backbone` subclass registered as ``name`` (see :data:`BACKBONE_CLASSES`)."""
    if name not in BACKBONE_CLASSES:
        msg = f"unknown backbone {name!r}; choose one of {sorted(BACKBONE_CLASSES)}."
        raise ValueError(msg)
    module_name, class_name = BACKBONE_CLASSES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        msg = f"{BACKBONE_CLASSES[name]} is not a Backbone subclass."
        raise TypeError(msg)
    return cls


def build_backbone(name: str, config: dict[str, Any] | None = None) -> Backbone:
    """Build a fresh backbone by registry name from its JSON config (``{}`` = its defaults)."""
    return backbone_class(name).from_config(dict(config or {}))
