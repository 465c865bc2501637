"""Learned weekday and slot-of-day embeddings of timestamps ``[weekday 0..6, slot 0..steps_per_day-1]``."""

from __future__ import annotations

import torch
from torch import nn

from vlm4st import checks

DAYS_PER_WEEK = 7


class CalendarEmbedding(nn.Module):
    """stamps (..., 2) long -> (..., dim): weekday embedding + slot-of-day embedding.

    ``key``: the config key of ``steps_per_day`` in the module that builds this one (named by a ``ConfigError``).
    """

    def __init__(self, dim: int, steps_per_day: int, *, key: str) -> None:
        super().__init__()
        self.steps_per_day = checks.positive_int(steps_per_day, key)
        self.weekday = nn.Embedding(DAYS_PER_WEEK, dim)
        self.slot = nn.Embedding(steps_per_day, dim)
        for emb in (self.weekday, self.slot):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, stamps: torch.Tensor) -> torch.Tensor:
        return self.weekday(stamps[..., 0].long()) + self.slot(stamps[..., 1].long())  # (..., dim)
