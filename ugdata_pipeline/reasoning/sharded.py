"""Reasoning paths built one sub-city shard at a time, on the shard's hop halo: the same paths, memory per shard.

:func:`build_paths_by_shard` gives exactly the tables of :func:`~ugdata_pipeline.reasoning.paths.build_paths` on
the whole city (tests compare them on tiny cities with known answers and on the bundled cities): a path takes at
most ``max_hops - 1`` steps on the place graph from its image's street, so the nodes within that many steps of the
shard's streets, and the edges among them (the halo, :func:`halo_hops` and
:func:`~ugdata_pipeline.graph.shards.hop_halo`), hold every walk, target and alternative a path of the shard can
take, and every neighbour of a walk's intermediate nodes (a test shows a halo one step short loses paths). Node
positions keep their relative order, so the walks' tie-breaks are unchanged; the strata are numbered by the whole
city's categories, and target choice is seeded per (city, image), never by how many images came before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from ugdata_pipeline.checks import CheckOutcome
from ugdata_pipeline.graph.csr import build_csr
from ugdata_pipeline.graph.shards import hop_halo, iter_shards
from ugdata_pipeline.imagery.anchor import image_node_ids
from ugdata_pipeline.reasoning.path_schema import TRAVERSAL_REASONS, PathConfig, PathResult
from ugdata_pipeline.reasoning.paths import build_paths
from ugdata_pipeline.reasoning.place_graph import place_categories, place_tables

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ShardPaths:
    """One shard's paths and the part of the graph they were built on (the halo), for its checks."""

    key: str
    images: pd.DataFrame
    nodes: pd.DataFrame
    edges: pd.DataFrame
    result: PathResult


def halo_hops(config: PathConfig) -> int:
    """
    Place-graph steps a shard's halo takes: a walk's reach, ``max_hops - 1``. Its intermediate nodes then keep all
    their neighbours (a crossing's street names are read from them); one step more when targets may be of a kind
    whose text reads its neighbours (anything but POIs and AOIs: a crossing target names its streets).
    """
    reach = config.max_hops - 1
    return reach if set(config.target_kinds) <= {"poi", "aoi"} else reach + 1


def iter_path_shards(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    images: pd.DataFrame,
    shards: pd.Series,
    *,
    city: str,
    config: PathConfig | None = None,
) -> Iterator[ShardPaths]:
    """
    :func:`build_paths` for each shard of ``shards`` (a key per image, aligned with ``images``; see
    :func:`~ugdata_pipeline.graph.shards.image_shards`), in key order, each on its hop halo of the graph.

    Arguments as for :func:`build_paths`; only one shard's paths and halo are held at a time by this generator.
    """
    config = config or PathConfig()
    if len(shards) != len(images):
        msg = f"shards has {len(shards)} keys for {len(images)} images; give one shard key per image, in image order"
        raise ValueError(msg)
    place, place_edges, _, _ = place_tables(nodes, edges)
    place_ids = pd.Index(place["node_id"].to_numpy(dtype=object))
    csr = build_csr(place_ids.to_numpy(), place_edges)
    categories = place_categories(place)
    hops = halo_hops(config)
    # every node id as an integer code once: a shard's node and edge masks are then array lookups, not string sets
    codes = pd.Index(nodes["node_id"].to_numpy(dtype=object))
    if not codes.is_unique:
        msg = "nodes has repeated node_id values; the graph tables must hold each node once"
        raise ValueError(msg)
    place_code = codes.get_indexer(place_ids)
    edge_src = codes.get_indexer(edges["src"].to_numpy(dtype=object))
    edge_dst = codes.get_indexer(edges["dst"].to_numpy(dtype=object))
    for key, rows in iter_shards(shards):
        shard_images = images.iloc[rows]
        sources = place_ids.get_indexer(shard_images["street_node"].astype(object).to_numpy())
        keep = np.zeros(len(codes) + 1, dtype=bool)  # the extra last slot is where unknown ids (-1) look
        keep[place_code[hop_halo(csr, sources[sources >= 0], hops=hops)]] = True
        image_codes = codes.get_indexer(image_node_ids(shard_images["source"], shard_images["image_id"]))
        keep[image_codes[image_codes >= 0]] = True
        keep[-1] = False
        shard_nodes = nodes[keep[:-1]]
        shard_edges = edges[keep[edge_src] & keep[edge_dst]]
        result = build_paths(shard_nodes, shard_edges, shard_images, city=city, config=config, categories=categories)
        logger.debug("shard %s of %s: %s images, %s halo nodes", key, city, len(rows), len(shard_nodes))
        yield ShardPaths(key, shard_images, shard_nodes, shard_edges, result)


def combine_path_shards(images: pd.DataFrame, parts: list[PathResult]) -> PathResult:
    """
    The shards' results as one :class:`PathResult`: rows in image order (each image's paths in their own order),
    counts summed; what :func:`build_paths` gives for all the images at once.
    """
    order = pd.Series(np.arange(len(images)), index=images["image_id"].to_numpy(dtype=object))

    def in_image_order(
        frames: list[pd.DataFrame], *, later: Callable[[pd.DataFrame], npt.NDArray[np.bool_]] | None = None
    ) -> pd.DataFrame:
        """The frames concatenated, sorted by image position (stable); rows ``later`` marks after the others."""
        # an empty shard's table has untyped (object) columns; concatenated, they would turn the others' columns
        frames = [f for f in frames if len(f)] or frames[:1]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
        position = order.reindex(frame["image_id"].to_numpy(dtype=object)).to_numpy()
        if later is not None:
            position = position + np.where(later(frame), len(images), 0)
        return frame.iloc[np.argsort(position, kind="stable")].reset_index(drop=True)

    if not parts:
        msg = "combine_path_shards needs the result of at least one shard"
        raise ValueError(msg)
    counts: dict[str, int] = {}
    for part in parts:
        for name, value in part.counts.items():
            counts[name] = counts.get(name, 0) + value
    return PathResult(
        paths=in_image_order([p.paths for p in parts]),
        # build_paths lists the images it leaves out before searching (excluded, not anchored) first
        missing=in_image_order(
            [p.missing for p in parts], later=lambda missing: missing["reason"].isin(TRAVERSAL_REASONS).to_numpy()
        ),
        counts=counts,
    )


def build_paths_by_shard(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    images: pd.DataFrame,
    shards: pd.Series,
    *,
    city: str,
    config: PathConfig | None = None,
    on_shard: Callable[[ShardPaths], None] | None = None,
) -> PathResult:
    """
    The paths of every image, built shard by shard (:func:`iter_path_shards`) and combined
    (:func:`combine_path_shards`); ``on_shard`` sees each shard (its checks, progress) before it is dropped.
    """
    parts = []
    for shard in iter_path_shards(nodes, edges, images, shards, city=city, config=config):
        if on_shard is not None:
            on_shard(shard)
        parts.append(shard.result)
    if not parts:  # no images: the empty tables of the one-shot build
        return build_paths(nodes, edges, images, city=city, config=config)
    return combine_path_shards(images, parts)


def combine_outcomes(outcomes: list[CheckOutcome]) -> CheckOutcome:
    """One check's outcomes over the shards as one: passed when every shard passed, counts summed."""
    if not outcomes:
        msg = "combine_outcomes needs at least one outcome"
        raise ValueError(msg)
    return CheckOutcome(
        all(o.passed for o in outcomes),
        sum(o.observed for o in outcomes),
        outcomes[0].expected,
        [example for o in outcomes for example in o.examples][:20],
    )
