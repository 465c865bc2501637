"""Model weights in checkpoints: the full state dict, or only the trainable parameters (adapters + the
spatiotemporal modules) when ``trainer.save_adapters_only`` is set.

A trainable-only checkpoint is small, but its frozen backbone weights must be rebuilt identically (the same
``model.vlm.pretrained_path`` or, without pretrained weights, the same seed); a fingerprint of the frozen
weights is stored and checked so a mismatch fails loudly instead of silently producing another model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlm4st.checks import one_line
from vlm4st.errors import CheckpointError
from vlm4st.training import host


def frozen_fingerprint(model: nn.Module) -> float:
    """A cheap checksum of the frozen parameters (sum of |w| over a strided sample of each tensor), read from the
    device once."""
    parts = [p.detach().flatten()[::97].abs().double().sum() for _, p in sorted(model.named_parameters())
             if not p.requires_grad]
    return host.host_float(torch.stack(parts).sum()) if parts else 0.0


def model_state(model: nn.Module, trainable_only: bool = False) -> dict[str, Any]:
    """``{"weights": state_dict, "trainable_only": bool, "frozen_fingerprint": float | None}``; the weights are
    copied straight to the CPU (never a second copy of the model on the accelerator)."""
    if not trainable_only:
        return {"weights": {k: host.host_copy(v) for k, v in model.state_dict().items()}, "trainable_only": False,
                "frozen_fingerprint": None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    weights = {k: host.host_copy(v) for k, v in model.state_dict().items() if k in trainable or k in buffers}
    return {"weights": weights, "trainable_only": True, "frozen_fingerprint": frozen_fingerprint(model)}


def load_model_state(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """Load what ``model_state`` wrote; missing or unexpected keys are errors that name the file and the keys."""
    weights = state["weights"]
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a stored tensor of another shape than the model built from the config
        raise CheckpointError(f"checkpoint '{source}' does not fit the model built from its config: "
                              f"{one_line(err)}") from None
    unexpected = list(result.unexpected_keys)
    missing = list(result.missing_keys)
    if state.get("trainable_only"):
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        missing = [k for k in missing if k not in frozen]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint '{source}' does not fit the model built from its config: missing keys {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''} (was it saved with another lora_type, ablation or model?)"
        )
    if state.get("trainable_only"):
        expected, actual = state["frozen_fingerprint"], frozen_fingerprint(model)
        if not torch.isclose(torch.tensor(actual), torch.tensor(expected), rtol=1e-6, atol=1e-6):
            raise CheckpointError(
                f"checkpoint '{source}' holds only trainable parameters, but the frozen backbone rebuilt here "
                f"differs from the one it was trained with (fingerprint {actual:.6g} vs {expected:.6g}); use the same "
                "model.vlm.pretrained_path and seed, or a full checkpoint"
            )
