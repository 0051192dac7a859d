"""Contrastive losses: symmetric InfoNCE with in-batch negatives, hard negatives and false-negative masking.

The reference computed a one-directional InfoNCE at a hidden, fixed temperature, detached the negatives gathered
from other GPUs and never masked duplicate captions (reference notes §2, §8 B14). Here the loss is symmetric
(query -> document and document -> query), the temperature is an argument, negatives gathered across processes
keep their gradients, optional hard negatives widen the query -> document side, and pairs whose positives share a
text (or whose queries share a key) are removed from each other's negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import Tensor

from ugdata_pipeline.seeding import stable_seed

logger = logging.getLogger(__name__)

#: CLIP's initial temperature. Lower values (0.01-0.02, the reference's) give near-one-hot softmaxes over
#: nearly identical untrained embeddings and, with a high learning rate, collapsed the compact model on UGData.
DEFAULT_TEMPERATURE = 0.07

__all__ = ["DEFAULT_TEMPERATURE", "gather_with_grad", "retrieval_metrics", "symmetric_info_nce", "text_ids"]


def text_ids(texts: Sequence[str]) -> Tensor:
    """
    Stable 63-bit integer ids of texts, so duplicate texts can be masked (also across processes).

    Parameters
    ----------
    texts
        Any strings; equal strings (after stripping surrounding white space) get equal ids.

    Returns
    -------
    ids
        Shape ``[len(texts)]``, dtype int64. Uses BLAKE2b, so ids are the same in every process and run.
    """
    ids = [stable_seed(t.strip(), scheme="blake2b64-le") for t in texts]
    return torch.tensor(ids, dtype=torch.int64)


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient for this process's rows."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = tensor.shape[0], rank
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """
    Concatenate ``tensor`` from every process along dim 0, keeping the gradient path to every copy.

    Outside ``torch.distributed`` (or with one process) the tensor is returned unchanged. In the backward pass each
    process receives the sum of all processes' gradients for its own rows, so remote negatives are trained too
    (the reference detached them: notes §2) and DDP's gradient averaging then yields the full-batch gradient.

    Parameters
    ----------
    tensor
        ``[B, ...]``; every process must pass the same ``B``.

    Returns
    -------
    gathered, offset
        ``[world_size * B, ...]`` and the row offset of this process's block in it.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor, 0
    world = torch.distributed.get_world_size()
    if world == 1:
        return tensor, 0
    rank = torch.distributed.get_rank()
    if tensor.dtype.is_floating_point:
        return _AllGatherWithGrad.apply(tensor), rank * tensor.shape[0]
    parts = [torch.empty_like(tensor) for _ in range(world)]  # ids carry no gradient
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0), rank * tensor.shape[0]


def _duplicate_mask(keys: Tensor | None, n_rows: int, offset: int, n_cols: int) -> Tensor | None:
    """``[n_rows, n_cols]`` True where column j shares row i's key but is not row i's own positive."""
    if keys is None:
        return None
    row_keys = keys[offset : offset + n_rows]
    same = row_keys[:, None] == keys[None, :n_cols]
    own = torch.arange(n_rows, device=keys.device)[:, None] + offset == torch.arange(n_cols, device=keys.device)
    return same & ~own


def symmetric_info_nce(
    query: Tensor,
    document: Tensor,
    *,
    temperature: float | Tensor = DEFAULT_TEMPERATURE,
    hard_negatives: Tensor | None = None,
    positive_ids: Tensor | None = None,
    query_ids: Tensor | None = None,
    hard_negative_ids: Tensor | None = None,
    gather: bool = True,
) -> Tensor:
    """
    Symmetric InfoNCE: row i of ``query`` should match row i of ``document`` against every other row.

    ``loss = (CE(q -> [docs; hard negatives]) + CE(docs -> q)) / 2``, logits = cosine similarity / temperature.
    Inputs are L2-normalised here (a no-op for already normalised embeddings). Under DDP the in-batch candidates
    are gathered from every process with gradients, and each process scores its own rows against all of them.

    False negatives are masked (logit set to ``-inf``): column j is removed from row i when
    ``positive_ids[i] == positive_ids[j]`` (the same positive text, e.g. two views of one place with the same
    caption) or ``query_ids[i] == query_ids[j]`` (the same query, e.g. one image and instruction with two
    positives), in both directions.

    Parameters
    ----------
    query, document
        ``[B, D]`` paired embeddings.
    temperature
        Softmax temperature, > 0: a number, or a 0-d tensor when it is learned (``1 / Backbone.logit_scale.exp()``;
        the gradient flows into it). Default 0.07, CLIP's initial value.
    hard_negatives
        Optional extra documents, ``[B, K, D]`` (K per query, used only by their own query) or ``[M, D]``
        (shared by every query). Only the query -> document direction sees them.
    positive_ids, query_ids
        Optional ``[B]`` int64 keys (see :func:`text_ids`) used for false-negative masking.
    hard_negative_ids
        Optional text ids of the hard negatives (``[B, K]`` or ``[M]``); a hard negative whose id equals the
        row's ``positive_ids`` is masked (it is that query's positive, written again).
    gather
        Gather candidates across processes under ``torch.distributed`` (default True).

    Returns
    -------
    loss
        Scalar tensor.

    Shapes
    ------
    query, document: ``[B, D]``; hard_negatives: ``[B, K, D]`` or ``[M, D]``; ids: ``[B]``.
    """
    value = float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)
    if value <= 0:
        msg = f"temperature must be > 0, got {value!r}; the default is {DEFAULT_TEMPERATURE}."
        raise ValueError(msg)
    if query.ndim != 2 or query.shape != document.shape:
        msg = (
            f"query and document must both be [B, D] with the same shape, got {tuple(query.shape)} and "
            f"{tuple(document.shape)}; pass one positive per query."
        )
        raise ValueError(msg)
    n = query.shape[0]
    for name, ids in (("positive_ids", positive_ids), ("query_ids", query_ids)):
        if ids is not None and ids.shape != (n,):
            msg = f"{name} must have shape [{n}] (one id per row), got {tuple(ids.shape)}."
            raise ValueError(msg)

    query = F.normalize(query.float(), dim=-1)
    document = F.normalize(document.float(), dim=-1)
    # ids are built on the CPU by the data pipeline; the embeddings may live on an accelerator
    positive_ids = positive_ids.to(query.device) if positive_ids is not None else None
    query_ids = query_ids.to(query.device) if query_ids is not None else None
    hard_negative_ids = hard_negative_ids.to(query.device) if hard_negative_ids is not None else None
    if gather:
        all_query, offset = gather_with_grad(query)
        all_document, _ = gather_with_grad(document)
        all_pos_ids = gather_with_grad(positive_ids)[0] if positive_ids is not None else None
        all_query_ids = gather_with_grad(query_ids)[0] if query_ids is not None else None
    else:
        all_query, all_document, offset = query, document, 0
        all_pos_ids, all_query_ids = positive_ids, query_ids
    n_all = all_document.shape[0]
    labels = torch.arange(n, device=query.device) + offset

    masks = [
        m
        for m in (_duplicate_mask(all_pos_ids, n, offset, n_all), _duplicate_mask(all_query_ids, n, offset, n_all))
        if m is not None
    ]
    false_negatives = torch.stack(masks).any(0) if masks else None

    # query -> document (+ hard negatives)
    logits_q = query @ all_document.T / temperature
    if false_negatives is not None:
        logits_q = logits_q.masked_fill(false_negatives, float("-inf"))
    if hard_negatives is not None:
        hard_negatives = F.normalize(hard_negatives.float(), dim=-1)
        if hard_negatives.ndim == 3:
            if hard_negatives.shape[0] != n:
                msg = f"hard_negatives [B, K, D] must have B={n}, got {tuple(hard_negatives.shape)}."
                raise ValueError(msg)
            hard_logits = torch.einsum("bd,bkd->bk", query, hard_negatives) / temperature
        elif hard_negatives.ndim == 2:
            hard_logits = query @ hard_negatives.T / temperature
        else:
            msg = f"hard_negatives must be [B, K, D] or [M, D], got {tuple(hard_negatives.shape)}."
            raise ValueError(msg)
        if hard_negative_ids is not None and positive_ids is not None:
            hard_ids = hard_negative_ids if hard_negative_ids.ndim == 2 else hard_negative_ids[None, :]
            hard_logits = hard_logits.masked_fill(positive_ids[:, None] == hard_ids, float("-inf"))
        logits_q = torch.cat([logits_q, hard_logits], dim=1)
    loss_q = F.cross_entropy(logits_q, labels)

    # document -> query
    logits_d = document @ all_query.T / temperature
    if false_negatives is not None:
        logits_d = logits_d.masked_fill(false_negatives, float("-inf"))
    loss_d = F.cross_entropy(logits_d, labels)
    return (loss_q + loss_d) / 2


def retrieval_metrics(
    query: Tensor, document: Tensor, *, positive_ids: Tensor | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """
    Query -> document retrieval over a whole evaluation set: Recall@K, MRR and mean rank.

    Row i's correct answers are document i and every document with the same ``positive_ids`` (duplicate texts);
    the rank is that of the best-scoring correct document.

    Parameters
    ----------
    query, document
        ``[N, D]`` paired embeddings (normalised here).
    positive_ids
        Optional ``[N]`` text ids (:func:`text_ids`).
    ks
        Cut-offs for Recall@K.

    Returns
    -------
    metrics
        ``{"r@1": .., "r@5": .., "r@10": .., "mrr": .., "mean_rank": ..}`` (recall and MRR in [0, 1]).
    """
    query = F.normalize(query.float(), dim=-1)
    document = F.normalize(document.float(), dim=-1)
    scores = query @ document.T
    n = scores.shape[0]
    correct = torch.eye(n, dtype=torch.bool, device=scores.device)
    if positive_ids is not None:
        positive_ids = positive_ids.to(scores.device)
        correct |= positive_ids[:, None] == positive_ids[None, :]
    best_correct = scores.masked_fill(~correct, float("-inf")).max(dim=1).values
    # rank = 1 + number of wrong documents scoring strictly higher than the best correct one
    ranks = 1 + (scores.masked_fill(correct, float("-inf")) > best_correct[:, None]).sum(dim=1).float()
    metrics = {f"r@{k}": float((ranks <= k).float().mean()) for k in ks}
    metrics["mrr"] = float((1.0 / ranks).mean())
    metrics["mean_rank"] = float(ranks.mean())
    return metrics
