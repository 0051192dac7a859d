"""Sub-city shards: tile keys with known answers, tiles that hold their points, and the hop halo."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ugdata_pipeline.errors import ShardConfigError
from ugdata_pipeline.graph.csr import build_csr
from ugdata_pipeline.graph.shards import (
    UNPLACED,
    hop_halo,
    image_shards,
    iter_shards,
    shard_keys,
    tile_bounds,
)
from ugdata_pipeline_tests.tiny_city import CRS_METRIC, ORIGIN_E, ORIGIN_N, lonlat


def test_tile_keys_have_known_answers() -> None:
    keys = shard_keys(
        [0.0, 1999.9, 2000.0, -0.1, 385_050.0, np.nan], [0.0, -0.1, 4000.0, 0.0, 6_672_050.0, 5.0], size_m=2000
    )
    assert keys.tolist() == ["e0_n0", "e0_n-1", "e1_n2", "e-1_n0", "e192_n3336", UNPLACED]
    assert tile_bounds("e192_n3336", size_m=2000) == (384_000.0, 6_672_000.0, 386_000.0, 6_674_000.0)


@given(
    x=st.floats(-1e7, 1e7, allow_nan=False),
    y=st.floats(-1e7, 1e7, allow_nan=False),
    size=st.sampled_from([50.0, 333.3, 1000.0, 2000.0]),
)
def test_every_point_lies_in_its_own_tile(x: float, y: float, size: float) -> None:
    (key,) = shard_keys([x], [y], size_m=size)
    minx, miny, maxx, maxy = tile_bounds(key, size_m=size)
    # floor division in binary floating point: a point on an edge may land on either side by one ulp
    tol = 1e-9 * max(1.0, abs(x), abs(y))
    assert minx - tol <= x < maxx + tol
    assert miny - tol <= y < maxy + tol


def test_images_are_keyed_from_their_position_and_grouped_in_key_order() -> None:
    # layout metres of the tiny cities: origin (385000, 6672000) in EPSG:32635, so 100 m tiles fall on its streets
    points = {"a": (50, -8), "b": (150, 50), "c": (60, 40), "d": (float("nan"), float("nan"))}
    images = pd.DataFrame(
        {
            "image_id": list(points),
            "lon": [lonlat(x, y)[0] if not math.isnan(x) else np.nan for x, y in points.values()],
            "lat": [lonlat(x, y)[1] if not math.isnan(y) else np.nan for x, y in points.values()],
        },
        index=[10, 11, 12, 13],
    )
    keys = image_shards(images, crs_metric=CRS_METRIC, size_m=100)
    col, row = int(ORIGIN_E // 100), int(ORIGIN_N // 100)
    assert keys.to_dict() == {
        10: f"e{col}_n{row - 1}",
        11: f"e{col + 1}_n{row}",
        12: f"e{col}_n{row}",
        13: UNPLACED,
    }
    groups = {key: rows.tolist() for key, rows in iter_shards(keys)}
    assert list(groups) == sorted(groups)
    assert groups[f"e{col}_n{row}"] == [2]


def test_hop_halo_reaches_exactly_the_nodes_within_the_hops() -> None:
    # a path 0-1-2-3-4-5 and a branch 2-6
    edges = pd.DataFrame({"src": [0, 1, 2, 3, 4, 2], "dst": [1, 2, 3, 4, 5, 6], "distance_m": 1.0})
    csr = build_csr(np.arange(7), edges)
    assert np.flatnonzero(hop_halo(csr, [0], hops=0)).tolist() == [0]
    assert np.flatnonzero(hop_halo(csr, [0], hops=2)).tolist() == [0, 1, 2]
    assert np.flatnonzero(hop_halo(csr, [0], hops=3)).tolist() == [0, 1, 2, 3, 6]
    assert np.flatnonzero(hop_halo(csr, [5, 0], hops=1)).tolist() == [0, 1, 4, 5]
    assert not hop_halo(csr, [], hops=3).any()


def test_a_node_with_hundreds_of_reached_neighbours_is_reached() -> None:
    # a street with 200 crossings, all reached: a count of reached neighbours kept in 8 bits would wrap at 128
    star = pd.DataFrame({"src": [0] * 200, "dst": list(range(1, 201)), "distance_m": 1.0})
    csr = build_csr(np.arange(201), star)
    assert hop_halo(csr, np.arange(1, 201), hops=1).all()
    assert hop_halo(csr, [5], hops=2).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: shard_keys([0], [0], size_m=0), "shard size_m must be a positive number of metres"),
        (lambda: shard_keys([0], [0], size_m=float("nan")), "shard size_m"),
        (lambda: tile_bounds("unplaced", size_m=100), "'unplaced' is not a tile key"),
        (lambda: tile_bounds("x1_y2", size_m=100), "tile keys look like 'e192_n3336'"),
        (lambda: hop_halo(build_csr([0], pd.DataFrame(columns=["src", "dst", "distance_m"])), [0], hops=-1), "hops"),
    ],
)
def test_bad_options_are_named(call, match: str) -> None:
    with pytest.raises(ShardConfigError, match=match):
        call()
