"""``FrameCodec``: how one dataset's raw frames become model inputs, and forecasts return to the raw scale.

Raw frames are resized (bilinear) to the model grid, then scaled to [-1, 1] by the dataset's min-max scaler;
forecasts are resized back to a native grid and un-scaled in float64. ``prepare`` builds it when a dataset is read
for training; ``task=predict`` rebuilds it from the dataset description a checkpoint stores, so a forecast of a
file goes through exactly the arithmetic the training and test windows went through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlm4st.data.resize import resize_frames, resize_maps
from vlm4st.data.scaler import MinMaxScaler

_BLOCK = 8192  # frames scaled at once: bounds the float64 temporaries


@dataclass(frozen=True)
class FrameCodec:
    scaler: MinMaxScaler
    model_hw: tuple[int, int]

    @classmethod
    def from_description(cls, info: Mapping[str, Any]) -> FrameCodec:
        """From a dataset's ``describe()`` (stored in every checkpoint's data state)."""
        hw = info["model_hw"]
        return cls(MinMaxScaler.from_state_dict(info["scaler"]), (int(hw[0]), int(hw[1])))

    def scale(self, frames: np.ndarray, channel: np.ndarray | None) -> np.ndarray:
        """Frames already on the model grid (F, h, w) -> float32 in [-1, 1]. ``channel``: (F,) the channel of each
        frame (read only by a per-channel scaler)."""
        channel = channel if self.scaler.per_channel else None
        out = np.empty(frames.shape, dtype=np.float32)  # (F, h, w)
        for b in range(0, len(frames), _BLOCK):
            block = slice(b, b + _BLOCK)
            out[block] = self.scaler.transform(frames[block], None if channel is None else channel[block])
        return out

    def encode(self, frames: np.ndarray, channel: np.ndarray | None) -> np.ndarray:
        """Raw frames (F, H, W) -> model inputs (F, h, w) float32: resize to the model grid, then scale."""
        return self.scale(resize_frames(frames, self.model_hw), channel)

    def decode(self, pred: torch.Tensor, channel: torch.Tensor, native_hw: tuple[int, int]) -> torch.Tensor:
        """Normalised forecasts (B, T_out, h, w) -> raw scale (B, T_out, H, W) float64 on ``native_hw``.
        ``channel``: (B,) per window."""
        pred = resize_maps(pred.float(), native_hw)  # (B, T_out, H, W)
        return self.scaler.inverse(pred, channel, dtype=torch.float64)
