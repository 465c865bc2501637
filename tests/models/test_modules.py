"""Shape and behaviour tests of the spatiotemporal modules on their own (no backbone)."""

from __future__ import annotations

import pytest
import torch

from vlm4st.config import ConfigError
from vlm4st.data.timestamps import time_codes
from vlm4st.models.dix_attention import DiXAttention
from vlm4st.models.format_image import ImageProjector
from vlm4st.models.format_sequence import SequenceResampler
from vlm4st.models.format_transformer import DualPathFormatTransformer
from vlm4st.models.gated_fusion import AdaptiveGatedFusion
from vlm4st.models.input_projection import InputProjection, STFeatures
from vlm4st.models.layers import pool_grid, sincos_2d
from vlm4st.models.prediction_head import PredictionHead
from vlm4st.models.step_readout import StepReadout

D_MODEL, STEPS_PER_DAY, HARMONICS = 16, 48, 24
GRIDS = [(10, 20), (32, 32)]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timestamps(B: int, T: int, steps_per_day: int = STEPS_PER_DAY) -> torch.Tensor:
    """Random (B, T, 3) time codes of a city with ``steps_per_day`` steps (30-minute by default)."""
    stamps = torch.stack([torch.randint(0, 7, (B, T)), torch.randint(0, steps_per_day, (B, T))], dim=-1)
    return torch.from_numpy(time_codes(stamps.numpy(), steps_per_day))


def dix(**kw) -> DiXAttention:
    return DiXAttention(D_MODEL, HARMONICS, num_heads=2, spatial_pool=4, cross_pool=3, dropout=0.0, **kw)


@pytest.mark.parametrize(("H", "W"), GRIDS)
def test_dix_shapes_and_summaries(H: int, W: int) -> None:
    B, T = 2, 5
    feats = dix()(torch.rand(B, T, H, W) * 2 - 1, timestamps(B, T))
    for x in (feats.x_input, feats.x_temporal, feats.x_spatial, feats.x_cross):
        assert x.shape == (B, T, H, W, D_MODEL)
        assert torch.isfinite(x).all()
    assert set(feats.summaries) == {"temporal", "spatial", "cross"}
    assert all(s.shape == (B, D_MODEL) for s in feats.summaries.values())
    assert len(feats.branches()) == 4


def _features(feats: STFeatures) -> list[torch.Tensor]:
    return [feats.x_input, feats.x_temporal, feats.x_spatial, feats.x_cross]


def test_dix_without_summaries_returns_the_same_features_and_no_summary() -> None:
    """Summaries off: an empty dict, no cross CLS queries, and features equal to those of the module with them."""
    full, bare = dix().eval(), dix(summaries=False).eval()
    assert full.summary_names == ("temporal", "spatial", "cross") and bare.summary_names == ()
    assert bare.cross.cls_ts is None and bare.cross.cls_st is None
    result = bare.load_state_dict(full.state_dict(), strict=False)  # the same weights, less the CLS queries
    assert not result.missing_keys and sorted(result.unexpected_keys) == ["cross.cls_st", "cross.cls_ts"]
    x, ts = torch.rand(2, 4, 6, 7) * 2 - 1, timestamps(2, 4)
    with torch.no_grad():
        with_summaries, without = full(x, ts), bare(x, ts)
    assert without.summaries == {}
    for got, expected in zip(_features(without), _features(with_summaries), strict=True):
        assert got.shape == expected.shape == (2, 4, 6, 7, D_MODEL)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_input_projection_without_summaries() -> None:
    proj = InputProjection(D_MODEL, HARMONICS, summaries=False)
    feats = proj(torch.rand(2, 3, 5, 4), timestamps(2, 3))
    assert proj.summary_names == () and feats.summaries == {} and feats.x_input.shape == (2, 3, 5, 4, D_MODEL)


@pytest.mark.parametrize("module", [DiXAttention, InputProjection])
def test_summaries_flag_must_be_a_bool(module: type) -> None:
    with pytest.raises(ConfigError, match=r"model\.dix\.summaries"):
        module(D_MODEL, HARMONICS, summaries="no")


def test_cross_exchange_heads_read_projected_keys() -> None:
    """Both cross attentions project keys and values: each head sees every key channel, not a slice of it."""
    cross = dix().cross
    for attn in (cross.t2s, cross.s2t):
        assert attn.kv.weight.shape == (2 * D_MODEL, D_MODEL)
    xt, xs = torch.randn(1, 3, 4, 4, D_MODEL), torch.randn(1, 3, 4, 4, D_MODEL)
    base, _ = cross(xt, xs)
    with torch.no_grad():  # without a key projection these weights would not exist; they must matter
        cross.s2t.kv.weight.add_(0.5 * torch.randn_like(cross.s2t.kv.weight))
    assert not torch.allclose(cross(xt, xs)[0], base, atol=1e-4)


def test_dix_keeps_no_state_between_calls() -> None:
    module = dix().eval()
    x = torch.rand(2, 4, 6, 6)
    first = module(x).summaries["cross"]
    module(torch.rand(2, 4, 6, 6))
    assert torch.equal(module(x).summaries["cross"], first)
    assert not any(isinstance(v, torch.Tensor) for v in vars(module).values())


def test_dix_sees_position_time_order_and_calendar() -> None:
    """Permuting cells or steps must change the per-cell outputs (without position codes the module would be
    permutation-equivariant and could not tell cells or steps apart)."""
    module = dix().eval()
    x = torch.rand(1, 4, 6, 6)
    out = module(x).x_temporal
    perm = torch.randperm(36)
    x_perm = x.reshape(1, 4, 36)[..., perm].reshape(1, 4, 6, 6)
    out_perm = module(x_perm).x_temporal.reshape(1, 4, 36, D_MODEL)
    assert not torch.allclose(out_perm, out.reshape(1, 4, 36, D_MODEL)[:, :, perm], atol=1e-4)
    out_rev = module(x.flip(1)).x_temporal.flip(1)
    assert not torch.allclose(out_rev, out, atol=1e-4)
    ts = timestamps(1, 4)
    ts2 = ts.clone()
    ts2[..., 1] = (ts2[..., 1] + 30) % 1440  # half an hour later
    assert not torch.allclose(module(x, ts).x_input, module(x, ts2).x_input)


def test_dix_rejects_bad_timestamps() -> None:
    """Shapes and dtypes are checked in the forward pass; an out-of-range weekday fails in the calendar lookup
    (the data readers and task=predict range-check stamps before they reach the model)."""
    module = dix()
    ts = timestamps(1, 3)
    ts[0, 0, 0] = 7
    with pytest.raises(IndexError):
        module(torch.rand(1, 3, 4, 4), ts)
    with pytest.raises(ValueError, match="integer"):
        module(torch.rand(1, 3, 4, 4), timestamps(1, 3).float())
    with pytest.raises(ValueError, match=r"\(1, 3, 3\)"):
        module(torch.rand(1, 3, 4, 4), ts[:, :2])
    with pytest.raises(ValueError, match="time codes"):
        module(torch.rand(1, 3, 4, 4), ts[..., :2])


def test_dix_parameters_do_not_depend_on_grid_or_length() -> None:
    module = dix().eval()
    count = n_params(module)
    for H, W in GRIDS:
        for T in (3, 7):
            assert module(torch.rand(1, T, H, W)).x_cross.shape == (1, T, H, W, D_MODEL)
    assert n_params(module) == count


def _dix_loss(module: DiXAttention, x: torch.Tensor) -> torch.Tensor:
    feats = module(x, timestamps(x.shape[0], x.shape[1], steps_per_day=24))  # hourly: the interval weight learns too
    return sum(b.square().mean() for b in feats.branches()) + sum(s.square().mean() for s in feats.summaries.values())


def test_dix_grad_checkpointing_matches_and_every_parameter_learns() -> None:
    module = dix()
    x = torch.rand(2, 3, 5, 7)
    torch.manual_seed(1)
    _dix_loss(module, x).backward()
    grads = [p.grad.clone() for p in module.parameters()]
    assert all(g.abs().sum() > 0 for g in grads)
    module.zero_grad()
    module.set_grad_checkpointing(True)
    torch.manual_seed(1)
    _dix_loss(module, x).backward()
    for g, p in zip(grads, module.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_input_projection_builds_no_encoder() -> None:
    proj = InputProjection(D_MODEL, HARMONICS)
    feats = proj(torch.rand(2, 3, 10, 20), timestamps(2, 3))
    assert feats.x_input.shape == (2, 3, 10, 20, D_MODEL)
    assert feats.x_temporal is None and feats.x_spatial is None and feats.x_cross is None
    assert list(feats.summaries) == ["input"] and feats.summaries["input"].shape == (2, D_MODEL)
    assert n_params(proj) < n_params(dix()) / 3


@pytest.mark.parametrize("n_branches", [2, 3, 4])
def test_gated_fusion_branch_count_from_inputs(n_branches: int) -> None:
    fusion = AdaptiveGatedFusion(D_MODEL, gate_dim=8, dropout=0.0)
    branches = [torch.randn(2, 3, 10, 20, D_MODEL) for _ in range(n_branches)]
    fused, gates = fusion(branches)
    assert fused.shape == (2, 3, 10, 20, D_MODEL)
    assert gates.shape == (2, 3, 10, 20, n_branches)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 3, 10, 20))
    fused.sum().backward()
    assert fusion.query.weight.grad.abs().sum() > 0 and fusion.key.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("H", "W"), GRIDS)
def test_image_projector_normalised_image(H: int, W: int) -> None:
    img = ImageProjector(D_MODEL)(torch.randn(2, 4, H, W, D_MODEL) * 3 + 1, size=48)
    assert img.shape == (2, 3, 48, 48)
    assert img.mean(dim=(2, 3)).abs().max() < 0.2
    assert ((img.std(dim=(2, 3)) - 1).abs() < 0.2).all()


@pytest.mark.parametrize(("H", "W"), GRIDS)
@pytest.mark.parametrize("T", [3, 6])
def test_sequence_resampler_any_grid_and_length(H: int, W: int, T: int) -> None:
    seq = SequenceResampler(D_MODEL, out_dim=24, num_latents=5, num_layers=2, num_heads=2, pool_size=4)
    assert seq(torch.randn(2, T, H, W, D_MODEL)).shape == (2, 5, 24)


def _format(image: bool, sequence: bool, prompt_dim: int | None) -> DualPathFormatTransformer:
    return DualPathFormatTransformer(
        ImageProjector(D_MODEL) if image else None,
        SequenceResampler(D_MODEL, 24, num_latents=5, num_layers=1, num_heads=2) if sequence else None,
        out_dim=24,
        prompt_dim=prompt_dim,
    )


def test_format_transformer_paths_and_prompt_token() -> None:
    x, prompt = torch.randn(2, 3, 10, 20, D_MODEL), torch.randn(2, 12)
    out = _format(True, True, 12)(x, image_size=32, prompt=prompt)
    assert out.image.shape == (2, 3, 32, 32) and out.sequence.shape == (2, 7, 24)  # CLS + PROMPT + 5 latents
    torch.testing.assert_close(out.sequence[:, 1:2], out.prompt_token)
    no_prompt = _format(True, True, None)
    assert no_prompt(x, image_size=32).sequence.shape == (2, 6, 24) and no_prompt.prompt_proj is None
    image_only = _format(True, False, 12)
    out = image_only(x, image_size=32, prompt=prompt)
    assert out.sequence is None and out.prompt_token.shape == (2, 1, 24)
    assert not any("latent" in name or name == "cls" for name, _ in image_only.named_parameters())
    seq_only = _format(False, True, 12)
    out = seq_only(x, prompt=prompt)
    assert out.image is None and seq_only.image is None
    with pytest.raises(ValueError, match="prompt_dim"):
        seq_only(x)
    with pytest.raises(ConfigError, match=r"model\.format_transformer: both image and sequence are null"):
        _format(False, False, None)


def tasks(batch: int) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long)  # (B,) task 0


def head(**kw) -> PredictionHead:
    return PredictionHead(D_MODEL, context_dim=24, t_in=4, harmonics=HARMONICS, num_heads=2, cell_heads=2,
                          hidden_dim=8, dropout=0.0, **kw)


@pytest.mark.parametrize(("H", "W"), GRIDS)
@pytest.mark.parametrize("t_out", [1, 6, 9])
@pytest.mark.parametrize("query_pool", [None, 3])
def test_prediction_head_any_grid_any_horizon(H: int, W: int, t_out: int, query_pool: int | None) -> None:
    module = head(out_channels=2, visual_dim=24, query_pool=query_pool)
    feats, series = torch.randn(2, 4, H, W, D_MODEL), torch.randn(2, 4, H, W)
    pred = module(feats, series, torch.randn(2, 7, 24), t_out, timestamps(2, t_out), tasks(2),
                  visual=torch.randn(2, 17, 24))
    assert pred.shape == (2, t_out, H, W, 2)


def test_prediction_head_reads_every_input_step_the_series_and_the_context() -> None:
    module = head().eval()
    for layer in (module.film, module.dix, module.read.attn.proj, module.read.mlp.fc2):  # zero at initialisation
        torch.nn.init.normal_(layer.weight, std=0.1)
    feats, series, ctx = torch.randn(1, 4, 5, 5, D_MODEL), torch.randn(1, 4, 5, 5), torch.randn(1, 3, 24)
    stamps = timestamps(1, 3)
    base = module(feats, series, ctx, 3, stamps, tasks(1))
    changed_first = feats.clone()
    changed_first[:, 0] += 1.0  # the oldest step reaches the forecast too (the DiX residual reads all steps)
    assert not torch.allclose(module(changed_first, series, ctx, 3, stamps, tasks(1)), base)
    assert not torch.allclose(module(feats, series + 1.0, ctx, 3, stamps, tasks(1)), base)
    assert not torch.allclose(module(feats, series, ctx + torch.randn_like(ctx), 3, stamps, tasks(1)), base)
    with pytest.raises(ValueError, match="T_in=4"):
        module(feats[:, :3], series[:, :3], ctx, 3, stamps, tasks(1))


def test_prediction_head_starts_from_the_direct_path() -> None:
    """At initialisation the DiX, ViT and VLM-token branches contribute nothing; they grow in with training."""
    module = head(visual_dim=24).eval()
    feats, series, ctx = torch.randn(1, 4, 5, 5, D_MODEL), torch.randn(1, 4, 5, 5), torch.randn(1, 3, 24)
    stamps, visual = timestamps(1, 3), torch.randn(1, 17, 24)
    base = module(feats, series, ctx, 3, stamps, tasks(1), visual=visual)
    other = module(torch.randn_like(feats), series, torch.randn_like(ctx), 3, stamps, tasks(1),
                   visual=torch.randn_like(visual))
    torch.testing.assert_close(other, base)
    assert not torch.allclose(module(feats, series + 1.0, ctx, 3, stamps, tasks(1), visual=visual), base)


def test_prediction_head_has_no_grid_sized_parameter() -> None:
    module = PredictionHead(256, context_dim=768, t_in=6, harmonics=24, num_heads=12, hidden_dim=128,
                            visual_dim=768)
    assert max(p.numel() for p in module.parameters()) <= 768 * 768 * 2


def test_layers_position_codes_and_pooling() -> None:
    code = sincos_2d(3, 5, 8)
    assert code.shape == (15, 8) and len({tuple(r.tolist()) for r in code}) == 15
    x = torch.randn(2, 10, 20, 4)
    assert pool_grid(x, 8).shape == (2, 8, 8, 4)
    assert pool_grid(x, 16).shape == (2, 10, 16, 4)
    assert pool_grid(x, None) is x


def test_prediction_head_adds_the_per_step_readout() -> None:
    readout = StepReadout(t_in=4, hidden_dim=8, max_steps=6)
    module = head(step_readout=readout).eval()
    feats, series, ctx = torch.randn(1, 4, 5, 5, D_MODEL), torch.randn(1, 4, 5, 5), torch.randn(1, 3, 24)
    stamps = timestamps(1, 3)
    base = module(feats, series, ctx, 3, stamps, tasks(1))  # zero-initialised: the shared readout alone
    torch.nn.init.normal_(readout.weight, std=0.1)
    step = module(feats, series, ctx, 3, stamps, tasks(1))
    assert not torch.allclose(step, base)
    readout.weight.data[:, :4] = 0.0  # the series part off: the rest reads the decoded cell state
    torch.nn.init.zeros_(readout.weight[:, :, 0][1:])  # and only forecast step 1 has a map of its own
    step = module(feats, series, ctx, 3, stamps, tasks(1))
    assert not torch.allclose(step[:, 0], base[:, 0])
    torch.testing.assert_close(step[:, 1:], base[:, 1:])
    with pytest.raises(ConfigError, match=r"model\.head\.step_readout: t_in / in_channels / hidden_dim"):
        head(step_readout=StepReadout(t_in=4, hidden_dim=16, max_steps=6))
