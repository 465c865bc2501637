"""The training and evaluation loss of every forecaster: ``mse_weight * MSE + mae_weight * MAE``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from vlm4st.config import ConfigError


def forecast_loss(
    pred: torch.Tensor, target: torch.Tensor, loss_config: Mapping[str, Any]
) -> tuple[torch.Tensor, dict[str, float]]:
    """pred (B, T_out, H, W, C); target the same or (B, T_out, H, W) when C = 1. Element means."""
    for key in ("mse_weight", "mae_weight"):
        if key not in loss_config:
            raise ConfigError(f"trainer.loss.{key}: missing; expected a non-negative number")
    if target.shape != pred.shape:
        if pred.shape[-1] == 1 and target.shape == pred.shape[:-1]:
            target = target.unsqueeze(-1)  # (B, T_out, H, W, 1)
        else:
            raise ValueError(f"loss: target shape {tuple(target.shape)} does not match {tuple(pred.shape)}")
    mse = F.mse_loss(pred, target)
    mae = F.l1_loss(pred, target)
    loss = float(loss_config["mse_weight"]) * mse + float(loss_config["mae_weight"]) * mae
    return loss, {"total_loss": loss.item(), "mse_loss": mse.item(), "mae_loss": mae.item()}
