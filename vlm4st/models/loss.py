"""The training and evaluation loss of every forecaster: ``mse_weight * MSE + mae_weight * MAE``.

``ForecastLoss`` is the config node ``trainer.loss``. The training step calls it on a batch and gets the loss and
its ``LossParts``; evaluation, which streams squared and absolute error sums over a whole split, calls
``from_sums``: both go through ``combine``, so the weighting is written once. ``TrainingLoss`` is the contract a
replacement ``trainer.loss`` meets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F

from vlm4st import checks
from vlm4st.errors import ConfigError


@dataclass(frozen=True)
class LossParts:
    """The parts of one step's loss, detached, on the device: reading them on the host is the caller's choice.

    ``NAMES`` is the order ``stacked`` uses; the trainer logs each as ``train/<name>``.
    """

    loss: torch.Tensor  # () the weighted total that is back-propagated
    mse: torch.Tensor  # () mean squared error, normalised space
    mae: torch.Tensor  # () mean absolute error, normalised space

    NAMES: ClassVar[tuple[str, ...]] = ("loss", "mse", "mae")

    def stacked(self) -> torch.Tensor:
        """The parts as one float32 tensor, in ``NAMES`` order."""
        return torch.stack([getattr(self, name).detach().float() for name in self.NAMES])  # (len(NAMES),)


class TrainingLoss(Protocol):
    """What the trainer, the evaluator and the zero-shot blend need from ``trainer.loss``."""

    def combine(self, mse: torch.Tensor | float, mae: torch.Tensor | float) -> torch.Tensor | float:
        """The loss from the two error means."""
        ...

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        """The loss to back-propagate and its parts."""
        ...

    def from_sums(self, squared: float, absolute: float, count: float) -> float:
        """The loss over ``count`` points from their squared and absolute error sums."""
        ...


class ForecastLoss:
    """``mse_weight * MSE + mae_weight * MAE`` over every element (normalised space)."""

    def __init__(self, mse_weight: float, mae_weight: float) -> None:
        self.mse_weight = checks.non_negative_number(mse_weight, "trainer.loss.mse_weight")
        self.mae_weight = checks.non_negative_number(mae_weight, "trainer.loss.mae_weight")
        if self.mse_weight == 0 and self.mae_weight == 0:
            raise ConfigError("trainer.loss: mse_weight and mae_weight are both 0; expected at least one > 0")

    def combine(self, mse: torch.Tensor | float, mae: torch.Tensor | float) -> torch.Tensor | float:
        """The weighted sum of the two error means."""
        return self.mse_weight * mse + self.mae_weight * mae

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
        """pred (B, T_out, H, W, C); target the same or (B, T_out, H, W) when C = 1 -> (loss, detached parts)."""
        if target.shape != pred.shape:
            if pred.shape[-1] == 1 and target.shape == pred.shape[:-1]:
                target = target.unsqueeze(-1)  # (B, T_out, H, W, 1)
            else:
                raise ValueError(f"loss: target shape {tuple(target.shape)} does not match {tuple(pred.shape)}")
        mse = F.mse_loss(pred, target)
        mae = F.l1_loss(pred, target)
        loss = self.combine(mse, mae)
        return loss, LossParts(loss=loss.detach(), mse=mse.detach(), mae=mae.detach())

    def from_sums(self, squared: float, absolute: float, count: float) -> float:
        """The loss over ``count`` points whose squared and absolute errors sum to ``squared`` and ``absolute``."""
        n = max(float(count), 1.0)
        return float(self.combine(squared / n, absolute / n))
