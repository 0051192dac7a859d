"""Quality gates of the ``captions`` table: failed rows, both sections present, names grounded, homogeneity.

:func:`require_complete` is the blocking rule (a run with too many failed rows raises instead of replacing the
previous table); the other gates return a :class:`GateResult` whose ``metadata()`` carries the figures for asset
checks.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.errors import CaptionerConfigError, IncompleteResultError
from ugdata_pipeline.failures import describe_failures, failure_table

__all__ = [
    "GateResult",
    "both_sections_share",
    "caption_failure_table",
    "failed_share_limit",
    "failure_reason",
    "find_place_mentions",
    "hallucination_rate",
    "homogeneity",
    "require_complete",
]


# ----------------------------------------------------------------------------------------------- failed rows


def failure_reason(error: object) -> str:
    """The kind of a failed row's error: its text before the first colon (``HTTP 503``, ``timeout``, ...)."""
    text = str(error).strip() if isinstance(error, str) else ""
    return text.split(":", 1)[0].strip() or "unknown"


def caption_failure_table(captions: pd.DataFrame) -> pd.DataFrame:
    """The failed rows by reason (:func:`failure_reason`), most frequent first: ``reason``, ``count``,
    ``examples`` (``image_id: error``); see :func:`ugdata_pipeline.failures.failure_table`."""
    failed = captions[captions["status"] != "done"]
    return failure_table(failed["error"].map(failure_reason), failed["image_id"], failed["error"])


def failed_share_limit(value: float) -> float:
    """``max_failed_share`` checked before any work: a share in [0, 1]."""
    if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        msg = (
            f"captioner.max_failed_share must be a share between 0 and 1 (e.g. 0.02 for 2 %), got {value!r}; "
            "fix the captioner resource's configuration"
        )
        raise CaptionerConfigError(msg)
    return float(value)


def require_complete(captions: pd.DataFrame, *, city: str, max_failed_share: float) -> None:
    """
    Raise :class:`~ugdata_pipeline.errors.IncompleteResultError` when more than ``max_failed_share`` of the rows
    failed, so the step fails and the previous ``captions`` table stays in place.

    The message names the city, the failed count, the main reasons with an example each, and how to retry.
    Nothing is lost by raising: finished captions are already in the caption cache and failed ones are recorded
    there, so the retry only asks for the failures.
    """
    limit = failed_share_limit(max_failed_share)
    total = len(captions)
    failed = int((captions["status"] != "done").sum())
    if not total or failed / total <= limit:
        return
    msg = (
        f"captions of city {city!r}: {failed}/{total} images failed ({failed / total:.1%}, more than "
        f"max_failed_share {limit:.1%}): {describe_failures(caption_failure_table(captions))}. The previous captions "
        f"table is kept. Fix the endpoint, then re-materialize the `captions` asset for {city!r}: finished "
        "captions are cached and not requested again, only the failed images are."
    )
    raise IncompleteResultError(msg)


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
    ok = np.array(
        [_present(c) and _present(s) for c, s in zip(captions["image_caption"], captions["summarization"], strict=True)]
    )
    share = float(ok.mean())
    examples = captions.loc[~ok, "image_id"].astype(str).tolist()
    figures = {
        "rows": len(captions),
        "with_both_sections": int(ok.sum()),
        "failed": int((captions["status"] != "done").sum()),
    }
    return GateResult(
        CheckOutcome(share >= minimum, round(share, 4), f">= {minimum:.0%} of captions with both sections", examples),
        figures,
    )


_TOKEN = re.compile(r"[^\W_](?:[\w'’.-]*[^\W_])?")
_STREET_WORDS = (
    "Street",
    "St",
    "Avenue",
    "Ave",
    "Road",
    "Rd",
    "Boulevard",
    "Blvd",
    "Lane",
    "Drive",
    "Way",
    "Place",
    "Square",
    "Court",
    "Terrace",
    "Crescent",
    "Parkway",
    "Highway",
    "Alley",
    "Row",
    "Park",
    "Bridge",
    "Quay",
    "Embankment",
    "Gardens",
    "Plaza",
    "Market",
    "Station",
)
_COMPOUND_SUFFIXES = (
    "katu",
    "tie",
    "kuja",
    "polku",
    "tori",
    "puisto",
    "ranta",
    "väylä",
    "gatan",
    "vägen",
    "strasse",
    "straße",
    "platz",
    "weg",
)
_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*"
_STREET_PHRASE = re.compile(rf"\b((?:{_CAP}\s+){{1,4}}(?:{'|'.join(_STREET_WORDS)}))\b\.?")
_COMPOUND_WORD = re.compile(rf"\b([A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+(?:{'|'.join(_COMPOUND_SUFFIXES)}))\b")
#: Capitalised words that start a sentence or a prepositional phrase rather than a name.
_LEADING_STOPWORDS = frozenset(
    (
        "the",
        "a",
        "an",
        "along",
        "on",
        "at",
        "near",
        "from",
        "to",
        "in",
        "by",
        "this",
        "that",
        "past",
        "beside",
        "towards",
        "toward",
        "into",
        "onto",
        "off",
        "across",
        "behind",
        "opposite",
        "and",
        "or",
        "of",
        "with",
        "while",
        "where",
        "when",
        "its",
        "their",
        "our",
        "your",
        "his",
        "her",
    )
)


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
    figures = {
        "summaries_checked": checked,
        "summaries_with_ungrounded_names": flagged,
        "mentions": n_mentions,
        "ungrounded_mentions": n_bad,
        "mention_hallucination_rate": round(n_bad / n_mentions, 4) if n_mentions else 0.0,
    }
    return GateResult(
        CheckOutcome(
            rate <= maximum,
            round(rate, 4),
            f"<= {maximum:.0%} of summarizations name a place outside their subgraph",
            examples,
        ),
        figures,
    )


def _minhash_signatures(shingle_sets: list[set[str]], n_hashes: int, seed: int) -> np.ndarray:
    prime = np.uint64(4294967311)  # smallest prime above 2**32: a*x + b stays below 2**64
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, size=n_hashes, dtype=np.uint64)
    b = rng.integers(0, 2**32, size=n_hashes, dtype=np.uint64)
    signatures = np.full((len(shingle_sets), n_hashes), np.iinfo(np.uint64).max, dtype=np.uint64)
    for row, shingles in enumerate(shingle_sets):
        if not shingles:
            continue
        x = np.array(
            [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "big") for s in shingles],
            dtype=np.uint64,
        )
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
    pairs = [
        (str(i), f"{c or ''} {s or ''}".strip())
        for i, c, s in zip(done["image_id"], done["image_caption"], done["summarization"], strict=True)
    ]
    pairs = [(i, t) for i, t in pairs if t]
    ids, texts = [i for i, _ in pairs], [t for _, t in pairs]
    expected = (
        f"distinct-2gram ratio >= {min_distinct_2gram_ratio} and <= {max_near_duplicate_rate:.0%} near-duplicates"
    )
    if len(texts) < 2:
        return GateResult(
            CheckOutcome(True, 0.0, expected),
            {"texts": len(texts), "distinct_2gram_ratio": 1.0, "near_duplicate_rate": 0.0},
        )
    rng = np.random.default_rng(seed)
    sample_index = (
        rng.choice(len(texts), size=sample_size, replace=False) if len(texts) > sample_size else np.arange(len(texts))
    )
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
    figures = {
        "texts": len(texts),
        "distinct_2gram_ratio": round(distinct_ratio, 4),
        "near_duplicate_rate": round(near_rate, 4),
        "candidate_pairs": len(checked_pairs),
    }
    return GateResult(CheckOutcome(passed, round(near_rate, 4), expected, examples), figures)
