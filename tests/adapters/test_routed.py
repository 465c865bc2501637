"""Routed LoRA (moe, mtl, task_adaptive): the per-sample formulas, per-sample routing, the routing context."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlm4st.adapters import AdapterError, MoELora, MTLLora, TaskAdaptiveLora, TaskEmbeddingLora
from vlm4st.adapters.routing import RoutingContext
from vlm4st.config import ConfigError

from .tiny import (
    NUM_TASKS,
    ROUTED,
    Holder,
    adapter_from_config,
    make_adapter,
    make_inputs,
    make_vlm,
    perturb_adapter,
)

ROUTED_BOTH = [(k, r) for k in ROUTED for r in ("input", "task")]


def _naive_update(
    layer: nn.Module, kind: str, x: torch.Tensor, g: torch.Tensor, task: torch.Tensor | None = None
) -> torch.Tensor:
    """The update for one sample x (L, d_in), loops and all: gate input g (gate_in,), or for mtl routed by
    task, the sample's id ``task`` (tau = its one-hot over num_tasks + 1 slots; no gate)."""
    gate = layer.lora_gate["default"] if task is None else None
    if kind == "moe":
        A, Bm = layer.lora_A_experts["default"], layer.lora_B_experts["default"]
        pi = torch.softmax(gate(g), dim=-1)
        return sum(pi[e] * (x @ A[e].T @ Bm[e].T) for e in range(A.shape[0]))
    if kind == "task_adaptive":
        A0, A = layer.lora_A["default"].weight, layer.lora_A_experts["default"]
        pi = torch.softmax(gate(g), dim=-1)
        A_tau = A0 + sum(pi[e] * A[e] for e in range(A.shape[0]))
        return x @ A_tau.T @ layer.lora_B["default"].weight.T
    A, Bm = layer.lora_A["default"].weight, layer.lora_B_experts["default"]
    scale = layer.lora_task_scale["default"]
    tau = torch.softmax(gate(g), dim=-1) if task is None else F.one_hot(task, scale.shape[0]).float()
    lam = tau @ scale
    pi = torch.softmax(tau @ layer.lora_task_experts["default"], dim=-1)
    B_tau = sum(pi[e] * Bm[e] for e in range(Bm.shape[0]))
    return ((x @ A.T) * lam) @ B_tau.T


@pytest.mark.parametrize(("kind", "route"), ROUTED_BOTH)
def test_batched_layer_matches_the_per_sample_per_expert_formula(kind: str, route: str) -> None:
    embedding = {} if kind == "mtl" else {"task_dim": 4}  # mtl has no task embedding
    adapter = adapter_from_config(
        kind, num_tasks=3, rank=2, alpha=4, num_experts=3, gate_hidden=7, targets="proj", route=route, **embedding
    )
    holder = Holder(adapter)
    adapter.attach(holder)
    perturb_adapter(holder)
    x = torch.randn(4, 3, 6)
    ids = torch.tensor([0, 2, 1, 3])  # 3 = the unknown task
    adapter.route(ids)
    with torch.no_grad():
        got = holder.proj(x)  # (4, 3, 5)
        layer, base = holder.proj, holder.proj.base_layer
        for b in range(4):
            g, task = x[b].mean(0), None
            if route == "task" and kind == "mtl":
                task = ids[b]
            elif route == "task":
                g = torch.cat([g, adapter.task_embedding.weight[ids[b]]])
            expected = base(x[b]) + adapter.scaling * _naive_update(layer, kind, x[b], g, task)
            torch.testing.assert_close(got[b], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("route", ["input", "task"])
def test_mtl_tables_and_gate_follow_the_route(route: str) -> None:
    vlm = make_vlm(make_adapter("mtl", route=route))
    layer = vlm.adapter.layers[0][1]
    rows = NUM_TASKS + 1 if route == "task" else NUM_TASKS  # by task: one slot per id, the unknown slot last
    assert layer.lora_task_scale["default"].shape == (rows, 4)
    assert layer.lora_task_experts["default"].shape == (rows, 3)
    assert ("default" in layer.lora_gate) == (route == "input")
    assert vlm.adapter.task_embedding is None and "task_dim" not in vlm.adapter.describe()


def test_mtl_takes_no_task_dim_and_the_embedding_types_do() -> None:
    """mtl builds no task embedding under either route, so a ``task_dim`` is refused, not silently ignored."""
    with pytest.raises(TypeError, match="task_dim"):
        adapter_from_config("mtl", num_tasks=2, task_dim=8)
    assert not issubclass(MTLLora, TaskEmbeddingLora)
    by_task = adapter_from_config("moe", num_tasks=2, task_dim=8, route="task")
    assert by_task.task_embedding.weight.shape == (3, 8)  # + unknown row
    by_input = adapter_from_config("moe", num_tasks=2, task_dim=8, route="input")  # the gates read no embedding
    assert by_input.task_embedding is None and by_input.describe()["task_dim"] == 8


def test_mtl_by_task_reads_only_the_row_of_the_sample_task() -> None:
    """Changing the Lambda/Omega rows of other tasks leaves a task's output exactly unchanged (one-hot slots)."""
    vlm = make_vlm(make_adapter("mtl")).eval()
    perturb_adapter(vlm)
    image, sequence = make_inputs(batch=2)
    ids = torch.tensor([1, NUM_TASKS])
    with torch.no_grad():
        before = vlm(image, sequence, task_id=ids).fused
        for _, layer in vlm.adapter.layers:
            for table in (layer.lora_task_scale["default"], layer.lora_task_experts["default"]):
                table[[0, 2]] += torch.randn_like(table[[0, 2]])  # rows of tasks 0 and 2 only
        after = vlm(image, sequence, task_id=ids).fused
        moved = vlm(image, sequence, task_id=torch.tensor([0, 2])).fused
    assert torch.equal(after, before)
    assert (moved - before).abs().max() > 1e-2


def test_row_lookup_rejects_ids_outside_the_table() -> None:
    """route() reads no id values (no device sync); the table lookup itself rejects an id outside the table
    (a negative id would otherwise index from the end and silently pick the unknown row)."""
    ctx = RoutingContext()
    table = torch.randn(NUM_TASKS + 1, 2)
    for bad in (-1, NUM_TASKS + 1):
        ctx.set(torch.tensor([0, bad]))
        with pytest.raises(IndexError):
            ctx.rows_for(table, 2, "proj")
    ctx.set(torch.full((3,), NUM_TASKS))
    torch.testing.assert_close(ctx.rows_for(table, 3, "proj"), table[NUM_TASKS].expand(3, -1))


@pytest.mark.parametrize(("kind", "route"), ROUTED_BOTH)
def test_mixed_batch_equals_samples_one_at_a_time(kind: str, route: str) -> None:
    vlm = make_vlm(make_adapter(kind, route=route)).eval()
    perturb_adapter(vlm)
    image, sequence = make_inputs(batch=4)
    task_id = torch.tensor([0, 2, 1, 0])
    with torch.no_grad():
        batched = vlm(image, sequence, task_id=task_id).fused
        for i in range(4):
            single = vlm(image[i : i + 1], sequence[i : i + 1], task_id=task_id[i : i + 1]).fused
            torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kind", "route"), ROUTED_BOTH)
def test_task_ids_change_the_output_only_with_task_routing(kind: str, route: str) -> None:
    vlm = make_vlm(make_adapter(kind, route=route)).eval()
    perturb_adapter(vlm)
    image, sequence = make_inputs(batch=2)
    with torch.no_grad():
        a = vlm(image, sequence, task_id=torch.tensor([0, 0])).fused
        b = vlm(image, sequence, task_id=torch.tensor([1, 1])).fused
    assert torch.equal(a, b) == (route == "input")


@pytest.mark.parametrize("kind", ROUTED)
def test_the_unknown_task_has_its_own_routing(kind: str) -> None:
    """Id NUM_TASKS (the unknown task) routes to its own rows, different from every known task's."""
    vlm = make_vlm(make_adapter(kind)).eval()
    perturb_adapter(vlm)
    image, sequence = make_inputs(batch=3)
    with torch.no_grad():
        unknown = vlm(image, sequence, task_id=torch.full((3,), NUM_TASKS)).fused
        for task in range(NUM_TASKS):
            known = vlm(image, sequence, task_id=torch.full((3,), task)).fused
            assert (known - unknown).abs().max() > 1e-5


def test_unset_routing_context_raises() -> None:
    vlm = make_vlm(make_adapter("moe"))
    with pytest.raises(AdapterError, match="routing context is unset"):
        vlm.text_encoder(encoder_embeds=make_inputs()[1], mode="text")


def test_batch_size_mismatch_raises() -> None:
    vlm = make_vlm(make_adapter("mtl"))
    vlm.adapter.route(torch.tensor([0, 1]))
    with pytest.raises(AdapterError, match="batch size 4 differs from the 2 task ids"):
        vlm.text_encoder(encoder_embeds=make_inputs(batch=4)[1], mode="text")


@pytest.mark.parametrize("task_id", [torch.tensor([0.0, 1.0]), torch.zeros(2, 1, dtype=torch.long)])
def test_malformed_task_ids_raise_on_route(task_id: torch.Tensor) -> None:
    with pytest.raises(AdapterError, match="task_id must be a"):
        make_vlm(make_adapter("moe")).adapter.route(task_id)


@pytest.mark.parametrize("kind", ROUTED)
@pytest.mark.parametrize("task_id", [torch.tensor([0, NUM_TASKS + 1]), torch.tensor([-1, 0])])
def test_out_of_range_task_ids_fail_in_the_lookup(kind: str, task_id: torch.Tensor) -> None:
    """route() checks only metadata (no device sync); the table lookup rejects an id outside [0, NUM_TASKS]."""
    vlm = make_vlm(make_adapter(kind))
    image, sequence = make_inputs(batch=2)
    with pytest.raises(IndexError):
        vlm(image, sequence, task_id=task_id)


def test_task_dropout_replaces_ids_only_in_training() -> None:
    adapter = make_adapter("task_adaptive", task_dropout=0.5)
    vlm = make_vlm(adapter)
    ids = torch.zeros(200, dtype=torch.long)
    vlm.train()
    adapter.route(ids)
    dropped = int((adapter.routing.task_ids == NUM_TASKS).sum())
    assert 60 < dropped < 140 and set(adapter.routing.task_ids.tolist()) == {0, NUM_TASKS}
    vlm.eval()
    adapter.route(ids)
    assert torch.equal(adapter.routing.task_ids, ids)


def test_shared_state_is_saved_once_and_the_context_is_never_saved() -> None:
    vlm = make_vlm(make_adapter("moe"))
    keys = list(vlm.state_dict())
    assert [k for k in keys if "task_embedding" in k] == ["adapter.task_embedding.weight"]
    assert not any("routing" in k for k in keys)


def test_deepcopy_keeps_one_context_per_copy() -> None:
    vlm = make_vlm(make_adapter("moe"))
    twin = copy.deepcopy(vlm)
    layer, twin_layer = vlm.adapter.layers[0][1], twin.adapter.layers[0][1]
    assert layer.routing is vlm.adapter.routing
    assert twin_layer.routing is twin.adapter.routing is not vlm.adapter.routing


@pytest.mark.parametrize("cls", [MoELora, MTLLora, TaskAdaptiveLora])
def test_routed_adapters_cannot_merge(cls: type) -> None:
    vlm = make_vlm(make_adapter(cls.lora_type))
    with pytest.raises(AdapterError, match="cannot be merged"):
        vlm.adapter.merge()
    with pytest.raises(AdapterError, match="cannot be merged"):
        vlm.adapter.layers[0][1].merge()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"route": "dataset"}, "lora_type.route"),
        ({"num_tasks": 0}, "lora_type.num_tasks"),
        ({"num_experts": 0}, "lora_type.num_experts"),
        ({"task_dropout": 1.0}, "lora_type.task_dropout"),
        ({"gate_hidden": 2.5}, "lora_type.gate_hidden"),
        ({"task_dim": 0}, "lora_type.task_dim"),
    ],
)
def test_bad_routing_hyperparameters_raise_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        adapter_from_config("moe", **({"num_tasks": 2} | kwargs))


@pytest.mark.parametrize("kind", ROUTED)
def test_reference_initialisation(kind: str) -> None:
    vlm = make_vlm(make_adapter(kind, rank=8))
    tensors: dict[str, list[torch.Tensor]] = {}
    for name, param in vlm.adapter.adapter_parameters(vlm):
        attr = next((p for p in name.split(".") if p.startswith("lora_")), "shared")
        tensors.setdefault(attr, []).append(param.detach().flatten())
    flat = {attr: torch.cat(values) for attr, values in tensors.items()}
    for attr in ("lora_A", "lora_A_experts"):  # A-type: N(0, 0.01^2)
        if attr in flat:
            assert 0.008 < flat[attr].std().item() < 0.012, attr
    for attr in ("lora_B", "lora_B_experts"):  # B-type: zero, so the adapter starts as the identity
        if attr in flat:
            assert torch.count_nonzero(flat[attr]) == 0, attr
    if kind == "mtl":
        assert torch.all(flat["lora_task_scale"] == 1)  # Lambda = 1
        assert 0.003 < flat["lora_task_experts"].std().item() < 0.03  # Omega ~ 0.01 N(0, 1)
