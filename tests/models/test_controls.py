"""The "does the VLM earn its cost" controls: ``vlm2attn`` (one attention layer in the VLM's place), ``vlm2trsf`` (one
transformer block) and ``no_vlm`` (no format transformer, no VLM). They build with every preset and adapter choice,
contain exactly what they claim, keep the VLM's output contract, train, count their parameters and round-trip
through the checkpoint weights."""

from __future__ import annotations

import logging

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from tests.models.conftest import T_OUT, batch, build_model, model_config, options
from vlm4st.adapters.none import NoAdapter
from vlm4st.backbones.text_encoder import AlbefTextEncoder
from vlm4st.config import ConfigError, instantiate
from vlm4st.models import VLM4ST, DualPathFormatTransformer, VLMModule
from vlm4st.models.layers import MLP, Attention, Block
from vlm4st.models.loss import ForecastLoss
from vlm4st.models.prompt_token import PromptToken
from vlm4st.models.vlm_backbone import VLMBackbone
from vlm4st.models.vlm_controls import AttentionControl, PatchTokens, TransformerControl
from vlm4st.training.weights import load_model_state, model_state

CONTROLS = ("vlm2attn", "vlm2trsf", "no_vlm")
CONTROL_CLASS = {"vlm2attn": AttentionControl, "vlm2trsf": TransformerControl, "no_vlm": type(None)}
LORA_TYPES = options("lora_type")
#: Presets other than tiny/cpu: each composed and built once per control (their VLM is what made them slow).
OTHER_PRESETS = ("cpu_nodix", "small", "small_minilm", "reference", "vlm4st")
#: ``no_vlm`` without PromptForge: the head reads no context at all.
NO_PROMPT = ["model.prompt_forge=null", "model.dix.summaries=false", "model.prompt_token=null"]


def count(model: torch.nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def assert_no_backbone(model: VLM4ST) -> None:
    """No ViT, no BERT and no VLM module anywhere in the model."""
    for cls in (VisionTransformer, AlbefTextEncoder, VLMModule):
        assert count(model, cls) == 0, cls.__name__


def assert_control(model: VLM4ST, control: str) -> None:
    """The VLM's place holds what ``control`` claims, and the adapter adapts nothing."""
    assert type(model.vlm) is CONTROL_CLASS[control]
    assert_no_backbone(model)
    if control == "no_vlm":
        assert model.vlm is None and model.format_transformer is None
        assert count(model, VLMBackbone) == count(model, DualPathFormatTransformer) == count(model, PatchTokens) == 0
        assert not any(n.startswith(("vlm.", "format_transformer.")) for n, _ in model.named_parameters())
        assert model.head.visual_proj is None and model.head.visual_dim is None
        return
    assert isinstance(model.vlm.adapter, NoAdapter)
    assert not list(model.vlm.adapter.adapter_parameters(model.vlm))
    assert count(model.vlm, Block) == count(model.vlm, Attention) == 1
    assert count(model.vlm, MLP) == (1 if control == "vlm2trsf" else 0)
    assert count(model.vlm, PatchTokens) == 1


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
@pytest.mark.parametrize("control", CONTROLS)
def test_control_builds_with_every_lora_type(control: str, preset: str) -> None:
    for lora_type in LORA_TYPES:
        cfg = model_config(preset, control, lora_type)
        assert cfg.ablation.name == control
        assert_control(instantiate(cfg.model, path="model"), control)


@pytest.mark.parametrize("control", CONTROLS)
def test_control_builds_with_every_other_preset(control: str) -> None:
    """Each preset once, the adapter choice rotating so every lora_type meets a large preset too."""
    for i, preset in enumerate(OTHER_PRESETS):
        model = build_model(preset, control, LORA_TYPES[i % len(LORA_TYPES)])
        assert_control(model, control)
        width = model_config(preset).model.dims.vlm_width
        assert model.head.context_dim == width
        if model.vlm is not None:
            assert model.vlm.hidden_size == width


@pytest.mark.parametrize("control", ["vlm2attn", "vlm2trsf"])
def test_control_says_once_that_the_adapter_adapts_nothing(control: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vlm4st.models.vlm_controls"):
        model = build_model("tiny", control, "moe")
    said = [r for r in caplog.records if "lora_type=moe adapts nothing" in r.getMessage()]
    assert len(said) == 1
    assert model.describe_adapter()["type"] == "none"


def test_control_keeps_the_vlm_output_contract() -> None:
    """Same shapes as the VLM's outputs; the sequence outputs attended to the image and vice versa."""
    full, control = build_model("tiny").eval(), build_model("tiny", "vlm2attn").eval()
    x, ts, task, target_ts = batch(2, 6, 8)
    with torch.no_grad():
        a = full(x, ts, task, return_intermediate=True, target_timestamps=target_ts)[1]
        b = control(x, ts, task, return_intermediate=True, target_timestamps=target_ts)[1]
    for key in ("fused", "visual", "text"):
        assert getattr(b.vlm_output, key).shape == getattr(a.vlm_output, key).shape, key
    vlm = control.vlm
    image, sequence = b.image, b.sequence
    with torch.no_grad():
        base = vlm(image, sequence, task_id=task)
        other_image = vlm(image + torch.randn_like(image), sequence, task_id=task)
        other_sequence = vlm(image, sequence + torch.randn_like(sequence), task_id=task)
    assert (other_image.fused - base.fused).abs().max() > 1e-4
    assert (other_sequence.visual - base.visual).abs().max() > 1e-4
    assert vlm.num_output_tokens(sequence.shape[1]) == base.fused.shape[1]


@pytest.mark.parametrize("cls", [AttentionControl, TransformerControl])
def test_control_with_one_input_follows_the_vlm_conventions(cls: type) -> None:
    """Image only: fused = visual; sequence only: no visual, heads from the BERT sizes."""
    vision = {"img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0}
    text = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 48, "fusion_layer": 1}
    task = torch.zeros(2, dtype=torch.long)
    image_only = cls(vision, None, None, 0.0, None, False)
    out = image_only(torch.randn(2, 3, 16, 16), None, task_id=task)
    assert out.fused is out.visual and out.fused.shape == (2, 5, 32) and out.text is None
    assert image_only.num_output_tokens(7) == 5 and not image_only.takes_sequence
    sequence_only = cls(None, text, None, 0.0, None, False)
    out = sequence_only(None, torch.randn(2, 7, 32), task_id=task)
    assert out.visual is None and out.fused.shape == out.text.shape == (2, 7, 32)
    assert sequence_only.num_heads == 2 and sequence_only.image_size is None and not sequence_only.takes_image
    if cls is TransformerControl:
        assert sequence_only.layer.mlp.fc1.out_features == 48  # the BERT's FFN width without a ViT
        assert image_only.layer.mlp.fc1.out_features == 64  # the ViT's mlp_ratio
    with pytest.raises(ValueError, match="image must be given exactly"):
        sequence_only(torch.randn(2, 3, 16, 16), torch.randn(2, 7, 32), task_id=task)
    with pytest.raises(ConfigError, match=r"model\.vlm\.vision\.embed_dim"):
        cls({**vision, "embed_dim": 64, "num_heads": 4}, text, None, 0.0, None, False)


def two_steps(model: VLM4ST) -> list[float]:
    """Two AdamW steps (no weight decay: only gradients move a parameter) on a fixed batch; the losses."""
    x, ts, task, target_ts = batch(2, 6, 8)
    y = torch.rand(2, T_OUT, 6, 8) * 2 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(2):
        loss, _ = ForecastLoss(1.0, 0.5)(model(x, ts, task, target_timestamps=target_ts), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("control", CONTROLS)
def test_control_trains_two_steps(control: str) -> None:
    model = build_model("tiny", control, "standard", extra=["model.dims.dropout=0.0"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = two_steps(model)
    assert all(torch.isfinite(torch.tensor(losses)))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "head.out.weight" in moved
    place = "prompt_token." if control == "no_vlm" else "vlm."
    ours = {n for n in before if n.startswith(place)}
    assert ours and ours <= moved, sorted(ours - moved)  # every parameter of the control (or prompt token) learns


def test_no_vlm_without_prompt_forge_reads_no_context() -> None:
    model = build_model("tiny", "no_vlm", "standard", extra=[*NO_PROMPT, "model.dims.dropout=0.0"])
    assert model.prompt_forge is None and model.prompt_token is None
    head = model.head
    assert head.context_dim is None and head.read is None and head.horizon is None
    assert count(model, PromptToken) == count(model.head, Attention) == 0
    x, ts, task, target_ts = batch(2, 6, 8)
    pred, out = model(x, ts, task, return_intermediate=True, target_timestamps=target_ts)
    assert pred.shape == (2, T_OUT, 6, 8, 1)
    assert out.vlm_output is None and out.prompt is None
    pred.square().mean().backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unreached, unreached[:5]
    assert all(torch.isfinite(torch.tensor(two_steps(model))))


def test_no_vlm_with_prompt_forge_reads_the_prompt_token_only() -> None:
    model = build_model("tiny", "no_vlm")
    assert isinstance(model.prompt_token, PromptToken) and model.head.read is not None
    assert model.prompt_token.in_dim == model.prompt_forge.out_dim
    assert model.prompt_token.out_dim == model.head.context_dim
    captured = {}
    model.head.register_forward_pre_hook(lambda _m, args: captured.update(context=args[2]))
    x, ts, task, target_ts = batch(2, 6, 8)
    model(x, ts, task, target_timestamps=target_ts)
    assert captured["context"].shape == (2, 1, model.head.context_dim)


@pytest.mark.parametrize(
    ("ablation", "extra", "key"),
    [
        ("no_vlm", ["model.head.visual_dim=64"], "model.head.visual_dim"),
        ("no_vlm", ["model.head.context_dim=32"], "model.head.context_dim"),
        ("no_vlm", ["model.prompt_forge=null", "model.dix.summaries=false"], "model.prompt_token"),
        ("no_vlm", ["model.prompt_token=null"], "model.prompt_token"),
        ("full", ["model.vlm=null"], "model.vlm"),
        ("vlm2attn", ["model.format_transformer.image=null"], "model.format_transformer.image"),
        ("vlm2trsf", ["model.vlm.vision.num_heads=3"], "model.vlm.vision.num_heads"),
    ],
)  # fmt: skip
def test_control_wiring_errors_name_the_key(ablation: str, extra: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_model("tiny", ablation, extra=extra)


@pytest.mark.parametrize("control", CONTROLS)
def test_parameter_counts_and_freezing(control: str) -> None:
    model = build_model("cpu", control, "standard")
    counts = model.get_trainable_parameters()
    assert counts.total == sum(c.total for c in counts.modules.values())
    assert counts.adapter.total == counts.adapter.trainable == 0
    if control == "no_vlm":
        assert "vlm" not in counts.modules and "format_transformer" not in counts.modules
        assert counts.vlm is None and counts.vlm_backbone.total == 0 and counts.frozen_encoders == {}
        assert model.describe_adapter() == {"type": "none", "vlm": None}
        model.freeze_vlm_backbone()  # nothing to freeze: every parameter still trains
        assert model.get_trainable_parameters().trainable == counts.total
        return
    layer = sum(p.numel() for p in model.vlm.parameters())
    assert counts.modules["vlm"].total == counts.vlm_backbone.total == layer > 0
    assert counts.vlm == CONTROL_CLASS[control].__name__
    report = counts.frozen_encoders["control"]
    assert not report.frozen and not report.pretrained and report.trainable_backbone == layer
    model.freeze_vlm_backbone()
    after = model.get_trainable_parameters()
    assert after.trainable == counts.total - layer and after.frozen_encoders["control"].frozen


@pytest.mark.parametrize("control", CONTROLS)
def test_checkpoint_weights_round_trip(control: str) -> None:
    model = build_model("tiny", control, "moe", seed=1)
    fresh = build_model("tiny", control, "moe", seed=2)
    load_model_state(fresh, model_state(model), "memory")
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    x, ts, task, target_ts = batch(1, 6, 8)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, ts, task, target_timestamps=target_ts),
                                   model(x, ts, task, target_timestamps=target_ts))


def test_control_grad_checkpointing_gives_the_same_gradients() -> None:
    model = build_model("tiny", "vlm2trsf", extra=["model.dims.dropout=0.0"])
    x, ts, task, target_ts = batch(2, 6, 8)
    for layer in (model.head.film, model.head.read.attn.proj):  # zero-initialised: let gradients reach the VLM
        torch.nn.init.normal_(layer.weight, std=0.1)
    model(x, ts, task, target_timestamps=target_ts).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.vlm.named_parameters()}
    assert any(g.abs().max() > 0 for g in grads.values())
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x, ts, task, target_timestamps=target_ts).square().mean().backward()
    for n, p in model.vlm.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)
