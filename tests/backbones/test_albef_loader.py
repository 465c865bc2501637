"""The ALBEF loader on a synthetic checkpoint in the exact 844-entry pretrain layout (and the fine-tuned one)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from vlm4st.backbones.albef import CheckpointError, load_albef_checkpoint
from vlm4st.models.vlm_module import VLMModule

from .albef_layout import FFN, FUSION, LAYERS, VOCAB, D, albef_pretrain_state_dict, to_finetuned_layout

VISION = {"img_size": 224, "patch_size": 16, "embed_dim": D, "depth": 12, "num_heads": 2, "mlp_ratio": FFN / D}
TEXT = {"hidden_size": D, "num_layers": LAYERS, "num_heads": 2, "intermediate_size": FFN, "fusion_layer": FUSION}


@pytest.fixture(scope="module")
def albef_sd() -> dict[str, torch.Tensor]:
    return albef_pretrain_state_dict()


def save(tmp_path: Path, obj: object, name: str = "ALBEF.pth") -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def expected_pos_embed(sd: dict[str, torch.Tensor]) -> torch.Tensor:
    return resample_abs_pos_embed(sd["visual_encoder.pos_embed"], new_size=[14, 14], num_prefix_tokens=1,
                                  interpolation="bicubic", antialias=False)


def check_vision(vlm: VLMModule, sd: dict[str, torch.Tensor]) -> None:
    for key, value in vlm.visual_encoder.state_dict().items():
        want = expected_pos_embed(sd) if key == "pos_embed" else sd[f"visual_encoder.{key}"]
        torch.testing.assert_close(value, want, atol=0, rtol=0, msg=key)


def check_text(vlm: VLMModule, sd: dict[str, torch.Tensor], prefix: str = "text_encoder.bert.") -> None:
    for key, value in vlm.text_encoder.state_dict().items():
        want = sd[prefix + key]
        if key == "embeddings.position_embeddings.weight" and not vlm.text_encoder.has_token_embeddings:
            want = want + sd[prefix + "embeddings.token_type_embeddings.weight"][0]  # folded segment-0 row
        torch.testing.assert_close(value, want, atol=0, rtol=0, msg=key)


def test_pretrain_layout_wrapped_in_model(tmp_path: Path, albef_sd: dict, caplog: pytest.LogCaptureFixture) -> None:
    path = save(tmp_path, {"model": albef_sd, "epoch": 29, "config": {"queue_size": 16}})
    with caplog.at_level(logging.INFO):
        vlm = VLMModule(VISION, TEXT, pretrained_path=path)
    check_vision(vlm, albef_sd)
    check_text(vlm, albef_sd)
    assert vlm.visual_encoder.pos_embed.shape == (1, 197, D)
    report = caplog.text
    for fragment in ("vision 150", "text 255", "from 257 to 197", "momentum copies (*_m): 419", "queues: 3",
                     "MLM head (cls.*): 7", "position_ids: 1", "word_embeddings (unused with encoder_embeds): 1",
                     "vision_proj/text_proj (unused): 4", "itm_head: 2", "temp: 1", path):
        assert fragment in report, fragment


def test_bare_state_dict_with_full_embeddings(tmp_path: Path, albef_sd: dict) -> None:
    vlm = VLMModule(VISION, {**TEXT, "vocab_size": VOCAB}, pretrained_path=save(tmp_path, albef_sd))
    check_vision(vlm, albef_sd)
    check_text(vlm, albef_sd)
    assert len(vlm.text_encoder.state_dict()) == 257  # ALBEF's text layout minus position_ids and the head


def test_finetuned_layout_without_bert_prefix(tmp_path: Path, albef_sd: dict) -> None:
    finetuned = to_finetuned_layout(albef_sd)
    vlm = VLMModule(VISION, TEXT, pretrained_path=save(tmp_path, {"model": finetuned}))
    check_vision(vlm, finetuned)
    check_text(vlm, finetuned, prefix="text_encoder.")


def test_bare_key_wins_over_bert_twin(tmp_path: Path, albef_sd: dict) -> None:
    sd = dict(albef_sd)
    key = "encoder.layer.3.attention.self.query.weight"
    sd[f"text_encoder.{key}"] = torch.full_like(sd[f"text_encoder.bert.{key}"], 7.0)
    vlm = VLMModule(None, TEXT, pretrained_path=save(tmp_path, sd))
    assert torch.equal(vlm.text_encoder.state_dict()[key], sd[f"text_encoder.{key}"])


def test_single_encoder_loads(tmp_path: Path, albef_sd: dict, caplog: pytest.LogCaptureFixture) -> None:
    path = save(tmp_path, albef_sd)
    with caplog.at_level(logging.INFO):
        vision_only = VLMModule(VISION, None, pretrained_path=path)
    check_vision(vision_only, albef_sd)
    assert "text_encoder (not built or loaded from other weights): 257" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        text_only = VLMModule(None, TEXT, pretrained_path=path)
    check_text(text_only, albef_sd)
    assert "text 99" in caplog.text and "visual_encoder (not built): 150" in caplog.text
    assert "fusion layers (not built without a vision encoder): 156" in caplog.text


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("missing", "text_encoder.encoder.layer.3.attention.self.query.weight"),
        ("renamed", "visual_encoder.blocks.0.attn.qkv_fused.weight"),
        ("stray", "some_head.weight"),
    ],
)
def test_key_errors_name_the_key(tmp_path: Path, albef_sd: dict, edit: str, named: str) -> None:
    sd = dict(albef_sd)
    if edit == "missing":
        del sd["text_encoder.bert.encoder.layer.3.attention.self.query.weight"]
    elif edit == "renamed":
        sd["visual_encoder.blocks.0.attn.qkv_fused.weight"] = sd.pop("visual_encoder.blocks.0.attn.qkv.weight")
    else:
        sd["some_head.weight"] = torch.zeros(2)
    path = save(tmp_path, sd)
    with pytest.raises(CheckpointError) as err:
        VLMModule(VISION, TEXT, pretrained_path=path)
    assert named in str(err.value) and path in str(err.value)
    if edit == "renamed":
        assert "visual_encoder.blocks.0.attn.qkv.weight" in str(err.value)  # reported missing as well


def test_shape_mismatch_raises(tmp_path: Path, albef_sd: dict) -> None:
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight"):
        VLMModule({**VISION, "embed_dim": 64, "num_heads": 2}, None, pretrained_path=save(tmp_path, albef_sd))


def test_missing_file_names_path_and_config_key(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "ALBEF_4M.pth"
    with pytest.raises(FileNotFoundError, match=r"model\.vlm\.pretrained_path") as err:
        VLMModule(VISION, TEXT, pretrained_path=str(path))
    assert str(path) in str(err.value)


def test_unreadable_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "ALBEF.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_albef_checkpoint(path, None, None)
