"""The captioner's prompt and the parsing of its answers (shared by every model-backed captioner).

:func:`build_prompt` writes the user prompt from an image's subgraph description, :func:`prompt_hash` identifies
it in the ``captions`` table, and :func:`parse_answer` splits an answer into ``(image_caption, summarization)``,
accepting the marked-section and the JSON layouts.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ugdata_pipeline.errors import CaptionFormatError

__all__ = [
    "ANSWER_JSON_SCHEMA",
    "FORMAT_REMINDER",
    "FORMAT_REMINDER_JSON",
    "MAX_SECTION_CHARS",
    "MIN_SECTION_CHARS",
    "PROMPT_VERSION",
    "SYSTEM_MESSAGE",
    "CaptionFormatError",
    "build_prompt",
    "parse_answer",
    "prompt_hash",
]

#: Bump when the prompt wording changes in a way the text itself does not show (it is part of the prompt hash).
PROMPT_VERSION = "scc-v2"
#: Section length bounds (characters) for a valid answer; shorter is a refusal or a stub, longer a runaway.
MIN_SECTION_CHARS = 20
MAX_SECTION_CHARS = 6000


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
    return rf"(?:\*\*\s*{word}\s*:?\s*\*\*\s*:?|{word}\s*:\s*\**|^[ \t]*#+[ \t]*{word}[ \t]*:?[ \t]*$)"


_IMAGE_MARKER = re.compile(
    r"\A\s*" + _marker(r"(?:image(?:\s+caption)?|caption)") + r"\s*", re.IGNORECASE | re.MULTILINE
)
_SUMMARY_MARKER = re.compile(
    r"(?:^|(?<=\s))[ \t]*" + _marker(r"summari[sz]ation") + r"[ \t]*", re.IGNORECASE | re.MULTILINE
)


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
