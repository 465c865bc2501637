"""Adapter checkpoints: only the adapter parameters, stored with the adapter's ``describe()``.

Format (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"adapter": {"type": "moe", "rank": 16, "alpha": 32, ...},   # Adapter.describe()
     "state_dict": {"text_encoder.encoder.layer.0.attention.self.query.lora_A_experts": tensor, ...}}

Keys are VLM-module paths without PEFT's adapter name: ``lora_A.default.weight`` is saved as ``lora_A.weight``
(as ``peft.get_peft_model_state_dict`` writes standard LoRA), ``lora_gate.default.0.weight`` as
``lora_gate.0.weight``; shared adapter state keeps its path (``adapter.task_embedding.weight``).

Loading needs a model built from the same config: building attaches the adapter, which re-registers the routed
layer classes with PEFT (the registration itself is never saved). Without that, PEFT would silently build plain
LoRA layers, so missing or unexpected adapter keys are errors here, not warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from vlm4st.adapters.base import Adapter
from vlm4st.adapters.errors import AdapterError
from vlm4st.adapters.lora import ADAPTER_NAME

log = logging.getLogger(__name__)

#: ``describe()`` fields that must agree between a checkpoint and the model it loads into.
MATCHED_FIELDS = ("rank", "alpha", "targets", "num_experts", "route", "num_tasks", "task_dim", "gate_hidden")


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def saved_key(name: str, adapter_name: str = ADAPTER_NAME) -> str:
    """Drop PEFT's adapter-name segment (the part after a ``lora_*`` container) from a live parameter path."""
    parts = name.split(".")
    kept = [p for i, p in enumerate(parts) if not (p == adapter_name and i and parts[i - 1].startswith("lora_"))]
    return ".".join(kept)


def adapter_of(vlm: nn.Module) -> Adapter:
    """The ``adapter`` child of a VLM module (an ``Adapter``)."""
    adapter = getattr(vlm, "adapter", None)
    if not isinstance(adapter, Adapter):
        raise AdapterError(f"{type(vlm).__name__} has no 'adapter' child of type vlm4st.adapters.Adapter")
    return adapter


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def adapter_state_dict(vlm: nn.Module) -> dict[str, Any]:
    """The adapter checkpoint of ``vlm``: ``{"adapter": describe(), "state_dict": {key: tensor}}``."""
    adapter = adapter_of(vlm)
    weights = {saved_key(n): p.detach().clone() for n, p in adapter.adapter_parameters(vlm)}
    return {"adapter": dict(adapter.describe()), "state_dict": weights}


def load_adapter_state_dict(vlm: nn.Module, checkpoint: Mapping[str, Any], strict: bool = True) -> LoadResult:
    """Load an ``adapter_state_dict`` checkpoint into ``vlm`` (built and attached from the same config).

    A checkpoint of another lora type always fails. With ``strict`` (default), differing hyperparameters and
    missing or unexpected keys fail too, naming them; without it they are logged and skipped. A shape mismatch
    always fails.
    """
    adapter = adapter_of(vlm)
    if not isinstance(checkpoint, Mapping) or not {"adapter", "state_dict"} <= set(checkpoint):
        raise AdapterError(
            "adapter checkpoint: expected a dict with keys 'adapter' (describe()) and 'state_dict', as written by "
            f"adapter_state_dict; got {sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint)}"
        )
    saved, live = dict(checkpoint["adapter"]), adapter.describe()
    if saved.get("type") != live.get("type"):
        raise AdapterError(
            f"adapter checkpoint holds a lora_type={saved.get('type')!r} adapter but the model was built with "
            f"lora_type={live.get('type')!r}; build the model with the checkpoint's lora_type"
        )
    differing = [
        f"{k}: checkpoint {saved.get(k)!r} vs model {live.get(k)!r}"
        for k in MATCHED_FIELDS
        if saved.get(k) != live.get(k)
    ]
    if differing:
        message = f"adapter checkpoint (lora_type={live.get('type')}) differs from the model's adapter: " + "; ".join(
            differing
        )
        if strict:
            raise AdapterError(message)
        log.warning(message)

    params = {saved_key(n): (n, p) for n, p in adapter.adapter_parameters(vlm)}
    state = checkpoint["state_dict"]
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        message = (
            f"adapter checkpoint (lora_type={live.get('type')}): missing keys [{_listing(missing)}], "
            f"unexpected keys [{_listing(unexpected)}]"
        )
        if strict:
            raise AdapterError(message)
        log.warning(message)
    with torch.no_grad():
        for key, (name, param) in params.items():
            if key not in state:
                continue
            value = state[key]
            if tuple(value.shape) != tuple(param.shape):
                raise AdapterError(
                    f"adapter checkpoint key '{key}': shape {tuple(value.shape)}, model parameter '{name}' "
                    f"has {tuple(param.shape)}"
                )
            param.copy_(value)
    return LoadResult(missing, unexpected)
