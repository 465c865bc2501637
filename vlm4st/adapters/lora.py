"""LoRA adapters injected with HuggingFace PEFT; ``StandardLora`` is ``lora_type=standard``.

``LoraAdapter`` holds the flow every LoRA type shares. ``attach(vlm)``:
1. splits timm's fused ``attn.qkv`` when the targets name ``attn.qkv.(q|k|v)`` (``split_qkv``);
2. resolves the target regex against the VLM module (absent encoders are skipped; no match at all raises);
3. injects with ``peft.inject_adapter_in_model`` into the VLM module only, never the whole model (PEFT freezes
   everything but adapters in the module it is given);
4. records which VLM parameters are adapter parameters **structurally** (tensors of PEFT tuner layers outside
   ``base_layer``, plus the adapter module's own), never by a name substring (a backbone parameter whose name
   happens to contain "lora" must stay frozen), then freezes every other VLM parameter and makes every adapter
   parameter trainable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import ClassVar

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from vlm4st import checks
from vlm4st.adapters.base import Adapter
from vlm4st.adapters.errors import AdapterError
from vlm4st.adapters.split_qkv import split_fused_qkv
from vlm4st.adapters.targets import compile_targets, resolve_targets
from vlm4st.errors import ConfigError

log = logging.getLogger(__name__)

#: PEFT's adapter name; live keys carry it (``lora_A.default.weight``), saved adapter keys do not.
ADAPTER_NAME = "default"
#: ``reference``: A-type ~ N(0, 0.01^2), B-type = 0 (the published VLM4ST init). ``peft``: PEFT's kaiming-uniform
#: A, B = 0.
INITS = ("reference", "peft")


def own_prefix(vlm: nn.Module, adapter: nn.Module) -> str:
    """The path of ``adapter`` inside ``vlm`` (``"adapter"``); the adapter must be a child of the VLM module."""
    for name, module in vlm.named_modules():
        if module is adapter and name:
            return name
    raise AdapterError(
        f"{type(adapter).__name__}.attach: the adapter is not a submodule of the VLM module; set "
        "vlm.adapter = adapter before attach so shared adapter state is saved with the VLM"
    )


class LoraAdapter(Adapter):
    """Common LoRA flow: validated hyperparameters, PEFT injection, structural parameter bookkeeping."""

    #: The ``lora_type`` config name, stored in ``describe()`` and checked when a checkpoint loads.
    lora_type: ClassVar[str] = "standard"
    asks_frozen_backbone: bool = True

    def __init__(self, *, rank: int, alpha: float, dropout: float, targets: str, init: str) -> None:
        """Every hyperparameter is required: their defaults live in ``conf/lora_type/_base/lora.yaml`` alone."""
        super().__init__()
        self.rank = checks.positive_int(rank, "lora_type.rank")
        checks.positive_number(alpha, "lora_type.alpha")
        self.alpha = alpha
        self.dropout = checks.probability(dropout, "lora_type.dropout")
        self.targets = targets
        self._pattern = compile_targets(targets)
        self.init = checks.choice(init, INITS, "lora_type.init")
        self._prefix: str | None = None
        self._param_names: frozenset[str] = frozenset()
        # Plain list (not registered): the tuner layers live in the encoders; kept for merge/unmerge and reports.
        self._layers: list[tuple[str, BaseTunerLayer]] = []

    @property
    def scaling(self) -> float:
        """s = alpha / r, the factor on every LoRA update."""
        return self.alpha / self.rank

    @property
    def attached(self) -> bool:
        return self._prefix is not None

    @property
    def layers(self) -> list[tuple[str, BaseTunerLayer]]:
        """``(path, layer)`` of every adapted linear, paths relative to the VLM module."""
        return list(self._layers)

    def lora_config(self, exclude: str) -> LoraConfig:
        """The PEFT config injected by ``attach``; routed types register their custom layer class on it."""
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            bias="none",
            target_modules=self._pattern.pattern,
            exclude_modules=exclude,
            init_lora_weights=True,
        )

    def init_layers(self) -> None:
        """Re-initialise PEFT's layers for ``init: reference`` (A ~ N(0, 0.01^2), B = 0)."""
        if self.init != "reference":
            return
        with torch.no_grad():
            for _, layer in self._layers:
                nn.init.normal_(layer.lora_A[ADAPTER_NAME].weight, mean=0.0, std=0.01)
                nn.init.zeros_(layer.lora_B[ADAPTER_NAME].weight)

    def attach(self, vlm: nn.Module) -> None:
        """Inject the LoRA layers into ``vlm`` (once, after pretrained weights are loaded)."""
        if self.attached:
            raise AdapterError(f"{type(self).__name__}.attach: already attached; build a new adapter per model")
        prefix = own_prefix(vlm, self)
        split = split_fused_qkv(vlm, self._pattern, exclude_prefix=prefix)
        targets = resolve_targets(vlm, self._pattern, exclude_prefix=prefix)
        self._check_rank(vlm, targets)
        grad_before = {id(p): p.requires_grad for p in vlm.parameters()}
        exclude = rf"{prefix}(\..*)?"  # never adapt the adapter's own modules (the task embedding)
        inject_adapter_in_model(self.lora_config(exclude), vlm, adapter_name=ADAPTER_NAME)
        self._layers = [(n, m) for n, m in vlm.named_modules() if isinstance(m, BaseTunerLayer)]
        if [n for n, _ in self._layers] != targets:
            raise AdapterError(
                f"{type(self).__name__}.attach: PEFT wrapped {len(self._layers)} layers but the targets "
                f"resolved to {len(targets)}; the VLM module already carries adapters"
            )
        self.init_layers()
        self._prefix = prefix
        self._param_names = frozenset(self._collect_parameter_names(vlm))
        for name, param in vlm.named_parameters():
            # PEFT marks only its own layers trainable; undo that: what trains is the VLM module's decision
            # (model.vlm.freeze with this adapter's ``asks_frozen_backbone``), taken after attach.
            param.requires_grad_(name in self._param_names or grad_before.get(id(param), True))
        log.info(
            "%s LoRA: %d adapted linears (%d fused qkv split), %d adapter parameters",
            self.lora_type,
            len(self._layers),
            len(split),
            sum(p.numel() for _, p in self.adapter_parameters(vlm)),
        )

    def _check_rank(self, vlm: nn.Module, targets: list[str]) -> None:
        """The rank must not exceed the narrowest side of any adapted linear (a wider update adds no rank)."""
        widths = {name: min(vlm.get_submodule(name).in_features, vlm.get_submodule(name).out_features)
                  for name in targets}
        name = min(widths, key=widths.__getitem__)
        if self.rank > widths[name]:
            raise ConfigError(
                f"lora_type.rank: {self.rank} exceeds the width {widths[name]} of the adapted linear '{name}'; "
                f"expected at most {widths[name]}"
            )

    def _collect_parameter_names(self, vlm: nn.Module) -> Iterator[str]:
        for path, layer in self._layers:
            for attr in layer.adapter_layer_names:
                container = getattr(layer, attr, None)
                if isinstance(container, nn.Module):
                    for pname, _ in container.named_parameters():
                        yield f"{path}.{attr}.{pname}"
        for pname, _ in self.named_parameters():
            yield f"{self._prefix}.{pname}"

    def is_adapter_parameter(self, name: str) -> bool:
        if not self.attached:
            return super().is_adapter_parameter(name)
        return name in self._param_names

    def adapter_parameters(self, vlm: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in vlm.named_parameters():
            if self.is_adapter_parameter(name):
                yield name, param

    def describe(self) -> dict[str, object]:
        return {
            "type": self.lora_type,
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "init": self.init,
            "targets": self.targets,
        }

    def _require_attached(self, what: str) -> None:
        if not self.attached:
            raise AdapterError(f"{type(self).__name__}.{what}: call attach(vlm) first")


class StandardLora(LoraAdapter):
    """``lora_type=standard``: h = W x + b + (alpha / r) B A x per adapted linear, PEFT's ``lora.Linear``.

    ``merge()`` folds B A into W for inference (same outputs, no extra matmuls); ``unmerge()`` undoes it.
    """

    lora_type = "standard"

    def merge(self) -> None:
        """Fold every LoRA update into its base weight (inference)."""
        self._require_attached("merge")
        for _, layer in self._layers:
            layer.merge()

    def unmerge(self) -> None:
        """Undo ``merge()`` (training can continue)."""
        self._require_attached("unmerge")
        for _, layer in self._layers:
            layer.unmerge()
