"""The one helper for hash-seeded choices: pinned values, and the values every stage got before it existed."""

from __future__ import annotations

import hashlib

import pytest

from ugdata_pipeline.context import captioners
from ugdata_pipeline.dataset import records
from ugdata_pipeline.imagery import cameras
from ugdata_pipeline.seeding import SCHEMES, stable_choice, stable_hash, stable_rng, stable_seed
from ugdata_pipeline.ugbench import blind
from ugdata_pipeline.ugbench.stats import group_seed
from ugdata_pipeline.uge.losses import text_ids

# Values of stable_hash("helsinki", 7) per scheme, 64 and 32 bits: a changed value changes every choice made with it.
PINNED = {
    "sha256-be": (776208940726962771, 180725227),
    "sha256-le": (6001753798344033546, 3953509642),
    "sha1-le": (10021269167641991743, 2279610943),
    "blake2b64-le": (8099688562073274599, 1303120103),
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stable_hash_is_pinned_per_scheme(scheme):
    assert (stable_hash("helsinki", 7, scheme=scheme), stable_hash("helsinki", 7, scheme=scheme, bits=32)) == (
        PINNED[scheme]
    )


def test_stable_hash_reads_the_digest_of_the_joined_parts():
    digest = hashlib.sha256(b"helsinki\x1f7").digest()
    assert stable_hash("helsinki", 7) == int.from_bytes(digest[:8], "big")
    assert stable_hash("helsinki", "7") == stable_hash("helsinki", 7)  # parts hash by their str
    assert stable_hash("helsinki", 7) != stable_hash("helsinki7")  # the separator keeps parts apart


def test_seed_rng_and_choice_are_pinned():
    assert stable_seed("a") == 7299139317422481125
    assert stable_seed("a") == stable_hash("a") >> 1 < 2**63
    assert stable_rng("a").integers(0, 1000, 3).tolist() == [741, 220, 443]
    assert stable_choice("abcdef", "x") == "a"


def test_bad_scheme_bits_and_empty_options_are_named():
    with pytest.raises(ValueError, match=r"unknown hash scheme 'md5'; use one of \['sha256-be'"):
        stable_hash("a", scheme="md5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits must be a multiple of 8 from 8 to 64, got 12"):
        stable_hash("a", bits=12)
    with pytest.raises(ValueError, match="stable_choice needs at least one option"):
        stable_choice([], "a")


def test_every_stage_gets_the_values_it_got_before_the_helper():
    # Expected values were computed with each stage's own hashing code before it moved to ugdata_pipeline.seeding.
    assert group_seed(7, "geolocation", "image", "gridtown") == 3130961917662453550  # UGBench bootstrap seeds
    assert group_seed(0) == 2033344993903900207
    assert (blind._fold("street:alder-street"), blind._fold(12)) == (3, 4)  # blind scorers' cross-fitting folds
    assert captioners._pick(("a", "b", "c", "d", "e"), 0, "render:r1", "weather") == "e"  # template captions
    assert records._pick(("a", "b", "c", "d", "e", "f", "g"), 3, "img", "slot") == "b"  # training record phrasing
    assert stable_hash(3, "rec-1") == 7038417808860463364  # training negatives' generator seed
    assert text_ids(["  Alder Street ", "x"]).tolist() == [7470469508071027237, 2858720872202629029]  # UGE text ids
    # renderer: camera ids and view generators
    assert stable_hash("camera", "karhula", "street:kotkantie", 0, "fwd", 3, scheme="sha1-le") == 7450187117531529747
    assert stable_hash("view", "render:r1a2b3c4d5", scheme="sha1-le") == 9855512781831040040
    assert cameras._camera_id("karhula", "street:kotkantie", 0, "fwd", 3) == f"r{7450187117531529747:016x}"[:11]
