"""Zero-shot forecasts calibrated on the target's own unscored prefix: how far to trust the model over the last frame.

A source model carries what it learned of its cities' dynamics to a city it never saw. Where the new city moves
differently, its forecast can be worse than repeating the last frame. The zero-shot target already has frames that
are never scored: the calibration prefix its scaler is fitted on. Cut into windows, they tell, per forecast step,
how much of the model's departure from the last frame helps there: per step ``h`` the weight ``w_h`` in [0, 1] (a
grid of ``GRID`` values) whose forecast ``l + w_h (m - l)`` has the lowest training loss (the run's MSE and MAE
weights) over the prefix windows and cells, in normalised units (``m`` the model's forecast, ``l`` the last input
frame). The test forecast is that blend: the model where it helped on the prefix, the last frame where it did not.
Nothing scored enters the fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vlm4st.data.prepared import PreparedDataset
from vlm4st.models.loss import TrainingLoss

log = logging.getLogger(__name__)

#: Candidate weights of the model's departure from the last frame: 0, 0.025, ..., 1.
GRID = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)


@dataclass
class Blend:
    """Per-step weights of the model's departure from the last frame, and the prefix windows they came from."""

    weights: torch.Tensor  # (T_out,) in [0, 1]
    windows: int


def prefix_starts(ds: PreparedDataset) -> np.ndarray:
    """First frames of every window (``t_in + t_out`` consecutive frames of one channel) that lies inside the frames
    the dataset's scaler was fitted on (the zero-shot calibration prefix)."""
    length = ds.t_in + ds.t_out
    inside = np.zeros(len(ds.frame_channel), dtype=bool)
    inside[ds.scaler_frames] = True
    starts = []
    for s in ds.scaler_frames:
        end = s + length
        if end <= len(inside) and inside[s:end].all() and (ds.frame_channel[s:end] == ds.frame_channel[s]).all():
            starts.append(s)
    return np.asarray(starts, dtype=np.int64)


@torch.no_grad()
def fit_blend(model: nn.Module, ds: PreparedDataset, task_id: int, device: torch.device, autocast: Any,
              batch_size: int, loss: TrainingLoss) -> Blend:
    """Weights from the prefix windows of ``ds`` (run with task id ``task_id``); all ones when there is none."""
    starts = prefix_starts(ds)
    if len(starts) == 0:
        log.warning("zero-shot blend for %s: no window fits in the calibration prefix; the model's forecast is used "
                    "as is (raise dataset.zero_shot_calibration_steps above t_in + t_out)", ds.name)
        return Blend(torch.ones(ds.t_out), 0)
    was_training = model.training
    model.eval()
    sq = torch.zeros(len(GRID), ds.t_out, dtype=torch.float64)  # sum of squared errors per candidate and step
    ab = torch.zeros(len(GRID), ds.t_out, dtype=torch.float64)  # sum of absolute errors
    points = 0
    steps = torch.arange(ds.t_in + ds.t_out)
    for b in range(0, len(starts), batch_size):
        idx = torch.from_numpy(starts[b : b + batch_size])[:, None] + steps  # (B, L)
        seq, codes = ds.frames[idx], ds.codes[idx]  # (B, L, h, w), (B, L, 3)
        x = seq[:, : ds.t_in].to(device)  # (B, T_in, h, w)
        task = torch.full((len(idx),), task_id, dtype=torch.int64, device=device)  # (B,)
        with autocast:
            pred = model(x, codes[:, : ds.t_in].to(device), task, target_timestamps=codes[:, ds.t_in :].to(device))
        pred = pred.float()[..., 0].cpu().double()  # (B, T_out, h, w)
        last = seq[:, ds.t_in - 1 : ds.t_in].double()  # (B, 1, h, w)
        move, wanted = pred - last, seq[:, ds.t_in :].double() - last  # (B, T_out, h, w) each
        err = GRID.view(-1, 1, 1, 1, 1) * move - wanted  # (G, B, T_out, h, w)
        sq += err.square().sum(dim=(1, 3, 4))
        ab += err.abs().sum(dim=(1, 3, 4))
        points += move[:, 0].numel()
    model.train(was_training)
    score = loss.combine(sq / points, ab / points)  # (G, T_out)
    weights = GRID[score.argmin(dim=0)].float()  # (T_out,)
    log.info("zero-shot blend for %s from %d prefix windows: weight of the model over the last frame per step %s",
             ds.name, len(starts), [round(float(w), 3) for w in weights])
    return Blend(weights, len(starts))


class BlendedForecast(nn.Module):
    """``model`` with its forecast pulled toward the last input frame by per-step ``weights`` (same interface)."""

    def __init__(self, model: nn.Module, weights: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("weights", weights.clone(), persistent=False)  # (T_out,)

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None, task_id: torch.Tensor,
                return_intermediate: bool = False, target_timestamps: torch.Tensor | None = None) -> Any:
        out = self.model(x, timestamps, task_id, return_intermediate=return_intermediate,
                         target_timestamps=target_timestamps)
        pred, inter = out if return_intermediate else (out, None)  # (B, T_out, H, W, C)
        last = x[:, -1:, ..., None].to(pred.dtype)  # (B, 1, H, W, 1)
        pred = last + self.weights.view(1, -1, 1, 1, 1).to(pred.dtype) * (pred - last)  # (B, T_out, H, W, C)
        return (pred, inter) if return_intermediate else pred
