"""DiX at what it computes: the shape-picked attention kernel and the patch token grid.

The short-attention kernel must give SDPA's values, so DiX on the cell grid is the same function as when every
attention went through SDPA; with ``spatial_patch`` > 1 the branches run on blocks of cells and each cell adds its
block's fused change to its own embedding.
"""

from __future__ import annotations

import pytest
import torch

from tests.models.test_modules import D_MODEL, HARMONICS, timestamps
from vlm4st.errors import ConfigError
from vlm4st.models import layers
from vlm4st.models.dix_attention import DiXAttention
from vlm4st.models.gated_fusion import AdaptiveGatedFusion
from vlm4st.models.layers import attend, expand_patches, pool_patches


def _sdpa_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "SHORT_PAIRS", 0)


def _short_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "SHORT_PAIRS", 10**6)


@pytest.mark.parametrize(("Lq", "Lk"), [(1, 1), (3, 3), (2, 5), (7, 8)])
@pytest.mark.parametrize("masked", [False, True])
def test_short_kernel_matches_sdpa(monkeypatch: pytest.MonkeyPatch, Lq: int, Lk: int, masked: bool) -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(6, Lq, 2, 8), torch.randn(6, Lk, 2, 8), torch.randn(6, Lk, 2, 8)  # (N, L, h, dh)
    mask = None
    if masked:
        mask = torch.rand(6, Lk) > 0.4
        mask[:, 0] = True  # every query keeps one key
    _short_always(monkeypatch)
    short = attend(q, k, v, mask)  # (N, Lq, h, dh)
    _sdpa_only(monkeypatch)
    reference = attend(q, k, v, mask)
    assert short.shape == (6, Lq, 2, 8)
    torch.testing.assert_close(short, reference, rtol=1e-5, atol=1e-6)


def test_short_kernel_gradients_match_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    leaves = [torch.randn(5, L, 2, 4, requires_grad=True) for L in (3, 4, 4)]
    _short_always(monkeypatch)
    attend(*leaves).square().sum().backward()
    short = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    _sdpa_only(monkeypatch)
    attend(*leaves).square().sum().backward()
    for got, want in zip(short, (t.grad for t in leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_dix_on_cells_is_the_sdpa_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same weights, every attention through SDPA (the implementation before the kernel choice): same features,
    summaries and fused output within fp32 rounding."""
    torch.manual_seed(2)
    module = DiXAttention(D_MODEL, HARMONICS, num_heads=2, spatial_pool=4, cross_pool=3, dropout=0.0).eval()
    fusion = AdaptiveGatedFusion(D_MODEL, dropout=0.0).eval()
    x, stamps = torch.rand(2, 4, 6, 7) * 2 - 1, timestamps(2, 4)

    def run() -> list[torch.Tensor]:
        feats = module(x, stamps)
        fused, gates = fusion(feats.branches())
        return [*feats.branches(), *feats.summaries.values(), feats.to_cells(fused), gates]

    fast = run()  # the cross branch's cell queries (2 x 4 pairs) take the short kernel
    _sdpa_only(monkeypatch)
    for got, want in zip(fast, run(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("H", "W", "patch"), [(4, 6, 2), (5, 7, 2), (10, 20, 3), (3, 3, 1)])
def test_patch_pooling_and_expansion(H: int, W: int, patch: int) -> None:
    x = torch.rand(2, 3, H, W, 4)  # (B, T, H, W, D)
    pooled = pool_patches(x, patch)
    h, w = -(-H // patch), -(-W // patch)
    assert pooled.shape == (2, 3, h, w, 4)
    # each token is the mean of the cells of its block, edge blocks included
    torch.testing.assert_close(pooled[:, :, -1, -1], x[:, :, (h - 1) * patch :, (w - 1) * patch :].mean(dim=(2, 3)))
    cells = expand_patches(pooled, patch, H, W)
    assert cells.shape == x.shape
    assert torch.equal(cells[:, :, H - 1, W - 1], pooled[:, :, -1, -1])
    assert torch.equal(cells[:, :, 0, 0], pooled[:, :, 0, 0])


def test_patched_dix_runs_on_blocks_and_keeps_each_cells_own_embedding() -> None:
    torch.manual_seed(3)
    B, T, H, W, p = 2, 4, 5, 7, 2
    module = DiXAttention(D_MODEL, HARMONICS, num_heads=2, spatial_pool=4, cross_pool=3, dropout=0.0,
                          spatial_patch=p)
    fusion = AdaptiveGatedFusion(D_MODEL, dropout=0.0)
    x = (torch.rand(B, T, H, W) * 2 - 1).requires_grad_()
    feats = module(x, timestamps(B, T))
    assert feats.x_input.shape == (B, T, H, W, D_MODEL)
    for branch in feats.branches():
        assert branch.shape == (B, T, 3, 4, D_MODEL)  # ceil(5/2) x ceil(7/2) tokens
    fused, gates = fusion(feats.branches())
    cells = feats.to_cells(fused)  # (B, T, H, W, d)
    assert cells.shape == (B, T, H, W, D_MODEL)
    change = cells - feats.x_input
    # the cells of one block share the block's change, and keep their own embeddings
    torch.testing.assert_close(change[:, :, 0, 0], change[:, :, 1, 1])
    torch.testing.assert_close(change[:, :, 4, 6], fused[:, :, 2, 3] - feats.x_tokens[:, :, 2, 3])
    assert not torch.allclose(cells[:, :, 0, 0], cells[:, :, 1, 1])
    assert feats.gates_to_cells(gates).shape == (B, T, H, W, 4)
    cells.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_spatial_patch_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"model\.dix\.spatial_patch"):
        DiXAttention(D_MODEL, HARMONICS, num_heads=2, spatial_patch=0)
