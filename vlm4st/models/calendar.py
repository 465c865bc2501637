"""Learned weekday and slot-of-day embeddings of timestamps ``[weekday 0..6, slot 0..steps_per_day-1]``."""

from __future__ import annotations

import torch
from torch import nn

from vlm4st.config import ConfigError

DAYS_PER_WEEK = 7


class CalendarEmbedding(nn.Module):
    """stamps (..., 2) long -> (..., dim): weekday embedding + slot-of-day embedding."""

    def __init__(self, dim: int, steps_per_day: int) -> None:
        super().__init__()
        if steps_per_day < 1:
            raise ConfigError(f"dataset.steps_per_day: expected a positive integer, got {steps_per_day}")
        self.steps_per_day = steps_per_day
        self.weekday = nn.Embedding(DAYS_PER_WEEK, dim)
        self.slot = nn.Embedding(steps_per_day, dim)
        for emb in (self.weekday, self.slot):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, stamps: torch.Tensor) -> torch.Tensor:
        return self.weekday(stamps[..., 0].long()) + self.slot(stamps[..., 1].long())  # (..., dim)
