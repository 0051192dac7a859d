"""Resources: one per external system or shared setting, chosen per deployment in ``definitions.py``."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field
from upath import UPath

from ugdata_pipeline.cities import City, CityRegistry, load_registry
from ugdata_pipeline.osm import OsmExtract, load_city_osm


class CityRegistryResource(dg.ConfigurableResource):
    """The city registry (``cities.yaml``); turns a partition key into a :class:`City`."""

    path: str | None = Field(default=None, description="Registry YAML; default UGDATA_CITIES or cities.yaml.")

    def registry(self) -> CityRegistry:
        return load_registry(self.path)

    def city(self, slug: str) -> City:
        return self.registry().get(slug)


class StorageResource(dg.ConfigurableResource):
    """Where previews (PNG maps, contact sheets) and other files live, beside the tables."""

    root: str = Field(description="Folder or object-store URL (UGDATA_ROOT); the same root as the IO manager.")

    def city_path(self, city: str, *parts: str) -> UPath:
        """``<root>/<city>/<parts...>``."""
        return UPath(self.root).joinpath(city, *parts)


class OsmSourceResource(dg.ConfigurableResource):
    """OSM acquisition: bundled/local files always; osmnx downloads only when network is allowed."""

    allow_network: bool = Field(default=False, description="Allow place/bbox sources to download from OSM.")
    cache_dir: str | None = Field(default=None, description="osmnx response cache folder for online sources.")

    def load(self, city: City) -> OsmExtract:
        cache = Path(self.cache_dir) if self.cache_dir else None
        return load_city_osm(city, allow_network=self.allow_network, cache_dir=cache)
