"""Does a fusion model use its graph? Its scores with each record's own graph against other records' graphs.

A stage-2 model whose fused embedding ignores the graph scores the same whichever graph it is given. This check
takes the benchmark's *graph reading* rows (grounding in fusion mode: the query graph is the image's own subgraph
and holds the answer), scores them once with every record's own graph and once with the graph of another record
of the same type and city (a seeded derangement), and compares the two on the same records with a clustered,
paired interval. A model that reads its graph loses clearly when the graphs are swapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.ugbench.evaluate import compare, evaluate
from ugdata_pipeline.ugbench.models import EmbeddingModel
from ugdata_pipeline.ugbench.stats import group_seed

__all__ = ["graph_dependence", "graph_matters_outcome"]


def _derange(ids: list[str], seed: int) -> list[str]:
    """Every position gets another position's id (a random cycle), so no record keeps its own graph."""
    if len(ids) < 2:
        return ids
    order = np.random.default_rng(seed).permutation(len(ids))
    out = list(ids)
    for k, position in enumerate(order):
        out[position] = ids[order[(k + 1) % len(order)]]
    return out


def graph_dependence(
    model: EmbeddingModel,
    tasks: pd.DataFrame,
    *,
    subgraph_nodes: pd.DataFrame,
    subgraph_edges: pd.DataFrame,
    image_root: Path | str | None = None,
    cache_dir: Path | str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    max_records: int = 600,
) -> pd.DataFrame:
    """
    MRR and Hit@5 of ``model`` on grounding fusion records with their own graphs against swapped graphs.

    Parameters
    ----------
    model
        A fusion-capable embedding model (a stage-2 checkpoint).
    tasks
        A UGBench tasks table; its grounding records are used, held-out cities' first (a sample the model never
        trained on), at most ``max_records`` (a seeded sample).
    subgraph_nodes, subgraph_edges
        The subgraph tables of the records' images.

    Returns
    -------
    comparison
        Rows of :func:`~.evaluate.compare` for ``own`` against ``swapped`` (``metric`` mrr and hit@5), pooled over
        grounding types and cities; ``verdict == "a better"`` when the model is clearly worse with swapped graphs.
    """
    rows = tasks[tasks["task"] == "grounding"]
    held_out = rows[rows["split"] == "held_out"]
    rows = (held_out if len(held_out) else rows).reset_index(drop=True)
    if len(rows) > max_records:
        keep = np.sort(
            np.random.default_rng(group_seed(seed, "graph-check")).choice(len(rows), max_records, replace=False)
        )
        rows = rows.iloc[keep].reset_index(drop=True)
    swapped = rows.copy()
    for _, group in rows.groupby(["query_type", "city"], sort=True):
        ids = group["query_graph_id"].astype(str).tolist()
        swapped.loc[group.index, "query_graph_id"] = _derange(ids, group_seed(seed, "swap", *group.index[:1]))
    per_record = []
    for name, frame in (("own", rows), ("swapped", swapped)):
        result = evaluate(
            frame,
            {name: model},
            modes=["fusion"],
            subgraph_nodes=subgraph_nodes,
            subgraph_edges=subgraph_edges,
            image_root=image_root,
            cache_dir=cache_dir,
            bootstrap=0,
            blind=False,
        )
        per_record.append(result.per_record)
    pooled = pd.concat(per_record, ignore_index=True).assign(query_type="all", city="all", split="all")
    return compare(pooled, [("own", "swapped")], metrics=("mrr", "hit@5"), bootstrap=bootstrap, seed=seed)


def graph_matters_outcome(comparison: pd.DataFrame | None) -> CheckOutcome:
    """
    The ``graph_matters`` check from :func:`graph_dependence`'s rows: passed when the MRR with own graphs is clearly
    above the MRR with swapped graphs (the clustered interval of own - swapped above 0). ``None``: there was nothing
    to check (no stage-2 model, or no fusion mode scored), which passes.
    """
    if comparison is None:
        return CheckOutcome(
            passed=True,
            observed=0.0,
            examples=["no stage-2 model or no fusion mode: nothing to check"],
            expected="own graphs clearly better than swapped graphs",
        )
    mrr = comparison[comparison["metric"] == "mrr"]
    passed = bool(len(mrr)) and bool((mrr["verdict"] == "a better").all())
    if len(mrr):
        row = mrr.iloc[0]
        detail = (
            f"MRR with own graphs {100 * row['mean_a']:.1f}, swapped {100 * row['mean_b']:.1f}: difference "
            f"{100 * row['diff']:+.1f} points [{100 * row['lo']:+.1f}, {100 * row['hi']:+.1f}], "
            f"{int(row['n'])} records in {int(row['n_clusters'])} clusters"
        )
        observed = round(100 * float(row["diff"]), 2)
    else:
        detail, observed = "no grounding records to check", 0.0
    return CheckOutcome(
        passed=passed,
        observed=observed,
        examples=[detail],
        expected="MRR clearly lower with swapped graphs (the clustered interval of own - swapped above 0)",
    )
