"""``route: task`` fits two tasks that need opposite mappings of the same inputs; ``route: input`` cannot.

mtl routed by task selects each task's own rows of Lambda and Omega (a one-hot task slot, the unknown task in the
last row): after training, a task's output depends on its id through its rows alone.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from vlm4st.adapters import LoraAdapter
from vlm4st.models.vlm_module import VLMModule

from .tiny import ROUTED, TEXT, WIDTH, adapter_from_config

STEPS, BATCH = 100, 64


class Fitted:
    """A small text-only VLM module and a shared linear readout trained on y = +f(x) for task 0 and
    y = -f(x) for task 1, f a fixed linear map of the token mean (unit variance)."""

    def __init__(self, kind: str, route: str, steps: int, task_dropout: float = 0.0) -> None:
        torch.manual_seed(0)
        embedding = {} if kind == "mtl" else {"task_dim": 8}  # mtl has no task embedding
        self.adapter: LoraAdapter = adapter_from_config(
            kind, num_tasks=2, route=route, rank=4, alpha=8, num_experts=4, gate_hidden=16, task_dropout=task_dropout,
            **embedding,
        )  # fmt: skip
        text = TEXT | {"num_layers": 2, "fusion_layer": 1}
        self.vlm = VLMModule(None, text, freeze="true", adapter=self.adapter)  # LoRA on a frozen backbone
        self.head = nn.Linear(WIDTH, 1)
        w = torch.randn(WIDTH)
        self.f: Callable[[torch.Tensor], torch.Tensor] = lambda seq: seq.mean(1) @ w / (w.norm() / 2)  # (B,)
        params = [p for _, p in self.adapter.adapter_parameters(self.vlm)] + list(self.head.parameters())
        optimizer = torch.optim.Adam(params, lr=2e-2)
        self.generator = torch.Generator().manual_seed(1)
        self.losses: list[float] = []
        for _ in range(steps):
            sequence = self.inputs(BATCH)  # same input distribution for both tasks
            task_id = torch.randint(0, 2, (BATCH,), generator=self.generator)
            f = self.f(sequence)
            loss = (self.predict(sequence, task_id) - torch.where(task_id == 0, f, -f)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.losses.append(loss.item())
        self.vlm.eval()

    def inputs(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, 4, WIDTH, generator=self.generator)  # (B, L, D)

    def predict(self, sequence: torch.Tensor, task_id: torch.Tensor | None) -> torch.Tensor:
        pooled = self.vlm(None, sequence, task_id=task_id).fused.mean(1)  # (B, D)
        return self.head(pooled).squeeze(-1)  # (B,)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@pytest.mark.parametrize("kind", ROUTED)
def test_task_routing_fits_opposite_tasks_that_input_routing_cannot(kind: str) -> None:
    by_task = sum(Fitted(kind, "task", STEPS).losses[-10:]) / 10
    by_input = sum(Fitted(kind, "input", STEPS).losses[-10:]) / 10
    # Input routing sees the same input distribution for both tasks: its best prediction is 0, loss ~ Var(f) = 1.
    assert by_input > 0.7
    assert by_task < 0.25


def test_mtl_task_id_selects_the_mapping_through_its_own_rows() -> None:
    fitted = Fitted("mtl", "task", steps=60)
    sequence = fitted.inputs(256)
    f = fitted.f(sequence)
    ids = {t: torch.full((256,), t) for t in (0, 1)}
    with torch.no_grad():
        p0, p1 = fitted.predict(sequence, ids[0]), fitted.predict(sequence, ids[1])
        # Same input, other id: the prediction flips sign with the task (p0 - p1 ~ 2f, mean square ~ 4 Var(f)).
        assert _corr(p0, f) > 0.8 and _corr(p1, f) < -0.8
        assert (p0 - p1).square().mean() > 2 * f.square().mean()
        # The id acts through its rows only: swapping the rows of tasks 0 and 1 in every layer swaps the outputs.
        for _, layer in fitted.adapter.layers:
            for table in (layer.lora_task_scale["default"], layer.lora_task_experts["default"]):
                table[[0, 1]] = table[[1, 0]].clone()
        torch.testing.assert_close(fitted.predict(sequence, ids[1]), p0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fitted.predict(sequence, ids[0]), p1, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task_dropout", [0.0, 0.5])
def test_mtl_rows_learn_only_from_their_own_task(task_dropout: float) -> None:
    """A batch of task 0 trains row 0 alone; the unknown row (id 2) learns only from dropped-out ids."""
    fitted = Fitted("mtl", "task", steps=0, task_dropout=task_dropout)
    fitted.vlm.train()
    with torch.no_grad():
        for _, layer in fitted.adapter.layers:  # non-zero B, so the rank scalings receive gradient
            layer.lora_B_experts["default"].normal_(std=0.1)
    sequence = fitted.inputs(32)
    fitted.predict(sequence, torch.zeros(32, dtype=torch.long)).square().mean().backward()
    for _, layer in fitted.adapter.layers:
        for table in (layer.lora_task_scale["default"], layer.lora_task_experts["default"]):
            assert table.shape[0] == 3  # tasks 0 and 1, then the unknown task
            touched = table.grad.abs().sum(dim=1) > 0  # (3,)
            assert touched.tolist() == [True, False, task_dropout > 0]
