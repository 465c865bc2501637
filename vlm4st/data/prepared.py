"""A dataset ready for the model: normalised frames on the model grid, windows per split, batch gathering.

``prepare`` turns a reader's ``GridData`` into a ``PreparedDataset``: validate, pick few-shot windows, resize
(optional), fit the scaler on the frames the protocol allows, normalise. A zero-shot target's scaler is fitted
on the calibration prefix of its test period, and the test windows whose targets overlap the prefix are not
served (``vlm4st.data.calibration``). Batches are one fancy-index into the frame store:
``frames[starts[:, None] + arange(L)]`` -> (B, L, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlm4st.data.batch import Batch
from vlm4st.data.calibration import calibration_split
from vlm4st.data.codec import FrameCodec
from vlm4st.data.errors import DataValueError
from vlm4st.data.records import GridData, Windows
from vlm4st.data.resize import resize_frames
from vlm4st.data.scaler import MinMaxScaler
from vlm4st.data.timestamps import MINUTES_PER_DAY, check_range, time_codes


@dataclass
class PreparedDataset:
    """One dataset of a ``DataModule``; ``task_id`` is its position in the config's source list."""

    name: str
    task_id: int
    role: str  # "source" or "target"
    source: str
    frames: torch.Tensor  # (F, h, w) float32 in [-1, 1] (training frames), model grid
    stamps: torch.Tensor  # (F, 2) int64 [weekday, slot]
    codes: torch.Tensor  # (F, 3) int64 [weekday, minute of day, interval minutes]: the model's time input
    frame_channel: np.ndarray  # (F,) int64
    native: torch.Tensor | None  # (F, H, W) float32 raw scale; only kept when the model grid differs
    windows: dict[str, Windows]  # per split, after few-shot selection
    available: dict[str, int]  # windows per split as read (before selection)
    scaler: MinMaxScaler
    scaler_fit: str  # which frames the scaler was fitted on
    scaler_frames: np.ndarray  # (K,) int64 indices into ``frames`` the scaler was fitted on
    n_channels: int
    steps_per_day: int
    native_hw: tuple[int, int]
    model_hw: tuple[int, int]
    t_in: int
    t_out: int
    fingerprint: dict[str, str] = field(default_factory=dict)  # content hash of the data file / generating config
    layout: dict[str, Any] = field(default_factory=dict)  # how the windows were cut and selected (see build)

    def batch(self, split: str, positions: np.ndarray, with_real: bool = False) -> Batch:
        """The windows at ``positions`` of ``split``; ``with_real`` adds the raw-scale native-grid targets."""
        w = self.windows[split]
        L = self.t_in + self.t_out
        starts = torch.from_numpy(w.starts[positions])  # (B,)
        idx = starts[:, None] + torch.arange(L)  # (B, L) frame indices
        seq = self.frames[idx]  # (B, L, h, w)
        st = self.codes[idx]  # (B, L, 3)
        channel = torch.from_numpy(w.channel[positions])  # (B,)
        y = seq[:, self.t_in :]  # (B, T_out, h, w)
        y_real = None
        if with_real:  # (B, T_out, H, W) raw-scale targets on the native grid
            if self.native is not None:
                y_real = self.native[idx[:, self.t_in :]]
            else:
                y_real = self.scaler.inverse(y, channel, dtype=torch.float32)
        return Batch(
            x=seq[:, : self.t_in],  # (B, T_in, h, w)
            y=y,
            timestamps=st[:, : self.t_in],  # (B, T_in, 3)
            target_timestamps=st[:, self.t_in :],  # (B, T_out, 3)
            task_id=torch.full((len(positions),), self.task_id, dtype=torch.int64),  # (B,)
            channel=channel,
            index=torch.from_numpy(w.ids[positions]),  # (B,)
            dataset=self.name,
            y_real=y_real,
        )

    def to_real(self, pred: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        """Normalised predictions (B, T_out, h, w[, 1]) -> raw scale on the native grid, float64."""
        if pred.ndim == 5:
            if pred.shape[-1] != 1:
                raise ValueError(f"expected one output channel, got prediction shape {tuple(pred.shape)}")
            pred = pred[..., 0]  # (B, T_out, h, w)
        return self.codec.decode(pred, channel, self.native_hw)  # (B, T_out, H, W)

    @property
    def codec(self) -> FrameCodec:
        """Raw frames to model inputs and back, as this dataset was prepared."""
        return FrameCodec(self.scaler, self.model_hw)

    @property
    def interval_minutes(self) -> int:
        return MINUTES_PER_DAY // self.steps_per_day

    def train_frame_indices(self) -> np.ndarray:
        """Frames covered by the (selected) training windows: the training part of the series."""
        return self.windows["train"].frame_indices(self.t_in + self.t_out)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task_id": self.task_id,
            "role": self.role,
            "source": self.source,
            "native_hw": list(self.native_hw),
            "model_hw": list(self.model_hw),
            "channels": self.n_channels,
            "windows": {s: len(w) for s, w in self.windows.items()},
            "windows_available": dict(self.available),
            "scaler": self.scaler.state_dict(),
            "scaler_fit": self.scaler_fit,
            "interval_minutes": self.interval_minutes,
        }


def validate(data: GridData, min_grid: tuple[int, int], model_hw: tuple[int, int]) -> None:
    """Checks every reader's output gets: finite values, timestamp ranges, grid size."""
    finite = np.isfinite(data.frames)
    if not finite.all():
        bad = int(np.flatnonzero(~finite.reshape(len(finite), -1).all(axis=1))[0])
        raise DataValueError(data.source, f"{int((~finite).sum())} non-finite values (NaN/Inf), first in frame {bad}")
    check_range(data.stamps, data.steps_per_day, data.source, "timestamps")
    if model_hw[0] < min_grid[0] or model_hw[1] < min_grid[1]:
        raise DataValueError(
            data.source,
            f"grid {model_hw[0]}x{model_hw[1]} is smaller than dataset.min_grid "
            f"{min_grid[0]}x{min_grid[1]} (set dataset.resize_to or lower dataset.min_grid)",
        )


def prepare(
    data: GridData,
    task_id: int,
    role: str,
    t_in: int,
    t_out: int,
    model_hw: tuple[int, int],
    train_positions: np.ndarray | None,
    scaler_on: str,
    per_channel: bool,
    calibration_steps: int,
) -> PreparedDataset:
    """Select, resize, fit the scaler and normalise. ``scaler_on``: ``train`` | ``all`` | ``calibration`` (the
    first ``calibration_steps`` frames of the test period, for zero-shot targets; the test windows whose
    targets overlap them are dropped)."""
    windows = dict(data.windows)
    available = {s: len(w) for s, w in windows.items()}
    if train_positions is not None:
        windows["train"] = windows["train"].subset(train_positions)
    raw = data.frames  # (F, H, W)
    frames = resize_frames(raw, model_hw)  # (F, h, w)
    if scaler_on == "train":
        fit_idx, what = windows["train"].frame_indices(t_in + t_out), "training frames"
    elif scaler_on == "calibration":
        fit_idx, scored = calibration_split(
            windows["test"],
            data.stamps,
            t_in,
            data.window_capacity,
            calibration_steps,
            data.steps_per_day,
            data.layout.get("kind") == "series",  # a layout a reader did not declare gets the stored-window check
            data.source,
        )
        windows["test"] = windows["test"].subset(scored)
        what = f"calibration prefix (first {calibration_steps} frames of the test period, never scored)"
    elif scaler_on == "all":
        fit_idx, what = np.arange(len(frames)), "frames of all splits"
    else:
        raise ValueError(f"scaler_on={scaler_on!r}; expected train | all | calibration")
    scaler = MinMaxScaler.fit(
        frames[fit_idx], data.frame_channel[fit_idx], data.n_channels, per_channel, data.source, what
    )
    normed = FrameCodec(scaler, model_hw).scale(frames, data.frame_channel)  # (F, h, w)
    native = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)) if frames is not raw else None
    return PreparedDataset(
        name=data.name,
        task_id=task_id,
        role=role,
        source=data.source,
        frames=torch.from_numpy(normed),
        stamps=torch.from_numpy(np.ascontiguousarray(data.stamps)),
        codes=torch.from_numpy(time_codes(data.stamps, data.steps_per_day)),
        frame_channel=data.frame_channel,
        native=native,
        windows=windows,
        available=available,
        scaler=scaler,
        scaler_fit=what,
        scaler_frames=np.asarray(fit_idx, dtype=np.int64),
        n_channels=data.n_channels,
        steps_per_day=data.steps_per_day,
        native_hw=data.grid,
        model_hw=tuple(int(v) for v in frames.shape[1:]),
        t_in=t_in,
        t_out=t_out,
    )
