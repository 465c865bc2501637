"""AdamW with decoupled weight decay on weight matrices only, and a linear-warmup + cosine schedule per step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into decayed (matrices, kernels) and non-decayed (biases, norms, vectors).

    Embeddings, prototypes and learned tokens with two or more dimensions are decayed like weights; biases and
    normalisation scales (one dimension) are not, which the reference (decay on everything) got wrong.
    """
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any], lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters (``trainer.optimizer`` config)."""
    groups = param_groups(model, float(cfg["weight_decay"]))
    if not any(group["params"] for group in groups):
        raise ValueError("trainer.optimizer: the model has no trainable parameters (is everything frozen?)")
    return torch.optim.AdamW(groups, lr=float(lr if lr is not None else cfg["lr"]), betas=tuple(cfg["betas"]))


def warmup_cosine(total_steps: int, warmup_steps: int, min_lr_ratio: float):
    """LR multiplier: linear warmup from 1/warmup to 1, then cosine down to ``min_lr_ratio`` at ``total_steps``."""
    if total_steps < 1:
        raise ValueError(f"schedule: total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)
        progress = min(progress, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step scheduler for ``build_optimizer``'s optimiser."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, min_lr_ratio))
