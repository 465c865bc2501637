"""The timm ViT factory: ALBEF key names, ALBEF defaults, config validation, fused attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlm4st.backbones.vit import build_vit, build_vit_from_config, num_vit_tokens
from vlm4st.config import ConfigError

BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


def albef_vit_keys(depth: int) -> set[str]:
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    keys |= {f"blocks.{i}.{part}.{t}" for i in range(depth) for part in BLOCK_PARTS for t in ("weight", "bias")}
    return keys


def test_keys_and_defaults_match_albef() -> None:
    vit = build_vit(img_size=224, patch_size=16, embed_dim=32, depth=12, num_heads=2, mlp_ratio=2.0)
    keys = set(vit.state_dict())
    assert keys == albef_vit_keys(12) and len(keys) == 150
    assert vit.pos_embed.shape == (1, 197, 32)
    assert vit.blocks[0].attn.qkv.weight.shape == (96, 32) and vit.blocks[0].attn.qkv.bias is not None
    norms = [m for m in vit.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)
    assert all(block.attn.fused_attn for block in vit.blocks)
    assert isinstance(vit.head, nn.Identity)


def test_forward_features_shape_and_fused_equals_manual_attention() -> None:
    vit = build_vit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = vit.forward_features(x)
        for block in vit.blocks:
            block.attn.fused_attn = False
        manual = vit.forward_features(x)
    assert fused.shape == (2, 1 + 16, 32) == (2, num_vit_tokens(vit), 32)
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=0)


SIZES = {"patch_size": 16, "embed_dim": 48, "depth": 1, "num_heads": 3}


def test_config_keys_build_the_vit_and_bad_keys_name_themselves() -> None:
    vit = build_vit_from_config(SIZES | {"img_size": 64})
    assert vit.embed_dim == 48 and len(vit.blocks) == 1 and vit.pos_embed.shape[1] == 17
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['preset'\]"):  # sizes come from the config only
        build_vit_from_config(SIZES | {"preset": "vit_tiny_patch16"})
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['depth'\]"):
        build_vit_from_config({k: v for k, v in SIZES.items() if k != "depth"})
    with pytest.raises(ConfigError, match="img_size"):
        build_vit_from_config(SIZES | {"img_size": 100})
