"""Vision encoder: timm's ``VisionTransformer`` with ALBEF's key names.

ALBEF's ViT is a plain timm-style ViT (cls token, learned absolute positions, LayerNorm eps 1e-6, qkv bias, exact
GELU, no head). timm's ``VisionTransformer`` built with ``num_classes=0`` has exactly ALBEF's keys
(``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
mlp.fc2}.*``, ``norm.*``), so an ALBEF checkpoint loads with ``strict=True``. Sizes come from the config
(``model.vlm.vision``, set by each preset in ``conf/model``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.models.vision_transformer import VisionTransformer

from vlm4st import checks
from vlm4st.errors import ConfigError

KEY = "model.vlm.vision"
VIT_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate")
#: Keys with a value here may be left out of the config; every other key of ``VIT_KEYS`` must be given.
VIT_DEFAULTS: dict[str, Any] = {"img_size": 224, "mlp_ratio": 4.0, "drop_path_rate": 0.0}


def vit_kwargs(**given: Any) -> dict[str, Any]:
    """Validate the ``model.vlm.vision`` keys into the keyword arguments of ``VisionTransformer``."""
    unknown = sorted(set(given) - set(VIT_KEYS))
    if unknown:
        raise ConfigError(f"model.vlm.vision: unknown key(s) {unknown}; expected keys among {list(VIT_KEYS)}")
    kwargs = {**VIT_DEFAULTS, **given}
    missing = [k for k in VIT_KEYS if k not in kwargs]
    if missing:
        raise ConfigError(f"model.vlm.vision: missing key(s) {missing}")
    for key in ("img_size", "patch_size", "embed_dim", "depth"):
        checks.positive_int(kwargs[key], f"{KEY}.{key}")
    if kwargs["img_size"] % kwargs["patch_size"] != 0:
        raise ConfigError(
            f"{KEY}.img_size: {kwargs['img_size']} is not a multiple of patch_size {kwargs['patch_size']}; "
            "expected a whole number of patches per side"
        )
    checks.num_heads(kwargs["num_heads"], kwargs["embed_dim"], f"{KEY}.num_heads", f"{KEY}.embed_dim")
    checks.positive_number(kwargs["mlp_ratio"], f"{KEY}.mlp_ratio")
    checks.probability(kwargs["drop_path_rate"], f"{KEY}.drop_path_rate")
    return kwargs


def build_vit(**keys: Any) -> VisionTransformer:
    """Build an ALBEF-compatible ViT; ``forward_features(image (B,3,S,S))`` returns (B, 1+P, D) after the final LN.

    Keys: ``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``drop_path_rate``
    (see ``VIT_KEYS``). Attention uses fused SDPA.
    """
    kw = vit_kwargs(**keys)
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
    """``build_vit`` from a config mapping (the keys of ``VIT_KEYS``)."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{KEY}: expected a mapping of ViT sizes (keys {list(VIT_KEYS)}) or null, got {cfg!r}")
    return build_vit(**dict(cfg))


def num_vit_tokens(vit: VisionTransformer) -> int:
    """Number of tokens ``forward_features`` returns: prefix (cls) tokens plus patches."""
    return int(vit.num_prefix_tokens + vit.patch_embed.num_patches)
