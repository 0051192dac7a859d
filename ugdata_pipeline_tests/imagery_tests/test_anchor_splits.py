"""Anchoring images to streets and spatially disjoint splits, on the tiny city."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from ugdata_pipeline.graph.build import UrbanGraph
from ugdata_pipeline.graph.schema import EDGE_COLUMNS, MIN_EDGE_DISTANCE_M, NODE_COLUMNS
from ugdata_pipeline.graph.text import compass_word
from ugdata_pipeline.graph.validate import endpoints_exist
from ugdata_pipeline.imagery import (
    EXCLUDED,
    ImageryInputError,
    anchor_images,
    assign_splits,
    cell_id,
    no_sequence_spans_splits,
    no_test_near_train,
)
from ugdata_pipeline.imagery.splits import SPLITS, _block_counts, _enforce_buffer, _sweep
from ugdata_pipeline_tests.tiny_city import CRS_METRIC, lonlat


def make_images(points: dict[str, tuple[float, float]], source: str = "render") -> pd.DataFrame:
    """Images at layout metres ``{image_id: (x, y)}``."""
    coords = [lonlat(x, y) for x, y in points.values()]
    return pd.DataFrame(
        {
            "image_id": list(points),
            "source": source,
            "lon": [c[0] for c in coords],
            "lat": [c[1] for c in coords],
            "compass_angle": 90.0,
            "path": [f"images/{i}.jpg" for i in points],
        }
    )


def anchor(images: pd.DataFrame, graph: UrbanGraph, **kwargs):
    return anchor_images(
        images, graph.nodes, city_name="Tinytown", country="Finland", crs_metric=graph.crs_metric, **kwargs
    )


# --- anchoring -----------------------------------------------------------------------------------------------


def test_image_snaps_to_nearest_street_with_bearing(tiny_graph: UrbanGraph) -> None:
    result = anchor(make_images({"a": (50, 5), "far": (150, 300)}), tiny_graph, max_snap_m=50.0)
    assert list(result.images["image_id"]) == ["a"]
    row = result.images.iloc[0]
    assert row["street_node"] == "street:alpha-street"
    assert row["snap_distance_m"] == pytest.approx(5.0, abs=0.05)
    assert row["path"] == "images/a.jpg"  # other input columns are kept
    edge = result.image_edges.iloc[0]
    assert edge["src"] == "image:render:a"
    assert edge["dst"] == "street:alpha-street"
    assert edge["kind"] == "image_street"
    assert edge["street_name"] == "Alpha Street"
    assert edge["distance_m"] == pytest.approx(5.0, abs=0.05)
    assert compass_word(edge["bearing_deg"]) == "south"
    assert list(result.image_edges.columns) == list(EDGE_COLUMNS)


def test_far_image_is_dropped_and_counted(tiny_graph: UrbanGraph) -> None:
    result = anchor(make_images({"a": (50, 5), "far": (150, 300)}), tiny_graph, max_snap_m=50.0)
    assert result.dropped == 1
    assert result.dropped_ids == ["far"]
    wider = anchor(make_images({"far": (150, 300)}), tiny_graph, max_snap_m=150.0)
    assert wider.dropped == 0
    assert wider.images["street_node"].iloc[0] == "street:gamma-street"


def test_image_nodes_and_edge_endpoints(tiny_graph: UrbanGraph) -> None:
    images = make_images({"a": (50, 5), "b": (100, 150), "c": (160, 97), "on": (30, 0)})
    result = anchor(images, tiny_graph)
    nodes = result.image_nodes
    assert list(nodes.columns) == list(NODE_COLUMNS)
    assert list(nodes["node_id"]) == ["image:render:a", "image:render:b", "image:render:c", "image:render:on"]
    assert set(nodes["kind"]) == {"image"} and set(nodes["category"]) == {"image"}
    assert nodes["name"].isna().all() and nodes["address"].isna().all() and nodes["length_m"].isna().all()
    assert "City: Tinytown" in nodes["node_text"].iloc[0] and "Country: Finland" in nodes["node_text"].iloc[0]
    assert nodes.crs.to_epsg() == 4326
    assert nodes.geometry.x.to_numpy() == pytest.approx(images["lon"].to_numpy())
    all_nodes = pd.concat([tiny_graph.nodes, nodes], ignore_index=True)
    assert endpoints_exist(all_nodes, result.image_edges).passed
    assert dict(zip(result.images["image_id"], result.images["street_node"], strict=True)) == {
        "a": "street:alpha-street",
        "b": "street:second-avenue",
        "c": "street:beta-street",
        "on": "street:alpha-street",
    }
    # an image lying on its street still gets an edge of the floor length
    assert result.image_edges["distance_m"].min() == MIN_EDGE_DISTANCE_M


def test_tie_between_streets_goes_to_smaller_node_id(tiny_graph: UrbanGraph) -> None:
    # (50, 50) is 50 m from Alpha Street, Beta Street and First/Second Avenue: the smallest id wins
    result = anchor(make_images({"mid": (50, 50)}), tiny_graph, max_snap_m=60.0)
    assert result.images["street_node"].iloc[0] == "street:alpha-street"


def test_source_label_fills_source(tiny_graph: UrbanGraph) -> None:
    images = make_images({"a": (50, 5)}).drop(columns="source")
    result = anchor(images, tiny_graph, source_label="mapillary")
    assert result.image_nodes["node_id"].iloc[0] == "image:mapillary:a"


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda df: df.drop(columns="compass_angle"), {}, "missing column.*compass_angle"),
        (lambda df: df.assign(lat=[np.nan, df["lat"].iloc[1]]), {}, "images.lat has 1 NaN or out-of-range"),
        (lambda df: df.assign(lon=[200.0, df["lon"].iloc[1]]), {}, "images.lon .*'a': 200.0"),
        (lambda df: df.assign(image_id=["a", "a"]), {}, "image_id must be unique.*'a'"),
        (lambda df: df, {"max_snap_m": 0.0}, "max_snap_m must be .* > 0 .* got 0.0"),
        (lambda df: df, {"max_snap_m": -5}, "max_snap_m .* got -5"),
        (lambda df: df, {"source_label": "mapillary"}, "source_label='mapillary' contradicts"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(tiny_graph: UrbanGraph, mutate, kwargs, match) -> None:
    images = mutate(make_images({"a": (50, 5), "b": (60, 5)}))
    with pytest.raises(ImageryInputError, match=match):
        anchor(images, tiny_graph, **kwargs)


def test_bad_input_error_is_a_value_error(tiny_graph: UrbanGraph) -> None:
    with pytest.raises(ValueError, match="graph_nodes holds no 'street' nodes"):
        anchor(make_images({"a": (50, 5)}), UrbanGraph(tiny_graph.nodes.iloc[:0], tiny_graph.edges, "EPSG:32635"))


def test_imagery_never_imports_dagster() -> None:
    import importlib

    importlib.import_module("ugdata_pipeline.imagery")
    for module in ("ugdata_pipeline.imagery.anchor", "ugdata_pipeline.imagery.splits"):
        source = sys.modules[module].__file__
        assert source is not None
        with open(source, encoding="utf-8") as handle:
            assert "dagster" not in handle.read()


# --- splits --------------------------------------------------------------------------------------------------


def line_city(length_m: float = 3000.0, step_m: float = 20.0, sequence_every: int | None = None) -> pd.DataFrame:
    """Images every ``step_m`` along an east-west line of ``length_m`` (at y = 10 m, inside one block row)."""
    xs = np.arange(0.0, length_m + step_m / 2, step_m)
    images = make_images({f"i{k:04d}": (float(x), 10.0) for k, x in enumerate(xs)})
    if sequence_every:
        images["sequence_id"] = [f"s{k // sequence_every}" for k in range(len(images))]
    return images


def test_held_out_city_is_all_test() -> None:
    out = assign_splits(line_city(500.0), city_split="held_out", crs_metric=CRS_METRIC)
    assert set(out["split"]) == {"test"}
    assert out["cell"].notna().all()


def test_training_city_has_disjoint_buffered_splits() -> None:
    images = line_city()
    out = assign_splits(
        images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, seed=0, layout="blocks"
    )
    counts = out["split"].value_counts()
    assert all(counts.get(s, 0) > 0 for s in ("train", "val", "test"))
    assert counts["train"] > counts["test"]
    assert len(out) == len(images) and list(out["image_id"]) == list(images["image_id"])
    assert no_test_near_train(out, 100.0, crs_metric=CRS_METRIC).passed
    # every pair of splits is buffered, not only train/test
    xy = np.column_stack([np.arange(len(out)) * 20.0])
    for a, b in (("val", "test"), ("train", "val"), ("train", "test")):
        gap = np.abs(xy[out["split"] == a][:, None, 0] - xy[out["split"] == b][None, :, 0])
        assert gap.min() >= 100.0
    assert (out["split"] == EXCLUDED).sum() > 0


def test_default_options_on_the_line_city() -> None:
    out = assign_splits(line_city(), city_split="train", crs_metric=CRS_METRIC)  # 500 m buffer, 1 km blocks
    assert no_test_near_train(out, 500.0, crs_metric=CRS_METRIC).passed
    assert (out["split"] == "test").any()


def test_validator_detects_a_planted_violation() -> None:
    out = assign_splits(line_city(), city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, seed=0)
    test_pos = np.flatnonzero(out["split"].to_numpy() == "test")[0]
    planted = out.copy()
    planted.loc[planted.index[test_pos + 1], "split"] = "train"  # 20 m from a test image
    outcome = no_test_near_train(planted, 100.0, crs_metric=CRS_METRIC)
    assert not outcome.passed
    assert outcome.observed >= 1
    assert out["image_id"].iloc[test_pos] in outcome.examples


def test_same_seed_same_splits_other_seed_differs() -> None:
    images = line_city()
    first = assign_splits(images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, seed=7)
    again = assign_splits(images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, seed=7)
    other = assign_splits(images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, seed=8)
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()


def test_sequences_never_span_splits() -> None:
    images = line_city(sequence_every=17)  # 340 m sequences straddle the 250 m blocks
    for seed in range(5):
        out = assign_splits(images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, seed=seed)
        clean = no_sequence_spans_splits(out)
        assert (clean.passed, clean.observed, clean.expected) == (True, 0, "0 sequences spanning splits")
        assert no_test_near_train(out, 100.0, crs_metric=CRS_METRIC).passed
    spanning = out.copy()
    spanning.loc[spanning.index[:2], "split"] = ["train", "test"]
    outcome = no_sequence_spans_splits(spanning)
    assert not outcome.passed and outcome.examples == ["s0"] and outcome.observed == 1


def test_cell_is_the_35_m_grid_cell() -> None:
    lon, lat = zip(*(lonlat(x, 10.0) for x in (0.0, 1.0, 40.0)), strict=True)
    cells = cell_id(lon, lat, crs_metric=CRS_METRIC)
    # layout origin (385000, 6672000) is in cell (11000, 190628) of the 35 m grid
    assert cells.tolist() == ["11000_190628", "11000_190628", "11001_190628"]
    out = assign_splits(line_city(100.0), city_split="held_out", crs_metric=CRS_METRIC)
    assert out["cell"].iloc[0] == "11000_190628"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"city_split": "validation"}, "city_split must be 'train' or 'held_out'.*'validation'"),
        ({"city_split": "train", "buffer_m": -1.0}, "buffer_m must be .* >= 0 .* got -1.0"),
        ({"city_split": "train", "block_m": 0}, "block_m must be .* > 0 .* got 0"),
        ({"city_split": "train", "fractions": (0.5, 0.5, 0.5)}, r"fractions .* got \(0.5, 0.5, 0.5\)"),
    ],
)
def test_bad_split_options_are_rejected(kwargs, match) -> None:
    with pytest.raises(ImageryInputError, match=match):
        assign_splits(line_city(100.0), crs_metric=CRS_METRIC, **kwargs)


def test_splits_reject_bad_images() -> None:
    images = line_city(100.0).drop(columns="lat")
    with pytest.raises(ImageryInputError, match=r"missing column.*lat"):
        assign_splits(images, city_split="train", crs_metric=CRS_METRIC)


def grid_city(width_m: float, height_m: float, step_m: float = 25.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Images on a regular grid covering ``width_m`` x ``height_m`` (a small city like the bundled Helsinki),
    and their north coordinates in metres."""
    xs, ys = np.meshgrid(np.arange(0.0, width_m, step_m), np.arange(0.0, height_m, step_m))
    points = {f"g{k:05d}": (float(x), float(y)) for k, (x, y) in enumerate(zip(xs.ravel(), ys.ravel(), strict=True))}
    return make_images(points), ys.ravel()


def test_small_city_uses_the_sweep_layout_with_buffered_bands() -> None:
    images, y = grid_city(1000.0, 1650.0)
    out = assign_splits(
        images, city_split="train", crs_metric=CRS_METRIC, buffer_m=500.0, fractions=(0.7, 0.1, 0.2), seed=0
    )
    share = out["split"].value_counts(normalize=True)
    split = out["split"].to_numpy()
    # test is the far end along the longer (north-south) axis and holds its share of the images
    assert share["test"] == pytest.approx(0.2, abs=0.01)
    # bands, not a checkerboard: test | 500 m buffer | val | 250 m val buffer | train
    assert y[split == "test"].min() >= y[split == "val"].max() + 475.0
    assert y[split == "val"].min() >= y[split == "train"].max() + 225.0
    # only the two buffer bands are lost
    assert share[EXCLUDED] == pytest.approx(750.0 / 1650.0, abs=0.04)
    assert share["train"] > 0.25 and share["val"] > 0.03
    assert no_test_near_train(out, 500.0, crs_metric=CRS_METRIC).passed
    # val is buffered from train too (checkpoint selection must not see train's neighbours)
    val_only = out.assign(split=out["split"].replace({"val": "test", "test": EXCLUDED}))
    assert no_test_near_train(val_only, 250.0, crs_metric=CRS_METRIC).passed
    wider = assign_splits(
        images, city_split="train", crs_metric=CRS_METRIC, buffer_m=500.0, fractions=(0.7, 0.1, 0.2), val_buffer_m=400.0
    )
    assert (wider["split"] == "train").sum() < (split == "train").sum()
    other = assign_splits(
        images, city_split="train", crs_metric=CRS_METRIC, buffer_m=500.0, fractions=(0.7, 0.1, 0.2), seed=1
    )
    assert y[other["split"] == "test"].max() < y[other["split"] == "train"].min()  # an odd seed takes the other end


def test_layouts_can_be_forced_and_auto_uses_sweep_for_few_blocks() -> None:
    images = line_city(3000.0)  # 13 blocks of 250 m
    forced = assign_splits(
        images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, layout="blocks"
    )
    swept = assign_splits(
        images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, layout="sweep"
    )
    assert not swept["split"].equals(forced["split"])
    assert (
        no_test_near_train(swept, 100.0, crs_metric=CRS_METRIC).passed
        and no_test_near_train(forced, 100.0, crs_metric=CRS_METRIC).passed
    )
    small = line_city(1000.0)  # 5 blocks: too few to deal, whatever they would keep
    pd.testing.assert_frame_equal(
        assign_splits(small, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0),
        assign_splits(small, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, layout="sweep"),
    )
    with pytest.raises(ImageryInputError, match="layout must be"):
        assign_splits(images, city_split="train", crs_metric=CRS_METRIC, layout="rings")


def test_auto_layout_keeps_the_layout_that_trains_on_more_images() -> None:
    images = line_city(3000.0)
    by = {
        layout: assign_splits(
            images, city_split="train", crs_metric=CRS_METRIC, buffer_m=100.0, block_m=250.0, seed=0, layout=layout
        )
        for layout in ("auto", "blocks", "sweep")
    }
    train = {layout: int((out["split"] == "train").sum()) for layout, out in by.items()}
    best = max(("blocks", "sweep"), key=lambda layout: (train[layout], layout == "blocks"))
    assert train["blocks"] != train["sweep"]  # the choice matters on this city
    assert by["auto"]["split"].tolist() == by[best]["split"].tolist()


def test_a_sequence_takes_the_split_most_of_its_images_hold_ties_going_to_test_then_val() -> None:
    from ugdata_pipeline.imagery.splits import _sequence_majority

    sequences = pd.Series(["s1", "s1", "s1", "s2", "s2", None, "s3", "s3", "s4"])
    split = np.array(["train", "train", "test", "val", "test", "train", "train", "val", "excluded"], dtype=object)
    got = _sequence_majority(sequences, split)
    assert got.tolist() == ["train", "train", "train", "test", "test", "train", "val", "val", "excluded"]
    assert split.tolist()[2] == "test"  # the input is left as it was


# --- surviving mutants of make mutation: the split arithmetic with known values ------------------------------------


@pytest.mark.parametrize(
    ("n_blocks", "fractions", "counts"),
    [
        (10, (0.8, 0.1, 0.1), [8, 1, 1]),
        (7, (0.5, 0.25, 0.25), [3, 2, 2]),  # largest remainders (0.75, 0.75) win, not train's 0.5
        (3, (0.8, 0.1, 0.1), [1, 1, 1]),  # val and test each take a block from train
        (2, (0.8, 0.1, 0.1), [1, 1, 0]),  # train keeps its last block
        (5, (0.9, 0.0, 0.1), [4, 0, 1]),  # a zero fraction gets nothing
    ],
)
def test_blocks_are_dealt_by_largest_remainders_with_one_per_positive_share(n_blocks, fractions, counts) -> None:
    assert _block_counts(n_blocks, fractions).tolist() == counts


def test_sweep_bands_on_a_line_with_a_point_exactly_at_the_buffer() -> None:
    # 17 points 100 m apart on x; test = the east end (2 of 17); 1400 is 100 m from test (dropped from the bands),
    # 1300 exactly 200 m (kept: the buffer is "closer than"); val = round(0.2 / 0.9 * 14) = 3 points past it
    x, y = np.arange(17) * 100.0, np.zeros(17)
    split = _sweep(x, y, (0.7, 0.2, 0.1), 0, 200.0)
    assert split.tolist() == ["train"] * 11 + ["val"] * 3 + ["train"] + ["test"] * 2
    # no buffer: val = round(0.3 / 0.8 * 16) = 6 of the 16 left
    split = _sweep(np.arange(20) * 100.0, np.zeros(20), (0.5, 0.3, 0.2), 0, 0.0)
    assert split.tolist() == ["train"] * 10 + ["val"] * 6 + ["test"] * 4
    # no val share: no val image
    assert "val" not in set(_sweep(np.arange(20) * 100.0, np.zeros(20), (0.9, 0.0, 0.1), 0, 0.0))
    # an odd seed puts test at the other end
    assert _sweep(x, y, (0.7, 0.2, 0.1), 1, 200.0).tolist()[:2] == ["test", "test"]


def test_sweep_runs_along_x_when_both_axes_are_as_long() -> None:
    # (0, 100) and (100, 0): equal extents; along x, the east point is the test end
    assert _sweep(np.array([0.0, 100.0]), np.array([100.0, 0.0]), (0.5, 0.0, 0.5), 0, 0.0).tolist() == [
        "train",
        "test",
    ]
    # a north-south line runs along y
    assert _sweep(np.zeros(4), np.arange(4) * 100.0, (0.75, 0.0, 0.25), 0, 0.0).tolist() == ["train"] * 3 + ["test"]


def test_buffer_excludes_val_near_test_then_train_near_either_and_keeps_exactly_the_distance() -> None:
    x = np.array([0.0, 100.0, 200.0, 300.0, 2000.0, 2100.0, 2200.0])
    split = np.array(["test", "val", "train", "train", "val", "train", "train"], dtype=object)
    out = _enforce_buffer(split, x, np.zeros(7), 200.0, 150.0)
    # val at 100 m from test goes; train at exactly 200 m stays; train 100 m from the val at 2000 goes
    assert out.tolist() == ["test", EXCLUDED, "train", "train", "val", EXCLUDED, "train"]
    # without any val image only the test buffer applies
    no_val = np.array(["test", "train", "train"], dtype=object)
    assert _enforce_buffer(no_val, np.array([0.0, 100.0, 500.0]), np.zeros(3), 200.0, 150.0).tolist() == [
        "test",
        EXCLUDED,
        "train",
    ]


def test_split_defaults_and_the_columns_it_needs() -> None:
    images = line_city(1500.0)[["image_id", "lon", "lat"]]  # no other column is needed
    default = assign_splits(images, city_split="train", crs_metric=CRS_METRIC)
    assert default.equals(assign_splits(images, city_split="train", crs_metric=CRS_METRIC, buffer_m=500.0, seed=0))
    assert not default.equals(assign_splits(images, city_split="train", crs_metric=CRS_METRIC, seed=1))
    # a zero buffer (and a zero val buffer) are allowed; sub-metre distances are distances
    assert set(
        assign_splits(images, city_split="train", crs_metric=CRS_METRIC, buffer_m=0.0, val_buffer_m=0.0)["split"]
    ) <= set(SPLITS)
    assert len(
        assign_splits(images, city_split="train", crs_metric=CRS_METRIC, buffer_m=0.5, block_m=0.5, layout="blocks")
    ) == len(images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"buffer_m": float("inf")},
            "buffer_m must be a finite distance >= 0 in metres, got inf; the default is 500.0",
        ),
        ({"buffer_m": True}, "buffer_m must be a finite distance >= 0 in metres, got True; the default is 500.0"),
        (
            {"val_buffer_m": -1.0},
            "val_buffer_m must be a finite distance >= 0 in metres, got -1.0; leave it out for the default",
        ),
        (
            {"block_m": 0.0},
            "block_m must be a finite distance > 0 in metres, got 0.0; leave it out for max(2 * buffer_m, 250)",
        ),
        (
            {"fractions": (0.8, 0.3)},
            "fractions must be three shares >= 0 for (train, val, test) summing to 1, got (0.8, 0.3); "
            "e.g. (0.8, 0.1, 0.1)",
        ),
        (
            {"fractions": (1.2, -0.1, -0.1)},
            "fractions must be three shares >= 0 for (train, val, test) summing to 1, got (1.2, -0.1, -0.1); "
            "e.g. (0.8, 0.1, 0.1)",
        ),
        ({"seed": True}, "seed must be an integer, got True"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ],
)
def test_split_option_errors_are_exact(kwargs, message) -> None:
    with pytest.raises(ImageryInputError) as caught:
        assign_splits(line_city(100.0), city_split="train", crs_metric=CRS_METRIC, **kwargs)
    assert str(caught.value) == message


def test_zero_val_fraction_is_allowed() -> None:
    out = assign_splits(line_city(3000.0), city_split="train", fractions=(0.9, 0.0, 0.1), crs_metric=CRS_METRIC)
    assert set(out["split"]) == {"train", "test", EXCLUDED}


def test_cells_of_one_point_none_and_a_given_crs() -> None:
    assert cell_id([0.0, 0.001], [0.0, 0.0], crs_metric="EPSG:3857").tolist() == ["0_0", "3_0"]  # 111.3 m east
    one = cell_id([24.94], [60.17], crs_metric=CRS_METRIC)
    assert one.shape == (1,) and isinstance(one[0], str)
    empty = cell_id([], [], crs_metric=CRS_METRIC)
    assert empty.shape == (0,) and empty.dtype == object
    with pytest.raises(ImageryInputError) as caught:
        cell_id([0.0], [0.0], crs_metric=CRS_METRIC, size_m=0)
    assert str(caught.value) == "size_m must be a finite distance > 0 in metres, got 0; the thinning cell is 35.0"


def test_no_test_near_train_counts_and_names_exactly() -> None:
    images = make_images({"t": (0.0, 0.0), "near": (100.0, 0.0), "edge": (1000.0, 0.0), "tr": (1499.0, 0.0)})
    images["split"] = ["test", "train", "test", "train"]
    outcome = no_test_near_train(images, 500.0, crs_metric=CRS_METRIC)
    # t is 100 m from a train image; edge is 499 m from one: both count
    assert (outcome.passed, outcome.observed, outcome.expected) == (
        False,
        2,
        "0 test images within 500 m of a train image",
    )
    assert outcome.examples == ["t", "edge"]
    unbuffered = no_test_near_train(images, 0.0, crs_metric=CRS_METRIC)  # no buffer, nothing to break
    assert (unbuffered.passed, unbuffered.observed, unbuffered.expected) == (
        True,
        0,
        "0 test images within 0 m of a train image",
    )
    alone = images.assign(split=["test", "val", "test", "val"])  # no train image
    assert (
        no_test_near_train(alone, 500.0, crs_metric=CRS_METRIC).passed,
        no_test_near_train(alone, 500.0, crs_metric=CRS_METRIC).observed,
    ) == (True, 0)
    with pytest.raises(ImageryInputError) as caught:
        no_test_near_train(images, -1.0, crs_metric=CRS_METRIC)
    assert str(caught.value) == "buffer_m must be a finite distance >= 0 in metres, got -1.0"


def test_no_sequence_spans_splits_without_sequences_passes_with_zero() -> None:
    images = make_images({"a": (0.0, 0.0)}).assign(split="train")
    outcome = no_sequence_spans_splits(images)
    assert (outcome.passed, outcome.observed, outcome.expected) == (True, 0, "0 sequences spanning splits")


def test_blocks_layout_deals_whole_blocks_and_auto_takes_it_when_it_trains_more() -> None:
    # a 1 km square in 16 blocks of 250 m, no buffer: blocks deal 13 / 2 / 1 blocks (81 % train), the sweep 80 %
    # points at 12.5, 37.5, ... m: none on a block border (where projection round-off would pick the side)
    steps = np.arange(12.5, 1000.0, 25.0)
    images = make_images({f"g{i}_{j}": (float(a), float(b)) for i, a in enumerate(steps) for j, b in enumerate(steps)})
    options = {"city_split": "train", "buffer_m": 0.0, "block_m": 250.0, "crs_metric": CRS_METRIC}
    blocks = assign_splits(images, layout="blocks", **options)
    x, y = Transformer.from_crs("EPSG:4326", CRS_METRIC, always_xy=True).transform(images["lon"], images["lat"])
    block = pd.Series(
        list(zip(np.floor(np.asarray(x) / 250.0).astype(int), np.floor(np.asarray(y) / 250.0).astype(int), strict=True))
    )
    per_block = blocks.groupby(block.to_numpy())["split"].agg(set)
    assert len(per_block) == 16 and all(len(s) == 1 for s in per_block)  # every block has one split
    assert pd.Series([next(iter(s)) for s in per_block]).value_counts().to_dict() == {"train": 13, "val": 2, "test": 1}
    assert assign_splits(images, **options)["split"].tolist() == blocks["split"].tolist()  # auto: more train
    # the default block is max(2 x buffer, 250 m): 250 m for a 125 m buffer
    default = {**options, "buffer_m": 125.0}
    del default["block_m"]
    explicit = assign_splits(images, layout="blocks", **default, block_m=250.0)
    assert assign_splits(images, layout="blocks", **default)["split"].tolist() == explicit["split"].tolist()


def test_cells_follow_the_given_crs_and_cell_size() -> None:
    images = line_city(200.0)
    out = assign_splits(images, city_split="held_out", crs_metric="EPSG:3857", cell_size_m=100.0)
    assert out["cell"].tolist() == cell_id(images["lon"], images["lat"], size_m=100.0, crs_metric="EPSG:3857").tolist()
    # the metric CRS also measures the splits: web-mercator metres at 60 N are half as long, so a 500 m buffer is
    # a quarter of a kilometre on the ground and fewer images are excluded
    city = line_city(3000.0)
    utm = assign_splits(city, city_split="train", crs_metric=CRS_METRIC)
    mercator = assign_splits(city, city_split="train", crs_metric="EPSG:3857")
    assert (mercator["split"] == EXCLUDED).sum() < (utm["split"] == EXCLUDED).sum()
