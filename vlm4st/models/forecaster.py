"""What every forecaster of the project offers the training and evaluation code: ``Forecaster``, and the typed
parameter report it gives (``ParamReport``, written to ``metrics.json``).

``VLM4ST`` and the ``STID`` peer implement the protocol; the trainer, the evaluators, the zero-shot blend and the
report use nothing else of a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from vlm4st.adapters.counting import NO_ADAPTER, NO_PARAMS, AdapterReport, ParamCount
from vlm4st.models.prompt_forge import PatternInfo


@dataclass(frozen=True)
class EncoderStatus:
    """One pretrained encoder (or a control's layer): whether it is frozen and why, whether it received weights,
    and how many of its backbone elements (adapter parameters excluded) have ``requires_grad`` now."""

    frozen: bool
    pretrained: bool
    trainable_backbone: int
    reason: str


@dataclass(frozen=True)
class ParamReport:
    """A forecaster's parameters: in all, per top-level module, in adapters and in the VLM backbone.

    ``vlm`` names the class in the VLM's place (None without one); ``frozen_encoders`` says per encoder what was
    frozen and why (empty without a VLM).
    """

    total: int
    trainable: int
    modules: dict[str, ParamCount]
    adapter: AdapterReport = NO_ADAPTER
    vlm_backbone: ParamCount = NO_PARAMS
    vlm: str | None = None
    frozen_encoders: dict[str, EncoderStatus] = field(default_factory=dict)

    @classmethod
    def of_modules(cls, model: torch.nn.Module, **parts: Any) -> ParamReport:
        """The counts of ``model`` and of each of its children, with the adapter and VLM parts given."""
        whole = ParamCount.of(model.parameters())
        modules = {name: ParamCount.of(child.parameters()) for name, child in model.named_children()}
        return cls(total=whole.total, trainable=whole.trainable, modules=modules, **parts)


@dataclass(frozen=True, kw_only=True)
class Intermediates:
    """What a forecaster shows of its inside (``return_intermediate=True``). The maps the run's figures draw are
    common to every forecaster, None where a model has none; each model's subclass adds its own tensors."""

    gate_weights: torch.Tensor | None = None  # (B, T, H, W, n_branches): fusion gates per cell
    pattern_info: PatternInfo | None = None  # PromptForge's weights per modality


@runtime_checkable
class Forecaster(Protocol):
    """A grid forecaster: windows of ``t_in`` frames in, ``t_out`` frames of ``out_channels`` channels out."""

    t_in: int
    t_out: int
    out_channels: int

    def __call__(
        self,
        x: torch.Tensor,
        timestamps: torch.Tensor | None,
        task_id: torch.Tensor,
        return_intermediate: bool = False,
        target_timestamps: torch.Tensor | None = None,
    ) -> Any:
        """x (B, T_in, H, W), timestamps (B, T_in, 3), task_id (B,), target_timestamps (B, T_out, 3) ->
        forecast (B, T_out, H, W, C); with ``return_intermediate`` the pair (forecast, ``Intermediates``)."""
        ...

    def get_trainable_parameters(self) -> ParamReport:
        """The parameter report written to ``metrics.json``."""
        ...

    def describe_adapter(self) -> dict[str, object]:
        """The adapter's type and hyperparameters (stored in checkpoints)."""
        ...

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward (less memory, more time)."""
        ...
