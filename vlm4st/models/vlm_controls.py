"""Controls for the VLM: one randomly initialised layer in its place (``ablation=vlm2attn`` / ``vlm2trsf``).

Does the pretrained vision-language backbone earn its cost (Tan et al., NeurIPS 2024)? A control takes the inputs
``VLMModule`` would take and returns what it would return, at the same width D, so every other module is unchanged:
- the image (B, 3, S, S) is cut into patch tokens as the ViT's patch embedding does: a convolution with the ViT's
  patch size, a CLS token and learned positions -> (B, 1+P, D);
- image and sequence tokens (B, L, D) are concatenated and pass one pre-norm layer together, so every token
  attends to both; a final LayerNorm follows, as the ViT's and the BERT's outputs are normalised too;
- ``fused`` = the outputs at the sequence positions, ``visual`` = those at the image positions, ``text`` =
  ``fused`` (one layer: no separate text pass). With one input only, VLMModule's conventions hold: image only
  (``model.vlm.text`` null): fused = visual; sequence only (``model.vlm.vision`` null): visual = None.
``AttentionControl`` is that layer as multi-head self-attention with a residual (no FFN); ``TransformerControl`` a
full encoder block (attention + FFN with the ViT's ``mlp_ratio``, or the BERT's FFN width without a ViT).
Sizes come from ``model.vlm.vision`` / ``model.vlm.text`` (the preset's, validated as the ViT and BERT validate
them); their depths describe the backbone being replaced and are not used. Heads: the ViT's, or the BERT's without
a ViT. There is no pretrained backbone to adapt, so the adapter is always ``NoAdapter`` and the layer trains in
full; the ``lora_type`` node still composes and is built (so its config is checked), then dropped with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlm4st import checks
from vlm4st.adapters.base import Adapter
from vlm4st.adapters.none import NoAdapter
from vlm4st.backbones.text_encoder import KEY as TEXT_KEY
from vlm4st.backbones.text_encoder import text_encoder_kwargs
from vlm4st.backbones.vit import KEY as VISION_KEY
from vlm4st.backbones.vit import vit_kwargs
from vlm4st.errors import ConfigError
from vlm4st.models.forecaster import EncoderStatus
from vlm4st.models.layers import Block
from vlm4st.models.vlm_backbone import VLMBackbone, VLMOutput

log = logging.getLogger(__name__)

KEY = "model.vlm"
#: Report name of the control layer in ``frozen_encoders``.
LAYER = "control"


def _size_keys(vision: Mapping[str, Any] | None) -> dict[str, str]:
    """The config keys of the layer's heads, width and FFN ratio, named by ``Block``'s errors: the ViT's, or the
    BERT's without a ViT."""
    if vision is not None:
        return {"heads_key": f"{VISION_KEY}.num_heads", "width_key": f"{VISION_KEY}.embed_dim",
                "mlp_key": f"{VISION_KEY}.mlp_ratio"}
    return {"heads_key": f"{TEXT_KEY}.num_heads", "width_key": f"{TEXT_KEY}.hidden_size",
            "mlp_key": f"{TEXT_KEY}.intermediate_size"}


class PatchTokens(nn.Module):
    """The ViT's patch embedding: image (B, 3, S, S) -> [CLS, patches] + learned positions (B, 1+P, D)."""

    def __init__(self, img_size: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        B = image.shape[0]
        patches = self.proj(image).flatten(2).transpose(1, 2)  # (B, P, D)
        tokens = torch.cat([self.cls_token.expand(B, -1, -1), patches], dim=1)  # (B, 1+P, D)
        return tokens + self.pos_embed  # (B, 1+P, D)


class VLMControl(VLMBackbone):
    """Patch tokens + ``layer`` + LayerNorm in the VLM's place; the subclasses choose the layer (``_build_layer``).

    Args:
        vision: the ViT's sizes (``model.vlm.vision``: ``img_size``, ``patch_size``, ``embed_dim``, ``num_heads``,
            ``mlp_ratio``; ``depth`` unused) or None for no image input.
        text: the BERT's sizes (``model.vlm.text``: ``hidden_size``, ``num_heads``, ``intermediate_size``; layer
            counts unused) or None for no sequence input.
        adapter: the ``lora_type`` adapter; it adapts nothing here (logged) and is replaced by ``NoAdapter``.
        dropout: on the layer's attention output (and FFN output).
        text_weights: pretrained text weights a preset names (``small_minilm``); a control has no encoder to load
            them into, so a set value is logged and not loaded.
        grad_checkpointing: recompute the layer in backward.
    """

    #: The ablation that selects this control, for logs.
    ablation = "control"

    def __init__(
        self,
        vision: Mapping[str, Any] | None,
        text: Mapping[str, Any] | None,
        adapter: Adapter | None,
        dropout: float,
        text_weights: str | None,
        grad_checkpointing: bool,
    ) -> None:
        super().__init__()
        if vision is None and text is None:
            raise ConfigError(f"{KEY}: both vision and text are null; expected at least one input path")
        self.dropout = checks.probability(dropout, f"{KEY}.dropout")
        for key, node in ((VISION_KEY, vision), (TEXT_KEY, text)):
            if node is not None and not isinstance(node, Mapping):
                raise ConfigError(f"{key}: expected a mapping of sizes (the preset's) or null, got {node!r}")
        vit = vit_kwargs(**dict(vision)) if vision is not None else None
        bert = text_encoder_kwargs(**dict(text)) if text is not None else None
        if vit is not None and bert is not None and vit["embed_dim"] != bert["hidden_size"]:
            raise ConfigError(
                f"{VISION_KEY}.embed_dim: {vit['embed_dim']} differs from {TEXT_KEY}.hidden_size "
                f"{bert['hidden_size']}; expected one width D for image and sequence tokens"
            )
        if vit is not None:
            self.hidden_size = int(vit["embed_dim"])
            self.num_heads = checks.num_heads(vit["num_heads"], self.hidden_size, f"{VISION_KEY}.num_heads",
                                              f"{VISION_KEY}.embed_dim")
            self.image_size: int | None = int(vit["img_size"])
            self.patches: PatchTokens | None = PatchTokens(vit["img_size"], vit["patch_size"], self.hidden_size)
        else:
            self.hidden_size = checks.positive_int(bert["hidden_size"], f"{TEXT_KEY}.hidden_size")
            self.num_heads = checks.num_heads(bert["num_heads"], self.hidden_size, f"{TEXT_KEY}.num_heads",
                                              f"{TEXT_KEY}.hidden_size")
            self.image_size = None
            self.patches = None
        self._takes_sequence = bert is not None
        self.layer = self._build_layer(vit, bert)
        self.norm = nn.LayerNorm(self.hidden_size)
        self.grad_checkpointing = checks.flag(grad_checkpointing, f"{KEY}.grad_checkpointing")
        requested = adapter.describe()["type"] if adapter is not None else "none"
        self.adapter = NoAdapter(freeze_backbone=False)
        self.adapter.attach(self)
        self._frozen_reason = "trained in full (random initialisation; a control has no pretrained backbone)"
        ffn = self.layer.mlp.fc1.out_features if self.layer.mlp is not None else 0
        log.info("model.vlm: %s control in the VLM's place, one pre-norm layer of width %d, %d heads, %s; "
                 "lora_type=%s adapts nothing under this control (no pretrained backbone; the layer trains in full)",
                 self.ablation, self.hidden_size, self.num_heads, f"FFN {ffn}" if ffn else "no FFN", requested)
        if text_weights is not None:
            log.info("%s.text_weights=%s: not loaded, the %s control has no text encoder", KEY, text_weights,
                     self.ablation)

    def _build_layer(self, vision: Mapping[str, Any] | None, text: Mapping[str, Any] | None) -> Block:
        """The one layer over all tokens: self-attention with a residual, no FFN (``mlp_ratio=0``); ``vision`` /
        ``text`` are the validated size mappings (or None)."""
        return Block(self.hidden_size, self.num_heads, mlp_ratio=0.0, dropout=self.dropout, **_size_keys(vision))

    @property
    def takes_image(self) -> bool:
        return self.patches is not None

    @property
    def takes_sequence(self) -> bool:
        return self._takes_sequence

    @property
    def frozen_encoders(self) -> dict[str, EncoderStatus]:
        """The control's own parameters as one entry (``control``): never pretrained."""
        params = list(self.parameters())
        return {LAYER: EncoderStatus(frozen=not any(p.requires_grad for p in params), pretrained=False,
                                     trainable_backbone=sum(p.numel() for p in params if p.requires_grad),
                                     reason=self._frozen_reason)}

    def freeze_backbone(self) -> None:
        """Freeze the control's parameters (an explicit call: they stay fixed random projections)."""
        for p in self.parameters():
            p.requires_grad_(False)
        self._frozen_reason = "frozen (random initialisation, freeze_backbone() called)"
        log.info("%s control: %s", self.ablation, self._frozen_reason)

    def set_grad_checkpointing(self, enable: bool) -> None:
        self.grad_checkpointing = bool(enable)

    def num_output_tokens(self, seq_len: int) -> int:
        if self.takes_sequence:
            return seq_len
        return 1 + self.patches.num_patches

    def _check_inputs(self, image: torch.Tensor | None, sequence: torch.Tensor | None) -> None:
        if (image is not None) != self.takes_image:
            raise ValueError(f"{type(self).__name__}: an image must be given exactly when {VISION_KEY} is set "
                             f"(image given: {image is not None})")
        if (sequence is not None) != self.takes_sequence:
            raise ValueError(f"{type(self).__name__}: a sequence must be given exactly when {TEXT_KEY} is set "
                             f"(sequence given: {sequence is not None})")
        S, D = self.image_size, self.hidden_size
        if image is not None and (image.dim() != 4 or tuple(image.shape[1:]) != (3, S, S)):
            raise ValueError(f"{type(self).__name__} expects an image (B, 3, {S}, {S}); got {tuple(image.shape)}")
        if sequence is not None and (sequence.dim() != 3 or sequence.shape[-1] != D):
            raise ValueError(f"{type(self).__name__} expects a sequence (B, L, {D}); got {tuple(sequence.shape)}")

    def _mix(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The layer and the final norm over all tokens: (B, N, D) -> (B, N, D)."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            out = checkpoint(self.layer, tokens, None, mask, use_reentrant=False)  # (B, N, D)
        else:
            out = self.layer(tokens, None, mask)  # (B, N, D)
        return self.norm(out)  # (B, N, D)

    def forward(
        self,
        image: torch.Tensor | None,
        sequence: torch.Tensor | None,
        seq_mask: torch.Tensor | None = None,
        *,
        task_id: torch.Tensor,
    ) -> VLMOutput:
        """image (B, 3, S, S) | None, sequence (B, L, D) | None, seq_mask (B, L) 1 = token; task_id (B,) (routes
        nothing: ``NoAdapter``). Returns ``fused`` (B, N, D), ``visual`` (B, 1+P, D) | None, ``text`` (B, L, D) |
        None; see the module docstring."""
        self._check_inputs(image, sequence)
        self.adapter.route(task_id)
        parts = [] if image is None else [self.patches(image)]  # (B, 1+P, D)
        n_img = 0 if image is None else parts[0].shape[1]
        mask = None
        if sequence is not None:
            parts.append(sequence)  # (B, L, D)
            if seq_mask is not None and image is not None:  # image tokens are always real
                ones = torch.ones(seq_mask.shape[0], n_img, dtype=torch.bool, device=seq_mask.device)  # (B, 1+P)
                mask = torch.cat([ones, seq_mask.bool()], dim=1)  # (B, 1+P+L)
            elif seq_mask is not None:
                mask = seq_mask.bool()  # (B, L)
        out = self._mix(torch.cat(parts, dim=1), mask)  # (B, 1+P+L, D)
        if sequence is None:
            return VLMOutput(fused=out, visual=out, text=None)  # fused (B, 1+P, D)
        fused = out[:, n_img:]  # (B, L, D)
        return VLMOutput(fused=fused, visual=out[:, :n_img] if image is not None else None, text=fused)


class AttentionControl(VLMControl):
    """``ablation=vlm2attn``: one pre-norm multi-head self-attention layer with a residual (no FFN)."""

    ablation = "vlm2attn"


class TransformerControl(VLMControl):
    """``ablation=vlm2trsf``: one pre-norm transformer encoder block (self-attention + FFN, residuals); the FFN
    width is the ViT's ``mlp_ratio`` x D, or the BERT's ``intermediate_size`` without a ViT."""

    ablation = "vlm2trsf"

    def _build_layer(self, vision: Mapping[str, Any] | None, text: Mapping[str, Any] | None) -> Block:
        if vision is not None:
            ratio = vision["mlp_ratio"]
        else:
            ratio = checks.positive_int(text["intermediate_size"], f"{TEXT_KEY}.intermediate_size") / self.hidden_size
        return Block(self.hidden_size, self.num_heads, mlp_ratio=ratio, dropout=self.dropout,
                     **_size_keys(vision))
