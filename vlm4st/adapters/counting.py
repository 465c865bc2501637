"""Adapter parameter counts: closed-form per adapted linear, and a per-family report of a built VLM module.

Closed form per adapted Linear(d_in, d_out), rank r, E experts, T tasks, gate hidden width h; a gate with input
width g and o outputs has g*h + h + h*o + o parameters. The gate input is g = d_in, plus task_dim for moe and
task_adaptive with ``route: task``.
- standard:      r*d_in + d_out*r
- moe:           E*r*d_in + E*d_out*r + gate(o=E)
- task_adaptive: r*d_in + E*r*d_in + d_out*r + gate(o=E)
- mtl:           r*d_in + S*r + S*E + E*d_out*r (+ gate(o=T) with ``route: input``), with S task slots:
                 S = T + 1 with ``route: task`` (one row per task id, the unknown task last; rows are selected
                 by id, so no gate), S = T with ``route: input`` (a soft gate over the slots).
plus, once per model for moe and task_adaptive with ``route: task``, the shared task embedding (T + 1) * task_dim
(mtl builds none).
Worked example at paper size (768 -> 768, r 16, E 4, T 14, h 64/64/32, route input): standard 24,576,
moe 147,780, mtl 111,846, task_adaptive 98,468.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vlm4st.adapters.base import adapter_of
from vlm4st.adapters.targets import FAMILIES, family_of
from vlm4st.config import ConfigError


@dataclass(frozen=True)
class ParamCount:
    """Element counts of a set of parameters: all of them, and those with ``requires_grad``."""

    total: int
    trainable: int

    @classmethod
    def of(cls, params: Iterable[nn.Parameter]) -> ParamCount:
        params = list(params)
        return cls(total=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad))


@dataclass(frozen=True)
class AdapterReport:
    """A model's adapter parameters: the adapter type, all and trainable elements, elements per family (vit,
    bert_self, bert_cross, bert_ffn, shared) and adapted linears per family (empty without a VLM)."""

    type: str
    total: int
    trainable: int
    per_family: dict[str, int] = field(default_factory=dict)
    adapted_linears: dict[str, int] = field(default_factory=dict)


#: The counts of no parameters, and the report of a model with no adapter at all (no VLM, or a model without one).
NO_PARAMS = ParamCount(total=0, trainable=0)
NO_ADAPTER = AdapterReport(type="none", total=0, trainable=0)


#: The routing hyperparameters a routed type's count needs (moe and task_adaptive also ``task_dim`` under
#: ``route: task``), as ``describe()`` names them.
ROUTING_KEYS = ("num_experts", "num_tasks", "gate_hidden", "route")
ROUTED_TYPES = ("moe", "mtl", "task_adaptive")
EMBEDDING_TYPES = ("moe", "task_adaptive")


def _required(lora_type: str, routing: Mapping[str, Any], key: str) -> Any:
    if routing.get(key) is None:
        raise ConfigError(f"lora_type: a {lora_type} adapter's count needs '{key}'; got only {sorted(routing)}")
    return routing[key]


def lora_linear_param_count(lora_type: str, d_in: int, d_out: int, *, rank: int, **routing: Any) -> int:
    """Adapter parameters on one adapted Linear(d_in, d_out) (excluding the shared task embedding).

    ``routing``: for the routed types, ``num_experts``, ``num_tasks``, ``gate_hidden``, ``route`` and (moe and
    task_adaptive with ``route: task``, their gate input width) ``task_dim``; a missing one is a ``ConfigError``.
    """
    known = ("none", "standard", *ROUTED_TYPES)
    if lora_type not in known:
        raise ConfigError(f"lora_type: unknown type {lora_type!r}; expected one of {sorted(known)}")
    r = rank
    if lora_type == "none":
        return 0
    if lora_type == "standard":
        return r * d_in + d_out * r
    E, T, h, route = (_required(lora_type, routing, key) for key in ROUTING_KEYS)
    by_task = route == "task"

    def gate(width: int, out: int) -> int:
        return width * h + h + h * out + out

    if lora_type == "mtl":  # its gate (route: input only) reads the token mean alone
        slots = T + 1 if by_task else T  # rows of Lambda and Omega
        return r * d_in + slots * r + slots * E + E * d_out * r + (0 if by_task else gate(d_in, T))
    g = d_in + (_required(lora_type, routing, "task_dim") if by_task else 0)  # gate input width
    if lora_type == "moe":
        return E * r * d_in + E * d_out * r + gate(g, E)
    return r * d_in + E * r * d_in + d_out * r + gate(g, E)  # task_adaptive


def shared_param_count(lora_type: str, **routing: Any) -> int:
    """Parameters kept once on the adapter module: the task embedding of moe and task_adaptive with ``route: task``
    (``routing`` as for ``lora_linear_param_count``). mtl selects per-task rows in every layer instead and has no
    shared tensor."""
    if lora_type not in EMBEDDING_TYPES or _required(lora_type, routing, "route") != "task":
        return 0
    return (_required(lora_type, routing, "num_tasks") + 1) * _required(lora_type, routing, "task_dim")


def expected_parameter_count(description: Mapping[str, Any], linear_shapes: Iterable[tuple[int, int]]) -> int:
    """Closed-form adapter parameter count for an adapter ``describe()`` and the (d_in, d_out) it adapts."""
    kind = str(description["type"])
    if kind == "none":
        return 0
    routing = {k: description[k] for k in (*ROUTING_KEYS, "task_dim") if k in description}
    rank = int(description["rank"])
    per_linear = sum(lora_linear_param_count(kind, d_in, d_out, rank=rank, **routing) for d_in, d_out in linear_shapes)
    return per_linear + shared_param_count(kind, **routing)


def parameter_report(vlm: nn.Module) -> AdapterReport:
    """Adapter parameters of ``vlm`` in all and per family (vit, bert_self, bert_cross, bert_ffn, shared).

    Also counts the adapted linears per family. Works for every ``Adapter`` (``none`` reports zeros).
    """
    adapter = adapter_of(vlm)
    per_family = dict.fromkeys(FAMILIES, 0)
    trainable = 0
    for name, param in adapter.adapter_parameters(vlm):
        per_family[family_of(name)] += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    linears = dict.fromkeys(FAMILIES[:-1], 0)
    for path, _ in getattr(adapter, "layers", []):
        linears[family_of(path + ".")] += 1
    return AdapterReport(type=str(adapter.describe()["type"]), total=sum(per_family.values()), trainable=trainable,
                         per_family=per_family, adapted_linears=linears)
