"""Adapter checkpoints: save -> fresh model -> load reproduces outputs; wrong type or keys fail clearly."""

from __future__ import annotations

import io

import pytest
import torch

from vlm4st.adapters import AdapterError, adapter_state_dict, load_adapter_state_dict

from .tiny import ROUTED, TYPES, make_adapter, make_inputs, make_vlm, perturb_adapter

TASK_ID = torch.tensor([0, 1, 2, 3])


def _fused(vlm: torch.nn.Module) -> torch.Tensor:
    image, sequence = make_inputs(batch=4)
    with torch.no_grad():
        return vlm.eval()(image, sequence, task_id=TASK_ID)["fused"]


def _roundtrip(obj: object) -> object:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _trained(kind: str) -> torch.nn.Module:
    vlm = make_vlm(make_adapter(kind))
    perturb_adapter(vlm)
    return vlm


@pytest.mark.parametrize("kind", TYPES)
def test_adapter_checkpoint_roundtrip_into_a_fresh_model(kind: str) -> None:
    vlm = _trained(kind)
    checkpoint = _roundtrip(adapter_state_dict(vlm))
    assert checkpoint["adapter"] == vlm.adapter.describe()
    state = checkpoint["state_dict"]
    assert not any(".default" in key for key in state)
    assert set(state) == {n.replace(".default", "") for n, _ in vlm.adapter.adapter_parameters(vlm)}

    fresh = make_vlm(make_adapter(kind))
    assert not torch.equal(_fused(fresh), _fused(vlm))
    result = load_adapter_state_dict(fresh, checkpoint)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(_fused(fresh), _fused(vlm))


@pytest.mark.parametrize("kind", TYPES)
def test_full_model_state_dict_roundtrip(kind: str) -> None:
    vlm = _trained(kind)
    fresh = make_vlm(make_adapter(kind), seed=5)
    fresh.load_state_dict(_roundtrip(vlm.state_dict()), strict=True)
    assert torch.equal(_fused(fresh), _fused(vlm))


@pytest.mark.parametrize(("saved", "target"), [("moe", "mtl"), ("standard", "task_adaptive"), ("mtl", "standard")])
def test_checkpoint_of_another_lora_type_fails(saved: str, target: str) -> None:
    checkpoint = adapter_state_dict(_trained(saved))
    with pytest.raises(AdapterError, match=f"lora_type='{saved}' adapter but the model was built with"):
        load_adapter_state_dict(make_vlm(make_adapter(target)), checkpoint)
    with pytest.raises(AdapterError, match=f"lora_type='{saved}'"):  # strict or not
        load_adapter_state_dict(make_vlm(make_adapter(target)), checkpoint, strict=False)


@pytest.mark.parametrize("kind", ROUTED)
def test_missing_or_unexpected_keys_fail_naming_them(kind: str) -> None:
    checkpoint = adapter_state_dict(_trained(kind))
    # mtl with route task has no gate: drop one of its per-task tables instead
    missing = next(k for k in checkpoint["state_dict"] if "lora_gate" in k or "lora_task_scale" in k)
    state = {k: v for k, v in checkpoint["state_dict"].items() if k != missing}
    with pytest.raises(AdapterError, match=rf"missing keys \[{missing}\]"):
        load_adapter_state_dict(make_vlm(make_adapter(kind)), {**checkpoint, "state_dict": state})

    stray = "text_encoder.encoder.layer.0.attention.self.query.lora_C"
    state = {**checkpoint["state_dict"], stray: torch.zeros(1)}
    with pytest.raises(AdapterError, match=rf"unexpected keys \[{stray}\]"):
        load_adapter_state_dict(make_vlm(make_adapter(kind)), {**checkpoint, "state_dict": state})

    fresh = make_vlm(make_adapter(kind))
    result = load_adapter_state_dict(fresh, {**checkpoint, "state_dict": state}, strict=False)
    assert result.unexpected_keys == [stray] and result.missing_keys == []


def test_differing_hyperparameters_or_a_bare_state_dict_fail() -> None:
    checkpoint = adapter_state_dict(_trained("moe"))
    with pytest.raises(AdapterError, match="rank: checkpoint 4 vs model 8"):
        load_adapter_state_dict(make_vlm(make_adapter("moe", rank=8)), checkpoint)
    with pytest.raises(AdapterError, match="route: checkpoint 'task' vs model 'input'"):
        load_adapter_state_dict(make_vlm(make_adapter("moe", route="input")), checkpoint)
    with pytest.raises(AdapterError, match="expected a dict with keys 'adapter'"):
        load_adapter_state_dict(make_vlm(make_adapter("moe")), checkpoint["state_dict"])


def test_shape_mismatch_fails_even_when_not_strict() -> None:
    checkpoint = adapter_state_dict(_trained("standard"))
    key = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][key] = torch.zeros(1, 1)
    with pytest.raises(AdapterError, match="shape"):
        load_adapter_state_dict(make_vlm(make_adapter("standard")), checkpoint, strict=False)
