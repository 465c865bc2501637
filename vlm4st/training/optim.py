"""The optimiser's parameter groups (decay on weight matrices only) and the per-step warmup + cosine schedule.

Both are built from config partials (``trainer.optimizer``, ``trainer.schedule``) by the trainer."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters split into decayed (matrices, kernels) and non-decayed (biases, norms, vectors).

    Embeddings, prototypes and learned tokens with two or more dimensions are decayed like weights, at the
    optimiser's ``weight_decay``; biases and normalisation scales (one dimension) get none: decaying them pulls
    the normalisation gains towards zero for no regularising benefit.
    """
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module, factory: Callable[..., torch.optim.Optimizer], lr: float
) -> torch.optim.Optimizer:
    """The ``trainer.optimizer`` partial applied to the model's parameter groups at learning rate ``lr``."""
    groups = param_groups(model)
    if not any(group["params"] for group in groups):
        raise ConfigError("trainer.optimizer: the model has no trainable parameters (is everything frozen?)")
    return factory(groups, lr=float(lr))


def build_schedule(
    factory: Callable[..., Any], optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int,
    budget_s: float | None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The ``trainer.schedule`` partial applied to the stage: it must take the optimiser, the stage's total steps,
    its steps per epoch and the time budget, and follow the time spent (``set_elapsed``), as ``WarmupCosine`` does.

    A torch schedule (``torch.optim.lr_scheduler.StepLR`` ...) is a registered target, but it knows neither the
    stage length nor the budget, so it fits only inside a schedule class of that form.
    """
    kwargs = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "budget_s": budget_s}
    try:
        inspect.signature(factory).bind(optimizer, **kwargs)
    except TypeError as err:
        raise ConfigError(f"trainer.schedule: {err}; expected a schedule taking (optimizer, total_steps, "
                          "steps_per_epoch, budget_s), such as vlm4st.training.optim.WarmupCosine") from None
    scheduler = factory(optimizer, **kwargs)
    if not callable(getattr(scheduler, "set_elapsed", None)):
        raise ConfigError(f"trainer.schedule: {type(scheduler).__name__} has no set_elapsed(seconds); expected a "
                          "schedule that follows the training time, such as vlm4st.training.optim.WarmupCosine")
    return scheduler


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
        steps_per_epoch: int,
        warmup_epochs: float,
        min_lr_ratio: float,
        budget_s: float | None = None,
    ) -> None:
        if total_steps < 1:
            raise ConfigError(f"trainer.schedule: the stage has {total_steps} optimiser steps; expected at least 1 "
                              "(trainer.epochs, trainer.fewshot.epochs and trainer.max_steps set the stage length)")
        checks.non_negative_number(warmup_epochs, "trainer.schedule.warmup_epochs")
        if checks.non_negative_number(min_lr_ratio, "trainer.schedule.min_lr_ratio") > 1:
            raise ConfigError(f"trainer.schedule.min_lr_ratio: expected a number in [0, 1], got {min_lr_ratio!r}")
        self.total_steps = int(total_steps)
        warmup_steps = round(float(warmup_epochs) * int(steps_per_epoch))
        self.warmup_steps = min(max(warmup_steps, 0), self.total_steps - 1)
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

