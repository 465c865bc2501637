"""Ablations compose through Hydra, build fewer parameters than `full`, run forward/backward, and leave nothing
built but unused (every trainable parameter is reached by the backward pass)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.models.conftest import T_IN, T_OUT, batch, build_model, model_config, options
from vlm4st.config import instantiate

ABLATIONS = options("ablation")
ABSENT = {  # intermediate outputs that each ablation must return as None
    "full": set(),
    "no_dix": {"x_temporal", "x_spatial", "x_cross", "gate_weights"},
    "no_prompt": {"prompt", "pattern_info"},
    "no_seq": {"sequence"},
    "no_visual": {"image"},
    "no_vlm": {"image", "sequence", "vlm_output"},
    "vlm2attn": set(),
    "vlm2trsf": set(),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_ablation_option_is_known() -> None:
    assert set(ABLATIONS) == set(ABSENT)


@pytest.mark.parametrize("lora_type", ["none", "standard"])
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablation_builds_less_and_trains(ablation: str, lora_type: str) -> None:
    model = build_model("tiny", ablation, lora_type)
    assert model_config("tiny", ablation, lora_type).ablation.name == ablation
    if ablation != "full":
        assert n_params(model) < n_params(build_model("tiny", "full", lora_type))
    x, ts, task, target_ts = batch(2, 10, 20)
    pred, out = model(x, ts, task, return_intermediate=True, target_timestamps=target_ts)
    assert pred.shape == (2, T_OUT, 10, 20, 1)
    assert {f.name for f in dataclasses.fields(out) if getattr(out, f.name) is None} == ABSENT[ablation]
    pred.square().mean().backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unreached, f"parameters built but never used: {unreached[:5]}"


def test_ablations_remove_their_modules() -> None:
    assert build_model("tiny", "no_dix").fusion is None
    no_prompt = build_model("tiny", "no_prompt")
    assert no_prompt.prompt_forge is None and no_prompt.format_transformer.prompt_proj is None
    no_seq = build_model("tiny", "no_seq")
    assert no_seq.vlm.text_encoder is None and no_seq.format_transformer.sequence is None
    no_visual = build_model("tiny", "no_visual")
    assert no_visual.vlm.visual_encoder is None and no_visual.format_transformer.image is None
    assert no_visual.head.visual_proj is None
    assert not no_visual.vlm.text_encoder.cross_attention


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_no_visual_runs_the_full_bert_depth(preset: str) -> None:
    """no_visual keeps every BERT layer (the fusion positions without cross-attention), like with like vs full."""

    def layers_run(ablation: str) -> int:
        model = instantiate(model_config(preset, ablation, "none").model, path="model")
        calls: list[int] = []
        for layer in model.vlm.text_encoder.encoder.layer:
            layer.register_forward_hook(lambda *_: calls.append(1))
        x, ts, task, target_ts = batch(1, 6, 8)
        with torch.no_grad():
            model(x, ts, task, target_timestamps=target_ts)
        return len(calls)

    depth = model_config(preset, "full", "none").model.vlm.text.num_layers
    assert layers_run("no_visual") == layers_run("full") == depth


@pytest.mark.parametrize("lora_type", options("lora_type"))
def test_every_lora_type_and_ablation_trains(lora_type: str) -> None:
    """Three optimiser steps with the backbone frozen: every adapter tensor (and the head) receives a gradient
    and moves, the frozen backbone does not, and the loss stays finite. Zero-initialised LoRA factors get their
    first gradient only once their partner has moved, hence more than one step."""
    x, ts, task, target_ts = batch(2, 6, 8)
    task[1] = 1
    target = torch.randn(2, T_OUT, 6, 8, 1)
    for ablation in ABLATIONS:
        cfg = model_config("tiny", ablation, lora_type)
        assert cfg.model.t_in == T_IN
        torch.manual_seed(0)
        model = instantiate(cfg.model, path="model")
        model.freeze_vlm_backbone()
        adapter = dict(model.vlm.adapter.adapter_parameters(model.vlm)) if model.vlm is not None else {}
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        start = {n: p.detach().clone() for n, p in adapter.items()}
        head_start = model.head.out.weight.detach().clone()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3):
            optimizer.zero_grad()
            pred = model(x, ts, task, target_timestamps=target_ts)
            assert pred.shape == (2, T_OUT, 6, 8, 1)
            loss = (pred - target).square().mean()
            assert torch.isfinite(loss), (ablation, lora_type)
            loss.backward()
            optimizer.step()
        if lora_type != "none" and ablation not in ("no_vlm", "vlm2attn", "vlm2trsf"):
            assert adapter, f"{lora_type} under {ablation} built no adapter parameters"
        no_grad = [n for n, p in adapter.items() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not no_grad, f"{lora_type} / {ablation}: adapter tensors without a gradient: {no_grad[:4]}"
        still = [n for n, p in adapter.items() if torch.equal(p.detach(), start[n])]
        assert not still, f"{lora_type} / {ablation}: adapter tensors that never moved: {still[:4]}"
        assert not torch.equal(model.head.out.weight.detach(), head_start)
        moved = [n for n, p in model.named_parameters() if n in frozen and not torch.equal(p.detach(), frozen[n])]
        assert not moved, f"frozen backbone tensors changed: {moved[:4]}"


def test_small_preset_instantiates_every_ablation() -> None:
    full = None
    for ablation in ABLATIONS:
        model = instantiate(model_config("small", ablation, "standard").model, path="model")
        if ablation == "full":
            full = n_params(model)
    assert full is not None and n_params(model) < full


@pytest.mark.parametrize(
    ("ablation", "override", "key"),
    [
        ("no_visual", "model.head.visual_dim=64", "model.head.visual_dim"),
        ("no_prompt", "model.format_transformer.prompt_dim=48", "model.format_transformer.prompt_dim"),
        ("full", "model.format_transformer.prompt_dim=36", "model.format_transformer.prompt_dim"),
        ("full", "model.head.context_dim=32", "model.head.context_dim"),
        ("no_seq", "model.vlm.text={hidden_size: 64, num_layers: 2, num_heads: 2, intermediate_size: 64, "
         "fusion_layer: 1}", "model.format_transformer.sequence"),
    ],
)  # fmt: skip
def test_inconsistent_wiring_names_the_key(ablation: str, override: str, key: str) -> None:
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        instantiate(model_config("tiny", ablation, "none", [override]).model, path="model")


def test_no_prompt_computes_no_dix_summary() -> None:
    """Nothing reads the summaries without PromptForge: no_prompt switches them off in the config."""
    assert model_config("tiny", "full").model.dix.summaries is True
    assert model_config("tiny", "no_prompt").model.dix.summaries is False
    dix = build_model("tiny", "no_prompt").dix
    assert dix.summary_names == () and dix.cross.cls_ts is None and dix.cross.cls_st is None
    x, ts = batch(2, 6, 8)[:2]
    feats = dix(x, ts)
    assert feats.summaries == {} and feats.x_cross.shape == (2, T_IN, 6, 8, dix.d_model)


def test_cpu_nodix_preset_is_the_cpu_preset_without_dix() -> None:
    """`model=cpu_nodix` composes the model of `model=cpu ablation=no_dix`, and its own `no_dix` changes nothing."""
    preset = model_config("cpu_nodix").model
    assert preset == model_config("cpu", "no_dix").model
    assert preset == model_config("cpu_nodix", "no_dix").model
    assert preset != model_config("cpu").model
    model = build_model("cpu_nodix")
    assert model.fusion is None and not hasattr(model.dix, "temporal")
    x, ts, task, target_ts = batch(2, 10, 20)
    assert model(x, ts, task, target_timestamps=target_ts).shape == (2, T_OUT, 10, 20, 1)
