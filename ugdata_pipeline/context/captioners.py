"""Spatial context captioners (SCC): the shared request and table types, and the offline template twin.

Every captioner takes :class:`CaptionRequest` objects (an image, the text description of its subgraph, the
renderer's scene facts and the names that exist in the subgraph) and returns the ``captions`` table: ``image_id,
model, prompt_hash, image_caption, summarization, status, attempts, error, prompt_tokens, completion_tokens``.

* :class:`~ugdata_pipeline.context.openai_captioner.OpenAICompatibleCaptioner` (``context.openai_captioner``)
  talks to any chat-completions endpoint; its prompt and answer parsing live in ``context.caption_prompt``.
* :class:`TemplateCaptioner` writes a deterministic caption and summarization from the scene facts and the
  subgraph's places, with wording varied per image by a seeded hash; its rows say ``model = "template"``.

The quality gates of the table live in ``context.caption_quality``.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ugdata_pipeline.context.caption_prompt import build_prompt, parse_answer, prompt_hash
from ugdata_pipeline.context.describe import described_names_by_image
from ugdata_pipeline.errors import CaptionerConfigError, CaptionFormatError, CaptionInputError
from ugdata_pipeline.graph.text import compass_word, distance_phrase
from ugdata_pipeline.seeding import stable_choice
from ugdata_pipeline.tables import require_columns

__all__ = [
    "CAPTION_COLUMNS",
    "TEMPLATE_MODEL",
    "CaptionFormatError",
    "CaptionInputError",
    "CaptionPlace",
    "CaptionRequest",
    "CaptionRunStats",
    "Captioner",
    "CaptionerConfigError",
    "TemplateCaptioner",
    "build_caption_requests",
    "build_prompt",
    "captions_frame",
    "names_by_image",
    "parse_answer",
    "prompt_hash",
    "validate_requests",
]

#: Columns of the ``captions`` table, in order.
CAPTION_COLUMNS: tuple[str, ...] = (
    "image_id",
    "model",
    "prompt_hash",
    "image_caption",
    "summarization",
    "status",
    "attempts",
    "error",
    "prompt_tokens",
    "completion_tokens",
)
TEMPLATE_MODEL = "template"
TEMPLATE_VERSION = "template-v2"


# ----------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class CaptionPlace:
    """A named place of the image's subgraph, as seen from the image (metres, degrees clockwise from north)."""

    name: str
    kind: str
    category: str | None
    distance_m: float
    bearing_deg: float


@dataclass(frozen=True)
class CaptionRequest:
    """
    One image to caption.

    Parameters
    ----------
    image_id
        The manifest's ``image_id``.
    image_path
        The image file (absolute, or relative to the working directory).
    description
        Text description of the image's subgraph (``context.describe``); goes into the prompt.
    scene_facts
        The renderer's scene facts (``images.scene_facts`` decoded; ``{}`` for Mapillary).
    allowed_names
        Names of the places and streets in the image's subgraph: the only names a summarization may use.
    places
        Optional named places of the subgraph, nearest first, used by the template captioner.
    """

    image_id: str
    image_path: Path
    description: str
    scene_facts: Mapping[str, Any] = field(default_factory=dict)
    allowed_names: frozenset[str] = frozenset()
    places: tuple[CaptionPlace, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_id", str(self.image_id))
        object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "allowed_names", frozenset(str(n) for n in self.allowed_names if n))
        object.__setattr__(self, "places", tuple(self.places))


def build_caption_requests(
    images: pd.DataFrame,
    descriptions: Mapping[str, str] | pd.DataFrame,
    subgraph_nodes: pd.DataFrame | None,
    *,
    root: Path,
    skip_excluded: bool = True,
    max_places: int = 8,
) -> list[CaptionRequest]:
    """
    Caption requests from the images manifest, the subgraph descriptions and the ``subgraph_nodes`` table.

    Parameters
    ----------
    images
        Images manifest (``image_id``, ``path`` relative to ``root``, optional ``scene_facts`` JSON, ``split``).
    descriptions
        ``image_id`` -> subgraph description text, or the table of ``describe_subgraphs`` (``image_id``,
        ``description``); images without one get an empty description.
    subgraph_nodes
        The long ``subgraph_nodes`` table (``image_id, node_id, kind, name, category, dx_m, dy_m, distance_m,
        rank``); gives each image's allowed names and nearby places. ``None``: no names.
    root
        Storage root that ``images.path`` is relative to.
    skip_excluded
        Leave out images whose ``split`` is ``"excluded"`` (they are never used for training).
    max_places
        Nearest named places per image kept for the template captioner.
    """
    require_columns(
        images,
        ("image_id", "path"),
        table="images",
        fix="Pass the images manifest (image_id, path, scene_facts).",
        error=CaptionInputError,
    )
    if isinstance(descriptions, pd.DataFrame):
        descriptions = dict(zip(descriptions["image_id"].astype(str), descriptions["description"], strict=True))
    frame = images
    if skip_excluded and "split" in frame.columns:
        frame = frame[frame["split"] != "excluded"]
    names: dict[str, set[str]] = {}
    places: dict[str, list[CaptionPlace]] = defaultdict(list)
    if subgraph_nodes is not None and not subgraph_nodes.empty:
        named = subgraph_nodes[subgraph_nodes["name"].notna() & (subgraph_nodes["kind"] != "image")]
        names = names_by_image(named)
        nearest = named[named["kind"] != "street"].sort_values(["image_id", "distance_m"], kind="stable")
        nearest = nearest.groupby("image_id", sort=False).head(max_places)
        bearings = (
            np.degrees(np.arctan2(nearest["dx_m"].to_numpy(dtype=float), nearest["dy_m"].to_numpy(dtype=float))) % 360.0
        )
        categories = nearest["category"].astype(object).where(nearest["category"].notna(), None).tolist()
        for image_id, name, kind, category, distance, bearing in zip(
            nearest["image_id"].astype(str).tolist(),
            nearest["name"].astype(str).tolist(),
            nearest["kind"].astype(str).tolist(),
            categories,
            nearest["distance_m"].astype(float).tolist(),
            bearings.tolist(),
            strict=True,
        ):
            places[image_id].append(
                CaptionPlace(name, kind, None if category is None else str(category), distance, float(bearing))
            )
    requests = []
    for row in frame.itertuples(index=False):
        image_id = str(row.image_id)
        facts_raw = getattr(row, "scene_facts", "{}")
        facts = json.loads(facts_raw) if isinstance(facts_raw, str) and facts_raw else {}
        requests.append(
            CaptionRequest(
                image_id,
                Path(root) / str(row.path),
                descriptions.get(image_id, ""),
                facts,
                frozenset(names.get(image_id, set())),
                tuple(places.get(image_id, ())),
            )
        )
    return requests


def names_by_image(subgraph_nodes: pd.DataFrame) -> dict[str, set[str]]:
    """
    ``image_id`` -> the names in that image's subgraph (for :func:`hallucination_rate` and the template).

    The long ``subgraph_nodes`` table, grouped per image through the describer's own name rule
    (:func:`~ugdata_pipeline.context.describe.described_names`), so "a name of the subgraph" means one thing.
    """
    return described_names_by_image(subgraph_nodes)


def validate_requests(requests: Sequence[CaptionRequest], *, need_files: bool) -> None:
    """Raise :class:`CaptionInputError` for non-requests, repeated ``image_id`` s or (``need_files``) absent files."""
    seen: set[str] = set()
    duplicates = []
    for request in requests:
        if not isinstance(request, CaptionRequest):
            msg = f"caption requests must be CaptionRequest objects, got {type(request).__name__}"
            raise CaptionInputError(msg)
        if request.image_id in seen:
            duplicates.append(request.image_id)
        seen.add(request.image_id)
    if duplicates:
        msg = f"caption requests repeat image_id(s) {sorted(set(duplicates))[:5]}; pass each image once"
        raise CaptionInputError(msg)
    if need_files:
        absent = [str(r.image_path) for r in requests if not r.image_path.is_file()]
        if absent:
            msg = (
                f"{len(absent)} image file(s) do not exist, e.g. {absent[:3]}; run the imagery stage first or "
                "fix the storage root"
            )
            raise CaptionInputError(msg)


# ----------------------------------------------------------------------------------------------- interface


@runtime_checkable
class Captioner(Protocol):
    """What every captioner offers: a model label and ``caption_all``."""

    model: str

    def caption_all(
        self,
        requests: Sequence[CaptionRequest],
        *,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Caption every request; one row per request in the ``captions`` table layout."""
        ...


@dataclass
class CaptionRunStats:
    """Counters of the last ``caption_all`` run (for asset metadata)."""

    requested: int = 0
    cache_hits: int = 0
    api_calls: int = 0
    retries: int = 0
    reasks: int = 0
    done: int = 0
    failed: int = 0
    not_attempted: int = 0  # failed without a call this run: the circuit breaker had opened
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def captions_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows in the ``captions`` layout (:data:`CAPTION_COLUMNS`), with integer counters."""
    frame = pd.DataFrame(rows, columns=list(CAPTION_COLUMNS))
    for column in ("attempts", "prompt_tokens", "completion_tokens"):
        frame[column] = frame[column].fillna(0).astype("int64")
    return frame


# ----------------------------------------------------------------------------------------------- template captioner


def _pick(options: Sequence[str], seed: int, image_id: str, slot: str) -> str:
    """A deterministic choice among ``options`` for (seed, image, slot); stable across processes."""
    return stable_choice(options, seed, image_id, slot)


#: Phrasings of each template sentence; ``{placeholders}`` are filled from the scene facts and the subgraph.
_PHRASES: dict[str, tuple[str, ...]] = {
    "open_plain": (
        "A street-level view in the city.",
        "The camera looks along an urban street.",
        "This picture shows a city street from pedestrian height.",
        "A view from the pavement of a street.",
    ),
    "height": (", about {storeys} storeys high", ", roughly {height} m tall", ", with around {storeys} floors"),
    "built_dense": (
        "Buildings close in on both sides{height}.",
        "A continuous wall of façades lines the street{height}.",
        "Façades fill much of the frame{height}.",
    ),
    "built_some": (
        "Several buildings line the street{height}.",
        "A few buildings stand along the road{height}.",
        "Buildings appear at intervals{height}.",
    ),
    "built_sparse": (
        "Few buildings are in sight.",
        "The view is open, with little built frontage.",
        "Built frontage is sparse here.",
    ),
    "green_lush": (
        "Greenery is abundant, with {trees} softening the scene.",
        "The street feels leafy; {trees} are visible.",
        "Vegetation takes up a large share of the view, including {trees}.",
    ),
    "green_some": (
        "Some greenery breaks up the hard surfaces.",
        "A little vegetation is visible.",
        "A few trees or shrubs add some green.",
    ),
    "green_none": (
        "There is hardly any vegetation.",
        "Hard surfaces dominate, with almost no greenery.",
        "Little or no greenery can be seen.",
    ),
    "sky_open": (
        "A wide sky opens above the street.",
        "Much of the sky is visible, which makes the place feel open.",
        "The sky takes up a large part of the frame.",
    ),
    "sky_closed": (
        "The sky is mostly hidden.",
        "Little sky shows between the buildings.",
        "The view feels enclosed, with only a sliver of sky.",
    ),
    "visible": (
        "A {label} building stands {where}{dist}.",
        "{Where} is a {label} building{dist}.",
        "One can make out a {label} building {where}{dist}.",
    ),
    "unnamed": (
        "Besides, {unnamed} can be seen.",
        "The scene also includes {unnamed}.",
        "The view is completed by {unnamed}.",
    ),
    "s_open_street": (
        "The image is located on {street} in the spatial network.",
        "In the network, this view belongs to {street}.",
        "The scene sits on {street}, one of the streets of the surrounding network.",
        "This location lies along {street}.",
        "Within the street network, the camera is positioned on {street}.",
    ),
    "s_open_plain": (
        "The image lies within the described street network.",
        "This view belongs to the surrounding street network.",
    ),
    "s_place": (
        "{name} ({label}) lies {dist} to the {direction}.",
        "About {dist} {direction} of the camera is {name}, listed as {label}.",
        "{name}, a {label} place, is {dist} away to the {direction}.",
        "Heading {direction} for roughly {dist} leads to {name} ({label}).",
        "The network places {name} ({label}) {dist} to the {direction}.",
    ),
    "s_names": ("Nearby places in the network include {names}.", "The network around it also holds {names}."),
    "s_seen": (
        "{name} is visible in the image, which ties the view to the network.",
        "Seeing {name} confirms the position in the network.",
        "The presence of {name} in the frame anchors the view in the network.",
        "{name}, which appears in the picture, is also a node of the network.",
    ),
    "s_mood": (
        "Overall the surroundings feel {character}.",
        "The setting reads as {character} for people on foot.",
        "For wellbeing, the place comes across as {character}.",
        "A pedestrian would likely experience the area as {character}.",
        "The general impression of the area is {character}.",
    ),
}
_SIDE_PHRASES = {
    "ahead": ("straight ahead", "ahead of the camera", "further along the street"),
    "left": ("on the left", "to the left", "along the left-hand side"),
    "right": ("on the right", "to the right", "along the right-hand side"),
}


def _fraction(facts: Mapping[str, Any], key: str) -> float:
    value = facts.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def _label(category: str | None, kind: str) -> str:
    return (category or kind or "place").replace("_", " ")


class TemplateCaptioner:
    """
    Offline captioner: a deterministic caption and summarization from scene facts and the subgraph's places.

    Wording varies per image (several phrasings per sentence, chosen by a seeded hash of ``image_id``), the
    same inputs always give the same text, and a summarization only names places in the request's
    ``allowed_names``. Rows are labelled ``model = "template"``.

    Parameters
    ----------
    seed
        Changes which phrasing each image gets.
    """

    model = TEMPLATE_MODEL

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.last_stats = CaptionRunStats()

    def caption_all(
        self,
        requests: Sequence[CaptionRequest],
        *,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Caption every request (``cache_dir`` is accepted for interface parity and unused: it is instant)."""
        del cache_dir
        requests = list(requests)
        validate_requests(requests, need_files=False)
        started = time.perf_counter()
        digest = prompt_hash(f"{TEMPLATE_VERSION}\nseed={self.seed}")
        rows = []
        for index, request in enumerate(requests, start=1):
            caption, summary = self.caption_one(request)
            rows.append(
                {
                    "image_id": request.image_id,
                    "model": self.model,
                    "prompt_hash": digest,
                    "image_caption": caption,
                    "summarization": summary,
                    "status": "done",
                    "attempts": 1,
                    "error": "",
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                }
            )
            if progress is not None:
                progress(index, len(requests))
        self.last_stats = CaptionRunStats(
            requested=len(requests), done=len(requests), wall_s=round(time.perf_counter() - started, 3)
        )
        return captions_frame(rows)

    def caption_one(self, request: CaptionRequest) -> tuple[str, str]:
        """``(image_caption, summarization)`` for one request."""
        return self._caption(request), self._summary(request)

    def _say(self, request: CaptionRequest, phrase: str, slot: str | None = None, **values: object) -> str:
        template = _pick(_PHRASES[phrase], self.seed, request.image_id, slot or phrase)
        return template.format(**values)

    def _caption(self, r: CaptionRequest) -> str:
        facts = r.scene_facts or {}
        # The image caption says what can be seen and names nothing: it is the generic caption the baseline trains
        # on, and names of streets and places belong to the spatially grounded summarization.
        out = [self._say(r, "open_plain", "open")]
        height = facts.get("mean_building_height_m")
        height_text = ""
        if isinstance(height, int | float) and math.isfinite(height) and height > 0:
            height_text = self._say(r, "height", storeys=max(1, round(float(height) / 3.0)), height=round(height))
        buildings = _fraction(facts, "building_fraction")
        built = "built_dense" if buildings >= 0.35 else "built_some" if buildings >= 0.12 else "built_sparse"
        out.append(self._say(r, built, "built", height=height_text))
        green, trees = _fraction(facts, "green_fraction"), int(facts.get("tree_count") or 0)
        if green >= 0.2 or trees >= 5:
            out.append(self._say(r, "green_lush", "green", trees=f"{trees} trees" if trees else "trees"))
        else:
            out.append(self._say(r, "green_some" if green >= 0.05 or trees else "green_none", "green"))
        sky = _fraction(facts, "sky_fraction")
        if sky >= 0.4 or sky < 0.15:
            out.append(self._say(r, "sky_open" if sky >= 0.4 else "sky_closed", "sky"))
        visible = [v for v in facts.get("visible", []) if isinstance(v, Mapping)]
        for index, item in enumerate([v for v in visible if v.get("name")][:3]):
            side = str(item.get("side") or "ahead")
            where = _pick(_SIDE_PHRASES.get(side, _SIDE_PHRASES["ahead"]), self.seed, r.image_id, f"side{index}")
            dist = item.get("distance_m")
            dist_text = f" about {distance_phrase(float(dist))} away" if isinstance(dist, int | float) else ""
            out.append(
                self._say(
                    r,
                    "visible",
                    f"visible{index}",
                    where=where,
                    Where=where.capitalize(),
                    dist=dist_text,
                    label=_label(item.get("category"), str(item.get("kind") or "place")),
                )
            )
        unnamed = sum(1 for v in visible if not v.get("name") and v.get("kind") == "building")
        if unnamed:
            noun = "building" if unnamed == 1 else "buildings"
            out.append(self._say(r, "unnamed", unnamed=f"{unnamed} unnamed {noun}"))
        return " ".join(out)

    def _summary(self, r: CaptionRequest) -> str:
        facts = r.scene_facts or {}
        allowed = r.allowed_names
        street = facts.get("street_name")
        # Only names the subgraph holds are used, so the template never fails the grounding gate.
        if street and street in allowed:
            out = [self._say(r, "s_open_street", "s_open", street=street)]
        else:
            out = [self._say(r, "s_open_plain", "s_open")]
        places = [p for p in r.places if p.name in allowed][:3]
        for index, place in enumerate(places):
            out.append(
                self._say(
                    r,
                    "s_place",
                    f"s_place{index}",
                    name=place.name,
                    dist=distance_phrase(place.distance_m),
                    label=_label(place.category, place.kind),
                    direction=compass_word(place.bearing_deg),
                )
            )
        others = sorted(n for n in allowed if n != street)[:3]
        if not places and others:
            out.append(self._say(r, "s_names", names=", ".join(others)))
        seen = [v["name"] for v in facts.get("visible", []) if isinstance(v, Mapping) and v.get("name") in allowed]
        if seen:
            out.append(self._say(r, "s_seen", name=seen[0]))
        green, buildings = _fraction(facts, "green_fraction"), _fraction(facts, "building_fraction")
        character = "green and open" if green >= 0.2 else "densely built" if buildings >= 0.35 else "mixed"
        out.append(self._say(r, "s_mood", character=character))
        return " ".join(out)
