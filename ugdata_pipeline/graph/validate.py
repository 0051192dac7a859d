"""Invariants of the graph tables, as plain functions that asset checks and tests call."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.errors import GraphIntegrityError

MIN_POI_ATTACHED_SHARE = 0.95


def node_ids_unique(nodes: pd.DataFrame) -> CheckOutcome:
    """Every ``node_id`` names one node; examples give each duplicated id, its count and its nodes' names."""
    ids = nodes["node_id"].astype(str)
    duplicated = ids[ids.duplicated(keep=False)]
    examples = []
    for node_id, rows in duplicated.groupby(duplicated, sort=False).groups.items():
        names = ", ".join(str(n) for n in nodes.loc[rows, "name"])
        examples.append(f"{node_id} ({len(rows)} nodes: {names})")
    return CheckOutcome(not examples, len(examples), "0 duplicated node ids", examples)


def require_unique_node_ids(nodes: pd.DataFrame, where: str) -> None:
    """
    Raise before anything reads the table by id (joins, previews, paths) when node ids repeat.

    Raises
    ------
    GraphIntegrityError
        Naming ``where``, the number of duplicated ids and up to five of them with their nodes' names.
    """
    outcome = node_ids_unique(nodes)
    if not outcome.passed:
        msg = (
            f"{where}: the graph has {outcome.observed} duplicated node id(s), e.g. "
            f"{'; '.join(outcome.examples[:5])}; node ids must be unique (the graph build makes them so), "
            "so rebuild the graph with this version and report the ids if it persists"
        )
        raise GraphIntegrityError(msg)


def endpoints_exist(nodes: pd.DataFrame, edges: pd.DataFrame) -> CheckOutcome:
    """Every edge's ``src`` and ``dst`` is a node id."""
    known = pd.Index(nodes["node_id"])
    missing = pd.concat([edges["src"], edges["dst"]])
    missing = missing[~missing.isin(known)].unique()
    return CheckOutcome(len(missing) == 0, len(missing), "0 unknown endpoints", [str(m) for m in missing])


def coordinates_valid(nodes: pd.DataFrame) -> CheckOutcome:
    """No NaN or out-of-range lon/lat."""
    lon, lat = nodes["lon"].to_numpy(dtype=float), nodes["lat"].to_numpy(dtype=float)
    bad = ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90))
    return CheckOutcome(
        not bad.any(),
        int(bad.sum()),
        "0 nodes with NaN or out-of-range lon/lat",
        nodes.loc[bad, "node_id"].astype(str).tolist(),
    )


def no_self_loops(edges: pd.DataFrame) -> CheckOutcome:
    """No edge joins a node to itself."""
    loops = edges["src"] == edges["dst"]
    return CheckOutcome(not loops.any(), int(loops.sum()), "0 self-loops", edges.loc[loops, "src"].astype(str).tolist())


def distances_positive(edges: pd.DataFrame) -> CheckOutcome:
    """Every edge distance is finite and > 0, every bearing in [0, 360)."""
    d = edges["distance_m"].to_numpy(dtype=float)
    b = edges["bearing_deg"].to_numpy(dtype=float)
    bad = ~(np.isfinite(d) & (d > 0) & np.isfinite(b) & (b >= 0) & (b < 360))
    examples = [f"{s}->{t}" for s, t in zip(edges.loc[bad, "src"], edges.loc[bad, "dst"], strict=True)]
    return CheckOutcome(
        not bad.any(), int(bad.sum()), "0 edges with distance <= 0 or bearing outside [0, 360)", examples
    )


def poi_attachment_share(
    nodes: pd.DataFrame, edges: pd.DataFrame, minimum: float = MIN_POI_ATTACHED_SHARE
) -> CheckOutcome:
    """Share of POI nodes with a ``nearest`` edge to a street (vacuously 1.0 without POIs)."""
    pois = nodes.loc[nodes["kind"] == "poi", "node_id"]
    if pois.empty:
        return CheckOutcome(True, 1.0, f">= {minimum:.0%} of POIs attached to a street")
    attached = pois.isin(edges.loc[edges["kind"] == "nearest", "src"])
    share = float(attached.mean())
    return CheckOutcome(
        share >= minimum,
        round(share, 4),
        f">= {minimum:.0%} of POIs attached to a street",
        pois[~attached].astype(str).tolist(),
    )
