"""Geolocation ranking and image retrieval records, built from exchangeable groups of test images.

Both tasks pair a test image with the **description of its location**: the text the shared renderer
(:func:`ugdata_pipeline.context.describe.describe_subgraph`) writes from the image's subgraph, without the camera
heading (a candidate must describe the place, not the camera: a heading line could be matched from the pixels,
and it was).

Test images with a subgraph and a distinct description are put into groups of ``n_distractors + 1``
(:func:`~.groups.form_groups`) whose members lie pairwise ``min_distractor_m`` .. ``max_distractor_m`` apart
(default 100 m .. 2 km). Each member gives one record of each task:

* **Geolocation ranking**: query = the image (``image`` mode) or image + a context graph (``fusion``), with the
  image-side instruction; candidates = the descriptions of the group's members; correct = its own.
* **Image retrieval**: query = the member's description (text); candidates = the group's images (``text`` mode)
  or images + context graphs (``fusion``); correct = the described image.

Because every member of a group is the correct answer of exactly one record over the same candidate set, a
scorer that reads only the candidates is exactly at chance (see :mod:`.groups`).

**Context graphs in fusion mode.** The query's own subgraph holds every place its description names, so a
fusion query that carries it can be answered by reading the graph, with no image at all (re-rendering the
description from it ranked the right candidate first every time). A fusion record therefore carries the group's
**context graph** (``fusion_graph = "group"``): one graph of the area the group covers, centred on the members'
centroid and the same for every record and candidate of the group
(:meth:`~._records.FusionGraphs.context_graph`). It tells a model what lies around the area -- which places,
where -- but not which member the photo is, so any score from the graph alone ranks a group's shared candidates
the same way in every record and sits exactly at chance; only the image can place the query within the area.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from ugdata_pipeline.context.subgraph_tables import SubgraphIndex
from ugdata_pipeline.graph.geodesy import distance_m
from ugdata_pipeline.ugbench._records import (
    BenchConfig,
    BuildStats,
    CityInputs,
    Describe,
    finish_record,
    image_side_instructions,
    limit_groups,
    local_metres,
    normalize_text,
    query_images,
    record_rng,
    record_split,
)
from ugdata_pipeline.ugbench.groups import form_groups

logger = logging.getLogger(__name__)


def describer(
    images: pd.DataFrame, index: SubgraphIndex, describe: Describe, config: BenchConfig, cache: dict[str, str]
) -> Callable[[str], str]:
    """``image_id -> description`` through ``describe`` (without the camera heading), memoised in ``cache``."""
    rows = images.set_index(images["image_id"].astype(str), drop=False)
    # the heading describes the camera, not the place: a candidate must not carry it
    rows = rows.drop(columns=[c for c in ("compass_angle",) if c in rows.columns])

    def one(image_id: str) -> str:
        if image_id not in cache:
            cache[image_id] = describe(
                index.nodes_of(image_id),
                index.edges_of(image_id),
                image_row=rows.loc[image_id],
                max_places=config.description_max_places,
                near_m=config.description_near_m,
                max_chars=config.description_max_chars,
            )
        return cache[image_id]

    return one


def build_location_records(
    inputs: CityInputs,
    *,
    describe: Describe,
    config: BenchConfig,
    stats: BuildStats,
    descriptions: dict[str, str] | None = None,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
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
        Build options (group size ``n_distractors + 1``, distance band in metres, seed, record cap).
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
    describe_image = describer(queries, index, describe, config, cache)
    keep: list[int] = []
    texts: list[str] = []
    for position, row in enumerate(queries.itertuples(index=False)):
        text = describe_image(str(row.image_id))
        if str(row.image_id) in text or str(row.path) in text:
            stats.skip(f"geolocation+retrieval/description_names_image/{inputs.city}")
            continue
        keep.append(position)
        texts.append(text)
    queries = queries.iloc[keep].reset_index(drop=True)
    split = record_split(inputs)
    if queries.empty:
        stats.records[f"geolocation/geolocation/{inputs.city}"] = 0
        stats.records[f"retrieval/retrieval/{inputs.city}"] = 0
        return [], []
    lon = queries["lon"].to_numpy(dtype=float)
    lat = queries["lat"].to_numpy(dtype=float)
    x, y = local_metres(lon, lat)
    size = config.n_distractors + 1
    # the band is checked on a local plane here and geodesically in validate_tasks: keep a hair inside it
    grouping = form_groups(
        x,
        y,
        [normalize_text(t) for t in texts],
        size=size,
        min_m=config.min_distractor_m * 1.01,
        max_m=config.max_distractor_m * 0.99,
        rng=record_rng(config.seed, "location-groups", inputs.city),
    )
    stats.skip(f"geolocation+retrieval/no_group/{inputs.city}", len(grouping.leftover))
    groups = limit_groups(grouping.groups, config.max_records_per_task, config.seed, "location", inputs.city)
    ids = queries["image_id"].astype(str).to_numpy(dtype=object)
    paths = queries["path"].astype(str).to_numpy(dtype=object)
    geo_instruction, geo_fusion = image_side_instructions("geolocation")
    ret_instruction, ret_fusion = image_side_instructions("retrieval")
    geo: list[dict[str, object]] = []
    ret: list[dict[str, object]] = []
    for members in groups:
        first = ids[min(members, key=lambda m: ids[m])]
        for m in members:
            image_id = str(ids[m])
            dist = np.asarray(distance_m(lat[m], lon[m], lat[members], lon[members]), dtype=float)
            others = [k for k, other in enumerate(members) if other != m]
            meta = {
                "group_size": size,
                "max_distractor_m": float(dist[others].max()),
                "min_distractor_m": float(dist[others].min()),
            }
            common = {
                "city": inputs.city,
                "split": split,
                "image_id": image_id,
                "lon": float(lon[m]),
                "lat": float(lat[m]),
                "meta": meta,
                "fusion_graph": "group",
            }
            distractors = [members[k] for k in others]
            geo.append(
                finish_record(
                    rng=record_rng(config.seed, "geolocation", inputs.city, image_id),
                    correct=texts[m],
                    distractors=[texts[k] for k in distractors],
                    correct_distance_m=0.0,
                    distractor_distance_m=dist[others].tolist(),
                    correct_graph_id=image_id,
                    distractor_graph_ids=[str(ids[k]) for k in distractors],
                    record_id=f"geolocation/geolocation/{inputs.city}/{image_id}",
                    task="geolocation",
                    query_type="geolocation",
                    query_kind="image",
                    query_text=geo_instruction,
                    instruction=geo_instruction,
                    fusion_instruction=geo_fusion,
                    query_image=str(paths[m]),
                    query_graph_id=image_id,
                    candidate_kind="text",
                    group_id=f"geolocation/{inputs.city}/{first}",
                    **common,
                )
            )
            ret.append(
                finish_record(
                    rng=record_rng(config.seed, "retrieval", inputs.city, image_id),
                    correct=str(paths[m]),
                    distractors=[str(paths[k]) for k in distractors],
                    correct_distance_m=0.0,
                    distractor_distance_m=dist[others].tolist(),
                    correct_graph_id=image_id,
                    distractor_graph_ids=[str(ids[k]) for k in distractors],
                    record_id=f"retrieval/retrieval/{inputs.city}/{image_id}",
                    task="retrieval",
                    query_type="retrieval",
                    query_kind="text",
                    query_text=texts[m],
                    instruction=ret_instruction,
                    fusion_instruction=ret_fusion,
                    query_image=None,
                    query_graph_id=None,
                    candidate_kind="image",
                    group_id=f"retrieval/{inputs.city}/{first}",
                    **common,
                )
            )
    stats.records[f"geolocation/geolocation/{inputs.city}"] = len(geo)
    stats.records[f"retrieval/retrieval/{inputs.city}"] = len(ret)
    logger.info(
        "%s: %s groups of %s -> %s geolocation and %s retrieval records from %s test images",
        inputs.city,
        len(groups),
        size,
        len(geo),
        len(ret),
        len(queries),
    )
    return geo, ret
