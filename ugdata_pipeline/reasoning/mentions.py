"""The one rule for "does this text name this place", used by every stage that keeps a target out of a query.

The reasoning stage (paths whose ``path_text``/``path_sentence`` would name their target), its asset check, and the
training-record stage (instructions that would name a path's target) all call :func:`mentions_name`, so a record
that one stage lets through is never rejected by another.

Rule: the name's words appear as consecutive whole words of the text, compared case-insensitively after folding
punctuation to spaces. ``"Kamppi"`` is found in ``"Kamppi Street"`` but not in ``"Kamppikatu"``.

Except for **weak names**, whose every word is a single character or an English function word (``"A"``, ``"The"``,
``"B"``, ``"Of The"``): compared case-insensitively they would be found in almost any sentence ("Name *a* place
near ..."), which says nothing about the place. A weak name is found only where its words appear **as written**
(same case, punctuation still folded): ``"A"`` is found in ``"walk 20 m to A"`` but not in ``"name a place"``.
Generated texts use these words in lower case mid-sentence, so this keeps every real mention of such a name
while ignoring the prose; a capitalised function word that opens a sentence still counts (the safe side).
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pandas as pd

_NON_WORD = re.compile(r"[\W_]+")

#: Function words that carry no name on their own (articles, prepositions, conjunctions, pronouns of prose).
WEAK_WORDS: frozenset[str] = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "of",
        "to",
        "in",
        "into",
        "on",
        "onto",
        "at",
        "by",
        "for",
        "from",
        "with",
        "as",
        "is",
        "it",
        "its",
        "this",
        "that",
        "then",
        "than",
        "be",
        "are",
        "was",
        "you",
        "your",
        "how",
        "what",
        "which",
        "where",
        "who",
        "can",
        "do",
        "does",
    }
)


def _fold(text: str) -> str:
    return " " + _NON_WORD.sub(" ", text.casefold()).strip() + " "


def _plain(text: str) -> str:
    return " " + _NON_WORD.sub(" ", text).strip() + " "


def fold_words(text: str) -> list[str]:
    """The words of ``text`` as :func:`mentions_name` compares them (case-folded, punctuation dropped)."""
    return _fold(text).split()


def is_weak_name(name: str) -> bool:
    """Whether every word of ``name`` is a single character or a :data:`WEAK_WORDS` function word."""
    words = fold_words(name)
    return bool(words) and all(len(w) == 1 or w in WEAK_WORDS for w in words)


@lru_cache(maxsize=1 << 16)
def _pattern(name: str) -> tuple[str, str, str | None]:
    """(folded name, its longest word, the name as written for weak names else None), spaces around."""
    folded = _fold(name)
    words = folded.split()
    longest = max(words, key=len) if words else ""
    return folded, longest, (_plain(name) if is_weak_name(name) else None)


def mentions_name(text: str, name: str) -> bool:
    """
    Whether ``text`` names the place ``name`` (the module's rule; weak names only as written).

    An empty name (after folding) is never mentioned.
    """
    folded, longest, as_written = _pattern(name)
    # cheap necessary condition first: the name's longest word must be a plain substring of the text
    if not longest or longest not in text.casefold():
        return False
    if as_written is not None:
        return as_written in _plain(text)
    return folded in _fold(text)


class LeakIndex:
    """
    Which place nodes would carry which target name into a query, as packed ``(name, text)`` pair keys.

    Work is done once per distinct mention text and distinct target name (a tiled or repetitive city has few of
    each), through an inverted index on each name's rarest folded word (a necessary condition of
    :func:`mentions_name`, which then decides); a chain is checked with one vectorised ``np.isin`` on
    ``name_code * n_texts + text_code`` keys.

    Parameters
    ----------
    names
        Display name of every place node (by position).
    mention_texts
        The text each node contributes to a query (its name, and the streets at a crossing).
    is_target
        Which nodes can be targets.
    """

    def __init__(
        self, names: npt.NDArray[np.object_], mention_texts: npt.NDArray[np.object_], is_target: npt.NDArray[np.bool_]
    ) -> None:
        text_code, texts = pd.factorize(pd.Series(mention_texts, dtype=object))
        name_code, distinct_names = pd.factorize(pd.Series(names, dtype=object))
        self.text_code = text_code.astype(np.int64)
        self.name_code = name_code.astype(np.int64)
        self.n_texts = len(texts)
        postings: dict[str, list[int]] = defaultdict(list)
        for code, text in enumerate(texts.tolist()):
            for token in set(fold_words(text)):
                postings[token].append(code)
        keys = []
        for code in np.unique(self.name_code[is_target]).tolist():
            name = distinct_names[code]
            words = fold_words(name)
            if not words:
                continue
            rarest = min(words, key=lambda w: len(postings.get(w, ())))
            keys.extend(code * self.n_texts + t for t in postings.get(rarest, ()) if mentions_name(texts[t], name))
        self.keys = np.unique(np.asarray(keys, dtype=np.int64))

    def leaks(self, chains: np.ndarray, targets: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Whether each chain's nodes before its target mention the target's name."""
        if len(self.keys) == 0 or len(targets) == 0:
            return np.zeros(len(targets), dtype=bool)
        interior = (np.arange(chains.shape[1])[None, :] < depth[:, None]) & (chains >= 0)
        pair = self.name_code[targets][:, None] * self.n_texts + self.text_code[np.maximum(chains, 0)]
        return (np.isin(pair, self.keys) & interior).any(axis=1)
