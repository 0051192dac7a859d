"""Configuration of the ``hf_vlm`` backbone: :class:`HFVLMConfig`, its dtypes and prompt defaults (JSON round trip)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_tiny import VLMSizes
from ugdata_pipeline.uge.vlm_adapters import ADAPTERS, FAMILIES

DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # the reference's ms-swift chatml default
DEFAULT_EMBEDDING_INSTRUCTION = "Represent this street-view scene and its surroundings for spatial retrieval."
NODE_TEXT_MAX_TOKENS = 128  # node-text truncation of the reference's QwenNodeEncoder (§1.2)
NODE_TEXT_CHUNK = 256  # node texts embedded per chunk (bounds the [chunk, tokens, hidden] lookup)
HFVLM_CONFIG_FILE = "hf_vlm_config.json"


@dataclass(frozen=True)
class HFVLMConfig:
    """Configuration of :class:`HfVlmBackbone` (JSON round trip: :meth:`to_dict` / :meth:`from_dict`).

    Parameters
    ----------
    model_name_or_path
        Hugging Face model id or local directory of a checkpoint of one of the families (e.g.
        ``Qwen/Qwen2.5-VL-7B-Instruct``, ``llava-hf/llava-v1.6-mistral-7b-hf``,
        ``microsoft/Phi-3-vision-128k-instruct``); ``None`` when the model, tokenizer and processor are passed in,
        or built from ``random_init``.
    family
        ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``, ``llava_next`` or ``phi3_v``
        (:data:`~ugdata_pipeline.uge.vlm_adapters.FAMILIES`); ``None`` reads it from the checkpoint's config. A
        model whose type differs from a named family is refused.
    trust_remote_code
        Run model code shipped with the checkpoint (needed by Phi-3-Vision, refused for it otherwise).
    random_init
        Build a random-weight model in code instead of loading one: ``{"seed": int, **VLMSizes fields}``
        (see :func:`~ugdata_pipeline.uge.hf_vlm_tiny.tiny_vlm`); ``{}`` is the tiny Qwen2-VL with seed 0,
        ``{"family": "llava_next"}`` a tiny LLaVA-NeXT. Used by tests and benchmarks.
    lora_r, lora_alpha, lora_dropout
        LoRA rank, alpha (scaling ``alpha / r``) and dropout; the reference uses 16 / 32 / 0.1.
    lora_targets
        Leaf module names inside the LANGUAGE model that get LoRA; ``None``: the family's default
        (``("q_proj", "v_proj")``; Phi-3-Vision, whose projections are fused: ``("qkv_proj", "o_proj")``).
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
    family: str | None = None
    trust_remote_code: bool = False
    random_init: dict[str, Any] | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] | None = None
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
        if self.lora_targets is not None:
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
        if self.lora_targets is not None and (
            not self.lora_targets
            or not all(isinstance(t, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t) for t in self.lora_targets)
        ):
            problems.append(f"`lora_targets` must be module names like ('q_proj', 'v_proj'), got {self.lora_targets!r}")
        if self.family is not None and self.family not in FAMILIES:
            problems.append(f"`family` must be one of {list(FAMILIES)}, got {self.family!r}")
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

    def resolved_family(self) -> str:
        """The family: as named, else that of ``random_init``, else read from the checkpoint's config."""
        if self.family is not None:
            return self.family
        if self.random_init is not None:
            return VLMSizes(**{k: v for k, v in self.random_init.items() if k != "seed"}).family
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(
                self.model_name_or_path,
                local_files_only=self.local_files_only,
                trust_remote_code=self.trust_remote_code,
            )
        except (OSError, ValueError) as exc:
            msg = (
                f"cannot read the config of {self.model_name_or_path!r} to tell its family ({exc}); set `family` "
                f"to one of {list(FAMILIES)}"
            )
            raise HFVLMError(msg) from exc
        for family, adapter in ADAPTERS.items():
            if config.model_type in adapter.model_types:
                return family
        msg = (
            f"{self.model_name_or_path!r} is a {config.model_type!r} model; the hf_vlm backbone handles "
            f"{list(FAMILIES)}"
        )
        raise HFVLMError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples become lists)."""
        out = asdict(self)
        out["lora_targets"] = None if self.lora_targets is None else list(self.lora_targets)
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
        if values.get("lora_targets") is not None:
            values["lora_targets"] = tuple(values["lora_targets"])
        return cls(**values)
