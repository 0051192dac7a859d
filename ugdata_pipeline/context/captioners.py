"""Spatial context captioners (SCC): one interface, an online OpenAI-compatible model and an offline template.

Both captioners take :class:`CaptionRequest` objects (an image, the text description of its subgraph, the
renderer's scene facts and the names that exist in the subgraph) and return the ``captions`` table: ``image_id,
model, prompt_hash, image_caption, summarization, status, attempts, error, prompt_tokens, completion_tokens``.

* :class:`OpenAICompatibleCaptioner` talks to any chat-completions endpoint (OpenAI, vLLM, DashScope/Qwen, Ollama)
  through the ``openai`` async client. Unlike the reference (strictly sequential, a fixed 6 s sleep, no retries,
  failures never retried), it runs a bounded pool of workers under a requests/min and a tokens/min token bucket,
  retries 429 (honouring ``Retry-After``), 5xx, timeouts and connection errors with exponential backoff and
  jitter, re-asks once when the answer lacks the two sections, and keeps a persistent cache keyed by
  (image bytes, prompt hash, model): a finished image is never paid for twice, a failed one is retried on the
  next run with its attempts carried over.
* :class:`TemplateCaptioner` writes a deterministic caption and summarization from the scene facts and the
  subgraph's places, with wording varied per image by a seeded hash; its rows say ``model = "template"``.

Quality gates (:func:`both_sections_share`, :func:`hallucination_rate`, :func:`homogeneity`) return a
:class:`GateResult` whose ``metadata()`` carries the figures for asset checks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ugdata_pipeline.context.describe import described_names_by_image
from ugdata_pipeline.errors import UgdataError
from ugdata_pipeline.graph.text import compass_word, distance_phrase
from ugdata_pipeline.graph.validate import CheckOutcome
from ugdata_pipeline.throttle import AsyncTokenBucket, RetryPolicy, parse_retry_after, redact

logger = logging.getLogger(__name__)

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
    "GateResult",
    "OpenAICompatibleCaptioner",
    "TemplateCaptioner",
    "both_sections_share",
    "build_caption_requests",
    "build_prompt",
    "find_place_mentions",
    "hallucination_rate",
    "homogeneity",
    "names_by_image",
    "parse_answer",
    "prompt_hash",
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
#: Bump when the prompt wording changes in a way the text itself does not show (it is part of the prompt hash).
PROMPT_VERSION = "scc-v2"
TEMPLATE_VERSION = "template-v2"
#: Section length bounds (characters) for a valid answer; shorter is a refusal or a stub, longer a runaway.
MIN_SECTION_CHARS = 20
MAX_SECTION_CHARS = 6000
#: Rough token cost of one image for the tokens/min budget (OpenAI's high-detail 512 px tile is 765 tokens).
IMAGE_TOKEN_ESTIMATE = 765
_CHARS_PER_TOKEN = 4

_IMAGE_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif"}  # fmt: skip


class CaptionInputError(UgdataError, ValueError):
    """Caption requests (or a captioner option) are invalid."""


class CaptionerConfigError(UgdataError, ValueError):
    """A captioner cannot be configured (missing API key, bad limits)."""


class CaptionFormatError(UgdataError, ValueError):
    """A model answer lacks the two named sections or breaks their length bounds."""


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
    missing = [c for c in ("image_id", "path") if c not in images.columns]
    if missing:
        msg = f"images is missing column(s) {missing}; pass the images manifest (image_id, path, scene_facts)"
        raise CaptionInputError(msg)
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
        bearings = np.degrees(np.arctan2(nearest["dx_m"].to_numpy(dtype=float),
                                         nearest["dy_m"].to_numpy(dtype=float))) % 360.0  # fmt: skip
        categories = nearest["category"].astype(object).where(nearest["category"].notna(), None).tolist()
        for image_id, name, kind, category, distance, bearing in zip(
                nearest["image_id"].astype(str).tolist(), nearest["name"].astype(str).tolist(),
                nearest["kind"].astype(str).tolist(), categories, nearest["distance_m"].astype(float).tolist(),
                bearings.tolist(), strict=True):  # fmt: skip
            places[image_id].append(CaptionPlace(name, kind, None if category is None else str(category), distance,
                                                 float(bearing)))  # fmt: skip
    requests = []
    for row in frame.itertuples(index=False):
        image_id = str(row.image_id)
        facts_raw = getattr(row, "scene_facts", "{}")
        facts = json.loads(facts_raw) if isinstance(facts_raw, str) and facts_raw else {}
        requests.append(CaptionRequest(image_id, Path(root) / str(row.path), descriptions.get(image_id, ""),
                                       facts, frozenset(names.get(image_id, set())),
                                       tuple(places.get(image_id, ()))))  # fmt: skip
    return requests


def names_by_image(subgraph_nodes: pd.DataFrame) -> dict[str, set[str]]:
    """
    ``image_id`` -> the names in that image's subgraph (for :func:`hallucination_rate` and the template).

    The long ``subgraph_nodes`` table, grouped per image through the describer's own name rule
    (:func:`~ugdata_pipeline.context.describe.described_names`), so "a name of the subgraph" means one thing.
    """
    return described_names_by_image(subgraph_nodes)


def _validate_requests(requests: Sequence[CaptionRequest], *, need_files: bool) -> None:
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
            msg = (f"{len(absent)} image file(s) do not exist, e.g. {absent[:3]}; run the imagery stage first or "
                   "fix the storage root")  # fmt: skip
            raise CaptionInputError(msg)


# ----------------------------------------------------------------------------------------------- prompt + parsing

SYSTEM_MESSAGE = "You are a helpful assistant that writes detailed captions for street images with spatial context."

_INSTRUCTIONS = """\
One street-level image taken inside the area described above is attached. Write two parts.

1. **Image:** a detailed image caption of what can be seen, without naming any street or place (names belong in
the summarization): the kind of street and where the camera stands; architecture; kinds of businesses, signage and
landmarks; vegetation and water; cues to the acoustic environment and to odour sources; colours, materials and
textures that shape thermal and psychological comfort.
2. **Summarization:** a summary grounded in the spatial context: neighbourhood cues; street features that match the
network (crossings, width, street type); signs of proximity to the listed places; regional architectural style;
signage or landmarks that place the image in the network; the overall multisensory wellbeing quality.

Refer only to places and streets named in the network description; never invent names."""

_FORMAT_RULES_SECTIONS = """\
Answer format: start with the marker **Image:** followed by the caption, then the marker **Summarization:**
followed by the summary. Example:
**Image:** A narrow street lined with four-storey stone buildings; a cafe terrace on the left ...
**Summarization:** The view sits on the street named in the network, a short walk from the listed park ..."""

_FORMAT_RULES_JSON = """\
Answer with a JSON object with two string fields: "image_caption" (the caption) and "summarization" (the
summary), and nothing else."""

FORMAT_REMINDER = (
    "Your previous answer did not follow the required format. Answer again with exactly two sections: the marker "
    "**Image:** followed by the image caption, then the marker **Summarization:** followed by the summarization, "
    "each at least a full sentence."
)
FORMAT_REMINDER_JSON = (
    'Your previous answer was not the required JSON. Answer again with only a JSON object {"image_caption": ..., '
    '"summarization": ...}, both fields full sentences.'
)

#: JSON schema sent as ``response_format`` when the endpoint supports structured output.
ANSWER_JSON_SCHEMA: dict[str, Any] = {
    "name": "spatial_context_caption",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"image_caption": {"type": "string"}, "summarization": {"type": "string"}},
        "required": ["image_caption", "summarization"],
        "additionalProperties": False,
    },
}


def build_prompt(description: str, *, json_schema: bool = False) -> str:
    """
    The user prompt for one image: role line, the subgraph description, the two-part instructions, format rules.

    Parameters
    ----------
    description
        Text description of the image's subgraph.
    json_schema
        Ask for a JSON object (``image_caption``, ``summarization``) instead of the two marked sections.
    """
    rules = _FORMAT_RULES_JSON if json_schema else _FORMAT_RULES_SECTIONS
    return (
        "You are a vision model captioning an urban street image inside a spatial network context.\n\n"
        f"## Comprehensive Spatial Context / Network Structure\n{description.strip()}\n\n"
        f"## Instructions\n{_INSTRUCTIONS}\n\n{rules}"
    )


def prompt_hash(prompt_text: str) -> str:
    """16 hex digits of SHA-256 over the prompt version and text: identifies the prompt in the captions table."""
    return hashlib.sha256(f"{PROMPT_VERSION}\n{prompt_text}".encode()).hexdigest()[:16]


def _marker(word: str) -> str:
    """A section marker: ``**Word:**`` / ``**Word**:`` / ``Word:`` / a ``## Word`` heading line / ``**Word**``."""
    return (rf"(?:\*\*\s*{word}\s*:?\s*\*\*\s*:?|{word}\s*:\s*\**|^[ \t]*#+[ \t]*{word}[ \t]*:?[ \t]*$)")


_IMAGE_MARKER = re.compile(r"\A\s*" + _marker(r"(?:image(?:\s+caption)?|caption)") + r"\s*",
                           re.IGNORECASE | re.MULTILINE)  # fmt: skip
_SUMMARY_MARKER = re.compile(r"(?:^|(?<=\s))[ \t]*" + _marker(r"summari[sz]ation") + r"[ \t]*",
                             re.IGNORECASE | re.MULTILINE)  # fmt: skip


def _check_section(name: str, text: str) -> str:
    text = text.strip()
    if len(text) < MIN_SECTION_CHARS:
        msg = f"the {name} section has {len(text)} characters, fewer than {MIN_SECTION_CHARS}"
        raise CaptionFormatError(msg)
    if len(text) > MAX_SECTION_CHARS:
        msg = f"the {name} section has {len(text)} characters, more than {MAX_SECTION_CHARS}"
        raise CaptionFormatError(msg)
    return text


def parse_answer(text: str | None) -> tuple[str, str]:
    """
    Split a model answer into ``(image_caption, summarization)``.

    Accepts the marked-section form (``**Image:** ... **Summarization:** ...``, also as headings or without the
    bold) and the JSON form (``{"image_caption": ..., "summarization": ...}``, optionally in a code fence).
    Markers are removed from the returned texts.

    Raises
    ------
    CaptionFormatError
        When the summarization marker (or a JSON field) is missing, or a section is shorter than
        :data:`MIN_SECTION_CHARS` or longer than :data:`MAX_SECTION_CHARS` characters.
    """
    if text is None or not text.strip():
        msg = "the answer is empty"
        raise CaptionFormatError(msg)
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.DOTALL)
    candidate = fenced.group(1) if fenced else stripped
    if candidate.startswith("{"):
        try:
            payload = json.loads(candidate)
        except json.JSONDecodeError as exc:
            msg = f"the answer looks like JSON but does not parse ({exc.msg})"
            raise CaptionFormatError(msg) from exc
        if not isinstance(payload, dict) or not all(
            isinstance(payload.get(k), str) for k in ("image_caption", "summarization")
        ):
            msg = "the JSON answer lacks the string fields 'image_caption' and 'summarization'"
            raise CaptionFormatError(msg)
        return _check_section("image caption", payload["image_caption"]), _check_section(
            "summarization", payload["summarization"]
        )
    match = _SUMMARY_MARKER.search(stripped)
    if match is None:
        msg = "the answer has no **Summarization:** section"
        raise CaptionFormatError(msg)
    caption = _IMAGE_MARKER.sub("", stripped[: match.start()], count=1)
    summary = stripped[match.end() :]
    return _check_section("image caption", caption), _check_section("summarization", summary)


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(CAPTION_COLUMNS))
    for column in ("attempts", "prompt_tokens", "completion_tokens"):
        frame[column] = frame[column].fillna(0).astype("int64")
    return frame


# ----------------------------------------------------------------------------------------------- cache


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class _CaptionCache:
    """One JSON file per (image bytes, prompt hash, model): ``<key>.json`` for done, ``<key>.failed.json`` else."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None

    @staticmethod
    def key(image_sha256: str, prompt_digest: str, model: str) -> str:
        return hashlib.sha256(f"{image_sha256}\n{prompt_digest}\n{model}".encode()).hexdigest()

    def _path(self, key: str, suffix: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}{suffix}"

    def _read(self, key: str, suffix: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        path = self._path(key, suffix)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A torn or corrupt entry is treated as absent: the image is captioned again.
            logger.warning("ignoring unreadable caption cache entry %s", path)
            return None

    def done(self, key: str) -> dict[str, Any] | None:
        return self._read(key, ".json")

    def failed(self, key: str) -> dict[str, Any] | None:
        return self._read(key, ".failed.json")

    def save(self, key: str, row: dict[str, Any]) -> None:
        if self.root is None:
            return
        if row["status"] == "done":
            _atomic_write_text(self._path(key, ".json"), json.dumps(row, ensure_ascii=False))
            self._path(key, ".failed.json").unlink(missing_ok=True)
        else:
            _atomic_write_text(self._path(key, ".failed.json"), json.dumps(row, ensure_ascii=False))


# ----------------------------------------------------------------------------------------------- online captioner

_RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass
class _Job:
    request: CaptionRequest
    prompt: str
    prompt_digest: str
    key: str
    prior_attempts: int

    def data_url(self) -> str:
        """The image as a base64 data URL, read when the request is sent (never all images at once)."""
        mime = _IMAGE_MIME.get(self.request.image_path.suffix.lower(), "image/png")
        return f"data:{mime};base64,{base64.b64encode(self.request.image_path.read_bytes()).decode('ascii')}"


class OpenAICompatibleCaptioner:
    """
    Captions through an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, DashScope/Qwen, Ollama).

    Parameters
    ----------
    model
        Model name sent to the endpoint (e.g. ``"qwen-vl-max-latest"``, ``"gpt-4.1-mini"``).
    base_url
        Endpoint base URL (``.../v1``); default the environment variable ``OPENAI_BASE_URL``, else OpenAI's.
    api_key
        API key; default the environment variable ``OPENAI_API_KEY``. Local servers that need none accept any
        value (set ``OPENAI_API_KEY=EMPTY``). Never logged nor written to errors.
    concurrency
        Requests in flight at once (workers).
    requests_per_minute, tokens_per_minute
        Token-bucket limits; tokens count the prompt estimate plus ``max_tokens`` (what providers reserve).
        ``None``: no limit of that kind.
    max_attempts
        API calls per image per run, the format re-ask included.
    timeout_s
        Seconds before one call is abandoned (then retried).
    json_schema
        Ask for a JSON object through ``response_format`` (endpoints with structured output) instead of
        marked sections.
    temperature, max_tokens
        Sampling settings (the reference used 0.2 and 1300).
    retry_policy
        Backoff timing; default :class:`~ugdata_pipeline.throttle.RetryPolicy` with ``max_attempts``.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 16,
        requests_per_minute: float | None = 600.0,
        tokens_per_minute: float | None = None,
        max_attempts: int = 5,
        timeout_s: float = 60.0,
        json_schema: bool = False,
        temperature: float = 0.2,
        max_tokens: int = 1300,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if not model or not str(model).strip():
            msg = "`model` must name the endpoint's model, e.g. 'qwen-vl-max-latest'"
            raise CaptionerConfigError(msg)
        if concurrency < 1:
            msg = f"`concurrency` must be >= 1, got {concurrency!r}"
            raise CaptionerConfigError(msg)
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value <= 0:
                msg = f"`{name}` must be positive or None (no limit), got {value!r}"
                raise CaptionerConfigError(msg)
        if timeout_s <= 0:
            msg = f"`timeout_s` must be positive, got {timeout_s!r}"
            raise CaptionerConfigError(msg)
        self.model = str(model)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self._api_key:
            msg = ("no API key for the captioner: set the environment variable OPENAI_API_KEY (any value, e.g. "
                   "EMPTY, for local servers such as vLLM or Ollama) or pass api_key")  # fmt: skip
            raise CaptionerConfigError(msg)
        self.concurrency = int(concurrency)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.timeout_s = float(timeout_s)
        self.json_schema = bool(json_schema)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=max_attempts)
        self.max_attempts = self.retry_policy.max_attempts
        self.last_stats = CaptionRunStats()

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"OpenAICompatibleCaptioner(model={self.model!r}, base_url={self.base_url!r})"

    # -- public ----------------------------------------------------------------------------------------

    def caption_all(
        self,
        requests: Sequence[CaptionRequest],
        *,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """
        Caption every request, reusing the cache; returns the ``captions`` table (request order).

        Finished images are written to ``cache_dir`` one by one as they complete, so a killed run loses no
        finished work and a rerun calls the endpoint only for images not yet done (failed ones included).

        Parameters
        ----------
        requests
            Images to caption (unique ``image_id``; files must exist).
        cache_dir
            Persistent cache folder; ``None`` keeps nothing between runs.
        progress
            Called with ``(finished, total)`` after each image.
        """
        return asyncio.run(self.acaption_all(requests, cache_dir=cache_dir, progress=progress))

    async def acaption_all(
        self,
        requests: Sequence[CaptionRequest],
        *,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Async form of :meth:`caption_all`, for callers that already run an event loop."""
        import openai  # deferred: the template deployment never needs the client

        requests = list(requests)
        _validate_requests(requests, need_files=True)
        started = time.perf_counter()
        stats = CaptionRunStats(requested=len(requests))
        self.last_stats = stats
        cache = _CaptionCache(cache_dir)
        results: dict[str, dict[str, Any]] = {}
        jobs: list[_Job] = []
        for request in requests:
            job = self._job(request, cache)
            cached = cache.done(job.key)
            if cached is not None:
                cached = {**cached, "image_id": request.image_id}
                results[request.image_id] = cached
                stats.cache_hits += 1
            else:
                jobs.append(job)
        total, finished = len(requests), len(results)
        if progress is not None and finished:
            progress(finished, total)
        logger.info("captioning %d image(s) with %s: %d from cache, %d to request", total, self.model,
                    stats.cache_hits, len(jobs))  # fmt: skip

        request_bucket = (AsyncTokenBucket(self.requests_per_minute / 60.0)
                          if self.requests_per_minute else None)  # fmt: skip
        token_bucket = (AsyncTokenBucket(self.tokens_per_minute / 60.0, capacity=self.tokens_per_minute / 6.0)
                        if self.tokens_per_minute else None)  # fmt: skip
        queue: asyncio.Queue[_Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)

        client = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                    timeout=self.timeout_s)  # fmt: skip

        async def worker() -> None:
            nonlocal finished
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                row = await self._caption_one(client, openai, job, request_bucket, token_bucket, stats)
                cache.save(job.key, row)
                results[job.request.image_id] = row
                finished += 1
                if progress is not None:
                    progress(finished, total)

        try:
            workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, max(1, len(jobs))))]
            await asyncio.gather(*workers)
        finally:
            await client.close()
        rows = [results[r.image_id] for r in requests]
        frame = _frame(rows)
        stats.done = int((frame["status"] == "done").sum())
        stats.failed = int((frame["status"] == "failed").sum())
        stats.wall_s = round(time.perf_counter() - started, 3)
        logger.info("captioning finished: %d done, %d failed, %d API calls, %d retries, %d re-asks in %.1f s",
                    stats.done, stats.failed, stats.api_calls, stats.retries, stats.reasks, stats.wall_s)  # fmt: skip
        return frame

    # -- internals -------------------------------------------------------------------------------------

    def _job(self, request: CaptionRequest, cache: _CaptionCache) -> _Job:
        image_sha256 = hashlib.sha256(request.image_path.read_bytes()).hexdigest()
        prompt = build_prompt(request.description, json_schema=self.json_schema)
        digest = prompt_hash(prompt)
        key = _CaptionCache.key(image_sha256, digest, self.model)
        failed = cache.failed(key)
        prior = int(failed.get("attempts", 0)) if failed else 0
        return _Job(request, prompt, digest, key, prior)

    def _estimated_tokens(self, prompt: str) -> float:
        return len(prompt) / _CHARS_PER_TOKEN + IMAGE_TOKEN_ESTIMATE + self.max_tokens

    async def _caption_one(self, client, openai, job: _Job, request_bucket, token_bucket,
                           stats: CaptionRunStats) -> dict[str, Any]:  # fmt: skip
        chat_completion_type = openai.types.chat.ChatCompletion
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_MESSAGE},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": job.data_url()}},
                                         {"type": "text", "text": job.prompt}]},  # fmt: skip
        ]
        extra: dict[str, Any] = {}
        if self.json_schema:
            extra["response_format"] = {"type": "json_schema", "json_schema": ANSWER_JSON_SCHEMA}
        attempts = prompt_tokens = completion_tokens = 0
        reasked = False
        error = ""
        image_id = job.request.image_id
        while attempts < self.max_attempts:
            attempts += 1
            if request_bucket is not None:
                await request_bucket.acquire(1)
            if token_bucket is not None:
                await token_bucket.acquire(self._estimated_tokens(job.prompt))
            stats.api_calls += 1
            retry_after: float | None = None
            try:
                # The client's documented raw ``post`` skips its recursive parameter transform (about 3 ms of
                # CPU per call, a third of the client's cost at 100 calls/s); errors and parsing are unchanged.
                response = await client.post("/chat/completions", cast_to=chat_completion_type, body={
                    "model": self.model, "messages": messages, "temperature": self.temperature,
                    "max_tokens": self.max_tokens, **extra,
                })  # fmt: skip
            except openai.APIStatusError as exc:
                error = f"HTTP {exc.status_code}: {self._safe(exc)}"
                if exc.status_code not in _RETRYABLE_STATUS and exc.status_code < 500:
                    logger.warning("caption %s: %s (not retryable)", image_id, error)
                    break
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
            except openai.APITimeoutError:
                error = f"timeout after {self.timeout_s:g} s"
            except openai.APIConnectionError as exc:
                error = f"connection error: {self._safe(exc)}"
            except (openai.APIError, ValueError) as exc:  # e.g. a 200 whose body is not JSON (a proxy's error page)
                error = f"unreadable response ({type(exc).__name__}): {self._safe(exc)}"
            else:
                usage = getattr(response, "usage", None)
                if usage is not None:
                    prompt_tokens += int(usage.prompt_tokens or 0)
                    completion_tokens += int(usage.completion_tokens or 0)
                text = response.choices[0].message.content if response.choices else None
                try:
                    caption, summary = parse_answer(text)
                except CaptionFormatError as exc:
                    error = f"malformed answer: {exc}"
                    if reasked:
                        break
                    # One re-ask in the same conversation, with the model's own answer and a format reminder.
                    reasked = True
                    stats.reasks += 1
                    messages = [*messages, {"role": "assistant", "content": text or ""},
                                {"role": "user",
                                 "content": FORMAT_REMINDER_JSON if self.json_schema else FORMAT_REMINDER}]  # fmt: skip
                    logger.info("caption %s: %s; re-asking once", image_id, exc)
                    continue
                stats.prompt_tokens += prompt_tokens
                stats.completion_tokens += completion_tokens
                return self._row(job, caption, summary, "done", attempts, "", prompt_tokens, completion_tokens)
            if attempts >= self.max_attempts:
                break
            delay = self.retry_policy.delay_s(attempts, retry_after)
            stats.retries += 1
            logger.info("caption %s: attempt %d failed (%s); retrying in %.2f s", image_id, attempts, error, delay)
            await asyncio.sleep(delay)
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        logger.warning("caption %s failed after %d attempt(s): %s", image_id, attempts, error)
        return self._row(job, None, None, "failed", attempts, error, prompt_tokens, completion_tokens)

    def _safe(self, exc: BaseException) -> str:
        return redact(str(exc), self._api_key)[:300]

    def _row(self, job: _Job, caption: str | None, summary: str | None, status: str, attempts: int, error: str,
             prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:  # fmt: skip
        return {
            "image_id": job.request.image_id,
            "model": self.model,
            "prompt_hash": job.prompt_digest,
            "image_caption": caption,
            "summarization": summary,
            "status": status,
            "attempts": job.prior_attempts + attempts,
            "error": redact(error, self._api_key),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }


# ----------------------------------------------------------------------------------------------- template captioner


def _pick(options: Sequence[str], seed: int, image_id: str, slot: str) -> str:
    """A deterministic choice among ``options`` for (seed, image, slot); stable across processes."""
    digest = hashlib.sha256(f"{seed}\x1f{image_id}\x1f{slot}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


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
    "built_sparse": ("Few buildings are in sight.", "The view is open, with little built frontage.",
                     "Built frontage is sparse here."),  # fmt: skip
    "green_lush": (
        "Greenery is abundant, with {trees} softening the scene.",
        "The street feels leafy; {trees} are visible.",
        "Vegetation takes up a large share of the view, including {trees}.",
    ),
    "green_some": ("Some greenery breaks up the hard surfaces.", "A little vegetation is visible.",
                   "A few trees or shrubs add some green."),  # fmt: skip
    "green_none": ("There is hardly any vegetation.", "Hard surfaces dominate, with almost no greenery.",
                   "Little or no greenery can be seen."),  # fmt: skip
    "sky_open": ("A wide sky opens above the street.", "Much of the sky is visible, which makes the place feel open.",
                 "The sky takes up a large part of the frame."),  # fmt: skip
    "sky_closed": ("The sky is mostly hidden.", "Little sky shows between the buildings.",
                   "The view feels enclosed, with only a sliver of sky."),  # fmt: skip
    "visible": (
        "A {label} building stands {where}{dist}.",
        "{Where} is a {label} building{dist}.",
        "One can make out a {label} building {where}{dist}.",
    ),
    "unnamed": ("Besides, {unnamed} can be seen.", "The scene also includes {unnamed}.",
                "The view is completed by {unnamed}."),  # fmt: skip
    "s_open_street": (
        "The image is located on {street} in the spatial network.",
        "In the network, this view belongs to {street}.",
        "The scene sits on {street}, one of the streets of the surrounding network.",
        "This location lies along {street}.",
        "Within the street network, the camera is positioned on {street}.",
    ),
    "s_open_plain": ("The image lies within the described street network.",
                     "This view belongs to the surrounding street network."),  # fmt: skip
    "s_place": (
        "{name} ({label}) lies {dist} to the {direction}.",
        "About {dist} {direction} of the camera is {name}, listed as {label}.",
        "{name}, a {label} place, is {dist} away to the {direction}.",
        "Heading {direction} for roughly {dist} leads to {name} ({label}).",
        "The network places {name} ({label}) {dist} to the {direction}.",
    ),
    "s_names": ("Nearby places in the network include {names}.", "The network around it also holds {names}."),
    "s_seen": ("{name} is visible in the image, which ties the view to the network.",
               "Seeing {name} confirms the position in the network.",
               "The presence of {name} in the frame anchors the view in the network.",
               "{name}, which appears in the picture, is also a node of the network."),  # fmt: skip
    "s_mood": ("Overall the surroundings feel {character}.", "The setting reads as {character} for people on foot.",
               "For wellbeing, the place comes across as {character}.",
               "A pedestrian would likely experience the area as {character}.",
               "The general impression of the area is {character}."),  # fmt: skip
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
        _validate_requests(requests, need_files=False)
        started = time.perf_counter()
        digest = prompt_hash(f"{TEMPLATE_VERSION}\nseed={self.seed}")
        rows = []
        for index, request in enumerate(requests, start=1):
            caption, summary = self.caption_one(request)
            rows.append({"image_id": request.image_id, "model": self.model, "prompt_hash": digest,
                         "image_caption": caption, "summarization": summary, "status": "done", "attempts": 1,
                         "error": "", "prompt_tokens": 0, "completion_tokens": 0})  # fmt: skip
            if progress is not None:
                progress(index, len(requests))
        self.last_stats = CaptionRunStats(requested=len(requests), done=len(requests),
                                          wall_s=round(time.perf_counter() - started, 3))  # fmt: skip
        return _frame(rows)

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
            out.append(self._say(r, "visible", f"visible{index}", where=where, Where=where.capitalize(), dist=dist_text,
                                 label=_label(item.get("category"), str(item.get("kind") or "place"))))  # fmt: skip
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
            out.append(self._say(r, "s_place", f"s_place{index}", name=place.name,
                                 dist=distance_phrase(place.distance_m), label=_label(place.category, place.kind),
                                 direction=compass_word(place.bearing_deg)))  # fmt: skip
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


# ----------------------------------------------------------------------------------------------- quality gates


@dataclass(frozen=True)
class GateResult:
    """A quality gate: the pass/fail :class:`CheckOutcome` plus the figures behind it."""

    outcome: CheckOutcome
    figures: dict[str, float | int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome.passed

    @property
    def observed(self) -> float | int:
        return self.outcome.observed

    def metadata(self) -> dict[str, object]:
        return {**self.outcome.metadata(), **self.figures}


def _present(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def both_sections_share(captions: pd.DataFrame, *, minimum: float = 0.95) -> GateResult:
    """
    Share of captioned images whose row has both a non-empty image caption and summarization.

    Failed rows count against the share (they have neither section).
    """
    if captions.empty:
        return GateResult(CheckOutcome(True, 1.0, f">= {minimum:.0%} of captions with both sections"), {"rows": 0})
    ok = np.array([_present(c) and _present(s) for c, s in zip(captions["image_caption"],
                                                               captions["summarization"], strict=True)])  # fmt: skip
    share = float(ok.mean())
    examples = captions.loc[~ok, "image_id"].astype(str).tolist()
    figures = {"rows": len(captions), "with_both_sections": int(ok.sum()),
               "failed": int((captions["status"] != "done").sum())}  # fmt: skip
    return GateResult(CheckOutcome(share >= minimum, round(share, 4), f">= {minimum:.0%} of captions with both "
                                   "sections", examples), figures)  # fmt: skip


_TOKEN = re.compile(r"[^\W_](?:[\w'’.-]*[^\W_])?")
_STREET_WORDS = (
    "Street", "St", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Blvd", "Lane", "Drive", "Way", "Place", "Square",
    "Court", "Terrace", "Crescent", "Parkway", "Highway", "Alley", "Row", "Park", "Bridge", "Quay", "Embankment",
    "Gardens", "Plaza", "Market", "Station",
)  # fmt: skip
_COMPOUND_SUFFIXES = ("katu", "tie", "kuja", "polku", "tori", "puisto", "ranta", "väylä", "gatan", "vägen", "strasse",
                      "straße", "platz", "weg")  # fmt: skip
_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*"
_STREET_PHRASE = re.compile(rf"\b((?:{_CAP}\s+){{1,4}}(?:{'|'.join(_STREET_WORDS)}))\b\.?")
_COMPOUND_WORD = re.compile(rf"\b([A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+(?:{'|'.join(_COMPOUND_SUFFIXES)}))\b")
#: Capitalised words that start a sentence or a prepositional phrase rather than a name.
_LEADING_STOPWORDS = frozenset((
    "the", "a", "an", "along", "on", "at", "near", "from", "to", "in", "by", "this", "that", "past", "beside",
    "towards", "toward", "into", "onto", "off", "across", "behind", "opposite", "and", "or", "of", "with", "while",
    "where", "when", "its", "their", "our", "your", "his", "her",
))  # fmt: skip


def _norm_tokens(text: str) -> list[str]:
    return [t.casefold() for t in _TOKEN.findall(text)]


def _norm(text: str) -> str:
    return " ".join(_norm_tokens(text))


def find_place_mentions(text: str, known_names: Iterable[str]) -> set[str]:
    """
    Place and street names mentioned in ``text`` (normalised: case-folded, punctuation-trimmed tokens).

    Two detectors, so a mention is caught whether or not the city knows the name:

    * **known names** (the city's graph names): longest-first, non-overlapping token n-gram matches whose first
      word is capitalised in the text (so the word "park" does not match a place called "Park");
    * **name-like phrases** the city may not know: one to four capitalised words ending in a street word
      (``Omega Street``, ``Harbour Square``) or one capitalised compound with a street suffix
      (``Mannerheimintie``, ``Aleksanterinkatu``), with leading sentence words (``Along``, ``The``) dropped.
    """
    known = frozenset(k for k in (_norm(n) for n in known_names if n) if k)
    return _find_mentions(text, known, max((len(k.split()) for k in known), default=0))


def _find_mentions(text: str, known: frozenset[str], max_len: int) -> set[str]:
    """:func:`find_place_mentions` with the known names already normalised (once per table, not per text)."""
    spans = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(text)]
    mentions: set[str] = set()
    covered: set[int] = set()
    i = 0
    while i < len(spans):
        matched = 0
        if spans[i][2][:1].isupper():
            for n in range(min(max_len, len(spans) - i), 0, -1):
                candidate = " ".join(s[2].casefold() for s in spans[i : i + n])
                if candidate in known:
                    matched = n
                    mentions.add(candidate)
                    covered.update(range(spans[i][0], spans[i + n - 1][1]))
                    break
        i += matched or 1
    for pattern in (_STREET_PHRASE, _COMPOUND_WORD):
        for match in pattern.finditer(text):
            words = match.group(1).split()
            while words and words[0].casefold() in _LEADING_STOPWORDS:
                words = words[1:]
            if pattern is _STREET_PHRASE and len(words) < 2:
                continue
            phrase = " ".join(words)
            start = match.start(1) + match.group(1).find(phrase)
            if any(pos in covered for pos in range(start, start + len(phrase))):
                continue  # part of a known name already counted
            mentions.add(_norm(phrase))
    return mentions


def _grounded(mention: str, allowed: set[str]) -> bool:
    if mention in allowed:
        return True
    # "Alpha Street" written as "Alpha St" or a name-like phrase with an extra leading word ("Old Alpha Street").
    words = mention.split()
    return any(" ".join(words[k:]) in allowed for k in range(1, len(words) - 1))


def hallucination_rate(
    captions: pd.DataFrame,
    names_by_image: Mapping[str, Iterable[str]],
    known_names: Iterable[str],
    *,
    maximum: float = 0.05,
) -> GateResult:
    """
    Share of summarizations that mention a place or street absent from their image's subgraph.

    Mentions come from :func:`find_place_mentions` with the city's ``known_names``: a planted place that exists
    elsewhere in the city, or a street-like name the city does not have at all, is counted as a hallucination
    unless the image's own subgraph holds that name.

    Parameters
    ----------
    captions
        The captions table; only ``done`` rows are checked.
    names_by_image
        ``image_id`` -> names in that image's subgraph (:func:`names_by_image`).
    known_names
        Every name in the city's graph (streets, POIs, areas).
    maximum
        Highest acceptable share of summarizations with at least one ungrounded mention.
    """
    known = frozenset(k for k in (_norm(n) for n in set(known_names) if n) if k)
    max_len = max((len(k.split()) for k in known), default=0)
    allowed_by_image = {str(k): {_norm(n) for n in v if n} for k, v in names_by_image.items()}
    done = captions[captions["status"] == "done"]
    checked = flagged = n_mentions = n_bad = 0
    examples = []
    for image_id, summary in zip(done["image_id"].astype(str), done["summarization"], strict=True):
        if not _present(summary):
            continue
        checked += 1
        allowed = allowed_by_image.get(image_id, set())
        mentions = _find_mentions(summary, known, max_len)
        bad = sorted(m for m in mentions if not _grounded(m, allowed))
        n_mentions += len(mentions)
        n_bad += len(bad)
        if bad:
            flagged += 1
            examples.append(f"{image_id}: {', '.join(bad[:3])}")
    rate = flagged / checked if checked else 0.0
    figures = {"summaries_checked": checked, "summaries_with_ungrounded_names": flagged, "mentions": n_mentions,
               "ungrounded_mentions": n_bad,
               "mention_hallucination_rate": round(n_bad / n_mentions, 4) if n_mentions else 0.0}  # fmt: skip
    return GateResult(CheckOutcome(rate <= maximum, round(rate, 4), f"<= {maximum:.0%} of summarizations name a "
                                   "place outside their subgraph", examples), figures)  # fmt: skip


def _minhash_signatures(shingle_sets: list[set[str]], n_hashes: int, seed: int) -> np.ndarray:
    prime = np.uint64(4294967311)  # smallest prime above 2**32: a*x + b stays below 2**64
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, size=n_hashes, dtype=np.uint64)
    b = rng.integers(0, 2**32, size=n_hashes, dtype=np.uint64)
    signatures = np.full((len(shingle_sets), n_hashes), np.iinfo(np.uint64).max, dtype=np.uint64)
    for row, shingles in enumerate(shingle_sets):
        if not shingles:
            continue
        x = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "big") for s in shingles],
                     dtype=np.uint64)  # fmt: skip
        signatures[row] = ((np.outer(x, a) + b) % prime).min(axis=0)
    return signatures


def homogeneity(
    captions: pd.DataFrame,
    *,
    min_distinct_2gram_ratio: float = 0.05,
    max_near_duplicate_rate: float = 0.05,
    near_duplicate_jaccard: float = 0.8,
    sample_size: int = 200,
    seed: int = 0,
) -> GateResult:
    """
    How homogeneous the captions are: distinct-bigram ratio and near-duplicate rate.

    Each done row's text is its image caption plus its summarization.

    * ``distinct_2gram_ratio``: distinct word bigrams / all word bigrams over a seeded sample of
      ``sample_size`` texts (a fixed sample size keeps the figure comparable between cities, since the ratio
      falls as a corpus grows).
    * ``near_duplicate_rate``: share of texts whose word-trigram Jaccard similarity with another text is at
      least ``near_duplicate_jaccard`` (MinHash with banding proposes candidates, exact Jaccard confirms them).

    The gate passes when the ratio is at least ``min_distinct_2gram_ratio`` and the rate at most
    ``max_near_duplicate_rate``; ``observed`` is the near-duplicate rate. The default floor (0.05) only catches
    near-copied text: the template captioner scores about 0.10 on varied scenes (its sentence frames repeat by
    design), free VLM captions well above that; compare the figure across models rather than against the floor.
    """
    done = captions[captions["status"] == "done"]
    pairs = [(str(i), f"{c or ''} {s or ''}".strip()) for i, c, s in zip(done["image_id"], done["image_caption"],
                                                                       done["summarization"], strict=True)]  # fmt: skip
    pairs = [(i, t) for i, t in pairs if t]
    ids, texts = [i for i, _ in pairs], [t for _, t in pairs]
    expected = (f"distinct-2gram ratio >= {min_distinct_2gram_ratio} and <= {max_near_duplicate_rate:.0%} "
                "near-duplicates")  # fmt: skip
    if len(texts) < 2:
        return GateResult(CheckOutcome(True, 0.0, expected), {"texts": len(texts), "distinct_2gram_ratio": 1.0,
                                                              "near_duplicate_rate": 0.0})  # fmt: skip
    rng = np.random.default_rng(seed)
    sample_index = (rng.choice(len(texts), size=sample_size, replace=False) if len(texts) > sample_size
                    else np.arange(len(texts)))  # fmt: skip
    bigrams: list[tuple[str, str]] = []
    tokens = [_norm_tokens(t) for t in texts]
    for idx in sample_index:
        words = tokens[int(idx)]
        bigrams.extend(itertools.pairwise(words))
    distinct_ratio = len(set(bigrams)) / len(bigrams) if bigrams else 1.0

    shingles = [{" ".join(w[k : k + 3]) for k in range(max(1, len(w) - 2))} for w in tokens]
    n_hashes, rows_per_band = 64, 4
    signatures = _minhash_signatures(shingles, n_hashes, seed)
    duplicate = np.zeros(len(texts), dtype=bool)
    checked_pairs: set[tuple[int, int]] = set()
    for band in range(n_hashes // rows_per_band):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = signatures[:, band * rows_per_band : (band + 1) * rows_per_band]
        for row in range(len(texts)):
            buckets[block[row].tobytes()].append(row)
        for members in buckets.values():
            if len(members) < 2:
                continue
            for p, i in enumerate(members):
                for j in members[p + 1 :]:
                    if (i, j) in checked_pairs:
                        continue
                    checked_pairs.add((i, j))
                    union = len(shingles[i] | shingles[j])
                    if union and len(shingles[i] & shingles[j]) / union >= near_duplicate_jaccard:
                        duplicate[i] = duplicate[j] = True
    near_rate = float(duplicate.mean())
    passed = distinct_ratio >= min_distinct_2gram_ratio and near_rate <= max_near_duplicate_rate
    examples = [ids[k] for k in np.flatnonzero(duplicate)]
    figures = {"texts": len(texts), "distinct_2gram_ratio": round(distinct_ratio, 4),
               "near_duplicate_rate": round(near_rate, 4), "candidate_pairs": len(checked_pairs)}  # fmt: skip
    return GateResult(CheckOutcome(passed, round(near_rate, 4), expected, examples), figures)
