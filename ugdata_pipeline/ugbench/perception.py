"""Urban perception records: how green, enclosed, commercial and connected a place is, from OpenStreetMap.

The reference's perception benchmark uses Place-Pulse-style human judgements that cannot be redistributed. This
module measures four **proxies** around each image from the city's OSM tables and graph, so the task can be built
for any city; Place Pulse 2.0 votes, when a user supplies them, are read by :mod:`ugdata_pipeline.ugbench.placepulse`.

=============  ========================================================================  ====================
dimension      components (each a within-city percentile rank; the dimension averages)     proxy of
=============  ========================================================================  ====================
greenery       share of a 100 m disc covered by green areas (parks, grass, woods);          perceived greenery
               OSM trees within 50 m
enclosure      share of a 50 m disc covered by building footprints; their mean height       enclosure / sense of
               (tag, levels or the renderer's type default)                                  a street canyon
commercial     shops, food and finance places (POIs and areas) within 200 m                 liveliness
connectivity   street crossings (graph nodes) within 300 m                                  walkability
=============  ========================================================================  ====================

**Independence from the training captions.** The offline captioner writes its visual sentences ("the street
feels leafy", "buildings about 3 storeys high") from the *renderer's pixel fractions* of the view. These labels
never read those fractions: they measure the neighbourhood in OSM, around the image, whatever the camera faces.
The two agree only as far as a camera sees its surroundings, which is what the task asks a model to judge.

**Levels.** Terciles per city of the dimension score's percentile rank ``p`` in (0, 1]: ``low`` (p <= 1/3),
``mid``, ``high``. Images within :data:`BOUNDARY_MARGIN` of a tercile boundary are ambiguous and get no record for
that dimension; a dimension with fewer than three distinct scores in a city is not used there.

**Records.** One per (test image, dimension): the query is the image with one neutral question
(:data:`PERCEPTION_QUESTION`), the candidates are the dimension's three level statements in one phrasing
(:data:`STATEMENTS`, the same phrasing for all three levels, so wording never tells the level). Levels are
**balanced** per city and dimension: each level keeps the same number of records (a seeded sample of the commonest
levels down to the rarest), so always answering the most frequent level scores exactly chance (1/3 Hit@1). The
phrasings are then dealt out alike in every level (a seeded order, phrasing ``k mod 4``), so each candidate set --
one dimension in one phrasing -- is correct equally often at each level: like the exchangeable groups of the other
tasks, any scorer that reads only the candidates ranks a set the same way in all its records and scores exactly
chance.
With three candidates Hit@1 and MRR are the figures to read (Hit@K for K >= 3 is 1 for every model).
"""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ugdata_pipeline.graph.crs import metric_crs
from ugdata_pipeline.ugbench._records import (
    BenchConfig,
    BuildStats,
    CityInputs,
    finish_record,
    images_with_subgraph,
    query_images,
    record_rng,
    record_split,
)

logger = logging.getLogger(__name__)

DIMENSIONS: tuple[str, ...] = ("greenery", "enclosure", "commercial", "connectivity")
LEVELS: tuple[str, ...] = ("low", "mid", "high")
#: What each dimension stands in for (the report prints it).
PROXY_OF: dict[str, str] = {
    "greenery": "perceived greenery (OSM green areas within 100 m, trees within 50 m)",
    "enclosure": "enclosure (building cover within 50 m and building height)",
    "commercial": "liveliness (shops, food and finance places within 200 m)",
    "connectivity": "walkability (street crossings within 300 m)",
}
#: Percentile-rank distance to a tercile boundary under which an image's level is ambiguous.
BOUNDARY_MARGIN = 0.03
GREEN_CATEGORIES = frozenset({"park", "green"})
GREEN_NATURAL_TAGS = frozenset(
    {"natural=wood", "natural=scrub", "natural=grassland", "natural=heath", "natural=tree_row"}
)
COMMERCIAL_CATEGORIES = frozenset({"commercial", "food", "financial"})
GREEN_RADIUS_M = 100.0
TREE_RADIUS_M = 50.0
BUILDING_RADIUS_M = 50.0
COMMERCIAL_RADIUS_M = 200.0
CROSSING_RADIUS_M = 300.0
#: Height of a building without a height or levels tag, metres (the renderer's default for a plain building).
DEFAULT_BUILDING_HEIGHT_M = 10.0

#: One neutral question for every dimension: the three candidates name the dimension, and a question that used
#: words of the statements would single some of them out (the leakage rule catches that).
PERCEPTION_QUESTION = "Which description fits the surroundings of this photo?"

#: ``(dimension, level) -> four phrasings``; phrasing k of the three levels is one candidate set.
STATEMENTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("greenery", "high"): (
        "a leafy street with a lot of greenery",
        "trees and green space line this street",
        "plenty of vegetation and green areas around",
        "a very green setting with many trees",
    ),
    ("greenery", "mid"): (
        "a street with some greenery here and there",
        "a few trees and patches of green nearby",
        "a moderate amount of vegetation around",
        "some green space, though not a lot of it",
    ),
    ("greenery", "low"): (
        "a street with little or no greenery",
        "hardly any trees or green space around",
        "a bare setting with almost no vegetation",
        "very little green, mostly paved surfaces",
    ),
    ("enclosure", "high"): (
        "tall buildings enclose the street on both sides",
        "a canyon-like street between high buildings",
        "dense, high-rise buildings tower over the street",
        "a strongly enclosed street with tall facades",
    ),
    ("enclosure", "mid"): (
        "medium-height buildings along the street",
        "a street framed by mid-rise buildings",
        "buildings of moderate height line the street",
        "a partly enclosed street with mid-size blocks",
    ),
    ("enclosure", "low"): (
        "low or few buildings, the street feels open",
        "a street with only low buildings around",
        "few buildings nearby and little sense of enclosure",
        "an open street with small, low buildings",
    ),
    ("commercial", "high"): (
        "a busy commercial street full of shops and cafes",
        "many shops, restaurants and banks nearby",
        "a lively area with lots of businesses around",
        "plenty of stores and places to eat close by",
    ),
    ("commercial", "mid"): (
        "a few shops and cafes along the way",
        "some businesses and places to eat nearby",
        "a street with a moderate number of shops",
        "a handful of stores and restaurants around",
    ),
    ("commercial", "low"): (
        "a quiet street with no shops or cafes",
        "hardly any businesses or places to eat nearby",
        "a residential feel with almost no stores",
        "very few shops or restaurants around here",
    ),
    ("connectivity", "high"): (
        "a dense street grid with many intersections",
        "lots of crossing streets and junctions around",
        "a well-connected area with frequent crossings",
        "many side streets branch off nearby",
    ),
    ("connectivity", "mid"): (
        "a few intersections within a short walk",
        "a moderately connected street network",
        "some crossing streets and junctions nearby",
        "side streets now and then along the way",
    ),
    ("connectivity", "low"): (
        "few intersections, the street runs on and on",
        "a poorly connected area with rare junctions",
        "hardly any crossing streets nearby",
        "long blocks with very few side streets",
    ),
}

_COMPONENTS: dict[str, tuple[str, ...]] = {
    "greenery": ("green_share_100m", "trees_50m"),
    "enclosure": ("building_share_50m", "building_height_50m"),
    "commercial": ("commercial_200m",),
    "connectivity": ("crossings_300m",),
}


def _metric(frame: pd.DataFrame | None, crs: str) -> gpd.GeoSeries:
    if frame is None or len(frame) == 0 or "geometry" not in frame.columns:
        return gpd.GeoSeries([], crs=crs)
    series = gpd.GeoSeries(frame["geometry"].to_numpy(), crs=getattr(frame, "crs", None) or "EPSG:4326")
    return series.to_crs(crs)


def _cover_share(points: np.ndarray, polygons: gpd.GeoSeries, radius_m: float) -> np.ndarray:
    """Share of each point's disc of ``radius_m`` covered by the union of ``polygons`` (overlaps counted once)."""
    share = np.zeros(len(points))
    if polygons.empty or not len(points):
        return share
    discs = shapely.buffer(shapely.points(points), radius_m, quad_segs=8)
    geoms = shapely.make_valid(polygons.to_numpy())
    disc_index, poly_index = shapely.STRtree(geoms).query(discs, predicate="intersects")
    for k in np.unique(disc_index):
        hit = geoms[poly_index[disc_index == k]]
        covered = shapely.intersection(discs[k], shapely.union_all(hit))
        share[k] = shapely.area(covered) / shapely.area(discs[k])
    return share


def _count_within(points: np.ndarray, targets: gpd.GeoSeries, radius_m: float) -> np.ndarray:
    """Number of ``targets`` (points or shapes, nearest point counted) within ``radius_m`` of each point."""
    if targets.empty or not len(points):
        return np.zeros(len(points))
    geoms = targets.to_numpy()
    disc_index, _ = shapely.STRtree(geoms).query(shapely.points(points), predicate="dwithin", distance=radius_m)
    return np.bincount(disc_index, minlength=len(points)).astype(float)


def _building_height(aois: pd.DataFrame) -> np.ndarray:
    if "height_m" not in aois.columns:  # no areas table (or no heights in it): every building takes the default
        return np.full(len(aois), DEFAULT_BUILDING_HEIGHT_M)
    heights = pd.to_numeric(aois["height_m"], errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(heights) & (heights > 0), heights, DEFAULT_BUILDING_HEIGHT_M)


def _mean_height_within(
    points: np.ndarray,
    buildings: gpd.GeoSeries,
    heights: np.ndarray,
    radius_m: float,
) -> np.ndarray:
    """Footprint-area-weighted mean height of the buildings within ``radius_m`` (NaN where there is none)."""
    out = np.full(len(points), np.nan)
    if buildings.empty or not len(points):
        return out
    geoms = buildings.to_numpy()
    area = shapely.area(geoms)
    disc_index, poly_index = shapely.STRtree(geoms).query(
        shapely.points(points), predicate="dwithin", distance=radius_m
    )
    weight = np.bincount(disc_index, weights=area[poly_index], minlength=len(points))
    total = np.bincount(disc_index, weights=area[poly_index] * heights[poly_index], minlength=len(points))
    np.divide(total, weight, out=out, where=weight > 0)
    return out


def perception_measures(inputs: CityInputs) -> pd.DataFrame:
    """
    Components, dimension scores, percentile ranks and tercile levels of a city's images.

    Parameters
    ----------
    inputs
        The city's tables; every non-excluded image with a subgraph is measured. Needs ``osm_aois`` (green areas
        and buildings); ``osm_pois`` and ``osm_trees`` add their components when given.

    Returns
    -------
    measures
        One row per image: ``image_id``, the components (``green_share_100m``, ``trees_50m``,
        ``building_share_50m``, ``building_height_50m``, ``commercial_200m``, ``crossings_300m``), and per
        dimension ``<dim>_score``, ``<dim>_pct`` (percentile rank in (0, 1], NaN when not measured) and
        ``<dim>_level`` (low | mid | high | None).
    """
    sub_ids = images_with_subgraph(inputs)
    images = inputs.images[inputs.images["split"].astype(str) != "excluded"]
    images = images[images["image_id"].astype(str).isin(sub_ids)].reset_index(drop=True)
    table = pd.DataFrame({"image_id": images["image_id"].astype(str).to_numpy(dtype=object)})
    if images.empty:
        return table
    located = gpd.GeoSeries(gpd.points_from_xy(images["lon"], images["lat"]), crs="EPSG:4326")
    crs = metric_crs(inputs.crs_metric, needed_by=f"perception_measures of {inputs.city!r}").to_string()
    points = shapely.get_coordinates(located.to_crs(crs).to_numpy())
    aois = inputs.osm_aois if inputs.osm_aois is not None else pd.DataFrame()
    is_building = aois["is_building"].fillna(False).astype(bool) if "is_building" in aois.columns else None
    category = aois["category"].astype(str) if "category" in aois.columns else pd.Series(dtype=str)
    tags = aois["tag"].astype(str) if "tag" in aois.columns else pd.Series("", index=aois.index)
    green = (
        aois[
            (category.isin(GREEN_CATEGORIES) | tags.isin(GREEN_NATURAL_TAGS))
            & ~(is_building if is_building is not None else False)
        ]
        if len(aois)
        else aois
    )
    buildings = aois[is_building] if is_building is not None else aois.iloc[0:0]
    table["green_share_100m"] = _cover_share(points, _metric(green, crs), GREEN_RADIUS_M)
    table["trees_50m"] = _count_within(points, _metric(inputs.osm_trees, crs), TREE_RADIUS_M)
    table["building_share_50m"] = _cover_share(points, _metric(buildings, crs), BUILDING_RADIUS_M)
    table["building_height_50m"] = _mean_height_within(
        points, _metric(buildings, crs), _building_height(buildings), BUILDING_RADIUS_M
    )
    places = [
        frame[frame["category"].astype(str).isin(COMMERCIAL_CATEGORIES)]
        for frame in (inputs.osm_pois, aois)
        if frame is not None and "category" in frame.columns
    ]
    commercial = pd.concat([_metric(p, crs) for p in places], ignore_index=True) if places else gpd.GeoSeries([])
    table["commercial_200m"] = _count_within(points, gpd.GeoSeries(commercial, crs=crs), COMMERCIAL_RADIUS_M)
    nodes = inputs.nodes[inputs.nodes["kind"].astype(str) == "crossing"]
    crossings = gpd.GeoSeries(gpd.points_from_xy(nodes["lon"], nodes["lat"]), crs="EPSG:4326").to_crs(crs)
    table["crossings_300m"] = _count_within(points, crossings, CROSSING_RADIUS_M)
    if inputs.osm_aois is None:  # greenery and enclosure need the areas table: leave them unmeasured
        for column in ("green_share_100m", "building_share_50m", "building_height_50m"):
            table[column] = np.nan
    for dim, columns in _COMPONENTS.items():
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
    Perception records of one city (rules in the module docstring), balanced over levels per dimension.

    Returns
    -------
    records
        Record dicts (:data:`~._records.TASK_COLUMNS`); ``meta`` holds ``dimension``, ``level``, ``percentile``,
        ``proxy_of``.
    """
    if inputs.osm_aois is None:
        stats.skip(f"perception/no_osm_tables/{inputs.city}")
        stats.records[f"perception/perception/{inputs.city}"] = 0
        return []
    measures = perception_measures(inputs).set_index("image_id")
    queries = query_images(inputs)
    split = record_split(inputs)
    by_level: dict[tuple[str, str], list[tuple[object, float]]] = {}
    for row in queries.itertuples(index=False):
        image_id = str(row.image_id)
        if image_id not in measures.index:
            continue
        m = measures.loc[image_id]
        for dim in DIMENSIONS:
            pct = float(m.get(f"{dim}_pct", np.nan))
            if not np.isfinite(pct):
                continue
            levels = plausible_levels(pct)
            if len(levels) > 1:
                stats.skip(f"perception/near_tercile_boundary/{inputs.city}")
                continue
            by_level.setdefault((dim, next(iter(levels))), []).append((row, pct))

    def record(row: object, pct: float, dim: str, level: str, phrasing: int) -> dict[str, object]:
        image_id = str(row.image_id)  # type: ignore[attr-defined]
        statements = {lv: STATEMENTS[dim, lv][phrasing] for lv in LEVELS}
        return finish_record(
            rng=record_rng(config.seed, "perception", inputs.city, image_id, dim),
            correct=statements[level],
            distractors=[statements[lv] for lv in LEVELS if lv != level],
            record_id=f"perception/perception/{inputs.city}/{image_id}/{dim}",
            task="perception",
            query_type="perception",
            city=inputs.city,
            split=split,
            image_id=image_id,
            query_kind="image",
            query_text=PERCEPTION_QUESTION,
            instruction=PERCEPTION_QUESTION,
            fusion_instruction=PERCEPTION_QUESTION,
            query_image=str(row.path),
            query_graph_id=image_id,
            candidate_kind="text",  # type: ignore[attr-defined]
            lon=float(row.lon),
            lat=float(row.lat),
            group_id=None,  # type: ignore[attr-defined]
            meta={"dimension": dim, "level": level, "percentile": round(pct, 4), "proxy_of": PROXY_OF[dim]},
        )

    # the cap keeps the balance: the same number of records per (dimension, level)
    cap = (
        max(1, config.max_records_per_task // (len(DIMENSIONS) * len(LEVELS)))
        if config.max_records_per_task is not None
        else None
    )
    records: list[dict[str, object]] = []
    for dim in DIMENSIONS:
        counts = [len(by_level.get((dim, lv), [])) for lv in LEVELS]
        keep = min(counts) if cap is None else min(*counts, cap)
        for lv, count in zip(LEVELS, counts, strict=True):
            stats.skip(f"perception/balance_levels/{inputs.city}", count - keep)
            pool = by_level.get((dim, lv), [])
            picked = record_rng(config.seed, "perception-balance", inputs.city, dim, lv).choice(
                count, size=keep, replace=False
            )
            # phrasing k mod 4 in a seeded order: every level gets the same count of each phrasing
            deal = record_rng(config.seed, "perception-phrasing", inputs.city, dim, lv).permutation(keep)
            n_phrasings = len(STATEMENTS[dim, lv])
            records.extend(
                record(*pool[i], dim, lv, int(k) % n_phrasings) for i, k in zip(np.sort(picked), deal, strict=True)
            )
    stats.records[f"perception/perception/{inputs.city}"] = len(records)
    logger.info("%s: %s perception records", inputs.city, len(records))
    return records
