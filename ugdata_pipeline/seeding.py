"""
Deterministic choices from hashes: the one place that turns names into seeds, picks and buckets.

Python's ``hash`` differs between processes, so every reproducible choice of the pipeline (a caption phrasing, a
training negative, a bootstrap resample, a cross-fitting fold, a rendered façade colour, a camera id) hashes its
key parts here instead. The parts are joined as ``"\\x1f".join(str(p) for p in parts)`` and encoded as UTF-8.

The schemes differ only in the digest and the byte order of the integer read from it. They exist because the
stages chose differently before this module did, and changing a scheme changes every choice made with it (image
ids, captions, benchmark numbers); new code uses the default.

==================  ==================================================  ==================================
scheme              digest, integer                                     used by
==================  ==================================================  ==================================
``sha256-be``       SHA-256, leading bytes big-endian (the default)     dataset records, template captions
``sha256-le``       SHA-256, leading bytes little-endian                UGBench seeds and folds
``sha1-le``         SHA-1, leading bytes little-endian                  the offline renderer and its cameras
``blake2b64-le``    BLAKE2b with an 8-byte digest, little-endian        UGE text ids
==================  ==================================================  ==================================

Content hashes used as cache keys or fingerprints (run ids, table digests, render fingerprints) are not choices
and do not live here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np

Scheme = Literal["sha256-be", "sha256-le", "sha1-le", "blake2b64-le"]
SCHEMES: tuple[str, ...] = ("sha256-be", "sha256-le", "sha1-le", "blake2b64-le")
#: What joins the parts before hashing (ASCII unit separator: never in a name, an id or a number).
SEPARATOR = "\x1f"

T = TypeVar("T")


def _digest(data: bytes, scheme: str) -> tuple[bytes, Literal["big", "little"]]:
    if scheme == "sha256-be":
        return hashlib.sha256(data).digest(), "big"
    if scheme == "sha256-le":
        return hashlib.sha256(data).digest(), "little"
    if scheme == "sha1-le":
        return hashlib.sha1(data).digest(), "little"
    if scheme == "blake2b64-le":
        return hashlib.blake2b(data, digest_size=8).digest(), "little"
    msg = f"unknown hash scheme {scheme!r}; use one of {list(SCHEMES)} (see ugdata_pipeline.seeding)"
    raise ValueError(msg)


def stable_hash(*parts: object, scheme: Scheme = "sha256-be", bits: int = 64) -> int:
    """
    An unsigned integer hash of ``parts`` that is the same in every process, run and platform.

    Parameters
    ----------
    *parts
        Anything with a stable ``str``: names, ids, seeds. ``("a", 1)`` and ``("a", "1")`` hash alike.
    scheme
        Digest and byte order (see the module's table); the default for new code is ``"sha256-be"``.
    bits
        How many leading bytes of the digest to read, in bits: 8, 16, ..., 64.

    Returns
    -------
    value
        An integer in ``[0, 2**bits)``.
    """
    if bits not in (8, 16, 24, 32, 40, 48, 56, 64):
        msg = f"bits must be a multiple of 8 from 8 to 64, got {bits!r}"
        raise ValueError(msg)
    digest, order = _digest(SEPARATOR.join(str(p) for p in parts).encode("utf-8"), scheme)
    return int.from_bytes(digest[: bits // 8], order)


def stable_seed(*parts: object, scheme: Scheme = "sha256-be") -> int:
    """A 63-bit seed from ``parts`` (:func:`stable_hash` shifted right by one), so it fits a signed int64."""
    return stable_hash(*parts, scheme=scheme) >> 1


def stable_rng(*parts: object, scheme: Scheme = "sha256-be") -> np.random.Generator:
    """A NumPy generator seeded with the 64-bit :func:`stable_hash` of ``parts``."""
    return np.random.default_rng(stable_hash(*parts, scheme=scheme))


def stable_choice(options: Sequence[T], *parts: object, scheme: Scheme = "sha256-be") -> T:
    """
    One of ``options``, chosen by ``parts``: ``options[stable_hash(*parts) % len(options)]``.

    Raises
    ------
    ValueError
        ``options`` is empty.
    """
    if len(options) == 0:
        msg = f"stable_choice needs at least one option to choose from (parts {parts!r})"
        raise ValueError(msg)
    return options[stable_hash(*parts, scheme=scheme) % len(options)]
