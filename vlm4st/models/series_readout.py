"""A direct linear forecast of every step from the cell's own input series, added to the head's readout.

The head decodes all forecast steps from one cell state and tells them apart only through a per-step scale and
shift of that state, so the first steps, which depend mostly on the latest observations, and the last ones, which
depend on the cell's daily profile, share one readout until the modulation has been learned. This path gives
each forecast step its own linear map of the cell's T_in x C_in inputs from the first update on (what a per-step
regression layer gives a simple forecaster). The maps sit in a table of ``max_steps`` rows, so any horizon up to
``max_steps`` works with one set of weights. It is zero-initialised: a model starts from the head's own readout
and the path grows as it helps.
"""

from __future__ import annotations

import torch
from torch import nn


class SeriesReadout(nn.Module):
    """series (B, T_in, H, W[, C_in]), t_out -> (B, T_out, H, W, C): step j's linear map of each cell's series."""

    def __init__(self, t_in: int, max_steps: int, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__()
        if min(t_in, max_steps, in_channels, out_channels) < 1:
            raise ValueError(
                f"model.head.series_readout: t_in, max_steps, in_channels and out_channels must be positive, got "
                f"{t_in}, {max_steps}, {in_channels}, {out_channels}"
            )
        self.t_in, self.max_steps = t_in, max_steps
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.zeros(max_steps, t_in * in_channels, out_channels))  # (S, T_in*C_in, C)
        self.bias = nn.Parameter(torch.zeros(max_steps, out_channels))  # (S, C)

    def forward(self, series: torch.Tensor, t_out: int) -> torch.Tensor:
        if series.dim() == 4:
            series = series.unsqueeze(-1)  # (B, T_in, H, W, 1)
        B, T, H, W, C_in = series.shape
        if (T, C_in) != (self.t_in, self.in_channels):
            raise ValueError(
                f"SeriesReadout: expected T_in={self.t_in} steps with {self.in_channels} channel(s) "
                f"(model.t_in), got series {tuple(series.shape)}"
            )
        if t_out > self.max_steps:
            raise ValueError(
                f"model.head.series_readout.max_steps: {self.max_steps} is shorter than the horizon T_out={t_out}; "
                f"expected at least {t_out}"
            )
        maps = self.weight[:t_out]  # (T_out, T_in*C_in, C)
        hist = series.permute(0, 2, 3, 1, 4).reshape(B, H * W, T * C_in).to(maps.dtype)  # (B, HW, T_in*C_in)
        out = torch.einsum("bnk,tkc->btnc", hist, maps) + self.bias[:t_out, None]  # (B, T_out, HW, C)
        return out.reshape(B, t_out, H, W, self.out_channels)  # (B, T_out, H, W, C)
