"""Input embedding of the grid series and the ``no_dix`` ablation module (input projection only).

Every cell value becomes a ``d_model`` vector carrying three kinds of position (attention without them cannot
tell cells, steps or times of day apart):
- spatial: a factorised row/column sinusoid of the cell, computed for the grid at hand (any H x W);
- temporal: a sinusoid of the step index relative to the most recent observation (any T_in; the last step is 0);
- calendar: a weekday embedding and minute-of-day harmonics of the time codes when they are given.
Sinusoids go through learned projections, so no parameter depends on the grid or the window length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError
from vlm4st.models.calendar import CalendarEmbedding, check_codes
from vlm4st.models.layers import expand_patches, relative_steps, sincos_1d, sincos_2d


@dataclass
class STFeatures:
    """Output of a spatiotemporal encoder: the input embedding per cell, branch features on the encoder's token
    grid, and summary vectors (B, d).

    ``x_input`` (B, T, H, W, d) is per cell. The branches (B, T, h, w, d) live on the token grid: the cells
    themselves, or ``patch x patch`` blocks of them, whose pooled input embedding is then ``x_tokens``.
    Absent branches are None. ``summaries`` maps a name (``temporal``, ``spatial``, ``cross`` or ``input``) to a
    per-sample summary vector; PromptForge reads them.
    """

    x_input: torch.Tensor
    x_temporal: torch.Tensor | None = None
    x_spatial: torch.Tensor | None = None
    x_cross: torch.Tensor | None = None
    summaries: dict[str, torch.Tensor] = field(default_factory=dict)
    x_tokens: torch.Tensor | None = None
    patch: int = 1

    def branches(self) -> list[torch.Tensor]:
        """The present branches on the token grid in the fixed order temporal, spatial, cross, input (the
        gate-weight order)."""
        tokens = self.x_input if self.x_tokens is None else self.x_tokens
        ordered = (self.x_temporal, self.x_spatial, self.x_cross, tokens)
        return [b for b in ordered if b is not None]

    def to_cells(self, fused: torch.Tensor) -> torch.Tensor:
        """Fused features on the token grid -> per cell (B, T, H, W, d).

        On the cell grid the fused features are the cells' own. On patches every cell keeps its own embedding
        and adds what fusion changed on its patch, ``x_input + expand(fused - x_tokens)``, so cells of one patch
        share the patch's context but keep their own values and positions.
        """
        if self.x_tokens is None:
            return fused
        H, W = self.x_input.shape[2:4]
        return self.x_input + expand_patches(fused - self.x_tokens, self.patch, H, W)  # (B, T, H, W, d)

    def gates_to_cells(self, gates: torch.Tensor) -> torch.Tensor:
        """Gate weights on the token grid (B, T, h, w, n) -> per cell (B, T, H, W, n): each cell its patch's."""
        H, W = self.x_input.shape[2:4]
        return expand_patches(gates, self.patch, H, W)  # (B, T, H, W, n)


class InputEmbedding(nn.Module):
    """Cell values plus spatial, temporal and calendar position: (B, T, H, W) -> (B, T / p, H, W, d).

    With ``temporal_patch`` p > 1 each token embeds p consecutive steps of a cell (Linear p*C_in -> d) and carries
    the calendar of its last step: p times fewer tokens for every encoder after it, the whole history still seen.
    """

    def __init__(
        self, d_model: int, harmonics: int, in_channels: int = 1, dropout: float = 0.0, temporal_patch: int = 1
    ) -> None:
        super().__init__()
        self.temporal_patch = checks.positive_int(temporal_patch, "model.dix.temporal_patch")
        d_model = checks.positive_int(d_model, "model.dix.d_model")
        if d_model % 4 != 0:
            raise ConfigError(
                f"model.dix.d_model: {d_model} is not divisible by 4; expected a multiple of 4 (2-D sinusoidal "
                "positions)"
            )
        self.d_model = d_model
        self.in_channels = checks.positive_int(in_channels, "model.dix.in_channels")
        self.value = nn.Linear(in_channels * temporal_patch, d_model)
        self.spatial_pos = nn.Linear(d_model, d_model, bias=False)
        self.temporal_pos = nn.Linear(d_model, d_model, bias=False)
        self.calendar = CalendarEmbedding(d_model, harmonics, key="model.dix.harmonics")
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(checks.probability(dropout, "model.dix.dropout"))

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, H, W) (or (B, T, H, W, C_in)); timestamps (B, T, 3) long time codes or None."""
        if x.dim() == 4:
            x = x.unsqueeze(-1)  # (B, T, H, W, 1)
        if x.dim() != 5 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"input: expected (B, T, H, W) with {self.in_channels} channel(s), got shape {tuple(x.shape)}"
            )
        B, T_in, H, W, C = x.shape
        p, d = self.temporal_patch, self.d_model
        if T_in % p:
            raise ValueError(f"model.dix.temporal_patch: {p} does not divide T_in = {T_in}; expected a divisor")
        T = T_in // p
        if timestamps is not None:
            check_codes(timestamps, (B, T_in), "timestamps")
        if p > 1:
            x = x.view(B, T, p, H, W, C).permute(0, 1, 3, 4, 2, 5).reshape(B, T, H, W, p * C)  # (B, T, H, W, p*C)
        h = self.value(x)  # (B, T, H, W, d)
        pos_s = self.spatial_pos(sincos_2d(H, W, d, device=x.device).to(h.dtype))  # (H*W, d)
        pos_t = self.temporal_pos(sincos_1d(relative_steps(T, device=x.device), d).to(h.dtype))  # (T, d)
        h = h + pos_s.view(1, 1, H, W, d) + pos_t.view(1, T, 1, 1, d)  # (B, T, H, W, d)
        if timestamps is not None:
            last = timestamps[:, p - 1 :: p]  # (B, T, 3): the calendar of each token's last step
            cal = self.calendar(last)  # (B, T, d)
            h = h + cal.view(B, T, 1, 1, d)  # (B, T, H, W, d)
        return self.drop(self.norm(h))  # (B, T, H, W, d)


class InputProjection(nn.Module):
    """Ablation ``no_dix``: the input embedding alone; no temporal, spatial or cross encoder is built.

    Its single summary ``input`` is the mean of X_input over time and cells (B, d), so PromptForge still sees
    the sample (configure it with ``modalities: [input]``). With ``summaries=False`` (nothing reads it) the mean
    is not computed, ``STFeatures.summaries`` is empty and ``summary_names`` is empty.
    """

    branch_names: tuple[str, ...] = ("input",)
    SUMMARY_NAMES: tuple[str, ...] = ("input",)

    def __init__(
        self,
        d_model: int,
        harmonics: int,
        in_channels: int = 1,
        dropout: float = 0.0,
        summaries: bool = True,
        temporal_patch: int = 1,
    ) -> None:
        super().__init__()
        self.summaries = checks.flag(summaries, "model.dix.summaries")
        self.summary_names: tuple[str, ...] = self.SUMMARY_NAMES if summaries else ()
        self.embed = InputEmbedding(d_model, harmonics, in_channels, dropout, temporal_patch)
        self.d_model = self.embed.d_model

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to recompute: the embedding is a single cheap layer."""

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor | None = None) -> STFeatures:
        x_input = self.embed(x, timestamps)  # (B, T, H, W, d)
        summaries = {"input": x_input.mean(dim=(1, 2, 3))} if self.summaries else {}  # (B, d)
        return STFeatures(x_input=x_input, summaries=summaries)
