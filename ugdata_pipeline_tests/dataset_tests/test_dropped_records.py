"""One record that breaks a per-record rule is dropped and reported; many of them fail the build by name."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from ugdata_pipeline.assets.dataset import RecordsConfig, training_records
from ugdata_pipeline.dataset.records import (
    DROPPED_RECORD_COLUMNS,
    RULE_NAMES_TARGET,
    assemble_training_records,
    build_training_records,
    negatives_within_split,
    query_leaks,
)
from ugdata_pipeline.errors import IncompleteResultError
from ugdata_pipeline.reasoning.mentions import mentions_name
from ugdata_pipeline_tests.dataset_tests.test_records import make_captions, make_images, make_paths

NAME = "Street View"  # a real café name that two of the four stage-1 path instructions contain


def path_instruction_of() -> dict[str, str]:
    """The stage-1 path instruction each image gets (picked per image and pair type, not per target)."""
    images = make_images()
    records = build_training_records(images, make_captions(images), make_paths(images), stage=1)
    paths = records[records["pair_type"] == "path"]
    return dict(zip(paths["image_id"], paths["instruction"], strict=False))


def renamed(paths: pd.DataFrame, image_ids: set[str]) -> pd.DataFrame:
    """Every path of these images leads to a place called "Street View"."""
    out = paths.copy()
    hit = out["image_id"].isin(image_ids)
    out.loc[hit, "target_name"] = NAME
    out.loc[hit, "target_text"] = f"You can reach {NAME} (cafe) 100 m north of the image."
    return out


def test_a_record_whose_instruction_names_its_target_is_dropped_and_reported(caplog):
    instructions = path_instruction_of()
    hit = sorted(i for i, text in instructions.items() if mentions_name(text, NAME))
    assert hit and len(hit) < len(instructions)  # the fixture really has both cases
    images = make_images()
    clean = assemble_training_records(images, make_captions(images), make_paths(images), stage=1)
    assert clean.dropped.empty
    result = assemble_training_records(
        images, make_captions(images), renamed(make_paths(images), {hit[0]}), stage=1, city="city 'tinytown'"
    )
    # the two path records of that one image go (2 of 46, under 5 %); everything else is as before
    assert list(result.dropped.columns) == list(DROPPED_RECORD_COLUMNS)
    assert result.dropped["record_id"].tolist() == [f"s1-ugdata-{hit[0]}-path-0", f"s1-ugdata-{hit[0]}-path-1"]
    assert set(result.dropped["rule"]) == {RULE_NAMES_TARGET}
    assert set(result.dropped["detail"]) == {"target 'Street View'"}
    assert len(result.records) == len(clean.records) - 2
    kept = clean.records[~clean.records["record_id"].isin(result.dropped["record_id"])]
    pd.testing.assert_series_equal(result.records["record_id"], kept["record_id"].reset_index(drop=True))
    assert negatives_within_split(result.records).passed  # no negative carries a dropped record's text
    assert query_leaks(result.records).passed
    assert "city 'tinytown': dropped 2 of 46 stage-1 ugdata training records" in caplog.text


def test_too_many_dropped_records_fail_the_build_naming_city_count_and_rule():
    instructions = path_instruction_of()
    images = make_images()
    expected = 2 * sum(mentions_name(text, NAME) for text in instructions.values())
    assert expected / 46 > 0.05
    paths = renamed(make_paths(images), set(instructions))
    with pytest.raises(
        IncompleteResultError,
        match=rf"city 'tinytown': {expected} of 46 stage-1 ugdata training records \(\d+\.\d%\) break "
        rf"a per-record rule \(instruction names the path's target: {expected}\), over the 5% "
        "limit",
    ):
        assemble_training_records(images, make_captions(images), paths, stage=1, city="city 'tinytown'")
    # the limit is an option: a looser one keeps the build and reports every drop
    loose = assemble_training_records(images, make_captions(images), paths, stage=1, max_dropped_share=0.5)
    assert len(loose.dropped) == expected


def test_training_records_asset_reports_dropped_records():
    images = make_images()
    instructions = path_instruction_of()
    hit = sorted(i for i, text in instructions.items() if mentions_name(text, NAME))
    subgraphs = pd.DataFrame({"image_id": images["image_id"]})
    context = dg.build_asset_context(partition_key="helsinki")
    outputs = list(
        training_records(
            context,
            RecordsConfig(),
            images=images,
            captions=make_captions(images),
            srp=renamed(make_paths(images), {hit[0]}),
            subgraphs=subgraphs,
        )
    )
    output = next(o for o in outputs if isinstance(o, dg.Output))
    checks = {o.check_name: o.passed for o in outputs if isinstance(o, dg.AssetCheckResult)}
    assert checks == {"no_query_contains_target": True, "negatives_within_split": True}
    # the path records of that image whose instruction (stage 1 or 2) holds the name; the baseline has no paths
    clean = pd.concat(
        [
            build_training_records(images, make_captions(images), make_paths(images), stage=stage, subgraphs=subgraphs)
            for stage in (1, 2)
        ]
    )
    own = clean[(clean["image_id"] == hit[0]) & (clean["pair_type"] == "path")]
    expected = sum(mentions_name(text, NAME) for text in own["instruction"])
    assert expected >= 2
    assert output.metadata["dropped_records"].value == expected
    examples = [record.data for record in output.metadata["dropped_examples"].value.records]
    assert f"s1-ugdata-{hit[0]}-path-0" in {row["record_id"] for row in examples}
    assert {row["rule"] for row in examples} == {"instruction names the path's target"}
