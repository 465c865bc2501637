"""Routed LoRA layers (moe, mtl, task_adaptive) as PEFT custom ``LoraLayer``s.

PEFT builds one per targeted ``nn.Linear`` once the class is registered with
``LoraConfig._register_custom_module({nn.Linear: cls})``; it injects, freezes and saves them like its own.
PEFT only passes LoRA keyword arguments, so ``bind_layer_cls`` makes a subclass that carries the rest
(``RoutedSpec``) and the shared ``RoutingContext`` as class attributes.

Per layer, with x (B, L, d_in), s = alpha / r, E experts, T = num_tasks and a gate MLP G: g -> hidden -> out:
- gate input g = mean_L(x) (``route: input``), or [mean_L(x), e_t] with e_t the sample's task embedding, shared
  by all layers (``route: task``, moe and task_adaptive). The token mean includes padding tokens (the gate sees
  the sequence as the layer does); for cross-attention K/V, x is the image tokens.
- moe:           pi = softmax(G(g)) (B, E);  delta = sum_e pi_e B_e A_e x
- task_adaptive: pi = softmax(G(g)) (B, E);  delta = B (A_0 + sum_e pi_e A_e) x
- mtl:           task slots tau, lam = tau Lambda (B, r), pi = softmax(tau Omega) (B, E),
                 delta = (sum_e pi_e B_e) (lam * A x). With ``route: task`` tau = one_hot(t) over T + 1 rows
                 (the last row is the unknown task, id T), so each task selects its own row Lambda[t] and
                 Omega[t] and there is no gate; with ``route: input`` tau = softmax(G(mean_L(x))) over T slots.
Experts run in one matmul: x A^T against all experts stacked to (E*r, d_in), the gate scales the (E*r) columns,
and one matmul with B stacked to (d_out, E*r) sums over experts. No loop over experts or samples.
The update depends on the input or the task, so these layers cannot be merged into W.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from vlm4st.adapters.errors import AdapterError
from vlm4st.adapters.routing import RoutingContext

ROUTES = ("input", "task")


@dataclass(frozen=True)
class RoutedSpec:
    """What PEFT does not pass to a custom layer: experts, routing, gate and initialisation."""

    num_experts: int
    num_tasks: int
    gate_hidden: int
    route: str  # "input" or "task"
    task_dim: int  # width of the task embedding the gates read with route "task"; 0: none (mtl)
    init: str  # "reference" or "peft"

    def gate_in(self, d_in: int) -> int:
        """Width of the gate input: the token mean, plus the task embedding when routing by task."""
        return d_in + (self.task_dim if self.route == "task" else 0)


def _init_a(tensor: torch.Tensor, init: str) -> None:
    """A-type init: N(0, 0.01^2) (``init: reference``) or PEFT's kaiming-uniform, per (r, d_in) matrix."""
    if init == "reference":
        nn.init.normal_(tensor, mean=0.0, std=0.01)
    else:
        for matrix in tensor.view(-1, *tensor.shape[-2:]):
            nn.init.kaiming_uniform_(matrix, a=math.sqrt(5))


def _gate(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class RoutedLoraLinear(nn.Module, LoraLayer):
    """Base of the routed layers: PEFT plumbing, gate input, batched forward; subclasses add the math."""

    other_param_names = ("r", "lora_alpha", "scaling", "lora_dropout")
    #: Adapter tensors held as raw parameters (the rest of ``adapter_layer_names`` are ModuleDicts).
    parameter_dicts: ClassVar[tuple[str, ...]] = ()
    spec: ClassVar[RoutedSpec]
    routing_context: ClassVar[RoutingContext]

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: Any = None,
        r: int = 0,
        lora_alpha: float = 1,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        LoraLayer.__init__(self, base_layer)
        # Instance attribute: a deepcopy of the model keeps one shared context per copy.
        self.routing = type(self).routing_context
        self.target_name = str(kwargs.get("target_name", type(self).__name__))
        self.lora_gate = nn.ModuleDict()  # LoraLayer already made lora_A / lora_B ModuleDicts
        for attr in self.parameter_dicts:
            setattr(self, attr, nn.ParameterDict())
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha, config)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config: Any, **kwargs: Any) -> None:
        if r <= 0:
            raise AdapterError(f"routed LoRA layer '{self.target_name}': rank must be positive, got {r}")
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / r
        p = float(getattr(config, "lora_dropout", 0.0) or 0.0)
        self.lora_dropout[adapter_name] = nn.Dropout(p) if p > 0 else nn.Identity()
        self.create_adapter(adapter_name, r)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    @abstractmethod
    def create_adapter(self, name: str, r: int) -> None:
        """Create and initialise the adapter tensors of ``name``."""

    @abstractmethod
    def adapter_dtype(self, name: str) -> torch.dtype:
        """The dtype the adapter ``name`` computes in (its tensors' dtype)."""

    @abstractmethod
    def delta(self, name: str, x: torch.Tensor, x_route: torch.Tensor) -> torch.Tensor:
        """The LoRA update (B, L, d_out) for x (B, L, d_in); x_route is x before dropout, which gates read."""

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise AdapterError(
            f"routed LoRA layer '{self.target_name}' cannot be merged: its update depends on the input or task"
        )

    def unmerge(self) -> None:
        raise AdapterError(f"routed LoRA layer '{self.target_name}' is never merged")

    def gate_input(self, x: torch.Tensor) -> torch.Tensor:
        """g = token mean of x (B, d_in), with the shared task embedding appended when routing by task."""
        g = x.mean(dim=1)  # (B, L, d_in) -> (B, d_in)
        if self.spec.route == "task":
            emb = self.routing.embedding_for(x.shape[0], self.target_name)  # (B, task_dim)
            g = torch.cat([g, emb.to(g.dtype)], dim=-1)  # (B, d_in + task_dim)
        return g

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)  # (..., d_out)
        if self.disable_adapters or self.merged:
            return result
        batch = x.shape[0]
        x3 = x.reshape(batch, -1, x.shape[-1])  # (B, ..., d_in) -> (B, L, d_in); (B, d_in) -> (B, 1, d_in)
        for name in self.active_adapters:
            if name not in self.r:
                continue
            xc = x3.to(self.adapter_dtype(name))
            delta = self.delta(name, self.lora_dropout[name](xc), xc)  # (B, L, d_out)
            delta = delta.reshape(*result.shape[:-1], delta.shape[-1])  # (..., d_out)
            result = result + (self.scaling[name] * delta).to(result.dtype)
        return result


class MoELoraLinear(RoutedLoraLinear):
    """moe: E pairs (A_e, B_e) mixed per sample by gate weights pi = softmax(G(g))."""

    adapter_layer_names = ("lora_A_experts", "lora_B_experts", "lora_gate")
    parameter_dicts = ("lora_A_experts", "lora_B_experts")

    def create_adapter(self, name: str, r: int) -> None:
        E = self.spec.num_experts
        self.lora_A_experts[name] = nn.Parameter(torch.empty(E, r, self.in_features))  # (E, r, d_in)
        self.lora_B_experts[name] = nn.Parameter(torch.zeros(E, self.out_features, r))  # (E, d_out, r)
        self.lora_gate[name] = _gate(self.spec.gate_in(self.in_features), self.spec.gate_hidden, E)
        with torch.no_grad():
            _init_a(self.lora_A_experts[name], self.spec.init)

    def adapter_dtype(self, name: str) -> torch.dtype:
        return self.lora_A_experts[name].dtype

    def delta(self, name: str, x: torch.Tensor, x_route: torch.Tensor) -> torch.Tensor:
        A, Bm = self.lora_A_experts[name], self.lora_B_experts[name]
        E, r, d_in = A.shape
        B, L, _ = x.shape
        pi = torch.softmax(self.lora_gate[name](self.gate_input(x_route)), dim=-1)  # (B, E)
        xa = (x @ A.reshape(E * r, d_in).T).view(B, L, E, r)  # (B, L, E, r)
        xa = xa * pi[:, None, :, None]  # (B, L, E, r)
        b_flat = Bm.permute(1, 0, 2).reshape(Bm.shape[1], E * r)  # (d_out, E*r)
        return xa.reshape(B, L, E * r) @ b_flat.T  # (B, L, d_out)


class TaskAdaptiveLoraLinear(RoutedLoraLinear):
    """task_adaptive: per-sample down-projection A_0 + sum_e pi_e A_e, one shared B."""

    adapter_layer_names = ("lora_A", "lora_A_experts", "lora_B", "lora_gate")
    parameter_dicts = ("lora_A_experts",)

    def create_adapter(self, name: str, r: int) -> None:
        E = self.spec.num_experts
        self.lora_A[name] = nn.Linear(self.in_features, r, bias=False)  # A_0 (r, d_in)
        self.lora_A_experts[name] = nn.Parameter(torch.empty(E, r, self.in_features))  # (E, r, d_in)
        self.lora_B[name] = nn.Linear(r, self.out_features, bias=False)  # (d_out, r)
        self.lora_gate[name] = _gate(self.spec.gate_in(self.in_features), self.spec.gate_hidden, E)
        with torch.no_grad():
            _init_a(self.lora_A[name].weight, self.spec.init)
            _init_a(self.lora_A_experts[name], self.spec.init)
            nn.init.zeros_(self.lora_B[name].weight)

    def adapter_dtype(self, name: str) -> torch.dtype:
        return self.lora_A[name].weight.dtype

    def delta(self, name: str, x: torch.Tensor, x_route: torch.Tensor) -> torch.Tensor:
        A = self.lora_A_experts[name]
        E, r, d_in = A.shape
        B, L, _ = x.shape
        pi = torch.softmax(self.lora_gate[name](self.gate_input(x_route)), dim=-1)  # (B, E)
        xe = (x @ A.reshape(E * r, d_in).T).view(B, L, E, r)  # (B, L, E, r)
        xa = self.lora_A[name](x) + (xe * pi[:, None, :, None]).sum(dim=2)  # (B, L, r)
        return self.lora_B[name](xa)  # (B, L, d_out)


class MTLLoraLinear(RoutedLoraLinear):
    """mtl: task slots tau pick a rank scaling lam = tau Lambda and an expert mix of up-projections.

    ``route: task``: tau = one_hot(t), so lam = Lambda[t] and pi = softmax(Omega[t]); Lambda and Omega have
    num_tasks + 1 rows (the last for the unknown task) and no gate is built. ``route: input``: tau is a soft
    gate over num_tasks slots read from the token mean. Lambda starts at 1 and B at 0 (the update starts at 0).
    """

    adapter_layer_names = ("lora_A", "lora_task_scale", "lora_task_experts", "lora_B_experts", "lora_gate")
    parameter_dicts = ("lora_task_scale", "lora_task_experts", "lora_B_experts")

    def create_adapter(self, name: str, r: int) -> None:
        E = self.spec.num_experts
        by_task = self.spec.route == "task"
        rows = self.spec.num_tasks + 1 if by_task else self.spec.num_tasks  # task: one row per id, unknown last
        self.lora_A[name] = nn.Linear(self.in_features, r, bias=False)  # shared A (r, d_in)
        self.lora_task_scale[name] = nn.Parameter(torch.ones(rows, r))  # Lambda (rows, r)
        self.lora_task_experts[name] = nn.Parameter(0.01 * torch.randn(rows, E))  # Omega (rows, E)
        self.lora_B_experts[name] = nn.Parameter(torch.zeros(E, self.out_features, r))  # (E, d_out, r)
        if not by_task:  # selecting rows by task id needs no gate
            self.lora_gate[name] = _gate(self.in_features, self.spec.gate_hidden, rows)
        with torch.no_grad():
            _init_a(self.lora_A[name].weight, self.spec.init)

    def adapter_dtype(self, name: str) -> torch.dtype:
        return self.lora_A[name].weight.dtype

    def task_rows(self, name: str, x_route: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lam = tau Lambda (B, r) and the expert logits tau Omega (B, E) of each sample."""
        scale, experts = self.lora_task_scale[name], self.lora_task_experts[name]  # (rows, r), (rows, E)
        batch = x_route.shape[0]
        if self.spec.route == "task":  # tau = one_hot(t): a row lookup, no gate
            lam = self.routing.rows_for(scale, batch, self.target_name)  # (B, r)
            return lam, self.routing.rows_for(experts, batch, self.target_name)  # (B, E)
        tau = torch.softmax(self.lora_gate[name](self.gate_input(x_route)), dim=-1)  # (B, T)
        return tau @ scale, tau @ experts  # (B, r), (B, E)

    def delta(self, name: str, x: torch.Tensor, x_route: torch.Tensor) -> torch.Tensor:
        Bm = self.lora_B_experts[name]
        E, d_out, r = Bm.shape
        B, L, _ = x.shape
        lam, logits = self.task_rows(name, x_route)  # (B, r), (B, E)
        pi = torch.softmax(logits, dim=-1)  # (B, E)
        xa = self.lora_A[name](x) * lam[:, None, :]  # (B, L, r)
        xe = xa[:, :, None, :] * pi[:, None, :, None]  # (B, L, E, r)
        b_flat = Bm.permute(1, 0, 2).reshape(d_out, E * r)  # (d_out, E*r)
        return xe.reshape(B, L, E * r) @ b_flat.T  # (B, L, d_out)


def bind_layer_cls(
    layer_cls: type[RoutedLoraLinear], spec: RoutedSpec, routing: RoutingContext
) -> type[RoutedLoraLinear]:
    """A subclass of ``layer_cls`` carrying ``spec`` and ``routing``, to register with PEFT."""
    if spec.route not in ROUTES:
        raise AdapterError(f"RoutedSpec.route: expected one of {list(ROUTES)}, got {spec.route!r}")
    return type(layer_cls.__name__, (layer_cls,), {"spec": spec, "routing_context": routing})
