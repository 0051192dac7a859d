"""Caption and training-record assets: spatial context captions with quality gates, stage-1/2 records, exports."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from ugdata_pipeline.assets._metadata import check_result, preview
from ugdata_pipeline.assets.partitions import city_check, city_partitions
from ugdata_pipeline.context.caption_quality import (
    both_sections_share,
    caption_failure_table,
    failed_share_limit,
    hallucination_rate,
    homogeneity,
    require_complete,
)
from ugdata_pipeline.context.subgraph_stream import caption_requests_streamed
from ugdata_pipeline.dataset.export import export_ms_swift
from ugdata_pipeline.dataset.export_graphs import StreamedSubgraphJson
from ugdata_pipeline.dataset.records import assemble_training_records, negatives_within_split, query_leaks
from ugdata_pipeline.errors import DatasetInputError
from ugdata_pipeline.failures import describe_failures
from ugdata_pipeline.resources import CaptionerResource, CityRegistryResource, StorageResource
from ugdata_pipeline.table_files import table_path

_GATES = (
    ("both_sections", False, "Share of captions with both an image caption and a spatial summarization."),
    ("grounded_places", False, "Named places in summarizations exist in that image's subgraph (hallucinations)."),
    ("homogeneity", False, "Distinct-2-gram ratio and near-duplicate rate across captions."),
)


@dg.asset(
    ins={name: dg.AssetIn(name) for name in ("images", "subgraph_descriptions", "subgraphs", "nodes")},
    # the long subgraph_nodes table is read a chunk of images at a time from its table path, never loaded whole
    deps=["subgraph_nodes"],
    partitions_def=city_partitions,
    group_name="dataset",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
    check_specs=[
        city_check(name, asset="captions", blocking=blocking, description=text) for name, blocking, text in _GATES
    ],
)
def captions(
    context: dg.AssetExecutionContext,
    cities: CityRegistryResource,
    storage: StorageResource,
    captioner: CaptionerResource,
    images: pd.DataFrame,
    subgraph_descriptions: pd.DataFrame,
    subgraphs: pd.DataFrame,
    nodes: pd.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Spatial context captions: the VLM (or the template twin) reads the image and its subgraph description.

    More than ``captioner.max_failed_share`` failed images fail the step (``IncompleteResultError``), so the
    previous table stays; finished captions are kept in the caption cache and the rerun asks only for the rest.
    """
    city = cities.city(context.partition_key)
    max_failed_share = failed_share_limit(captioner.max_failed_share)
    nodes_path = table_path(storage.root, "subgraph_nodes", context.partition_key)
    streamed = caption_requests_streamed(nodes_path, subgraphs, images, subgraph_descriptions, root=storage.local_dir())
    requests = streamed.requests
    writer = captioner.captioner()
    step = max(1, len(requests) // 10)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            context.log.info(f"captioned {done}/{total} images of {city.slug}")

    frame = writer.caption_all(
        requests, cache_dir=storage.local_dir(city.slug, "_cache", "captions"), progress=progress
    )
    failures = caption_failure_table(frame)
    failed = int(failures["count"].sum())
    if failed:
        context.log.warning(f"{failed}/{len(frame)} captions of {city.slug} failed: {describe_failures(failures)}")
    require_complete(frame, city=city.slug, max_failed_share=max_failed_share)
    stats = getattr(writer, "last_stats", None)
    yield dg.Output(
        frame,
        metadata={
            "model": writer.model,
            "done": len(frame) - failed,
            "failed": failed,
            "failure_reasons": preview(failures, rows=20),
            "prompt_tokens": int(frame["prompt_tokens"].fillna(0).sum()),
            "completion_tokens": int(frame["completion_tokens"].fillna(0).sum()),
            **({f"run/{k}": v for k, v in stats.as_dict().items()} if stats is not None else {}),
            "preview": preview(frame, columns=["image_id", "model", "status", "image_caption", "summarization"]),
        },
    )
    known = set(nodes["name"].dropna().astype(str))
    gates = {
        "both_sections": both_sections_share(frame),
        "grounded_places": hallucination_rate(frame, streamed.names, known),
        "homogeneity": homogeneity(frame),
    }
    for name, blocking, _ in _GATES:
        yield check_result(name, gates[name].outcome, asset_key="captions", blocking_severity=blocking)


class RecordsConfig(dg.Config):
    hard_negatives: bool = Field(default=True, description="Add texts of images 200-800 m away (same split).")
    n_negatives: int = Field(default=3, description="Hard negatives per record at most.")
    max_paths_per_image: int = Field(default=2, description="Path records per image.")
    seed: int = Field(default=0, description="Seed of instruction and negative choices.")


@dg.asset(
    ins={name: dg.AssetIn(name) for name in ("images", "captions", "srp", "subgraphs")},
    partitions_def=city_partitions,
    group_name="dataset",
    io_manager_key="table_io_manager",
    kinds={"pandas"},
    check_specs=[
        city_check(
            "no_query_contains_target",
            asset="training_records",
            blocking=True,
            description="No query text contains its positive's target place.",
        ),
        city_check(
            "negatives_within_split",
            asset="training_records",
            blocking=True,
            description="Every hard negative comes from an image of the same split.",
        ),
    ],
)
def training_records(
    context: dg.AssetExecutionContext,
    config: RecordsConfig,
    images: pd.DataFrame,
    captions: pd.DataFrame,
    srp: pd.DataFrame,
    subgraphs: pd.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Stage-1 and stage-2 UGData records plus the generic-caption baseline, splits carried from the images.

    A record whose instruction would name its target is dropped and reported (``dropped_records``, examples and a
    warning); more than 5 % dropped from one build fails the step (IncompleteResultError)."""
    options = {
        "hard_negatives": config.hard_negatives,
        "n_negatives": config.n_negatives,
        "max_paths_per_image": config.max_paths_per_image,
        "seed": config.seed,
        "city": f"city {context.partition_key!r}",
    }
    builds = [
        assemble_training_records(images, captions, srp, stage=1, variant="ugdata", **options),
        assemble_training_records(images, captions, srp, stage=2, variant="ugdata", subgraphs=subgraphs, **options),
        assemble_training_records(images, captions, None, stage=1, variant="baseline", **options),
    ]
    records = pd.concat([b.records for b in builds], ignore_index=True)
    dropped = pd.concat([b.dropped for b in builds], ignore_index=True)
    if len(dropped):
        context.log.warning(
            f"dropped {len(dropped)} training record(s) of {context.partition_key} that break a "
            f"per-record rule: {dropped['rule'].value_counts().to_dict()}"
        )
    counts = records.groupby(["stage", "variant", "split"]).size()
    yield dg.Output(
        records,
        metadata={
            "dropped_records": len(dropped),
            "dropped_examples": preview(dropped, columns=["record_id", "rule", "detail"]),
            "by_stage_variant_split": dg.MetadataValue.json({"/".join(map(str, k)): int(v) for k, v in counts.items()}),
            "by_pair_type": dg.MetadataValue.json(
                {str(k): int(v) for k, v in records["pair_type"].value_counts().items()}
            ),
            "preview": preview(
                records, columns=["record_id", "stage", "variant", "split", "instruction", "positive", "pair_type"]
            ),
        },
    )
    yield check_result("no_query_contains_target", query_leaks(records), asset_key="training_records")
    yield check_result("negatives_within_split", negatives_within_split(records), asset_key="training_records")


@dg.asset(
    ins={name: dg.AssetIn(name) for name in ("training_records", "subgraphs")},
    # the long tables are read a chunk of images at a time from their table paths, never loaded whole
    deps=["subgraph_nodes", "subgraph_edges"],
    partitions_def=city_partitions,
    group_name="dataset",
    kinds={"json"},
)
def ms_swift_export(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    training_records: pd.DataFrame,
    subgraphs: pd.DataFrame,
) -> dg.MaterializeResult:
    """The records as the reference's ms-swift JSONL (one folder per stage), images and graph JSON beside them."""
    paths = [table_path(storage.root, name, context.partition_key) for name in ("subgraph_nodes", "subgraph_edges")]
    root = storage.local_dir()
    written = {}
    for (stage, variant), records in training_records.groupby(["stage", "variant"]):
        out_dir = storage.local_dir(context.partition_key, "export", f"{variant}_stage{stage}")
        try:
            graph_json = StreamedSubgraphJson(*paths, subgraphs) if stage == 2 else None
            export = export_ms_swift(records, root=root, out_dir=out_dir, subgraph_json=graph_json)
        except DatasetInputError as exc:  # the core does not know the city; the user needs it to act
            msg = f"ms_swift_export of city {context.partition_key!r} ({variant} stage {stage}): {exc}"
            raise DatasetInputError(msg) from exc
        written[f"{variant}_stage{stage}"] = export.metadata()
    return dg.MaterializeResult(metadata={"exports": dg.MetadataValue.json(written)})
