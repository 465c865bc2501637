"""Standard LoRA through PEFT: exact zero-init, merge, q/k/v split, target resolution, ablated encoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlm4st.adapters import WIDE_TARGETS, AdapterError, SplitQKV, parameter_report
from vlm4st.config import ConfigError
from vlm4st.models.vlm_backbone import VLMOutput

from .tiny import (
    N_CROSS,
    N_TEXT_ONLY,
    N_VIT,
    ROUTED,
    TYPES,
    adapter_from_config,
    make_adapter,
    make_inputs,
    make_vlm,
    perturb_adapter,
)


def _outputs(vlm: nn.Module, task_id: torch.Tensor | None = None) -> VLMOutput:
    image, sequence = make_inputs()
    with torch.no_grad():
        return vlm.eval()(image, sequence, task_id=task_id)


@pytest.mark.parametrize(
    ("kind", "route"), [("standard", "input")] + [(k, r) for k in ROUTED for r in ("input", "task")]
)
def test_zero_initialised_adapter_reproduces_base_exactly(kind: str, route: str) -> None:
    task_id = torch.tensor([0, 1, 2, 0])
    base = _outputs(make_vlm(None), task_id)
    adapted = _outputs(make_vlm(make_adapter(kind, route=route)), task_id)
    for key in ("fused", "visual", "text"):
        assert torch.equal(getattr(adapted, key), getattr(base, key)), key


def test_split_qkv_equals_fused_projection_and_keeps_no_dead_weights() -> None:
    fused = nn.Linear(8, 24)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(SplitQKV(fused)(x), fused(x), atol=1e-6, rtol=0)  # same rows, separate matmuls

    base, vlm = make_vlm(None), make_vlm(adapter_from_config("standard", rank=4, alpha=8))
    keys = vlm.state_dict().keys()
    assert not any(k.endswith("attn.qkv.weight") or k.endswith("attn.qkv.bias") for k in keys)  # no fused duplicate
    assert sum(1 for k in keys if ".attn.qkv.q.base_layer.weight" in k) == 2
    backbone = sum(p.numel() for n, p in vlm.named_parameters() if not vlm.adapter.is_adapter_parameter(n))
    assert backbone == sum(p.numel() for p in base.parameters())


def test_merge_gives_the_same_outputs_and_unmerge_restores() -> None:
    vlm = make_vlm(adapter_from_config("standard", rank=4, alpha=8))
    perturb_adapter(vlm)
    before = _outputs(vlm).fused
    query = vlm.text_encoder.encoder.layer[0].attention.self.query
    weight = query.base_layer.weight.detach().clone()
    vlm.adapter.merge()
    assert query.merged and not torch.equal(query.base_layer.weight, weight)
    torch.testing.assert_close(_outputs(vlm).fused, before, atol=1e-5, rtol=1e-5)
    vlm.adapter.unmerge()
    assert not query.merged
    torch.testing.assert_close(query.base_layer.weight, weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(_outputs(vlm).fused, before, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("init", "low", "high"), [("reference", 0.008, 0.012), ("peft", 0.05, 1.0)])
def test_init_of_a_matrices(init: str, low: float, high: float) -> None:
    vlm = make_vlm(adapter_from_config("standard", rank=4, alpha=8, init=init))
    a = torch.cat([p.flatten() for n, p in vlm.adapter.adapter_parameters(vlm) if ".lora_A." in n])
    b = torch.cat([p.flatten() for n, p in vlm.adapter.adapter_parameters(vlm) if ".lora_B." in n])
    assert low < a.std().item() < high
    assert torch.count_nonzero(b) == 0


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize(("vision", "text", "expected"), [(True, False, N_VIT), (False, True, N_TEXT_ONLY)])
def test_single_encoder_ablations_skip_absent_targets(kind: str, vision: bool, text: bool, expected: int) -> None:
    vlm = make_vlm(make_adapter(kind), vision=vision, text=text)
    assert len(vlm.adapter.layers) == expected
    image, sequence = make_inputs()
    out = vlm(image if vision else None, sequence if text else None, task_id=torch.tensor([0, 1, 2, 0]))
    assert out.fused.shape[0] == 4


def test_pattern_that_matches_nothing_raises() -> None:
    with pytest.raises(ConfigError, match="matches no Linear"):
        make_vlm(adapter_from_config("standard", targets=r"nothing\.here"))
    vit_only = r"visual_encoder\.blocks\.\d+\.attn\.qkv\.(q|k|v)"
    assert len(make_vlm(adapter_from_config("standard", targets=vit_only)).adapter.layers) == N_VIT
    with pytest.raises(ConfigError, match=r"lora_type\.targets"):
        make_vlm(adapter_from_config("standard", targets=vit_only), vision=False)


def test_pattern_matching_a_non_linear_module_raises() -> None:
    with pytest.raises(ConfigError, match=r"not nn\.Linear"):
        make_vlm(adapter_from_config("standard", targets=r"text_encoder\.encoder\.layer\.\d+\.attention\.self"))


def test_wide_targets_adapt_attention_outputs_and_ffns() -> None:
    vlm = make_vlm(adapter_from_config("standard", rank=4, alpha=8, targets=WIDE_TARGETS))
    report = parameter_report(vlm)
    # ViT: q, k, v, proj, fc1, fc2 per block; BERT: self q/k/v + output, cross q/k/v + output, FFN in and out.
    assert report.adapted_linears == {"vit": 2 * 6, "bert_self": 4 * 4, "bert_cross": 2 * 4, "bert_ffn": 4 * 2}
    assert report.total == report.trainable > 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rank": 0}, "lora_type.rank"),
        ({"alpha": -1}, "lora_type.alpha"),
        ({"dropout": 1.5}, "lora_type.dropout"),
        ({"init": "xavier"}, "lora_type.init"),
        ({"targets": "("}, "lora_type.targets"),
        ({"targets": ""}, "lora_type.targets"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        adapter_from_config("standard", **kwargs)


def test_attach_twice_or_outside_the_vlm_raises() -> None:
    vlm = make_vlm(adapter_from_config("standard", rank=4, alpha=8))
    with pytest.raises(AdapterError, match="already attached"):
        vlm.adapter.attach(vlm)
    with pytest.raises(AdapterError, match="not a submodule"):
        adapter_from_config("standard").attach(make_vlm(None))
    assert N_CROSS == 6  # the tiny model's cross-attention q/k/v count used across these tests
