"""PredictionHead: horizon queries read the VLM tokens and modulate per-cell features (module 6 of 6).

1. T_out horizon queries = a learned base + a projected sinusoid of the horizon step (1..T_out): any T_out, no
   parameter tied to it. They cross-attend to the VLM output tokens (pre-norm block with MLP).
2. Per horizon step, the result gives a FiLM scale and shift (zero-initialised, so training starts from the
   unmodulated features) for per-cell features.
3. Per-cell features = the fused DiX features of the **most recent** observation (D-10: the reference paired
   horizon step i with input step i), plus, when ``visual_dim`` is set, the ViT patch tokens projected to
   d_model and resized from the patch grid to the cell grid (spatially resolved VLM context).
4. A per-cell MLP d -> hidden -> C with an optional depthwise k x k convolution for spatial mixing.
Nothing depends on H x W (D-11: the reference's 67 M-parameter Linear tied it to 32 x 32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlm4st.models.layers import Block, sincos_1d


class PredictionHead(nn.Module):
    """features (B, T, H, W, d), context (B, N, D), visual (B, 1+P, D) | None -> (B, T_out, H, W, C)."""

    def __init__(
        self,
        d_model: int,
        context_dim: int,
        out_channels: int = 1,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        hidden_dim: int = 128,
        kernel_size: int | None = 3,
        visual_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if context_dim % 4 != 0:
            raise ValueError(f"model.head.context_dim: {context_dim} must be divisible by 4")
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"model.head.kernel_size: expected an odd positive integer or null, got {kernel_size}")
        self.d_model = d_model
        self.context_dim = context_dim
        self.out_channels = out_channels
        self.visual_dim = visual_dim
        self.query_base = nn.Parameter(torch.randn(1, 1, context_dim) * 0.02)
        self.query_pos = nn.Linear(context_dim, context_dim, bias=False)
        self.block = Block(context_dim, num_heads, mlp_ratio, dropout, cross=True)
        self.norm_query = nn.LayerNorm(context_dim)
        self.film = nn.Linear(context_dim, 2 * d_model)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.visual_proj = nn.Linear(visual_dim, d_model) if visual_dim is not None else None
        self.norm_cell = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden_dim)
        self.conv = (
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=kernel_size // 2, groups=hidden_dim)
            if kernel_size is not None
            else None
        )
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, out_channels)

    def _visual_map(self, visual: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """ViT tokens (B, 1+P, D) -> patch features on the cell grid (B, H, W, d)."""
        B, N, _ = visual.shape
        g = math.isqrt(N - 1)
        if g * g != N - 1:
            raise ValueError(f"PredictionHead: visual tokens must be 1 CLS + a square patch grid, got {N} tokens")
        patches = self.visual_proj(visual[:, 1:]).transpose(1, 2).reshape(B, self.d_model, g, g)  # (B, d, g, g)
        extra = {"antialias": min(H, W) < g}
        cells = F.interpolate(patches, size=(H, W), mode="bilinear", align_corners=False, **extra)  # (B, d, H, W)
        return cells.permute(0, 2, 3, 1)  # (B, H, W, d)

    def forward(
        self, features: torch.Tensor, context: torch.Tensor, t_out: int, visual: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, _, H, W, _ = features.shape
        if (visual is None) != (self.visual_proj is None):
            raise ValueError(
                "PredictionHead: visual tokens must be given exactly when model.head.visual_dim is set "
                f"(visual_dim={self.visual_dim}, visual given: {visual is not None})"
            )
        steps = torch.arange(1, t_out + 1, device=features.device)
        pos = self.query_pos(sincos_1d(steps, self.context_dim).to(context.dtype))  # (T_out, D)
        queries = (self.query_base + pos.unsqueeze(0)).expand(B, -1, -1)  # (B, T_out, D)
        z = self.norm_query(self.block(queries, context))  # (B, T_out, D)
        gamma, beta = self.film(z).chunk(2, dim=-1)  # (B, T_out, d) each

        cell = features[:, -1]  # most recent observation (B, H, W, d)
        if visual is not None:
            cell = cell + self._visual_map(visual, H, W)  # (B, H, W, d)
        cell = self.norm_cell(cell)
        h = cell.unsqueeze(1) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]  # (B, T_out, H, W, d)
        h = F.gelu(self.fc1(h))  # (B, T_out, H, W, hid)
        if self.conv is not None:
            hc = h.reshape(B * t_out, H, W, -1).permute(0, 3, 1, 2)  # (B*T_out, hid, H, W)
            h = h + self.conv(hc).permute(0, 2, 3, 1).reshape(h.shape)  # (B, T_out, H, W, hid)
        return self.fc2(self.drop(h))  # (B, T_out, H, W, C)
