"""Stage-1 / stage-2 training records: an instruction and an image (plus the subgraph in stage 2) against a text.

One row per (image, positive text) in the ``training_records`` layout: ``record_id, stage, variant, image_id, split,
instruction, image_path, positive, pair_type, hard_negatives``.

* **ugdata** variant: three kinds of positive per image, each a ``pair_type``: ``"caption"`` (the SCC image
  caption), ``"summarization"`` (the SCC summarization) and ``"path"`` (the SRP answer sentence followed by the
  walking route with the destination named). The query is an instruction from a small varied set (picked per
  image by a seeded hash) plus the image; stage 2 adds the image's subgraph (exported as graph JSON).
* **baseline** variant: only the generic image caption as positive (``pair_type = "generic"``), no spatial
  summarization, no paths and no graph; the control arm of the comparison.

Splits come from the imagery stage (``images.split``); ``excluded`` images get no records. Optional hard
negatives are the same-kind texts of other images 200-800 m away **in the same split** (so a negative never
carries text from another split into training).

Leakage: the query is the instruction (and image, and in stage 2 the graph); it never contains the positive nor
the path's target name (the shared rule of :mod:`ugdata_pipeline.reasoning.mentions`). A record that would break
this is dropped, counted and returned with its rule (``TrainingRecords.dropped``); the build fails only when more
than :data:`MAX_DROPPED_SHARE` of its records go.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.errors import DatasetInputError, IncompleteResultError
from ugdata_pipeline.graph.geodesy import distance_m
from ugdata_pipeline.reasoning.mentions import mentions_name
from ugdata_pipeline.reasoning.text import MASKED_SENTENCE_NAME
from ugdata_pipeline.seeding import stable_choice, stable_rng
from ugdata_pipeline.tables import require_columns

logger = logging.getLogger(__name__)

__all__ = [
    "DROPPED_RECORD_COLUMNS",
    "INSTRUCTIONS",
    "MAX_DROPPED_SHARE",
    "PAIR_TYPES",
    "TRAINING_RECORD_COLUMNS",
    "DatasetInputError",
    "TrainingRecords",
    "assemble_training_records",
    "build_training_records",
    "negatives_within_split",
    "path_positive",
    "query_leaks",
    "records_summary",
]

#: Columns of the ``training_records`` table, in order.
TRAINING_RECORD_COLUMNS: tuple[str, ...] = (
    "record_id",
    "stage",
    "variant",
    "image_id",
    "split",
    "instruction",
    "image_path",
    "positive",
    "pair_type",
    "hard_negatives",
)
#: Columns of the table of records dropped by a per-record rule.
DROPPED_RECORD_COLUMNS: tuple[str, ...] = (
    "record_id",
    "stage",
    "variant",
    "image_id",
    "split",
    "pair_type",
    "rule",
    "detail",
)
RULE_NAMES_TARGET = "instruction names the path's target"
RULE_HOLDS_POSITIVE = "instruction contains the positive text"
#: Largest share of one build's records (a stage and variant of a city) that per-record rules may drop. A clean
#: city drops none: the instructions are fixed and the reasoning stage already kept targets out of its texts with
#: the same rule. An odd place name (a café called "Street View") costs the few records whose instruction happens
#: to hold it, well under 1 %; past 5 % the rule hits systematically (an edited instruction with a common word, a
#: wrong srp table), and training on the rest would quietly skew the pair types, so the build fails instead.
MAX_DROPPED_SHARE = 0.05
PAIR_TYPES: dict[str, tuple[str, ...]] = {"ugdata": ("caption", "summarization", "path"), "baseline": ("generic",)}
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Instructions by stage and pair type: a small varied set, one picked per (image, pair type) by a seeded hash.
INSTRUCTIONS: Mapping[int, Mapping[str, tuple[str, ...]]] = {
    1: {
        "caption": (
            "Describe what can be seen in this street-level image.",
            "Write a detailed caption of this street view.",
            "What does this street scene look like? Describe it.",
            "Give a visual description of the street in this photo.",
        ),
        "summarization": (
            "Summarize where this street view is located and what surrounds it.",
            "Describe the neighbourhood and nearby places of this street image.",
            "Explain how this street scene fits into its surrounding area.",
            "What spatial context does this street-level image belong to?",
        ),
        "path": (
            "Which nearby place can be reached from where this image was taken, and how?",
            "Describe a walking route from this street view to a nearby place.",
            "From the location of this image, where can you walk to and in which direction?",
            "Name a place near this street view and explain how to get there.",
        ),
        "generic": (
            "Describe this image.",
            "Write a caption for this picture.",
            "What is shown in this photo?",
        ),
    },
    2: {
        "caption": (
            "Using the street view and its surrounding map graph, describe what can be seen.",
            "Given this street image and its spatial graph, write a detailed caption of the scene.",
            "Describe the street scene, taking the surrounding street network into account.",
        ),
        "summarization": (
            "Using the street view and its surrounding map graph, summarize where it is and what surrounds it.",
            "Given the image and the spatial graph around it, describe its neighbourhood and nearby places.",
            "Relate this street scene to the places and streets in its spatial graph.",
        ),
        "path": (
            "Using the street view and its map graph, name a nearby place and describe the route to it.",
            "Given the image and the surrounding street network, where can you walk to and how?",
            "With the help of the spatial graph, explain how to reach a nearby place from this image.",
        ),
    },
}


@dataclass(frozen=True, slots=True)
class TrainingRecords:
    """The records of one build, and the records that per-record rules dropped (:data:`DROPPED_RECORD_COLUMNS`)."""

    records: pd.DataFrame
    dropped: pd.DataFrame


def _require(frame: pd.DataFrame, name: str, columns: tuple[str, ...], hint: str) -> None:
    require_columns(frame, columns, table=name, fix=hint, error=DatasetInputError)


def _pick(options: tuple[str, ...], seed: int, *key: object) -> str:
    return stable_choice(options, seed, *key)


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def path_positive(target_name: str, path_sentence: str | None, target_text: str | None) -> str | None:
    """
    The positive text of a path record: the answer sentence, then the walking route with the target named.

    ``"You can reach Bank Two (bank) 190 m north-east of the image location. Walk 8 m south to Alpha Street, ...,
    then walk 150 m north to Bank Two."``
    """
    answer = _text(target_text)
    route = _text(path_sentence)
    if route is not None and target_name:
        route = route.replace(MASKED_SENTENCE_NAME, target_name)
    parts = [p for p in (answer, route) if p]
    return " ".join(parts) if parts else None


def _positives(
    captions: pd.DataFrame, paths: pd.DataFrame | None, variant: str, max_paths_per_image: int
) -> pd.DataFrame:
    """Long table (image_id, pair_type, k, positive, target_name) of every positive text per image."""
    done = captions[captions["status"] == "done"].drop_duplicates("image_id", keep="last")
    rows: list[tuple[str, str, int, str, str | None]] = []
    if variant == "baseline":
        for image_id, caption in zip(done["image_id"].astype(str), done["image_caption"], strict=True):
            if _text(caption):
                rows.append((image_id, "generic", 0, _text(caption), None))
    else:
        for image_id, caption, summary in zip(
            done["image_id"].astype(str), done["image_caption"], done["summarization"], strict=True
        ):
            if _text(caption):
                rows.append((image_id, "caption", 0, _text(caption), None))
            if _text(summary):
                rows.append((image_id, "summarization", 0, _text(summary), None))
        if paths is not None and not paths.empty and max_paths_per_image > 0:
            ordered = paths.assign(_shortest=(paths["path_type"] != "shortest").astype(int))
            ordered = ordered.sort_values(["image_id", "_shortest", "hops", "distance_m", "target_node"], kind="stable")
            ordered = ordered.groupby("image_id", sort=False).head(max_paths_per_image)
            counter: dict[str, int] = {}
            for row in ordered.itertuples(index=False):
                image_id = str(row.image_id)
                text = path_positive(str(row.target_name), row.path_sentence, row.target_text)
                if text is None:
                    continue
                k = counter.get(image_id, 0)
                counter[image_id] = k + 1
                rows.append((image_id, "path", k, text, str(row.target_name)))
    return pd.DataFrame(rows, columns=["image_id", "pair_type", "k", "positive", "target_name"])


def _local_xy(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Equirectangular metres around the mean latitude (a k-d tree needs planar coordinates)."""
    lat0 = np.deg2rad(np.nanmean(lat)) if len(lat) else 0.0
    metres_per_deg = 111_320.0
    return np.column_stack([lon * metres_per_deg * np.cos(lat0), lat * metres_per_deg])


#: Relative error allowed to the planar distance before the exact geodesic distance is asked for.
_PLANAR_TOLERANCE = 0.02
_NEIGHBOUR_CHUNK = 512  # images whose ring neighbours are gathered at once (bounds memory in dense cities)


def _ring_neighbours(
    lon: np.ndarray, lat: np.ndarray, split_codes: np.ndarray, neg_min_m: float, neg_max_m: float
) -> list[np.ndarray]:
    """For each image, the sorted indices of same-split images between ``neg_min_m`` and ``neg_max_m`` metres."""
    xy = _local_xy(lon, lat)
    tree = cKDTree(xy)
    out: list[np.ndarray] = []
    for start in range(0, len(xy), _NEIGHBOUR_CHUNK):
        block = np.arange(start, min(start + _NEIGHBOUR_CHUNK, len(xy)))
        lists = tree.query_ball_point(xy[block], r=neg_max_m * (1 + _PLANAR_TOLERANCE), return_sorted=True)
        sizes = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        src = np.repeat(block, sizes)
        dst = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if sizes.sum() else src
        same = (src != dst) & (split_codes[src] == split_codes[dst])
        src, dst = src[same], dst[same]
        planar = np.hypot(*(xy[src] - xy[dst]).T)
        keep = (planar >= neg_min_m * (1 + _PLANAR_TOLERANCE)) & (planar <= neg_max_m * (1 - _PLANAR_TOLERANCE))
        # Only pairs near a bound need the exact geodesic distance; the planar one decides the rest.
        unsure = ~keep & (planar >= neg_min_m * (1 - _PLANAR_TOLERANCE))
        if unsure.any():
            exact = distance_m(lat[src[unsure]], lon[src[unsure]], lat[dst[unsure]], lon[dst[unsure]])
            keep[np.flatnonzero(unsure)] = (exact >= neg_min_m) & (exact <= neg_max_m)
        src, dst = src[keep], dst[keep]
        bounds = np.searchsorted(src, block, side="left"), np.searchsorted(src, block, side="right")
        out.extend(dst[a:b] for a, b in zip(*bounds, strict=True))
    return out


def _hard_negatives(
    records: pd.DataFrame,
    images: pd.DataFrame,
    *,
    neg_min_m: float,
    neg_max_m: float,
    n_negatives: int,
    seed: int,
) -> list[list[str]]:
    """Per record: up to ``n_negatives`` texts of the same pair type from images [min, max] m away, same split."""
    out: list[list[str]] = [[] for _ in range(len(records))]
    if records.empty or n_negatives <= 0:
        return out
    located = images.set_index(images["image_id"].astype(str))
    image_ids = np.asarray(pd.unique(records["image_id"].astype(str).to_numpy(dtype=object)), dtype=object)
    position = {image_id: k for k, image_id in enumerate(image_ids)}
    lon = located.loc[image_ids, "lon"].to_numpy(dtype=float)
    lat = located.loc[image_ids, "lat"].to_numpy(dtype=float)
    split_codes = pd.factorize(located.loc[image_ids, "split"].astype(str).to_numpy(dtype=object))[0]
    ring = _ring_neighbours(lon, lat, split_codes, neg_min_m, neg_max_m)
    texts: dict[tuple[int, str], list[str]] = {}
    record_image = [position[i] for i in records["image_id"].astype(str)]
    for k, pair_type, positive in zip(record_image, records["pair_type"], records["positive"], strict=True):
        texts.setdefault((k, pair_type), []).append(positive)
    rows = zip(records["record_id"], record_image, records["pair_type"], records["positive"], strict=True)
    for index, (record_id, k, pair_type, positive) in enumerate(rows):
        neighbours = ring[k]
        if len(neighbours) == 0:
            continue
        rng = stable_rng(seed, record_id)
        # A seeded sample of the ring (a few times more than needed, in case some lack this kind of text);
        # dense cities have thousands of images in the ring, and taking every text would be quadratic.
        sample = rng.choice(len(neighbours), size=min(len(neighbours), 4 * n_negatives), replace=False)
        chosen: list[str] = []
        for j in sample:
            for text in texts.get((int(neighbours[j]), pair_type), []):
                if text != positive and text not in chosen:
                    chosen.append(text)
                    break
            if len(chosen) >= n_negatives:
                break
        out[index] = chosen
    return out


def build_training_records(
    images: pd.DataFrame, captions: pd.DataFrame, paths: pd.DataFrame | None, **options: Any
) -> pd.DataFrame:
    """The records of :func:`assemble_training_records` (same arguments), without the table of dropped ones."""
    return assemble_training_records(images, captions, paths, **options).records


def assemble_training_records(
    images: pd.DataFrame,
    captions: pd.DataFrame,
    paths: pd.DataFrame | None,
    *,
    stage: Literal[1, 2],
    variant: Literal["ugdata", "baseline"] = "ugdata",
    subgraphs: pd.DataFrame | None = None,
    hard_negatives: bool = True,
    n_negatives: int = 3,
    neg_min_m: float = 200.0,
    neg_max_m: float = 800.0,
    max_paths_per_image: int = 2,
    seed: int = 0,
    city: str = "the city",
    max_dropped_share: float = MAX_DROPPED_SHARE,
) -> TrainingRecords:
    """
    Training records of one stage and variant; records that break a per-record rule are dropped, not raised.

    Parameters
    ----------
    images
        Images manifest after splits: ``image_id``, ``path`` (relative to the storage root), ``lon``, ``lat``
        (decimal degrees), ``split``. ``excluded`` images are left out.
    captions
        The ``captions`` table; only ``done`` rows give positives.
    paths
        The ``srp`` table (``image_id, target_node, target_name, hops, path_type, path_sentence, target_text,
        distance_m``), or ``None`` for no path records (always ignored by the baseline).
    stage
        1 (image only) or 2 (image + subgraph).
    variant
        ``"ugdata"`` (caption, summarization and path positives) or ``"baseline"`` (generic caption only;
        stage 1 only, since it has no graph).
    subgraphs
        The per-image ``subgraphs`` table (``image_id``); required in stage 2, where images without a subgraph
        get no records.
    hard_negatives, n_negatives, neg_min_m, neg_max_m
        Add up to ``n_negatives`` same-kind texts of images between ``neg_min_m`` and ``neg_max_m`` metres
        away in the same split.
    max_paths_per_image
        Path records per image (shortest paths first, then fewer hops, then shorter distance).
    seed
        Picks instructions and negatives deterministically.
    city
        How to name the city in errors and logs (``"city 'helsinki'"``).
    max_dropped_share
        Largest share of records that per-record rules (:func:`query_leaks`: an instruction naming its target or
        holding its positive) may drop; see :data:`MAX_DROPPED_SHARE`.

    Returns
    -------
    result
        ``records`` (:data:`TRAINING_RECORD_COLUMNS`, ordered by split, image and pair type) and ``dropped``
        (:data:`DROPPED_RECORD_COLUMNS`, one row per dropped record with the rule it broke).

    Raises
    ------
    IncompleteResultError
        More than ``max_dropped_share`` of the records were dropped; names the city, the count and the rule.
    """
    if stage not in (1, 2):
        msg = f"`stage` must be 1 (image only) or 2 (image + subgraph), got {stage!r}"
        raise DatasetInputError(msg)
    if variant not in PAIR_TYPES:
        msg = f"`variant` must be one of {sorted(PAIR_TYPES)}, got {variant!r}"
        raise DatasetInputError(msg)
    if variant == "baseline" and stage == 2:
        msg = "the baseline variant has no graph, so it has no stage 2; build it with stage=1"
        raise DatasetInputError(msg)
    if not 0 <= neg_min_m < neg_max_m:
        msg = f"hard negatives need 0 <= neg_min_m < neg_max_m, got {neg_min_m!r} and {neg_max_m!r}"
        raise DatasetInputError(msg)
    _require(
        images,
        "images",
        ("image_id", "path", "lon", "lat", "split"),
        "Pass the images manifest after the splits stage.",
    )
    _require(
        captions,
        "captions",
        ("image_id", "image_caption", "summarization", "status"),
        "Pass the captions table from a captioner.",
    )
    if paths is not None and variant == "ugdata":
        _require(
            paths,
            "paths",
            (
                "image_id",
                "target_node",
                "target_name",
                "hops",
                "path_type",
                "path_sentence",
                "target_text",
                "distance_m",
            ),
            "Pass the srp table.",
        )
    if stage == 2:
        if subgraphs is None:
            msg = "stage 2 needs `subgraphs` (the per-image subgraphs table) to know which images have a graph"
            raise DatasetInputError(msg)
        _require(subgraphs, "subgraphs", ("image_id",), "Pass the per-image subgraphs table.")
    bad_split = sorted(set(images["split"].astype(str)) - {*SPLITS, "excluded"})
    if bad_split:
        msg = f"images.split has unknown value(s) {bad_split}; expected {[*SPLITS, 'excluded']}"
        raise DatasetInputError(msg)

    usable = images[images["split"].isin(SPLITS)].copy()
    usable["image_id"] = usable["image_id"].astype(str)
    if stage == 2:
        usable = usable[usable["image_id"].isin(set(subgraphs["image_id"].astype(str)))]
    captions = captions.assign(image_id=captions["image_id"].astype(str))
    paths_in = paths.assign(image_id=paths["image_id"].astype(str)) if paths is not None else None
    positives = _positives(captions, paths_in, variant, max_paths_per_image)
    positives = positives.merge(usable[["image_id", "split", "path"]], on="image_id", how="inner")
    split_order = {s: i for i, s in enumerate(SPLITS)}
    type_order = {t: i for i, t in enumerate(PAIR_TYPES[variant])}
    positives = positives.assign(_s=positives["split"].map(split_order), _t=positives["pair_type"].map(type_order))
    positives = positives.sort_values(["_s", "image_id", "_t", "k"], kind="stable").reset_index(drop=True)

    records = pd.DataFrame(
        {
            "record_id": [
                f"s{stage}-{variant}-{i}-{t}-{k}"
                for i, t, k in zip(positives["image_id"], positives["pair_type"], positives["k"], strict=True)
            ],
            "stage": np.full(len(positives), stage, dtype=np.int64),
            "variant": variant,
            "image_id": positives["image_id"],
            "split": positives["split"],
            "instruction": [
                _pick(INSTRUCTIONS[stage][t], seed, stage, i, t)
                for i, t in zip(positives["image_id"], positives["pair_type"], strict=True)
            ],
            "image_path": positives["path"].astype(str),
            "positive": positives["positive"],
            "pair_type": positives["pair_type"],
        }
    )
    # Per-record rules drop before hard negatives are drawn, so no negative carries the text of a dropped record.
    rules = [
        _broken_rule(i, p, n)
        for i, p, n in zip(records["instruction"], records["positive"], positives["target_name"], strict=True)
    ]
    broken = np.array([r is not None for r in rules], dtype=bool)
    dropped = _dropped_table(records[broken], [r for r in rules if r is not None])
    _require_few_dropped(dropped, len(records), city=city, stage=stage, variant=variant, max_share=max_dropped_share)
    records = records[~broken].reset_index(drop=True)
    if hard_negatives:
        records["hard_negatives"] = _hard_negatives(
            records, usable, neg_min_m=neg_min_m, neg_max_m=neg_max_m, n_negatives=n_negatives, seed=seed
        )
    else:
        records["hard_negatives"] = [[] for _ in range(len(records))]
    logger.info(
        "built %d stage-%d %s training records for %d images (%s)",
        len(records),
        stage,
        variant,
        records["image_id"].nunique(),
        records_summary(records)["by_pair_type"],
    )
    return TrainingRecords(records=records[list(TRAINING_RECORD_COLUMNS)], dropped=dropped)


def _broken_rule(instruction: str, positive: str, target_name: object) -> tuple[str, str] | None:
    """The per-record rule a record breaks, with a detail, or ``None``; the one rule of :func:`query_leaks`."""
    if isinstance(target_name, str) and mentions_name(instruction, target_name):
        return RULE_NAMES_TARGET, f"target {target_name!r}"
    if mentions_name(instruction, positive):
        return RULE_HOLDS_POSITIVE, f"positive {positive[:60]!r}"
    return None


def _dropped_table(records: pd.DataFrame, rules: list[tuple[str, str]]) -> pd.DataFrame:
    table = records[["record_id", "stage", "variant", "image_id", "split", "pair_type"]].reset_index(drop=True)
    table["rule"] = [r for r, _ in rules]
    table["detail"] = [d for _, d in rules]
    return table[list(DROPPED_RECORD_COLUMNS)]


def _require_few_dropped(
    dropped: pd.DataFrame, total: int, *, city: str, stage: int, variant: str, max_share: float
) -> None:
    """Log what was dropped; raise when it is more than ``max_share`` of the build (see :data:`MAX_DROPPED_SHARE`)."""
    if dropped.empty:
        return
    by_rule = "; ".join(f"{rule}: {n}" for rule, n in dropped["rule"].value_counts().sort_index().items())
    examples = ", ".join(f"{r} ({d})" for r, d in zip(dropped["record_id"][:3], dropped["detail"][:3], strict=True))
    share = len(dropped) / total
    if share > max_share:
        msg = (
            f"{city}: {len(dropped)} of {total} stage-{stage} {variant} training records ({share:.1%}) break a "
            f"per-record rule ({by_rule}), over the {max_share:.0%} limit, e.g. {examples}. A share this high "
            "means the rule hits systematically: check recent edits to the instructions "
            "(dataset.records.INSTRUCTIONS) and the srp table's target names; the previous records stay in place"
        )
        raise IncompleteResultError(msg)
    logger.warning(
        "%s: dropped %d of %d stage-%d %s training records (%s), e.g. %s",
        city,
        len(dropped),
        total,
        stage,
        variant,
        by_rule,
        examples,
    )


def query_leaks(records: pd.DataFrame, target_names: list[str | None] | None = None) -> CheckOutcome:
    """
    No query contains its target: the instruction never contains the positive text, nor (for path records whose
    target names are given, aligned with ``records``) the target's name (whole words, as the SRP leak rule).
    """
    names = target_names if target_names is not None else [None] * len(records)
    leaking = []
    for record_id, instruction, positive, name in zip(
        records["record_id"], records["instruction"], records["positive"], names, strict=True
    ):
        if _broken_rule(instruction, positive, name) is not None:
            leaking.append(str(record_id))
    return CheckOutcome(not leaking, len(leaking), "0 records whose query contains their target", leaking)


def negatives_within_split(records: pd.DataFrame) -> CheckOutcome:
    """
    No hard negative crosses splits: every negative text is the positive of some record in the same split.

    A negative whose text is a positive only in other splits (or nowhere) is a violation.
    """
    splits_of_text: dict[str, set[str]] = {}
    for text, split in zip(records["positive"], records["split"], strict=True):
        splits_of_text.setdefault(text, set()).add(split)
    crossing = []
    for record_id, split, negatives in zip(
        records["record_id"], records["split"], records["hard_negatives"], strict=True
    ):
        if any(split not in splits_of_text.get(text, set()) for text in negatives):
            crossing.append(str(record_id))
    return CheckOutcome(not crossing, len(crossing), "0 records with a hard negative from another split", crossing)


def records_summary(records: pd.DataFrame) -> dict[str, object]:
    """Counts for asset metadata: records, images, by split, by pair type, records with hard negatives."""
    return {
        "records": len(records),
        "images": int(records["image_id"].nunique()),
        "by_split": {str(k): int(v) for k, v in records["split"].value_counts().sort_index().items()},
        "by_pair_type": {str(k): int(v) for k, v in records["pair_type"].value_counts().sort_index().items()},
        "with_hard_negatives": int(sum(len(n) > 0 for n in records["hard_negatives"])),
    }
