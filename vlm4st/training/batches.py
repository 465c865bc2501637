"""Moving batches to the training device.

On CUDA a batch goes through page-locked (pinned) host memory, so the host-to-device copy is asynchronous and
overlaps the kernels already queued; on the CPU the tensors are used as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor on ``device`` (non-tensor entries such as the dataset name unchanged)."""
    pin = device.type == "cuda"
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = (value.pin_memory() if pin else value).to(device, non_blocking=True)
        out[key] = value
    return out
