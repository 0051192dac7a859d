"""Spatial reasoning paths (SRP): walks from each image node to POIs and AOIs over the anchored urban graph.

Semantics (reference §4, with its bugs fixed, §9.1/§9.3):

* **Traversal graph.** The *place graph*: every node except ``image`` nodes, every edge between two place
  nodes. An image is only ever a path's first node: the path is ``image -> its street`` (the ``image_street``
  edge) followed by a walk over the place graph, so a path never passes through another image node and never
  joins images (of any split). Images with ``split == "excluded"`` get no path (reason recorded).
* **Hops** count every step, the image step included: ``image -> street -> POI`` is 2 hops.
* **Levels and parents in one pass.** A breadth-first search from each distinct street node that holds
  images (many images share one), depth-limited to ``max_hops - 1`` place hops, batched over sources on the
  CSR adjacency (:mod:`ugdata_pipeline.graph.csr`), with vectorised numpy frontier expansion. The **shortest**
  path to a node follows the BFS parents; the parent of a node is its smallest-position neighbour one level
  up (positions are node ids in sorted order), so paths are canonical and do not depend on row order.
* **Targets**: place nodes of kind ``poi``/``aoi`` ``min_hops``..``max_hops`` hops from the image and within
  ``max_distance_m`` straight-line metres of it (prefiltered on a local equirectangular approximation, good to
  about 1e-6 relative at 1.5 km; the reported ``distance_m``/``bearing_deg`` are geodesic,
  :mod:`ugdata_pipeline.graph.geodesy`).
* **Stratified choice.** Candidates are grouped into strata *hop band × distance band × category* (hop bands
  from :attr:`PathConfig.hop_band_edges`, distance bands from
  :data:`ugdata_pipeline.graph.text.DISTANCE_BANDS_M`). Each image draws a random order of its strata and a
  random order inside each stratum, then takes targets round-robin (first of every stratum, then second, ...).
  The randomness is a counter-based hash keyed by ``(city, seed, image node, target/stratum)``, i.e. a seeded
  generator per (city, image): the same seed gives the same paths, and adding images never changes another
  image's paths.
* **Alternatives** (``path_type = "alternative"``): for a chosen target, the walk whose **last step differs**
  from the shortest path's (the first deviation of Yen's algorithm, at the target), built from the BFS
  parents of the other neighbour; among the neighbours, the one sharing the fewest intermediate nodes with the
  shortest path wins, then the fewest hops, then the smallest position. It must be simple and stay inside the
  hop window. ``round(max_paths * alternative_share)`` slots go to alternatives of the first-ranked targets;
  slots without an alternative are filled with shortest paths to further targets.
* **No leak.** A candidate whose target name (the shared rule, :func:`.mentions.mentions_name`)
  appears in the names its query text would carry (intermediate nodes, streets at crossings) is skipped in
  favour of the next-ranked target; every finished text is checked again and a path whose ``path_text`` or
  ``path_sentence`` still mentions the target is dropped. Both are counted (``rejected/target_name_in_query``).
  We reject rather than rephrase: renaming a street would break the text's link to the graph.

Step metrics (``step_distance_m``, ``step_bearing_deg``) follow a walker's position, starting at the image:
onto a street from the image or a place, the edge's length and bearing (the position moves by that vector);
``crossing -> street`` is a turn (length 0, bearing of the next move); ``along_street`` steps use the edge's
along-street length and bearing; any other step runs straight from the current position to the node's point
(crossing, POI, AOI anchor). A reversed edge's bearing is its bearing + 180° (off by < 0.03° on a 1.5 km walk).

``view_direction`` is where the target lies for the camera (bearing image -> target minus ``compass_angle``:
ahead / right / behind / left, 90° sectors centred on the heading); ``None`` when the compass angle is NaN.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ugdata_pipeline.errors import ReasoningInputError
from ugdata_pipeline.reasoning.path_render import _counts, _render
from ugdata_pipeline.reasoning.path_schema import (
    IMAGE_COLUMNS,
    MISSING_COLUMNS,
    REASON_ALL_LEAK,
    REASON_NO_TARGET,
    PathConfig,
    PathResult,
)
from ugdata_pipeline.reasoning.path_search import _batch_size, _find_paths, _image_table
from ugdata_pipeline.reasoning.place_graph import CsrTraversal, PlaceGraph, Traversal, build_place_graph
from ugdata_pipeline.tables import require_columns

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# the builder
# ------------------------------------------------------------------------------------------------------------


def _validate(nodes: pd.DataFrame, edges: pd.DataFrame, images: pd.DataFrame, city: str) -> None:
    for label, frame, columns in (
        ("nodes", nodes, ("node_id", "kind", "name", "category", "lon", "lat")),
        ("edges", edges, ("src", "dst", "kind", "distance_m", "bearing_deg", "street_name")),
        ("images", images, IMAGE_COLUMNS),
    ):
        fix = (
            "Anchor and split the images first: imagery.anchor_images, then imagery.assign_splits."
            if label == "images"
            else "Pass the graph tables with the image nodes/edges added."
        )
        require_columns(frame, columns, table=label, fix=fix, error=ReasoningInputError)
    if not isinstance(city, str) or not city.strip():
        msg = f"city must be a non-empty string (it seeds the random choice), got {city!r}"
        raise ReasoningInputError(msg)
    if nodes["node_id"].duplicated().any():
        dup = nodes.loc[nodes["node_id"].duplicated(), "node_id"].head(3).tolist()
        msg = f"nodes.node_id must be unique, duplicates e.g. {dup}"
        raise ReasoningInputError(msg)
    if images["image_id"].duplicated().any():
        dup = images.loc[images["image_id"].duplicated(), "image_id"].head(3).tolist()
        msg = f"images.image_id must be unique, duplicates e.g. {dup}; deduplicate before building paths"
        raise ReasoningInputError(msg)


def build_paths(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    images: pd.DataFrame,
    *,
    city: str,
    config: PathConfig | None = None,
    categories: tuple[str, ...] | None = None,
) -> PathResult:
    """
    Spatial reasoning paths from every image to POIs/AOIs of the anchored graph.

    Parameters
    ----------
    nodes
        Graph nodes with the image nodes added (``node_id``, ``kind``, ``name``, ``category``, ``lon``,
        ``lat`` in EPSG:4326 decimal degrees).
    edges
        Graph edges with the ``image_street`` edges added (``src``, ``dst``, ``kind``, ``distance_m`` in
        metres, ``bearing_deg`` clockwise from north, ``street_name``).
    images
        Anchored images with splits: ``image_id``, ``source``, ``lon``, ``lat``, ``compass_angle`` (degrees
        clockwise from north, NaN if unknown), ``split``, ``street_node``.
    city
        City slug or name; part of the random seed, so two cities draw independently.
    config
        Options; :class:`PathConfig` by default.
    categories
        The whole city's place categories (:func:`~ugdata_pipeline.reasoning.place_graph.place_categories`) when
        ``nodes`` is part of it (a shard's halo, :mod:`ugdata_pipeline.reasoning.sharded`); by default the nodes'.

    Returns
    -------
    PathResult
        ``paths`` (:data:`SRP_COLUMNS` + :data:`STEP_COLUMNS`), ``missing`` (images without a path and why)
        and ``counts``.

    Raises
    ------
    ReasoningInputError
        A table lacks a column, ids repeat, the city is empty, or the config is invalid.
    """
    config = config or PathConfig()
    _validate(nodes, edges, images, city)
    graph = build_place_graph(nodes, edges, categories=categories)
    table, reasons = _image_table(nodes, edges, images, graph)
    usable = ~table["image_id"].isin(list(reasons)).to_numpy()
    batch = _batch_size(graph.n)
    traversal = CsrTraversal(graph, config.max_hops - 1, batch)
    return assemble_paths(graph, table, usable, reasons, config, city, traversal, batch)


def assemble_paths(
    graph: PlaceGraph,
    table: pd.DataFrame,
    usable: np.ndarray,
    reasons: dict[str, str],
    config: PathConfig,
    city: str,
    traversal: Traversal,
    batch_size: int,
) -> PathResult:
    """Traverse with ``traversal``, choose, measure and phrase the paths (shared by every traversal backend)."""
    chosen, leaked = _find_paths(graph, table, usable, config, city, traversal, batch_size)
    paths, leaked_post = _render(graph, table, chosen)
    leaked |= leaked_post
    rejected = chosen.rejected + len(leaked_post)
    have = set(paths["image_id"].tolist()) if len(paths) else set()
    for row, (image_id, ok) in enumerate(zip(table["image_id"].tolist(), usable.tolist(), strict=True)):
        if ok and image_id not in have:
            reasons[image_id] = REASON_ALL_LEAK if row in leaked else REASON_NO_TARGET
    missing = pd.DataFrame({"image_id": list(reasons), "reason": list(reasons.values())}, columns=list(MISSING_COLUMNS))
    counts = _counts(table, paths, missing, rejected)
    logger.info(
        "built %s reasoning paths for %s of %s images of %s (%s without a path)",
        f"{len(paths):,}",
        f"{counts['images/with_path']:,}",
        f"{len(table):,}",
        city,
        f"{len(missing):,}",
    )
    return PathResult(paths=paths, missing=missing, counts=counts)
