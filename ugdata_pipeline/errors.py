"""Exceptions raised by the pipeline.

Every exception subclasses a builtin, so callers can catch either ``UgdataError`` or the builtin
(``ValueError``, ``FileNotFoundError``, ...). Messages name the city and the field, show the bad value and
say how to fix it.
"""

from __future__ import annotations


class UgdataError(Exception):
    """Base class of every error this package raises on purpose."""


class CityConfigError(UgdataError, ValueError):
    """A city entry in the registry (``cities.yaml``) is invalid."""


class UnknownCityError(UgdataError, KeyError):
    """A city slug that the registry does not list."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0]) if self.args else ""


class OsmSourceError(UgdataError, ValueError):
    """An OSM source (file, place query, bbox) cannot be read or is not OSM data."""


class NetworkDisabledError(UgdataError, RuntimeError):
    """An online source was asked for while the deployment is offline."""


class EmptyAreaError(UgdataError, ValueError):
    """An area holds no named streets, so no urban graph can be built from it."""


class ImageryInputError(UgdataError, ValueError):
    """An images table (or an option of an imagery function) is invalid."""


class IncompleteResultError(UgdataError, RuntimeError):
    """
    A stage that fetches or generates got less than it should (an outage, a failure rate over its threshold, an
    empty result where the last materialization had rows).

    Raised instead of returning the short result, so the step fails and the previous materialization stays in
    place; the message says what was missing and how to retry. Items that failed stay recorded and are retried by
    the next run.
    """


class CorruptFileError(UgdataError, OSError):
    """A stored file (table, image, OSM extract, checkpoint) cannot be read; the message names the file and city."""


class HFVLMError(UgdataError, ValueError):
    """Invalid configuration or input for the ``hf_vlm`` backbone."""


# ------------------------------------------------------------------------------------- errors of one core stage


class GraphIntegrityError(UgdataError, ValueError):
    """A graph table breaks an invariant that every later stage relies on (e.g. duplicate node ids)."""


class RenderInputError(UgdataError, ValueError):
    """A render option or input is invalid."""


class TableInputError(UgdataError, ValueError):
    """A table given to a stage lacks columns it needs (see :func:`ugdata_pipeline.tables.require_columns`)."""


class MetricCrsError(UgdataError, ValueError):
    """A stage was not given the city's metric CRS (``crs_metric``), or was given one that is not metric."""


class SceneInputError(UgdataError, ValueError):
    """An option of the scene builder is invalid."""


class MapillaryError(UgdataError, RuntimeError):
    """The Mapillary API answered in a way the pipeline cannot work with."""


class MapillaryAuthError(UgdataError, PermissionError):
    """The Mapillary access token is missing, malformed or rejected (the message names ``MAPILLARY_ACCESS_TOKEN``)."""


class ReasoningInputError(UgdataError, ValueError):
    """An input of :func:`ugdata_pipeline.reasoning.build_paths` (nodes, edges, images, config) is invalid."""


class SubgraphInputError(UgdataError, ValueError):
    """The graph, images, options or subgraph tables given to the subgraph code are invalid."""


class UnknownSubgraphError(UgdataError, KeyError):
    """An image id that the subgraph tables do not hold."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0]) if self.args else ""


class GraphJsonError(SubgraphInputError):
    """A graph JSON object that does not follow the reference format."""


class CaptionInputError(UgdataError, ValueError):
    """Caption requests (or a captioner option) are invalid."""


class CaptionerConfigError(UgdataError, ValueError):
    """A captioner cannot be configured (missing API key, bad limits)."""


class CaptionFormatError(UgdataError, ValueError):
    """A model answer lacks the two named sections or breaks their length bounds."""


class DatasetInputError(UgdataError, ValueError):
    """An input table or option of the training-record builders is invalid."""


class MsSwiftFormatError(DatasetInputError):
    """A JSONL line or a graph JSON does not follow the ms-swift / reference format."""


class TrainingDataError(UgdataError, ValueError):
    """Training records, images or subgraph tables that the trainer cannot use."""


class CheckpointError(UgdataError, ValueError):
    """A checkpoint folder that is missing, incomplete or does not fit the model."""


class BenchmarkInputError(UgdataError, ValueError):
    """An input table or an option of the UGBench builders is invalid."""


class LaunchError(UgdataError, ValueError):
    """A run cannot be launched as asked: a missing workspace or config file, an unknown partition, clashing config."""


class ShardConfigError(UgdataError, ValueError):
    """A sub-city shard option (tile size, halo, hops) or tile key is invalid."""
