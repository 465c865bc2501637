"""Training losses held on the device between host reads.

Reading a loss on the host waits for the device to finish every kernel queued before it; a training step that
reads its own loss therefore stalls the accelerator once per step. The trainer keeps each step's loss parts on
the device in a ``LossWindow`` and reads the window in one transfer every ``trainer.log_every_steps`` steps,
before every checkpoint and at the end of every epoch.

Refusing a non-finite update without reading the loss needs the optimiser's help: optimisers that accept a
``found_inf`` tensor (the fused AdamW / Adam / SGD of PyTorch, the mechanism ``torch.amp.GradScaler`` uses) skip
the update on the device. The window keeps that flag sticky, so after the first non-finite step no later step of
the window updates the weights, and the read finds the first bad step with the weights of the step before it.
Other optimisers fall back to reading each step's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlm4st.models.loss import LossParts
from vlm4st.training import host


@dataclass(frozen=True)
class StepRecord:
    """Where a step of the window was taken: stage step and epoch step (1-based after the step), epoch, dataset."""

    step: int
    epoch_step: int
    epoch: int
    dataset: str


@dataclass(frozen=True)
class WindowRead:
    """The host values of a window: (n, len(LossParts.NAMES)) float64 losses with their steps, and the first bad
    step."""

    values: np.ndarray
    records: list[StepRecord]
    first_bad: int | None  # index into ``records`` of the first non-finite step, or None

    @property
    def finite(self) -> int:
        """How many steps of the window come before the first non-finite one (all of them when none is)."""
        return len(self.records) if self.first_bad is None else self.first_bad

    def last(self) -> dict[str, float]:
        """The loss parts of the window's last finite step (before ``first_bad`` when there is one)."""
        end = self.finite
        return {k: float(v) for k, v in zip(LossParts.NAMES, self.values[end - 1], strict=True)} if end else {}


class LossWindow:
    """The loss parts of the steps since the last read, on the device, and the sticky skip flag."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer = optimizer
        self.device = device
        #: Whether the optimiser skips a flagged update on the device (no host read of the loss per step).
        self.skips_on_device = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        self.parts: list[torch.Tensor] = []
        self.records: list[StepRecord] = []
        self.bad = torch.zeros((), dtype=torch.float32, device=device)  # 1.0 once a step of the window is bad

    def __len__(self) -> int:
        return len(self.parts)

    def guard(self, loss: torch.Tensor) -> None:
        """Before ``optimizer.step()`` on a skipping optimiser: flag this and every later update of the window
        for skipping when ``loss`` is not finite (device ops only)."""
        self.bad = torch.maximum(self.bad, (~torch.isfinite(loss.detach())).to(torch.float32))  # ()
        self.optimizer.found_inf = self.bad  # read by fused optimisers: skip the update, keep the step count

    def add(self, parts: LossParts, record: StepRecord) -> None:
        self.parts.append(parts.stacked())  # (len(LossParts.NAMES),)
        self.records.append(record)

    def read(self) -> WindowRead:
        """One host transfer of every step's parts; empties the window and clears the skip flag."""
        if not self.parts:
            return WindowRead(np.zeros((0, len(LossParts.NAMES))), [], None)
        values = host.to_host(torch.stack(self.parts).double()).numpy()  # (n, len(LossParts.NAMES))
        records = self.records
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        self.parts, self.records = [], []
        self.bad = torch.zeros((), dtype=torch.float32, device=self.device)
        if self.skips_on_device:
            self.optimizer.found_inf = self.bad
        return WindowRead(values, records, int(bad[0]) if len(bad) else None)
