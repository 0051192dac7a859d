"""Spatial grounding records by type: nearest place of a category, distance–direction, which street, which crossing.

The query is the image (``image`` mode) or image + its subgraph (``fusion`` mode, reported as *graph reading*:
the subgraph holds the answer) with a per-record question; the candidates are short answer texts. Records are
built from **exchangeable groups** (:mod:`.groups`): ``n_distractors + 1`` test images within
``max_distractor_m`` of each other whose answers differ, each the correct answer of one record over the
group's shared candidate set. So no answer stands out by length, vocabulary or how often it is right: a scorer
reading only the candidates is exactly at chance.

``nearest_poi``
    "Which is the nearest <category phrase> to where this photo was taken?" -> place names. An image gives one
    item per category in :data:`CATEGORY_PHRASES` whose nearest named place (POI or area) of its subgraph has
    its runner-up at least ``nearest_margin_m`` farther; groups hold one category (one question).
``distance_direction``
    "How far away is <place>, and in which compass direction?" -> ``"120 m north-east"`` strings
    (:func:`~ugdata_pipeline.graph.text.distance_phrase` + :func:`~ugdata_pipeline.graph.text.compass_word`, from
    the geodesic distance and bearing image -> place). The target (seeded) is a named place ``target_min_m`` ..
    ``target_max_m`` away whose name is unique in the subgraph. Answers within a group are pairwise clearly
    different: compass words at least ``min_distractor_angle_deg`` apart, or distances at least
    ``min_distractor_ratio`` times apart.
``which_street``
    "Which street was this photo taken on?" -> street names. Correct: the image's anchored street. Images within
    :data:`AMBIGUOUS_CROSSING_M` of a crossing are skipped (two streets are in view).
``which_crossing``
    "Which intersection is closest to where this photo was taken?" -> crossing names. Correct: the nearest
    crossing of the subgraph, with the runner-up at least ``nearest_margin_m`` farther.

A group in which any record's correct answer is recoverable from its question (:func:`~._records.leakage_reason`)
is dropped whole and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ugdata_pipeline.context.subgraph_tables import SubgraphIndex
from ugdata_pipeline.graph.geodesy import distance_bearing
from ugdata_pipeline.graph.text import COMPASS_SECTOR_DEG, COMPASS_WORDS, compass_index, distance_phrase
from ugdata_pipeline.ugbench._records import (
    BenchConfig,
    BuildStats,
    CityInputs,
    finish_record,
    leakage_reason,
    limit_groups,
    local_metres,
    normalize_text,
    query_images,
    record_rng,
    record_split,
)
from ugdata_pipeline.ugbench.groups import form_groups

logger = logging.getLogger(__name__)

#: Categories asked about in ``nearest_poi`` and how the question names them.
CATEGORY_PHRASES: dict[str, str] = {
    "food": "place to eat or drink",
    "financial": "bank or cash machine",
    "commercial": "shop",
    "healthcare": "place for health care",
    "education": "school or place of learning",
    "transport": "transport facility",
    "culture": "cultural venue",
    "religious": "place of worship",
    "park": "park or garden",
    "accommodation": "place to stay overnight",
    "tourism": "tourist attraction",
    "government": "government office",
    "leisure": "leisure facility",
    "sport": "sports facility",
    "historic": "historic site",
    "business": "office",
}
#: Images closer than this to a crossing see two streets; they get no ``which_street`` record.
AMBIGUOUS_CROSSING_M = 25.0

QUESTIONS: dict[str, str] = {
    "nearest_poi": "Which is the nearest {phrase} to where this photo was taken?",
    "distance_direction": "How far away is {name}, and in which compass direction?",
    "which_street": "Which street was this photo taken on?",
    "which_crossing": "Which intersection is closest to where this photo was taken?",
}


@dataclass(slots=True)
class _Sub:
    """One image's named subgraph nodes (centre excluded) as arrays, all aligned."""

    node_id: np.ndarray
    kind: np.ndarray
    name: np.ndarray
    category: np.ndarray
    dist: np.ndarray  # metres, image to the nearest point of the node's geometry
    lon: np.ndarray
    lat: np.ndarray

    def take(self, mask_or_order: np.ndarray) -> _Sub:
        return _Sub(*(getattr(self, f)[mask_or_order] for f in self.__slots__))  # type: ignore[attr-defined]

    def by_distance(self) -> _Sub:
        return self.take(np.argsort(self.dist, kind="stable"))


class _SubArrays:
    """The whole ``subgraph_nodes`` table as numpy columns, sliced per image through a :class:`SubgraphIndex`."""

    def __init__(self, index: SubgraphIndex) -> None:
        nodes = index.nodes
        self.index = index
        self.named = nodes["name"].notna().to_numpy() & (pd.to_numeric(nodes["rank"], errors="coerce") > 0).to_numpy()
        text = {
            c: nodes[c].astype(object).where(nodes[c].notna(), "").astype(str).to_numpy(dtype=object)
            for c in ("name", "category")
        }
        self.columns = {
            "node_id": nodes["node_id"].astype(str).to_numpy(dtype=object),
            "kind": nodes["kind"].astype(str).to_numpy(dtype=object),
            **text,
            "dist": pd.to_numeric(nodes["distance_m"], errors="coerce").to_numpy(dtype=float),
            "lon": pd.to_numeric(nodes["lon"], errors="coerce").to_numpy(dtype=float),
            "lat": pd.to_numeric(nodes["lat"], errors="coerce").to_numpy(dtype=float),
        }

    def of(self, image_id: str) -> _Sub:
        start, stop = self.index.node_rows(image_id)
        keep = self.named[start:stop]
        return _Sub(**{k: v[start:stop][keep] for k, v in self.columns.items()})


@dataclass(slots=True)
class _Item:
    """One grounding question about one image, before grouping."""

    image: int  # row of the query images table
    question: str
    answer: str
    answer_m: float  # distance image -> the answer's place (NaN where it has none)
    key: str  # items of one group share it (the question asked)
    suffix: str  # record-id suffix after the image id ("" or the category)
    meta: dict[str, object]
    bearing_word: int = -1  # distance_direction: compass index of the answer


def _angle_between_words_deg(a: int, b: int) -> float:
    diff = abs(a - b) % len(COMPASS_WORDS)
    return min(diff, len(COMPASS_WORDS) - diff) * COMPASS_SECTOR_DEG


def _clearly_different(a: _Item, b: _Item, config: BenchConfig) -> bool:
    """Two distance-direction answers that no reader could mistake for each other."""
    ratio = max(a.answer_m, 1.0) / max(b.answer_m, 1.0)
    far_off = ratio >= config.min_distractor_ratio or ratio <= 1.0 / config.min_distractor_ratio
    return far_off or _angle_between_words_deg(a.bearing_word, b.bearing_word) >= config.min_distractor_angle_deg


def _items(inputs: CityInputs, queries: pd.DataFrame, config: BenchConfig, stats: BuildStats) -> dict[str, list[_Item]]:
    """Every askable grounding question of every query image, by type."""
    arrays = _SubArrays(SubgraphIndex(inputs.subgraph_nodes, inputs.subgraph_edges))
    street_name = dict(zip(inputs.nodes["node_id"].astype(str), inputs.nodes["name"], strict=True))
    out: dict[str, list[_Item]] = {t: [] for t in config.grounding_types}
    for position, row in enumerate(queries.itertuples(index=False)):
        image_id = str(row.image_id)
        sub = arrays.of(image_id)
        places = sub.take(np.isin(sub.kind, ["poi", "aoi"])).by_distance()
        crossings = sub.take(sub.kind == "crossing").by_distance()
        lat, lon = float(row.lat), float(row.lon)
        if "nearest_poi" in out:
            for category in sorted(set(places.category.tolist()) & set(CATEGORY_PHRASES)):
                same = places.take(places.category == category)
                if len(same.dist) > 1 and same.dist[1] - same.dist[0] < config.nearest_margin_m:
                    stats.skip(f"grounding/nearest_poi/ambiguous_nearest/{inputs.city}")
                    continue
                question = QUESTIONS["nearest_poi"].format(phrase=CATEGORY_PHRASES[category])
                out["nearest_poi"].append(
                    _Item(
                        position,
                        question,
                        str(same.name[0]),
                        float(same.dist[0]),
                        f"nearest_poi/{category}",
                        f"/{category}",
                        {"category": category},
                    )
                )
        if "distance_direction" in out:
            item = _distance_direction_item(position, image_id, lat, lon, sub, places, config)
            if item is None:
                stats.skip(f"grounding/distance_direction/no_target/{inputs.city}")
            else:
                out["distance_direction"].append(item)
        if "which_street" in out:
            correct = street_name.get(str(row.street_node))
            if len(crossings.dist) and crossings.dist[0] < AMBIGUOUS_CROSSING_M:
                stats.skip(f"grounding/which_street/near_crossing/{inputs.city}")
            elif not isinstance(correct, str) or not correct:
                stats.skip(f"grounding/which_street/unnamed_street/{inputs.city}")
            else:
                out["which_street"].append(
                    _Item(position, QUESTIONS["which_street"], correct, float("nan"), "which_street", "", {})
                )
        if "which_crossing" in out:
            if len(crossings.dist) == 0:
                stats.skip(f"grounding/which_crossing/no_crossing/{inputs.city}")
            elif len(crossings.dist) > 1 and crossings.dist[1] - crossings.dist[0] < config.nearest_margin_m:
                stats.skip(f"grounding/which_crossing/ambiguous_nearest/{inputs.city}")
            else:
                out["which_crossing"].append(
                    _Item(
                        position,
                        QUESTIONS["which_crossing"],
                        str(crossings.name[0]),
                        float(crossings.dist[0]),
                        "which_crossing",
                        "",
                        {},
                    )
                )
    return out


def _distance_direction_item(
    position: int, image_id: str, lat: float, lon: float, sub: _Sub, places: _Sub, config: BenchConfig
) -> _Item | None:
    """A seeded named place at a suitable distance, as a distance-direction question, or None."""
    counts = Counter(normalize_text(name) for name in sub.name)
    unique = np.array([counts[normalize_text(name)] == 1 for name in places.name], dtype=bool)
    place_d, place_b = distance_bearing(lat, lon, places.lat, places.lon)  # to each place's anchor point
    eligible = np.flatnonzero(unique & (place_d >= config.target_min_m) & (place_d <= config.target_max_m))
    if not len(eligible):
        return None
    rng = record_rng(config.seed, "distance_direction_target", image_id)
    target = int(eligible[int(rng.integers(len(eligible)))])
    distance, word = float(place_d[target]), int(compass_index(float(place_b[target])))
    return _Item(
        position,
        QUESTIONS["distance_direction"].format(name=str(places.name[target])),
        f"{distance_phrase(distance)} {COMPASS_WORDS[word]}",
        distance,
        "distance_direction",
        "",
        {"target_node": str(places.node_id[target])},
        bearing_word=word,
    )


def build_grounding_records(inputs: CityInputs, *, config: BenchConfig, stats: BuildStats) -> list[dict[str, object]]:
    """
    Spatial grounding records of one city, from exchangeable groups per grounding type (module docstring).

    Returns
    -------
    records
        Record dicts (:data:`~._records.TASK_COLUMNS`) with ``query_type`` one of ``config.grounding_types``.
    """
    queries = query_images(inputs)
    split = record_split(inputs)
    items = _items(inputs, queries, config, stats)
    x, y = local_metres(queries["lon"].to_numpy(dtype=float), queries["lat"].to_numpy(dtype=float))
    size = config.n_distractors + 1
    records: list[dict[str, object]] = []
    for qtype, found in items.items():
        clean = found
        rule = (lambda i, j, c=clean: _clearly_different(c[i], c[j], config)) if qtype == "distance_direction" else None
        positions = np.asarray([it.image for it in clean], dtype=np.int64)
        grouping = form_groups(
            x[positions],
            y[positions],
            [normalize_text(it.answer) for it in clean],
            size=size,
            max_m=config.max_distractor_m,
            keys=[it.key for it in clean],
            compatible=rule,
            rng=record_rng(config.seed, "grounding-groups", qtype, inputs.city),
        )
        stats.skip(f"grounding/{qtype}/no_group/{inputs.city}", len(grouping.leftover))
        groups = limit_groups(
            grouping.groups, config.max_records_per_task, config.seed, "grounding", qtype, inputs.city
        )
        kept = 0
        for members in groups:
            answers = [clean[m].answer for m in members]
            leaks = [m for k, m in enumerate(members) if leakage_reason([clean[m].question], answers, k)]
            if leaks:  # the whole group goes: a group cut short would no longer be exchangeable
                stats.skip(f"grounding/{qtype}/leakage/{inputs.city}", len(members))
                continue
            first = min(members, key=lambda m: str(queries["image_id"].iloc[clean[m].image]))
            # the suffix (nearest_poi: the category) keeps groups of one image's several questions apart
            group_id = (
                f"grounding/{qtype}/{inputs.city}/{queries['image_id'].iloc[clean[first].image]}{clean[first].suffix}"
            )
            for m in members:
                item = clean[m]
                row = queries.iloc[item.image]
                image_id = str(row["image_id"])
                others = [clean[k] for k in members if k != m]
                lat, lon = float(row["lat"]), float(row["lon"])
                records.append(
                    finish_record(
                        rng=record_rng(config.seed, "grounding", qtype, inputs.city, image_id, item.suffix),
                        correct=item.answer,
                        distractors=[o.answer for o in others],
                        correct_distance_m=item.answer_m,
                        distractor_distance_m=[float("nan")] * len(others),
                        record_id=f"grounding/{qtype}/{inputs.city}/{image_id}{item.suffix}",
                        task="grounding",
                        query_type=qtype,
                        city=inputs.city,
                        split=split,
                        image_id=image_id,
                        query_kind="image",
                        query_text=item.question,
                        instruction=item.question,
                        fusion_instruction=item.question,
                        query_image=str(row["path"]),
                        query_graph_id=image_id,
                        candidate_kind="text",
                        lon=lon,
                        lat=lat,
                        group_id=group_id,
                        meta={**item.meta, "group_size": size},
                    )
                )
                kept += 1
        stats.records[f"grounding/{qtype}/{inputs.city}"] = kept
    logger.info(
        "%s: %s grounding records (%s)",
        inputs.city,
        len(records),
        {k: v for k, v in stats.records.items() if k.startswith("grounding/") and k.endswith(inputs.city)},
    )
    return records
