"""Ids of street nodes: a stable slug per street name, numbered apart where one name has several stretches."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["slugify", "street_node_ids"]


def slugify(name: str) -> str:
    """Stable id fragment from a name: NFKC, lower case, runs of non-word characters as ``-``."""
    text = unicodedata.normalize("NFKC", name).lower()
    slug = re.sub(r"[^\w]+", "-", text).strip("-")
    return slug or "unnamed"


def street_node_ids(slugs: list[str]) -> list[str]:
    """
    Unique street node ids for slugs in rank order (within a slug: longest stretch first).

    The first street of a slug is ``street:<slug>``, later ones ``street:<slug>-2``, ``-3``, ... A slug may itself
    end in ``-<number>`` ("Ilha 2" is ``ilha-2``), so a numbered id skips every number already taken by a plain
    slug or an earlier id: the second stretch of "Ilha" becomes ``street:ilha-3`` when a street "Ilha 2" exists,
    and keeps ``street:ilha-2`` otherwise (ids that never collided stay as they were).
    """
    taken = set(slugs)
    last: dict[str, int] = {}
    out = []
    for slug in slugs:
        if slug not in last:
            last[slug] = 1
            out.append(f"street:{slug}")
            continue
        number = last[slug] + 1
        while f"{slug}-{number}" in taken:
            number += 1
        last[slug] = number
        taken.add(f"{slug}-{number}")
        out.append(f"street:{slug}-{number}")
    return out
