"""The batch every room reads: one dataset's windows as typed tensors.

``PreparedDataset.batch`` builds it, the trainer and the evaluators move it with ``Batch.to`` and hand its fields to
the forecaster and the loss. Every batch holds one dataset's windows, so one grid size and one name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


def _moved(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; on CUDA through page-locked host memory, so the copy overlaps queued kernels."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@dataclass(frozen=True)
class Batch:
    """Windows of one dataset: normalised inputs and targets on the model grid, their time codes, task ids.

    ``y_real`` (raw-scale targets on the dataset's native grid) is only set on evaluation batches.
    """

    x: torch.Tensor  # (B, T_in, h, w) float32 in [-1, 1]
    y: torch.Tensor  # (B, T_out, h, w) float32 in [-1, 1]
    timestamps: torch.Tensor  # (B, T_in, 3) int64 [weekday, minute of day, interval minutes]
    target_timestamps: torch.Tensor  # (B, T_out, 3) int64, same codes for the forecast steps
    task_id: torch.Tensor  # (B,) int64, the dataset's position in the config's source list
    channel: torch.Tensor  # (B,) int64, the flow channel each window was cut from
    index: torch.Tensor  # (B,) int64, window ids within the split
    dataset: str
    y_real: torch.Tensor | None = None  # (B, T_out, H, W) float32 raw scale, native grid

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device) -> Batch:
        """The batch with every tensor on ``device`` (the name unchanged)."""
        moved = {
            f.name: _moved(value, device) if isinstance(value, torch.Tensor) else value
            for f in dataclasses.fields(self)
            for value in (getattr(self, f.name),)
        }
        return Batch(**moved)

    def replace(self, **changes: torch.Tensor) -> Batch:
        """A copy with the given fields replaced (the others shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def real_targets(self) -> torch.Tensor:
        """``y_real``, which evaluation needs; an error names the batch when a training batch is passed."""
        if self.y_real is None:
            raise ValueError(f"batch of dataset '{self.dataset}' has no raw-scale targets (y_real); evaluation "
                             "batches come from DataModule.eval_batches")
        return self.y_real
