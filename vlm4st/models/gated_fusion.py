"""AdaptiveGatedFusion: per-cell softmax gates over the DiX branches (module 3 of 6).

The gate is content-based, so the number of branches comes from the inputs (no config key sizes it and forward fixes
no branch count, so it fits any set of DiX branches). For every (b, t, cell), with n branches Z_i (each DiX branch
ends in a LayerNorm, so they arrive on one scale):
    q = W_q mean_i(Z_i),  k_i = W_k Z_i  (width ``gate_dim``),  g = softmax_i(q . k_i / sqrt(gate_dim))
    X_fused = LN(M + Dropout(GELU(W_o M))),  M = sum_i g_i Z_i.
q . k_i is computed as Z_i . (W_k^T q), so no key tensor per branch is materialised, and the branches are never
stacked: the gate is memory-bound on CPU, and every pass over the (B, T, H, W, d) branches counts. Cost: one
d x gate_dim projection and one d x d output layer per cell (an MLP gate over the concatenated branches,
n*d -> 2d -> n, plus a d x d projection per branch, would cost several times more).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlm4st import checks


class AdaptiveGatedFusion(nn.Module):
    """Branches [(B, T, H, W, d)] * n -> X_fused (B, T, H, W, d), gate weights (B, T, H, W, n)."""

    def __init__(self, d_model: int, gate_dim: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        d_model = checks.positive_int(d_model, "model.fusion.d_model")
        self.gate_dim = gate_dim = checks.positive_int(gate_dim, "model.fusion.gate_dim")
        self.query = nn.Linear(d_model, gate_dim)
        self.key = nn.Linear(d_model, gate_dim, bias=False)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(checks.probability(dropout, "model.fusion.dropout"))
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, branches: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(branches) < 2:
            raise ValueError(f"AdaptiveGatedFusion needs at least two branches, got {len(branches)}")
        shapes = {tuple(b.shape) for b in branches}
        if len(shapes) != 1:
            raise ValueError(f"AdaptiveGatedFusion: branch shapes differ: {sorted(shapes)}")
        mean = sum(branches) / len(branches)  # (B, T, H, W, d)
        q = self.query(mean)  # (B, T, H, W, g)
        u = q @ self.key.weight / math.sqrt(self.gate_dim)  # (B, T, H, W, d): W_k^T q, scaled
        logits = torch.stack([(b * u).sum(dim=-1) for b in branches], dim=-1)  # (B, T, H, W, n)
        gates = torch.softmax(logits, dim=-1)  # (B, T, H, W, n)
        mixed = sum(gates[..., i : i + 1] * b for i, b in enumerate(branches))  # (B, T, H, W, d)
        fused = self.norm_out(mixed + self.drop(F.gelu(self.out(mixed))))  # (B, T, H, W, d)
        return fused, gates
