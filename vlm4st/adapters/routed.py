"""Routed LoRA adapters: ``lora_type=moe``, ``mtl`` and ``task_adaptive`` (math in ``routed_layers``).

Two routing modes (config key ``route``):
- ``input``: each layer's gate reads the token mean of its own input; no task ids are used.
- ``task`` (default for multi-dataset runs), by the sample's dataset id t:
  - moe, task_adaptive (``TaskEmbeddingLora``): each gate reads the token mean **and** e_t, a learned embedding
    of t. The embedding ``task_embedding`` (num_tasks + 1, task_dim) lives once on this adapter module (a child
    of the VLM module, so it is saved and counted once) and is shared by every layer.
  - mtl: no gate and no embedding; every layer selects its own rows Lambda[t] and Omega[t] (one-hot task slot),
    so mtl takes no ``task_dim``.

Task ids reach the layers through ``route(task_id)``, which the VLM module calls before the encoders run; it
fills a ``RoutingContext`` (see ``routing``) that stays valid through gradient-checkpoint recomputation.

Unseen tasks (zero-shot targets): id ``num_tasks`` is a reserved "unknown" task, the last row of every per-task
table; the evaluation gives it to every sample of an unseen dataset. In training mode ``task_dropout`` replaces
each sample's id with it with that probability, so the unknown row learns a task-agnostic routing that a new
dataset can use before (or without) its own id.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from peft import LoraConfig
from torch import nn

from vlm4st import checks
from vlm4st.adapters.errors import AdapterError
from vlm4st.adapters.lora import LoraAdapter
from vlm4st.adapters.routed_layers import (
    ROUTES,
    MoELoraLinear,
    MTLLoraLinear,
    RoutedLoraLinear,
    RoutedSpec,
    TaskAdaptiveLoraLinear,
    bind_layer_cls,
)
from vlm4st.adapters.routing import RoutingContext


class RoutedLora(LoraAdapter):
    """Common part of the routed types: validated routing hyperparameters and ``route``.

    Builds no task embedding: with ``route: task`` the layers select per-task rows by id (mtl);
    ``TaskEmbeddingLora`` adds the embedding that moe and task_adaptive gates read.
    """

    layer_cls: ClassVar[type[RoutedLoraLinear]]

    def __init__(
        self,
        num_tasks: int,
        *,
        num_experts: int,
        route: str,
        gate_hidden: int,
        task_dropout: float,
        **lora: Any,
    ) -> None:
        """Every hyperparameter is required (defaults: ``conf/lora_type/_base/routed.yaml``); ``lora``: the keys
        every LoRA type takes (rank, alpha, dropout, targets, init)."""
        super().__init__(**lora)
        self.num_tasks = checks.positive_int(num_tasks, "lora_type.num_tasks")
        self.num_experts = checks.positive_int(num_experts, "lora_type.num_experts")
        self.gate_hidden = checks.positive_int(gate_hidden, "lora_type.gate_hidden")
        self.task_dropout = checks.probability(task_dropout, "lora_type.task_dropout")
        self.route_mode = checks.choice(route, ROUTES, "lora_type.route")
        self.routing = RoutingContext()  # plain object shared with every layer; not saved, not a parameter
        self.task_embedding: nn.Embedding | None = None

    @property
    def unknown_task_id(self) -> int:
        """The reserved id of an unseen task (``num_tasks``)."""
        return self.num_tasks

    @property
    def spec(self) -> RoutedSpec:
        return RoutedSpec(
            num_experts=self.num_experts,
            num_tasks=self.num_tasks,
            gate_hidden=self.gate_hidden,
            route=self.route_mode,
            task_dim=0 if self.task_embedding is None else self.task_embedding.embedding_dim,
            init=self.init,
        )

    def lora_config(self, exclude: str) -> LoraConfig:
        config = super().lora_config(exclude)
        config._register_custom_module({nn.Linear: bind_layer_cls(self.layer_cls, self.spec, self.routing)})
        return config

    def init_layers(self) -> None:
        """Routed layers initialise themselves from their ``RoutedSpec``."""

    def route(self, task_id: torch.Tensor) -> None:
        """Install the per-sample routing of the next forward. ``task_id``: (B,) long in [0, num_tasks].

        Only shape and dtype are checked here (metadata, no device sync). The range is checked where ids are made:
        the data module numbers its datasets 0..n-1 and ``lora_type.num_tasks`` must cover them (checked when the
        model is built); an id outside the tables still fails in the lookup (``F.embedding``).
        """
        if task_id.dim() != 1 or task_id.dtype not in (torch.int64, torch.int32):
            raise AdapterError(
                f"{type(self).__name__}.route: task_id must be a (B,) integer tensor, got "
                f"{tuple(task_id.shape)} {task_id.dtype}"
            )
        if self.route_mode == "input":  # gates read only the layer inputs
            return
        ids = task_id.long()  # (B,)
        if self.training and self.task_dropout > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.task_dropout  # (B,)
            ids = torch.where(drop, torch.full_like(ids, self.unknown_task_id), ids)
        if self.task_embedding is None:  # the layers select their per-task rows by id
            self.routing.set(ids)
            return
        ids = ids.to(self.task_embedding.weight.device)
        self.routing.set(ids, self.task_embedding(ids))  # (B, task_dim)

    def merge(self) -> None:
        raise AdapterError(
            f"lora_type={self.lora_type}: routed LoRA cannot be merged, its update depends on the input or task"
        )

    def unmerge(self) -> None:
        raise AdapterError(f"lora_type={self.lora_type}: routed LoRA is never merged")

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "num_experts": self.num_experts,
            "route": self.route_mode,
            "num_tasks": self.num_tasks,
            "gate_hidden": self.gate_hidden,
            "task_dropout": self.task_dropout,
        }


class TaskEmbeddingLora(RoutedLora):
    """Routed types whose gates, with ``route: task``, also read a learned task embedding (moe, task_adaptive).

    ``task_dim`` is the embedding width; the (num_tasks + 1, task_dim) table is built only with ``route: task``
    (with ``route: input`` the value is validated and described but builds nothing).
    """

    def __init__(self, num_tasks: int, *, task_dim: int, **routed: Any) -> None:
        super().__init__(num_tasks, **routed)
        self.task_dim = checks.positive_int(task_dim, "lora_type.task_dim")
        if self.route_mode == "task":
            self.task_embedding = nn.Embedding(self.num_tasks + 1, self.task_dim)  # last row: unknown task

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "task_dim": self.task_dim}


class MoELora(TaskEmbeddingLora):
    """``lora_type=moe``: E LoRA experts (A_e, B_e) mixed per sample by a gate (width ``gate_hidden``, 64)."""

    lora_type = "moe"
    layer_cls = MoELoraLinear


class MTLLora(RoutedLora):
    """``lora_type=mtl``: shared A; a task slot chooses a rank scaling and a B-expert mix per layer.

    ``route: task`` selects the slot of the sample's task id (one-hot, no gate; the unknown task has its own
    slot); ``route: input`` mixes ``num_tasks`` slots softly by a gate of width ``gate_hidden``. No task
    embedding under either route, hence no ``task_dim``.
    """

    lora_type = "mtl"
    layer_cls = MTLLoraLinear


class TaskAdaptiveLora(TaskEmbeddingLora):
    """``lora_type=task_adaptive``: per-sample A = A_0 + sum_e pi_e A_e, shared B (gate width 32 in the config)."""

    lora_type = "task_adaptive"
    layer_cls = TaskAdaptiveLoraLinear
