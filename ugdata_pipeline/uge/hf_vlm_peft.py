"""The ``hf_vlm`` backbone's LoRA adapter: which modules it wraps, its gradient hooks, and saving / loading it.

Kept apart from the backbone because it is all peft mechanics: the regex that pins LoRA to the language model,
the input-gradient hooks transformers and peft register (useless with non-reentrant checkpointing), and an
atomic adapter folder in peft's own layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.hf_vlm_config import HFVLM_CONFIG_FILE

# names of the forward hooks transformers / peft register to make embedding outputs require grad
INPUT_GRAD_HOOK_NAMES = frozenset({"make_inputs_require_grads", "make_inputs_require_grad"})


@contextlib.contextmanager
def peft_reads_deprecated_checkpointing_flag() -> Iterator[None]:
    """Silence exactly one third-party deprecation: peft 0.21 reads ``model.is_gradient_checkpointing``, which
    transformers 5.x deprecates with a FutureWarning that no caller can avoid."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def lora_target_regex(targets: Sequence[str]) -> str:
    """Regex (peft full match) selecting ``targets`` inside the language model only, never the vision tower."""
    names = "|".join(re.escape(t) for t in targets)
    return rf".*language_model\..*\.({names})"


def drop_input_grad_hooks(peft_model: Any) -> None:
    """Remove the hooks that make every input-embedding output require grad.

    transformers (when checkpointing is switched on) and peft (when it wraps the model) hook every input-embedding
    module, the vision patch embedding included, so that its output requires grad: reentrant checkpointing needs
    that. Non-reentrant checkpointing does not, and the hooks only make autograd backpropagate through the whole
    frozen vision tower for nothing. The second registration orphans the first handles, so the hooks are found by
    their function name rather than through the stored handles.
    """
    base = peft_model.get_base_model()
    for module in base.modules():
        for hook_id, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__name__", "") in INPUT_GRAD_HOOK_NAMES:
                del module._forward_hooks[hook_id]
    if hasattr(base, "_require_grads_hooks"):
        base._require_grads_hooks = []


def save_adapter_folder(peft_model: Any, backbone_config: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write the adapter (peft layout) and the backbone config to ``directory`` atomically; return the folder.

    Everything is written to a temporary sibling first and swapped in, so a killed run never leaves a half-written
    adapter.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, which makes 0700 folders) so the adapter folder follows the umask like the tables
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        peft_model.save_pretrained(str(staging), safe_serialization=True)
        (staging / HFVLM_CONFIG_FILE).write_text(json.dumps(backbone_config, indent=2, sort_keys=True))
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
    return target


def reload_adapter(peft_model: Any, directory: str | os.PathLike[str], *, trainable: bool) -> Any:
    """The base model of ``peft_model`` with the adapter in ``directory`` instead of its own (a new PeftModel)."""
    from peft import PeftModel

    source = Path(directory)
    if not (source / "adapter_config.json").is_file():
        msg = f"{str(source)!r} holds no adapter_config.json; pass a directory written by save_adapter"
        raise HFVLMError(msg)
    base = peft_model.unload()  # the base model with the LoRA layers taken out
    with peft_reads_deprecated_checkpointing_flag():
        reloaded = PeftModel.from_pretrained(base, str(source), is_trainable=trainable)
    drop_input_grad_hooks(reloaded)
    return reloaded
