"""Thinning: known answers and Hypothesis invariants (cap per cell, one per sequence per cell, order-free, subset)."""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.errors import ImageryInputError
from ugdata_pipeline.imagery.thin import H3_RESOLUTION, thin_images

DATES = [None, "2019-05-01T10:00:00Z", "2021-03-01T08:30:00Z", "2021-03-01T08:30:01Z", "2024-07-01T00:00:00Z"]


def frame(rows: list[tuple[str, float, float, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "lon", "lat", "captured_at", "sequence_id"])


def test_known_answer_newest_first_one_per_sequence() -> None:
    # All five in one cell. Preference: b and d (2021-03-01T08:30:01, ids b < d), then a (08:30:00), e, c (no date).
    images = frame(
        [
            ("a", 24.94, 60.16, "2021-03-01T08:30:00Z", "s1"),
            ("b", 24.94, 60.16, "2021-03-01T08:30:01Z", "s1"),
            ("c", 24.94, 60.16, None, "s2"),
            ("d", 24.94, 60.16, "2021-03-01T08:30:01Z", "s3"),
            ("e", 24.94, 60.16, "2019-05-01T10:00:00Z", ""),
        ]
    )
    assert thin_images(images, max_per_cell=1).images["image_id"].tolist() == ["b"]
    two = thin_images(images, max_per_cell=2)
    assert two.images["image_id"].tolist() == ["b", "d"]
    assert two.counts == {
        "input": 5,
        "kept": 2,
        "dropped": 3,
        "dropped_same_sequence": 1,
        "dropped_cell_full": 2,
        "cells": 1,
    }
    # a is dropped because b (same sequence, newer) is kept; the undated c comes last.
    assert thin_images(images, max_per_cell=10).images["image_id"].tolist() == ["b", "c", "d", "e"]
    assert set(two.images["h3_cell"]) == {h3.latlng_to_cell(60.16, 24.94, H3_RESOLUTION)}


def test_images_in_different_cells_are_independent() -> None:
    far = 0.001  # ~56 m north: another resolution-12 cell
    images = frame([("a", 24.94, 60.16, None, "s"), ("b", 24.94, 60.16 + far, None, "s")])
    result = thin_images(images, max_per_cell=1)
    assert result.images["image_id"].tolist() == ["a", "b"], "one per sequence per CELL, not per sequence"
    assert result.counts["cells"] == 2


def test_without_optional_columns_and_empty_input() -> None:
    images = pd.DataFrame({"image_id": ["z", "y", "x"], "lon": [24.94] * 3, "lat": [60.16] * 3})
    assert thin_images(images, max_per_cell=2).images["image_id"].tolist() == ["y", "x"]  # ids x, y win
    empty = thin_images(images.iloc[:0])
    assert empty.images.empty and empty.counts["kept"] == 0 and "h3_cell" in empty.images.columns


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda df: df.drop(columns="lat"), "missing column"),
        (lambda df: pd.concat([df, df]), "unique"),
        (lambda df: df.assign(lon=[np.nan, 1.0]), "lon has 1 NaN"),
        (lambda df: df.assign(lat=[95.0, 1.0]), "lat has 1"),
    ],
)
def test_bad_input_is_rejected(change, match: str) -> None:
    images = frame([("a", 24.94, 60.16, None, "s"), ("b", 24.95, 60.17, None, "s")])
    with pytest.raises(ImageryInputError, match=match):
        thin_images(change(images))


def test_bad_options_are_rejected() -> None:
    images = frame([("a", 24.94, 60.16, None, "s")])
    with pytest.raises(ImageryInputError, match="max_per_cell"):
        thin_images(images, max_per_cell=0)
    with pytest.raises(ImageryInputError, match="resolution"):
        thin_images(images, resolution=16)


# A ~30 m x 55 m patch: a handful of resolution-12 cells, so cells hold several images and caps bite.
image_rows = st.lists(
    st.tuples(
        st.floats(24.9400, 24.9405),
        st.floats(60.1600, 60.1605),
        st.sampled_from(DATES),
        st.sampled_from(["", "s1", "s2", "s3"]),
    ),
    max_size=40,
)


def _preference(row: dict) -> tuple[int, int, str]:
    """Sort key of the documented rule: newest first, unknown dates last, then image_id."""
    if row["captured_at"] is None:
        return (1, 0, row["image_id"])
    return (0, -pd.Timestamp(row["captured_at"]).value, row["image_id"])


@settings(max_examples=60, deadline=None)
@given(rows=image_rows, max_per_cell=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_thinning_invariants(rows, max_per_cell: int, seed: int) -> None:
    images = frame([(f"i{k:02d}", lon, lat, date, seq) for k, (lon, lat, date, seq) in enumerate(rows)])
    result = thin_images(images, max_per_cell=max_per_cell)
    kept = result.images

    # subset of the input, rows unchanged, input order kept
    pd.testing.assert_frame_equal(
        kept.drop(columns="h3_cell"), images[images["image_id"].isin(kept["image_id"])].reset_index(drop=True)
    )
    # cells recomputed independently
    cells = [h3.latlng_to_cell(lat, lon, H3_RESOLUTION) for lon, lat in zip(images["lon"], images["lat"], strict=True)]
    images = images.assign(cell=cells)
    assert kept["h3_cell"].tolist() == images.set_index("image_id").loc[kept["image_id"], "cell"].tolist()
    # at most N per cell; at most one per (cell, real sequence)
    assert (kept.groupby("h3_cell").size() <= max_per_cell).all()
    with_sequence = kept[kept["sequence_id"] != ""]
    assert not with_sequence.duplicated(["h3_cell", "sequence_id"]).any()
    # deterministic and independent of row order
    shuffled = images.drop(columns="cell").sample(frac=1.0, random_state=seed)
    assert set(thin_images(shuffled, max_per_cell=max_per_cell).images["image_id"]) == set(kept["image_id"])
    # greedy optimality of the documented preference: every dropped image is beaten by a kept, preferred one
    records = images.to_dict("records")
    kept_ids = set(kept["image_id"])
    winners = [r for r in records if r["image_id"] in kept_ids]
    for loser in (r for r in records if r["image_id"] not in kept_ids):
        preferred = [w for w in winners if w["cell"] == loser["cell"] and _preference(w) < _preference(loser)]
        same_sequence = loser["sequence_id"] != "" and any(w["sequence_id"] == loser["sequence_id"] for w in preferred)
        assert same_sequence or len(preferred) == max_per_cell
    assert result.counts["kept"] + result.counts["dropped"] == len(images)
