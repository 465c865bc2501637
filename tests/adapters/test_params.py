"""Parameter counts: the paper-size per-linear numbers, closed form versus built, per family, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlm4st.adapters import expected_parameter_count, lora_linear_param_count, parameter_report

from .tiny import (
    N_CROSS,
    N_SELF,
    N_VIT,
    NUM_TASKS,
    ROUTED,
    TYPES,
    WIDTH,
    Holder,
    adapter_from_config,
    make_adapter,
    make_inputs,
    make_vlm,
    perturb_adapter,
)

#: Paper-size hyperparameters (r 16, alpha 32, E 4, T 14, gate 64 / 64 / 32, route input) on a 768 -> 768 linear.
PAPER_SIZE = {"standard": 24_576, "moe": 147_780, "mtl": 111_846, "task_adaptive": 98_468}
GATE = {"moe": 64, "mtl": 64, "task_adaptive": 32}


@pytest.mark.parametrize("kind", TYPES)
def test_paper_size_counts_per_768_linear(kind: str) -> None:
    kw = {} if kind == "standard" else {"num_tasks": 14, "num_experts": 4, "gate_hidden": GATE[kind], "route": "input"}
    adapter = adapter_from_config(kind, rank=16, alpha=32, targets="proj", **kw)
    holder = Holder(adapter)
    holder.proj = nn.Linear(768, 768)
    adapter.attach(holder)
    built = sum(p.numel() for _, p in adapter.adapter_parameters(holder))
    closed = lora_linear_param_count(kind, 768, 768, rank=16, **kw)
    assert built == closed == PAPER_SIZE[kind]


@pytest.mark.parametrize(
    ("kind", "route"), [("standard", "input")] + [(k, r) for k in ROUTED for r in ("input", "task")]
)
def test_trainable_counts_equal_the_closed_form_on_a_tiny_vlm(kind: str, route: str) -> None:
    vlm = make_vlm(make_adapter(kind, route=route))
    description = vlm.adapter.describe()
    n_linears = N_VIT + N_SELF + N_CROSS
    expected = expected_parameter_count(description, [(WIDTH, WIDTH)] * n_linears)
    trainable = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    assert trainable == expected

    # moe and task_adaptive with route task keep one task embedding (NUM_TASKS + 1, task_dim 8); mtl has none
    embeds = kind in ("moe", "task_adaptive") and route == "task"
    per_linear = expected_parameter_count({**description, "route": route}, [(WIDTH, WIDTH)]) - (
        (NUM_TASKS + 1) * 8 if embeds else 0
    )
    report = parameter_report(vlm)
    assert report.total == report.trainable == expected
    assert report.per_family == {
        "vit": N_VIT * per_linear,
        "bert_self": N_SELF * per_linear,
        "bert_cross": N_CROSS * per_linear,
        "bert_ffn": 0,
        "shared": expected - n_linears * per_linear,
    }
    assert report.adapted_linears == {"vit": N_VIT, "bert_self": N_SELF, "bert_cross": N_CROSS, "bert_ffn": 0}


@pytest.mark.parametrize(
    ("kind", "route"), [("standard", "input")] + [(k, "task") for k in ROUTED] + [("moe", "input")]
)
def test_frozen_backbone_gets_no_gradient_and_every_adapter_parameter_does(kind: str, route: str) -> None:
    vlm = make_vlm(make_adapter(kind, route=route))
    # A backbone module whose name contains "lora" stays frozen: adapter parameters are found structurally, not by
    # a name substring.
    vlm.text_encoder.lora_decoy = nn.Linear(2, 2)
    vlm.freeze_backbone()
    perturb_adapter(vlm)
    image, sequence = make_inputs(batch=4)
    out = vlm(image, sequence, task_id=torch.tensor([0, 1, 2, 3]))
    (out.fused.square().mean() + out.visual.square().mean()).backward()

    adapter_names = {n for n, _ in vlm.adapter.adapter_parameters(vlm)}
    assert "text_encoder.lora_decoy.weight" not in adapter_names
    if route == "task":  # mtl selects per-task rows by id and builds no task embedding
        assert ("adapter.task_embedding.weight" in adapter_names) == (kind != "mtl")
    for name, param in vlm.named_parameters():
        if name in adapter_names:
            assert param.requires_grad and param.grad is not None, name
            assert torch.count_nonzero(param.grad) > 0, name
        else:
            assert not param.requires_grad and param.grad is None, name
