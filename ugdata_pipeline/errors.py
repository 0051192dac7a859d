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


class RenderInputError(UgdataError, ValueError):
    """A render option or input is invalid."""


class TableInputError(UgdataError, ValueError):
    """A table given to a stage lacks columns it needs (see :func:`ugdata_pipeline.tables.require_columns`)."""


class MetricCrsError(UgdataError, ValueError):
    """A stage was not given the city's metric CRS (``crs_metric``), or was given one that is not metric."""
