"""The hf_vlm backbone on tiny random-weight Qwen2-VL / Qwen2.5-VL models built in code (CPU, float32, no hub)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ugdata_pipeline._pyg import Batch, Data  # PyG's names, imported with its import-time warning silenced
from ugdata_pipeline.errors import HFVLMError
from ugdata_pipeline.uge.backbone import build_backbone
from ugdata_pipeline.uge.graph_encoder import GraphEncoderConfig
from ugdata_pipeline.uge.hf_vlm import GraphTokenProjector, HFVLMBackbone, HfVlmBackbone
from ugdata_pipeline.uge.hf_vlm_config import HFVLMConfig
from ugdata_pipeline.uge.hf_vlm_inputs import PreparedImage
from ugdata_pipeline.uge.hf_vlm_tiny import REAL_SIZES, VLMSizes, tiny_vlm
from ugdata_pipeline.uge.losses import symmetric_info_nce
from ugdata_pipeline.uge.vlm_adapters.qwen import IM_END, IM_START, IMAGE_PAD, VISION_END, VISION_START

HIDDEN = VLMSizes().hidden_size
GRAPH_CONFIG = GraphEncoderConfig(hidden_dim=32, edge_dim=8, heads=2)


def make_backbone(**overrides) -> HfVlmBackbone:
    """A tiny Qwen2-VL backbone, float32, seed 0 (same weights every call)."""
    config = {"random_init": {"seed": 0}, "dtype": "float32", **overrides}
    return HfVlmBackbone(HFVLMConfig(**config))


def street_images(n: int, size: tuple[int, int] = (16, 24)) -> list[Image.Image]:
    return [Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)) for i in range(n)]


def subgraph(backbone: HfVlmBackbone, n_nodes: int, seed: int) -> Data:
    """A star-shaped subgraph around the image node (rank 0), edges both ways, as uge.data.build_graphs makes."""
    gen = torch.Generator().manual_seed(seed)
    leaves = torch.arange(1, n_nodes)
    hub = torch.zeros_like(leaves)
    edge_index = torch.cat([torch.stack([hub, leaves]), torch.stack([leaves, hub])], dim=1)
    center = torch.zeros(n_nodes, dtype=torch.bool)
    center[0] = True
    return Data(
        x_text=backbone.encode_node_texts([f"place {seed}-{i}, a cafe" for i in range(n_nodes)]),
        node_kind=torch.randint(0, 4, (n_nodes,), generator=gen),
        pos_m=torch.randn(n_nodes, 2, generator=gen) * 150,
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.shape[1], 5, generator=gen),
        center_mask=center,
        num_nodes=n_nodes,
    )


def lora_state(backbone: HfVlmBackbone) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in backbone.vlm.named_parameters() if "lora_" in n}


# ---------------------------------------------------------------------------------------------------- construction


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_both_families_embed_to_unit_vectors(family: str) -> None:
    sizes = {"family": family, "vision_depth": 2, "fullatt_block_indexes": [1]}
    backbone = make_backbone(random_init={"seed": 0, **sizes})
    backbone.eval()
    with torch.no_grad():
        query = backbone.embed_query(street_images(2), ["Where was this taken?", None])
        text = backbone.embed_text(["A red cafe on Alpha Street.", "Bank Two in Central Park."])
    assert query.shape == text.shape == (2, HIDDEN)
    assert query.dtype == torch.float32
    torch.testing.assert_close(query.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(query[0], query[1])


def test_lora_lands_on_language_model_q_and_v_only() -> None:
    backbone = make_backbone()
    lora_modules = {n.rsplit(".lora_", 1)[0] for n, _ in backbone.vlm.named_parameters() if "lora_" in n}
    assert lora_modules
    assert all(".language_model." in n and n.endswith(("q_proj", "v_proj")) for n in lora_modules)
    assert len(lora_modules) == 2 * VLMSizes().num_layers  # q and v in every decoder layer, none in the ViT
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    # LoRA of the language model, and the learned InfoNCE temperature of every backbone
    assert trainable == {f"vlm.{n}" for n, _ in backbone.vlm.named_parameters() if "lora_" in n} | {"logit_scale"}
    counts = backbone.parameter_counts()
    # per layer and projection: A [r, in] + B [out, in]; q_proj 64 -> 64, v_proj 64 -> 32 (2 kv heads of 16)
    assert counts["lora"] == VLMSizes().num_layers * 16 * ((64 + 64) + (64 + 32))
    assert counts["trainable"] == counts["lora"] + 1  # + the logit scale


def test_custom_lora_targets_and_bad_targets() -> None:
    backbone = make_backbone(lora_targets=("o_proj", "gate_proj"), lora_r=4)
    names = {n for n, _ in backbone.vlm.named_parameters() if "lora_A" in n}
    assert names and all(("o_proj" in n or "gate_proj" in n) for n in names)
    with pytest.raises(HFVLMError, match="no language-model module matches `lora_targets`"):
        make_backbone(lora_targets=("qkv_fused",))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_r": 0}, "`lora_r` must be >= 1"),
        ({"dtype": "int8"}, "`dtype` must be one of"),
        ({"num_graph_tokens": 0}, "`num_graph_tokens` must be None or >= 1"),
        ({"graph_token": "<gr aph>"}, "`graph_token` must be a non-empty token"),
        ({"model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct"}, "not both"),
        ({"random_init": {"seed": 0, "hidden": 8}}, "unknown keys"),
    ],
)
def test_config_errors_name_the_field(overrides: dict, message: str) -> None:
    base = {"random_init": {"seed": 0}, "dtype": "float32"}
    with pytest.raises(HFVLMError, match=message):
        HFVLMConfig(**{**base, **overrides})


def test_no_model_source_is_a_clear_error() -> None:
    with pytest.raises(HFVLMError, match="needs a model"):
        build_backbone("hf_vlm", {})


def test_config_round_trip_rebuilds_identical_model() -> None:
    backbone = make_backbone(lora_r=8)
    config = json.loads(json.dumps(backbone.to_config()))
    twin = build_backbone("hf_vlm", config)
    assert isinstance(twin, HFVLMBackbone)
    assert twin.config == backbone.config
    backbone.eval()
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin.embed_text(["Gamma Street"]), backbone.embed_text(["Gamma Street"]))


# ---------------------------------------------------------------------------------------------------- prompt, pooling


def test_prompt_layout_places_graph_then_image_then_text() -> None:
    backbone = make_backbone()
    tok = backbone.tokenizer
    image = street_images(1, size=(16, 24))[0]  # resized to 16 x 24: 4 x 6 patches, merged 2 x 2 -> 6 tokens
    inputs = backbone.prepare(["north of the park", "x"], [image, None], [2, 0])
    row = inputs.input_ids[0][inputs.attention_mask[0].bool()].tolist()
    prefix = tok(f"{IM_START}system\nYou are a helpful assistant.{IM_END}\n{IM_START}user\n", add_special_tokens=False)
    body = (
        [backbone.graph_token_id] * 2
        + tok.convert_tokens_to_ids([VISION_START, *[IMAGE_PAD] * 6, VISION_END])
        + tok("north of the park", add_special_tokens=False)["input_ids"]
    )
    suffix = tok(f"{IM_END}\n{IM_START}assistant\n", add_special_tokens=False)["input_ids"]
    assert row == prefix["input_ids"] + body + suffix
    assert inputs.image_inputs["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert inputs.image_inputs["pixel_values"].shape[0] == 24  # one row per 4 x 4 patch, before merging
    # image tokens and graph tokens are flagged exactly where they are
    assert inputs.image_token_mask.sum().item() == 6
    assert inputs.graph_token_mask.sum(1).tolist() == [2, 0]
    # the pooled token is each row's final "\n" after "assistant", row 1 being right-padded
    last = inputs.last_token_index
    assert last.tolist() == [len(row) - 1, int(inputs.attention_mask[1].sum()) - 1]
    assert tok.decode(inputs.input_ids[1, : last[1] + 1]).endswith(f"{IM_END}\n{IM_START}assistant\n")
    assert tok.decode(inputs.input_ids[1, last[1]]) == "\n"


def test_padding_does_not_change_an_embedding() -> None:
    backbone = make_backbone()
    backbone.eval()
    images = street_images(2)
    with torch.no_grad():
        alone = backbone.embed_query(images[:1], ["short"])
        padded = backbone.embed_query(images, ["short", "a much longer instruction that forces padding " * 3])
        text_alone = backbone.embed_text(["Beta Street"])
        text_padded = backbone.embed_text(["Beta Street", "Third Avenue meets Gamma Street near Cafe Uno."])
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(text_padded[:1], text_alone, atol=1e-5, rtol=1e-4)


def test_prepared_images_match_raw_images() -> None:
    backbone = make_backbone()
    backbone.eval()
    images = street_images(2)
    prepared = backbone.collate_images([backbone.prepare_image(im) for im in images])
    assert all(isinstance(p, PreparedImage) for p in prepared)
    with torch.no_grad():
        torch.testing.assert_close(backbone.embed_query(prepared, ["a", "b"]), backbone.embed_query(images, ["a", "b"]))


def test_blank_instruction_uses_the_embedding_instruction() -> None:
    backbone = make_backbone(embedding_instruction="Embed the scene.")
    backbone.eval()
    images = street_images(1)
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.embed_query(images, [None]), backbone.embed_query(images, ["Embed the scene."])
        )


def test_input_errors_are_named() -> None:
    backbone = make_backbone()
    with pytest.raises(HFVLMError, match="reserved placeholder token"):
        backbone.embed_query(street_images(1), ["<graph> where is this?"])
    with pytest.raises(HFVLMError, match="got 1 instructions for 2 images"):
        backbone.embed_query(street_images(2), ["x"])
    with pytest.raises(HFVLMError, match=r"must be \[n >= 1, 64\]"):
        backbone.embed_query(street_images(1), ["x"], graph_vectors=torch.zeros(1, 32))
    with pytest.raises(HFVLMError, match="has no graph encoder"):
        backbone.embed_query(street_images(1), ["x"], Batch.from_data_list([subgraph(backbone, 3, 0)]))
    with pytest.raises(HFVLMError, match="does not exist"):
        backbone.embed_query(["/nonexistent/street.png"], ["x"])
    with pytest.raises(HFVLMError, match="non-blank strings"):
        backbone.embed_text(["ok", "  "])
    fixed = make_backbone(num_graph_tokens=2)
    with pytest.raises(HFVLMError, match="has 1 vectors but `num_graph_tokens` is 2"):
        fixed.embed_query(street_images(1), ["x"], graph_vectors=torch.zeros(1, 1, HIDDEN))


def test_node_text_features_are_mean_token_embeddings() -> None:
    backbone = make_backbone()
    features = backbone.encode_node_texts(["ab", "abc"])
    table = backbone.token_embeddings.weight.detach()
    ids = backbone.tokenizer(["ab", "abc"], add_special_tokens=False)["input_ids"]
    assert features.shape == (2, HIDDEN)
    assert not features.requires_grad
    torch.testing.assert_close(features[0], table[ids[0]].mean(0))
    torch.testing.assert_close(features[1], table[ids[1]].mean(0))


# ---------------------------------------------------------------------------------------------------- stage 1


def test_stage1_step_changes_lora_and_not_base_weights() -> None:
    backbone = make_backbone()
    backbone.train()
    assert backbone.config.gradient_checkpointing
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    optimizer = torch.optim.AdamW(backbone.backbone_parameters(), lr=1e-2)
    out = backbone(
        street_images(3),
        ["Describe the place.", "Where is this?", "What is on the left?"],
        ["A red cafe on Alpha Street.", "Bank Two in Central Park.", "Trees along First Avenue."],
    )
    loss = symmetric_info_nce(out.query, out.positive)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in backbone.named_parameters() if not torch.equal(p.detach(), before[n])}
    lora_b = {n for n in before if "lora_B" in n}
    assert lora_b <= changed  # B starts at zero and gets the first gradient
    assert all("lora_" in n for n in changed)  # base weights (LLM, ViT, embeddings) untouched
    assert all(p.grad is None for n, p in backbone.named_parameters() if "lora_" not in n)


def test_frozen_vision_tower_stays_outside_autograd() -> None:
    # transformers and peft hook the vision patch embedding so its output requires grad; the backbone removes
    # those hooks (non-reentrant checkpointing does not need them), also after checkpointing is switched again
    backbone = make_backbone()
    backbone.set_gradient_checkpointing(False)
    backbone.set_gradient_checkpointing(True)
    backbone.train()
    inputs = backbone.prepare(["x"], street_images(1))
    features = backbone._core.get_image_features(
        inputs.image_inputs["pixel_values"], inputs.image_inputs["image_grid_thw"]
    ).pooler_output[0]
    assert not features.requires_grad
    assert backbone._core.language_model.layers[0].gradient_checkpointing


# ---------------------------------------------------------------------------------------------------- stage 2


def test_graph_tokens_land_at_graph_positions() -> None:
    backbone = make_backbone()
    backbone.attach_graph_encoder(GRAPH_CONFIG)
    backbone.eval()
    captured: dict[str, torch.Tensor] = {}

    def grab(_module, _args, kwargs):
        captured["inputs_embeds"] = kwargs["inputs_embeds"].detach().clone()

    hook = backbone._core.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    images = street_images(3)
    graphs = Batch.from_data_list([subgraph(backbone, n, seed) for seed, n in enumerate((3, 5, 2))])
    instructions = ["Describe the place.", "Where is this?", "What is nearby?"]
    try:
        with torch.no_grad():
            fused = backbone.embed_query(images, instructions, graphs)
            expected = backbone.graph_token_vectors(graphs)
    finally:
        hook.remove()
    embeds = captured["inputs_embeds"]
    inputs = backbone.prepare(instructions, images, [1, 1, 1])
    assert embeds.shape[:2] == inputs.input_ids.shape
    # row i's <graph> token carries graph i's vector, right after the user prefix
    graph_positions = inputs.graph_token_mask.nonzero().tolist()
    prefix_len = int((inputs.input_ids[0] == backbone.graph_token_id).nonzero()[0])
    assert graph_positions == [[0, prefix_len], [1, prefix_len], [2, prefix_len]]
    torch.testing.assert_close(embeds[inputs.graph_token_mask], expected)
    # text tokens keep their embeddings; image placeholders hold the vision features
    table = backbone.token_embeddings.weight.detach()
    text_rows = inputs.attention_mask.bool() & ~inputs.graph_token_mask & ~inputs.image_token_mask
    torch.testing.assert_close(embeds[text_rows], table[inputs.input_ids[text_rows]])
    with torch.no_grad():
        vision = backbone._core.get_image_features(
            inputs.image_inputs["pixel_values"], inputs.image_inputs["image_grid_thw"]
        ).pooler_output
    torch.testing.assert_close(embeds[inputs.image_token_mask], torch.cat(vision))
    # the graph tokens are scaled to the token-embedding RMS
    assert isinstance(backbone.graph_fusion, GraphTokenProjector)
    token_rms = float(table.pow(2).mean().sqrt())
    assert expected.pow(2).mean(-1).sqrt().tolist() == pytest.approx([token_rms] * 3, rel=1e-3)
    # the output depends on the graph: same queries, graphs handed round, differ; no graph differs too
    with torch.no_grad():
        rotated = Batch.from_data_list([subgraph(backbone, n, seed) for seed, n in [(1, 5), (2, 2), (0, 3)]])
        swapped = backbone.embed_query(images, instructions, rotated)
        unfused = backbone.embed_query(images, instructions)
        again = backbone.embed_query(images, instructions, graphs)
    torch.testing.assert_close(again, fused)
    assert (1 - (swapped * fused).sum(-1)).min() > 1e-6
    assert (1 - (unfused * fused).sum(-1)).min() > 1e-6


def test_stage2_step_trains_graph_encoder_and_lora() -> None:
    backbone = make_backbone()
    backbone.attach_graph_encoder(GRAPH_CONFIG)
    backbone.train()
    graph_before = {n: p.detach().clone() for n, p in backbone.named_parameters() if n.startswith("graph_")}
    optimizer = torch.optim.AdamW(
        [{"params": backbone.backbone_parameters(), "lr": 1e-3}, {"params": backbone.graph_parameters(), "lr": 1e-2}]
    )
    graphs = Batch.from_data_list([subgraph(backbone, n, seed) for seed, n in enumerate((4, 3, 6))])
    out = backbone(
        street_images(3),
        ["Describe the place.", "Where is this?", "What is nearby?"],
        ["Cafe Uno is 40 m ahead.", "Bank Two lies north.", "Central Park is on the left."],
        graph=graphs,
    )
    loss = symmetric_info_nce(out.query, out.positive)
    loss.backward()
    graph_params = dict(backbone.named_parameters())
    assert set(graph_before) == {n for n, _ in backbone.named_parameters() if n.startswith(backbone.GRAPH_PREFIXES)}
    assert all(graph_params[n].grad is not None and torch.isfinite(graph_params[n].grad).all() for n in graph_before)
    for name in ("graph_encoder.out_proj.2.weight", "graph_encoder.text_proj.weight", "graph_fusion.gain"):
        assert graph_params[name].grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in backbone.lora_parameters())
    optimizer.step()
    assert not torch.equal(graph_params["graph_fusion.gain"].detach(), graph_before["graph_fusion.gain"])
    assert not torch.equal(
        graph_params["graph_encoder.out_proj.2.weight"].detach(), graph_before["graph_encoder.out_proj.2.weight"]
    )


def test_several_graph_vectors_per_query_in_row_major_order() -> None:
    backbone = make_backbone()
    vectors = [torch.randn(3, HIDDEN), None, torch.randn(1, HIDDEN)]
    inputs = backbone.prepare(["a", "b", "c"], street_images(3), [3, 0, 1])
    embeds = backbone.input_embeddings(inputs, vectors)
    torch.testing.assert_close(embeds[0][inputs.graph_token_mask[0]], vectors[0])
    torch.testing.assert_close(embeds[2][inputs.graph_token_mask[2]], vectors[2])
    assert not inputs.graph_token_mask[1].any()
    with pytest.raises(HFVLMError, match="do not match the <graph> tokens"):
        backbone.input_embeddings(inputs, [torch.randn(2, HIDDEN), None, torch.randn(1, HIDDEN)])


# ---------------------------------------------------------------------------------------------------- adapter


# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model (the backbone silences
# exactly this warning around its own peft calls; here plain peft is called directly)
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_adapter_saves_and_reloads_to_identical_embeddings(tmp_path: Path) -> None:
    from peft import PeftModel

    backbone = make_backbone()
    with torch.no_grad():  # a trained-looking adapter: B != 0, so the adapter changes the embeddings
        for p in backbone.lora_parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    backbone.eval()
    images, instructions, texts = street_images(2), ["Where?", "What is left?"], ["Alpha Street", "Cafe Uno"]
    with torch.no_grad():
        query, text = backbone.embed_query(images, instructions), backbone.embed_text(texts)
    figures = backbone.save_adapter(tmp_path / "adapter")
    assert figures["lora_parameters"] == backbone.parameter_counts()["lora"]
    saved = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "hf_vlm_config.json"} <= saved
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (16, 32)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "adapter").stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700

    fresh = make_backbone()
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.embed_text(texts), text)
    fresh.load_adapter(tmp_path / "adapter", trainable=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh.embed_query(images, instructions), query)
        torch.testing.assert_close(fresh.embed_text(texts), text)
    assert not any(p.requires_grad for p in fresh.parameters())

    # plain peft loads it onto a fresh base model, with the same LoRA weights
    base = tiny_vlm(0).model
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    got = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert got.keys() == lora_state(backbone).keys()
    for name, value in lora_state(backbone).items():
        torch.testing.assert_close(got[name], value)

    # saving again over an existing adapter swaps it in whole
    backbone.save_adapter(tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == saved


def test_missing_graph_token_is_added_to_the_tokenizer() -> None:
    model, tokenizer, processor = tiny_vlm(0)
    size = len(tokenizer)
    backbone = HfVlmBackbone(HFVLMConfig(dtype="float32", graph_token="<|graph_pad|>"), model, tokenizer, processor)
    assert len(tokenizer) == size + 1
    assert backbone.graph_token_id == tokenizer.convert_tokens_to_ids("<|graph_pad|>") == size
    assert tokenizer("a<|graph_pad|>b", add_special_tokens=False)["input_ids"][1] == size  # one special token
    inputs = backbone.prepare(["x"], None, [2])
    assert inputs.graph_token_mask.sum().item() == 2


def test_seven_billion_sizes_are_refused_on_cpu() -> None:
    with pytest.raises(HFVLMError, match=r"refusing to build a 8\.2 B-parameter random model on the CPU"):
        tiny_vlm(0, sizes=REAL_SIZES["qwen2_5_vl"])


def test_loads_a_saved_model_directory_offline(tmp_path: Path) -> None:
    model, tokenizer, processor = tiny_vlm(0)
    for part in (model, tokenizer, processor):
        part.save_pretrained(tmp_path)
    config = {"dtype": "float32", "local_files_only": True, "image_min_pixels": 16 * 16, "image_max_pixels": 32 * 32}
    loaded = build_backbone("hf_vlm", {"model_name_or_path": str(tmp_path), **config})
    built = make_backbone()
    loaded.eval()
    built.eval()
    images = street_images(1, size=(40, 40))  # over the pixel budget: resized to 32 x 32 by both
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_query(images, ["Where?"]), built.embed_query(images, ["Where?"]))
