"""What UGBench evaluates: the embedding-model protocol, the UGE checkpoint adapter and the per-model embedding cache.

A model is anything with the three methods of :class:`EmbeddingModel`, each returning one L2-normalised row per
input (``(N, D)`` float array). A method may also accept a keyword ``instruction`` (one string for the batch) or
``instructions`` (one string per item); the evaluator then passes the query's instruction (the task instruction
or the grounding question) and otherwise calls the method without it (and records ``instruction_used = False``).

Graphs for ``embed_fusion`` are one ``(nodes, edges)`` pair of DataFrames per image: that image's rows of the
``subgraph_nodes`` / ``subgraph_edges`` long tables (data contract in DESIGN.md).

The cache keeps every embedding computed for a model on disk, keyed by the model's ``cache_id`` and a hash of the
item (kind, image path or text, graph fingerprint, instruction), as ``.npz`` shards written atomically. A killed run
keeps every finished shard; a rerun only embeds what is missing.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.atomic_files import atomic_writer
from ugdata_pipeline.errors import CorruptFileError

logger = logging.getLogger(__name__)

Graph = tuple[pd.DataFrame, pd.DataFrame]


@runtime_checkable
class EmbeddingModel(Protocol):
    """An embedding model UGBench can score; every method returns L2-normalised ``(N, D)`` rows."""

    def embed_images(self, image_paths: Sequence[str]) -> np.ndarray:
        """Embed images given by path."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts."""
        ...

    def embed_fusion(self, image_paths: Sequence[str], graphs: Sequence[Graph]) -> np.ndarray:
        """Embed image + subgraph pairs."""
        ...


def instruction_keyword(method: Callable[..., Any]) -> str | None:
    """``"instruction"`` or ``"instructions"`` when ``method`` accepts that keyword, else ``None``."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return None
    for name in ("instruction", "instructions"):
        if name in params:
            return name
    return None


def call_with_instruction(
    method: Callable[..., Any], args: Sequence[Any], instruction: str | None, n_items: int
) -> tuple[np.ndarray, bool]:
    """
    Call an embedding method, passing ``instruction`` when it takes one.

    Returns
    -------
    vectors, used
        The ``(n_items, D)`` float32 array and whether the instruction reached the model.
    """
    keyword = instruction_keyword(method) if instruction else None
    if keyword == "instruction":
        out = method(*args, instruction=instruction)
    elif keyword == "instructions":
        out = method(*args, instructions=[instruction] * n_items)
    else:
        out = method(*args)
    vectors = np.asarray(out, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != n_items:
        name = getattr(method, "__qualname__", repr(method))
        msg = f"{name} returned shape {vectors.shape} for {n_items} inputs; it must return one row per input"
        raise ValueError(msg)
    return vectors, keyword is not None


def _fingerprint_dir(path: Path) -> str:
    """Hash of file names, sizes and modification times under ``path`` (cheap; no file contents are read)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        stat = file.stat()
        digest.update(
            f"{file.relative_to(path) if path.is_dir() else file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()[:16]


class UgeModel:
    """
    Adapter from a UGE checkpoint (:mod:`ugdata_pipeline.uge.embed`) to :class:`EmbeddingModel`.

    The UGE modules (torch) are imported on first use, so UGBench works without them. Image and fusion queries take
    the instruction (UGE is instruction-conditioned); UGE text embeddings take none, so text queries are embedded
    without it. Fusion graphs arrive as ``(nodes, edges)`` subgraph rows and are turned into the encoder's graphs
    with ``uge.data.build_graphs``.

    Parameters
    ----------
    checkpoint_dir
        A checkpoint directory written by UGE training (e.g. ``<run>/checkpoints/best``).
    device
        Torch device for the model.
    batch_size
        Items per forward pass inside ``uge.embed``.
    threads
        Torch threads while embedding (fixed, so the vectors do not depend on the machine's core count).
    """

    def __init__(
        self, checkpoint_dir: Path | str, *, device: str = "cpu", batch_size: int = 32, threads: int = 2
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        if not self.checkpoint_dir.exists():
            msg = f"UGE checkpoint {str(self.checkpoint_dir)!r} does not exist; pass a UGE training output directory"
            raise FileNotFoundError(msg)
        try:
            from ugdata_pipeline.uge import data, embed  # lazy: optional, heavy (torch)
        except ImportError as exc:
            msg = "ugdata_pipeline.uge is not importable (torch missing?); UGE checkpoints cannot be loaded"
            raise ImportError(msg) from exc
        from ugdata_pipeline.uge.train import fixed_threads

        self._embed = embed
        self._data = data
        self._threads = lambda: fixed_threads(threads)  # same numbers on any machine, as in training
        self.batch_size = batch_size
        self.model = embed.load_model(self.checkpoint_dir, device=device)
        self.cache_id = f"uge-{self.checkpoint_dir.name}-{_fingerprint_dir(self.checkpoint_dir)}"

    @property
    def supports_fusion(self) -> bool:
        """Only a stage-2 checkpoint has a graph encoder; the evaluator skips the fusion mode for the others."""
        return getattr(self.model, "graph_encoder", None) is not None

    def embed_images(self, image_paths: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        """Image-query embeddings through ``uge.embed.embed_images``."""
        with self._threads():
            vectors = self._embed.embed_images(self.model, list(image_paths), instruction, self.batch_size)
        return np.asarray(vectors, dtype=np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings through ``uge.embed.embed_texts``."""
        with self._threads():
            return np.asarray(self._embed.embed_texts(self.model, list(texts), self.batch_size), dtype=np.float32)

    def long_text_share(self, texts: Sequence[str]) -> float:
        """Share of ``texts`` longer than the model's text window (NaN when the backbone cannot tell)."""
        share = getattr(self.model, "long_text_share", None)
        return float(share(list(texts))) if callable(share) else float("nan")

    def embed_fusion(
        self, image_paths: Sequence[str], graphs: Sequence[Graph], *, instruction: str | None = None
    ) -> np.ndarray:
        """Image + subgraph embeddings through ``uge.data.build_graphs`` and ``uge.embed.embed_fusion``."""
        nodes = pd.concat([g[0] for g in graphs], ignore_index=True).drop_duplicates(["image_id", "node_id"])
        edges = pd.concat([g[1] for g in graphs], ignore_index=True).drop_duplicates(["image_id", "src", "dst", "kind"])
        ids = [str(g[0]["image_id"].iloc[0]) for g in graphs]
        # The model's own node cap, as in training: a larger graph at inference is slower and out of distribution.
        with self._threads():
            built = self._embed.build_model_graphs(self.model, self._data.SubgraphTables(nodes, edges), ids)
            vectors = self._embed.embed_fusion(self.model, list(image_paths), built, instruction, self.batch_size)
        return np.asarray(vectors, dtype=np.float32)


def item_key(kind: str, payload: str, *, graph: str | None = None, instruction: str | None = None) -> str:
    """Stable hash of one embedded item (kind: ``text`` | ``image`` | ``fusion``)."""
    text = "\x1f".join([kind, payload, graph or "", instruction or ""])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _safe_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return f"{clean[:60]}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


class EmbeddingCache:
    """
    On-disk embeddings of one model: ``<root>/<model>/shard-*.npz`` (``keys``, ``vectors``), loaded at start.

    Parameters
    ----------
    root
        Cache directory; ``None`` keeps embeddings in memory only.
    model_id
        The model's cache identity (``cache_id`` attribute, else the name it is evaluated under).
    """

    def __init__(self, root: Path | str | None, model_id: str) -> None:
        self.folder = Path(root) / _safe_name(model_id) if root is not None else None
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}
        self.hits = 0
        self.misses = 0
        if self.folder is not None and self.folder.is_dir():
            for shard in sorted(self.folder.glob("shard-*.npz")):
                try:
                    # an open handle: np.load leaves its own file open when the archive is broken
                    with open(shard, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                        for key, vector in zip(data["keys"].tolist(), data["vectors"], strict=True):
                            self._vectors[str(key)] = vector
                except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                    msg = (
                        f"embedding cache shard {shard} is truncated or corrupt ({exc!r}); delete it (its "
                        "vectors are computed again)"
                    )
                    raise CorruptFileError(msg) from exc
            logger.info("embedding cache %s: %s vectors loaded", self.folder, f"{len(self._vectors):,}")

    def __len__(self) -> int:
        return len(self._vectors)

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions of the keys not in the cache (counting hits and misses)."""
        out = [i for i, key in enumerate(keys) if key not in self._vectors]
        self.misses += len(out)
        self.hits += len(keys) - len(out)
        return out

    def put(self, keys: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Store vectors (one row per key) in memory and, with a root, as one new shard."""
        array = np.asarray(vectors, dtype=np.float32)
        for key, vector in zip(keys, array, strict=True):
            self._vectors[key] = vector
        if self.folder is None or not len(keys):
            return
        name = f"shard-{hashlib.sha256(''.join(keys).encode()).hexdigest()[:16]}.npz"
        with atomic_writer(self.folder / name) as handle:  # the umask's mode, like the tables
            np.savez(handle, keys=np.asarray(list(keys), dtype=str), vectors=array)

    def get(self, keys: Sequence[str]) -> npt.NDArray[np.float32]:
        """Stacked vectors of cached keys (all must be present)."""
        return np.stack([self._vectors[key] for key in keys]) if keys else np.zeros((0, 0), dtype=np.float32)
