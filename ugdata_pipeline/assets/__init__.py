"""Dagster assets and asset checks: thin wrappers over the core, one module per stage.

Every asset gets, here and once, what the UI shows about it: the project's owner, a ``stage`` tag (its group), a
``gpu`` tag where it runs in the ``gpu`` pool, and a reference to the source line of its function (a local file;
:func:`linked_to_git` turns it into a link to the repository). There is no
``city`` tag: the city is the partition (``dagster/partition``) of the city assets, and the assets that are not
partitioned (training, benchmark) read every city.
"""

from pathlib import Path

import dagster as dg

from ugdata_pipeline.assets.context import spatial_subgraphs, subgraph_descriptions
from ugdata_pipeline.assets.dataset import captions, ms_swift_export, training_records
from ugdata_pipeline.assets.graph import urban_graph
from ugdata_pipeline.assets.imagery import image_anchoring, image_candidates, image_files, images
from ugdata_pipeline.assets.osm import osm_extract
from ugdata_pipeline.assets.reasoning import spatial_reasoning_paths
from ugdata_pipeline.assets.ugbench import benchmark_results, benchmark_tasks
from ugdata_pipeline.assets.uge import ALL_UGE_ASSETS

#: Who answers for the assets (Dagster's owners: a team or an e-mail address).
OWNER = "team:ugdata"


def _standard(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The asset with the owner and the stage (and gpu) tags on each of its specs."""
    gpu = {"gpu": ""} if asset.op.pool == "gpu" else {}  # a key-only tag: the UI shows it as a label
    return asset.map_asset_specs(
        lambda spec: spec.merge_attributes(owners=[OWNER], tags={"stage": spec.group_name or "default", **gpu})
    )


ALL_ASSETS: list[dg.AssetsDefinition] = dg.with_source_code_references(
    [
        _standard(asset)
        for asset in (
            osm_extract,
            urban_graph,
            image_candidates,
            image_files,
            image_anchoring,
            images,
            spatial_reasoning_paths,
            spatial_subgraphs,
            subgraph_descriptions,
            captions,
            training_records,
            ms_swift_export,
            benchmark_tasks,
            *ALL_UGE_ASSETS,
            benchmark_results,
        )
    ]
)


def linked_to_git(assets: list[dg.AssetsDefinition], git_url: str | None, git_branch: str) -> list[dg.AssetsDefinition]:
    """
    The assets with their code references pointing at ``git_url`` (the project root is the repository root) on
    ``git_branch``, so a deployed UI links to the hosted source; without a URL the local references stay.
    """
    if not git_url:
        return assets
    mapping = dg.AnchorBasedFilePathMapping(
        local_file_anchor=Path(__file__).resolve().parents[2], file_anchor_path_in_repository=""
    )
    return list(
        dg.link_code_references_to_git(assets, git_url=git_url, git_branch=git_branch, file_path_mapping=mapping)
    )
