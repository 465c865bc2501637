"""A readout of its own for every forecast step, from the cell's input series and its decoded state.

The head's shared readout tells the forecast steps apart only through a per-step scale and shift of the cell
state, and that modulation comes from the VLM tokens, which start at zero. Until it has been learned, the first
steps (which depend mostly on the latest observations) and the last ones (which depend on the cell's daily
profile) share one map. This path gives each step its own linear map of the cell's T_in x C_in inputs and of its
cell state from the first update on (what a per-step regression layer gives a simple forecaster). The maps sit in
a table of ``max_steps`` rows, so any horizon up to ``max_steps`` works with one set of weights. It is
zero-initialised: a model starts from the head's shared readout and the path grows as it helps.
"""

from __future__ import annotations

import torch
from torch import nn

from vlm4st import checks

KEY = "model.head.step_readout"


class StepReadout(nn.Module):
    """series (B, H, W, T_in*C_in) per cell, state (B, H, W, h), t_out -> (B, T_out, H, W, C).

    The head flattens each cell's input window once (``PredictionHead`` checks its T_in and C_in) and passes the
    same per-cell series here, so this module only checks the widths it multiplies.
    """

    def __init__(self, t_in: int, hidden_dim: int, max_steps: int, in_channels: int = 1,
                 out_channels: int = 1) -> None:
        super().__init__()
        sizes = {"t_in": t_in, "hidden_dim": hidden_dim, "max_steps": max_steps, "in_channels": in_channels,
                 "out_channels": out_channels}
        t_in, hidden_dim, max_steps, in_channels, out_channels = (
            checks.positive_int(value, f"{KEY}.{name}") for name, value in sizes.items()
        )
        self.t_in, self.hidden_dim, self.max_steps = t_in, hidden_dim, max_steps
        self.in_channels, self.out_channels = in_channels, out_channels
        features = t_in * in_channels + hidden_dim
        self.weight = nn.Parameter(torch.zeros(max_steps, features, out_channels))  # (S, T_in*C_in + h, C)
        self.bias = nn.Parameter(torch.zeros(max_steps, out_channels))  # (S, C)

    def forward(self, series: torch.Tensor, state: torch.Tensor, t_out: int) -> torch.Tensor:
        B, H, W, width = series.shape
        if width != self.t_in * self.in_channels or tuple(state.shape) != (B, H, W, self.hidden_dim):
            raise ValueError(
                f"StepReadout: expected per-cell series of width T_in*C_in = {self.t_in * self.in_channels} "
                f"(model.t_in) and a cell state of width {self.hidden_dim}; got series {tuple(series.shape)}, "
                f"state {tuple(state.shape)}"
            )
        if t_out > self.max_steps:
            raise ValueError(
                f"{KEY}.max_steps: {self.max_steps} is shorter than the horizon T_out={t_out}; "
                f"expected at least {t_out}"
            )
        maps = self.weight[:t_out].to(state.dtype)  # (T_out, K, C)
        feats = torch.cat([series.to(state.dtype), state], dim=-1).reshape(B, H * W, -1)  # (B, HW, K)
        out = torch.einsum("bnk,tkc->btnc", feats, maps) + self.bias[:t_out, None].to(state.dtype)  # (B, T_out, HW, C)
        return out.reshape(B, t_out, H, W, self.out_channels)  # (B, T_out, H, W, C)
