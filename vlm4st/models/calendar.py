"""Calendar encodings of time codes ``[weekday 0..6, minute of day 0..1439, interval minutes]`` (batches carry them).

Minute of day enters as periodic features, ``sin`` and ``cos`` of ``2 pi k minute / 1440`` for harmonics
``k = 1..K``, mapped by a linear layer: the same clock time gets the same encoding in a 15-, 30- or 60-minute city,
and one set of weights serves them all. With ``K = 24`` the features span every function of the 48 half-hour slots,
so on a 30-minute city the encoding can express whatever a learned slot table could. The interval enters as
``log2(interval / 30)`` through a zero-initialised projection: it is 0 for 30-minute data, and the model only learns
what a different step length means when it trains on more than one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError

DAYS_PER_WEEK = 7
MINUTES_PER_DAY = 1440
#: Width of a time code: weekday, minute of day, minutes per step.
CODE_WIDTH = 3
#: The step length whose interval feature is 0 (the common 48-slot datasets).
REFERENCE_INTERVAL = 30.0


class ClockEncoding(nn.Module):
    """codes (..., 3) -> (..., dim): minute-of-day harmonics plus the step length, each through a linear map.

    ``key``: the config key of ``harmonics`` in the module that builds this one (named by a ``ConfigError``).
    """

    def __init__(self, dim: int, harmonics: int, *, key: str) -> None:
        super().__init__()
        self.harmonics = checks.positive_int(harmonics, key)
        if self.harmonics > MINUTES_PER_DAY // 2:
            raise ConfigError(f"{key}: {harmonics} harmonics; expected at most {MINUTES_PER_DAY // 2}")
        freq = torch.arange(1, self.harmonics + 1, dtype=torch.float32) * (2 * math.pi / MINUTES_PER_DAY)
        self.register_buffer("freq", freq, persistent=False)  # (K,)
        self.minute = nn.Linear(2 * self.harmonics, dim)
        # features have unit-order size: scale so the encoding starts as small as a 0.02-std embedding
        nn.init.normal_(self.minute.weight, std=0.02 / math.sqrt(self.harmonics))
        nn.init.zeros_(self.minute.bias)
        self.interval = nn.Linear(1, dim, bias=False)
        nn.init.zeros_(self.interval.weight)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        angle = codes[..., 1:2].float() * self.freq  # (..., K)
        periodic = torch.cat([angle.sin(), angle.cos()], dim=-1)  # (..., 2K)
        step = torch.log2(codes[..., 2:3].float() / REFERENCE_INTERVAL)  # (..., 1)
        return self.minute(periodic) + self.interval(step)  # (..., dim)


class CalendarEmbedding(nn.Module):
    """codes (..., 3) long -> (..., dim): a learned weekday embedding plus the ``ClockEncoding``."""

    def __init__(self, dim: int, harmonics: int, *, key: str) -> None:
        super().__init__()
        self.weekday = nn.Embedding(DAYS_PER_WEEK, dim)
        nn.init.normal_(self.weekday.weight, std=0.02)
        self.clock = ClockEncoding(dim, harmonics, key=key)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.weekday(codes[..., 0].long()) + self.clock(codes)  # (..., dim)


def check_codes(codes: torch.Tensor, leading: tuple[int, ...], what: str) -> None:
    """Shape and dtype of a time-code tensor (values are checked where stamps enter: the readers and predict;
    reading them here would synchronise the host with the device on every forward pass)."""
    if tuple(codes.shape) != (*leading, CODE_WIDTH):
        raise ValueError(
            f"{what}: expected time codes of shape {(*leading, CODE_WIDTH)} [weekday, minute of day, interval "
            f"minutes], got {tuple(codes.shape)}"
        )
    if codes.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{what}: expected an integer (long) tensor, got {codes.dtype}")
