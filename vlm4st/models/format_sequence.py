"""Sequence path of the DualPathFormatTransformer: fused features -> latent tokens for the BERT.

Each frame is average-pooled to at most ``pool_size`` x ``pool_size`` tokens; tokens get a 2-D sinusoidal code of
their pooled-grid position and a sinusoidal code of their step relative to the most recent observation (both
computed on the fly and projected), so any T_in and any grid work with the same weights (no table sized for one
input length or grid). A Perceiver-style resampler then
distils them into ``num_latents`` learned latents: per layer the latents cross-attend to [tokens, latents]
(Flamingo's resampler) and pass an MLP, pre-norm. A projection to the VLM width and a LayerNorm finish it.
"""

from __future__ import annotations

import torch
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError
from vlm4st.models.layers import Block, pool_grid, relative_steps, sincos_1d, sincos_2d

KEY = "model.format_transformer.sequence"


class SequenceResampler(nn.Module):
    """(B, T, H, W, d) -> (B, num_latents, out_dim)."""

    def __init__(
        self,
        d_model: int,
        out_dim: int,
        num_latents: int = 64,
        num_layers: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        pool_size: int | None = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        d_model = checks.positive_int(d_model, f"{KEY}.d_model")
        if d_model % 4 != 0:
            raise ConfigError(
                f"{KEY}.d_model: {d_model} is not divisible by 4; expected a multiple of 4 (2-D sinusoidal positions)"
            )
        self.d_model = d_model
        self.out_dim = checks.positive_int(out_dim, f"{KEY}.out_dim")
        self.num_latents = checks.positive_int(num_latents, f"{KEY}.num_latents")
        num_layers = checks.positive_int(num_layers, f"{KEY}.num_layers")
        self.pool_size = checks.optional_positive_int(pool_size, f"{KEY}.pool_size", "every cell")
        dropout = checks.probability(dropout, f"{KEY}.dropout")
        self.spatial_pos = nn.Linear(d_model, d_model, bias=False)
        self.temporal_pos = nn.Linear(d_model, d_model, bias=False)
        self.norm_in = nn.LayerNorm(d_model)
        self.latents = nn.Parameter(torch.randn(1, num_latents, d_model) * 0.02)
        keys = {"heads_key": f"{KEY}.num_heads", "width_key": f"{KEY}.d_model", "mlp_key": f"{KEY}.mlp_ratio"}
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, mlp_ratio, dropout, cross=True, **keys) for _ in range(num_layers)
        )
        self.norm_latents = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, out_dim)
        self.norm_out = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, d = x.shape
        pooled = pool_grid(x.reshape(B * T, H, W, d), self.pool_size)  # (BT, h, w, d)
        h, w = pooled.shape[1:3]
        pos_s = self.spatial_pos(sincos_2d(h, w, d, device=x.device).to(x.dtype))  # (hw, d)
        pos_t = self.temporal_pos(sincos_1d(relative_steps(T, device=x.device), d).to(x.dtype))  # (T, d)
        tokens = pooled.reshape(B, T, h * w, d) + pos_s[None, None] + pos_t[None, :, None]  # (B, T, hw, d)
        tokens = self.norm_in(tokens.reshape(B, T * h * w, d))  # (B, T*hw, d)
        lat = self.latents.expand(B, -1, -1)  # (B, n, d)
        for block in self.blocks:
            lat = block(lat, torch.cat([tokens, lat], dim=1))  # (B, n, d)
        return self.norm_out(self.proj(self.norm_latents(lat)))  # (B, n, out_dim)
