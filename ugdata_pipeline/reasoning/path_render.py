"""Reasoning paths as table rows: per-step metrics, triple chains and sentences, and the counts for metadata."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ugdata_pipeline.graph.geodesy import WGS84, distance_bearing, normalize_bearing_deg
from ugdata_pipeline.graph.text import COMPASS_WORDS, compass_index
from ugdata_pipeline.reasoning.mentions import mentions_name
from ugdata_pipeline.reasoning.path_schema import (
    REASON_ALL_LEAK,
    REASON_EXCLUDED,
    REASON_NO_TARGET,
    REASON_NOT_ANCHORED,
    SRP_COLUMNS,
    STEP_COLUMNS,
)
from ugdata_pipeline.reasoning.path_search import _Chosen
from ugdata_pipeline.reasoning.place_graph import PlaceGraph
from ugdata_pipeline.reasoning.text import (
    IMAGE_TRIPLE_NAME,
    MASKED_SENTENCE_NAME,
    MASKED_TRIPLE_NAME,
    join_clauses,
    measure_tuples,
    step_clause,
    target_sentence,
    triple_chain,
    view_direction,
)

# ------------------------------------------------------------------------------------------------------------
# step metrics and text
# ------------------------------------------------------------------------------------------------------------


def _step_metrics(
    graph: PlaceGraph, table: pd.DataFrame, image: np.ndarray, chain: np.ndarray, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step distance (m) and bearing (deg) matrices ``(n, depth + 1)`` and the relation of each step."""
    n_paths, width = chain.shape
    steps = width  # step 0 is the image step, then one per place edge
    distance = np.full((n_paths, steps), np.nan)
    bearing = np.full((n_paths, steps), np.nan)
    relation = np.full((n_paths, steps), None, dtype=object)
    lat = table["lat"].to_numpy(dtype=float)[image]
    lon = table["lon"].to_numpy(dtype=float)[image]
    d0 = table["step_distance_m"].to_numpy(dtype=float)[image]
    b0 = table["step_bearing_deg"].to_numpy(dtype=float)[image]
    distance[:, 0], bearing[:, 0], relation[:, 0] = d0, b0, "nearest"
    lon, lat, _ = WGS84.fwd(lon, lat, b0, d0)
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    turn = np.zeros((n_paths, steps), dtype=bool)
    for j in range(1, steps):
        active = np.flatnonzero(depth >= j)
        if len(active) == 0:
            break
        u, v = chain[active, j - 1], chain[active, j]
        entry = graph.entries(u, v)
        kind = graph.entry_kind[entry]
        forward = graph.entry_src[entry] == u
        edge_bearing = np.where(
            forward, graph.entry_bearing_deg[entry], normalize_bearing_deg(graph.entry_bearing_deg[entry] + 180.0)
        )
        edge_distance = graph.entry_distance_m[entry]
        rel = kind.copy()
        along = kind == "along_street"
        rel[along] = graph.entry_street[entry][along]
        relation[active, j] = rel
        to_street = graph.kind[v] == "street"
        is_turn = to_street & (graph.kind[u] == "crossing")
        by_edge = (to_street & ~is_turn) | along
        straight = ~to_street & ~along
        dist_j = np.zeros(len(active))
        bear_j = np.zeros(len(active))
        dist_j[by_edge], bear_j[by_edge] = edge_distance[by_edge], edge_bearing[by_edge]
        if straight.any():
            s_d, s_b = distance_bearing(
                lat[active[straight]], lon[active[straight]], graph.lat[v[straight]], graph.lon[v[straight]]
            )
            dist_j[straight], bear_j[straight] = s_d, s_b
        distance[active, j], bearing[active, j] = dist_j, bear_j
        turn[active[is_turn], j] = True
        # new positions: the node's point, or the edge vector applied to the current position
        move = active[by_edge & ~along]
        if len(move):
            m_lon, m_lat, _ = WGS84.fwd(lon[move], lat[move], bear_j[by_edge & ~along], dist_j[by_edge & ~along])
            lon[move], lat[move] = m_lon, m_lat
        at_node = active[straight | along]
        lon[at_node], lat[at_node] = graph.lon[v[straight | along]], graph.lat[v[straight | along]]
    # a turn takes the bearing of the move that follows it
    for j in range(steps - 2, -1, -1):
        rows = np.flatnonzero(turn[:, j])
        bearing[rows, j] = bearing[rows, j + 1]
    return distance, bearing, relation


def _render(graph: PlaceGraph, table: pd.DataFrame, chosen: _Chosen) -> tuple[pd.DataFrame, set[int]]:
    """Measure and phrase the chosen paths; drop any whose finished query text still names its target."""
    if not chosen.image or sum(len(a) for a in chosen.image) == 0:
        return pd.DataFrame(columns=[*SRP_COLUMNS, *STEP_COLUMNS]), set()
    image = np.concatenate(chosen.image)
    chain = np.concatenate(chosen.chain)
    depth = np.concatenate(chosen.depth)
    alternative = np.concatenate(chosen.alternative)
    order = np.lexsort((alternative, depth, image))
    image, chain, depth, alternative = image[order], chain[order], depth[order], alternative[order]
    target = chain[np.arange(len(chain)), depth]
    distance, bearing, relation = _step_metrics(graph, table, image, chain, depth)
    step_compass = np.asarray(COMPASS_WORDS, dtype=object)[compass_index(np.nan_to_num(bearing))]

    img_lat = table["lat"].to_numpy(dtype=float)[image]
    img_lon = table["lon"].to_numpy(dtype=float)[image]
    straight_m, straight_b = distance_bearing(img_lat, img_lon, graph.lat[target], graph.lon[target])
    target_compass = np.asarray(COMPASS_WORDS, dtype=object)[compass_index(straight_b)]
    camera = table["compass_angle"].to_numpy(dtype=float)[image]
    relative = normalize_bearing_deg(straight_b - np.nan_to_num(camera))
    views = [
        None if not math.isfinite(c) else view_direction(r)
        for c, r in zip(camera.tolist(), relative.tolist(), strict=True)
    ]

    names, kinds, streets_of = graph.name.tolist(), graph.kind.tolist(), graph.crossing_streets
    node_ids = graph.csr.node_ids.tolist()
    categories = [_text_or_none(c) for c in graph.category.tolist()]
    image_nodes = table["image_node"].to_numpy(dtype=object)
    image_node_l = image_nodes[image].tolist()
    path_nodes, path_relations, path_text, path_sentence, target_text = [], [], [], [], []
    step_d, step_b, keep = [], [], np.ones(len(image), dtype=bool)
    leaked: set[int] = set()
    chain_l, depth_l, target_l = chain.tolist(), depth.tolist(), target.tolist()
    dist_l, bear_l = np.round(distance, 2).tolist(), np.round(bearing, 2).tolist()
    comp_l, rel_l = step_compass.tolist(), relation.tolist()
    width = distance.shape[1]
    measures = measure_tuples(distance, bearing)
    straight_l, target_compass_l, image_l = np.asarray(straight_m).tolist(), target_compass.tolist(), image.tolist()
    for i in range(len(image_l)):
        d = depth_l[i]
        places = chain_l[i][: d + 1]
        t = target_l[i]
        n_steps = d + 1
        rels = rel_l[i][:n_steps]
        dists = dist_l[i][:n_steps]
        bears = bear_l[i][:n_steps]
        comps = comp_l[i][:n_steps]
        triple_names = [IMAGE_TRIPLE_NAME, *[names[p] for p in places[:-1]], MASKED_TRIPLE_NAME]
        text = triple_chain(triple_names, rels, measures[i * width : i * width + n_steps])
        clauses = []
        current_street = None
        previous_kind = "image"
        for j, p in enumerate(places):
            kind_p = kinds[p]
            clauses.append(
                step_clause(
                    src_kind=previous_kind,
                    dst_kind=kind_p,
                    relation=rels[j],
                    dst_name=MASKED_SENTENCE_NAME if p == t else names[p],
                    distance_m=dists[j],
                    compass=comps[j],
                    current_street=current_street,
                    crossing_streets=streets_of.get(p, ()),
                )
            )
            if kind_p == "street":
                current_street = names[p]
            elif kind_p == "crossing" and previous_kind == "crossing":
                current_street = rels[j]
            elif kind_p != "crossing":
                current_street = None
            previous_kind = kind_p
        sentence = join_clauses(clauses)
        name = names[t]
        if mentions_name(text, name) or mentions_name(sentence, name):
            keep[i] = False
            leaked.add(image_l[i])
            continue
        path_nodes.append([image_node_l[i], *[node_ids[p] for p in places]])
        path_relations.append(rels)
        path_text.append(text)
        path_sentence.append(sentence)
        target_text.append(target_sentence(name, categories[t], straight_l[i], target_compass_l[i], views[i]))
        step_d.append(dists)
        step_b.append(bears)
    image, target, depth, alternative = image[keep], target[keep], depth[keep], alternative[keep]
    paths = pd.DataFrame(
        {
            "image_id": table["image_id"].to_numpy(dtype=object)[image],
            "image_node": image_nodes[image],
            "split": table["split"].to_numpy(dtype=object)[image],
            "target_node": graph.csr.node_ids[target],
            "target_name": graph.name[target],
            "target_category": graph.category[target],
            "hops": (depth + 1).astype(np.int64),
            "path_nodes": path_nodes,
            "path_relations": path_relations,
            "path_text": path_text,
            "path_sentence": path_sentence,
            "target_text": target_text,
            "distance_m": np.asarray(straight_m)[keep],
            "bearing_deg": np.asarray(straight_b)[keep],
            "compass": target_compass[keep],
            "view_direction": pd.Series([v for v, k in zip(views, keep.tolist(), strict=True) if k], dtype=object),
            "path_type": np.where(alternative, "alternative", "shortest").astype(object),
            "route_m": np.array([sum(s) for s in step_d], dtype=np.float64),
            "step_distance_m": step_d,
            "step_bearing_deg": step_b,
        }
    )
    return paths[[*SRP_COLUMNS, *STEP_COLUMNS]], leaked


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _counts(table: pd.DataFrame, paths: pd.DataFrame, missing: pd.DataFrame, rejected: int) -> dict[str, int]:
    counts = {
        "images": len(table),
        "images/with_path": int(paths["image_id"].nunique()) if len(paths) else 0,
        "images/missing": len(missing),
        "paths": len(paths),
        "paths/shortest": int((paths["path_type"] == "shortest").sum()) if len(paths) else 0,
        "paths/alternative": int((paths["path_type"] == "alternative").sum()) if len(paths) else 0,
        "rejected/target_name_in_query": rejected,
    }
    if len(paths):
        for hops, n in paths["hops"].value_counts().sort_index().items():
            counts[f"hops/{int(hops)}"] = int(n)
        for view, n in paths["view_direction"].value_counts().sort_index().items():
            counts[f"view/{view}"] = int(n)
    for reason, n in missing["reason"].value_counts().sort_index().items():
        counts[f"missing/{_REASON_KEY.get(reason, 'other')}"] = int(n)
    return counts


_REASON_KEY = {
    REASON_EXCLUDED: "excluded",
    REASON_NOT_ANCHORED: "not_anchored",
    REASON_NO_TARGET: "no_target",
    REASON_ALL_LEAK: "all_leak",
}
