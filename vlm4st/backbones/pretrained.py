"""The VLM's weight step: ALBEF for both encoders, optional HF-BERT text weights, or a logged random init."""

from __future__ import annotations

import logging

from timm.models.vision_transformer import VisionTransformer

from vlm4st.backbones.albef import load_albef_checkpoint
from vlm4st.backbones.hf_text import load_hf_bert_text, resolve_text_weights
from vlm4st.backbones.text_encoder import AlbefTextEncoder
from vlm4st.config import ConfigError

log = logging.getLogger(__name__)


def load_pretrained_weights(
    visual_encoder: VisionTransformer | None,
    text_encoder: AlbefTextEncoder | None,
    pretrained_path: str | None = None,
    text_pretrained_path: str | None = None,
    text_weights: str | None = None,
    weights_only: bool = True,
) -> None:
    """Load ALBEF (``pretrained_path``) into the encoders that exist; HF text weights replace its text part."""
    text_path = resolve_text_weights(text_pretrained_path, text_weights)
    if text_path is not None and text_encoder is None:
        raise ConfigError("model.vlm.text_pretrained_path / text_weights are set, but model.vlm.text is null")
    if pretrained_path is not None:
        load_albef_checkpoint(
            pretrained_path, visual_encoder, text_encoder if text_path is None else None, weights_only
        )
    if text_path is not None:
        load_hf_bert_text(text_encoder, text_path)
    sources = (("vision", visual_encoder, pretrained_path), ("text", text_encoder, pretrained_path or text_path))
    random = [name for name, enc, src in sources if enc is not None and src is None]
    if random:
        log.info("random initialisation of the %s encoder(s): no pretrained weights configured", " and ".join(random))
