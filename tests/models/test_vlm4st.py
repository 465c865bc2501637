"""VLM4ST wiring: presets at two grid sizes with T_out != T_in, intermediate outputs, grid-free parameters,
freezing, loss, gradient checkpointing, and a tiny model overfitting a few windows."""

from __future__ import annotations

import pytest
import torch

from tests.models.conftest import T_IN, T_OUT, batch, build_model, codes, future
from vlm4st.models import VLM4ST, VLM4STIntermediates
from vlm4st.models.loss import ForecastLoss

GRIDS = [(10, 20), (32, 32)]


@pytest.fixture(scope="module")
def tiny() -> VLM4ST:
    return build_model("tiny", lora_type="standard").eval()


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_preset_forward_backward_two_grids(preset: str) -> None:
    model = build_model(preset)
    for H, W in GRIDS:
        x, ts, task, target_ts = batch(2, H, W)
        pred = model(x, ts, task_id=task, target_timestamps=target_ts)
        assert pred.shape == (2, T_OUT, H, W, 1)
        assert torch.isfinite(pred).all()
    pred.square().mean().backward()
    assert model.head.out.weight.grad is not None and model.dix.embed.value.weight.grad is not None


def test_intermediate_outputs_have_documented_shapes(tiny: VLM4ST) -> None:
    B, H, W = 2, 10, 20
    d, D = tiny.dims["d_model"], tiny.vlm.hidden_size
    S, L = tiny.vlm.image_size, tiny.format_transformer.num_tokens()
    x, ts, task, target_ts = batch(B, H, W)
    pred, out = tiny(x, ts, task, return_intermediate=True, target_timestamps=target_ts)
    assert isinstance(out, VLM4STIntermediates)
    for key in ("x_temporal", "x_spatial", "x_cross", "x_input", "x_fused"):
        assert getattr(out, key).shape == (B, T_IN, H, W, d), key
    assert out.gate_weights.shape == (B, T_IN, H, W, 4)
    assert out.prompt.shape == (B, tiny.prompt_forge.out_dim)
    assert set(out.pattern_info) == {"temporal", "spatial", "cross"}
    for weights in out.pattern_info.values():
        assert weights.coarse.shape == (B, 5) and weights.fine.shape == (B, 5, 2)
    assert out.image.shape == (B, 3, S, S)
    assert out.sequence.shape == (B, L, D)
    vlm = out.vlm_output
    n_patches = (S // tiny.vlm.visual_encoder.patch_embed.patch_size[0]) ** 2
    assert vlm.fused.shape == (B, L, D) and vlm.text.shape == (B, L, D)
    assert vlm.visual.shape == (B, 1 + n_patches, D)
    assert pred.shape == (B, T_OUT, H, W, 1)


def test_no_parameter_tied_to_grid_or_horizon() -> None:
    """Models built for different grids are the same model; the same weights run at 10x20 and 32x32 and any T_out."""
    a, b = build_model("tiny"), build_model("tiny", extra=["dataset.t_out=9"])
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    b.load_state_dict(a.state_dict())  # strict: identical keys and shapes
    a.eval(), b.eval()
    for H, W in GRIDS:
        x, ts, task, _ = batch(1, H, W)
        pa = a(x, ts, task, target_timestamps=future(ts, T_OUT))
        pb = b(x, ts, task, target_timestamps=future(ts, 9))
        assert pa.shape == (1, T_OUT, H, W, 1) and pb.shape == (1, 9, H, W, 1)
        torch.testing.assert_close(pb[:, :T_OUT], pa)  # horizon queries do not depend on T_out
    with pytest.raises(ValueError, match=r"model\.t_in"):
        a(torch.zeros(1, T_IN + 1, 8, 8), None, torch.zeros(1, dtype=torch.long))


def test_freeze_vlm_backbone_keeps_adapters_and_modules_trainable() -> None:
    model = build_model("tiny", lora_type="standard")
    model.unfreeze_all()
    assert all(p.requires_grad for p in model.parameters())
    model.freeze_vlm_backbone()
    adapter = {id(p) for _, p in model.vlm.adapter.adapter_parameters(model.vlm)}
    assert adapter, "standard LoRA must add adapter parameters"
    for name, p in model.named_parameters():
        expected = not name.startswith("vlm.") or id(p) in adapter
        assert p.requires_grad == expected, name
    counts = model.get_trainable_parameters()
    assert counts.adapter.trainable == counts.adapter.total > 0
    assert counts.vlm_backbone.trainable == 0
    assert counts.total == sum(c.total for c in counts.modules.values())
    non_vlm = sum(c.total for name, c in counts.modules.items() if name != "vlm")
    assert counts.trainable == non_vlm + counts.adapter.total


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    model = build_model("tiny", extra=["model.dims.dropout=0.0"])
    x, ts, task, target_ts = batch(2, 8, 8)
    model(x, ts, task, target_timestamps=target_ts).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x, ts, task, target_timestamps=target_ts).square().mean().backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


def test_tiny_model_overfits_a_few_windows() -> None:
    torch.manual_seed(0)
    model = build_model("tiny", lora_type="none", extra=["model.dims.dropout=0.0"])
    H, W, n = 8, 10, 4
    t = torch.arange(T_IN + T_OUT, dtype=torch.float32)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    phase = torch.rand(n, 1, 1, 1) * 6.28
    series = torch.sin(0.7 * t.view(1, -1, 1, 1) + phase + 3 * xx + 2 * yy) * 0.8  # (n, T_in + T_out, H, W)
    x, y = series[:, :T_IN], series[:, T_IN:]
    ts = codes(torch.stack([torch.zeros(n, T_IN, dtype=torch.long), torch.arange(T_IN).repeat(n, 1)], -1).numpy())
    target_ts = future(ts, T_OUT)
    tasks = torch.zeros(n, dtype=torch.long)  # (n,)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(80):
        loss, _ = ForecastLoss(1.0, 0.5)(model(x, ts, tasks, target_timestamps=target_ts), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.slow
def test_paper_preset_builds_and_runs() -> None:
    model = build_model("vlm4st", lora_type="standard").eval()
    counts = model.get_trainable_parameters()
    assert max(p.numel() for n, p in model.named_parameters() if not n.startswith("vlm.")) < 5_000_000
    assert counts.modules["head"].total < 10_000_000
    with torch.no_grad():
        x, ts, task, target_ts = batch(1, 32, 32)
        assert model(x, ts, task, target_timestamps=target_ts).shape == (1, T_OUT, 32, 32, 1)
