"""Learned per-cell identity embeddings, one table per dataset (task id), next to the positional codes.

A learned vector per grid cell is the strongest single ingredient of simple spatiotemporal forecasters: it lets
a model learn each cell's level and rhythm without inferring them from a short input window. Grids differ per
dataset, so each task owns a ``max_grid`` table and a dataset of size H x W reads its top-left H x W block.

The unknown task (id ``num_tasks``) has no table: its row is held at zero, so a dataset the
model never trained on (zero-shot) is decoded from the positional codes alone, never from another city's cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vlm4st import checks
from vlm4st.errors import ConfigError


def _key(arg: str) -> str:
    """The config key of ``arg``: the node sits under the head of VLM4ST and at the top of STID's model."""
    return f"model.head.cell_embedding.{arg} (model.cell_embedding.{arg} with model=stid)"


class CellEmbedding(nn.Module):
    """task_id (B,) long in [0, num_tasks] (num_tasks = unknown) -> (B, H, W, dim), zeros for the unknown task."""

    def __init__(self, num_tasks: int, max_grid: Sequence[int], dim: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks = checks.positive_int(num_tasks, _key("num_tasks"))
        grid_ok = isinstance(max_grid, Sequence) and len(max_grid) == 2
        if not grid_ok or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in max_grid):
            shown = list(max_grid) if isinstance(max_grid, Sequence) else max_grid
            raise ConfigError(f"{_key('max_grid')}: expected [H, W] of positive integers, got {shown!r}")
        self.max_grid = (int(max_grid[0]), int(max_grid[1]))
        self.dim = dim = checks.positive_int(dim, _key("dim"))
        self.table = nn.Parameter(torch.randn(num_tasks + 1, *self.max_grid, dim) * 0.02)  # (n+1, Hm, Wm, dim)
        known = torch.ones(num_tasks + 1)
        known[num_tasks] = 0.0  # the unknown task reads zeros
        self.register_buffer("known", known, persistent=False)

    def forward(self, task_id: torch.Tensor, H: int, W: int) -> torch.Tensor:
        max_h, max_w = self.max_grid
        if max_h < H or max_w < W:
            raise ConfigError(
                f"{_key('max_grid')}: {list(self.max_grid)} is smaller than the grid {H} x {W}; "
                f"expected at least [{H}, {W}]"
            )
        rows = self.table[task_id, :H, :W]  # (B, H, W, dim)
        return rows * self.known[task_id].to(rows.dtype)[:, None, None, None]  # (B, H, W, dim)
