"""Places named "A", "The", "B": the reasoning and record stages judge a mention by one rule, so a city with such
names yields paths and records instead of failing at the record stage."""

from __future__ import annotations

import pytest

from ugdata_pipeline.dataset import INSTRUCTIONS, build_training_records, query_leaks
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.reasoning import build_paths, no_query_contains_target
from ugdata_pipeline.reasoning.mentions import is_weak_name, mentions_name
from ugdata_pipeline_tests.dataset_tests.test_records import make_captions
from ugdata_pipeline_tests.reasoning_tests.conftest import anchored, image_rows
from ugdata_pipeline_tests.tiny_city import tiny_city


def weak_name_city():
    """The tiny city with its café named "A", its bank "The" and its park "B"; four images in three splits."""
    extract = tiny_city()
    extract.pois["name"] = ["A", "The"]
    extract.aois["name"] = ["B"]
    graph = build_urban_graph(extract, city_name="Tinytown", country="Finland")
    images = image_rows([("a", 50, -8, 0.0), ("b", 100, 150, 90.0), ("d", 150, 0, 270.0), ("e", 0, 150, 0.0)])
    data = anchored(graph, images, ["train", "test", "train", "val"])
    data.images["path"] = [f"tinytown/images/{i}.png" for i in data.images["image_id"]]
    return data


@pytest.mark.parametrize(
    ("text", "name", "named"),
    [
        ("Name a place near this street view and explain how to get there.", "A", False),
        ("From the location of this image, where can you walk to and in which direction?", "The", False),
        ("Walk 8 m north to Alpha Street, then walk 10 m north to A.", "A", True),
        ("(image, nearest, The) (8.0m, 0°(N))", "The", True),
        ("Walk to b, then stop.", "B", False),
        ("walk along the corner of the square", "Of The", False),
        ("Walk 10 m to KAMPPI, then stop.", "Kamppi", True),  # ordinary names stay case-insensitive
        ("Walk along Kamppikatu.", "Kamppi", False),
        ("Walk past H&M.", "H&M", True),
        ("Walk 8 m to the h m store.", "H&M", False),
    ],
)
def test_one_rule_names_a_place_and_ignores_prose_for_weak_names(text, name, named):
    assert mentions_name(text, name) is named


def test_weak_names_are_single_letters_or_function_words_only():
    assert [is_weak_name(n) for n in ("A", "The", "b", "Of The", "H&M", "A1", "Ea", "Theatre", "")] == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_no_instruction_names_a_weak_place():
    """The fixed instruction set holds "a" and "the" everywhere; none of it names the places "A" or "The"."""
    texts = [t for by_type in INSTRUCTIONS.values() for options in by_type.values() for t in options]
    assert any(" a " in t for t in texts) and any(" the " in t for t in texts)
    assert not any(mentions_name(t, name) for t in texts for name in ("A", "The", "An"))


@pytest.mark.parametrize("seed", range(4))
def test_city_with_places_a_and_the_builds_paths_and_records(seed):
    data = weak_name_city()
    result = build_paths(data.nodes, data.edges, data.images, city="tinytown")
    paths = result.paths
    assert no_query_contains_target(paths, data.nodes).passed
    # "The" is a target now: "the destination" in a sentence does not name it (it used to reject every such path)
    assert {"A", "The", "B"} <= set(paths["target_name"])
    assert result.counts["rejected/target_name_in_query"] == 0
    # the record stage accepts what the reasoning stage let through: path records for every weak-named target
    records = build_training_records(data.images, make_captions(data.images), paths, stage=1, seed=seed)
    path_records = records[records["pair_type"] == "path"]
    assert len(path_records) == 2 * records["image_id"].nunique()
    assert query_leaks(records).passed
    assert any("You can reach A (food)" in p for p in path_records["positive"])
