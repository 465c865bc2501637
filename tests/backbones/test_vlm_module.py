"""VLMModule: the three modes, gradient flow, freezing (``model.vlm.freeze``), routing, checkpointing, config
errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from tests.adapters.tiny import adapter_from_config
from vlm4st import CONF_DIR
from vlm4st.adapters.base import Adapter
from vlm4st.adapters.lora import StandardLora
from vlm4st.adapters.none import NoAdapter
from vlm4st.config import ConfigError, instantiate
from vlm4st.models.forecaster import EncoderStatus
from vlm4st.models.vlm_module import VLMModule

from . import albef_layout
from .albef_layout import albef_pretrain_state_dict, encoder_keys_only, hf_bert_text_state_dict

VISION = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
TEXT = {"hidden_size": 32, "num_layers": 4, "num_heads": 2, "intermediate_size": 64, "fusion_layer": 2,
        "hidden_dropout": 0.0, "attention_dropout": 0.0}
B, L = 2, 7
TASKS = torch.zeros(B, dtype=torch.long)  # task 0 for every sample


class ScaleAdapter(Adapter):
    """A test adapter: one own parameter, records the routed task ids."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.routed: list[torch.Tensor] = []

    def route(self, task_id: torch.Tensor) -> None:
        self.routed.append(task_id)


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 5:] = 0
    return torch.randn(B, 3, 32, 32), torch.randn(B, L, 32), mask


def test_both_encoders() -> None:
    vlm = VLMModule(VISION, TEXT, freeze="auto")
    image, seq, mask = inputs()
    out = vlm(image, seq, mask, task_id=TASKS)
    assert out.visual.shape == (B, 5, 32)
    assert out.text.shape == (B, L, 32)
    assert out.fused.shape == (B, L, 32) and vlm.num_output_tokens(L) == L
    assert vlm.hidden_size == 32 and vlm.image_size == 32
    assert len(vlm.text_encoder.encoder.layer) == 4
    # fused = fusion layers applied to the text layers' output (not to the raw sequence)
    with torch.no_grad():
        again = vlm.text_encoder(encoder_embeds=out.text, attention_mask=mask,
                                 encoder_hidden_states=out.visual, mode="fusion")
    torch.testing.assert_close(out.fused, again)


def test_vision_only_builds_no_bert() -> None:
    vlm = VLMModule(VISION, None, freeze="auto")
    image, _, _ = inputs()
    out = vlm(image, None, task_id=TASKS)
    assert vlm.text_encoder is None and out.text is None
    assert out.fused.shape == (B, 5, 32) and vlm.num_output_tokens(L) == 5
    assert not any(k.startswith("text_encoder") for k in vlm.state_dict())
    with pytest.raises(ValueError, match="no text encoder"):
        vlm(image, torch.randn(B, L, 32), task_id=TASKS)


def test_text_only_builds_no_vit_and_keeps_the_depth() -> None:
    vlm = VLMModule(None, TEXT, freeze="auto")
    _, seq, mask = inputs()
    out = vlm(None, seq, mask, task_id=TASKS)
    assert vlm.visual_encoder is None and out.visual is None and vlm.image_size is None
    assert len(vlm.text_encoder.encoder.layer) == TEXT["num_layers"]  # the fusion positions, as plain layers
    assert not any("crossattention" in k or k.startswith("visual") for k in vlm.state_dict())
    assert out.text.shape == out.fused.shape == (B, L, 32)
    with torch.no_grad():  # fused = the fusion-position layers on the text layers' output, without image tokens
        again = vlm.text_encoder(encoder_embeds=out.text, attention_mask=mask, mode="fusion")
    torch.testing.assert_close(out.fused, again)
    assert not torch.allclose(out.fused, out.text)
    with pytest.raises(ValueError, match="no vision encoder"):
        vlm(torch.randn(B, 3, 32, 32), seq, task_id=TASKS)


def test_text_only_runs_as_many_layers_as_both() -> None:
    def layers_run(vlm: VLMModule, image: torch.Tensor | None) -> int:
        calls: list[int] = []
        for layer in vlm.text_encoder.encoder.layer:
            layer.register_forward_hook(lambda *_: calls.append(1))
        vlm(image, inputs()[1], task_id=TASKS)
        return len(calls)

    image = inputs()[0]
    assert layers_run(VLMModule(None, TEXT, freeze="auto"), None) == layers_run(
        VLMModule(VISION, TEXT, freeze="auto"), image) == TEXT["num_layers"]


def test_gradients_reach_every_weight_with_full_finetuning() -> None:
    vlm = VLMModule(VISION, TEXT, freeze="auto", adapter=NoAdapter(freeze_backbone=False))
    image, seq, mask = inputs()
    seq.requires_grad_(True)
    vlm(image, seq, mask, task_id=TASKS).fused.square().mean().backward()
    no_grad = [n for n, p in vlm.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    assert seq.grad is not None and seq.grad.abs().sum() > 0


def test_freeze_backbone_keeps_adapter_and_input_gradients() -> None:
    frozen = VLMModule(VISION, TEXT, freeze="true", adapter=NoAdapter(freeze_backbone=True))
    assert not any(p.requires_grad for p in frozen.parameters())
    adapter = ScaleAdapter()
    vlm = VLMModule(VISION, TEXT, freeze="auto", adapter=adapter)  # random weights: nothing frozen
    assert all(p.requires_grad for p in vlm.parameters())
    vlm.freeze_backbone()  # the explicit call freezes both encoders, random or not
    trainable = [n for n, p in vlm.named_parameters() if p.requires_grad]
    assert trainable == ["adapter.scale"]
    assert all(r.frozen and r.trainable_backbone == 0 and "freeze_backbone()" in r.reason
               for r in vlm.frozen_encoders.values())
    image, seq, mask = inputs()
    seq.requires_grad_(True)
    vlm(image, seq, mask, task_id=TASKS).fused.sum().backward()
    assert seq.grad is not None and seq.grad.abs().sum() > 0  # upstream modules still train
    task = torch.tensor([0, 3])
    vlm(image, seq, mask, task_id=task)
    assert adapter.routed[-1] is task


def test_grad_checkpointing_same_gradients() -> None:
    vlm = VLMModule(VISION, TEXT, freeze="auto").train()
    image, seq, mask = inputs()

    def grads(flag: bool) -> list[torch.Tensor]:
        vlm.zero_grad()
        vlm.set_grad_checkpointing(flag)
        vlm(image, seq, mask, task_id=TASKS).fused.square().mean().backward()
        return [p.grad.clone() for p in vlm.parameters()]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"must equal text\.hidden_size"):
        VLMModule({**VISION, "embed_dim": 64}, TEXT, freeze="auto")
    with pytest.raises(ConfigError, match="at least one encoder"):
        VLMModule(None, None, freeze="auto")
    with pytest.raises(ConfigError, match="fusion_layer"):
        VLMModule(VISION, {**TEXT, "fusion_layer": 4}, freeze="auto")
    vlm = VLMModule(VISION, TEXT, freeze="auto")
    with pytest.raises(ValueError, match=r"image \(B, 3, 32, 32\)"):
        vlm(torch.randn(B, 3, 64, 64), torch.randn(B, L, 32), task_id=TASKS)


def test_random_init_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        VLMModule(VISION, TEXT, freeze="auto", pretrained_path=None)
    assert "random initialisation" in caplog.text


def test_albef_config_defaults_to_auto() -> None:
    assert OmegaConf.load(CONF_DIR / "model" / "vlm" / "albef.yaml").freeze == "auto"


def test_lora_type_none_config_instantiates() -> None:
    cfg = OmegaConf.load(CONF_DIR / "lora_type" / "none.yaml")
    adapter = instantiate(cfg, path="lora_type")
    assert isinstance(adapter, NoAdapter) and adapter.asks_frozen_backbone is False
    vlm = VLMModule(OmegaConf.create(VISION), OmegaConf.create(TEXT), freeze="auto", adapter=adapter)
    assert all(p.requires_grad for p in vlm.parameters())
    assert adapter.describe() == {"type": "none", "freeze_backbone": False}


def _names(it: Iterator[tuple[str, nn.Parameter]]) -> list[str]:
    return [n for n, _ in it]


def test_adapter_parameters_listed() -> None:
    vlm = VLMModule(VISION, TEXT, freeze="auto", adapter=ScaleAdapter())
    assert _names(vlm.adapter.adapter_parameters(vlm)) == ["adapter.scale"]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bf16_autocast_runs_with_masks(attn: str) -> None:
    vlm = VLMModule(VISION, {**TEXT, "attn_implementation": attn}, freeze="auto").eval()
    image, seq, mask = inputs()
    with torch.no_grad():
        ref = vlm(image, seq, mask, task_id=TASKS).fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = vlm(image, seq, mask, task_id=TASKS).fused
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0.05)


# --- model.vlm.freeze on the ALBEF layout: which encoders received weights decides what auto freezes ---

ENC = {"vision": "visual_encoder", "text": "text_encoder"}


@pytest.fixture(scope="module")
def albef_sd() -> dict[str, torch.Tensor]:
    return albef_pretrain_state_dict()


def albef_vlm(tmp_path: Path, sd: dict[str, torch.Tensor] | None, freeze: str | bool, adapter: Adapter,
              **kw: object) -> VLMModule:
    path = None
    if sd is not None:
        path = str(tmp_path / "ALBEF.pth")
        torch.save({"model": sd}, path)
    return VLMModule(albef_layout.VISION, albef_layout.TEXT, freeze=freeze, adapter=adapter, pretrained_path=path,
                     **kw)


def lora() -> StandardLora:
    return adapter_from_config("standard", rank=2, alpha=4)


def backbone(vlm: VLMModule, name: str) -> dict[str, nn.Parameter]:
    """The encoder's weights that are not adapter parameters."""
    params = getattr(vlm, ENC[name]).named_parameters(prefix=ENC[name])
    return {n: p for n, p in params if not vlm.adapter.is_adapter_parameter(n)}


def assert_adapters_train(vlm: VLMModule) -> None:
    adapter = dict(vlm.adapter.adapter_parameters(vlm))
    assert all(p.requires_grad for p in adapter.values())
    if isinstance(vlm.adapter, StandardLora):  # attached to both encoders, frozen or not
        assert {n.split(".")[0] for n in adapter} == set(ENC.values())


@pytest.mark.parametrize("held", ["vision", "text", "both", "none"])
def test_auto_freezes_exactly_the_encoders_with_weights(
    tmp_path: Path, albef_sd: dict, held: str, caplog: pytest.LogCaptureFixture
) -> None:
    sd = {"both": albef_sd, "none": None}[held] if held in ("both", "none") else encoder_keys_only(albef_sd, held)
    with caplog.at_level(logging.INFO):
        vlm = albef_vlm(tmp_path, sd, "auto", lora())
    loaded = {name: held in (name, "both") for name in ENC}
    report = vlm.frozen_encoders
    assert {n: (r.frozen, r.pretrained) for n, r in report.items()} == {n: (w, w) for n, w in loaded.items()}
    for name, got_weights in loaded.items():
        params = backbone(vlm, name)
        assert params and all(p.requires_grad is not got_weights for p in params.values()), name
        assert (report[name].trainable_backbone == 0) is got_weights
        want = (f"{name} encoder: frozen (ALBEF weights from {tmp_path / 'ALBEF.pth'}, freeze=auto)" if got_weights
                else f"{name} encoder: trained in full (random initialisation, freeze=auto)")
        assert want in caplog.text and report[name].reason in want
    assert_adapters_train(vlm)
    assert "frozen random encoder" not in caplog.text


def test_true_freezes_random_encoders_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        vlm = albef_vlm(tmp_path, None, "true", lora())
    for name in ENC:
        assert not any(p.requires_grad for p in backbone(vlm, name).values())
        assert vlm.frozen_encoders[name] == EncoderStatus(frozen=True, pretrained=False, trainable_backbone=0,
                                                          reason="frozen (random initialisation, freeze=true)")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(m.split(" ")[0] for m in warnings if "frozen random encoder is being adapted" in m) == [
        "text", "vision"]
    assert_adapters_train(vlm)


def test_yaml_booleans_and_bad_values(tmp_path: Path, albef_sd: dict) -> None:
    vlm = albef_vlm(tmp_path, albef_sd, False, lora())  # YAML's unquoted false
    assert vlm.freeze == "false"
    assert all(p.requires_grad for p in vlm.parameters())  # false: nothing frozen, pretrained or not
    assert not any(r.frozen for r in vlm.frozen_encoders.values())
    assert VLMModule(VISION, TEXT, freeze=True).freeze == "true"
    for bad in ("yes", "Auto", None, 1):
        with pytest.raises(ConfigError, match=r"model\.vlm\.freeze: .*\['auto', 'true', 'false'\]"):
            VLMModule(VISION, TEXT, freeze=bad)


def test_lora_type_none_under_auto(tmp_path: Path, albef_sd: dict, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        full = albef_vlm(tmp_path, albef_sd, "auto", NoAdapter(freeze_backbone=False))
    assert all(p.requires_grad for p in full.parameters())  # full fine-tuning of the pretrained backbone
    assert "adapter 'none' asks for no frozen backbone" in full.frozen_encoders["vision"].reason
    frozen = albef_vlm(tmp_path, encoder_keys_only(albef_sd, "vision"), "auto", NoAdapter(freeze_backbone=True))
    assert not any(p.requires_grad for p in backbone(frozen, "vision").values())
    assert all(p.requires_grad for p in backbone(frozen, "text").values())  # random: trains
    on_true = albef_vlm(tmp_path, albef_sd, "true", NoAdapter(freeze_backbone=False))
    assert not any(p.requires_grad for p in on_true.parameters())


def test_hf_text_weights_leave_cross_attention_trainable_under_auto(
    tmp_path: Path, albef_sd: dict, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in hf_bert_text_state_dict(albef_sd).items()},
              str(folder / "model.safetensors"))
    n_cross = 10 * (albef_layout.LAYERS - albef_layout.FUSION)  # q, k, v, output dense + LayerNorm per layer
    with caplog.at_level(logging.INFO):
        vlm = albef_vlm(tmp_path, None, "auto", lora(), text_pretrained_path=str(folder))
    text = backbone(vlm, "text")
    trains = {n for n, p in text.items() if p.requires_grad}
    assert trains and all(".crossattention." in n for n in trains)
    assert len(trains) == n_cross
    assert all(p.requires_grad for p in backbone(vlm, "vision").values())  # random ViT trains in full
    report = vlm.frozen_encoders["text"]
    assert report.frozen and report.pretrained and report.trainable_backbone > 0
    assert f"its {n_cross} tensors without pretrained weights train in full" in report.reason
    assert_adapters_train(vlm)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        frozen = albef_vlm(tmp_path, None, "true", lora(), text_pretrained_path=str(folder))
    assert not any(p.requires_grad for p in backbone(frozen, "text").values())
    assert f"text encoder: {n_cross} tensors without pretrained weights" in caplog.text
