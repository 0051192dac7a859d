"""Rendered image files get the mode of any other file the process writes (the umask), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest

from ugdata_pipeline.imagery.city_render import render_city
from ugdata_pipeline.imagery.render_config import RenderConfig
from ugdata_pipeline_tests.imagery_tests.test_render import CRS, make_extract
from ugdata_pipeline_tests.tiny_city import street_table


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def plain_mode(folder) -> int:
    """The mode ``open(..., "w")`` gives a new file in ``folder`` under the current umask."""
    probe = folder / "probe.txt"
    with open(probe, "w") as handle:
        handle.write("x")
    return stat.S_IMODE(probe.stat().st_mode)


def test_rendered_images_follow_the_umask(tmp_path, umask):
    extract = make_extract([], streets=street_table([(1, "East Road", "residential", [1, 2], [(0, 0), (300, 0)])]))
    result = render_city(
        extract, city_slug="town", crs_metric=CRS, root=tmp_path, config=RenderConfig(size=32, spacing_m=100.0)
    )
    assert len(result.images) >= 3
    modes = {stat.S_IMODE((tmp_path / path).stat().st_mode) for path in result.images["path"]}
    assert modes == {plain_mode(tmp_path)} == {0o666 & ~umask}
    assert sorted(p.name for p in (tmp_path / "town" / "images").iterdir() if p.name.startswith(".")) == []
