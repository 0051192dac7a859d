"""Geolocation ranking and image retrieval records.

Both tasks pair a test image with the **description of its location**: the text that the shared renderer
(:func:`ugdata_pipeline.context.describe.describe_subgraph`) writes from the image's subgraph. Every candidate
description, the correct one and the distractors, comes from the same renderer applied to the same kind of input
(the subgraph of an anchored image), so no candidate stands out by structure, vocabulary or length.

* **Geolocation ranking**: query = the image (``image`` mode) or image + its subgraph (``fusion`` mode), with
  a fixed instruction; candidates = location descriptions; the correct one describes the image's own location.
* **Image retrieval**: query = the location description (text, with a fixed instruction); candidates = images
  (``text`` mode) or image + subgraph (``fusion`` mode); the correct one is the described image.

Distractors are other images of the same city whose position lies ``min_distractor_m`` .. ``max_distractor_m``
(default 100 m .. 2 km, geodesic) from the query image. Images of the query's own split are used first; other
splits (val / train of a training city) fill up only when too few test images lie in the band, and their number
is recorded in ``meta.n_other_split``. Within a group, distractors are drawn without replacement with probability
proportional to ``1 / distance``, so near and far distractors are equally represented per metre of distance
instead of far ones dominating by area. Distractors whose description equals the correct one's (after
normalisation) are skipped. Queries with too few distractors are skipped and counted.

Caveat: in ``fusion`` mode the query's subgraph is the input the correct description was rendered from, so fusion
geolocation / retrieval measure image + graph <-> text grounding rather than geolocation from pixels; the
``image`` / ``text`` modes are the headline figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from ugdata_pipeline.graph.geodesy import distance_m
from ugdata_pipeline.ugbench._records import (
    BenchConfig,
    BuildStats,
    CityInputs,
    Describe,
    SubgraphIndex,
    finish_record,
    leakage_reason,
    limit_records,
    normalize_text,
    query_images,
    record_rng,
    record_split,
)

logger = logging.getLogger(__name__)

GEOLOCATION_INSTRUCTION = "Where was this street-level photo taken? Describe the location."
RETRIEVAL_INSTRUCTION = "Find the street-level photo taken at the location described."


def describer(
    images: pd.DataFrame, index: SubgraphIndex, describe: Describe, config: BenchConfig, cache: dict[str, str]
) -> Callable[[str], str]:
    """``image_id -> description`` through ``describe``, memoised in ``cache``."""
    rows = images.set_index(images["image_id"].astype(str), drop=False)

    def one(image_id: str) -> str:
        if image_id not in cache:
            cache[image_id] = describe(
                index.nodes_of(image_id), index.edges_of(image_id), image_row=rows.loc[image_id],
                max_places=config.description_max_places, near_m=config.description_near_m,
                max_chars=config.description_max_chars,
            )  # fmt: skip
        return cache[image_id]

    return one


def _distractor_order(rng: np.random.Generator, distances: np.ndarray, same_split: np.ndarray) -> np.ndarray:
    """Positions in drawing order: same-split first, each block sampled without replacement with p ~ 1/d."""
    keys = -np.log(np.maximum(distances, 1.0)) + rng.gumbel(size=len(distances))  # Gumbel-top-k sampling
    keys = keys + np.where(same_split, 1e6, 0.0)
    return np.argsort(-keys, kind="stable")


def build_location_records(
    inputs: CityInputs, *, describe: Describe, config: BenchConfig, stats: BuildStats,
    descriptions: dict[str, str] | None = None,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:  # fmt: skip
    """
    Geolocation and retrieval records of one city.

    Parameters
    ----------
    inputs
        The city's tables; queries come from its ``test`` images that have a subgraph.
    describe
        The description renderer, called as ``describe(nodes, edges, image_row=..., max_places=...,
        near_m=..., max_chars=...)``.
    config
        Build options (distractor band in metres, number of distractors, seed).
    stats
        Counts of kept and skipped queries are added here.
    descriptions
        Optional memo ``image_id -> description`` shared with other builders.

    Returns
    -------
    geolocation, retrieval
        Lists of record dicts (:data:`~._records.TASK_COLUMNS`).
    """
    cache = descriptions if descriptions is not None else {}
    index = SubgraphIndex(inputs.subgraph_nodes, inputs.subgraph_edges)
    queries = query_images(inputs)
    pool = inputs.images[inputs.images["image_id"].astype(str).map(index.__contains__)]
    pool = pool[pool["split"].astype(str) != "excluded"].reset_index(drop=True)
    pool_ids = pool["image_id"].astype(str).to_numpy(dtype=object)
    pool_lat = pool["lat"].to_numpy(dtype=float)
    pool_lon = pool["lon"].to_numpy(dtype=float)
    pool_split = pool["split"].astype(str).to_numpy(dtype=object)
    pool_path = pool["path"].astype(str).to_numpy(dtype=object)
    split = record_split(inputs)
    describe_image = describer(pool, index, describe, config, cache)
    geo: list[dict[str, object]] = []
    ret: list[dict[str, object]] = []
    for row in queries.itertuples(index=False):
        image_id = str(row.image_id)
        dist = np.asarray(distance_m(row.lat, row.lon, pool_lat, pool_lon), dtype=float)
        in_band = np.flatnonzero((dist >= config.min_distractor_m) & (dist <= config.max_distractor_m)
                                 & (pool_ids != image_id))  # fmt: skip
        if len(in_band) < config.n_distractors:
            stats.skip(f"geolocation+retrieval/too_few_images_in_band/{inputs.city}")
            continue
        rng = record_rng(config.seed, "location", inputs.city, image_id)
        order = in_band[_distractor_order(rng, dist[in_band], pool_split[in_band] == "test")]
        correct_text = describe_image(image_id)
        if image_id in correct_text or str(row.path) in correct_text:
            stats.skip(f"geolocation+retrieval/description_names_image/{inputs.city}")
            continue
        seen = {normalize_text(correct_text)}
        chosen: list[int] = []
        for pos in order:
            key = normalize_text(describe_image(pool_ids[pos]))
            if key in seen:
                continue
            seen.add(key)
            chosen.append(int(pos))
            if len(chosen) == config.n_distractors:
                break
        if len(chosen) < config.n_distractors:
            stats.skip(f"geolocation+retrieval/too_few_distinct_descriptions/{inputs.city}")
            continue
        picked = np.asarray(chosen, dtype=np.int64)
        meta = {"n_other_split": int((pool_split[picked] != "test").sum()),
                "max_distractor_m": float(dist[picked].max()),
                "min_distractor_m": float(dist[picked].min())}  # fmt: skip
        common = {"city": inputs.city, "split": split, "image_id": image_id, "lon": float(row.lon),
                  "lat": float(row.lat), "meta": meta}  # fmt: skip
        texts = [cache[pool_ids[p]] for p in picked]
        geo_record = finish_record(
            rng=record_rng(config.seed, "geolocation", inputs.city, image_id), correct=correct_text,
            distractors=texts, correct_distance_m=0.0, distractor_distance_m=dist[picked].tolist(),
            correct_graph_id=image_id, distractor_graph_ids=pool_ids[picked].tolist(),
            record_id=f"geolocation/geolocation/{inputs.city}/{image_id}", task="geolocation",
            query_type="geolocation", query_kind="image", query_text=GEOLOCATION_INSTRUCTION,
            instruction=GEOLOCATION_INSTRUCTION, query_image=str(row.path), query_graph_id=image_id,
            candidate_kind="text", **common,
        )  # fmt: skip
        reason = leakage_reason([GEOLOCATION_INSTRUCTION], geo_record["candidates"], geo_record["correct_idx"])
        if reason is None:
            geo.append(geo_record)
        else:
            stats.skip(f"geolocation/leakage/{inputs.city}")
        ret.append(finish_record(
            rng=record_rng(config.seed, "retrieval", inputs.city, image_id), correct=str(row.path),
            distractors=pool_path[picked].tolist(), correct_distance_m=0.0,
            distractor_distance_m=dist[picked].tolist(), correct_graph_id=image_id,
            distractor_graph_ids=pool_ids[picked].tolist(), record_id=f"retrieval/retrieval/{inputs.city}/{image_id}",
            task="retrieval", query_type="retrieval", query_kind="text", query_text=correct_text,
            instruction=RETRIEVAL_INSTRUCTION, query_image=None, query_graph_id=None, candidate_kind="image",
            **common,
        ))  # fmt: skip
    geo = limit_records(geo, config.max_records_per_task, config.seed, "geolocation", inputs.city)
    ret = limit_records(ret, config.max_records_per_task, config.seed, "retrieval", inputs.city)
    stats.records[f"geolocation/geolocation/{inputs.city}"] = len(geo)
    stats.records[f"retrieval/retrieval/{inputs.city}"] = len(ret)
    logger.info("%s: %s geolocation and %s retrieval records from %s test images", inputs.city, len(geo), len(ret),
                len(queries))  # fmt: skip
    return geo, ret
