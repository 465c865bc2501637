"""Reusable layers of the spatiotemporal modules: position codes, attention over SDPA, MLPs, grid pooling.

Position codes are sinusoids computed on the fly (any T, any H x W), followed by a learned projection in the
modules that use them, so no parameter is tied to a sequence length or a grid size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlm4st import checks


def sincos_1d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal code of (possibly negative, fractional) positions: (N,) -> (N, dim). ``dim`` must be even."""
    if dim % 2 != 0:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(base) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None, :]  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (N, dim)


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Factorised row/column sinusoidal code of a ``height x width`` grid: (height * width, dim), row-major.

    Half the channels code the row index, half the column index; ``dim`` must be divisible by 4.
    """
    if dim % 4 != 0:
        raise ValueError(f"sincos_2d: dim must be divisible by 4, got {dim}")
    rows = sincos_1d(torch.arange(height, device=device), dim // 2)  # (H, dim/2)
    cols = sincos_1d(torch.arange(width, device=device), dim // 2)  # (W, dim/2)
    code = torch.cat(
        [rows[:, None, :].expand(height, width, dim // 2), cols[None, :, :].expand(height, width, dim // 2)], dim=-1
    )  # (H, W, dim)
    return code.reshape(height * width, dim)


def relative_steps(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Step positions relative to the most recent one: ``[-(length-1), ..., -1, 0]`` (any length aligns at 0)."""
    return torch.arange(length, device=device) - (length - 1)


def pool_grid(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Adaptive average pooling of a channels-last grid to at most ``size x size`` cells.

    x (N, H, W, D) -> (N, h, w, D) with h = min(size, H), w = min(size, W); ``size=None`` returns x unchanged.
    """
    if size is None:
        return x
    H, W = x.shape[1:3]
    h, w = min(size, H), min(size, W)
    if (h, w) == (H, W):
        return x
    pooled = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), (h, w))  # (N, D, h, w)
    return pooled.permute(0, 2, 3, 1)  # (N, h, w, D)


def pool_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Average ``patch x patch`` blocks of cells: (B, T, H, W, D) -> (B, T, ceil(H/patch), ceil(W/patch), D).

    Blocks at the right and bottom edges of a grid that ``patch`` does not divide average the cells they hold.
    """
    if patch == 1:
        return x
    B, T, H, W, D = x.shape
    grid = x.reshape(B * T, H, W, D).permute(0, 3, 1, 2)  # (BT, D, H, W)
    pooled = F.avg_pool2d(grid, patch, ceil_mode=True)  # (BT, D, h, w)
    return pooled.permute(0, 2, 3, 1).reshape(B, T, *pooled.shape[2:], D)  # (B, T, h, w, D)


def expand_patches(x: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Inverse layout of ``pool_patches``: every cell takes its block's value, (B, T, h, w, D) -> (B, T, H, W, D)."""
    if patch == 1:
        return x
    B, T, h, w, D = x.shape
    cells = x[:, :, :, None, :, None].expand(B, T, h, patch, w, patch, D)  # (B, T, h, p, w, p, D), no copy
    return cells.reshape(B, T, h * patch, w * patch, D)[:, :, :height, :width]  # (B, T, H, W, D)


class MLP(nn.Module):
    """Linear -> GELU -> Linear -> Dropout (one dropout site: dropout masks are costly on CPU for large tensors)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))  # (..., out_dim)


#: Query-key pairs per sequence up to which ``attend`` multiplies out the scores itself instead of calling SDPA.
#: Attention of a few queries over a few keys for thousands of sequences (a cell's few time tokens, a cell's query
#: over its steps) is overhead-bound in SDPA's CPU kernel (one small tile per sequence and head, forward and
#: backward); broadcast products over the whole batch compute the same values faster up to about 16 pairs
#: (measured on a 2-core CPU: 3 x 3 tokens 7.0 against 8.3 ms, 2 queries x 4 keys 8.8 against 12.9 ms forward
#: and backward; 5 x 5 tokens already favour SDPA, 15.8 against 10.5 ms).
SHORT_PAIRS = 16


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention per head, the kernel picked by shape: q (N, Lq, h, dh), k and v (N, Lk, h, dh), mask
    (N, Lk) bool (True = attend) -> (N, Lq, h, dh).

    Up to ``SHORT_PAIRS`` query-key pairs: broadcast products in the (N, L, h, dh) layout the projections produce
    (no head transpose); otherwise ``F.scaled_dot_product_attention`` (fused kernels). Both give the same values
    within floating-point rounding.
    """
    if q.shape[1] * k.shape[1] <= SHORT_PAIRS:
        scores = (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1) * q.shape[-1] ** -0.5  # (N, Lq, Lk, h)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :, None], float("-inf"))  # (N, Lq, Lk, h)
        weights = scores.softmax(dim=2)  # (N, Lq, Lk, h)
        return (weights.unsqueeze(-1) * v.unsqueeze(1)).sum(2)  # (N, Lq, h, dh)
    attn_mask = None if mask is None else mask[:, None, None, :]  # (N, 1, 1, Lk)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (N, h, L, dh) each
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (N, h, Lq, dh)
    return out.transpose(1, 2)  # (N, Lq, h, dh)


class Attention(nn.Module):
    """Multi-head attention; ``attend`` picks the kernel by shape (SDPA's fused kernels for all but the shortest).

    Self-attention (``cross=False``) uses one fused qkv projection. Cross-attention takes queries from ``x``
    (width ``dim``) and projects keys/values from ``context`` (width ``kv_dim``). No dropout on attention
    probabilities, so the fused kernels always apply (callers drop out the attention output instead).
    ``heads_key`` / ``width_key``: the config keys that set ``num_heads`` and ``dim``, named by a ``ConfigError``
    when the heads do not divide the width.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_dim: int | None = None,
        cross: bool = False,
        *,
        heads_key: str,
        width_key: str,
    ) -> None:
        super().__init__()
        self.num_heads = checks.num_heads(num_heads, dim, heads_key, width_key)
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        N, L, D = t.shape
        return t.reshape(N, L, self.num_heads, D // self.num_heads)  # (N, L, h, D/h)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (N, Lq, dim); context (N, Lk, kv_dim) for cross-attention; mask (N, Lk) bool, True = attend."""
        N, Lq, D = x.shape
        if self.cross:
            if context is None:
                raise ValueError("cross-attention layer called without context")
            q = self._heads(self.q(x))  # (N, Lq, h, D/h)
            k, v = (self._heads(t) for t in self.kv(context).chunk(2, dim=-1))  # (N, Lk, h, D/h) each
        else:
            if context is not None:
                raise ValueError("self-attention layer called with a context; build it with cross=True")
            q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))  # (N, L, h, D/h) each
        out = attend(q, k, v, mask)  # (N, Lq, h, D/h)
        return self.proj(out.reshape(N, Lq, D))  # (N, Lq, dim)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` (MLP skipped at ``mlp_ratio=0``).

    With ``cross=True`` the block attends to a context (normalised by its own LayerNorm). ``heads_key``,
    ``width_key`` and ``mlp_key`` are the config keys of ``num_heads``, ``dim`` and ``mlp_ratio``, named by a
    ``ConfigError`` when a value does not fit; the caller checks ``dropout`` under its own key.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        cross: bool = False,
        kv_dim: int | None = None,
        *,
        heads_key: str,
        width_key: str,
        mlp_key: str,
    ) -> None:
        super().__init__()
        mlp_ratio = checks.non_negative_number(mlp_ratio, mlp_key)
        self.norm1 = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim or dim) if cross else None
        self.attn = Attention(dim, num_heads, kv_dim=kv_dim, cross=cross, heads_key=heads_key, width_key=width_key)
        self.drop = nn.Dropout(dropout)
        hidden = round(dim * mlp_ratio)
        self.norm2 = nn.LayerNorm(dim) if hidden > 0 else None
        self.mlp = MLP(dim, hidden, dropout=dropout) if hidden > 0 else None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (N, L, dim); context (N, Lk, kv_dim) for cross blocks -> (N, L, dim)."""
        ctx = context if self.norm_kv is None or context is None else self.norm_kv(context)
        x = x + self.drop(self.attn(self.norm1(x), ctx, mask))  # (N, L, dim)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))  # (N, L, dim)
        return x
