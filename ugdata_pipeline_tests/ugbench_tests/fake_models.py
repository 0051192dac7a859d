"""Fake embedding models for the UGBench tests: we control what each embedding points at.

Every item is mapped to a fixed pseudo-random unit vector (a hash of a key); a model "knows" an answer when it
maps the query to the answer text's vector. All methods return L2-normalised ``(N, DIM)`` float arrays.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

DIM = 512


@functools.cache
def unit(key: str, dim: int = DIM) -> np.ndarray:
    """A fixed pseudo-random unit vector for ``key``."""
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=dim)
    return v / np.linalg.norm(v)


def text_vector(text: str) -> np.ndarray:
    """What every fake model embeds a text as (all fakes share the text side)."""
    return unit(f"text:{text}")


def _normalised(vectors: list[np.ndarray]) -> np.ndarray:
    v = sum(vectors)
    return v / np.linalg.norm(v)


class RandomModel:
    """Every image-side item gets its own random direction: a model that knows nothing. ``seed`` changes them."""

    supports_fusion = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.calls: dict[str, int] = defaultdict(int)

    def embed_texts(self, texts):
        self.calls["text"] += len(texts)
        return np.stack([text_vector(t) for t in texts])

    def embed_images(self, image_paths, *, instruction=None):
        self.calls["image"] += len(image_paths)
        return np.stack([unit(f"{self.seed}:image:{Path(p).name}:{instruction}") for p in image_paths])

    def embed_fusion(self, image_paths, graphs, *, instruction=None):
        self.calls["fusion"] += len(image_paths)
        assert len(graphs) == len(image_paths)
        assert all(len(nodes) and nodes["image_id"].nunique() == 1 for nodes, _ in graphs)
        return np.stack([unit(f"{self.seed}:fusion:{Path(p).name}:{instruction}") for p in image_paths])


class PerfectModel(RandomModel):
    """
    An image (with the record's image-side instruction) points at the sum of its true answers; graphs are ignored.

    Geolocation, perception and grounding queries point at their ground truth; a retrieval candidate image points
    at the description it is the answer to.
    """

    def __init__(self, tasks: pd.DataFrame) -> None:
        super().__init__()
        self.answers: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in tasks.itertuples(index=False):
            for instruction in (row.instruction, row.fusion_instruction):
                if row.query_kind == "image":
                    self.answers[Path(row.query_image).name, instruction].add(row.ground_truth)
                else:  # retrieval: the correct image (with the instruction) points at its description
                    self.answers[Path(row.ground_truth).name, instruction].add(row.query_text)

    def _image(self, path: str, instruction: str | None) -> np.ndarray:
        texts = self.answers.get((Path(path).name, instruction))
        if not texts:
            return unit(f"image:{path}:{instruction}")
        return _normalised([text_vector(t) for t in sorted(texts)])

    def embed_images(self, image_paths, *, instruction=None):
        self.calls["image"] += len(image_paths)
        return np.stack([self._image(p, instruction) for p in image_paths])

    def embed_fusion(self, image_paths, graphs, *, instruction=None):
        self.calls["fusion"] += len(image_paths)
        return np.stack([self._image(p, instruction) for p in image_paths])


class GraphReaderModel(RandomModel):
    """
    A fusion model that answers from the graph alone: the fused vector is looked up by the graph's node ids.

    The answer of each record is filed under a hash of its own subgraph's node ids (and the question), so the
    own graph points at the record's answer and another record's graph at that record's answer. The image is
    ignored.
    """

    def __init__(self, tasks: pd.DataFrame, subgraph_nodes: pd.DataFrame) -> None:
        super().__init__()
        ids = subgraph_nodes.groupby("image_id")["node_id"].agg(lambda s: self.graph_hash(s))
        self.answers: dict[tuple[str, str], str] = {}
        for row in tasks[tasks["query_kind"] == "image"].itertuples(index=False):
            self.answers[ids[row.query_graph_id], row.fusion_instruction] = row.ground_truth

    @staticmethod
    def graph_hash(node_ids: pd.Series) -> str:
        return hashlib.sha256("\x1f".join(sorted(node_ids.astype(str))).encode()).hexdigest()

    def embed_fusion(self, image_paths, graphs, *, instruction=None):
        self.calls["fusion"] += len(image_paths)
        out = []
        for path, (nodes, _) in zip(image_paths, graphs, strict=True):
            answer = self.answers.get((self.graph_hash(nodes["node_id"]), instruction))
            out.append(text_vector(answer) if answer is not None else unit(f"fusion:{path}:{instruction}"))
        return np.stack(out)


class ConstantModel:
    """The same vector for everything, and no instruction keyword: every score ties."""

    def embed_texts(self, texts):
        return np.ones((len(texts), 8)) / np.sqrt(8)

    def embed_images(self, image_paths):
        return np.ones((len(image_paths), 8)) / np.sqrt(8)

    def embed_fusion(self, image_paths, graphs):
        return np.ones((len(image_paths), 8)) / np.sqrt(8)


class ImageTextModel(ConstantModel):
    """A model without a graph side (like the baseline and stage 1)."""

    supports_fusion = False

    def embed_fusion(self, image_paths, graphs):
        raise AssertionError("the evaluator must not ask an image-text model for fusion embeddings")


class WrongShapeModel(ConstantModel):
    """Returns one row too few for images."""

    def embed_images(self, image_paths):
        return np.ones((max(len(image_paths) - 1, 0), 8))
