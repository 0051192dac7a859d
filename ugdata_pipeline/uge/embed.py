"""Embedding API: batched, L2-normalised image, text and fusion embeddings from a checkpoint, and a CLI.

Fusion embeddings run the graph through the graph encoder and fusion block exactly as in training (the reference
dropped the graph at inference: notes §4, §8 B4).

CLI (embeds a city's images to Parquet)::

    python -m ugdata_pipeline.uge.embed --checkpoint RUN/checkpoints/best --images images.parquet --root ROOT \\
        --out embeddings.parquet [--instruction TEXT] [--subgraph-nodes N.parquet --subgraph-edges E.parquet]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ugdata_pipeline.atomic_files import atomic_writer
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.tables import require_columns
from ugdata_pipeline.uge.backbone import Backbone
from ugdata_pipeline.uge.checkpoint import load_checkpoint
from ugdata_pipeline.uge.data import build_graphs, centre_only, collate_graphs
from ugdata_pipeline.uge.images import SHARED_IMAGES

logger = logging.getLogger(__name__)

__all__ = [
    "build_model_graphs",
    "embed_fusion",
    "embed_images",
    "embed_texts",
    "embed_to_parquet",
    "load_model",
    "main",
]


def load_model(checkpoint_dir: str | Path, *, device: str | torch.device = "cpu") -> Backbone:
    """
    The backbone saved in ``checkpoint_dir`` (e.g. ``<out_dir>/checkpoints/best``), in eval mode on ``device``.

    The training run's subgraph node cap is kept as ``model.graph_max_nodes`` so :func:`build_model_graphs`
    truncates graphs exactly as training did (the reference used different caps: notes §8 B11), and its
    ``graph_input`` as ``model.graph_input``: a model trained without neighbourhoods gets none at inference.
    """
    loaded = load_checkpoint(checkpoint_dir)
    model = loaded.model.to(device).eval()
    train_config = loaded.config.get("train") or {}
    model.graph_max_nodes = train_config.get("max_nodes")
    model.graph_input = train_config.get("graph_input") or "own"
    return model


def build_model_graphs(model: Backbone, subgraphs: SubgraphTables, image_ids: Sequence[str]) -> list[Any]:
    """
    Image ``image_ids[i]``'s subgraph as graph i, built with the model's own node-text encoder and node cap.

    Returns
    -------
    graphs
        PyG ``Data`` per image, in ``image_ids`` order (input of :func:`embed_fusion`).
    """
    ids = [str(i) for i in image_ids]
    graph_map = build_graphs(
        subgraphs, model.encode_node_texts, image_ids=ids, max_nodes=getattr(model, "graph_max_nodes", None)
    )
    if getattr(model, "graph_input", "own") == "none":
        return [centre_only(graph_map[i]) for i in ids]
    return [graph_map[i] for i in ids]


def _load_prepared(model: Backbone, paths: Sequence[str | Path], root: str | Path | None) -> list[Any]:
    identity = model.prepare_identity()
    prepared = []
    for path in paths:
        full = Path(root) / path if root is not None else Path(path)
        if not full.is_file():
            msg = f"image file {full} does not exist; check `root` and the image paths."
            raise FileNotFoundError(msg)
        base = Path(root) if root is not None else None
        if identity is not None:
            prepared.append(SHARED_IMAGES.prepared(full, identity, model.prepare_image, root=base))
        else:
            prepared.append(model.prepare_image(Image.fromarray(SHARED_IMAGES.rgb(full, root=base))))
    return prepared


def _instructions(instructions: str | Sequence[str] | None, n: int) -> list[str] | None:
    if instructions is None:
        return None
    if isinstance(instructions, str):
        return [instructions] * n
    if len(instructions) != n:
        msg = f"got {len(instructions)} instructions for {n} images; pass one per image or a single string."
        raise ValueError(msg)
    return list(instructions)


@torch.no_grad()
def _embed_queries(
    model: Backbone,
    image_paths: Sequence[str | Path],
    instructions: str | Sequence[str] | None,
    graphs: Sequence[Any] | None,
    batch_size: int,
    root: str | Path | None,
) -> np.ndarray:
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size!r}."
        raise ValueError(msg)
    model.eval()
    texts = _instructions(instructions, len(image_paths))
    out = np.zeros((len(image_paths), model.embed_dim), dtype=np.float32)
    for start in range(0, len(image_paths), batch_size):
        stop = min(start + batch_size, len(image_paths))
        pixels = model.collate_images(_load_prepared(model, image_paths[start:stop], root))
        graph = collate_graphs(list(graphs[start:stop])) if graphs is not None else None
        chunk = model.embed_query(pixels, texts[start:stop] if texts is not None else None, graph)
        out[start:stop] = chunk.float().cpu().numpy()
    return out


def embed_images(
    model: Backbone,
    image_paths: Sequence[str | Path],
    instructions: str | Sequence[str] | None = None,
    batch_size: int = 64,
    *,
    root: str | Path | None = None,
) -> np.ndarray:
    """
    Image-only query embeddings.

    Parameters
    ----------
    model
        From :func:`load_model`.
    image_paths
        Image files (relative to ``root`` when given).
    instructions
        One instruction for all, one per image, or None.
    batch_size
        Images per forward pass.

    Returns
    -------
    embeddings
        ``[len(image_paths), embed_dim]`` float32, rows L2-normalised.
    """
    return _embed_queries(model, image_paths, instructions, None, batch_size, root)


def embed_fusion(
    model: Backbone,
    image_paths: Sequence[str | Path],
    graphs: Sequence[Any],
    instructions: str | Sequence[str] | None = None,
    batch_size: int = 64,
    *,
    root: str | Path | None = None,
) -> np.ndarray:
    """
    Image + graph (fusion) query embeddings; ``graphs[i]`` is image i's subgraph (``data.build_graphs`` output).

    Returns
    -------
    embeddings
        ``[len(image_paths), embed_dim]`` float32, rows L2-normalised.
    """
    if len(graphs) != len(image_paths):
        msg = f"got {len(graphs)} graphs for {len(image_paths)} images; pass one graph per image, in order."
        raise ValueError(msg)
    if model.graph_encoder is None:
        msg = "this checkpoint has no graph encoder; fusion embeddings need a stage-2 checkpoint."
        raise ValueError(msg)
    return _embed_queries(model, image_paths, instructions, graphs, batch_size, root)


@torch.no_grad()
def embed_texts(model: Backbone, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """
    Text embeddings (captions, answers, place descriptions).

    Returns
    -------
    embeddings
        ``[len(texts), embed_dim]`` float32, rows L2-normalised.
    """
    model.eval()
    out = np.zeros((len(texts), model.embed_dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        out[start : start + len(chunk)] = model.embed_text(chunk).float().cpu().numpy()
    return out


def embed_to_parquet(
    checkpoint_dir: str | Path,
    images: pd.DataFrame,
    *,
    root: str | Path,
    out_path: str | Path,
    instruction: str | None = None,
    subgraphs: SubgraphTables | None = None,
    batch_size: int = 64,
) -> pd.DataFrame:
    """
    Embed every image of an ``images`` table and write ``image_id, mode, embedding`` rows to Parquet atomically.

    ``mode`` is ``"fusion"`` when ``subgraphs`` are given (and the checkpoint has a graph encoder), else ``"image"``.
    """
    require_columns(images, ("image_id", "path"), table="images", fix="Pass the images manifest (image_id, path, ...).")
    model = load_model(checkpoint_dir)
    ids = images["image_id"].astype(str).tolist()
    paths = images["path"].astype(str).tolist()
    if subgraphs is not None:
        graphs = build_model_graphs(model, subgraphs, ids)
        vectors = embed_fusion(model, paths, graphs, instruction, batch_size, root=root)
        mode = "fusion"
    else:
        vectors = embed_images(model, paths, instruction, batch_size, root=root)
        mode = "image"
    frame = pd.DataFrame({"image_id": ids, "mode": mode, "embedding": list(vectors)})
    out_path = Path(out_path)
    with atomic_writer(out_path) as handle:
        frame.to_parquet(handle, index=False)
    logger.info("embedded %d images (%s) to %s", len(frame), mode, out_path)
    return frame


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m ugdata_pipeline.uge.embed", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, e.g. RUN/checkpoints/best")
    parser.add_argument("--images", required=True, help="Parquet images manifest with image_id and path columns")
    parser.add_argument("--root", required=True, help="storage root the image paths are relative to")
    parser.add_argument("--out", required=True, help="output Parquet file")
    parser.add_argument("--instruction", default=None, help="instruction given with every image")
    parser.add_argument("--subgraph-nodes", default=None, help="subgraph_nodes Parquet (fusion mode)")
    parser.add_argument("--subgraph-edges", default=None, help="subgraph_edges Parquet (fusion mode)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    subgraphs = None
    if (args.subgraph_nodes is None) != (args.subgraph_edges is None):
        parser.error("--subgraph-nodes and --subgraph-edges go together")
    if args.subgraph_nodes is not None:
        subgraphs = SubgraphTables(pd.read_parquet(args.subgraph_nodes), pd.read_parquet(args.subgraph_edges))
    embed_to_parquet(
        args.checkpoint,
        pd.read_parquet(args.images),
        root=args.root,
        out_path=args.out,
        instruction=args.instruction,
        subgraphs=subgraphs,
        batch_size=args.batch_size,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
