"""VLMModule: the three modes, gradient flow, freezing, routing, checkpointing, config errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from vlm4st import CONF_DIR
from vlm4st.adapters.base import Adapter
from vlm4st.adapters.none import NoAdapter
from vlm4st.config import ConfigError, instantiate
from vlm4st.models.vlm_module import VLMModule

VISION = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
TEXT = {"hidden_size": 32, "num_layers": 4, "num_heads": 2, "intermediate_size": 64, "fusion_layer": 2,
        "hidden_dropout": 0.0, "attention_dropout": 0.0}
B, L = 2, 7


class ScaleAdapter(Adapter):
    """A test adapter: one own parameter, records the routed task ids."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.routed: list[torch.Tensor | None] = []

    def route(self, task_id: torch.Tensor | None) -> None:
        self.routed.append(task_id)


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 5:] = 0
    return torch.randn(B, 3, 32, 32), torch.randn(B, L, 32), mask


def test_both_encoders() -> None:
    vlm = VLMModule(VISION, TEXT)
    image, seq, mask = inputs()
    out = vlm(image, seq, mask)
    assert out["visual"].shape == (B, 5, 32)
    assert out["text"].shape == (B, L, 32)
    assert out["fused"].shape == (B, L, 32) and vlm.num_output_tokens(L) == L
    assert vlm.hidden_size == 32 and vlm.image_size == 32
    assert len(vlm.text_encoder.encoder.layer) == 4
    # fused = fusion layers applied to the text layers' output (not to the raw sequence)
    with torch.no_grad():
        again = vlm.text_encoder(encoder_embeds=out["text"], attention_mask=mask,
                                 encoder_hidden_states=out["visual"], mode="fusion")
    torch.testing.assert_close(out["fused"], again)


def test_vision_only_builds_no_bert() -> None:
    vlm = VLMModule(VISION, None)
    image, _, _ = inputs()
    out = vlm(image, None)
    assert vlm.text_encoder is None and out["text"] is None
    assert out["fused"].shape == (B, 5, 32) and vlm.num_output_tokens(L) == 5
    assert not any(k.startswith("text_encoder") for k in vlm.state_dict())
    with pytest.raises(ValueError, match="no text encoder"):
        vlm(image, torch.randn(B, L, 32))


def test_text_only_builds_no_vit_and_no_fusion_layers() -> None:
    vlm = VLMModule(None, TEXT)
    _, seq, mask = inputs()
    out = vlm(None, seq, mask)
    assert vlm.visual_encoder is None and out["visual"] is None and vlm.image_size is None
    assert len(vlm.text_encoder.encoder.layer) == 2
    assert not any("crossattention" in k or k.startswith("visual") for k in vlm.state_dict())
    assert out["fused"] is out["text"] and out["fused"].shape == (B, L, 32)
    with pytest.raises(ValueError, match="no vision encoder"):
        vlm(torch.randn(B, 3, 32, 32), seq)


def test_gradients_reach_every_weight_with_full_finetuning() -> None:
    vlm = VLMModule(VISION, TEXT, adapter=NoAdapter(freeze_backbone=False))
    image, seq, mask = inputs()
    seq.requires_grad_(True)
    vlm(image, seq, mask)["fused"].square().mean().backward()
    no_grad = [n for n, p in vlm.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    assert seq.grad is not None and seq.grad.abs().sum() > 0


def test_freeze_backbone_keeps_adapter_and_input_gradients() -> None:
    frozen = VLMModule(VISION, TEXT, adapter=NoAdapter(freeze_backbone=True))
    assert not any(p.requires_grad for p in frozen.parameters())
    adapter = ScaleAdapter()
    vlm = VLMModule(VISION, TEXT, adapter=adapter)  # Adapter default: freeze on attach
    trainable = [n for n, p in vlm.named_parameters() if p.requires_grad]
    assert trainable == ["adapter.scale"]
    image, seq, mask = inputs()
    seq.requires_grad_(True)
    vlm(image, seq, mask)["fused"].sum().backward()
    assert seq.grad is not None and seq.grad.abs().sum() > 0  # upstream modules still train
    task = torch.tensor([0, 3])
    vlm(image, seq, mask, task_id=task)
    assert adapter.routed[-1] is task


def test_grad_checkpointing_same_gradients() -> None:
    vlm = VLMModule(VISION, TEXT).train()
    image, seq, mask = inputs()

    def grads(flag: bool) -> list[torch.Tensor]:
        vlm.zero_grad()
        vlm.set_grad_checkpointing(flag)
        vlm(image, seq, mask)["fused"].square().mean().backward()
        return [p.grad.clone() for p in vlm.parameters()]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"must equal text\.hidden_size"):
        VLMModule({**VISION, "embed_dim": 64}, TEXT)
    with pytest.raises(ConfigError, match="at least one encoder"):
        VLMModule(None, None)
    with pytest.raises(ConfigError, match="fusion_layer"):
        VLMModule(VISION, {**TEXT, "fusion_layer": 4})
    vlm = VLMModule(VISION, TEXT)
    with pytest.raises(ValueError, match=r"image \(B, 3, 32, 32\)"):
        vlm(torch.randn(B, 3, 64, 64), torch.randn(B, L, 32))


def test_random_init_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        VLMModule(VISION, TEXT, pretrained_path=None)
    assert "random initialisation" in caplog.text


def test_lora_type_none_config_instantiates() -> None:
    cfg = OmegaConf.load(CONF_DIR / "lora_type" / "none.yaml")
    adapter = instantiate(cfg, path="lora_type")
    assert isinstance(adapter, NoAdapter) and adapter.freeze_backbone_on_attach is False
    vlm = VLMModule(OmegaConf.create(VISION), OmegaConf.create(TEXT), adapter=adapter)
    assert all(p.requires_grad for p in vlm.parameters())
    assert adapter.describe() == {"type": "none", "freeze_backbone": False}


def _names(it: Iterator[tuple[str, nn.Parameter]]) -> list[str]:
    return [n for n, _ in it]


def test_adapter_parameters_listed() -> None:
    vlm = VLMModule(VISION, TEXT, adapter=ScaleAdapter())
    assert _names(vlm.adapter.adapter_parameters(vlm)) == ["adapter.scale"]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bf16_autocast_runs_with_masks(attn: str) -> None:
    vlm = VLMModule(VISION, {**TEXT, "attn_implementation": attn}).eval()
    image, seq, mask = inputs()
    with torch.no_grad():
        ref = vlm(image, seq, mask)["fused"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = vlm(image, seq, mask)["fused"]
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0.05)
