"""Text of spatial reasoning paths: the triple chain, the walking sentence and the answer sentence.

Everything a person reads about a direction or a distance goes through the shared helpers of
:mod:`ugdata_pipeline.graph.text` (``compass_word``, ``distance_phrase``), so a bearing is always the same word.

Two query-side texts are written per path, both with the target **masked** ("destination"):

* ``path_text``, a triple chain compatible with the reference's grammar
  (``STEP := TRIPLE " " TUPLE``, steps joined by ``" -> "``; reference §4.4)::

      (image, nearest, Alpha Street) (8.0m, 358°(N)) -> (Alpha Street, crossing, Intersection of ...) ...

  Every triple carries its own ``(distance, bearing)`` tuple; the compass letter code is derived from the
  shared 8-point word (``"north-east"`` -> ``NE``).
* ``path_sentence``, natural language: ``"Walk 8 m north to Alpha Street, walk 150 m east along Alpha Street to
  the crossing with Third Avenue, turn onto Third Avenue, then walk 150 m north from Third Avenue to the
  destination."``

The answer, ``target_text``, names the target and is stored apart from the query.

Whether a query text names its target is decided by the one shared rule, :func:`.mentions.mentions_name`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from ugdata_pipeline.graph.text import COMPASS_WORDS, compass_index, distance_phrase

#: How a masked target is named in the triple chain and in the sentence.
MASKED_TRIPLE_NAME = "destination"
MASKED_SENTENCE_NAME = "the destination"
#: How the image node is named in the query texts (the reference used its numeric id; ours carries no id).
IMAGE_TRIPLE_NAME = "image"

#: View-relative directions of the target, by the angle between the camera heading and the target bearing.
VIEW_DIRECTIONS: tuple[str, ...] = ("ahead", "right", "behind", "left")
_VIEW_PHRASE = {
    "ahead": "ahead of the camera",
    "right": "to the right of the camera",
    "behind": "behind the camera",
    "left": "to the left of the camera",
}

#: An image closer than this to its street (metres) already stands on it: "start on X Street".
ON_STREET_M = 1.0

#: The shared distance phrase, memoised: step lengths are rounded to the centimetre, so values repeat a lot.
_phrase = lru_cache(maxsize=1 << 18)(distance_phrase)
_CODES = {word: "".join(part[0].upper() for part in word.split("-")) for word in COMPASS_WORDS}
_CODE_BY_INDEX = np.array([_CODES[word] for word in COMPASS_WORDS], dtype=object)


def compass_code(word: str) -> str:
    """Letter code of a shared compass word (:func:`~ugdata_pipeline.graph.text.compass_word`): ``"north-east"``
    -> ``"NE"``, the reference's tuple form."""
    code = _CODES.get(word)
    return code if code is not None else "".join(part[0].upper() for part in word.split("-"))


def view_direction(relative_deg: float) -> str:
    """
    Where a target lies relative to the camera.

    Parameters
    ----------
    relative_deg
        Bearing to the target minus the camera's compass angle, degrees, already wrapped into ``[0, 360)``.

    Returns
    -------
    direction
        ``"ahead"`` (within 45° of the heading), ``"right"`` ([45, 135)), ``"behind"`` ([135, 225)) or
        ``"left"`` ([225, 315)).
    """
    return VIEW_DIRECTIONS[int(((relative_deg + 45.0) % 360.0) // 90.0)]


def measure_tuples(distances_m: npt.ArrayLike, bearings_deg: npt.ArrayLike) -> list[str]:
    """
    Reference ``(distance, bearing)`` tuples for many steps at once: ``"(150.0m, 88°(E))"``.

    Parameters
    ----------
    distances_m, bearings_deg
        Equal-length arrays of metres and degrees clockwise from north (NaN is read as 0).
    """
    distance = np.nan_to_num(np.asarray(distances_m, dtype=np.float64).ravel())
    bearing = np.nan_to_num(np.asarray(bearings_deg, dtype=np.float64).ravel())
    degrees = (np.rint(bearing) % 360).astype(np.int64).tolist()
    codes = _CODE_BY_INDEX[compass_index(bearing)].tolist()
    return [f"({d:.1f}m, {b}°({c}))" for d, b, c in zip(distance.tolist(), degrees, codes, strict=True)]


def triple_chain(names: Sequence[str], relations: Sequence[str], measures: Sequence[str]) -> str:
    """
    The reference-compatible triple chain of one path.

    Parameters
    ----------
    names
        Display names of the path's nodes, image first; pass the masked names (the caller masks the target).
    relations
        One relation per step (``len(names) - 1``).
    measures
        One ``(distance, bearing)`` tuple per step, from :func:`measure_tuples`.
    """
    return " -> ".join([f"({names[i]}, {relations[i]}, {names[i + 1]}) {measures[i]}" for i in range(len(relations))])


def _crossing_phrase(crossing_name: str, crossing_streets: Sequence[str], along: str | None) -> str:
    others = [s for s in crossing_streets if s != along]
    if along is not None and others and len(others) < len(crossing_streets):
        return "the crossing with " + (" and ".join(others) if len(others) < 3 else ", ".join(others))
    return crossing_name


def step_clause(
    *,
    src_kind: str,
    dst_kind: str,
    relation: str,
    dst_name: str,
    distance_m: float,
    compass: str,
    current_street: str | None,
    crossing_streets: Sequence[str] = (),
) -> str:
    """
    One clause of the walking sentence, lower-case (the caller capitalises the first).

    Parameters
    ----------
    src_kind, dst_kind
        Node kinds of the step's two ends (``image``, ``street``, ``crossing``, ``poi``, ``aoi``).
    relation
        The step's relation (a street name for ``along_street`` steps, else ``crossing``/``nearest``/...).
    dst_name
        Display name of the step's end, already masked when it is the target.
    distance_m, compass
        Length in metres and compass word (:func:`~ugdata_pipeline.graph.text.compass_word`) of the move; a turn
        onto a street has length 0 and needs neither.
    current_street
        Name of the street walked on before this step, if any.
    crossing_streets
        Street names meeting at ``dst`` when it is a crossing.
    """
    move = f"{_phrase(distance_m)} {compass}"
    if dst_kind == "crossing":
        street = relation if src_kind == "crossing" else current_street
        target = _crossing_phrase(dst_name, crossing_streets, street)
        if street:
            return f"walk {move} along {street} to {target}"
        return f"walk {move} to {target}"
    if dst_kind == "street":
        if src_kind == "crossing":
            return f"turn onto {dst_name}"
        if src_kind == "image" and distance_m < ON_STREET_M:
            return f"start on {dst_name}"
        return f"walk {move} to {dst_name}"
    if relation == "within" and src_kind == "poi":
        return f"walk {move} into {dst_name}"
    if current_street and src_kind == "street":
        return f"walk {move} from {current_street} to {dst_name}"
    return f"walk {move} to {dst_name}"


def join_clauses(clauses: Sequence[str]) -> str:
    """``"Walk a, walk b, then walk c."`` from lower-case clauses."""
    if not clauses:
        return ""
    text = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + ", then " + clauses[-1]
    return text[0].upper() + text[1:] + "."


def target_sentence(name: str, category: str | None, distance_m: float, compass: str, direction: str | None) -> str:
    """
    The answer sentence: names the target, its straight-line distance and compass word from the image.

    ``"You can reach Bank Two (financial) 190 m north-east of the image location; it lies ahead of the camera."``

    Parameters
    ----------
    name, category
        The target's name and category.
    distance_m, compass
        Straight-line metres from the image and the shared compass word of the bearing image -> target.
    direction
        View-relative direction (:func:`view_direction`), or ``None`` when the camera angle is unknown.
    """
    label = f"{name} ({category})" if category else name
    text = f"You can reach {label} {distance_phrase(distance_m)} {compass} of the image location"
    if direction is not None:
        text += f"; it lies {_VIEW_PHRASE[direction]}"
    return text + "."
