"""Family adapters of the ``hf_vlm`` backbone: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-1.6-Mistral, Phi-3-Vision.

:func:`adapter_for_model` picks the adapter of a loaded model by its ``config.model_type``;
:func:`adapter_named` the adapter of a family named in configuration.
"""

from __future__ import annotations

from typing import Any

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.vlm_adapters.base import VlmAdapter
from ugdata_pipeline.uge.vlm_adapters.llava_next import LLAVA_NEXT
from ugdata_pipeline.uge.vlm_adapters.phi3_v import PHI3_V
from ugdata_pipeline.uge.vlm_adapters.qwen import QWEN2_5_VL, QWEN2_VL, QWEN3_VL

ADAPTERS: dict[str, VlmAdapter] = {a.family: a for a in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL, LLAVA_NEXT, PHI3_V)}
FAMILIES = tuple(ADAPTERS)


def adapter_named(family: str) -> VlmAdapter:
    """The adapter of ``family`` (one of :data:`FAMILIES`)."""
    if family not in ADAPTERS:
        msg = f"unknown VLM family {family!r}; the hf_vlm backbone handles {', '.join(FAMILIES)}"
        raise HFVLMError(msg)
    return ADAPTERS[family]


def adapter_for_model(model: Any) -> VlmAdapter:
    """The adapter of a loaded transformers model, by its ``config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    msg = f"unsupported model type {model_type!r}: the hf_vlm backbone handles {', '.join(FAMILIES)}"
    raise HFVLMError(msg)


__all__ = ["ADAPTERS", "FAMILIES", "VlmAdapter", "adapter_for_model", "adapter_named"]
