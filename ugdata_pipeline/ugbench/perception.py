"""Urban perception records from dimensions measured at the location itself (documented proxies).

The reference's perception benchmark uses Place-Pulse-style human judgements that cannot be redistributed. This
module measures five **proxies** from the image's own scene facts (renderer output) and its subgraph, so the
task can be built for any city. They are proxies of perception, not human perception; Place Pulse 2.0 votes, when
a user supplies them, are read by :mod:`ugdata_pipeline.ugbench.placepulse`.

=============  ======================================================================================  =========
dimension      components (each turned into a within-city percentile rank, then averaged)              source
=============  ======================================================================================  =========
greenery       ``green_fraction``; named park / green / natural / garden areas within 100 m              facts, graph
enclosure      ``mean_building_height_m``; ``building_fraction``                                         facts
commercial     shops, food and finance places (POIs and areas) within 200 m                              graph
connectivity   crossings within 300 m; degree of the image's street in the city graph                    graph
sky            ``sky_fraction``                                                                          facts
=============  ======================================================================================  =========

Distances are the subgraph's ``distance_m`` (image to the node's anchor point). A component missing for an image
(Mapillary images have no scene facts, a height may be null) is left out of its mean; a dimension with no
component for an image is not measured for it.

**Levels.** Terciles per city: the dimension score's percentile rank ``p`` in (0, 1] over the city's images
(average ranks for ties) gives ``low`` (p <= 1/3), ``mid`` (1/3 < p <= 2/3) or ``high``. A dimension with fewer
than three distinct scores in a city is not used there. Images within :data:`BOUNDARY_MARGIN` of a tercile
boundary are ambiguous between two levels: they get no record for that dimension, and neither adjacent level is
used as a distractor for them.

**Records.** One per (test image, measured dimension). Candidates are perception statements: 5 dimensions x 3
levels x 4 phrasings (:data:`STATEMENTS`, 60 in all, written to the same form and similar length). The correct
candidate is a seeded phrasing of the image's level; distractors are all 8 phrasings of the other two levels of
the same dimension plus a seeded sample of statements of *other* dimensions at levels the image does **not**
have, so exactly one candidate is true. 1 + 8 + 11 = 20 candidates (``n_distractors = 19``); a record needs at
least three measured dimensions to fill them (two other dimensions x two false levels x four phrasings).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ugdata_pipeline.ugbench._records import (
    BenchConfig,
    BuildStats,
    CityInputs,
    finish_record,
    leakage_reason,
    limit_records,
    query_images,
    record_rng,
    record_split,
)

logger = logging.getLogger(__name__)

PERCEPTION_INSTRUCTION = "Which description fits this photo?"
DIMENSIONS: tuple[str, ...] = ("greenery", "enclosure", "commercial", "connectivity", "sky")
LEVELS: tuple[str, ...] = ("low", "mid", "high")
#: Percentile-rank distance to a tercile boundary under which an image's level is ambiguous.
BOUNDARY_MARGIN = 0.03
GREEN_CATEGORIES = frozenset({"park", "green", "natural", "garden"})
COMMERCIAL_CATEGORIES = frozenset({"commercial", "food", "financial"})
GREEN_RADIUS_M = 100.0
COMMERCIAL_RADIUS_M = 200.0
CROSSING_RADIUS_M = 300.0

#: ``(dimension, level) -> four phrasings``.
STATEMENTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("greenery", "high"): ("a leafy street with a lot of greenery", "trees and green space line this street",
                           "plenty of vegetation and green areas around", "a very green setting with many trees"),
    ("greenery", "mid"): ("a street with some greenery here and there", "a few trees and patches of green nearby",
                          "a moderate amount of vegetation around", "some green space, though not a lot of it"),
    ("greenery", "low"): ("a street with little or no greenery", "hardly any trees or green space around",
                          "a bare setting with almost no vegetation", "very little green, mostly paved surfaces"),
    ("enclosure", "high"): ("tall buildings enclose the street on both sides", "a canyon-like street between high "
                            "buildings", "dense, high-rise buildings tower over the street",
                            "a strongly enclosed street with tall facades"),
    ("enclosure", "mid"): ("medium-height buildings along the street", "a street framed by mid-rise buildings",
                           "buildings of moderate height line the street",
                           "a partly enclosed street with mid-size blocks"),
    ("enclosure", "low"): ("low or few buildings, the street feels open", "a street with only low buildings around",
                           "few buildings nearby and little sense of enclosure",
                           "an open street with small, low buildings"),
    ("commercial", "high"): ("a busy commercial street full of shops and cafes", "many shops, restaurants and banks "
                             "nearby", "a lively area with lots of businesses around",
                             "plenty of stores and places to eat close by"),
    ("commercial", "mid"): ("a few shops and cafes along the way", "some businesses and places to eat nearby",
                            "a street with a moderate number of shops", "a handful of stores and restaurants around"),
    ("commercial", "low"): ("a quiet street with no shops or cafes", "hardly any businesses or places to eat nearby",
                            "a residential feel with almost no stores", "very few shops or restaurants around here"),
    ("connectivity", "high"): ("a dense street grid with many intersections", "lots of crossing streets and "
                               "junctions around", "a well-connected area with frequent crossings",
                               "many side streets branch off nearby"),
    ("connectivity", "mid"): ("a few intersections within a short walk", "a moderately connected street network",
                              "some crossing streets and junctions nearby", "side streets now and then along the way"),
    ("connectivity", "low"): ("few intersections, the street runs on and on", "a poorly connected area with rare "
                              "junctions", "hardly any crossing streets nearby", "long blocks with very few side "
                              "streets"),
    ("sky", "high"): ("a wide open sky above the street", "lots of open sky and a broad view upward",
                      "an open setting where the sky dominates", "the sky is wide and unobstructed here"),
    ("sky", "mid"): ("a fair amount of sky visible above", "the sky is partly blocked by surroundings",
                     "some open sky between buildings and trees", "a moderate view of the sky overhead"),
    ("sky", "low"): ("very little sky visible from the street", "the sky is mostly hidden by surroundings",
                     "an enclosed view with hardly any sky", "buildings and trees block most of the sky"),
}  # fmt: skip


def _facts(value: object) -> Mapping[str, object]:
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str) or not value.strip():
        return {}
    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {}


def _number(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return out if np.isfinite(out) else float("nan")


def perception_measures(inputs: CityInputs) -> pd.DataFrame:
    """
    Raw components, dimension scores, percentile ranks and tercile levels of a city's images.

    Parameters
    ----------
    inputs
        The city's tables; every non-excluded image with a subgraph is measured.

    Returns
    -------
    measures
        One row per image: ``image_id``, the components (``green_fraction``, ``green_areas_100m``,
        ``mean_building_height_m``, ``building_fraction``, ``commercial_200m``, ``crossings_300m``,
        ``street_degree``, ``sky_fraction``), and per dimension ``<dim>_score``, ``<dim>_pct`` (percentile rank
        in (0, 1], NaN when not measured) and ``<dim>_level`` (low | mid | high | None).
    """
    sub = inputs.subgraph_nodes
    images = inputs.images[inputs.images["split"].astype(str) != "excluded"]
    images = images[images["image_id"].astype(str).isin(set(sub["image_id"].astype(str)))].reset_index(drop=True)
    ids = images["image_id"].astype(str)
    facts = [_facts(v) for v in (images["scene_facts"] if "scene_facts" in images.columns else [None] * len(images))]
    table = pd.DataFrame({"image_id": ids.to_numpy(dtype=object)})
    for key in ("green_fraction", "mean_building_height_m", "building_fraction", "sky_fraction"):
        table[key] = [_number(f.get(key)) for f in facts]

    dist = pd.to_numeric(sub["distance_m"], errors="coerce")
    sub_ids = sub["image_id"].astype(str)
    kind = sub["kind"].astype(str)
    category = sub["category"].astype(str)

    def count(mask: pd.Series) -> np.ndarray:
        counts = mask.groupby(sub_ids).sum()
        return counts.reindex(ids, fill_value=0).to_numpy(dtype=float)

    place = kind.isin(["poi", "aoi"])
    table["green_areas_100m"] = count((kind == "aoi") & category.isin(GREEN_CATEGORIES) & (dist <= GREEN_RADIUS_M))
    table["commercial_200m"] = count(place & category.isin(COMMERCIAL_CATEGORIES) & (dist <= COMMERCIAL_RADIUS_M))
    table["crossings_300m"] = count((kind == "crossing") & (dist <= CROSSING_RADIUS_M))
    edges = inputs.edges
    degree = pd.concat([edges["src"], edges["dst"]]).astype(str).value_counts()
    table["street_degree"] = images["street_node"].astype(str).map(degree).fillna(0).to_numpy(dtype=float)

    components = {
        "greenery": ("green_fraction", "green_areas_100m"),
        "enclosure": ("mean_building_height_m", "building_fraction"),
        "commercial": ("commercial_200m",),
        "connectivity": ("crossings_300m", "street_degree"),
        "sky": ("sky_fraction",),
    }
    for dim, columns in components.items():
        ranks = pd.concat([table[c].rank(pct=True, method="average") for c in columns], axis=1)
        score = ranks.mean(axis=1, skipna=True)
        table[f"{dim}_score"] = score
        if score.nunique(dropna=True) < 3:
            table[f"{dim}_pct"] = np.nan
            table[f"{dim}_level"] = None
            continue
        pct = score.rank(pct=True, method="average")
        table[f"{dim}_pct"] = pct
        level = np.where(pct <= 1 / 3, "low", np.where(pct <= 2 / 3, "mid", "high")).astype(object)
        table[f"{dim}_level"] = np.where(pct.isna(), None, level)
    return table


def _level_of(pct: float) -> str:
    return "low" if pct <= 1 / 3 else ("mid" if pct <= 2 / 3 else "high")


def plausible_levels(pct: float, *, margin: float = BOUNDARY_MARGIN) -> set[str]:
    """Levels an image could hold given its percentile rank: its own, plus a neighbour within ``margin``."""
    return {_level_of(pct), _level_of(max(pct - margin, 0.0)), _level_of(min(pct + margin, 1.0))}


def build_perception_records(inputs: CityInputs, *, config: BenchConfig, stats: BuildStats) -> list[dict[str, object]]:
    """
    Perception records of one city (see the module docstring for the rules).

    Returns
    -------
    records
        Record dicts (:data:`~._records.TASK_COLUMNS`); ``meta`` holds ``dimension``, ``level``, ``percentile``.
    """
    measures = perception_measures(inputs).set_index("image_id")
    queries = query_images(inputs)
    split = record_split(inputs)
    n_other = config.n_distractors - 2 * len(STATEMENTS["greenery", "low"])
    records: list[dict[str, object]] = []
    for row in queries.itertuples(index=False):
        image_id = str(row.image_id)
        if image_id not in measures.index:
            continue
        m = measures.loc[image_id]
        plausible = {dim: plausible_levels(float(m[f"{dim}_pct"])) for dim in DIMENSIONS
                     if np.isfinite(m[f"{dim}_pct"])}  # fmt: skip
        for dim, levels in plausible.items():
            if len(levels) > 1:
                stats.skip(f"perception/near_tercile_boundary/{inputs.city}")
                continue
            level = next(iter(levels))
            rng = record_rng(config.seed, "perception", inputs.city, image_id, dim)
            phrasings = STATEMENTS[dim, level]
            correct = phrasings[int(rng.integers(len(phrasings)))]
            same_dim = [s for lv in LEVELS if lv != level for s in STATEMENTS[dim, lv]]
            other_dims = [s for d, lvs in plausible.items() if d != dim for lv in LEVELS if lv not in lvs
                          for s in STATEMENTS[d, lv]]  # fmt: skip
            if len(other_dims) < n_other:
                stats.skip(f"perception/too_few_measured_dimensions/{inputs.city}")
                continue
            picked = rng.choice(len(other_dims), size=n_other, replace=False)
            distractors = same_dim + [other_dims[i] for i in sorted(picked)]
            record = finish_record(
                rng=rng, correct=correct, distractors=distractors,
                record_id=f"perception/perception/{inputs.city}/{image_id}/{dim}", task="perception",
                query_type="perception", city=inputs.city, split=split, image_id=image_id, query_kind="image",
                query_text=PERCEPTION_INSTRUCTION, instruction=PERCEPTION_INSTRUCTION, query_image=str(row.path),
                query_graph_id=image_id, candidate_kind="text", lon=float(row.lon), lat=float(row.lat),
                meta={"dimension": dim, "level": level, "percentile": round(float(m[f"{dim}_pct"]), 4),
                      "proxy": True},
            )  # fmt: skip
            if leakage_reason([PERCEPTION_INSTRUCTION], record["candidates"], record["correct_idx"]):
                stats.skip(f"perception/leakage/{inputs.city}")
                continue
            records.append(record)
    records = limit_records(records, config.max_records_per_task, config.seed, "perception", inputs.city)
    stats.records[f"perception/perception/{inputs.city}"] = len(records)
    logger.info("%s: %s perception records", inputs.city, len(records))
    return records
