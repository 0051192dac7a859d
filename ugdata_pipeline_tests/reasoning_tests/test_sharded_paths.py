"""Paths built a shard at a time on hop halos equal the paths of the whole city: tiny cities and Karhula."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from ugdata_pipeline.cities import load_registry
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.graph.crs import city_metric_crs
from ugdata_pipeline.graph.shards import image_shards, shard_keys
from ugdata_pipeline.imagery.anchor import anchor_images
from ugdata_pipeline.imagery.cameras import sample_cameras
from ugdata_pipeline.imagery.splits import assign_splits
from ugdata_pipeline.osm import load_city_osm
from ugdata_pipeline.reasoning.path_schema import PathConfig
from ugdata_pipeline.reasoning.paths import build_paths
from ugdata_pipeline.reasoning.place_graph import build_place_graph
from ugdata_pipeline.reasoning.sharded import build_paths_by_shard, combine_outcomes, halo_hops, iter_path_shards
from ugdata_pipeline.table_files import frame_to_parquet_bytes
from ugdata_pipeline_tests.reasoning_tests.conftest import Anchored
from ugdata_pipeline_tests.tiny_city import CRS_METRIC, tiny_city


def _assert_same(whole, sharded) -> None:
    pd.testing.assert_frame_equal(sharded.paths, whole.paths)
    pd.testing.assert_frame_equal(sharded.missing, whole.missing)
    assert sharded.counts == whole.counts
    # the stored bytes too: the IO manager writes the same file either way
    assert frame_to_parquet_bytes(sharded.paths) == frame_to_parquet_bytes(whole.paths)


def _tiles_left(city: Anchored, paths: pd.DataFrame, size_m: float, crs_metric: str) -> int:
    """How many paths reach a node outside their image's tile (the halo is what makes them right)."""
    nodes = city.nodes.set_index("node_id")
    x, y = Transformer.from_crs("EPSG:4326", crs_metric, always_xy=True).transform(nodes["lon"], nodes["lat"])
    tile = pd.Series(shard_keys(x, y, size_m=size_m), index=nodes.index)
    image_tile = tile.reindex(paths["image_node"]).to_numpy()
    return sum(any(tile[n] != own for n in walk[1:]) for walk, own in zip(paths["path_nodes"], image_tile, strict=True))


@pytest.mark.parametrize("size_m", [60.0, 100.0, 150.0, 250.0, 10_000.0])
def test_grid_city_sharded_equals_whole(grid_anchored: Anchored, size_m: float) -> None:
    city = grid_anchored
    whole = build_paths(city.nodes, city.edges, city.images, city="gridtown")
    shards = image_shards(city.images, crs_metric=CRS_METRIC, size_m=size_m)
    sharded = build_paths_by_shard(city.nodes, city.edges, city.images, shards, city="gridtown")
    _assert_same(whole, sharded)
    if size_m <= 150:
        assert shards.nunique() >= 9
        assert _tiles_left(city, whole.paths, size_m, CRS_METRIC) > len(whole.paths) // 2


def test_tiny_city_known_route_is_found_from_its_own_shard(tiny_anchored: Anchored) -> None:
    """Image ``a``'s route to the 'Corner Cafe' leaves its 100 m tile; on its halo it is the same route."""
    city = tiny_anchored
    whole = build_paths(city.nodes, city.edges, city.images, city="tinytown")
    shards = image_shards(city.images, crs_metric=CRS_METRIC, size_m=100)
    assert shards.nunique() == 3
    parts = {s.key: s for s in iter_path_shards(city.nodes, city.edges, city.images, shards, city="tinytown")}
    own = parts[shards.iloc[0]]
    assert own.images["image_id"].tolist() == ["a"]
    assert len(own.nodes) < len(city.nodes)  # a halo, not the city
    a_whole = whole.paths[whole.paths["image_id"] == "a"].reset_index(drop=True)
    pd.testing.assert_frame_equal(own.result.paths.reset_index(drop=True), a_whole)
    assert _tiles_left(city, a_whole, 100, CRS_METRIC) > 0
    sharded = build_paths_by_shard(city.nodes, city.edges, city.images, shards, city="tinytown")
    _assert_same(whole, sharded)


def test_a_halo_numbers_strata_with_the_city_s_categories(grid_anchored: Anchored) -> None:
    city = grid_anchored
    graph = build_place_graph(city.nodes, city.edges)
    assert graph.categories == tuple(sorted(set(city.nodes.loc[city.nodes["kind"] != "image", "category"].fillna(""))))
    shop_free = city.nodes[city.nodes["category"].fillna("") != "shop"]
    assert "shop" not in build_place_graph(shop_free, city.edges).categories
    assert "shop" in build_place_graph(shop_free, city.edges, categories=graph.categories).categories
    without_shop = tuple(c for c in graph.categories if c != "shop")
    with pytest.raises(ValueError, match=r"categories lacks \['shop'\] of the nodes' categories"):
        build_place_graph(city.nodes, city.edges, categories=without_shop)


def test_the_halo_is_the_walk_s_reach_plus_a_step_for_targets_that_read_their_neighbours() -> None:
    assert halo_hops(PathConfig()) == 7
    assert halo_hops(PathConfig(max_hops=4)) == 3
    assert halo_hops(PathConfig(target_kinds=("poi", "crossing"))) == 8


def test_no_images_and_a_wrong_key_count() -> None:
    city = build_urban_graph(tiny_city(), city_name="T", country="F")
    empty = pd.DataFrame(columns=["image_id", "source", "lon", "lat", "compass_angle", "split", "street_node"])
    result = build_paths_by_shard(city.nodes, city.edges, empty, pd.Series([], dtype=object), city="t")
    assert result.paths.empty and result.missing.empty
    with pytest.raises(ValueError, match="shards has 2 keys for 0 images"):
        next(iter_path_shards(city.nodes, city.edges, empty, pd.Series(["a", "b"]), city="t"))
    with pytest.raises(ValueError, match="at least one outcome"):
        combine_outcomes([])


@pytest.fixture(scope="module")
def karhula() -> tuple[Anchored, str]:
    """Bundled Karhula with cameras every 60 m (no pixels: paths read positions only), anchored, split as held out."""
    registry_city = load_registry().get("karhula")
    extract = load_city_osm(registry_city)
    crs = city_metric_crs(extract.streets)
    graph = build_urban_graph(extract, city_name="Karhula", country="Finland")
    cameras = sample_cameras(extract.streets, crs_metric=crs, spacing_m=60.0, city_slug="karhula")
    images = cameras.rename(columns={"camera_id": "image_id"})
    images["source"] = "render"
    anchored = anchor_images(images, graph.nodes, city_name="Karhula", country="Finland", crs_metric=crs)
    split = assign_splits(anchored.images, city_split="train", crs_metric=crs)
    nodes = pd.concat([graph.nodes, anchored.image_nodes], ignore_index=True)
    edges = pd.concat([graph.edges, anchored.image_edges], ignore_index=True)
    return Anchored(nodes, edges, split, graph), crs


@pytest.mark.parametrize("size_m", [300.0, 1000.0])
def test_karhula_in_shards_equals_karhula_whole(karhula: tuple[Anchored, str], size_m: float) -> None:
    city, crs = karhula
    whole = build_paths(city.nodes, city.edges, city.images, city="karhula")
    assert len(whole.paths) > 5000 and set(city.images["split"]) >= {"train", "test", "excluded"}
    shards = image_shards(city.images, crs_metric=crs, size_m=size_m)
    assert shards.nunique() >= (40 if size_m == 300 else 6)
    sharded = build_paths_by_shard(city.nodes, city.edges, city.images, shards, city="karhula")
    _assert_same(whole, sharded)
    assert _tiles_left(city, whole.paths, size_m, crs) > 0
    assert np.isin(["images", "paths", "missing/excluded"], list(sharded.counts)).all()


def test_a_halo_short_of_the_walk_gives_other_paths(karhula: tuple[Anchored, str], monkeypatch) -> None:
    """The control: a halo one step short of a walk's reach loses paths on Karhula."""
    import ugdata_pipeline.reasoning.sharded as sharded_module

    city, crs = karhula
    whole = build_paths(city.nodes, city.edges, city.images, city="karhula")
    real = sharded_module.hop_halo
    monkeypatch.setattr(sharded_module, "hop_halo", lambda csr, sources, hops: real(csr, sources, hops=hops - 1))
    shards = image_shards(city.images, crs_metric=crs, size_m=300)
    short = build_paths_by_shard(city.nodes, city.edges, city.images, shards, city="karhula")
    assert len(short.paths) < len(whole.paths)
