"""Embedding API and CLI: normalised, batched == single, graphs used at inference, one graph per sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.uge.data import collate_graphs
from ugdata_pipeline.uge.embed import build_model_graphs, embed_fusion, embed_images, embed_texts, load_model, main
from ugdata_pipeline.uge.train import TrainResult

Synthetic = tuple[Path, pd.DataFrame, SubgraphTables]


def _val_images(records: pd.DataFrame) -> pd.DataFrame:
    return records[(records["stage"] == 2) & (records["split"] == "val")].reset_index(drop=True)


def test_embeddings_are_normalised_and_batching_changes_nothing(synthetic: Synthetic, stage1_run: TrainResult) -> None:
    root, records, _ = synthetic
    model = load_model(stage1_run.checkpoint_dir)
    paths = _val_images(records)["image_path"].tolist()
    batched = embed_images(model, paths, "Describe the place.", batch_size=64, root=root)
    single = np.concatenate([embed_images(model, [p], "Describe the place.", batch_size=1, root=root) for p in paths])
    assert batched.shape == (len(paths), model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    texts = embed_texts(model, ["a red building", "a blue building", "a red building"])
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(texts[0], texts[2], atol=1e-6)
    # the instruction conditions the query
    other = embed_images(model, paths[:2], "Where is the nearest park?", root=root)
    assert not np.allclose(other, batched[:2], atol=1e-4)
    with pytest.raises(ValueError, match="this checkpoint has no graph encoder"):
        embed_fusion(model, paths[:1], [None], root=root)


def test_fusion_uses_each_samples_own_graph_at_inference(synthetic: Synthetic, stage2_run: TrainResult) -> None:
    root, _, subgraphs = synthetic
    model = load_model(stage2_run.checkpoint_dir)
    assert model.graph_encoder is not None and not model.training
    ids = ["p0v2", "p3v2", "p5v2"]
    assert model.graph_max_nodes == 64  # the training run's cap travels with the checkpoint
    graphs = dict(zip(ids, build_model_graphs(model, subgraphs, ids), strict=True))
    same_image = ["img/p1v2.png"] * 3  # one image, three different graphs
    fused = embed_fusion(model, same_image, [graphs[i] for i in ids], "Describe the place.", root=root)
    image_only = embed_images(model, same_image, "Describe the place.", root=root)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(fused, image_only, atol=1e-3)  # the graph is used at inference
    assert not np.allclose(fused[0], fused[1], atol=1e-4) and not np.allclose(fused[1], fused[2], atol=1e-4)
    permuted = embed_fusion(
        model, same_image, [graphs[i] for i in [ids[2], ids[0], ids[1]]], "Describe the place.", root=root
    )
    np.testing.assert_allclose(permuted, fused[[2, 0, 1]], atol=1e-5)
    # batch of 3 == one at a time (no graph leaks across samples)
    single = np.concatenate(
        [embed_fusion(model, [same_image[0]], [graphs[i]], "Describe the place.", root=root) for i in ids]
    )
    np.testing.assert_allclose(single, fused, atol=1e-5)
    # the backbone refuses a graph count that does not match the images
    with pytest.raises(ValueError, match="got 2 graphs for 3 images"):
        model.embed_query(
            model.collate_images([model.prepare_image(_img(root, p)) for p in same_image]),
            None,
            collate_graphs([graphs[ids[0]], graphs[ids[1]]]),
        )


def _img(root: Path, rel: str):
    from PIL import Image

    with Image.open(root / rel) as image:
        return image.copy()


def test_cli_embeds_a_city_to_parquet(synthetic: Synthetic, stage2_run: TrainResult, tmp_path: Path) -> None:
    root, records, subgraphs = synthetic
    images = _val_images(records)[["image_id", "image_path"]].rename(columns={"image_path": "path"})
    images.to_parquet(tmp_path / "images.parquet")
    subgraphs.nodes.to_parquet(tmp_path / "nodes.parquet")
    subgraphs.edges.to_parquet(tmp_path / "edges.parquet")
    common = [
        "--checkpoint",
        str(stage2_run.checkpoint_dir),
        "--images",
        str(tmp_path / "images.parquet"),
        "--root",
        str(root),
    ]
    assert main([*common, "--out", str(tmp_path / "image.parquet")]) == 0
    assert (
        main(
            [
                *common,
                "--out",
                str(tmp_path / "fusion.parquet"),
                "--subgraph-nodes",
                str(tmp_path / "nodes.parquet"),
                "--subgraph-edges",
                str(tmp_path / "edges.parquet"),
            ]
        )
        == 0
    )
    image_rows = pd.read_parquet(tmp_path / "image.parquet")
    fusion_rows = pd.read_parquet(tmp_path / "fusion.parquet")
    assert image_rows["image_id"].tolist() == images["image_id"].tolist()
    assert set(image_rows["mode"]) == {"image"} and set(fusion_rows["mode"]) == {"fusion"}
    a, b = np.stack(image_rows["embedding"]), np.stack(fusion_rows["embedding"])
    assert a.shape == b.shape == (len(images), 64)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-3)
    model = load_model(stage2_run.checkpoint_dir)
    np.testing.assert_allclose(a, embed_images(model, images["path"].tolist(), root=root), atol=1e-5)


def test_decoded_images_are_reused_refreshed_when_rewritten_and_bounded(tmp_path: Path) -> None:
    import os

    from PIL import Image

    from ugdata_pipeline.uge.images import ImageCache

    cache = ImageCache(max_bytes=2 * 8 * 8 * 3)  # room for two 8 x 8 images
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(path)
    first = cache.rgb(paths[0])
    assert cache.rgb(paths[0]) is first  # decoded once
    Image.new("RGB", (8, 8), (200, 0, 0)).save(paths[0])
    os.utime(paths[0], ns=(1, 10**18))  # a rewritten file: new mtime
    assert int(cache.rgb(paths[0])[0, 0, 0]) == 200
    cache.rgb(paths[1])
    cache.rgb(paths[2])
    assert cache._bytes <= cache.max_bytes and len(cache._items) == 2  # the oldest was evicted


def test_benchmark_embeddings_are_identical_whatever_the_machine_threads(
    synthetic: Synthetic, stage2_run: TrainResult, tmp_path: Path
) -> None:
    """UgeModel embeds under its own fixed thread count: 1- and 2-core machines print the same benchmark."""
    from ugdata_pipeline_tests.uge_tests.conftest import run_with_threads

    root, records, subgraphs = synthetic
    val = _val_images(records).drop_duplicates("image_id").head(6)
    nodes = subgraphs.nodes[subgraphs.nodes["image_id"].isin(val["image_id"])]
    edges = subgraphs.edges[subgraphs.edges["image_id"].isin(val["image_id"])]
    nodes.to_parquet(tmp_path / "nodes.parquet")
    edges.to_parquet(tmp_path / "edges.parquet")
    script = (
        "import sys, numpy as np, pandas as pd\n"
        "from ugdata_pipeline.ugbench.models import UgeModel\n"
        f"model = UgeModel({str(stage2_run.checkpoint_dir)!r})\n"
        f"nodes, edges = pd.read_parquet({str(tmp_path / 'nodes.parquet')!r}), "
        f"pd.read_parquet({str(tmp_path / 'edges.parquet')!r})\n"
        f"ids = {[str(i) for i in val['image_id']]!r}\n"
        f"paths = [{str(root)!r} + '/' + p for p in {val['image_path'].tolist()!r}]\n"
        "graphs = [(nodes[nodes['image_id'] == i], edges[edges['image_id'] == i]) for i in ids]\n"
        "np.save(sys.argv[1], np.concatenate([model.embed_fusion(paths, graphs, instruction='Where is this?'),\n"
        "                                     model.embed_texts(['a red building', 'a quiet street'])]))\n"
    )
    vectors = []
    for threads in ("1", "2"):
        out = tmp_path / f"threads{threads}.npy"
        run_with_threads(script, out, threads)
        vectors.append(np.load(out))
    assert vectors[0].shape == (len(val) + 2, vectors[0].shape[1])
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_a_trained_stage2_model_concatenates_heads_and_loads_as_trained(stage2_run: TrainResult) -> None:
    model = load_model(stage2_run.checkpoint_dir)
    assert model.graph_encoder.config.concat_heads is True  # built from today's defaults, saved and loaded so
    assert all(conv.concat for conv in model.graph_encoder.convs)
