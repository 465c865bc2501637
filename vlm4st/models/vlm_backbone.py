"""The contract of whatever stands in the VLM's place (``model.vlm``): what ``VLM4ST``, its wiring check, the
parameter reports and the training code may ask of it.

Two kinds implement it: ``VLMModule`` (the ALBEF ViT + text/fusion BERT with its adapter) and the controls of
``vlm_controls`` (one randomly initialised layer over the same tokens, ``ablation=vlm2attn`` / ``vlm2trsf``).
Under ``ablation=no_vlm`` there is no backbone at all (``model.vlm`` is null). Code outside the model reads a
backbone only through this class, never through encoder attributes of one implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from vlm4st.adapters.base import Adapter
from vlm4st.models.forecaster import EncoderStatus


@dataclass(frozen=True)
class VLMOutput:
    """What the VLM (or a control in its place) gives the head: the fused tokens, and the encoded image and text
    where they were encoded."""

    fused: torch.Tensor  # (B, N, D): the text tokens after fusion, or the image tokens without a sequence
    visual: torch.Tensor | None  # (B, 1+P, D): CLS and patch tokens of the image
    text: torch.Tensor | None  # (B, L, D): the sequence tokens before fusion


class VLMBackbone(nn.Module, ABC):
    """Image (B, 3, S, S) and/or sequence (B, L, D) in; a ``VLMOutput`` of tokens of width D out.

    Every subclass sets, in its constructor:
        hidden_size: D, the token width of its inputs and outputs.
        image_size: S, the side of the image it takes (None when it takes no image).
        adapter: its ``Adapter`` (``NoAdapter`` when nothing is adapted); ``describe()``,
            ``adapter_parameters(backbone)`` and ``route(task_id)`` are what the rest of the code calls.
    """

    hidden_size: int
    image_size: int | None
    adapter: Adapter

    @property
    @abstractmethod
    def takes_image(self) -> bool:
        """Whether ``forward`` expects an image (else it must get None)."""

    @property
    @abstractmethod
    def takes_sequence(self) -> bool:
        """Whether ``forward`` expects a sequence (else it must get None)."""

    @property
    def max_sequence_tokens(self) -> int | None:
        """The longest sequence it takes (learned positions limit it); None: any length."""
        return None

    @property
    @abstractmethod
    def frozen_encoders(self) -> dict[str, EncoderStatus]:
        """Per encoder (or control layer): frozen or not and why, pretrained or not, and its backbone elements
        with ``requires_grad`` now; stored in the parameter report."""

    @abstractmethod
    def freeze_backbone(self) -> None:
        """Freeze every backbone weight (adapter parameters stay trainable) and log what was frozen."""

    @abstractmethod
    def set_grad_checkpointing(self, enable: bool) -> None:
        """Recompute the backbone's activations in backward (on) or keep them (off)."""

    @abstractmethod
    def num_output_tokens(self, seq_len: int) -> int:
        """Number N of ``fused`` tokens for a sequence of ``seq_len`` tokens."""

    @abstractmethod
    def forward(
        self,
        image: torch.Tensor | None,
        sequence: torch.Tensor | None,
        seq_mask: torch.Tensor | None = None,
        *,
        task_id: torch.Tensor,
    ) -> VLMOutput:
        """image (B, 3, S, S) | None, sequence (B, L, D) | None, seq_mask (B, L) 1 = token, task_id (B,) long ->
        the fused tokens and the per-modality encodings."""
