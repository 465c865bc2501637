"""Adapters injected into the VLM backbones (the `lora_type` config group).

- ``base.Adapter``: the interface the VLM module talks to (``attach``, ``route``, parameter bookkeeping).
- ``none.NoAdapter``: no adapter layers (``lora_type=none``: full fine-tuning or a frozen backbone).
- ``lora.StandardLora``: PEFT LoRA (``lora_type=standard``), mergeable for inference.
- ``routed.MoELora`` / ``MTLLora`` / ``TaskAdaptiveLora``: routed LoRA layers registered with PEFT, routed by
  the layer input or by the sample's task id (``routing.RoutingContext``).
- ``counting``: closed-form and per-family parameter counts.
Adapter tensors are parameters of the VLM module, so the model's checkpoints (``vlm4st.training.checkpoint``)
hold them.
"""

from vlm4st.adapters.base import Adapter
from vlm4st.adapters.counting import (
    expected_parameter_count,
    lora_linear_param_count,
    parameter_report,
    shared_param_count,
)
from vlm4st.adapters.errors import AdapterError
from vlm4st.adapters.lora import LoraAdapter, StandardLora
from vlm4st.adapters.none import NoAdapter
from vlm4st.adapters.routed import MoELora, MTLLora, RoutedLora, TaskAdaptiveLora, TaskEmbeddingLora
from vlm4st.adapters.routing import RoutingContext
from vlm4st.adapters.split_qkv import SplitQKV
from vlm4st.adapters.targets import DEFAULT_TARGETS, WIDE_TARGETS

__all__ = [
    "DEFAULT_TARGETS",
    "WIDE_TARGETS",
    "Adapter",
    "AdapterError",
    "LoraAdapter",
    "MTLLora",
    "MoELora",
    "NoAdapter",
    "RoutedLora",
    "RoutingContext",
    "SplitQKV",
    "StandardLora",
    "TaskAdaptiveLora",
    "TaskEmbeddingLora",
    "expected_parameter_count",
    "lora_linear_param_count",
    "parameter_report",
    "shared_param_count",
]
