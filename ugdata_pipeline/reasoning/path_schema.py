"""What :func:`~ugdata_pipeline.reasoning.paths.build_paths` takes and gives: its options (:class:`PathConfig`),
the columns of its tables, the reasons an image has no path, and its result (:class:`PathResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ugdata_pipeline.errors import ReasoningInputError

#: Columns of the ``srp`` table (DESIGN/brief data contract), then the per-step metrics.
SRP_COLUMNS: tuple[str, ...] = (
    "image_id",
    "image_node",
    "split",
    "target_node",
    "target_name",
    "target_category",
    "hops",
    "path_nodes",
    "path_relations",
    "path_text",
    "path_sentence",
    "target_text",
    "distance_m",
    "bearing_deg",
    "compass",
    "view_direction",
    "path_type",
    "route_m",
)
STEP_COLUMNS: tuple[str, ...] = ("step_distance_m", "step_bearing_deg")
MISSING_COLUMNS: tuple[str, ...] = ("image_id", "reason")
IMAGE_COLUMNS: tuple[str, ...] = ("image_id", "source", "lon", "lat", "compass_angle", "split", "street_node")

REASON_EXCLUDED = "split is 'excluded' (removed by the split buffer); such images get no paths"
REASON_NOT_ANCHORED = "image has no image_street edge to a street node of the graph"
REASON_NO_TARGET = "no POI/AOI within the hop window and distance limit"
REASON_ALL_LEAK = "every candidate target's name appears in its own query text"
#: Reasons found by the search (the others before it); ``missing`` lists the images found before the search first.
TRAVERSAL_REASONS = frozenset({REASON_NO_TARGET, REASON_ALL_LEAK})


@dataclass(frozen=True, slots=True)
class PathConfig:
    """Options of :func:`build_paths`; distances in metres, hops count every step (image step included)."""

    # Each field's "doc" is its description in the Dagster launchpad too (assets/_config.py derives the run config).
    max_paths: int = field(default=10, metadata={"doc": "Paths per image at most (shortest + alternatives)."})
    min_hops: int = field(default=2, metadata={"doc": "Fewest hops to a target (image -> street -> POI is 2 hops)."})
    max_hops: int = field(default=8, metadata={"doc": "Most hops to a target."})
    max_distance_m: float = field(
        default=1500.0, metadata={"doc": "Largest straight-line (geodesic) distance (m) from the image to a target."}
    )
    alternatives: bool = field(
        default=True, metadata={"doc": "Whether to emit 'alternative' paths next to 'shortest' ones."}
    )
    alternative_share: float = field(
        default=0.2,
        metadata={"doc": "Share of max_paths reserved for alternatives (rounded; unused slots go to shortest paths)."},
    )
    hop_band_edges: tuple[int, ...] = field(
        default=(4, 6), metadata={"doc": "Lower edges of the hop bands after the first, e.g. (4, 6): 2-3, 4-5, 6-8."}
    )
    seed: int = field(default=0, metadata={"doc": "Seed of the stratified target choice per (city, image)."})
    target_kinds: tuple[str, ...] = field(default=("poi", "aoi"), metadata={"doc": "Node kinds that can be targets."})

    def __post_init__(self) -> None:
        for name in ("max_paths", "min_hops", "max_hops", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                msg = f"PathConfig.{name} must be an int >= 0, got {value!r}"
                raise ReasoningInputError(msg)
        if self.max_paths < 1:
            msg = f"PathConfig.max_paths must be >= 1, got {self.max_paths!r}"
            raise ReasoningInputError(msg)
        if not 2 <= self.min_hops <= self.max_hops <= 64:
            msg = (
                f"PathConfig needs 2 <= min_hops <= max_hops <= 64 (the image step plus at least one place "
                f"step), got min_hops={self.min_hops!r}, max_hops={self.max_hops!r}"
            )
            raise ReasoningInputError(msg)
        if not (
            isinstance(self.max_distance_m, int | float)
            and math.isfinite(self.max_distance_m)
            and self.max_distance_m > 0
        ):
            msg = f"PathConfig.max_distance_m must be a finite distance > 0 in metres, got {self.max_distance_m!r}"
            raise ReasoningInputError(msg)
        if not 0 <= self.alternative_share <= 1:
            msg = f"PathConfig.alternative_share must be in [0, 1], got {self.alternative_share!r}"
            raise ReasoningInputError(msg)
        if list(self.hop_band_edges) != sorted(set(self.hop_band_edges)):
            msg = f"PathConfig.hop_band_edges must be strictly increasing, got {self.hop_band_edges!r}"
            raise ReasoningInputError(msg)
        if not self.target_kinds or "image" in self.target_kinds:
            msg = f"PathConfig.target_kinds must name place kinds (e.g. ('poi', 'aoi')), got {self.target_kinds!r}"
            raise ReasoningInputError(msg)

    @property
    def alternative_slots(self) -> int:
        """Number of ``max_paths`` slots reserved for alternatives."""
        return round(self.max_paths * self.alternative_share) if self.alternatives else 0


@dataclass(slots=True)
class PathResult:
    """
    Output of :func:`build_paths`.

    Attributes
    ----------
    paths
        One row per path: :data:`SRP_COLUMNS` then :data:`STEP_COLUMNS` (one metre / degree value per step).
    missing
        ``image_id``, ``reason`` of every input image without a path.
    counts
        Metadata-friendly figures: images, paths by type, hop and distance-band histograms, rejections.
    """

    paths: pd.DataFrame
    missing: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
