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
from ugdata_pipeline.imagery.source_outcome import SourceOutcome
from ugdata_pipeline.osm import OsmExtract, load_city_osm
from ugdata_pipeline.table_files import read_table, table_path


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

    def has_table(self, city: str, asset: str) -> bool:
        """Whether the city's partition of a table asset has been materialized."""
        return table_path(self.root, asset, city).exists()

    def read_table(self, city: str, asset: str) -> pd.DataFrame:
        """A city's partition of a table asset, for assets that combine cities (training, the benchmark)."""
        path = table_path(self.root, asset, city)
        if not path.exists():
            msg = f"{path} does not exist; materialize {asset!r} for city {city!r} first (city_dataset_job)"
            raise FileNotFoundError(msg)
        return read_table(path)

    def local_dir(self, *parts: str) -> Path:
        """A local folder under the root (models, reports); object-store roots need a local working copy."""
        root = UPath(self.root)
        if root.protocol not in ("", "file", "local"):
            msg = (
                f"{'/'.join(parts) or 'this step'} writes files (images, models, reports) and needs a local "
                f"data root, but UGDATA_ROOT is {self.root!r}; set UGDATA_ROOT to a local or mounted folder "
                "(object-store roots hold tables only; see deploy/README.md)"
            )
            raise ValueError(msg)
        path = Path(root.path).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


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

    def candidates(self, city: City, extract: OsmExtract, *, crs_metric: str, work_dir: Path) -> SourceOutcome:
        """Where images could be taken (rendered cameras, or Mapillary images found over the city); a short result
        carries a ``shortfall`` and must not be stored (:class:`~ugdata_pipeline.imagery.source_outcome.SourceOutcome`).
        """
        raise NotImplementedError

    def fetch(
        self,
        city: City,
        extract: OsmExtract,
        candidates: pd.DataFrame,
        *,
        crs_metric: str,
        root: Path,
        log: logging.Logger,
    ) -> SourceOutcome:
        """Image files under ``<root>/<city>/images/``: the manifest, the failures, counts, and a ``shortfall`` when
        too many images are missing."""
        raise NotImplementedError


class RenderedImagesResource(ImageSourceResource):
    """The offline twin: street views drawn from the city's own OSM geometry (labelled ``source = render``)."""

    size: int = Field(default=256, description="Image width and height in pixels.")
    spacing_m: float = Field(default=40.0, description="A camera every this many metres along each street.")
    view_offsets_deg: list[float] = Field(
        default=[0.0],
        description="Views per camera point, as heading offsets in degrees clockwise from the direction of travel: "
        "[0] looks forward only; [0, 90, -90] adds right- and left-facing views (same position and sequence). "
        "Forward views keep their ids whatever offsets are added.",
    )
    seed: int = Field(default=0, description="Heading jitter, lighting and noise; same seed, same images.")
    max_views: int | None = Field(default=None, description="Cap on views per city (evenly spread), None for all.")
    image_format: str = Field(default="png", description="png or jpeg.")
    workers: int | None = Field(
        default=None,
        description="Processes drawing views; None: the usable cores (<= 8). The images do not depend on it.",
    )

    def label(self) -> str:
        return "render (offline twin)"

    def _config(self, city: City):
        """The render options for ``city``: this resource's, with the city's own ``imagery:`` options on top."""
        from ugdata_pipeline.imagery.render_config import RenderConfig

        options = {
            "spacing_m": self.spacing_m,
            "max_views": self.max_views,
            "view_offsets_deg": list(self.view_offsets_deg),
            **dict(city.imagery),
        }
        return RenderConfig(
            size=self.size,
            spacing_m=float(options["spacing_m"]),
            seed=self.seed,
            max_views=options["max_views"],
            image_format=self.image_format,
            view_offsets_deg=tuple(float(v) for v in options["view_offsets_deg"]),
        )

    def candidates(self, city, extract, *, crs_metric, work_dir):
        from ugdata_pipeline.imagery.cameras import sample_cameras

        config = self._config(city)
        config.validate()
        cameras = sample_cameras(
            extract.streets,
            crs_metric=crs_metric,
            spacing_m=config.spacing_m,
            seed=config.seed,
            heading_jitter_deg=config.heading_jitter_deg,
            city_slug=city.slug,
            view_offsets_deg=config.view_offsets_deg,
        )
        offsets = ",".join(f"{v:g}" for v in config.view_offsets_deg)  # metadata values are scalars
        return SourceOutcome(
            cameras, counts={"cameras": len(cameras), "spacing_m": config.spacing_m, "view_offsets_deg": offsets}
        )

    def fetch(self, city, extract, candidates, *, crs_metric, root, log):
        from ugdata_pipeline.imagery.city_render import render_city, usable_cores

        step = max(1, len(candidates) // 10)

        def progress(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                log.info(f"rendered {done}/{total} views of {city.slug}")

        # The cameras stored by `candidates` are the ones to draw: no second sampling.
        result = render_city(
            extract,
            city_slug=city.slug,
            root=root,
            config=self._config(city),
            crs_metric=crs_metric,
            progress=progress,
            cameras=candidates,
            workers=self.workers or usable_cores(),
        )
        return SourceOutcome(result.images, counts=dict(result.counts))


class MapillaryResource(ImageSourceResource):
    """Mapillary API v4: discovery from the z14 coverage tiles over the city, thinning, Graph API details of the
    images kept, resumable verified downloads.

    The token comes only from the environment: leave ``access_token`` unset and it is read from
    ``MAPILLARY_ACCESS_TOKEN`` when the resource is used, so run config can override any other field (e.g.
    ``max_per_cell``) without naming the token. It is sent as an ``Authorization`` header (Graph API) or the
    ``access_token`` parameter (coverage tiles) and redacted from every message. An incomplete discovery, a
    discovery that finds no image, or a download with more than
    ``max_failed_share`` of its images missing returns a ``shortfall`` (the step fails; the last tables stay).
    """

    access_token: str | None = Field(
        default=None,
        description="Leave unset: the token is read from the environment variable MAPILLARY_ACCESS_TOKEN at run "
        "time. Never put a token in run config.",
    )
    graph_url: str = Field(default="https://graph.mapillary.com", description="Graph API base URL.")
    tiles_url: str = Field(
        default="https://tiles.mapillary.com/maps/vtp/mly1_public/2",
        description="Coverage tile set base URL ({tiles_url}/{z}/{x}/{y}).",
    )
    concurrency: int = Field(default=16, description="Requests in flight at once.")
    requests_per_second: float = Field(default=8.0, description="Token-bucket rate over all requests.")
    max_per_cell: int = Field(default=2, description="Images kept per ~35 m H3 cell (resolution 12).")
    include_panos: bool = Field(default=False, description="Keep 360-degree panoramas.")
    start_date: str | None = Field(default=None, description="Earliest capture date (ISO), inclusive.")
    end_date: str | None = Field(default=None, description="Capture dates before this (ISO), exclusive.")
    max_requests_per_day: int | None = Field(default=5000, description="Daily coverage tile request budget.")
    cache_max_age_days: float | None = Field(default=7.0, description="Reuse coverage tiles younger than this.")
    max_failed_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Largest share of a city's images that may fail to download; above it image_files fails "
        "(the last one stays) and the next run fetches only the missing images.",
    )

    def label(self) -> str:
        return "mapillary"

    def _client(self):
        from ugdata_pipeline.imagery.mapillary import MapillaryClient, token_from_env

        token = self.access_token or token_from_env()
        return MapillaryClient(
            token,
            graph_url=self.graph_url,
            tiles_url=self.tiles_url,
            concurrency=self.concurrency,
            requests_per_second=self.requests_per_second,
        )

    def candidates(self, city, extract, *, crs_metric, work_dir):
        from ugdata_pipeline.imagery.mapillary import discover_images, fetch_image_details
        from ugdata_pipeline.imagery.source_outcome import discovery_shortfall
        from ugdata_pipeline.imagery.thin import thin_images

        # The city's footprint is where its streets are: a 100 m buffer around them, not the bbox.
        area = extract.streets.to_crs(crs_metric).buffer(100).union_all()
        polygon = gpd.GeoSeries([area], crs=crs_metric).to_crs("EPSG:4326").iloc[0]
        client = self._client()
        found = discover_images(
            client,
            polygon,
            cache_dir=work_dir / "mapillary_tiles",
            start=self.start_date,
            end=self.end_date,
            include_panos=self.include_panos,
            max_requests=self.max_requests_per_day,
            cache_max_age_days=self.cache_max_age_days,
        )
        shortfall = discovery_shortfall(
            found,
            city=city.slug,
            area=polygon,
            start=self.start_date,
            end=self.end_date,
            include_panos=self.include_panos,
        )
        if shortfall is not None:  # nothing kept: no details to ask for
            return SourceOutcome(found.images, failures=found.failures, counts=found.counts, shortfall=shortfall)
        thinned = thin_images(found.images, max_per_cell=self.max_per_cell)
        # The Graph API is asked only about the images kept (exact position, creator); tiles gave the rest.
        kept = fetch_image_details(client, thinned.images, cache_dir=work_dir / "mapillary_details")
        counts = {
            **found.counts,
            **{f"thin_{k}": v for k, v in thinned.counts.items()},
            **kept.counts,
            "discovery_complete": found.complete,
        }
        failures = found.failures
        if len(kept.failures):
            failures = pd.concat([found.failures, kept.failures], ignore_index=True)
        return SourceOutcome(kept.images, failures=failures, counts=counts)

    def fetch(self, city, extract, candidates, *, crs_metric, root, log):
        from ugdata_pipeline.imagery.mapillary import download_images
        from ugdata_pipeline.imagery.source_outcome import download_shortfall

        result = download_images(self._client(), candidates, root=root, city_slug=city.slug)
        shortfall = download_shortfall(result, city=city.slug, max_failed_share=self.max_failed_share)
        return SourceOutcome(result.manifest, failures=result.failures, counts=dict(result.counts), shortfall=shortfall)


# --------------------------------------------------------------------------------------------------------------------
# Training: where and how UGE models are trained.


class TrainerResource(dg.ConfigurableResource):
    """How the UGE model family trains: one step budget and batch for every model, once per seed, in this process
    (default) or out of process through Dagster Pipes with ``accelerate launch`` (multi-GPU DDP on one node, or a
    Kubernetes pod with GPUs). The baseline gets twice the budget (as many steps as stage 1 and stage 2 together).
    """

    launcher: str = Field(default="in_process", description="in_process | accelerate")
    num_processes: int = Field(default=1, description="Processes (GPUs) for the accelerate launcher.")
    precision: str = Field(default="no", description="Mixed precision: no | bf16 | fp16.")
    cpu: bool = Field(default=False, description="Force the CPU even when a GPU is present.")
    steps: int = Field(default=200, description="Optimizer steps of stage 1 and of stage 2 (the baseline: twice).")
    batch_size: int = Field(default=64, description="Records per step (in-batch negatives = batch - 1).")
    lr: float = Field(default=3e-4, description="Backbone learning rate (stage 2: x 0.1).")
    seeds: str = Field(default="0", description="Training seeds, comma-separated; every model is trained per seed.")
    backbone: str = Field(default="compact", description="compact (CPU default) or hf_vlm (GPU).")
    vlm_checkpoint: str = Field(
        default="",
        description="hf_vlm: Hugging Face id or local folder of the VLM, e.g. Qwen/Qwen2.5-VL-7B-Instruct, "
        "llava-hf/llava-v1.6-mistral-7b-hf, microsoft/Phi-3-vision-128k-instruct, Qwen/Qwen3-VL-8B-Instruct.",
    )
    vlm_family: str = Field(
        default="",
        description="hf_vlm: qwen2_vl | qwen2_5_vl | qwen3_vl | llava_next | phi3_v (empty: read from the checkpoint).",
    )
    vlm_trust_remote_code: bool = Field(
        default=False, description="hf_vlm: run model code shipped with the checkpoint (Phi-3-Vision needs it)."
    )
    threads: int = Field(
        default=2,
        description="Torch threads inside training: fixed, so results do not depend on the machine's core count.",
    )

    def seed_list(self) -> list[int]:
        """The seeds as integers (``"0,1,2"`` -> ``[0, 1, 2]``)."""
        try:
            seeds = [int(v) for v in str(self.seeds).split(",") if v.strip()]
        except ValueError:
            msg = f"trainer.seeds must be comma-separated integers such as '0,1,2', got {self.seeds!r}"
            raise ValueError(msg) from None
        if not seeds or len(set(seeds)) != len(seeds):
            msg = f"trainer.seeds must list distinct integers such as '0,1,2', got {self.seeds!r}"
            raise ValueError(msg)
        return seeds

    def base_config(self):
        """The training settings every model of the family shares (each run adds stage, variant, steps, seed)."""
        from ugdata_pipeline.uge.train import TrainConfig

        return TrainConfig(
            batch_size=self.batch_size,
            lr=self.lr,
            precision=self.precision,
            cpu=self.cpu,
            backbone=self.backbone,
            backbone_config=self.backbone_config(),
            threads=self.threads,
        )

    def backbone_config(self) -> dict:
        """The backbone's constructor config: ``{}`` for compact; for hf_vlm the checkpoint, family and dtype."""
        vlm_fields = self.vlm_checkpoint or self.vlm_family or self.vlm_trust_remote_code
        if self.backbone != "hf_vlm":
            if vlm_fields:
                msg = f"trainer.vlm_* settings apply to backbone hf_vlm, but trainer.backbone is {self.backbone!r}"
                raise ValueError(msg)
            return {}
        from ugdata_pipeline.uge.hf_vlm_config import HFVLMConfig

        if not self.vlm_checkpoint:
            msg = (
                "trainer.backbone hf_vlm needs trainer.vlm_checkpoint: a Hugging Face id or local folder such as "
                "'Qwen/Qwen2.5-VL-7B-Instruct' (see the README's backbone table)"
            )
            raise ValueError(msg)
        config = {
            "model_name_or_path": self.vlm_checkpoint,
            "family": self.vlm_family or None,
            "trust_remote_code": self.vlm_trust_remote_code,
            "dtype": "float32" if self.cpu else "bfloat16",
        }
        HFVLMConfig.from_dict(config)  # a bad family or value fails here, before any training starts
        return config


# --------------------------------------------------------------------------------------------------------------------
# Captioners: the template twin offline, any OpenAI-compatible endpoint online.


class CaptionerResource(dg.ConfigurableResource):
    """Writes an image caption and a spatial summarization per image; subclasses are chosen per deployment."""

    max_failed_share: float = Field(
        default=0.02,
        description="Most failed images a run may have (share); above it "
        "the captions step fails and the previous table stays (failures are retried by "
        "the next run).",
    )

    def captioner(self):
        raise NotImplementedError


class TemplateCaptionerResource(CaptionerResource):
    """The offline twin: deterministic captions from the renderer's scene facts and the subgraph (model "template")."""

    seed: int = Field(default=0, description="Picks among phrasings per image; same seed, same captions.")

    def captioner(self):
        from ugdata_pipeline.context.captioners import TemplateCaptioner

        return TemplateCaptioner(seed=self.seed)


class OpenAICaptionerResource(CaptionerResource):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, DashScope/Qwen, Ollama) with a VLM.

    ``api_key`` and ``base_url`` come from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` through ``EnvVar``; the key is
    never logged or written to metadata.
    """

    model: str = Field(default="qwen2.5-vl-7b-instruct", description="Model name served by the endpoint.")
    base_url: str | None = Field(default=None, description="Endpoint base URL (EnvVar('OPENAI_BASE_URL')).")
    api_key: str | None = Field(default=None, description="API key (EnvVar('OPENAI_API_KEY')).")
    concurrency: int = Field(default=16, description="Requests in flight at once.")
    requests_per_minute: float = Field(default=600, description="Token-bucket limit on requests.")
    tokens_per_minute: float | None = Field(default=None, description="Token-bucket limit on tokens (None: off).")
    max_attempts: int = Field(default=5, description="Tries per image per run; failures are retried next run.")
    timeout_s: float = Field(default=60, description="Seconds per request.")
    json_schema: bool = Field(default=False, description="Ask for a JSON schema answer (endpoints that support it).")
    breaker_threshold: int | None = Field(
        default=None,
        description="Failed calls in a row after which the endpoint "
        "is taken to be down and the images left are not sent (None: max(10, 2 x "
        "concurrency)); 401/403 stop at once.",
    )

    def captioner(self):
        from ugdata_pipeline.context.openai_captioner import OpenAICompatibleCaptioner

        return OpenAICompatibleCaptioner(
            self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            concurrency=self.concurrency,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            json_schema=self.json_schema,
            breaker_threshold=self.breaker_threshold,
        )
