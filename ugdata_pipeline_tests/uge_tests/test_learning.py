"""What makes UGE learn and reproduce: the learned temperature, step budgets, validation within pair type, fixed
threads, augmentation, graph ablation inputs, long texts, and the model family's run bookkeeping."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import TrainingDataError
from ugdata_pipeline.uge.backbone import MAX_LOGIT_SCALE, build_backbone
from ugdata_pipeline.uge.checkpoint import WEIGHTS_FILE
from ugdata_pipeline.uge.compact import FrozenSentenceEncoder, minilm_model_dir
from ugdata_pipeline.uge.data import build_graphs, centre_only, shuffle_graphs
from ugdata_pipeline.uge.family import MODEL_SPECS, model_spec
from ugdata_pipeline.uge.losses import symmetric_info_nce
from ugdata_pipeline.uge.runs import current_checkpoints, run_config, train_seed
from ugdata_pipeline.uge.train import TrainConfig, train
from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT, SMALL_GRAPH, run_with_threads

Synthetic = tuple[Path, pd.DataFrame, SubgraphTables]


def test_learned_temperature_gets_a_gradient_and_is_capped() -> None:
    torch.manual_seed(0)
    model = build_backbone("compact", SMALL_COMPACT)
    assert model.temperature().item() == pytest.approx(0.07, rel=1e-6)
    query, document = torch.randn(6, 8), torch.randn(6, 8)
    loss = symmetric_info_nce(query, document, temperature=model.temperature())
    loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs().item() > 0
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.temperature().item() == pytest.approx(math.exp(-MAX_LOGIT_SCALE))  # 0.01, never sharper
    with pytest.raises(ValueError, match="temperature must be > 0"):
        symmetric_info_nce(query, document, temperature=torch.tensor(0.0))


def test_step_budget_validation_by_pair_type_and_temperature(synthetic: Synthetic, tmp_path: Path) -> None:
    root, records, _ = synthetic
    config = TrainConfig(stage=1, steps=7, batch_size=8, lr=2e-3, out_dir=str(tmp_path), backbone_config=SMALL_COMPACT)
    result = train(records, root=root, config=config, progress=False)
    history = result.history
    train_rows, val_rows = history[history["split"] == "train"], history[history["split"] == "val"]
    assert result.steps == 7 and len(train_rows) == 7  # the budget, cycling over epochs as needed
    assert train_rows["epoch"].max() >= 1
    assert list(val_rows["step"]) == [1, 2, 3, 4, 5, 6, 7]  # every steps // 5 = 1 step, and at the end
    # validation ranks texts within each pair type: chance is that of the largest type's size, not of all records
    val = records[(records["stage"] == 1) & (records["variant"] == "ugdata") & (records["split"] == "val")]
    sizes = val["pair_type"].value_counts()
    chance = sum(n * sum(1 / k for k in range(1, n + 1)) / n for n in sizes) / sizes.sum()
    assert result.best_metrics["chance_mrr"] == pytest.approx(chance)
    assert {f"mrr/{t}" for t in sizes.index} <= set(result.best_metrics)
    # the temperature is learned: it moved from its initial 0.07
    assert train_rows["temperature"].iloc[-1] != pytest.approx(0.07, abs=1e-6)
    fixed = TrainConfig(
        stage=1,
        steps=3,
        batch_size=8,
        lr=2e-3,
        learn_temperature=False,
        temperature=0.05,
        out_dir=str(tmp_path / "fixed"),
        backbone_config=SMALL_COMPACT,
    )
    frozen = train(records, root=root, config=fixed, progress=False).history
    assert frozen.loc[frozen["split"] == "train", "temperature"].tolist() == pytest.approx([0.05] * 3)


def test_training_gives_identical_weights_whatever_the_machine_threads(synthetic: Synthetic, tmp_path: Path) -> None:
    root, records, _ = synthetic
    records.to_parquet(tmp_path / "records.parquet")
    script = (
        "import sys, pandas as pd\n"
        "from ugdata_pipeline.uge.train import TrainConfig, train\n"
        f"config = TrainConfig(stage=1, steps=4, batch_size=8, lr=2e-3, backbone_config={SMALL_COMPACT!r},\n"
        "                     out_dir=sys.argv[1])\n"
        f"train(pd.read_parquet({str(tmp_path / 'records.parquet')!r}), root={str(root)!r}, config=config,\n"
        "      progress=False)\n"
    )
    weights = []
    for threads in ("1", "2"):
        out = tmp_path / f"threads{threads}"
        run_with_threads(script, out, threads)
        weights.append(load_file(str(out / "checkpoints" / "last" / WEIGHTS_FILE)))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_augmentation_only_in_training_and_seeded() -> None:
    torch.manual_seed(0)
    model = build_backbone("compact", {**SMALL_COMPACT, "augment": 0.3})
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    model.eval()
    torch.testing.assert_close(model.embed_query_unfused(pixels, None), model.embed_query_unfused(pixels, None))
    model.train()
    torch.manual_seed(1)
    first = model._augment(pixels)
    torch.manual_seed(1)
    again = model._augment(pixels)
    assert torch.equal(first, again) and not torch.equal(first, pixels.float())
    assert first.shape == (4, 3, 32, 32) and float(first.min()) >= 0 and float(first.max()) <= 255
    with pytest.raises(ValueError, match="augment must be in"):
        build_backbone("compact", {**SMALL_COMPACT, "augment": 1.5})


def test_graph_ablation_inputs(synthetic: Synthetic) -> None:
    _, records, subgraphs = synthetic
    graphs = build_graphs(
        subgraphs, lambda texts: torch.ones(len(texts), 4), image_ids=sorted(set(records["image_id"]))
    )
    shuffled = shuffle_graphs(graphs, seed=3)
    assert set(shuffled) == set(graphs)
    assert all(shuffled[i].image_id != i for i in graphs)  # nobody keeps its own graph
    assert sorted(g.image_id for g in shuffled.values()) == sorted(graphs)  # every graph used once
    assert shuffle_graphs(graphs, seed=3)[next(iter(graphs))].image_id == shuffled[next(iter(graphs))].image_id
    lonely = centre_only(next(iter(graphs.values())))
    assert lonely.num_nodes == 1 and lonely.edge_index.shape == (2, 0) and bool(lonely.center_mask.all())


def test_long_texts_are_pooled_over_windows_not_cut() -> None:
    encoder = FrozenSentenceEncoder(minilm_model_dir(), max_tokens=16)
    short = "A quiet street."
    head = "Cafe Uno is on Alpha Street next to the park"
    tail = " and then a long list of other shops: bakery, bank, museum, library, school, station, theatre."
    long_text = head + tail * 4
    assert encoder.token_counts([long_text])[0] > 16 and encoder.long_text_share([short, long_text]) == 0.5
    vectors = encoder.encode([long_text, head, short])
    # a cut at 16 tokens would make the long text embed like its head; pooling over every window does not
    assert float(vectors[0] @ vectors[1]) < 0.95
    assert torch.linalg.norm(vectors, dim=1) == pytest.approx(torch.ones(3), abs=1e-5)
    wide = FrozenSentenceEncoder(minilm_model_dir(), max_tokens=128)
    assert float(wide.encode([short])[0] @ encoder.encode([short])[0]) == pytest.approx(1.0, abs=1e-5)


def test_model_family_budget_and_control() -> None:
    names = [spec.name for spec in MODEL_SPECS]
    assert names == ["baseline", "stage1", "stage2", "stage2_shuffled_graphs", "stage2_no_graph"]
    base = TrainConfig(batch_size=8)
    steps = {s.name: run_config(s, base, steps=100, seed=2).steps for s in MODEL_SPECS}
    # the control gets as many steps as stage 1 and stage 2 together; every stage-2 model as many as stage 2
    assert steps == {
        "baseline": 200,
        "stage1": 100,
        "stage2": 100,
        "stage2_shuffled_graphs": 100,
        "stage2_no_graph": 100,
    }
    assert run_config(model_spec("stage2_no_graph"), base, steps=5, seed=2).graph_input == "none"
    assert run_config(model_spec("baseline"), base, steps=5, seed=2).variant == "baseline"
    with pytest.raises(ValueError, match="unknown UGE model 'stage3'"):
        model_spec("stage3")


def test_runs_are_reused_pointed_to_relatively_and_need_their_parent(synthetic: Synthetic, tmp_path: Path) -> None:
    source, records, subgraphs = synthetic
    root = tmp_path / "root"
    root.mkdir()
    for path in sorted(set(records["image_path"])):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes((source / path).read_bytes())
    base = TrainConfig(batch_size=8, lr=2e-3, backbone_config=SMALL_COMPACT, graph_encoder=SMALL_GRAPH)
    with pytest.raises(TrainingDataError, match="starts from the stage1 model, which has no trained run"):
        train_seed(
            model_spec("stage2"), records, root=root, base=base, steps=2, seed=0, cities=["x"], subgraphs=subgraphs
        )
    first = train_seed(model_spec("stage1"), records, root=root, base=base, steps=2, seed=0, cities=["x"])
    again = train_seed(model_spec("stage1"), records, root=root, base=base, steps=2, seed=0, cities=["x"])
    assert again.fingerprint == first.fingerprint and again.result.samples_per_s == 0  # finished: nothing trained
    other = train_seed(model_spec("stage1"), records, root=root, base=base, steps=2, seed=1, cities=["x"])
    assert other.fingerprint != first.fingerprint
    pointer = json.loads((root / "models" / "stage1" / "current.json").read_text())
    assert set(pointer["seeds"]) == {"0", "1"} and pointer["cities"] == ["x"]
    assert all(not Path(e["checkpoint"]).is_absolute() for e in pointer["seeds"].values())
    stage2 = train_seed(
        model_spec("stage2"), records, root=root, base=base, steps=1, seed=0, cities=["x"], subgraphs=subgraphs
    )
    assert stage2.checkpoint.is_dir()
    # a copied root keeps its models: the pointer resolves under the new root
    moved = tmp_path / "moved"
    root.rename(moved)
    assert sorted(current_checkpoints(moved, "stage1")) == [0, 1]
    assert current_checkpoints(moved, "stage2", [0])[0].is_relative_to(moved)
    assert current_checkpoints(moved, "stage2", [1]) == {}
    # ... and reuses them: same fingerprints (no machine path in them), nothing trained again
    reused = train_seed(
        model_spec("stage2"), records, root=moved, base=base, steps=1, seed=0, cities=["x"], subgraphs=subgraphs
    )
    assert reused.fingerprint == stage2.fingerprint and reused.result.samples_per_s == 0
    # a checkpoint the pointer names but the disk lacks is an error where a model must not drop out silently
    lost = current_checkpoints(moved, "stage1")[1]
    shutil.rmtree(lost)
    assert sorted(current_checkpoints(moved, "stage1")) == [0]
    with pytest.raises(FileNotFoundError, match=r"current stage1 run of seed 1, but that folder is missing"):
        current_checkpoints(moved, "stage1", require_present=True)
