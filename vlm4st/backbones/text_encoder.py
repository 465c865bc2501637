"""Text/fusion encoder: ALBEF's ``xbert`` rebuilt from transformers 5.x ``BertLayer`` blocks.

ALBEF's BERT differs from a plain ``BertModel``: layers ``[0, fusion_layer)`` are text-only, layers
``[fusion_layer, n)`` add cross-attention to image tokens, self-attention is bidirectional everywhere, and
``mode`` picks which layers run (``text``, ``fusion``, ``multi_modal``). ``BertModel`` cannot express this (cross-
attention needs decoder mode, which makes self-attention causal and adds cross-attention to every layer), so this
container builds the layers one by one and forces ``is_causal = False``.

Without a vision encoder (``cross_attention=False``, the ``no_visual`` ablation) every one of the ``n`` layers is
still built, so the sequence passes through the same depth as with images: the fusion-position layers
``[fusion_layer, n)`` are then plain self-attention + FFN layers (no cross-attention sub-layer exists) and ``fusion``
runs them without image tokens. Their keys are ALBEF's minus ``crossattention.*``.

Positional information (feeding ``encoder_embeds`` straight into layer 0, as ALBEF does, bypasses every embedding): with
``embed_positions=True`` (the default) the encoder embeds ``encoder_embeds`` the way BERT embeds a single-segment
text, minus the word lookup: ``LayerNorm(x + position + token_type_0)``, then dropout, before the first text layer.
This gives the pretrained layers both a position code they know and the input scale layer 0 was trained on. It
applies only when a pass starts at layer 0 (``text`` / ``multi_modal``); ``fusion`` takes the text layers' output as
is. Callers may still add their own positions. ``embed_positions=False`` reproduces ALBEF's bypass exactly.

No dead weights: the word and token-type tables are built only with ``vocab_size`` (needed for ``input_ids``).
Without them the position table holds ``position + token_type_0`` (the loader folds ALBEF's token-type row 0 in),
so outputs are identical. State-dict keys are ALBEF's text layout minus ``text_encoder.bert.``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import BertConfig
from transformers.activations import ACT2FN
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

from vlm4st import checks
from vlm4st.errors import ConfigError

Mode = Literal["text", "fusion", "multi_modal"]

KEY = "model.vlm.text"

#: Sizes every ``model.vlm.text`` config gives (set by each preset in ``conf/model``).
TEXT_SIZE_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "fusion_layer")
#: Keys that may be left out of the config, with the value BERT uses.
TEXT_DEFAULTS: dict[str, Any] = {
    "embed_positions": True,
    "vocab_size": None,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "hidden_act": "gelu",
    "attn_implementation": "sdpa",
}
TEXT_KEYS = (*TEXT_SIZE_KEYS, *TEXT_DEFAULTS)


class PositionEmbeddings(nn.Module):
    """``LayerNorm(x + position)`` then dropout, with BERT's key names (``position_embeddings``, ``LayerNorm``)."""

    def __init__(self, max_positions: int, hidden_size: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        if self.position_embeddings.num_embeddings < L:
            raise ValueError(
                f"sequence length {L} exceeds model.vlm.text.max_position_embeddings "
                f"{self.position_embeddings.num_embeddings}"
            )
        x = x + self.position_embeddings.weight[:L]  # (B, L, D)
        return self.dropout(self.LayerNorm(x))


class _LayerStack(nn.Module):
    """Holds ``layer`` so keys read ``encoder.layer.<i>...`` as in ALBEF."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class AlbefTextEncoder(nn.Module):
    """ALBEF's BERT: text layers ``[0, fusion_layer)``, cross-attention fusion layers ``[fusion_layer, n)``.

    ``cross_attention=False`` (no vision encoder, the ``no_visual`` ablation) builds all ``num_layers`` layers, the
    fusion-position ones without their cross-attention sub-layer, so the depth equals the model with images.
    """

    def __init__(
        self,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        fusion_layer: int = 6,
        cross_attention: bool = True,
        embed_positions: bool = True,
        vocab_size: int | None = None,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        hidden_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        hidden_act: str = "gelu",
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "intermediate_size": intermediate_size,
                 "max_position_embeddings": max_position_embeddings, "type_vocab_size": type_vocab_size}
        for key, value in sizes.items():
            checks.positive_int(value, f"{KEY}.{key}")
        if vocab_size is not None:
            checks.positive_int(vocab_size, f"{KEY}.vocab_size")
        if checks.non_negative_int(fusion_layer, f"{KEY}.fusion_layer") > num_layers:
            raise ConfigError(f"{KEY}.fusion_layer: {fusion_layer} > num_layers {num_layers}; expected 0..{num_layers}")
        checks.num_heads(num_heads, hidden_size, f"{KEY}.num_heads", f"{KEY}.hidden_size")
        checks.positive_number(layer_norm_eps, f"{KEY}.layer_norm_eps")
        checks.probability(hidden_dropout, f"{KEY}.hidden_dropout")
        checks.probability(attention_dropout, f"{KEY}.attention_dropout")
        checks.choice(hidden_act, sorted(ACT2FN), f"{KEY}.hidden_act")
        checks.choice(attn_implementation, ("sdpa", "eager"), f"{KEY}.attn_implementation")
        checks.flag(embed_positions, f"{KEY}.embed_positions")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.fusion_layer = fusion_layer
        self.cross_attention = cross_attention
        self.embed_positions = embed_positions
        self.attn_implementation = attn_implementation
        self.grad_checkpointing = False

        cfg = BertConfig(
            vocab_size=vocab_size or 1,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            hidden_act=hidden_act,
            hidden_dropout_prob=hidden_dropout,
            attention_probs_dropout_prob=attention_dropout,
            max_position_embeddings=max_position_embeddings,
            type_vocab_size=type_vocab_size,
            layer_norm_eps=layer_norm_eps,
            pad_token_id=0,
            is_decoder=False,
            add_cross_attention=False,
        )
        cfg._attn_implementation = attn_implementation
        xcfg = copy.deepcopy(cfg)  # fusion layers: HF only builds cross-attention in decoder mode
        xcfg.is_decoder = cross_attention
        xcfg.add_cross_attention = cross_attention

        # Embeddings: full BERT table for input_ids, positions only for encoder_embeds, or none.
        self.embeddings: nn.Module | None
        if vocab_size is not None:
            self.embeddings = BertEmbeddings(cfg)
        elif embed_positions:
            self.embeddings = PositionEmbeddings(max_position_embeddings, hidden_size, layer_norm_eps, hidden_dropout)
        else:
            self.embeddings = None

        layers = [BertLayer(xcfg if i >= fusion_layer else cfg, layer_idx=i) for i in range(num_layers)]
        for layer in layers:
            layer.attention.self.is_causal = False  # bidirectional; SDPA would be causal with mask=None otherwise
        self.encoder = _LayerStack(layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation (normal 0.02), used when no pretrained weights are loaded."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def has_token_embeddings(self) -> bool:
        """Whether word/token-type tables exist (``vocab_size`` given), so ``input_ids`` can be embedded."""
        return isinstance(self.embeddings, BertEmbeddings)

    @property
    def num_fusion_layers(self) -> int:
        """Layers ``[fusion_layer, num_layers)`` that ``fusion`` runs (with or without cross-attention)."""
        return self.num_layers - self.fusion_layer

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer in backward (``torch.utils.checkpoint``, non-reentrant)."""
        self.grad_checkpointing = enable

    def layer_range(self, mode: Mode) -> tuple[int, int]:
        """The ``[start, end)`` layer indices ``mode`` runs."""
        ranges = {
            "text": (0, self.fusion_layer),
            "fusion": (self.fusion_layer, self.num_layers),
            "multi_modal": (0, self.num_layers),
        }
        if mode not in ranges:
            raise ValueError(f"mode '{mode}'; expected one of {list(ranges)}")
        start, end = ranges[mode]
        if start == end:
            raise ValueError(f"mode '{mode}' runs no layers (fusion_layer={self.fusion_layer}, n={self.num_layers})")
        return start, end

    def _expand_mask(self, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """(B, N) 1 = attend, 0 = ignore -> (B, 1, 1, N): boolean for SDPA, additive for eager."""
        if mask is None:
            return None
        if mask.dim() != 2:
            raise ValueError(f"attention masks must be (B, N); got shape {tuple(mask.shape)}")
        mask = mask[:, None, None, :]  # (B, 1, 1, N)
        if self.attn_implementation == "sdpa":
            return mask.bool()
        return (1.0 - mask.to(like.dtype)) * torch.finfo(like.dtype).min

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mode: Mode = "multi_modal",
    ) -> torch.Tensor:
        """Run the layers of ``mode``; returns the last hidden states (B, L, D).

        Exactly one of ``input_ids`` (B, L) / ``encoder_embeds`` (B, L, D). ``encoder_hidden_states`` (B, N, D) are
        the image tokens, required whenever a fusion layer with cross-attention runs and refused otherwise (built
        with ``cross_attention=False``, the fusion layers take none); masks are (B, L) / (B, N), 1 = attend.
        """
        start, end = self.layer_range(mode)
        if (input_ids is None) == (encoder_embeds is None):
            raise ValueError("give exactly one of input_ids and encoder_embeds")
        runs_cross = self.cross_attention and end > self.fusion_layer
        if runs_cross and encoder_hidden_states is None:
            raise ValueError(
                f"mode '{mode}' runs fusion layers {max(start, self.fusion_layer)}..{end - 1}, which cross-attend to "
                "image tokens, but encoder_hidden_states is None"
            )
        if not runs_cross and encoder_hidden_states is not None:
            why = "runs no fusion layer" if self.cross_attention else "this encoder was built without cross-attention"
            raise ValueError(f"encoder_hidden_states given, but mode '{mode}': {why}")

        if input_ids is not None:
            if not self.has_token_embeddings:
                raise ValueError("input_ids need word embeddings; build the encoder with model.vlm.text.vocab_size")
            h = self.embeddings(input_ids=input_ids)  # (B, L, D)
        else:
            h = encoder_embeds  # (B, L, D)
            if self.embeddings is not None and self.embed_positions and start == 0:
                h = self.embeddings(inputs_embeds=h) if self.has_token_embeddings else self.embeddings(h)

        self_mask = self._expand_mask(attention_mask, h)  # (B, 1, 1, L)
        cross_mask = self._expand_mask(encoder_attention_mask, h) if runs_cross else None  # (B, 1, 1, N)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i in range(start, end):
            layer = self.encoder.layer[i]
            image = encoder_hidden_states if i >= self.fusion_layer else None
            if use_ckpt:
                h = checkpoint(layer, h, self_mask, image, cross_mask, use_reentrant=False)
            else:
                h = layer(h, self_mask, image, cross_mask)  # (B, L, D)
        return h


def text_encoder_kwargs(**given: Any) -> dict[str, Any]:
    """Validate the ``model.vlm.text`` keys into ``AlbefTextEncoder`` keyword arguments."""
    unknown = sorted(set(given) - set(TEXT_KEYS))
    if unknown:
        raise ConfigError(f"model.vlm.text: unknown key(s) {unknown}; expected keys among {list(TEXT_KEYS)}")
    missing = [k for k in TEXT_SIZE_KEYS if k not in given]
    if missing:
        raise ConfigError(f"model.vlm.text: missing key(s) {missing}")
    return {**TEXT_DEFAULTS, **given}


def build_text_encoder_from_config(cfg: Mapping[str, Any], cross_attention: bool = True) -> AlbefTextEncoder:
    """``AlbefTextEncoder`` from a config mapping (the keys of ``TEXT_KEYS``)."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{KEY}: expected a mapping of BERT sizes (keys {list(TEXT_KEYS)}) or null, got {cfg!r}")
    return AlbefTextEncoder(**text_encoder_kwargs(**dict(cfg)), cross_attention=cross_attention)
