"""An independent pure-torch post-LN BERT over ALBEF's text key layout, used to check ``AlbefTextEncoder``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reference_bert(
    sd: dict[str, torch.Tensor],
    *,
    num_heads: int,
    num_layers: int,
    fusion_layer: int,
    eps: float,
    mode: str,
    input_ids: torch.Tensor | None = None,
    embeds: torch.Tensor | None = None,
    embed_inputs: bool = False,
    mask: torch.Tensor | None = None,
    image: torch.Tensor | None = None,
    image_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """ALBEF's BERT forward written out from the equations (eval mode, no dropout)."""

    def ln(x: torch.Tensor, p: str) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), sd[f"{p}.weight"], sd[f"{p}.bias"], eps)

    def lin(x: torch.Tensor, p: str) -> torch.Tensor:
        return x @ sd[f"{p}.weight"].T + sd[f"{p}.bias"]

    def attention(xq: torch.Tensor, xkv: torch.Tensor, p: str, m: torch.Tensor | None) -> torch.Tensor:
        B, Lq, D = xq.shape
        dh = D // num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, t.shape[1], num_heads, dh).transpose(1, 2)  # (B, H, L, dh)

        q, k, v = heads(lin(xq, f"{p}.query")), heads(lin(xkv, f"{p}.key")), heads(lin(xkv, f"{p}.value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, Lq, Lk)
        if m is not None:
            scores = scores.masked_fill(m[:, None, None, :] == 0, float("-inf"))
        out = scores.softmax(-1) @ v  # (B, H, Lq, dh)
        return out.transpose(1, 2).reshape(B, Lq, D)

    start, end = {"text": (0, fusion_layer), "fusion": (fusion_layer, num_layers), "multi_modal": (0, num_layers)}[
        mode
    ]
    if input_ids is not None:
        h = sd["embeddings.word_embeddings.weight"][input_ids]
        embed_inputs = True
    else:
        h = embeds
    if embed_inputs:
        L = h.shape[1]
        h = h + sd["embeddings.position_embeddings.weight"][:L]
        if "embeddings.token_type_embeddings.weight" in sd:
            h = h + sd["embeddings.token_type_embeddings.weight"][0]
        h = ln(h, "embeddings.LayerNorm")
    for i in range(start, end):
        p = f"encoder.layer.{i}"
        h = ln(lin(attention(h, h, f"{p}.attention.self", mask), f"{p}.attention.output.dense") + h,
               f"{p}.attention.output.LayerNorm")
        if i >= fusion_layer:
            c = attention(h, image, f"{p}.crossattention.self", image_mask)
            h = ln(lin(c, f"{p}.crossattention.output.dense") + h, f"{p}.crossattention.output.LayerNorm")
        f = F.gelu(lin(h, f"{p}.intermediate.dense"))
        h = ln(lin(f, f"{p}.output.dense") + h, f"{p}.output.LayerNorm")
    return h
