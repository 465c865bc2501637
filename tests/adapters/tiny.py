"""Tiny VLM modules and adapters shared by the adapter tests (CPU, seconds)."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from vlm4st.adapters import LoraAdapter, MoELora, MTLLora, StandardLora, TaskAdaptiveLora
from vlm4st.config import compose
from vlm4st.models.vlm_module import VLMModule

WIDTH = 32
#: 2 ViT blocks (6 q/k/v linears), 4 BERT layers with fusion from layer 2 (12 self + 6 cross q/k/v linears).
VISION = {"img_size": 32, "patch_size": 16, "embed_dim": WIDTH, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
TEXT = {
    "hidden_size": WIDTH,
    "num_layers": 4,
    "num_heads": 2,
    "intermediate_size": 64,
    "fusion_layer": 2,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
}
N_VIT, N_SELF, N_CROSS = 2 * 3, 4 * 3, 2 * 3
#: Without a ViT all 4 BERT layers are built, the fusion-position ones without cross-attention: 12 self q/k/v.
N_TEXT_ONLY = 4 * 3
NUM_TASKS = 3

ROUTED = ("moe", "mtl", "task_adaptive")
TYPES = ("standard", *ROUTED)
CLASSES: dict[str, type[LoraAdapter]] = {
    "standard": StandardLora,
    "moe": MoELora,
    "mtl": MTLLora,
    "task_adaptive": TaskAdaptiveLora,
}


class Holder(nn.Module):
    """One adapted Linear(6, 5) next to its adapter: the smallest module an adapter attaches to."""

    def __init__(self, adapter: nn.Module) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 5)
        self.adapter = adapter


@cache
def config_kwargs(kind: str) -> dict[str, Any]:
    """The constructor arguments ``lora_type=<kind>`` gives on the default data (its config file is the only place
    the adapters' defaults are written); the routed types' ``task_dropout`` set to 0 so that routing is
    deterministic in training mode (tests of the dropout set it)."""
    node = OmegaConf.to_container(compose([f"lora_type={kind}"]).lora_type, resolve=True)
    node.pop("_target_")
    if kind in ROUTED:
        node["task_dropout"] = 0.0
    return node


def adapter_from_config(kind: str, **overrides: Any) -> LoraAdapter:
    """An adapter of ``kind`` built from its config's values with ``overrides``."""
    return CLASSES[kind](**(config_kwargs(kind) | overrides))


def make_adapter(kind: str, route: str = "task", seed: int = 0, **overrides: Any) -> LoraAdapter:
    """A small adapter of ``kind`` (rank 4, 3 tasks, narrow gates, task_dim 8 for moe / task_adaptive); seeded,
    so its task embedding and per-task tables are too."""
    torch.manual_seed(seed)
    kw: dict[str, Any] = {"rank": 4, "alpha": 8}
    if kind in ROUTED:
        kw |= {"num_tasks": NUM_TASKS, "route": route, "num_experts": 3, "gate_hidden": 16}
    if kind in ("moe", "task_adaptive"):  # mtl has no task embedding
        kw["task_dim"] = 8
    return adapter_from_config(kind, **(kw | overrides))


def make_vlm(adapter: Any = None, vision: bool = True, text: bool = True, seed: int = 0) -> VLMModule:
    """A tiny VLMModule with random weights (same backbone weights for the same seed), frozen so that only the
    adapter trains (``freeze="true"``: the adapter tests measure adapters, not backbones)."""
    torch.manual_seed(seed)
    return VLMModule(dict(VISION) if vision else None, dict(TEXT) if text else None, freeze="true", adapter=adapter)


def make_inputs(batch: int = 4, seq_len: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """image (B, 3, 32, 32), sequence (B, L, 32)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=g), torch.randn(batch, seq_len, WIDTH, generator=g)


def perturb_adapter(vlm: VLMModule, std: float = 0.2, seed: int = 2) -> None:
    """Give every adapter tensor random non-zero values (zero-initialised B would hide the adapter's effect)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in vlm.adapter.adapter_parameters(vlm):
            param.add_(std * torch.randn(param.shape, generator=g))
