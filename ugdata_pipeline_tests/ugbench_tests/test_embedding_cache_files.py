"""Embedding cache shards: written with the umask's mode (not mkstemp's 0600) and read back whole."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from ugdata_pipeline.ugbench.models import EmbeddingCache


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_shards_follow_the_umask(tmp_path, umask):
    cache = EmbeddingCache(tmp_path, "model-a")
    cache.put(["k1", "k2"], np.eye(2, 3))
    (shard,) = cache.folder.iterdir()
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    assert stat.S_IMODE(shard.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert stat.S_IMODE(shard.stat().st_mode) == 0o666 & ~umask
    again = EmbeddingCache(tmp_path, "model-a")
    np.testing.assert_array_equal(again.get(["k2", "k1"]), np.eye(2, 3, dtype=np.float32)[::-1])
