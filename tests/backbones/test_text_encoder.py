"""AlbefTextEncoder against an independent pure-torch BERT, SDPA vs eager, bidirectionality, checkpointing."""

from __future__ import annotations

import pytest
import torch

from vlm4st.backbones.text_encoder import AlbefTextEncoder, build_text_encoder_from_config
from vlm4st.config import ConfigError

from .reference_bert import reference_bert

D, HEADS, N, FUSION, FFN, VOCAB, L, NV = 32, 4, 4, 2, 64, 50, 9, 6


def make_encoder(**kw: object) -> AlbefTextEncoder:
    args = dict(hidden_size=D, num_layers=N, num_heads=HEADS, intermediate_size=FFN, fusion_layer=FUSION,
                max_position_embeddings=40)
    args.update(kw)
    enc = AlbefTextEncoder(**args)
    with torch.no_grad():  # non-trivial weights everywhere, LayerNorm affine included
        for p in enc.parameters():
            p.normal_(0.0, 0.3)
    return enc.eval()


def run_both(enc: AlbefTextEncoder, mode: str, embed_inputs: bool, **inputs: torch.Tensor) -> tuple:
    kw = dict(num_heads=HEADS, num_layers=N, fusion_layer=FUSION, eps=1e-12, mode=mode)
    ref_in = {"input_ids": inputs.get("input_ids"), "embeds": inputs.get("encoder_embeds"),
              "mask": inputs.get("attention_mask"), "image": inputs.get("encoder_hidden_states"),
              "image_mask": inputs.get("encoder_attention_mask")}
    with torch.no_grad():
        ours = enc(mode=mode, **inputs)
        ref = reference_bert(dict(enc.state_dict()), embed_inputs=embed_inputs, **kw, **ref_in)
    return ours, ref


def padded_mask(B: int, n: int, valid: list[int]) -> torch.Tensor:
    return (torch.arange(n)[None, :] < torch.tensor(valid)[:, None]).long()  # (B, n)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["text", "fusion", "multi_modal"])
@pytest.mark.parametrize("source", ["input_ids", "embeds_raw", "embeds_positions", "embeds_positions_vocab"])
def test_matches_reference_bert(attn: str, mode: str, source: str) -> None:
    torch.manual_seed(0)
    vocab = VOCAB if source in ("input_ids", "embeds_positions_vocab") else None
    embed_positions = source != "embeds_raw"
    enc = make_encoder(vocab_size=vocab, embed_positions=embed_positions, attn_implementation=attn)
    inputs: dict[str, torch.Tensor] = {"attention_mask": padded_mask(3, L, [L, 5, 2])}
    if source == "input_ids":
        inputs["input_ids"] = torch.randint(0, VOCAB, (3, L))
    else:
        inputs["encoder_embeds"] = torch.randn(3, L, D)
    if mode != "text":
        inputs["encoder_hidden_states"] = torch.randn(3, NV, D)
        inputs["encoder_attention_mask"] = padded_mask(3, NV, [NV, 4, 1])
    # Embeddings apply to input_ids always, to encoder_embeds only when the pass starts at layer 0.
    embed = source == "input_ids" or (embed_positions and mode != "fusion")
    ours, ref = run_both(enc, mode, embed, **inputs)
    assert ours.shape == (3, L, D)
    valid = inputs["attention_mask"].bool()  # padded query rows are irrelevant, compare real tokens
    torch.testing.assert_close(ours[valid], ref[valid], atol=1e-5, rtol=0)


def test_sdpa_and_eager_agree() -> None:
    torch.manual_seed(1)
    sdpa = make_encoder(attn_implementation="sdpa")
    eager = AlbefTextEncoder(hidden_size=D, num_layers=N, num_heads=HEADS, intermediate_size=FFN,
                             fusion_layer=FUSION, max_position_embeddings=40, attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    x, img, m = torch.randn(2, L, D), torch.randn(2, NV, D), padded_mask(2, L, [L, 4])
    with torch.no_grad():
        a = sdpa(encoder_embeds=x, attention_mask=m, encoder_hidden_states=img, mode="multi_modal")
        b = eager(encoder_embeds=x, attention_mask=m, encoder_hidden_states=img, mode="multi_modal")
    torch.testing.assert_close(a[m.bool()], b[m.bool()], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["text", "fusion"])
def test_self_attention_is_bidirectional(mode: str) -> None:
    enc = AlbefTextEncoder(hidden_size=D, num_layers=N, num_heads=HEADS, intermediate_size=FFN, fusion_layer=FUSION,
                           max_position_embeddings=40).eval()  # BERT init: attention spread over all tokens
    x = torch.randn(1, L, D)
    img = torch.randn(1, NV, D) if mode == "fusion" else None
    x2 = x.clone()
    x2[:, -1] = torch.randn(D)  # change only the last token
    with torch.no_grad():
        a = enc(encoder_embeds=x, encoder_hidden_states=img, mode=mode)
        b = enc(encoder_embeds=x2, encoder_hidden_states=img, mode=mode)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4  # token 0 sees later tokens (a causal mask would hide them)


def test_padding_is_ignored() -> None:
    enc = make_encoder()
    m = padded_mask(1, L, [5])
    x = torch.randn(1, L, D)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, L - 5, D)
    with torch.no_grad():
        a = enc(encoder_embeds=x, attention_mask=m, mode="text")
        b = enc(encoder_embeds=x2, attention_mask=m, mode="text")
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-6, rtol=0)


def test_fusion_without_image_raises() -> None:
    enc = make_encoder()
    with pytest.raises(ValueError, match="encoder_hidden_states is None"):
        enc(encoder_embeds=torch.randn(1, L, D), mode="fusion")
    with pytest.raises(ValueError, match="runs no fusion layer"):
        enc(encoder_embeds=torch.randn(1, L, D), encoder_hidden_states=torch.randn(1, NV, D), mode="text")
    text_only = make_encoder(cross_attention=False)
    with pytest.raises(ValueError, match="built without cross-attention"):
        text_only(encoder_embeds=torch.randn(1, L, D), encoder_hidden_states=torch.randn(1, NV, D), mode="fusion")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_without_cross_attention_keeps_the_depth(attn: str) -> None:
    torch.manual_seed(2)
    enc = make_encoder(cross_attention=False, attn_implementation=attn)
    assert len(enc.encoder.layer) == N and enc.num_fusion_layers == N - FUSION
    assert not any(hasattr(layer, "crossattention") for layer in enc.encoder.layer)
    assert not any(".crossattention." in k for k in enc.state_dict())
    x, m = torch.randn(3, L, D), padded_mask(3, L, [L, 5, 2])
    with torch.no_grad():
        text = enc(encoder_embeds=x, attention_mask=m, mode="text")
        fused = enc(encoder_embeds=text, attention_mask=m, mode="fusion")  # no image tokens
        whole = enc(encoder_embeds=x, attention_mask=m, mode="multi_modal")
    # A plain N-layer BERT: ``reference_bert`` with no fusion layer at all, run over every layer.
    ref = reference_bert(dict(enc.state_dict()), num_heads=HEADS, num_layers=N, fusion_layer=N, eps=1e-12,
                         mode="multi_modal", embeds=x, embed_inputs=True, mask=m)
    valid = m.bool()
    torch.testing.assert_close(fused[valid], ref[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(whole[valid], ref[valid], atol=1e-5, rtol=0)
    assert (fused - text)[valid].abs().max() > 1e-3  # the fusion-position layers did run


def test_only_fusion_layers_have_cross_attention() -> None:
    enc = make_encoder()
    has_cross = [hasattr(layer, "crossattention") for layer in enc.encoder.layer]
    assert has_cross == [i >= FUSION for i in range(N)]
    assert all(not layer.attention.self.is_causal for layer in enc.encoder.layer)
    assert not any(k.startswith("embeddings.word") or "token_type" in k for k in enc.state_dict())


def test_grad_checkpointing_gives_same_gradients() -> None:
    enc = make_encoder(hidden_dropout=0.0, attention_dropout=0.0).train()
    x, img = torch.randn(2, L, D), torch.randn(2, NV, D)

    def grads(flag: bool) -> list[torch.Tensor]:
        enc.zero_grad()
        enc.set_grad_checkpointing(flag)
        enc(encoder_embeds=x, encoder_hidden_states=img, mode="multi_modal").square().mean().backward()
        return [p.grad.clone() for p in enc.parameters()]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_config_keys_build_the_encoder_and_bad_keys_name_themselves() -> None:
    sizes = {"hidden_size": 48, "num_layers": 4, "num_heads": 4, "intermediate_size": 96, "fusion_layer": 2}
    enc = build_text_encoder_from_config(sizes)
    assert enc.hidden_size == 48 and len(enc.encoder.layer) == 4
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['hiden_size'\]"):
        build_text_encoder_from_config(sizes | {"hiden_size": 3})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['preset'\]"):  # sizes come from the config only
        build_text_encoder_from_config(sizes | {"preset": "bert_base"})
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['intermediate_size'\]"):
        build_text_encoder_from_config({k: v for k, v in sizes.items() if k != "intermediate_size"})
    with pytest.raises(ConfigError, match="fusion_layer"):
        AlbefTextEncoder(hidden_size=D, num_layers=2, num_heads=HEADS, intermediate_size=FFN, fusion_layer=3)
