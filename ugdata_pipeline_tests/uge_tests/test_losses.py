"""Symmetric InfoNCE and retrieval metrics against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ugdata_pipeline.uge.losses import retrieval_metrics, symmetric_info_nce, text_ids


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_info_nce_matches_hand_computed_value() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    document = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tau = 0.5
    # cosines: q0.d0 = 1, q0.d1 = 0.6, q1.d0 = 0, q1.d1 = 0.8
    q_to_d = (_ce([2.0, 1.2], 0) + _ce([0.0, 1.6], 1)) / 2
    d_to_q = (_ce([2.0, 0.0], 0) + _ce([1.2, 1.6], 1)) / 2
    expected = (q_to_d + d_to_q) / 2
    assert expected == pytest.approx(0.29866, abs=1e-4)
    assert float(symmetric_info_nce(query, document, temperature=tau)) == pytest.approx(expected, abs=1e-6)
    # inputs are normalised inside: scaling a row changes nothing
    assert float(symmetric_info_nce(query * 3, document, temperature=tau)) == pytest.approx(expected, abs=1e-6)


def test_duplicate_positive_texts_are_not_negatives() -> None:
    torch.manual_seed(0)
    query, document = torch.randn(3, 4), torch.randn(3, 4)
    ids = text_ids(["a caption", "another", " a caption "])  # rows 0 and 2 share a text (spaces are stripped)
    assert ids[0] == ids[2] and ids[0] != ids[1]
    masked = float(symmetric_info_nce(query, document, temperature=0.1, positive_ids=ids))
    qn, dn = torch.nn.functional.normalize(query, dim=-1), torch.nn.functional.normalize(document, dim=-1)
    s = (qn @ dn.T / 0.1).tolist()
    st = (dn @ qn.T / 0.1).tolist()
    # row 0 never sees column 2 and row 2 never sees column 0, in both directions
    q_to_d = (_ce([s[0][0], s[0][1]], 0) + _ce(s[1], 1) + _ce([s[2][1], s[2][2]], 1)) / 3
    d_to_q = (_ce([st[0][0], st[0][1]], 0) + _ce(st[1], 1) + _ce([st[2][1], st[2][2]], 1)) / 3
    assert masked == pytest.approx((q_to_d + d_to_q) / 2, abs=1e-5)
    assert masked != pytest.approx(float(symmetric_info_nce(query, document, temperature=0.1)), abs=1e-4)


def test_hard_negatives_widen_only_the_query_side() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    document = query.clone()
    hard = torch.tensor([[0.8, 0.6]])  # shared by both queries
    base = float(symmetric_info_nce(query, document, temperature=1.0))
    with_hard = float(symmetric_info_nce(query, document, temperature=1.0, hard_negatives=hard))
    q_to_d = (_ce([1.0, 0.0, 0.8], 0) + _ce([0.0, 1.0, 0.6], 1)) / 2
    d_to_q = (_ce([1.0, 0.0], 0) + _ce([0.0, 1.0], 1)) / 2
    assert with_hard == pytest.approx((q_to_d + d_to_q) / 2, abs=1e-6)
    assert with_hard > base
    # a hard negative equal (by text id) to a query's own positive is masked for that query
    pos_ids = text_ids(["x", "y"])
    masked = float(
        symmetric_info_nce(
            query,
            document,
            temperature=1.0,
            hard_negatives=hard,
            positive_ids=pos_ids,
            hard_negative_ids=text_ids(["x"]),
        )
    )
    q_to_d_masked = (_ce([1.0, 0.0], 0) + _ce([0.0, 1.0, 0.6], 1)) / 2
    assert masked == pytest.approx((q_to_d_masked + d_to_q) / 2, abs=1e-6)
    # per-query hard negatives [B, K, D]
    per_query = torch.tensor([[[0.8, 0.6]], [[1.0, 0.0]]])
    value = float(symmetric_info_nce(query, document, temperature=1.0, hard_negatives=per_query))
    q_to_d_pq = (_ce([1.0, 0.0, 0.8], 0) + _ce([0.0, 1.0, 0.0], 1)) / 2
    assert value == pytest.approx((q_to_d_pq + d_to_q) / 2, abs=1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        symmetric_info_nce(torch.eye(2), torch.eye(2), temperature=0)
    with pytest.raises(ValueError, match="same shape"):
        symmetric_info_nce(torch.eye(2), torch.eye(3))
    with pytest.raises(ValueError, match="positive_ids must have shape"):
        symmetric_info_nce(torch.eye(2), torch.eye(2), positive_ids=torch.zeros(3, dtype=torch.long))


def test_retrieval_metrics_known_ranks() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    document = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    # q0 -> d0 rank 1; q1 -> d1: d2 (1.0) and d0 (0) ... cos(q1,d1)=0.0995 < cos(q1,d2)=1 -> rank 2;
    # q2 -> d2: cos=0.707, d1: 0.774 higher, d0: 0.707 tie (not strictly higher) -> rank 2
    metrics = retrieval_metrics(query, document, ks=(1, 2))
    assert metrics["r@1"] == pytest.approx(1 / 3)
    assert metrics["r@2"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert metrics["mean_rank"] == pytest.approx(5 / 3)
    # d1 and d2 share a text: q1 (best: d2) and q2 (best: d1) are now both right at rank 1
    ids = torch.tensor([0, 1, 1])
    shared = retrieval_metrics(query, document, positive_ids=ids, ks=(1,))
    assert shared["r@1"] == pytest.approx(1.0)
    assert shared["mean_rank"] == pytest.approx(1.0)


def _ddp_worker(rank: int, world: int, init_file: str, result_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        generator = torch.Generator().manual_seed(0)
        query_all = torch.randn(4, 3, generator=generator)
        document_all = torch.randn(4, 3, generator=generator)
        rows = slice(2 * rank, 2 * rank + 2)
        query = query_all[rows].clone().requires_grad_(True)
        loss = symmetric_info_nce(query, document_all[rows], temperature=0.3)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": query.grad}, f"{result_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_candidates_are_gathered_across_processes_with_gradients(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    world = 2
    # fork: the children inherit the imported modules, so the test costs a second, not a fresh interpreter each
    mp.start_processes(
        _ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True, start_method="fork"
    )
    generator = torch.Generator().manual_seed(0)
    query_all = torch.randn(4, 3, generator=generator).requires_grad_(True)
    document_all = torch.randn(4, 3, generator=generator)
    full = symmetric_info_nce(query_all, document_all, temperature=0.3)
    full.backward()
    full = full.detach()
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    # each rank scores its rows against all 4 candidates: the mean of the ranks' losses is the full-batch loss
    assert float(sum(p["loss"] for p in parts) / world) == pytest.approx(float(full), abs=1e-6)
    # remote copies keep their gradients: each rank's rows get world x the full-batch gradient (DDP then averages)
    torch.testing.assert_close(torch.cat([p["grad"] for p in parts]), world * query_all.grad)


def _reference_info_nce(q, d, *, t, pos_ids, query_ids, hard=None, hard_ids=None) -> float:
    """The loss written out row by row, from its definition (no masking tricks, no batching)."""
    q = [v / v.norm() for v in q.double()]
    d = [v / v.norm() for v in d.double()]
    n = len(q)

    def negatives_masked(i: int, j: int) -> bool:
        return j != i and (pos_ids[i] == pos_ids[j] or query_ids[i] == query_ids[j])

    total_q = total_d = 0.0
    for i in range(n):
        cand = [float(q[i] @ d[j]) / t for j in range(n) if not negatives_masked(i, j)]
        own = float(q[i] @ d[i]) / t
        if hard is not None:
            row = hard[i] if hard.ndim == 3 else hard
            ids = hard_ids[i] if hard_ids.ndim == 2 else hard_ids
            cand += [
                float(q[i] @ (h.double() / h.double().norm())) / t
                for h, hid in zip(row, ids, strict=True)
                if hid != pos_ids[i]
            ]
        total_q += -own + math.log(sum(math.exp(c) for c in cand))
        cand_d = [float(d[i] @ q[j]) / t for j in range(n) if not negatives_masked(i, j)]
        total_d += -float(d[i] @ q[i]) / t + math.log(sum(math.exp(c) for c in cand_d))
    return (total_q / n + total_d / n) / 2


@pytest.mark.parametrize("gather", [False, True])
@pytest.mark.parametrize("hard_shape", [None, "per_query", "shared"])
def test_info_nce_equals_its_definition_with_masks_and_hard_negatives(gather: bool, hard_shape: str | None) -> None:
    gen = torch.Generator().manual_seed(3)
    q, d = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    pos_ids = torch.tensor([10, 11, 10, 12, 13, 14])  # rows 0 and 2 share a positive text
    query_ids = torch.tensor([20, 21, 22, 23, 23, 24])  # rows 3 and 4 share a query
    hard = hard_ids = None
    if hard_shape == "per_query":
        hard = torch.randn(6, 3, 5, generator=gen)
        hard_ids = torch.tensor([[30, 10, 31], [32, 33, 34], [35, 36, 10], [12, 37, 38], [39, 40, 41], [42, 43, 44]])
    elif hard_shape == "shared":
        hard = torch.randn(4, 5, generator=gen)
        hard_ids = torch.tensor([50, 11, 51, 14])  # rows 1 and 5 see their own positive among them: masked
    got = symmetric_info_nce(
        q,
        d,
        temperature=0.3,
        positive_ids=pos_ids,
        query_ids=query_ids,
        hard_negatives=hard,
        hard_negative_ids=hard_ids,
        gather=gather,
    )
    want = _reference_info_nce(
        q, d, t=0.3, pos_ids=pos_ids.tolist(), query_ids=query_ids.tolist(), hard=hard, hard_ids=hard_ids
    )
    assert float(got) == pytest.approx(want, rel=1e-5)


# --- surviving mutants of make mutation ----------------------------------------------------------------------------


def test_a_learned_temperature_tensor_gives_the_float_loss_and_gets_its_gradient() -> None:
    gen = torch.Generator().manual_seed(5)
    q, d = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    # as the trainer passes it: 1 / exp(logit_scale), a 0-d tensor that requires grad (no scalar-conversion warning)
    logit_scale = torch.tensor(math.log(1 / 0.3), requires_grad=True)
    loss = symmetric_info_nce(q, d, temperature=1.0 / logit_scale.exp())
    assert float(loss.detach()) == pytest.approx(float(symmetric_info_nce(q, d, temperature=0.3)), rel=1e-6)
    loss.backward()
    assert logit_scale.grad is not None and float(logit_scale.grad) != 0.0
    with pytest.raises(ValueError) as caught:
        symmetric_info_nce(q, d, temperature=torch.tensor(-0.5))
    assert str(caught.value) == "temperature must be > 0, got -0.5; the default is 0.07."


def test_shape_errors_name_the_argument_exactly() -> None:
    q = torch.eye(2)
    cases = [
        ({"query_ids": torch.zeros(3, dtype=torch.long)}, "query_ids must have shape [2] (one id per row), got (3,)."),
        ({"hard_negatives": torch.randn(3, 4, 2)}, "hard_negatives [B, K, D] must have B=2, got (3, 4, 2)."),
        ({"hard_negatives": torch.randn(2)}, "hard_negatives must be [B, K, D] or [M, D], got (2,)."),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as caught:
            symmetric_info_nce(q, q, **kwargs)
        assert str(caught.value) == message


def test_hard_negatives_with_positive_ids_but_no_hard_negative_ids_mask_nothing_among_them() -> None:
    gen = torch.Generator().manual_seed(4)
    q, d = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    hard = torch.randn(3, 2, 4, generator=gen)
    pos_ids, query_ids = torch.tensor([1, 2, 1]), torch.tensor([7, 8, 9])
    got = symmetric_info_nce(q, d, temperature=0.3, hard_negatives=hard, positive_ids=pos_ids, query_ids=query_ids)
    no_match = torch.full((3, 2), -1)  # ids equal to no positive: every hard negative stays
    want = _reference_info_nce(
        q, d, t=0.3, pos_ids=pos_ids.tolist(), query_ids=query_ids.tolist(), hard=hard, hard_ids=no_match
    )
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_retrieval_metrics_normalise_each_query_row() -> None:
    # q0 points at d0 (rank 1) whatever its length; q1 = 100 x (1, 0) also prefers d0, so its own d1 is at rank 2.
    # Normalising over the queries instead (per feature) would turn q0 towards (0, 1), i.e. to d1.
    query = torch.tensor([[1.0, 0.8], [100.0, 0.0]])
    document = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    metrics = retrieval_metrics(query, document, ks=(1,))
    assert metrics == {"r@1": 0.5, "mrr": 0.75, "mean_rank": 1.5}


def _ddp_ids_worker(rank: int, world: int, init_file: str, result_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        query_all, document_all, pos_ids, query_ids = _ids_batch()
        per_rank = len(query_all) // world
        rows = slice(per_rank * rank, per_rank * (rank + 1))
        loss = symmetric_info_nce(
            query_all[rows], document_all[rows], temperature=0.3, positive_ids=pos_ids[rows], query_ids=query_ids[rows]
        )
        torch.save({"loss": loss.detach()}, f"{result_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _ids_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    query_all, document_all = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    # rows 0 and 3 (different ranks under 2 processes) share a positive text; rows 1 and 2 share a query
    return query_all, document_all, torch.tensor([10, 11, 12, 10]), torch.tensor([20, 21, 21, 23])


@pytest.mark.parametrize("world", [1, 2])
def test_ids_are_gathered_across_processes_and_mask_remote_duplicates(tmp_path: Path, world: int) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(
        _ddp_ids_worker,
        args=(world, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world,
        join=True,
        start_method="fork",
    )
    query_all, document_all, pos_ids, query_ids = _ids_batch()
    full = symmetric_info_nce(query_all, document_all, temperature=0.3, positive_ids=pos_ids, query_ids=query_ids)
    want = _reference_info_nce(query_all, document_all, t=0.3, pos_ids=pos_ids.tolist(), query_ids=query_ids.tolist())
    assert float(full) == pytest.approx(want, rel=1e-5)
    parts = [torch.load(tmp_path / f"rank{r}.pt")["loss"] for r in range(world)]
    # each process scores its rows against every process's candidates, masked by the gathered ids
    assert float(sum(parts) / world) == pytest.approx(want, rel=1e-5)
