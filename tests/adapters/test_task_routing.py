"""``route: task`` fits two tasks that need opposite mappings of the same inputs; ``route: input`` cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlm4st.models.vlm_module import VLMModule

from .tiny import CLASSES, ROUTED, TEXT, WIDTH

STEPS, BATCH = 100, 64


def _final_loss(kind: str, route: str) -> float:
    """Train adapter + a shared linear readout on y = +f(x) (task 0) / -f(x) (task 1); mean of the last 10 losses."""
    torch.manual_seed(0)
    adapter = CLASSES[kind](num_tasks=2, route=route, rank=4, alpha=8, num_experts=4, task_dim=8, gate_hidden=16)
    text = TEXT | {"num_layers": 2, "fusion_layer": 1}
    vlm = VLMModule(None, text, adapter=adapter)  # sequence path only: 1 text layer, 3 adapted linears
    head = nn.Linear(WIDTH, 1)
    w = torch.randn(WIDTH)
    params = [p for _, p in adapter.adapter_parameters(vlm)] + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-2)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        sequence = torch.randn(BATCH, 4, WIDTH, generator=g)  # same input distribution for both tasks
        task_id = torch.randint(0, 2, (BATCH,), generator=g)
        f = sequence.mean(1) @ w / (w.norm() / 2)  # (B,), unit variance
        y = torch.where(task_id == 0, f, -f)
        pooled = vlm(None, sequence, task_id=task_id)["fused"].mean(1)  # (B, D)
        loss = (head(pooled).squeeze(-1) - y).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[-10:]) / 10


@pytest.mark.parametrize("kind", ROUTED)
def test_task_routing_fits_opposite_tasks_that_input_routing_cannot(kind: str) -> None:
    by_task, by_input = _final_loss(kind, "task"), _final_loss(kind, "input")
    # Input routing sees the same input distribution for both tasks: its best prediction is 0, loss ~ Var(f) = 1.
    assert by_input > 0.7
    assert by_task < 0.25
