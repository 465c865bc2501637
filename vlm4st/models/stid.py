"""STID: a strong simple learned peer for VLM4ST (Shao et al., CIKM 2022, "Spatial-Temporal Identity").

Per cell: the input series embedded by a linear map (T_in*C -> e), concatenated with a learned cell embedding
and the time-of-day and day-of-week embeddings of the last input step (each e wide), passed through residual
MLP layers and mapped to the T_out*C forecast. Sizes follow the paper (e = 32, 3 residual layers).

It runs in the same trainer, on the same splits, scalers and metrics as VLM4ST and exposes the same interface.
Cell embeddings are per dataset (task id); an unknown task (zero-shot) has none and reads zeros in their place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError
from vlm4st.models.calendar import DAYS_PER_WEEK, ClockEncoding, check_codes
from vlm4st.models.cell_embedding import CellEmbedding
from vlm4st.models.forecaster import Intermediates, ParamReport


@dataclass(frozen=True, kw_only=True)
class STIDIntermediates(Intermediates):
    """STID's one inside tensor: the per-cell hidden state before the regression layer."""

    hidden: torch.Tensor  # (B, H, W, hidden)


class ResidualLayer(nn.Module):
    """``x + Linear(Dropout(ReLU(Linear(x))))`` (the paper's 1x1-convolution MLP, written per cell)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(torch.relu(self.fc1(x))))  # (..., dim)


class STID(nn.Module):
    """x (B, T_in, H, W) -> (B, T_out, H, W, C); see the module docstring."""

    def __init__(
        self,
        t_in: int,
        t_out: int,
        harmonics: int,
        cell_embedding: CellEmbedding | None,
        in_channels: int = 1,
        out_channels: int = 1,
        embed_dim: int = 32,
        num_layers: int = 3,
        dropout: float = 0.15,
    ) -> None:
        super().__init__()
        self.t_in = t_in = checks.positive_int(t_in, "model.t_in")
        self.t_out = t_out = checks.positive_int(t_out, "model.t_out")
        self.in_channels = in_channels = checks.positive_int(in_channels, "model.in_channels")
        self.out_channels = out_channels = checks.positive_int(out_channels, "model.out_channels")
        embed_dim = checks.positive_int(embed_dim, "model.embed_dim")
        num_layers = checks.non_negative_int(num_layers, "model.num_layers")
        dropout = checks.probability(dropout, "model.dropout")
        if cell_embedding is not None and cell_embedding.dim != embed_dim:
            raise ConfigError(
                f"model.cell_embedding.dim: {cell_embedding.dim}; expected model.embed_dim = {embed_dim}"
            )
        self.series = nn.Linear(t_in * in_channels, embed_dim)
        self.cell_embedding = cell_embedding
        self.time_of_day = ClockEncoding(embed_dim, harmonics, key="model.harmonics")  # any step length
        self.day_of_week = nn.Embedding(DAYS_PER_WEEK, embed_dim)
        nn.init.xavier_uniform_(self.day_of_week.weight)
        parts = 3 + int(cell_embedding is not None)  # series, time of day, day of week (+ cell)
        self.hidden = parts * embed_dim
        self.encoder = nn.Sequential(*(ResidualLayer(self.hidden, dropout) for _ in range(num_layers)))
        self.regression = nn.Linear(self.hidden, t_out * out_channels)

    def forward(
        self,
        x: torch.Tensor,
        timestamps: torch.Tensor | None,
        task_id: torch.Tensor,
        return_intermediate: bool = False,
        target_timestamps: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, STIDIntermediates]:
        """x (B, T_in, H, W) or (B, T_in, H, W, C_in); timestamps (B, T_in, 3) time codes (required: STID embeds
        the last input step's calendar); task_id (B,) long in [0, num_tasks] (num_tasks: the unknown task);
        target_timestamps unused (STID conditions on the last input step only, as published)."""
        if x.dim() == 4:
            x = x.unsqueeze(-1)  # (B, T, H, W, 1)
        if x.dim() != 5 or x.shape[1] != self.t_in or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"input: expected (B, T_in={self.t_in}, H, W) with {self.in_channels} channel(s), got {tuple(x.shape)}"
            )
        if timestamps is None:
            raise ValueError("STID: timestamps (B, T_in, 3) are required (time-of-day and day-of-week embeddings)")
        B, T, H, W, C = x.shape
        check_codes(timestamps, (B, T), "timestamps")
        hist = x.permute(0, 2, 3, 1, 4).reshape(B, H, W, T * C)  # (B, H, W, T*C)
        last = timestamps[:, -1].long()  # (B, 3) [weekday, minute, interval]
        tod = self.time_of_day(last)[:, None, None].expand(B, H, W, -1)  # (B, H, W, e)
        dow = self.day_of_week(last[:, 0])[:, None, None].expand(B, H, W, -1)  # (B, H, W, e)
        parts = [self.series(hist), tod, dow]
        if self.cell_embedding is not None:
            parts.append(self.cell_embedding(task_id, H, W))  # (B, H, W, e), zeros for the unknown task
        h = self.encoder(torch.cat(parts, dim=-1))  # (B, H, W, hidden)
        out = self.regression(h).view(B, H, W, self.t_out, self.out_channels)  # (B, H, W, T_out, C)
        pred = out.permute(0, 3, 1, 2, 4)  # (B, T_out, H, W, C)
        if not return_intermediate:
            return pred
        return pred, STIDIntermediates(hidden=h)


    def describe_adapter(self) -> dict[str, object]:
        """STID has no adapter."""
        return {"type": "none"}

    def get_trainable_parameters(self) -> ParamReport:
        """Parameter counts in all and per module (no adapter, no VLM)."""
        return ParamReport.of_modules(self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to recompute: a few per-cell linear layers."""
