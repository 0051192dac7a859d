"""Every VLM family of the hf_vlm backbone on a tiny random model built in code (no hub access): prompt layout,
LoRA pinned to the language model, stage-1 and stage-2 steps, graph tokens at their rows with their item's own
vectors, the peft adapter round trip, bf16 and fp32. Phi-3-Vision's model code ships on the hub: what can be
checked without it (template, placeholders, LoRA regex on its published module names, refusals) is checked here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch_geometric.data import Batch, Data

from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.graph_encoder import GraphEncoderConfig
from ugdata_pipeline.uge.hf_vlm import HfVlmBackbone
from ugdata_pipeline.uge.hf_vlm_config import HFVLMConfig
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage
from ugdata_pipeline.uge.hf_vlm_tiny import BUILDABLE_FAMILIES, REAL_SIZES, VLMSizes, tiny_vlm
from ugdata_pipeline.uge.losses import symmetric_info_nce
from ugdata_pipeline.uge.vlm_adapters import FAMILIES, adapter_named
from ugdata_pipeline.uge.vlm_memory import language_model_parameters, training_memory, vision_parameters

GRAPH_CONFIG = GraphEncoderConfig(hidden_dim=32, edge_dim=8, heads=2)
VISION_MODULES = ("visual", "vision_tower", "vision_embed_tokens", "multi_modal_projector")


def make(family: str, dtype: str = "float32", **overrides) -> HfVlmBackbone:
    return HfVlmBackbone(HFVLMConfig(random_init={"seed": 0, "family": family}, dtype=dtype, **overrides))


def images(n: int) -> list[Image.Image]:
    # different shapes: LLaVA-NeXT picks different anyres grids, Qwen different patch grids
    shapes = [(24, 40), (40, 24), (32, 32), (20, 48)]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (*shapes[i % 4], 3), dtype=np.uint8)) for i in range(n)]


def star(backbone: HfVlmBackbone, n_nodes: int, seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    leaves = torch.arange(1, n_nodes)
    edge_index = torch.cat([torch.stack([torch.zeros_like(leaves), leaves]), torch.stack([leaves, leaves * 0])], 1)
    center = torch.zeros(n_nodes, dtype=torch.bool)
    center[0] = True
    return Data(
        x_text=backbone.encode_node_texts([f"place {seed}-{i}" for i in range(n_nodes)]),
        node_kind=torch.randint(0, 4, (n_nodes,), generator=gen),
        pos_m=torch.randn(n_nodes, 2, generator=gen) * 150,
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.shape[1], 5, generator=gen),
        center_mask=center,
        num_nodes=n_nodes,
    )


def test_every_paper_backbone_and_qwen3_vl_has_an_adapter() -> None:
    assert set(FAMILIES) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_next", "phi3_v"}
    assert set(BUILDABLE_FAMILIES) == set(FAMILIES) - {"phi3_v"}
    assert adapter_named("llava_next").checkpoints == ("llava-hf/llava-v1.6-mistral-7b-hf",)
    with pytest.raises(HFVLMError, match="unknown VLM family 'llava'"):
        adapter_named("llava")
    with pytest.raises(HFVLMError, match="`family` must be one of"):
        HFVLMConfig(family="llava")


@pytest.mark.parametrize("family", BUILDABLE_FAMILIES)
def test_lora_is_pinned_to_the_language_model(family: str) -> None:
    backbone = make(family)
    wrapped = {n.rsplit(".lora_", 1)[0] for n, _ in backbone.vlm.named_parameters() if "lora_" in n}
    assert len(wrapped) == 2 * VLMSizes().num_layers  # q and v of every decoder layer
    assert all(".language_model." in n and n.endswith(("q_proj", "v_proj")) for n in wrapped)
    assert not any(part in n for n in wrapped for part in VISION_MODULES)
    # the vision towers have q/v projections or fused qkv of their own: none of them is wrapped
    vision = [n for n, _ in backbone.vlm.named_modules() if any(p in n for p in VISION_MODULES)]
    assert vision and not any("lora_" in n for n in vision)


@pytest.mark.parametrize("family", BUILDABLE_FAMILIES)
def test_placeholders_match_the_features_the_model_makes(family: str) -> None:
    backbone = make(family)
    backbone.eval()
    batch = images(3)
    inputs = backbone.prepare(["north", "a longer instruction", None], batch, [1, 0, 2])
    prepared = backbone.prompts.prepare_images(batch)
    assert inputs.image_token_mask.sum(1).tolist() == [prepared[i].num_tokens for i in range(3)]
    with torch.no_grad():
        vectors = backbone.embed_query(batch, ["north", "a longer instruction", None])  # raises on a mismatch
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    if family == "llava_next":  # the same count as the real LlavaNextProcessor's own prompt expansion
        for i, image in enumerate(batch):
            item = prepared[i]
            expanded = backbone.processor(text=["<image>"], images=[image], return_tensors="pt")["input_ids"]
            assert int((expanded == backbone._token_ids["<image>"]).sum()) == item.num_tokens


def test_llava_next_prompt_is_mistral_instruct_with_the_system_prompt_first() -> None:
    backbone = make("llava_next")
    tok = backbone.tokenizer
    inputs = backbone.prepare(["where"], images(1), [2])
    row = inputs.input_ids[0].tolist()
    n = int(inputs.image_token_mask.sum())
    expected = (
        [tok.convert_tokens_to_ids("<s>")]
        + tok("[INST] You are a helpful assistant.\n\n", add_special_tokens=False)["input_ids"]
        + [backbone.graph_token_id] * 2
        + [tok.convert_tokens_to_ids("<image>")] * n
        + tok("\n", add_special_tokens=False)["input_ids"]
        + tok("where", add_special_tokens=False)["input_ids"]
        + tok(" [/INST]", add_special_tokens=False)["input_ids"]
    )
    assert row == expected
    assert int(inputs.last_token_index[0]) == len(row) - 1  # pooled at the last token of [/INST]


@pytest.mark.parametrize("family", BUILDABLE_FAMILIES)
def test_stage1_step_trains_lora_only(family: str) -> None:
    backbone = make(family)
    backbone.train()
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    optimizer = torch.optim.AdamW(backbone.backbone_parameters(), lr=1e-2)
    out = backbone(images(3), ["a", "b", "c"], ["Cafe Uno on Alpha Street.", "Bank Two.", "Trees on First Avenue."])
    loss = symmetric_info_nce(out.query, out.positive)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in backbone.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert {n for n in before if "lora_B" in n} <= changed
    assert all("lora_" in n or n == "logit_scale" for n in changed)


@pytest.mark.parametrize("family", BUILDABLE_FAMILIES)
def test_stage2_graph_tokens_carry_their_own_items_vectors(family: str) -> None:
    backbone = make(family)
    backbone.attach_graph_encoder(GRAPH_CONFIG)
    backbone.eval()
    captured: dict[str, torch.Tensor] = {}

    def grab(_module, _args, kwargs):
        captured["inputs_embeds"] = kwargs["inputs_embeds"].detach().clone()

    hook = backbone._core.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    batch, instructions = images(3), ["a", "b", "c"]
    graphs = Batch.from_data_list([star(backbone, n, seed) for seed, n in enumerate((3, 5, 2))])
    try:
        with torch.no_grad():
            fused = backbone.embed_query(batch, instructions, graphs)
            expected = backbone.graph_token_vectors(graphs)
    finally:
        hook.remove()
    inputs = backbone.prepare(instructions, batch, [1, 1, 1])
    embeds = captured["inputs_embeds"]
    assert embeds.shape[:2] == inputs.input_ids.shape
    torch.testing.assert_close(embeds[inputs.graph_token_mask], expected)  # row i holds graph i's vector
    table = backbone.token_embeddings.weight.detach()
    text = inputs.attention_mask.bool() & ~inputs.graph_token_mask & ~inputs.image_token_mask
    torch.testing.assert_close(embeds[text], table[inputs.input_ids[text]])
    # the image rows were filled with image features by the model, not left as placeholder embeddings
    placeholder = table[inputs.input_ids[inputs.image_token_mask]]
    assert (embeds[inputs.image_token_mask] - placeholder).abs().amax(-1).min() > 0
    with torch.no_grad():
        rotated = Batch.from_data_list([star(backbone, n, seed) for seed, n in [(1, 5), (2, 2), (0, 3)]])
        swapped = backbone.embed_query(batch, instructions, rotated)
    assert (1 - (swapped * fused).sum(-1)).min() > 1e-6

    backbone.train()
    out = backbone(batch, instructions, ["Cafe Uno.", "Bank Two.", "Central Park."], graph=graphs)
    symmetric_info_nce(out.query, out.positive).backward()
    assert all(p.grad is not None for p in backbone.lora_parameters())
    assert backbone.graph_fusion.gain.grad.abs().sum() > 0
    assert all(p.grad is not None for p in backbone.graph_encoder.parameters() if p.requires_grad)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize("family", BUILDABLE_FAMILIES)
def test_adapter_round_trip_gives_identical_embeddings(family: str, tmp_path: Path) -> None:
    backbone = make(family)
    with torch.no_grad():
        for p in backbone.lora_parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    backbone.eval()
    batch, texts = images(2), ["Alpha Street", "Cafe Uno"]
    with torch.no_grad():
        query, text = backbone.embed_query(batch, ["where", "what"]), backbone.embed_text(texts)
    backbone.save_adapter(tmp_path / "adapter")
    fresh = make(family)
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.embed_text(texts), text)
    fresh.load_adapter(tmp_path / "adapter", trainable=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh.embed_query(batch, ["where", "what"]), query)
        torch.testing.assert_close(fresh.embed_text(texts), text)


@pytest.mark.parametrize("family", BUILDABLE_FAMILIES)
def test_bf16_embeddings_follow_fp32(family: str) -> None:
    full, half = make(family), make(family, dtype="bfloat16")
    assert next(half.vlm.get_base_model().parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in half.lora_parameters())  # peft keeps LoRA in float32
    full.eval()
    half.eval()
    batch = images(2)
    with torch.no_grad():
        a, b = full.embed_query(batch, ["where", "what"]), half.embed_query(batch, ["where", "what"])
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.norm(dim=-1), torch.ones(2))
    assert (a * b).sum(-1).min() > 0.98  # same weights, rounded: the same direction


# ------------------------------------------------------------------------------------------------ Phi-3-Vision


def phi3_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(["<unk>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<|endoftext|>")


def test_phi3_vision_template_and_negative_image_placeholders() -> None:
    adapter, tok = adapter_named("phi3_v"), phi3_tokenizer()
    prefix, suffix = adapter.prompt_ids(tok, "Be brief.")
    assert tok.decode(prefix) == "<|system|>\nBe brief.<|end|>\n<|user|>\n"
    assert tok.decode(suffix) == "<|end|>\n<|assistant|>\n"
    image = PreparedImage(torch.zeros(5, 3, 336, 336), torch.tensor([672, 672]), 1921)
    assert adapter.image_placeholder(image, {}) == [-1] * 1921
    ids = torch.tensor([[7, -1, -1, 9]])
    assert adapter.image_token_mask(ids, {}).tolist() == [[False, True, True, False]]
    assert adapter.default_lora_targets == ("qkv_proj", "o_proj")


def test_phi3_vision_lora_regex_selects_the_decoder_and_never_clip() -> None:
    import re

    # module names of the published microsoft/Phi-3-vision-128k-instruct checkpoint
    names = [
        "model.layers.0.self_attn.qkv_proj",
        "model.layers.0.self_attn.o_proj",
        "model.layers.31.mlp.gate_up_proj",
        "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.self_attn.q_proj",
        "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.self_attn.out_proj",
        "model.vision_embed_tokens.img_projection.0",
        "lm_head",
    ]
    regex = adapter_named("phi3_v").lora_target_regex(("qkv_proj", "o_proj", "q_proj", "out_proj"))
    assert [n for n in names if re.fullmatch(regex, n)] == names[:2]


def test_phi3_vision_refusals_say_what_to_do() -> None:
    with pytest.raises(HFVLMError, match="trust_remote_code: true"):
        make_config = HFVLMConfig(model_name_or_path="microsoft/Phi-3-vision-128k-instruct", family="phi3_v")
        HfVlmBackbone(make_config)
    with pytest.raises(HFVLMError, match="no random 'phi3_v' model can be built"):
        tiny_vlm(0, sizes=VLMSizes(family="phi3_v"))


def test_an_unreachable_checkpoint_is_named_with_its_family(tmp_path: Path) -> None:
    config = HFVLMConfig(
        model_name_or_path=str(tmp_path / "no-such-model"), family="llava_next", local_files_only=True, dtype="float32"
    )
    with pytest.raises(HFVLMError, match=r"cannot load .*no-such-model.* \(llava_next\)"):
        HfVlmBackbone(config)


# ------------------------------------------------------------------------------------------ sizes and configuration


@pytest.mark.parametrize("family", BUILDABLE_FAMILIES)
def test_parameter_counts_equal_the_models_transformers_builds(family: str) -> None:
    sizes = REAL_SIZES[family]
    model = tiny_vlm(0, sizes=sizes, device="meta", dtype=torch.bfloat16).model  # shapes only, no memory
    language = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    assert language_model_parameters(sizes) == language
    assert vision_parameters(sizes) == total - language


def test_published_sizes_and_the_training_memory_estimate() -> None:
    billions = {f: (language_model_parameters(s) + vision_parameters(s)) / 1e9 for f, s in REAL_SIZES.items()}
    # the model cards: Qwen2-VL-7B 8.29 B, Qwen2.5-VL-7B 8.29 B, Qwen3-VL-8B 8.77 B, LLaVA-1.6-Mistral-7B 7.57 B,
    # Phi-3-vision-128k 4.15 B
    expected = {"qwen2_vl": 8.29, "qwen2_5_vl": 8.29, "qwen3_vl": 8.77, "llava_next": 7.57, "phi3_v": 4.15}
    assert billions == pytest.approx(expected, abs=0.006)
    qwen = training_memory(
        REAL_SIZES["qwen2_5_vl"], sequences=8, tokens=1024, image_tokens=1024, lora_targets=("q_proj", "v_proj")
    )
    assert qwen.weights == pytest.approx(8.29e9 * 2 / 1024**3, rel=0.01)
    # r=16 on q (3584 -> 3584) and v (3584 -> 512) of 28 layers, float32 weight + grad + two AdamW moments
    assert qwen.lora_and_optimizer == pytest.approx(28 * 16 * ((3584 + 3584) + (3584 + 512)) * 16 / 1024**3)
    assert 0 < qwen.activations < qwen.weights
    longer = training_memory(
        REAL_SIZES["qwen2_5_vl"], sequences=8, tokens=2048, image_tokens=1024, lora_targets=("q_proj", "v_proj")
    )
    assert longer.activations > qwen.activations and longer.weights == qwen.weights


def test_the_trainer_names_family_and_checkpoint() -> None:
    from ugdata_pipeline.resources import TrainerResource

    assert TrainerResource().backbone_config() == {}  # compact: unchanged, so existing run fingerprints hold
    llava = TrainerResource(
        backbone="hf_vlm", vlm_checkpoint="llava-hf/llava-v1.6-mistral-7b-hf", vlm_family="llava_next"
    )
    config = llava.base_config()
    assert config.backbone == "hf_vlm"
    assert config.backbone_config == {
        "model_name_or_path": "llava-hf/llava-v1.6-mistral-7b-hf",
        "family": "llava_next",
        "trust_remote_code": False,
        "dtype": "bfloat16",
    }
    with pytest.raises(ValueError, match=r"needs trainer\.vlm_checkpoint"):
        TrainerResource(backbone="hf_vlm").backbone_config()
    with pytest.raises(HFVLMError, match="`family` must be one of"):
        TrainerResource(backbone="hf_vlm", vlm_checkpoint="x", vlm_family="llava").backbone_config()
    with pytest.raises(ValueError, match=r"apply to backbone hf_vlm, but trainer\.backbone is .compact."):
        TrainerResource(vlm_checkpoint="Qwen/Qwen2.5-VL-7B-Instruct").backbone_config()


def test_the_gpu_benchmark_runs_every_family_end_to_end_at_tiny_size(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_hf_vlm.py"
    out = tmp_path / "bench.json"
    args = [sys.executable, str(script), "--size", "tiny", "--steps", "1", "--warmup", "0", "--json", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert [f["family"] for f in report["families"]] == list(BUILDABLE_FAMILIES)
    for family in report["families"]:
        runs = {(r["stage"], r["checkpointing"]): r for r in family["runs"]}
        assert set(runs) == {(1, True), (1, False), (2, True)}
        assert all(r["step_s"] > 0 and r["tokens_per_s"] > 0 and math.isfinite(r["loss_last"]) for r in runs.values())
        assert family["embed"]["queries_per_s"] > 0
        assert family["vision_patches_per_step"] > 0 and family["estimated_mem_gib"] > 0
    assert "phi3_v" in report["not_benchmarked"]
    assert "stage 2 ckpt" in done.stdout and "phi3_v: not benchmarked" in done.stdout


def test_the_shell_selects_the_backbone_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ugdata_pipeline.definitions import resources_for

    monkeypatch.setenv("UGDATA_BACKBONE", "hf_vlm")
    monkeypatch.setenv("UGDATA_VLM_CHECKPOINT", "microsoft/Phi-3-vision-128k-instruct")
    monkeypatch.setenv("UGDATA_VLM_FAMILY", "phi3_v")
    monkeypatch.setenv("UGDATA_VLM_TRUST_REMOTE_CODE", "1")
    trainer = resources_for("local")["trainer"]
    assert trainer.base_config().backbone_config == {
        "model_name_or_path": "microsoft/Phi-3-vision-128k-instruct",
        "family": "phi3_v",
        "trust_remote_code": True,
        "dtype": "bfloat16",
    }
    monkeypatch.delenv("UGDATA_BACKBONE")
    monkeypatch.delenv("UGDATA_VLM_CHECKPOINT")
    monkeypatch.delenv("UGDATA_VLM_FAMILY")
    monkeypatch.delenv("UGDATA_VLM_TRUST_REMOTE_CODE")
    assert resources_for("local")["trainer"].base_config().backbone_config == {}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_next"])
def test_train_runs_both_stages_on_ugdata_records_and_reloads(family: str, synthetic, tmp_path: Path) -> None:
    """The trainer, the data pipeline (prepared images, subgraph graphs) and checkpoints with an hf_vlm backbone."""
    from ugdata_pipeline.uge.embed import embed_images, embed_texts, load_model
    from ugdata_pipeline.uge.train import TrainConfig, train
    from ugdata_pipeline_tests.uge_tests.conftest import SMALL_GRAPH

    root, records, subgraphs = synthetic
    backbone_config = {"random_init": {"seed": 0, "family": family}, "dtype": "float32", "max_text_tokens": 48}
    common = {"epochs": 1, "batch_size": 4, "backbone": "hf_vlm", "backbone_config": backbone_config}
    stage1 = train(
        records,
        root=root,
        config=TrainConfig(stage=1, max_steps=2, lr=1e-3, out_dir=str(tmp_path / "s1"), **common),
        progress=False,
    )
    assert stage1.steps == 2 and (stage1.checkpoint_dir / "adapter" / "adapter_config.json").is_file()
    stage2 = train(
        records,
        root=root,
        subgraphs=subgraphs,
        config=TrainConfig(
            stage=2, max_steps=1, lr=1e-3, out_dir=str(tmp_path / "s2"), graph_encoder=SMALL_GRAPH, **common
        ),
        init_from=stage1.checkpoint_dir,
        progress=False,
    )
    assert stage2.steps == 1 and stage2.params_trained["graph"] > 0
    model = load_model(stage2.checkpoint_dir)
    assert model.family == family
    paths = records["image_path"].iloc[:2].tolist()
    images = embed_images(model, paths, "Where was this taken?", root=root)
    texts = embed_texts(model, ["Alpha Street", "Cafe Uno"])
    assert images.shape == (2, model.embed_dim) and texts.shape == (2, model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, rtol=1e-5)
