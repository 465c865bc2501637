"""Window normalisation: the model sees each input window relative to its last frame and in units of its own
step-to-step change, and its forecast is mapped back the same way.

A city the model never trained on (zero-shot) differs from the sources in level and variability even after its own
min-max scaling; a model that reads absolute values then forecasts a source city's typical profile instead of the
new one's. Relative to the last frame, a forecast of zero is the last frame itself, and the learned part is the
change, in units that match across cities. ``x' = (x - x_last) / s``, ``y = y' * s + x_last``, with ``s`` the
root mean square of the window's frame-to-frame changes over its steps and cells (at least ``min_scale``, so a
flat night-time window is not blown up). The spread of the values would be the wrong unit: in a city with a few
very busy cells it measures how cells differ, not how fast they change.
"""

from __future__ import annotations

import torch
from torch import nn

from vlm4st import checks


class WindowNorm(nn.Module):
    """``normalise(x (B, T, H, W)) -> (x', stats)``; ``restore(pred (B, T_out, H, W, C), stats) -> pred``."""

    def __init__(self, min_scale: float) -> None:
        super().__init__()
        self.min_scale = checks.positive_number(min_scale, "model.window_norm.min_scale")

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        last = x[:, -1:]  # (B, 1, H, W)
        if x.shape[1] < 2:
            raise ValueError(f"window_norm: a window of {x.shape[1]} step has no change to measure; expected T_in >= 2")
        step = x.diff(dim=1)  # (B, T-1, H, W)
        scale = step.square().mean(dim=(1, 2, 3)).sqrt().clamp(min=self.min_scale)  # (B,)
        scale = scale.view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return (x - last) / scale, (last, scale)  # (B, T, H, W)

    def restore(self, pred: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        last, scale = stats  # (B, 1, H, W), (B, 1, 1, 1)
        return pred * scale[..., None].to(pred.dtype) + last[..., None].to(pred.dtype)  # (B, T_out, H, W, C)
