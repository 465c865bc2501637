"""Per-projection LoRA on timm's fused qkv: replace ``attn.qkv`` by a module with ``q``, ``k``, ``v`` children.

PEFT on a fused ``Linear(D, 3D)`` gives one LoRA whose A is shared by q, k and v; adapting q, k and v separately
needs three Linear modules. ``SplitQKV`` holds the three row slices of the fused weight as Linear children and
returns their concatenation, so timm's ``Attention`` (and its fused SDPA path) runs unchanged. The split replaces
the fused weight: no frozen copy of the fused ``qkv`` stays behind as a dead duplicate in the state dict and the
parameter count. Split only after pretrained weights are loaded, because checkpoints hold the fused ``qkv``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

PARTS = ("q", "k", "v")


class SplitQKV(nn.Module):
    """Three Linear(D, D) projections whose concatenated output equals the fused Linear(D, 3D) they came from."""

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        if qkv.out_features % 3 != 0:
            raise ValueError(f"SplitQKV: out_features {qkv.out_features} of the fused qkv is not divisible by 3")
        width = qkv.out_features // 3
        has_bias = qkv.bias is not None
        kw = {"device": qkv.weight.device, "dtype": qkv.weight.dtype}
        self.q = nn.Linear(qkv.in_features, width, bias=has_bias, **kw)
        self.k = nn.Linear(qkv.in_features, width, bias=has_bias, **kw)
        self.v = nn.Linear(qkv.in_features, width, bias=has_bias, **kw)
        with torch.no_grad():
            for i, part in enumerate(PARTS):
                proj: nn.Linear = getattr(self, part)
                proj.weight.copy_(qkv.weight[i * width : (i + 1) * width])  # rows of q, then k, then v
                proj.weight.requires_grad_(qkv.weight.requires_grad)
                if has_bias:
                    proj.bias.copy_(qkv.bias[i * width : (i + 1) * width])
                    proj.bias.requires_grad_(qkv.bias.requires_grad)

    @property
    def in_features(self) -> int:
        return self.q.in_features

    @property
    def out_features(self) -> int:
        return 3 * self.q.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)  # (..., D) x3 -> (..., 3D)


def split_fused_qkv(module: nn.Module, targets: re.Pattern[str], exclude_prefix: str | None = None) -> list[str]:
    """Replace every fused ``*.qkv`` Linear whose ``.q`` / ``.k`` / ``.v`` path ``targets`` fullmatches.

    Returns the paths that were split. A ``qkv`` the pattern targets as a whole stays fused (one LoRA on it).
    """
    split: list[str] = []
    for name, child in list(module.named_modules()):
        if exclude_prefix and (name == exclude_prefix or name.startswith(exclude_prefix + ".")):
            continue
        if not (name == "qkv" or name.endswith(".qkv")) or not isinstance(child, nn.Linear):
            continue
        if not any(targets.fullmatch(f"{name}.{part}") for part in PARTS):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, SplitQKV(child))
        split.append(name)
    return split
