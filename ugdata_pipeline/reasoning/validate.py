"""Invariants of the ``srp`` table, as plain functions that asset checks and tests call."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.imagery.anchor import image_node_ids
from ugdata_pipeline.reasoning.mentions import mentions_name


def paths_are_walks(paths: pd.DataFrame, edges: pd.DataFrame) -> CheckOutcome:
    """
    Every consecutive pair of ``path_nodes`` is joined by an edge (either orientation), one relation per step,
    and ``hops`` equals the number of steps.

    Parameters
    ----------
    paths
        The ``srp`` table.
    edges
        The graph edges, image edges included.
    """
    if paths.empty:
        return CheckOutcome(True, 0, "0 paths with a step that is not a graph edge")
    lengths = paths["path_nodes"].map(len).to_numpy()
    src = np.concatenate([np.asarray(p[:-1], dtype=object) for p in paths["path_nodes"]])
    dst = np.concatenate([np.asarray(p[1:], dtype=object) for p in paths["path_nodes"]])
    owner = np.repeat(np.arange(len(paths)), lengths - 1)
    known = pd.MultiIndex.from_arrays(
        [
            np.concatenate([edges["src"].to_numpy(dtype=object), edges["dst"].to_numpy(dtype=object)]),
            np.concatenate([edges["dst"].to_numpy(dtype=object), edges["src"].to_numpy(dtype=object)]),
        ]
    )
    is_edge = pd.MultiIndex.from_arrays([src, dst]).isin(known)
    bad = np.zeros(len(paths), dtype=bool)
    bad[owner[~is_edge]] = True
    bad |= paths["path_relations"].map(len).to_numpy() != lengths - 1
    bad |= paths["hops"].to_numpy() != lengths - 1
    examples = [
        f"{i}: {' -> '.join(n)}" for i, n in zip(paths.loc[bad, "image_id"], paths.loc[bad, "path_nodes"], strict=True)
    ]
    return CheckOutcome(not bad.any(), int(bad.sum()), "0 paths with a step that is not a graph edge", examples)


def no_query_contains_target(paths: pd.DataFrame, nodes: pd.DataFrame) -> CheckOutcome:
    """
    No ``path_text`` or ``path_sentence`` names its target (whole words, case-insensitive), and every
    ``target_text`` does.

    Parameters
    ----------
    paths
        The ``srp`` table.
    nodes
        The graph nodes; the target's name is read from here (not from the paths table) so a wrong
        ``target_name`` column cannot hide a leak.
    """
    names = pd.Series(nodes["name"].to_numpy(dtype=object), index=nodes["node_id"].to_numpy(dtype=object))
    target_names = names.reindex(paths["target_node"].to_numpy(dtype=object)).to_numpy(dtype=object)
    bad = []
    rows = zip(
        paths["image_id"], target_names, paths["path_text"], paths["path_sentence"], paths["target_text"], strict=True
    )
    for image_id, name, text, sentence, answer in rows:
        if not isinstance(name, str):
            bad.append(f"{image_id}: target without a name")
        elif mentions_name(text, name) or mentions_name(sentence, name):
            bad.append(f"{image_id}: query names {name!r}")
        elif not mentions_name(answer, name):
            bad.append(f"{image_id}: answer lacks {name!r}")
    return CheckOutcome(not bad, len(bad), "0 queries naming their target (and every answer naming it)", bad)


def every_image_has_path_or_reason(images: pd.DataFrame, paths: pd.DataFrame, missing: pd.DataFrame) -> CheckOutcome:
    """Every image has at least one path or exactly one recorded reason, never both."""
    ids = pd.Index(images["image_id"].to_numpy(dtype=object))
    with_path = ids.isin(paths["image_id"].to_numpy(dtype=object))
    with_reason = ids.isin(missing["image_id"].to_numpy(dtype=object))
    bad = (with_path == with_reason) | ids.isin(missing.loc[missing["image_id"].duplicated(), "image_id"])
    examples = [f"{i}: {'both' if p else 'neither'}" for i, p in zip(ids[bad], with_path[bad], strict=True)]
    return CheckOutcome(not bad.any(), int(bad.sum()), "0 images with neither a path nor a reason (or both)", examples)


def paths_stay_with_their_image(paths: pd.DataFrame, images: pd.DataFrame) -> CheckOutcome:
    """
    A path starts at its own image node, holds no other image node, and carries its image's split.

    So no path joins two images, let alone images of different splits.
    """
    if paths.empty:
        return CheckOutcome(True, 0, "0 paths touching another image or split")
    own = pd.Series(image_node_ids(images["source"], images["image_id"]), index=images["image_id"].to_numpy())
    split = pd.Series(images["split"].to_numpy(dtype=object), index=images["image_id"].to_numpy())
    expected_node = own.reindex(paths["image_id"].to_numpy()).to_numpy(dtype=object)
    expected_split = split.reindex(paths["image_id"].to_numpy()).to_numpy(dtype=object)
    bad = []
    for image_id, nodes, node, s, s_path in zip(
        paths["image_id"], paths["path_nodes"], expected_node, expected_split, paths["split"], strict=True
    ):
        images_on_path = [n for n in nodes if str(n).startswith("image:")]
        if nodes[0] != node or images_on_path != [node] or s != s_path:
            bad.append(f"{image_id}: {images_on_path} split {s_path!r}")
    return CheckOutcome(not bad, len(bad), "0 paths touching another image or split", bad)
