"""Resources: one per external system or shared setting, chosen per deployment in ``definitions.py``."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import geopandas as gpd
import pandas as pd
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


# --------------------------------------------------------------------------------------------------------------------
# Image sources: one interface, the offline renderer (default) and Mapillary (online). Both return the same manifest.


class ImageSourceResource(dg.ConfigurableResource):
    """Where street-level images come from; subclasses are chosen per deployment."""

    def label(self) -> str:
        raise NotImplementedError

    def candidates(self, city: City, extract: OsmExtract, *, crs_metric: str, work_dir: Path,
                   ) -> tuple[pd.DataFrame, dict[str, object]]:  # fmt: skip
        """Where images could be taken (rendered cameras, or Mapillary images found over the city)."""
        raise NotImplementedError

    def fetch(self, city: City, extract: OsmExtract, candidates: pd.DataFrame, *, crs_metric: str, root: Path,
              log: logging.Logger) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]:  # fmt: skip
        """Image files under ``<root>/<city>/images/``: (manifest, failures, counts)."""
        raise NotImplementedError


class RenderedImagesResource(ImageSourceResource):
    """The offline twin: street views drawn from the city's own OSM geometry (labelled ``source = render``)."""

    size: int = Field(default=256, description="Image width and height in pixels.")
    spacing_m: float = Field(default=40.0, description="A camera every this many metres along each street.")
    seed: int = Field(default=0, description="Heading jitter, lighting and noise; same seed, same images.")
    max_views: int | None = Field(default=None, description="Cap on views per city (evenly spread), None for all.")
    image_format: str = Field(default="png", description="png or jpeg.")

    def label(self) -> str:
        return "render (offline twin)"

    def _config(self):
        from ugdata_pipeline.imagery.render import RenderConfig

        return RenderConfig(size=self.size, spacing_m=self.spacing_m, seed=self.seed, max_views=self.max_views,
                            image_format=self.image_format)  # fmt: skip

    def candidates(self, city, extract, *, crs_metric, work_dir):
        from ugdata_pipeline.imagery.cameras import sample_cameras

        config = self._config()
        cameras = sample_cameras(extract.streets, crs_metric=crs_metric, spacing_m=config.spacing_m,
                                 seed=config.seed, heading_jitter_deg=config.heading_jitter_deg,
                                 city_slug=city.slug)  # fmt: skip
        return cameras, {"cameras": len(cameras), "spacing_m": self.spacing_m}

    def fetch(self, city, extract, candidates, *, crs_metric, root, log):
        from ugdata_pipeline.imagery.render import render_city

        step = max(1, len(candidates) // 10)

        def progress(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                log.info(f"rendered {done}/{total} views of {city.slug}")

        result = render_city(extract, city_slug=city.slug, root=root, config=self._config(), crs_metric=crs_metric,
                             progress=progress)  # fmt: skip
        failures = pd.DataFrame(columns=["image_id", "stage", "attempts", "error", "last_attempt_at"])
        return result.images, failures, dict(result.counts)


class MapillaryResource(ImageSourceResource):
    """Mapillary API v4: adaptive bbox discovery over the city, thinning, resumable verified downloads.

    The token comes only from the environment (``MAPILLARY_ACCESS_TOKEN`` through ``EnvVar``); it is sent as an
    ``Authorization`` header and redacted from every message.
    """

    access_token: str = Field(description="Mapillary client token; set through EnvVar('MAPILLARY_ACCESS_TOKEN').")
    graph_url: str = Field(default="https://graph.mapillary.com", description="Graph API base URL.")
    concurrency: int = Field(default=16, description="Requests in flight at once.")
    requests_per_second: float = Field(default=8.0, description="Token-bucket rate over all requests.")
    max_per_cell: int = Field(default=2, description="Images kept per ~35 m H3 cell (resolution 12).")
    include_panos: bool = Field(default=False, description="Keep 360-degree panoramas.")
    start_date: str | None = Field(default=None, description="Earliest capture date (ISO), inclusive.")
    end_date: str | None = Field(default=None, description="Capture dates before this (ISO), exclusive.")
    max_requests_per_day: int | None = Field(default=5000, description="Daily discovery request budget.")
    cache_max_age_days: float | None = Field(default=7.0, description="Reuse discovery cells younger than this.")

    def label(self) -> str:
        return "mapillary"

    def _client(self):
        from ugdata_pipeline.imagery.mapillary import MapillaryClient

        return MapillaryClient(self.access_token, graph_url=self.graph_url, concurrency=self.concurrency,
                               requests_per_second=self.requests_per_second)  # fmt: skip

    def candidates(self, city, extract, *, crs_metric, work_dir):
        from ugdata_pipeline.imagery.mapillary import discover_images
        from ugdata_pipeline.imagery.thin import thin_images

        # The city's footprint is where its streets are: a 100 m buffer around them, not the bbox.
        area = extract.streets.to_crs(crs_metric).buffer(100).union_all()
        polygon = gpd.GeoSeries([area], crs=crs_metric).to_crs("EPSG:4326").iloc[0]
        found = discover_images(self._client(), polygon, cache_dir=work_dir / "mapillary_cells",
                                start=self.start_date, end=self.end_date, include_panos=self.include_panos,
                                max_requests=self.max_requests_per_day,
                                cache_max_age_days=self.cache_max_age_days)  # fmt: skip
        thinned = thin_images(found.images, max_per_cell=self.max_per_cell)
        return thinned.images, {**found.counts, **{f"thin_{k}": v for k, v in thinned.counts.items()},
                                "discovery_complete": found.complete}  # fmt: skip

    def fetch(self, city, extract, candidates, *, crs_metric, root, log):
        from ugdata_pipeline.imagery.mapillary import download_images

        result = download_images(self._client(), candidates, root=root, city_slug=city.slug)
        return result.manifest, result.failures, dict(result.counts)
