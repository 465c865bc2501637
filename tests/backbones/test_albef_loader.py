"""The ALBEF loader on a synthetic checkpoint in the exact 844-entry pretrain layout (and the fine-tuned one)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from vlm4st.backbones import albef, convert
from vlm4st.backbones.albef import load_albef_checkpoint
from vlm4st.config import ConfigError
from vlm4st.errors import CheckpointError
from vlm4st.models.vlm_module import VLMModule

from .albef_layout import (
    LAYERS,
    TEXT,
    VISION,
    VOCAB,
    D,
    albef_pretrain_state_dict,
    encoder_keys_only,
    hf_bert_text_state_dict,
    to_finetuned_layout,
)


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
        vlm = VLMModule(VISION, TEXT, freeze="auto", pretrained_path=path)
    check_vision(vlm, albef_sd)
    check_text(vlm, albef_sd)
    assert vlm.visual_encoder.pos_embed.shape == (1, 197, D)
    report = caplog.text
    for fragment in ("vision 150", "text 255", "from 257 to 197", "momentum copies (*_m): 419", "queues: 3",
                     "MLM head (cls.*): 7", "position_ids: 1", "word_embeddings (unused with encoder_embeds): 1",
                     "vision_proj/text_proj (unused): 4", "itm_head: 2", "temp: 1", path):
        assert fragment in report, fragment


def test_bare_state_dict_with_full_embeddings(tmp_path: Path, albef_sd: dict) -> None:
    vlm = VLMModule(VISION, {**TEXT, "vocab_size": VOCAB}, freeze="auto", pretrained_path=save(tmp_path, albef_sd))
    check_vision(vlm, albef_sd)
    check_text(vlm, albef_sd)
    assert len(vlm.text_encoder.state_dict()) == 257  # ALBEF's text layout minus position_ids and the head


def test_finetuned_layout_without_bert_prefix(tmp_path: Path, albef_sd: dict) -> None:
    finetuned = to_finetuned_layout(albef_sd)
    vlm = VLMModule(VISION, TEXT, freeze="auto", pretrained_path=save(tmp_path, {"model": finetuned}))
    check_vision(vlm, finetuned)
    check_text(vlm, finetuned, prefix="text_encoder.")


def test_bare_key_wins_over_bert_twin(tmp_path: Path, albef_sd: dict) -> None:
    sd = dict(albef_sd)
    key = "encoder.layer.3.attention.self.query.weight"
    sd[f"text_encoder.{key}"] = torch.full_like(sd[f"text_encoder.bert.{key}"], 7.0)
    vlm = VLMModule(None, TEXT, freeze="auto", pretrained_path=save(tmp_path, sd))
    assert torch.equal(vlm.text_encoder.state_dict()[key], sd[f"text_encoder.{key}"])


def test_single_encoder_loads(tmp_path: Path, albef_sd: dict, caplog: pytest.LogCaptureFixture) -> None:
    path = save(tmp_path, albef_sd)
    with caplog.at_level(logging.INFO):
        vision_only = VLMModule(VISION, None, freeze="auto", pretrained_path=path)
    check_vision(vision_only, albef_sd)
    assert "text_encoder (not built or loaded from other weights): 257" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        text_only = VLMModule(None, TEXT, freeze="auto", pretrained_path=path)
    check_text(text_only, albef_sd)  # every layer, the fusion-position self-attention and FFN included
    assert len(text_only.text_encoder.encoder.layer) == LAYERS
    assert not any(".crossattention." in k for k in text_only.text_encoder.state_dict())
    assert "text 195" in caplog.text and "visual_encoder (not built): 150" in caplog.text
    assert "fusion cross-attention (not built without a vision encoder): 60" in caplog.text


@pytest.mark.parametrize("held", ["vision", "text"])
def test_partial_checkpoint_loads_the_encoders_it_holds(
    tmp_path: Path, albef_sd: dict, held: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        vlm = VLMModule(VISION, TEXT, freeze="auto", pretrained_path=save(tmp_path, encoder_keys_only(albef_sd, held)))
    (check_vision if held == "vision" else check_text)(vlm, albef_sd)
    other = "text" if held == "vision" else "vision"
    assert {n: w.pretrained for n, w in vlm.encoder_weights.items()} == {held: True, other: False}
    prefix = {"vision": "visual_encoder", "text": "text_encoder"}[other]
    assert f"holds no {prefix}.* keys" in caplog.text
    assert f"loaded {tmp_path / 'ALBEF.pth'}: tensors {held}" in caplog.text
    random = getattr(vlm, prefix).state_dict()
    key = "blocks.0.attn.qkv.weight" if other == "vision" else "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(random[key], albef_sd[f"{prefix}.{key}" if other == "vision" else f"{prefix}.bert.{key}"])


def test_checkpoint_without_encoder_keys_raises(tmp_path: Path, albef_sd: dict) -> None:
    path = save(tmp_path, encoder_keys_only(albef_sd, "none"))  # momentum copies, queues and heads only
    with pytest.raises(CheckpointError, match=r"no weights load into the built encoders \(vision, text\)"):
        VLMModule(VISION, TEXT, freeze="auto", pretrained_path=path)
    text_sd = encoder_keys_only(albef_sd, "text")
    with pytest.raises(CheckpointError, match=r"\(vision\); the file holds 0 visual_encoder"):
        VLMModule(VISION, None, freeze="auto", pretrained_path=save(tmp_path, text_sd))


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
        VLMModule(VISION, TEXT, freeze="auto", pretrained_path=path)
    assert named in str(err.value) and path in str(err.value)
    if edit == "renamed":
        assert "visual_encoder.blocks.0.attn.qkv.weight" in str(err.value)  # reported missing as well


def test_shape_mismatch_raises(tmp_path: Path, albef_sd: dict) -> None:
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight"):
        VLMModule({**VISION, "embed_dim": 64, "num_heads": 2}, None, freeze="auto",
                  pretrained_path=save(tmp_path, albef_sd))


def _truncated(path: Path) -> None:
    torch.save({"visual_encoder.cls_token": torch.zeros(1, 1, D)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


#: A file ``pretrained_path`` may name that holds no usable weights: (what to write at the path, what the error says).
UNUSABLE_FILES = {
    "missing": (None, "file not found"),
    "a folder": (lambda path: path.mkdir(), "is a folder, not a weights file"),
    "random bytes": (lambda path: path.write_bytes(bytes(range(256)) * 8), "cannot read it as a torch checkpoint"),
    "truncated": (_truncated, "cannot read it as a torch checkpoint"),
    "an object weights_only refuses": (lambda path: torch.save(Path("x"), path), r"refused it \(Unsupported global"),
    "a tensor": (lambda path: torch.save(torch.zeros(3), path), "holds a Tensor, not a state dict"),
    "an empty dict": (lambda path: torch.save({}, path), "holds an empty state dict"),
    "numbers": (lambda path: torch.save({"epoch": 3}, path), "entries that are not tensors"),
    "integer keys": (lambda path: torch.save({0: torch.zeros(2)}, path), "not tensors under string keys"),
}


@pytest.mark.parametrize("case", list(UNUSABLE_FILES))
def test_unusable_file_is_one_line_naming_the_file_and_key(tmp_path: Path, case: str) -> None:
    write, says = UNUSABLE_FILES[case]
    path = tmp_path / "nowhere" / "ALBEF_4M.pth"
    if write is not None:
        path.parent.mkdir()
        write(path)
    with pytest.raises(CheckpointError, match=says) as err:
        VLMModule(VISION, TEXT, freeze="auto", pretrained_path=str(path))
    message = str(err.value)
    assert str(path) in message and "model.vlm.pretrained_path" in message and "\n" not in message


def test_file_without_read_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before torch opens the file (``os.access``; the test runs as any user, so access is stubbed)."""
    path = save(tmp_path, {"visual_encoder.cls_token": torch.zeros(1, 1, D)})
    monkeypatch.setattr(albef.os, "access", lambda *_: False)
    with pytest.raises(CheckpointError, match=r"no permission to read it \(config key model\.vlm\.pretrained_path"):
        VLMModule(VISION, TEXT, freeze="auto", pretrained_path=path)


def test_unreadable_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "ALBEF.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_albef_checkpoint(path, None, None)


def test_albef_file_with_nothing_to_fill_is_a_config_error(tmp_path: Path, albef_sd: dict) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in hf_bert_text_state_dict(albef_sd).items()},
              str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"model\.vlm\.pretrained_path is set, but no encoder takes ALBEF"):
        VLMModule(None, TEXT, freeze="auto", pretrained_path=save(tmp_path, albef_sd),
                  text_pretrained_path=str(folder))


def test_a_pickled_file_is_refused_by_every_config_and_converted_only_by_its_owner(tmp_path: Path, albef_sd: dict,
                                                                                    capsys) -> None:
    """No config can turn full unpickling on (``weights_only`` is no argument of the model); the refusal tells the
    owner of a trusted file the one command that makes a tensors-only copy, which then loads as the original."""
    pickled = tmp_path / "ALBEF.pth"
    torch.save({"model": albef_sd, "args": argparse.Namespace(lr=1e-4)}, pickled)  # ALBEF-style extra objects
    with pytest.raises(CheckpointError, match=r"weights-only unpickler refused.*vlm4st\.backbones\.convert "
                                              r"--trust-pickle") as err:
        VLMModule(VISION, TEXT, freeze="auto", pretrained_path=str(pickled))
    assert str(pickled) in str(err.value)
    with pytest.raises(TypeError, match="weights_only"):
        VLMModule(VISION, TEXT, freeze="auto", pretrained_path=str(pickled), weights_only=False)  # type: ignore[call-arg]

    with pytest.raises(SystemExit) as refused:  # the trust must be said
        convert.main([str(pickled), str(tmp_path / "copy.pth")])
    assert refused.value.code == 2
    convert.main(["--trust-pickle", str(pickled), str(tmp_path / "copy.pth")])
    vlm = VLMModule(VISION, TEXT, freeze="auto", pretrained_path=str(tmp_path / "copy.pth"))
    assert vlm.encoder_weights["vision"].pretrained and vlm.encoder_weights["text"].pretrained
    reference = VLMModule(VISION, TEXT, freeze="auto", pretrained_path=save(tmp_path, albef_sd))
    assert all(torch.equal(a, b) for a, b in zip(vlm.state_dict().values(), reference.state_dict().values()))


def test_convert_reports_a_damaged_file_in_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "ALBEF.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as stop:
        convert.main(["--trust-pickle", str(bad), str(tmp_path / "copy.pth")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and "\n" not in err
