"""The VLM's weight step: ALBEF for both encoders, optional HF-BERT text weights, or a logged random init.

It returns where each built encoder's weights came from, so the caller can decide what to freeze: freezing an
encoder that kept its random initialisation would leave fixed random projections for the adapter to work on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from timm.models.vision_transformer import VisionTransformer

from vlm4st.backbones.albef import load_albef_checkpoint
from vlm4st.backbones.hf_text import PATH_KEY, WEIGHTS_KEY, load_hf_bert_text, resolve_text_weights
from vlm4st.backbones.text_encoder import AlbefTextEncoder
from vlm4st.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderWeights:
    """One built encoder's weights: ``source`` (e.g. ``"ALBEF weights from <path>"``; None: random
    initialisation) and ``random_keys``, its state-dict keys the source did not cover (they stay random)."""

    source: str | None
    random_keys: frozenset[str] = frozenset()

    @property
    def pretrained(self) -> bool:
        return self.source is not None


def load_pretrained_weights(
    visual_encoder: VisionTransformer | None,
    text_encoder: AlbefTextEncoder | None,
    pretrained_path: str | None = None,
    text_pretrained_path: str | None = None,
    text_weights: str | None = None,
) -> dict[str, EncoderWeights]:
    """Load ALBEF (``pretrained_path``) into the encoders that exist; HF text weights replace its text part.

    Returns ``{"vision": EncoderWeights, "text": EncoderWeights}`` for the built encoders only. A partial ALBEF
    file (one encoder's keys only) leaves the other encoder random (``source`` None).
    """
    text_path = resolve_text_weights(text_pretrained_path, text_weights)
    if text_path is not None and text_encoder is None:
        raise ConfigError("model.vlm.text_pretrained_path / text_weights are set, but model.vlm.text is null")
    weights = {
        name: EncoderWeights(None) for name, enc in (("vision", visual_encoder), ("text", text_encoder))
        if enc is not None
    }
    albef_text = text_encoder if text_path is None else None
    if pretrained_path is not None and visual_encoder is None and albef_text is None:
        raise ConfigError(
            "model.vlm.pretrained_path is set, but no encoder takes ALBEF weights: model.vlm.vision is null and the "
            "text encoder loads model.vlm.text_pretrained_path / text_weights instead"
        )
    if pretrained_path is not None:
        report = load_albef_checkpoint(pretrained_path, visual_encoder, albef_text)
        for name in report.loaded:
            weights[name] = EncoderWeights(f"ALBEF weights from {pretrained_path}")
    if text_path is not None:
        report = load_hf_bert_text(text_encoder, text_path, WEIGHTS_KEY if text_weights is not None else PATH_KEY)
        weights["text"] = EncoderWeights(
            f"HF BERT text weights from {text_path}", frozenset(report.random_keys["text"])
        )
    random = [name for name, w in weights.items() if not w.pretrained]
    if random:
        log.info("random initialisation of the %s encoder(s): no pretrained weights for them", " and ".join(random))
    return weights
