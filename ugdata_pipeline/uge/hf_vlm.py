"""The ``hf_vlm`` backbone: Qwen2-VL / Qwen2.5-VL through transformers, with a peft LoRA adapter.

A query (street-view image + instruction, optionally the image's subgraph) or a text becomes one L2-normalised
vector: the final-layer hidden state of the last non-padding token of a chat prompt that ends with
``<|im_start|>assistant\\n`` (the reference's pooling point, reference notes §2 and §4).

Prompt layout (one sequence per item, right padding)::

    <|im_start|>system\\n{system_prompt}<|im_end|>\\n<|im_start|>user\\n
    [<graph> x n][<|vision_start|><|image_pad|> x m<|vision_end|>]{instruction or text}<|im_end|>\\n
    <|im_start|>assistant\\n                        <- pooled: the final "\\n"

Graph fusion is early fusion, as in the reference (§3) but with its bugs B1-B4 and B13 (§8) fixed: a query
with a graph gets one ``<graph>`` token per graph vector, and the model's input embeddings at those positions
are replaced by the vectors (``masked_scatter`` in row-major order, so item i receives exactly its own vectors),
in training and at inference alike. The vectors come from the trainable :class:`GraphEncoder` (which projects
to the LLM hidden size) followed by :class:`GraphTokenProjector`, which RMS-normalises them and scales them to
the token-embedding scale (a learnable per-dimension gain). Image features are merged by the model's own code
(``input_ids`` and ``inputs_embeds`` are both passed, so the image placeholder mask and the multimodal RoPE
index come from ``input_ids``); graph tokens take ordinary sequential text positions, as in the reference.

Trainables: the LoRA A/B matrices only, pinned by regex to the language model's projections (``q_proj`` /
``v_proj`` by default), so the fused ``attn.qkv`` of the vision tower, the merger and the token embeddings stay
frozen; plus, in stage 2, the graph encoder and the projector (see :class:`Backbone`).

:func:`tiny_qwen2_vl` builds a random-weight model, a byte-level tokenizer and a Qwen2-VL image processor in code
(no hub access): tiny for tests, or at Qwen2.5-VL-7B size (:data:`QWEN2_5_VL_7B_SIZES`) for the GPU benchmark.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.backbone import Backbone
from ugdata_pipeline.uge.graph_encoder import GraphEncoder, GraphEncoderConfig
from ugdata_pipeline.uge.images import load_image

logger = logging.getLogger(__name__)

__all__ = [
    "QWEN2_5_VL_7B_SIZES",
    "GraphTokenProjector",
    "HFVLMBackbone",
    "HFVLMConfig",
    "HFVLMError",
    "HfVlmBackbone",
    "PreparedImage",
    "TinyVLM",
    "VLMInputs",
    "VLMSizes",
    "tiny_qwen2_vl",
    "tiny_tokenizer",
]

VlmFamily = Literal["qwen2_vl", "qwen2_5_vl"]
GraphVectors = Tensor | Sequence[Tensor | None]

DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # the reference's ms-swift chatml default
DEFAULT_EMBEDDING_INSTRUCTION = "Represent this street-view scene and its surroundings for spatial retrieval."
NODE_TEXT_MAX_TOKENS = 128  # node-text truncation of the reference's QwenNodeEncoder (§1.2)
NODE_TEXT_CHUNK = 256  # node texts embedded per chunk (bounds the [chunk, tokens, hidden] lookup)

# Token strings of the Qwen2-VL family (shared by Qwen2.5-VL).
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
END_OF_TEXT = "<|endoftext|>"

HFVLM_CONFIG_FILE = "hf_vlm_config.json"
CPU_PARAMETER_LIMIT = 1_000_000_000  # tiny_qwen2_vl refuses bigger random models on the CPU (tests never need one)
# names of the forward hooks transformers / peft register to make embedding outputs require grad
INPUT_GRAD_HOOK_NAMES = frozenset({"make_inputs_require_grads", "make_inputs_require_grad"})


# ---------------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class HFVLMConfig:
    """Configuration of :class:`HfVlmBackbone` (JSON round trip: :meth:`to_dict` / :meth:`from_dict`).

    Parameters
    ----------
    model_name_or_path
        Hugging Face model id or local directory of a Qwen2-VL / Qwen2.5-VL checkpoint; ``None`` when the model,
        tokenizer and processor are passed in, or built from ``random_init``.
    random_init
        Build a random-weight model in code instead of loading one: ``{"seed": int, **VLMSizes fields}``
        (see :func:`tiny_qwen2_vl`); ``{}`` is the tiny test model with seed 0. Used by tests and benchmarks.
    lora_r, lora_alpha, lora_dropout
        LoRA rank, alpha (scaling ``alpha / r``) and dropout; the reference uses 16 / 32 / 0.1.
    lora_targets
        Leaf module names inside the LANGUAGE model that get LoRA (default ``("q_proj", "v_proj")``).
    dtype
        Weight dtype: ``"bfloat16"`` (GPU default), ``"float16"`` or ``"float32"`` (CPU tests).
    gradient_checkpointing
        Recompute decoder-layer activations in the backward pass (active in ``train()`` mode only).
    graph_token
        Special token whose input embeddings are replaced by graph vectors; added to the tokenizer if missing.
    num_graph_tokens
        ``None``: one ``<graph>`` token per graph vector given; an int k: every graph must bring exactly k
        vectors. The :class:`GraphEncoder` reads out one vector per graph, so graph queries use 1.
    embedding_instruction
        Instruction used for a query whose instruction is ``None`` or blank.
    system_prompt
        System message of the chat prompt.
    max_text_tokens
        Tokens kept of each instruction / text (cut at the end); placeholders are never cut.
    image_min_pixels, image_max_pixels
        Pixel budget of the image processor loaded with ``model_name_or_path`` (the reference trained at 400,000
        and evaluated at 600,000: use one value for both).
    attn_implementation
        ``"sdpa"`` (default), ``"eager"`` or ``"flash_attention_2"``.
    local_files_only
        Forbid hub downloads when loading ``model_name_or_path``.
    """

    model_name_or_path: str | None = None
    random_init: dict[str, Any] | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    dtype: str = "bfloat16"
    gradient_checkpointing: bool = True
    graph_token: str = "<graph>"
    num_graph_tokens: int | None = None
    embedding_instruction: str = DEFAULT_EMBEDDING_INSTRUCTION
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_text_tokens: int = 2048
    image_min_pixels: int = 56 * 56
    image_max_pixels: int = 400_000
    attn_implementation: str = "sdpa"
    local_files_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        problems: list[str] = []
        if self.model_name_or_path is not None and self.random_init is not None:
            problems.append("set `model_name_or_path` or `random_init`, not both")
        if self.random_init is not None:
            unknown = sorted(set(self.random_init) - {"seed"} - {f.name for f in fields(VLMSizes)})
            if unknown:
                problems.append(f"`random_init` has unknown keys {unknown!r} (accepted: 'seed' and VLMSizes fields)")
        if self.lora_r < 1:
            problems.append(f"`lora_r` must be >= 1, got {self.lora_r!r}")
        if self.lora_alpha <= 0:
            problems.append(f"`lora_alpha` must be > 0, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout!r}")
        if not self.lora_targets or not all(
            isinstance(t, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t) for t in self.lora_targets
        ):
            problems.append(f"`lora_targets` must be module names like ('q_proj', 'v_proj'), got {self.lora_targets!r}")
        if self.dtype not in DTYPES:
            problems.append(f"`dtype` must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not self.graph_token or self.graph_token.strip() != self.graph_token or " " in self.graph_token:
            problems.append(f"`graph_token` must be a non-empty token without spaces, got {self.graph_token!r}")
        if self.num_graph_tokens is not None and self.num_graph_tokens < 1:
            problems.append(f"`num_graph_tokens` must be None or >= 1, got {self.num_graph_tokens!r}")
        if not self.embedding_instruction.strip():
            problems.append("`embedding_instruction` must not be blank")
        if self.max_text_tokens < 1:
            problems.append(f"`max_text_tokens` must be >= 1, got {self.max_text_tokens!r}")
        if not 0 < self.image_min_pixels <= self.image_max_pixels:
            problems.append(
                f"need 0 < `image_min_pixels` <= `image_max_pixels`, got {self.image_min_pixels!r} and "
                f"{self.image_max_pixels!r}"
            )
        if problems:
            msg = "invalid HFVLMConfig: " + "; ".join(problems)
            raise HFVLMError(msg)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The ``torch.dtype`` named by :attr:`dtype`."""
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples become lists)."""
        out = asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        if self.random_init is not None:
            out["random_init"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.random_init.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HFVLMConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config from another version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"unknown HFVLMConfig keys {unknown!r}; known keys are {sorted(known)}"
            raise HFVLMError(msg)
        values = dict(data)
        if "lora_targets" in values:
            values["lora_targets"] = tuple(values["lora_targets"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------- inputs


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


# ---------------------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _peft_reads_deprecated_checkpointing_flag() -> Iterator[None]:
    """Silence exactly one third-party deprecation: peft 0.21 reads ``model.is_gradient_checkpointing``, which
    transformers 5.x deprecates with a FutureWarning that no caller can avoid."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _lora_target_regex(targets: Sequence[str]) -> str:
    """Regex (peft full match) selecting ``targets`` inside the language model only, never the vision tower."""
    names = "|".join(re.escape(t) for t in targets)
    return rf".*language_model\..*\.({names})"


def _model_family(model: nn.Module) -> VlmFamily:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        return model_type
    msg = f"unsupported model type {model_type!r}: the hf_vlm backbone handles 'qwen2_vl' and 'qwen2_5_vl'"
    raise HFVLMError(msg)


def _core_model(model: nn.Module) -> nn.Module:
    """The inner ``Qwen2VLModel`` / ``Qwen2_5_VLModel`` (vision tower + language model, no LM head)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "language_model") and hasattr(inner, "visual"):
        return inner
    msg = f"{type(model).__name__} has no `.model.language_model` / `.model.visual`; pass a Qwen2(.5)-VL model"
    raise HFVLMError(msg)


def _to_pil(image: Any, index: int) -> Image.Image:
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
        image_processor = getattr(processor, "image_processor", processor)
        tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        if tokenizer is None or image_processor is None:
            msg = "HfVlmBackbone needs a tokenizer and an image processor with the model; pass both"
            raise HFVLMError(msg)
        self.family: VlmFamily = _model_family(model)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self._check_image_processor(model, image_processor)
        self._token_ids = self._resolve_token_ids(model, tokenizer)

        model = model.to(dtype=config.torch_dtype)
        model.requires_grad_(False)
        model.config.use_cache = False
        target_regex = _lora_target_regex(config.lora_targets)
        if not any(re.fullmatch(target_regex, name) for name, _ in model.named_modules()):
            msg = (
                f"no language-model module matches `lora_targets` {config.lora_targets!r}; "
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
        with _peft_reads_deprecated_checkpointing_flag():
            self.vlm = get_peft_model(model, lora)
        self._drop_input_grad_hooks()
        hidden = int(model.config.text_config.hidden_size)
        self.embed_dim = hidden
        self.node_text_dim = hidden
        counts = self.parameter_counts()
        logger.info(
            "hf_vlm backbone %s: %s parameters, %s LoRA (r=%d on %s)",
            self.family,
            f"{counts['total']:,}",
            f"{counts['lora']:,}",
            config.lora_r,
            ",".join(config.lora_targets),
        )

    # ---- construction -------------------------------------------------------------------------------------------
    @staticmethod
    def _build_model(config: HFVLMConfig, tokenizer: Any, processor: Any) -> tuple[Any, Any, Any]:
        if config.random_init is not None:
            spec = dict(config.random_init)
            seed = int(spec.pop("seed", 0))
            tiny = tiny_qwen2_vl(
                seed,
                sizes=VLMSizes(**spec),
                dtype=config.torch_dtype,
                attn_implementation=config.attn_implementation,
                graph_token=config.graph_token,
            )
            return tiny.model, tiny.tokenizer, tiny.image_processor
        if config.model_name_or_path is None:
            msg = (
                "HfVlmBackbone needs a model: pass `model`, set `model_name_or_path` (e.g. "
                "'Qwen/Qwen2.5-VL-7B-Instruct' or a local directory) or `random_init` ({} for the tiny test model)"
            )
            raise HFVLMError(msg)
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        # the tokenizer and the image processor are loaded on their own: the full AutoProcessor would also
        # build a video processor (which needs torchvision) that embeddings never use
        path = config.model_name_or_path
        local = config.local_files_only
        if tokenizer is None:
            tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(
                path, local_files_only=local
            )
        if processor is None:
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

    @staticmethod
    def _check_image_processor(model: nn.Module, image_processor: Any) -> None:
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

    def _resolve_token_ids(self, model: nn.Module, tokenizer: Any) -> dict[str, int]:
        graph_token = self.config.graph_token
        if graph_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([graph_token], special_tokens=True)
            logger.info("added graph token %r to the tokenizer", graph_token)
        ids: dict[str, int] = {}
        for token in (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, graph_token):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id):
                msg = f"tokenizer has no {token!r} token; a Qwen2-VL-family tokenizer is required"
                raise HFVLMError(msg)
            ids[token] = int(token_id)
        if ids[IMAGE_PAD] != model.config.image_token_id:
            msg = (
                f"tokenizer id of {IMAGE_PAD!r} ({ids[IMAGE_PAD]}) differs from the model's `image_token_id` "
                f"({model.config.image_token_id}); the tokenizer and the model do not belong together"
            )
            raise HFVLMError(msg)
        if max(ids.values()) >= model.get_input_embeddings().num_embeddings:
            # Qwen vocabularies carry spare rows, so this only runs for tokenizers without them; the new
            # <graph> row is always overwritten, never read
            model.resize_token_embeddings(len(tokenizer))
        pad_id = tokenizer.pad_token_id
        ids["pad"] = int(pad_id if pad_id is not None else tokenizer.convert_tokens_to_ids(END_OF_TEXT))
        return ids

    def _drop_input_grad_hooks(self) -> None:
        # transformers (when checkpointing is switched on) and peft (when it wraps the model) hook every
        # input-embedding module, the vision patch embedding included, so that its output requires grad: reentrant
        # checkpointing needs that. Non-reentrant checkpointing does not, and the hooks only make autograd
        # backpropagate through the whole frozen vision tower for nothing. The second registration orphans the
        # first handles, so the hooks are found by their function name rather than through the stored handles.
        base = self.vlm.get_base_model()
        for module in base.modules():
            for hook_id, hook in list(module._forward_hooks.items()):
                if getattr(hook, "__name__", "") in INPUT_GRAD_HOOK_NAMES:
                    del module._forward_hooks[hook_id]
        if hasattr(base, "_require_grads_hooks"):
            base._require_grads_hooks = []

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
        processed = self.image_processor(images=[image.convert("RGB")], return_tensors="pt")
        return PreparedImage(processed["pixel_values"], processed["image_grid_thw"][0])

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
        return _core_model(self.vlm.get_base_model())

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
            out.append(list(ids[: self.config.max_text_tokens]))
        return out

    def _prompt_ids(self) -> tuple[list[int], list[int]]:
        prefix = f"{IM_START}system\n{self.config.system_prompt}{IM_END}\n{IM_START}user\n"
        suffix = f"{IM_END}\n{IM_START}assistant\n"
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
                raw.append((i, _to_pil(image, i)))
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
        filled = [t if t is not None and t.strip() else self.config.embedding_instruction for t in texts]
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
        embeds = self.token_embeddings(inputs.input_ids.to(self.device))
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
        outputs = self._core(
            input_ids=inputs.input_ids,
            inputs_embeds=embeds,
            attention_mask=inputs.attention_mask,
            pixel_values=inputs.pixel_values,
            image_grid_thw=inputs.image_grid_thw,
            mm_token_type_ids=inputs.mm_token_type_ids,
            use_cache=False,
        )
        hidden = outputs.last_hidden_state
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
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp, which makes 0700 folders) so the adapter folder follows the umask like the tables
        staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
        staging.mkdir()
        try:
            self.vlm.save_pretrained(str(staging), safe_serialization=True)
            (staging / HFVLM_CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))
            if target.exists():
                retired = target.with_name(f".{target.name}.old-{os.getpid()}")
                shutil.rmtree(retired, ignore_errors=True)
                target.replace(retired)
                staging.replace(target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                staging.replace(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
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
        from peft import PeftModel

        source = Path(directory)
        if not (source / "adapter_config.json").is_file():
            msg = f"{str(source)!r} holds no adapter_config.json; pass a directory written by save_adapter"
            raise HFVLMError(msg)
        base = self.vlm.unload()  # the base model with the LoRA layers taken out
        with _peft_reads_deprecated_checkpointing_flag():
            self.vlm = PeftModel.from_pretrained(base, str(source), is_trainable=trainable)
        self._drop_input_grad_hooks()
        self.logit_scale.requires_grad_(trainable)  # inference freezes everything, the temperature included
        n_lora = sum(p.numel() for n, p in self.vlm.named_parameters() if "lora_" in n)
        logger.info("loaded hf_vlm adapter from %s (%s LoRA parameters)", source, f"{n_lora:,}")
        return {"path": str(source), "lora_parameters": n_lora}


HFVLMBackbone = HfVlmBackbone
"""Alias: the issue's spelling of :class:`HfVlmBackbone` (the registry name)."""


# ---------------------------------------------------------------------- tiny random-weight models


class TinyVLM(NamedTuple):
    """A random-weight VLM built in code: the model, its tokenizer and its image processor."""

    model: Any
    tokenizer: Any
    image_processor: Any


@dataclass(frozen=True)
class VLMSizes:
    """Sizes of a random-weight Qwen2-VL / Qwen2.5-VL built by :func:`tiny_qwen2_vl`.

    The defaults are tiny (CPU tests in well under a second per step); :data:`QWEN2_5_VL_7B_SIZES` matches
    Qwen2.5-VL-7B-Instruct and must only be instantiated on a GPU.
    """

    family: VlmFamily = "qwen2_vl"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int | None = None  # None: the tokenizer's size rounded up to a multiple of 64
    vision_depth: int = 1
    vision_hidden_size: int = 32
    vision_heads: int = 2
    vision_intermediate_size: int = 64  # qwen2_5_vl; qwen2_vl uses mlp_ratio = intermediate / hidden
    patch_size: int = 4
    merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int = 16  # qwen2_5_vl windowed attention, in pixels
    fullatt_block_indexes: tuple[int, ...] = (0,)
    rope_theta: float = 10_000.0
    image_min_pixels: int = 16 * 16
    image_max_pixels: int = 32 * 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "fullatt_block_indexes", tuple(int(i) for i in self.fullatt_block_indexes))
        if self.family not in ("qwen2_vl", "qwen2_5_vl"):
            msg = f"`family` must be 'qwen2_vl' or 'qwen2_5_vl', got {self.family!r}"
            raise HFVLMError(msg)
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            msg = (
                f"hidden_size {self.hidden_size} must divide by num_heads {self.num_heads}, which must divide by "
                f"num_kv_heads {self.num_kv_heads}"
            )
            raise HFVLMError(msg)
        if (self.hidden_size // self.num_heads) % 2 or self.vision_hidden_size % self.vision_heads:
            msg = "head dimensions must be even and vision_hidden_size must divide by vision_heads"
            raise HFVLMError(msg)


QWEN2_5_VL_7B_SIZES = VLMSizes(
    family="qwen2_5_vl",
    hidden_size=3584,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    intermediate_size=18944,
    vocab_size=152064,
    vision_depth=32,
    vision_hidden_size=1280,
    vision_heads=16,
    vision_intermediate_size=3420,
    patch_size=14,
    merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=(7, 15, 23, 31),
    rope_theta=1_000_000.0,
    image_min_pixels=56 * 56,
    image_max_pixels=448 * 448,
)
"""Qwen2.5-VL-7B-Instruct sizes (8.3 B parameters): GPU only."""


def _mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension in Qwen's 16:24:24 proportion."""
    half = head_dim // 2
    temporal = max(1, half // 4)
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def tiny_tokenizer(graph_token: str = "<graph>") -> Any:
    """A byte-level BPE tokenizer (no merges: one token per UTF-8 byte) with Qwen2-VL's special tokens.

    Any text is encodable; the 256 byte tokens come first, then ``<|endoftext|>`` (padding),
    ``<|im_start|>``, ``<|im_end|>``, the vision tokens and ``graph_token``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    specials = [END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, graph_token]
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=END_OF_TEXT, eos_token=IM_END, padding_side="right")


def tiny_qwen2_vl(
    seed: int = 0,
    *,
    sizes: VLMSizes | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    attn_implementation: str = "sdpa",
    graph_token: str = "<graph>",
) -> TinyVLM:
    """Build a random-weight Qwen2-VL (or Qwen2.5-VL) with its tokenizer and image processor, offline.

    Parameters
    ----------
    seed
        Seed of the weight initialisation (the global RNG state is left untouched).
    sizes
        Model sizes; default tiny (hidden 64, 2 layers, vision depth 1, patch 4). ``QWEN2_5_VL_7B_SIZES`` for
        the benchmark (GPU only).
    dtype, device
        Where and in which dtype the weights are created (created in place: no CPU copy of a 7B model).
    attn_implementation
        ``"sdpa"`` or ``"eager"``.
    graph_token
        Graph placeholder added to the tokenizer.

    Returns
    -------
    TinyVLM
        ``(model, tokenizer, image_processor)``.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    sizes = sizes or VLMSizes()
    tokenizer = tiny_tokenizer(graph_token)
    token_id = tokenizer.convert_tokens_to_ids
    vocab_size = sizes.vocab_size or 64 * math.ceil(len(tokenizer) / 64)
    if vocab_size < len(tokenizer):
        msg = f"`vocab_size` {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)"
        raise HFVLMError(msg)
    head_dim = sizes.hidden_size // sizes.num_heads
    text = {
        "vocab_size": vocab_size,
        "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "num_hidden_layers": sizes.num_layers,
        "num_attention_heads": sizes.num_heads,
        "num_key_value_heads": sizes.num_kv_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": sizes.rope_theta,
            "mrope_section": _mrope_section(head_dim),
        },
        "pad_token_id": token_id(END_OF_TEXT),
        "eos_token_id": token_id(IM_END),
        "bos_token_id": None,
    }
    special_ids = {
        "image_token_id": token_id(IMAGE_PAD),
        "video_token_id": token_id(VIDEO_PAD),
        "vision_start_token_id": token_id(VISION_START),
        "vision_end_token_id": token_id(VISION_END),
    }
    common_vision = {
        "depth": sizes.vision_depth,
        "num_heads": sizes.vision_heads,
        "patch_size": sizes.patch_size,
        "spatial_merge_size": sizes.merge_size,
        "temporal_patch_size": sizes.temporal_patch_size,
    }
    if sizes.family == "qwen2_vl":
        vision = {
            **common_vision,
            "embed_dim": sizes.vision_hidden_size,
            "hidden_size": sizes.hidden_size,  # output of the merger
            "mlp_ratio": max(1, sizes.vision_intermediate_size // sizes.vision_hidden_size),
        }
        config: Any = Qwen2VLConfig(text_config=text, vision_config=vision, **special_ids)
        model_cls: Any = Qwen2VLForConditionalGeneration
    else:
        vision = {
            **common_vision,
            "hidden_size": sizes.vision_hidden_size,
            "intermediate_size": sizes.vision_intermediate_size,
            "out_hidden_size": sizes.hidden_size,
            "window_size": sizes.window_size,
            "fullatt_block_indexes": list(sizes.fullatt_block_indexes),
        }
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special_ids)
        model_cls = Qwen2_5_VLForConditionalGeneration

    device = torch.device(device)
    h = sizes.hidden_size
    approx_params = sizes.num_layers * (4 * h * h + 3 * h * sizes.intermediate_size) + 2 * vocab_size * h
    if device.type == "cpu" and approx_params > CPU_PARAMETER_LIMIT:
        msg = (
            f"refusing to build a {approx_params / 1e9:.1f} B-parameter random model on the CPU; pass "
            "device='cuda' (or 'meta' to inspect shapes)"
        )
        raise HFVLMError(msg)
    fork_devices = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices), torch.device(device):
        torch.manual_seed(seed)
        model = model_cls._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=sizes.patch_size,
        merge_size=sizes.merge_size,
        temporal_patch_size=sizes.temporal_patch_size,
        min_pixels=sizes.image_min_pixels,
        max_pixels=sizes.image_max_pixels,
    )
    return TinyVLM(model=model, tokenizer=tokenizer, image_processor=image_processor)
