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


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """Per-step LR: linear warmup from 1/warmup to 1, then cosine down to ``min_lr_ratio``.

    Progress through the cosine is the fraction of steps done or, with a time budget (``budget_s``), the larger of
    that and the fraction of the budget spent (``set_elapsed``), so a run stopped by its budget still anneals.
    The state (steps, elapsed time) is saved with ``state_dict`` and restored exactly on resume.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int,
        min_lr_ratio: float,
        budget_s: float | None = None,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"schedule: total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = min(max(int(warmup_steps), 0), self.total_steps - 1)
        self.min_lr_ratio = float(min_lr_ratio)
        self.budget_s = float(budget_s) if budget_s else None
        self.elapsed_s = 0.0
        super().__init__(optimizer)

    def set_elapsed(self, seconds: float) -> None:
        """Training time spent so far (counts toward the time budget)."""
        self.elapsed_s = float(seconds)

    def factor(self, step: int) -> float:
        """LR multiplier at optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps - 1)
        if self.budget_s:
            progress = max(progress, self.elapsed_s / self.budget_s)
        progress = min(progress, 1.0)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        scale = self.factor(self.last_epoch)
        return [base * scale for base in self.base_lrs]


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float,
    budget_s: float | None = None,
) -> WarmupCosine:
    """Per-step scheduler for ``build_optimizer``'s optimiser."""
    return WarmupCosine(optimizer, total_steps, warmup_steps, min_lr_ratio, budget_s)
