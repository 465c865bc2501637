"""Reading device values on the host: the one door the training code uses.

Each read makes the host wait for the device, so the trainer, the evaluation and the checkpoints read device
tensors through these functions only. That keeps the reads countable, and lets a test run the whole loop on a
device without data (``meta``) by replacing them: there, as on CUDA, a tensor created on the CPU that meets a
device tensor in a non-scalar operation fails.
"""

from __future__ import annotations

import torch


def to_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the CPU (the same tensor when it is already there)."""
    return t.detach().cpu()


def host_copy(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy of ``t`` that shares no memory with it (checkpointed weights)."""
    return t.detach().to("cpu", copy=True)


def host_float(t: torch.Tensor) -> float:
    """A one-element tensor as a Python float."""
    return float(to_host(t))
