"""Vision encoder: timm's ``VisionTransformer`` with ALBEF's key names.

ALBEF's ViT is a plain timm-style ViT (cls token, learned absolute positions, LayerNorm eps 1e-6, qkv bias, exact
GELU, no head). timm's ``VisionTransformer`` built with ``num_classes=0`` has exactly ALBEF's keys
(``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
mlp.fc2}.*``, ``norm.*``), so an ALBEF checkpoint loads with ``strict=True``. Sizes are data: a preset is a dict of
widths and depths, and any key can be overridden.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.models.vision_transformer import VisionTransformer

from vlm4st.config import ConfigError

#: Width/depth presets (data, not subclasses). ``vit_base_patch16`` is ALBEF's ViT-B/16.
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit_base_patch16": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0},
    "vit_small_patch16": {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4.0},
    "vit_tiny_patch16": {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0},
}

VIT_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate")


def vit_kwargs(preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Resolve a preset plus overrides into the keyword arguments of ``build_vit`` (validated)."""
    unknown = sorted(set(overrides) - set(VIT_KEYS))
    if unknown:
        raise ConfigError(f"model.vlm.vision: unknown key(s) {unknown}; expected 'preset' or one of {list(VIT_KEYS)}")
    kwargs: dict[str, Any] = {"img_size": 224, "mlp_ratio": 4.0, "drop_path_rate": 0.0}
    if preset is not None:
        if preset not in VIT_PRESETS:
            raise ConfigError(f"model.vlm.vision.preset: '{preset}' is not one of {sorted(VIT_PRESETS)}")
        kwargs.update(VIT_PRESETS[preset])
    kwargs.update(overrides)
    missing = [k for k in VIT_KEYS if k not in kwargs]
    if missing:
        raise ConfigError(f"model.vlm.vision: missing key(s) {missing} (give them or a 'preset')")
    if kwargs["img_size"] % kwargs["patch_size"] != 0:
        raise ConfigError(
            f"model.vlm.vision.img_size: {kwargs['img_size']} is not a multiple of patch_size "
            f"{kwargs['patch_size']}"
        )
    if kwargs["embed_dim"] % kwargs["num_heads"] != 0:
        raise ConfigError(
            f"model.vlm.vision.embed_dim: {kwargs['embed_dim']} is not divisible by num_heads {kwargs['num_heads']}"
        )
    return kwargs


def build_vit(preset: str | None = None, **overrides: Any) -> VisionTransformer:
    """Build an ALBEF-compatible ViT; ``forward_features(image (B,3,S,S))`` returns (B, 1+P, D) after the final LN.

    Keys: ``preset`` (a name in ``VIT_PRESETS``) and/or ``img_size``, ``patch_size``, ``embed_dim``, ``depth``,
    ``num_heads``, ``mlp_ratio``, ``drop_path_rate``. Attention uses fused SDPA.
    """
    kw = vit_kwargs(preset, **overrides)
    vit = VisionTransformer(
        img_size=kw["img_size"],
        patch_size=kw["patch_size"],
        embed_dim=kw["embed_dim"],
        depth=kw["depth"],
        num_heads=kw["num_heads"],
        mlp_ratio=kw["mlp_ratio"],
        drop_path_rate=kw["drop_path_rate"],
        num_classes=0,  # no head: ALBEF has none
        qkv_bias=True,
        class_token=True,
        global_pool="token",
        # timm's defaults already give LayerNorm(eps=1e-6), exact GELU, no pre-norm, no layer scale.
    )
    for block in vit.blocks:
        block.attn.fused_attn = True  # SDPA regardless of the TIMM_FUSED_ATTN environment variable
    return vit


def build_vit_from_config(cfg: Mapping[str, Any]) -> VisionTransformer:
    """``build_vit`` from a config mapping (``preset`` optional, other keys as in ``VIT_KEYS``)."""
    cfg = dict(cfg)
    return build_vit(cfg.pop("preset", None), **cfg)


def num_vit_tokens(vit: VisionTransformer) -> int:
    """Number of tokens ``forward_features`` returns: prefix (cls) tokens plus patches."""
    return int(vit.num_prefix_tokens + vit.patch_embed.num_patches)
