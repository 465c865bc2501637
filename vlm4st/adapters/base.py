"""The adapter interface the VLM module talks to.

An adapter is an ``nn.Module`` chosen by the ``lora_type`` config group. ``VLMModule`` builds its vision and
text/fusion encoders, loads pretrained weights, then calls ``adapter.attach(vlm)`` exactly once. Before each
forward pass it calls ``adapter.route(task_id)`` so per-sample routing is in place before any encoder layer
runs. The adapter owns every parameter it adds (LoRA matrices live inside the encoders, shared state such as a
task embedding lives on the adapter itself) and says which of the VLM's parameters are adapter parameters.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from vlm4st.adapters.errors import AdapterError


class Adapter(nn.Module):
    """Base class: no adapter layers; subclasses inject them in ``attach``.

    ``attach`` never decides which parameters train: the VLM module owns ``requires_grad`` (``model.vlm.freeze``
    combined with ``asks_frozen_backbone``, or an explicit ``freeze_backbone()``); an adapter only says which
    parameters are its own.
    """

    #: Whether this adapter asks for a frozen backbone (LoRA: yes; full fine-tuning: no). ``VLMModule`` combines
    #: it with ``model.vlm.freeze``: under ``auto`` only encoders with pretrained weights are frozen, and only
    #: when this is true; ``true`` / ``false`` override it.
    asks_frozen_backbone: bool = True

    def attach(self, vlm: nn.Module) -> None:
        """Inject adapter layers into ``vlm.visual_encoder`` / ``vlm.text_encoder`` (after weights are loaded)."""

    def route(self, task_id: torch.Tensor) -> None:
        """Set the per-sample routing context for the coming forward pass. ``task_id``: (B,) long."""

    def is_adapter_parameter(self, name: str) -> bool:
        """Whether the VLM parameter ``name`` (relative to the VLM module) belongs to this adapter."""
        return name.startswith("adapter.")

    def adapter_parameters(self, vlm: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Yield ``(name, parameter)`` for every adapter parameter of ``vlm``."""
        for name, param in vlm.named_parameters():
            if self.is_adapter_parameter(name):
                yield name, param

    def describe(self) -> dict[str, object]:
        """A small JSON-able summary (type and hyperparameters) stored in checkpoints and logs."""
        return {"type": "none"}


def adapter_of(vlm: nn.Module) -> Adapter:
    """The ``adapter`` child of a VLM module (an ``Adapter``)."""
    adapter = getattr(vlm, "adapter", None)
    if not isinstance(adapter, Adapter):
        raise AdapterError(f"{type(vlm).__name__} has no 'adapter' child of type vlm4st.adapters.Adapter")
    return adapter
