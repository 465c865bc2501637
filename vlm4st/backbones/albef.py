"""Load the published ALBEF checkpoints (``ALBEF.pth`` 14M, ``ALBEF_4M.pth``) into the ViT and text encoder.

Accepted layouts: ``{'model': state_dict, ...}`` or a bare state dict; pretrain keys (``text_encoder.bert.*``)
or fine-tuned keys (``text_encoder.*``). Key rules:
1. ``visual_encoder.*`` -> the ViT; ``text_encoder.*`` -> strip ``text_encoder.`` then a leading ``bert.`` (a bare
   key wins over its ``bert.`` twin) -> the text encoder.
2. Known families are dropped and counted: momentum copies ``*_m.*``, queues, ``temp``, ``itm_head``,
   ``vision_proj``/``text_proj`` (unused), ``text_decoder`` (VQA), the MLM head ``cls.*``, ``pooler.*``,
   ``position_ids``; plus what the built encoders do not have (see ``fit_text_state_dict``).
3. Any other key raises. Each encoder loads with ``strict=True``, so a missing or renamed key raises naming it.
4. Partial checkpoints: a built encoder with no key at all in the file (no ``visual_encoder.*``, or no
   ``text_encoder.*``) is skipped with a warning and keeps its random initialisation; ``LoadReport.loaded`` names
   the encoders that did load. An encoder whose keys are only partly present raises (rule 3), and so does a file
   that loads into no built encoder.
5. A text encoder built without cross-attention (no vision encoder) loads the fusion layers' self-attention and
   FFN weights and drops their ``crossattention.*`` keys (counted in the report).
``pos_embed`` is resampled to the ViT's grid (bicubic, cls token kept, no antialias: ALBEF's own rule).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vlm4st.backbones.text_encoder import AlbefTextEncoder, PositionEmbeddings
from vlm4st.checks import one_line
from vlm4st.errors import CheckpointError

log = logging.getLogger(__name__)

PATH_KEY = "model.vlm.pretrained_path"
#: Cross-attention sub-layers of the fusion layers (text-encoder keys, prefixes stripped).
CROSS_ATTENTION = re.compile(r"^encoder\.layer\.\d+\.crossattention\.")

#: Top-level ALBEF families vlm4st never uses: (report label, key test).
_DROP_TOP: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("momentum copies (*_m)", re.compile(r"^[a-z_]+_m\.")),
    ("queues", re.compile(r"^(image_queue|text_queue|idx_queue|queue_ptr)$")),
    ("temp", re.compile(r"^temp$")),
    ("itm_head", re.compile(r"^itm_head\.")),
    ("vision_proj/text_proj (unused)", re.compile(r"^(vision_proj|text_proj)\.")),
    ("text_decoder (VQA)", re.compile(r"^text_decoder\.")),
)
#: Families inside the text encoder (after prefix stripping).
_DROP_TEXT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("MLM head (cls.*)", re.compile(r"^cls\.")),
    ("pooler", re.compile(r"^pooler\.")),
    ("position_ids", re.compile(r"(^|\.)position_ids$")),
)


@dataclass
class LoadReport:
    """What a load did: loaded tensor counts per encoder, the pos_embed resample, the dropped families, and the
    state-dict keys of a loaded encoder that the file did not cover (they keep their random initialisation)."""

    path: str
    loaded: dict[str, int] = field(default_factory=dict)
    pos_embed: tuple[int, int] | None = None
    dropped: Counter[str] = field(default_factory=Counter)
    random_keys: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        loaded = ", ".join(f"{k} {v}" for k, v in self.loaded.items()) or "nothing"
        resample = (
            f"pos_embed resampled from {self.pos_embed[0]} to {self.pos_embed[1]} tokens"
            if self.pos_embed else "pos_embed not resampled"
        )
        dropped = "; ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "none"
        return f"loaded {self.path}: tensors {loaded}; {resample}; dropped {dropped}"


def weights_file(path: str | Path, key: str) -> Path:
    """``path`` as an existing, readable file; otherwise a ``CheckpointError`` naming it and the config ``key``."""
    p = Path(path).expanduser()
    where = f"config key {key}; expected a weights file, or null for random initialisation"
    if not p.exists():
        raise CheckpointError(f"'{p}': file not found ({where})")
    if not p.is_file():
        kind = "a folder" if p.is_dir() else "not a regular file"
        raise CheckpointError(f"'{p}': is {kind}, not a weights file ({where})")
    if not os.access(p, os.R_OK):
        raise CheckpointError(f"'{p}': no permission to read it ({where})")
    return p


def _load_failure(err: Exception, p: Path) -> str:
    """Why ``torch.load`` failed, on one line; torch's advice around a weights-only refusal is cut to the reason
    and followed by the command that makes a tensors-only copy of a file its owner trusts."""
    text = one_line(err)
    marker = "WeightsUnpickler error: "
    if marker not in text:
        return text
    reason = re.split(r"\. | Check the documentation", text.split(marker, 1)[1], maxsplit=1)[0].rstrip(".")
    return (f"the weights-only unpickler refused it ({reason}); if you trust the file, convert it once with "
            f"python -m vlm4st.backbones.convert --trust-pickle {p} <tensors-only copy>")


def read_state_dict(path: str | Path, key: str = PATH_KEY) -> dict[str, torch.Tensor]:
    """Read a checkpoint file on CPU with ``weights_only=True``; unwrap ``{'model': sd}``; keys must be strings and
    values tensors.

    No config can turn pickle loading on: a file that holds more than tensors and plain values is refused, and
    ``python -m vlm4st.backbones.convert`` turns one its owner trusts into a tensors-only copy. Every way the file
    can fail (missing, a folder, unreadable, not a torch file, truncated, no state dict) is a ``CheckpointError``
    naming the file and ``key``.
    """
    p = weights_file(path, key)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file (pickle, zip, EOF, OS errors)
        raise CheckpointError(
            f"'{p}': cannot read it as a torch checkpoint (config key {key}): {_load_failure(e, p)}"
        ) from e
    return state_dict_of(obj, p, key)


def state_dict_of(obj: Any, p: Path, key: str) -> dict[str, torch.Tensor]:
    """The state dict in a loaded file: ``obj`` itself or its ``'model'`` entry, string keys and tensors only."""
    sd = obj["model"] if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    expected = "expected a state dict of tensors or a dict with 'model'"
    if not isinstance(sd, dict):
        raise CheckpointError(f"'{p}': holds a {type(obj).__name__}, not a state dict (config key {key}); {expected}")
    if not sd:
        raise CheckpointError(f"'{p}': holds an empty state dict (config key {key}); {expected}")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"'{p}': entries that are not tensors under string keys: {[repr(k) for k in bad[:10]]} "
            f"({len(bad)}) (config key {key}); {expected}"
        )
    return sd


def _family(key: str, rules: tuple[tuple[str, re.Pattern[str]], ...]) -> str | None:
    return next((label for label, pat in rules if pat.search(key)), None)


def split_albef_state_dict(
    sd: dict[str, torch.Tensor], source: str = "<state dict>"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Counter[str]]:
    """Apply the prefix rule and the drop list: ``(vision sd, text sd, dropped counts)``; raise on unknown keys."""
    vision: dict[str, torch.Tensor] = {}
    text_bert: dict[str, torch.Tensor] = {}
    text_bare: dict[str, torch.Tensor] = {}
    dropped: Counter[str] = Counter()
    unknown: list[str] = []
    for key, value in sd.items():
        if label := _family(key, _DROP_TOP):
            dropped[label] += 1
        elif key.startswith("visual_encoder."):
            vision[key.removeprefix("visual_encoder.")] = value
        elif key.startswith("text_encoder.bert."):
            text_bert[key.removeprefix("text_encoder.bert.")] = value
        elif key.startswith("text_encoder."):
            text_bare[key.removeprefix("text_encoder.")] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unknown key(s) not in the ALBEF layout: {unknown[:20]} ({len(unknown)})")
    shadowed = set(text_bert) & set(text_bare)
    if shadowed:
        dropped["text_encoder.bert.* twins of bare keys"] += len(shadowed)
    text: dict[str, torch.Tensor] = {}
    for key, value in {**text_bert, **text_bare}.items():  # bare keys win
        if label := _family(key, _DROP_TEXT):
            dropped[label] += 1
        else:
            text[key] = value
    return vision, text, dropped


def fit_vision_state_dict(
    sd: dict[str, torch.Tensor], vit: VisionTransformer, source: str
) -> tuple[dict[str, torch.Tensor], tuple[int, int] | None]:
    """Resample ``pos_embed`` (1, 1+G*G, D) to the ViT's grid; returns the new dict and (from, to) token counts."""
    pe = sd.get("pos_embed")
    if pe is None:
        return sd, None
    if pe.dim() != 3 or pe.shape[0] != 1:
        raise CheckpointError(f"{source}: visual_encoder.pos_embed has shape {tuple(pe.shape)}; expected (1, N, D)")
    grid = tuple(vit.patch_embed.grid_size)
    n_new = vit.num_prefix_tokens + grid[0] * grid[1]
    n_old = pe.shape[1]
    if n_old == n_new:
        return sd, None
    side = round((n_old - 1) ** 0.5)
    if side * side != n_old - 1:
        raise CheckpointError(f"{source}: visual_encoder.pos_embed has {n_old} tokens, not 1 + a square grid")
    pe = resample_abs_pos_embed(
        pe, new_size=list(grid), old_size=[side, side], num_prefix_tokens=1, interpolation="bicubic", antialias=False
    )  # (1, 1+G'*G', D)
    return {**sd, "pos_embed": pe}, (n_old, n_new)


def fit_text_state_dict(
    sd: dict[str, torch.Tensor], encoder: AlbefTextEncoder
) -> tuple[dict[str, torch.Tensor], Counter[str]]:
    """Adapt a text state dict to what ``encoder`` built; returns the dict and the families it dropped.

    - No embeddings built: drop every ``embeddings.*``.
    - Positions only: drop ``word_embeddings``; fold ``token_type_embeddings`` row 0 into ``position_embeddings``
      (BERT adds both to every single-segment token, so the output is unchanged).
    - Built without cross-attention (no vision encoder): drop the fusion layers' ``crossattention.*``; their
      self-attention and FFN weights load.
    """
    out = dict(sd)
    dropped: Counter[str] = Counter()
    emb = encoder.embeddings
    if emb is None:
        for key in [k for k in out if k.startswith("embeddings.")]:
            del out[key]
            dropped["text embeddings (encoder_embeds bypass them)"] += 1
    elif isinstance(emb, PositionEmbeddings):
        if out.pop("embeddings.word_embeddings.weight", None) is not None:
            dropped["word_embeddings (unused with encoder_embeds)"] += 1
        token_type = out.pop("embeddings.token_type_embeddings.weight", None)
        if token_type is not None and "embeddings.position_embeddings.weight" in out:
            out["embeddings.position_embeddings.weight"] = out["embeddings.position_embeddings.weight"] + token_type[0]
            dropped["token_type_embeddings (row 0 folded into position_embeddings)"] += 1
    if not encoder.cross_attention:
        for key in [k for k in out if CROSS_ATTENTION.match(k)]:
            del out[key]
            dropped["fusion cross-attention (not built without a vision encoder)"] += 1
    return out, dropped


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], prefix: str, source: str) -> int:
    """``load_state_dict(strict=True)`` with an error that names the file and the full (prefixed) keys."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: keys do not match {type(module).__name__}: "
            f"missing {[prefix + k for k in missing[:20]]} ({len(missing)}), "
            f"unexpected {[prefix + k for k in unexpected[:20]]} ({len(unexpected)})"
        )
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: {prefix}* does not fit the configured model: {one_line(e)}") from e
    return len(sd)


def load_albef_checkpoint(
    path: str | Path,
    visual_encoder: VisionTransformer | None,
    text_encoder: AlbefTextEncoder | None,
) -> LoadReport:
    """Load an ALBEF checkpoint into the encoders that exist and have keys in it; log and return a ``LoadReport``.

    ``report.loaded`` names the encoders that received weights; a built encoder without any key in the file is
    skipped with a warning (partial checkpoint). Raises ``CheckpointError`` when no built encoder loads anything.
    """
    source = f"{path} (config key {PATH_KEY})"  # errors name the file and the key that set it
    vision_sd, text_sd, dropped = split_albef_state_dict(read_state_dict(path), source)
    report = LoadReport(path=str(path), dropped=dropped)
    if visual_encoder is not None and vision_sd:
        vision_sd, report.pos_embed = fit_vision_state_dict(vision_sd, visual_encoder, source)
        report.loaded["vision"] = load_strict(visual_encoder, vision_sd, "visual_encoder.", source)
    elif visual_encoder is not None:
        log.warning("%s holds no visual_encoder.* keys: the vision encoder keeps its random initialisation", path)
    elif vision_sd:
        dropped["visual_encoder (not built)"] += len(vision_sd)
    if text_encoder is not None and text_sd:
        text_sd, text_dropped = fit_text_state_dict(text_sd, text_encoder)
        dropped.update(text_dropped)
        report.loaded["text"] = load_strict(text_encoder, text_sd, "text_encoder.", source)
    elif text_encoder is not None:
        log.warning("%s holds no text_encoder.* keys: the text encoder keeps its random initialisation", path)
    elif text_sd:
        dropped["text_encoder (not built or loaded from other weights)"] += len(text_sd)
    if not report.loaded:
        built = [n for n, e in (("vision", visual_encoder), ("text", text_encoder)) if e is not None] or ["none"]
        raise CheckpointError(
            f"{path}: no weights load into the built encoders ({', '.join(built)}); the file holds "
            f"{len(vision_sd)} visual_encoder.* and {len(text_sd)} text_encoder.* tensors (config key {PATH_KEY}; "
            "set it to null for random initialisation)"
        )
    log.info("ALBEF weights %s", report.summary())
    return report
