"""Spatial grounding records by type: nearest place of a category, distance–direction, which street, which crossing.

The query is the image (``image`` mode) or image + subgraph (``fusion`` mode) with a per-record question; the
candidates are short answer texts. Candidates come from the image's own subgraph; when it holds too few distinct
ones, names of the same kind are drawn from the city's graph within ``max_distractor_m`` (default 2 km) of the
image, nearest first, and their number is recorded in ``meta.n_from_city``.

``nearest_poi``
    "Which is the nearest <category phrase> ...?" -> place names. Correct: the nearest named place (POI or area)
    of a category with a phrase in :data:`CATEGORY_PHRASES`; its runner-up of the same category must lie at least
    ``nearest_margin_m`` farther. Distractors: farther places of the same category first, then other named places
    of the subgraph (seeded order), then the city's. One category per image, seeded.
``distance_direction``
    "How far away is <place>, and in which compass direction?" -> ``"120 m north-east"`` strings
    (:func:`~ugdata_pipeline.graph.text.distance_phrase` + :func:`~ugdata_pipeline.graph.text.compass_word`, from
    the geodesic distance and bearing image -> place). The target is a named place ``target_min_m`` ..
    ``target_max_m`` away whose name is unique in the subgraph. Distractors are the same phrases for the
    subgraph's other nodes in that distance range, then every compass word at those distances (seeded); each
    must be clearly wrong: its compass word at least ``min_distractor_angle_deg`` off, or its distance at least
    ``min_distractor_ratio`` times larger or smaller.
``which_street``
    "Which street was this photo taken on?" -> street names. Correct: the image's anchored street. Distractors:
    the subgraph's other streets (seeded order), then the city's. Images within :data:`AMBIGUOUS_CROSSING_M` of a
    crossing are skipped (two streets are in view).
``which_crossing``
    "Which intersection is closest to where this photo was taken?" -> crossing names. Correct: the nearest
    crossing of the subgraph, with the runner-up at least ``nearest_margin_m`` farther. Distractors: other
    crossings of the subgraph (seeded order), then the city's.

Candidate texts are unique per record (compared after :func:`~._records.normalize_text`); a record whose correct
answer is recoverable from its question (:func:`~._records.leakage_reason`) is skipped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ugdata_pipeline.graph.geodesy import distance_bearing
from ugdata_pipeline.graph.text import COMPASS_SECTOR_DEG, COMPASS_WORDS, compass_index, distance_phrase
from ugdata_pipeline.ugbench._records import (
    BenchConfig,
    BuildStats,
    CityInputs,
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


class _CityPlaces:
    """Named city nodes of one kind set, for drawing filler candidates near an image."""

    def __init__(self, nodes: pd.DataFrame, kinds: Sequence[str]) -> None:
        chosen = nodes[nodes["kind"].isin(kinds) & nodes["name"].notna()]
        located = np.isfinite(chosen["lon"].to_numpy(dtype=float)) & np.isfinite(chosen["lat"].to_numpy(dtype=float))
        chosen = chosen[located]
        self.names = chosen["name"].astype(str).to_numpy(dtype=object)
        self.lon = chosen["lon"].to_numpy(dtype=float)
        self.lat = chosen["lat"].to_numpy(dtype=float)

    def near(self, lat: float, lon: float, max_m: float) -> tuple[list[str], list[float]]:
        """Names within ``max_m`` metres, nearest first, with their distances."""
        if not len(self.names):
            return [], []
        dist, _ = distance_bearing(lat, lon, self.lat, self.lon)
        order = np.argsort(dist, kind="stable")
        order = order[dist[order] <= max_m]
        return self.names[order].tolist(), dist[order].tolist()


_Groups = Callable[[np.random.Generator], Sequence[tuple[Sequence[str], Sequence[float]]]]


def _fill(
    correct: str, groups: Sequence[tuple[Sequence[str], Sequence[float]]], n: int
) -> tuple[list[str], list[float]]:
    """Take distinct names (not the correct one) from the groups in order until ``n`` are chosen."""
    seen = {normalize_text(correct)}
    names: list[str] = []
    dists: list[float] = []
    for group_names, group_dist in groups:
        for name, dist in zip(group_names, group_dist, strict=True):
            key = normalize_text(name)
            if not key or key in seen:
                continue
            seen.add(key)
            names.append(name)
            dists.append(float(dist))
            if len(names) == n:
                return names, dists
    return names, dists


def _shuffled(rng: np.random.Generator, names: np.ndarray, dists: np.ndarray) -> tuple[list[str], list[float]]:
    order = rng.permutation(len(names))
    return names[order].tolist(), dists[order].tolist()


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
        named = nodes["name"].notna().to_numpy() & (pd.to_numeric(nodes["rank"], errors="coerce") > 0).to_numpy()
        self.named = named
        self.columns = {
            "node_id": nodes["node_id"].astype(str).to_numpy(dtype=object),
            "kind": nodes["kind"].astype(str).to_numpy(dtype=object),
            "name": nodes["name"].astype(object).where(nodes["name"].notna(), "").astype(str).to_numpy(dtype=object),
            "category": nodes["category"].astype(object).where(nodes["category"].notna(), "").astype(str).to_numpy(
                dtype=object),
            "dist": pd.to_numeric(nodes["distance_m"], errors="coerce").to_numpy(dtype=float),
            "lon": pd.to_numeric(nodes["lon"], errors="coerce").to_numpy(dtype=float),
            "lat": pd.to_numeric(nodes["lat"], errors="coerce").to_numpy(dtype=float),
        }  # fmt: skip

    def of(self, image_id: str) -> _Sub:
        start, stop = self.index.node_rows(image_id)
        keep = self.named[start:stop]
        return _Sub(**{k: v[start:stop][keep] for k, v in self.columns.items()})


def _angle_between_words_deg(a: int, b: int) -> float:
    diff = abs(a - b) % len(COMPASS_WORDS)
    return min(diff, len(COMPASS_WORDS) - diff) * COMPASS_SECTOR_DEG


def _clearly_wrong(d: float, word: int, true_d: float, true_word: int, config: BenchConfig) -> bool:
    ratio = max(d, 1.0) / max(true_d, 1.0)
    far_off = ratio >= config.min_distractor_ratio or ratio <= 1.0 / config.min_distractor_ratio
    return far_off or _angle_between_words_deg(word, true_word) >= config.min_distractor_angle_deg


def build_grounding_records(inputs: CityInputs, *, config: BenchConfig, stats: BuildStats) -> list[dict[str, object]]:
    """
    Spatial grounding records of one city, one per (test image, grounding type) where the type applies.

    Returns
    -------
    records
        Record dicts (:data:`~._records.TASK_COLUMNS`) with ``query_type`` one of ``config.grounding_types``.
    """
    arrays = _SubArrays(SubgraphIndex(inputs.subgraph_nodes, inputs.subgraph_edges))
    queries = query_images(inputs)
    split = record_split(inputs)
    city_places = _CityPlaces(inputs.nodes, ("poi", "aoi"))
    city_streets = _CityPlaces(inputs.nodes, ("street",))
    city_crossings = _CityPlaces(inputs.nodes, ("crossing",))
    street_name = dict(zip(inputs.nodes["node_id"].astype(str), inputs.nodes["name"], strict=True))
    by_type: dict[str, list[dict[str, object]]] = {t: [] for t in config.grounding_types}
    n = config.n_distractors
    for row in queries.itertuples(index=False):
        image_id = str(row.image_id)
        sub = arrays.of(image_id)
        places = sub.take(np.isin(sub.kind, ["poi", "aoi"])).by_distance()
        streets = sub.take(sub.kind == "street")
        crossings = sub.take(sub.kind == "crossing").by_distance()
        lat, lon = float(row.lat), float(row.lon)
        common = {"city": inputs.city, "split": split, "image_id": image_id, "query_kind": "image",
                  "query_image": str(row.path), "query_graph_id": image_id, "candidate_kind": "text",
                  "lon": lon, "lat": lat}  # fmt: skip

        def emit(qtype: str, question: str, correct: str, correct_m: float, groups: _Groups, meta: dict,
                 fillers: set[str], *, image_id: str = image_id, common: dict = common) -> None:  # fmt: skip
            rng = record_rng(config.seed, "grounding", qtype, inputs.city, image_id)
            names, dists = _fill(correct, groups(rng), n)
            if len(names) < n:
                stats.skip(f"grounding/{qtype}/too_few_candidates/{inputs.city}")
                return
            record = finish_record(
                rng=rng, correct=correct, distractors=names, correct_distance_m=correct_m,
                distractor_distance_m=dists, record_id=f"grounding/{qtype}/{inputs.city}/{image_id}",
                task="grounding", query_type=qtype, query_text=question, instruction=question,
                meta={**meta, "n_fillers": sum(1 for x in names if x in fillers)}, **common,
            )  # fmt: skip
            if leakage_reason([question], record["candidates"], record["correct_idx"]):
                stats.skip(f"grounding/{qtype}/leakage/{inputs.city}")
                return
            by_type[qtype].append(record)

        if "nearest_poi" in by_type:
            _nearest_poi(image_id, lat, lon, places, city_places, config, emit)
        if "distance_direction" in by_type:
            _distance_direction(image_id, lat, lon, sub, places, config, emit, stats, inputs.city)
        if "which_street" in by_type:
            correct = street_name.get(str(row.street_node))
            if len(crossings.dist) and crossings.dist[0] < AMBIGUOUS_CROSSING_M:
                stats.skip(f"grounding/which_street/near_crossing/{inputs.city}")
            elif not isinstance(correct, str) or not correct:
                stats.skip(f"grounding/which_street/unnamed_street/{inputs.city}")
            else:
                own = streets.take(streets.name != correct)
                city_names, city_dist = city_streets.near(lat, lon, config.max_distractor_m)
                emit("which_street", QUESTIONS["which_street"], correct, float("nan"),
                     lambda rng, own=own, cn=city_names, cd=city_dist: [_shuffled(rng, own.name, own.dist), (cn, cd)],
                     {"filler_source": "city"}, set(city_names) - set(streets.name))  # fmt: skip
        if "which_crossing" in by_type:
            if len(crossings.dist) == 0:
                stats.skip(f"grounding/which_crossing/no_crossing/{inputs.city}")
            elif len(crossings.dist) > 1 and crossings.dist[1] - crossings.dist[0] < config.nearest_margin_m:
                stats.skip(f"grounding/which_crossing/ambiguous_nearest/{inputs.city}")
            else:
                rest = crossings.take(np.arange(1, len(crossings.dist)))
                city_names, city_dist = city_crossings.near(lat, lon, config.max_distractor_m)
                emit("which_crossing", QUESTIONS["which_crossing"], str(crossings.name[0]), float(crossings.dist[0]),
                     lambda rng, rest=rest, cn=city_names, cd=city_dist: [_shuffled(rng, rest.name, rest.dist),
                                                                           (cn, cd)],
                     {"filler_source": "city"}, set(city_names) - set(crossings.name))  # fmt: skip
    records: list[dict[str, object]] = []
    for qtype, kept in by_type.items():
        kept = limit_records(kept, config.max_records_per_task, config.seed, "grounding", qtype, inputs.city)
        stats.records[f"grounding/{qtype}/{inputs.city}"] = len(kept)
        records.extend(kept)
    logger.info("%s: %s grounding records (%s)", inputs.city, len(records),
                {k: v for k, v in stats.records.items() if k.startswith("grounding/") and k.endswith(inputs.city)})
    return records


def _nearest_poi(image_id: str, lat: float, lon: float, places: _Sub, city_places: _CityPlaces,
                 config: BenchConfig, emit: Callable[..., None]) -> None:  # fmt: skip
    """Pick one askable category (seeded) whose nearest place is clear, and emit its record."""
    eligible = []
    for category in sorted(set(places.category.tolist())):
        if category not in CATEGORY_PHRASES:
            continue
        d = places.dist[places.category == category]  # ascending: places are sorted by distance
        if len(d) > 1 and d[1] - d[0] < config.nearest_margin_m:
            continue
        eligible.append(category)
    if not eligible:
        return
    rng = record_rng(config.seed, "nearest_poi_category", image_id)
    category = eligible[int(rng.integers(len(eligible)))]
    same = places.take(places.category == category)
    farther = same.take(np.arange(1, len(same.dist)))
    others = places.take(places.category != category)
    city_names, city_dist = city_places.near(lat, lon, config.max_distractor_m)
    emit("nearest_poi", QUESTIONS["nearest_poi"].format(phrase=CATEGORY_PHRASES[category]), str(same.name[0]),
         float(same.dist[0]),
         lambda rng: [(farther.name.tolist(), farther.dist.tolist()), _shuffled(rng, others.name, others.dist),
                      (city_names, city_dist)],
         {"category": category, "filler_source": "city"}, set(city_names) - set(places.name))  # fmt: skip


def _distance_direction(image_id: str, lat: float, lon: float, sub: _Sub, places: _Sub, config: BenchConfig,
                        emit: Callable[..., None], stats: BuildStats, city: str) -> None:  # fmt: skip
    """Pick one named place (seeded) at a suitable distance and emit its distance–direction record."""
    counts = Counter(normalize_text(name) for name in sub.name)
    unique = np.array([counts[normalize_text(name)] == 1 for name in places.name], dtype=bool)
    place_d, place_b = distance_bearing(lat, lon, places.lat, places.lon)  # to each place's anchor point
    eligible = np.flatnonzero(unique & (place_d >= config.target_min_m) & (place_d <= config.target_max_m))
    if not len(eligible):
        stats.skip(f"grounding/distance_direction/no_target/{city}")
        return
    rng = record_rng(config.seed, "distance_direction_target", image_id)
    target = int(eligible[int(rng.integers(len(eligible)))])
    all_d, all_b = distance_bearing(lat, lon, sub.lat, sub.lon)
    t_d, t_word = float(place_d[target]), int(compass_index(float(place_b[target])))
    correct = f"{distance_phrase(t_d)} {COMPASS_WORDS[t_word]}"
    keep = ((all_d >= config.target_min_m) & (all_d <= config.target_max_m)
            & (sub.node_id != places.node_id[target]))  # fmt: skip
    d_real, words_real = all_d[keep], compass_index(all_b[keep])
    real = [(f"{distance_phrase(d)} {COMPASS_WORDS[w]}", d) for d, w in zip(d_real, words_real, strict=True)
            if _clearly_wrong(d, int(w), t_d, t_word, config)]  # fmt: skip
    synthetic = [(f"{distance_phrase(d)} {COMPASS_WORDS[w]}", d) for d in sorted(set(d_real.tolist()) | {t_d})
                 for w in range(len(COMPASS_WORDS)) if _clearly_wrong(d, w, t_d, t_word, config)]  # fmt: skip

    def groups(rng: np.random.Generator) -> list[tuple[list[str], list[float]]]:
        out = []
        for pool in (real, synthetic):
            order = rng.permutation(len(pool))
            out.append(([pool[i][0] for i in order], [float(pool[i][1]) for i in order]))
        return out

    emit("distance_direction", QUESTIONS["distance_direction"].format(name=str(places.name[target])), correct, t_d,
         groups, {"target_node": str(places.node_id[target]), "filler_source": "synthetic"},
         {text for text, _ in synthetic} - {text for text, _ in real})  # fmt: skip
