"""A synthetic state dict in the exact ALBEF pretrain layout (844 entries), generated from the family table, its
partial (one encoder) and HF-BERT text variants, and the VLMModule encoder configs that fit it."""

from __future__ import annotations

import torch

# Tiny widths, ALBEF's structure: 12 ViT blocks, 12 BERT layers with fusion from 6, 257-token pos_embed.
D, FFN, VOCAB, PATCH, POS, MAX_POS, PROJ, QUEUE, DEPTH, LAYERS, FUSION = 32, 64, 50, 16, 257, 512, 8, 16, 12, 12, 6

#: VLMModule ``vision`` / ``text`` configs of this layout (at image 224 the 257-token pos_embed resamples to 197).
VISION = {"img_size": 224, "patch_size": PATCH, "embed_dim": D, "depth": DEPTH, "num_heads": 2, "mlp_ratio": FFN / D}
TEXT = {"hidden_size": D, "num_layers": LAYERS, "num_heads": 2, "intermediate_size": FFN, "fusion_layer": FUSION}

VIT_BLOCK = {  # part -> (weight shape, bias shape)
    "norm1": ((D,), (D,)), "attn.qkv": ((3 * D, D), (3 * D,)), "attn.proj": ((D, D), (D,)),
    "norm2": ((D,), (D,)), "mlp.fc1": ((FFN, D), (FFN,)), "mlp.fc2": ((D, FFN), (D,)),
}
BERT_ATTENTION = {"self.query": (D, D), "self.key": (D, D), "self.value": (D, D), "output.dense": (D, D)}


def vit_shapes() -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, D), "pos_embed": (1, POS, D),
                                     "patch_embed.proj.weight": (D, 3, PATCH, PATCH), "patch_embed.proj.bias": (D,)}
    for i in range(DEPTH):
        for part, (w, b) in VIT_BLOCK.items():
            s[f"blocks.{i}.{part}.weight"], s[f"blocks.{i}.{part}.bias"] = w, b
    s["norm.weight"], s["norm.bias"] = (D,), (D,)
    return s


def bert_shapes() -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (VOCAB, D), "embeddings.position_embeddings.weight": (MAX_POS, D),
        "embeddings.token_type_embeddings.weight": (2, D), "embeddings.LayerNorm.weight": (D,),
        "embeddings.LayerNorm.bias": (D,),
    }
    for i in range(LAYERS):
        blocks = ["attention"] + (["crossattention"] if i >= FUSION else [])
        for blk in blocks:
            for part, w in BERT_ATTENTION.items():
                s[f"encoder.layer.{i}.{blk}.{part}.weight"], s[f"encoder.layer.{i}.{blk}.{part}.bias"] = w, (w[0],)
            s[f"encoder.layer.{i}.{blk}.output.LayerNorm.weight"] = (D,)
            s[f"encoder.layer.{i}.{blk}.output.LayerNorm.bias"] = (D,)
        s[f"encoder.layer.{i}.intermediate.dense.weight"], s[f"encoder.layer.{i}.intermediate.dense.bias"] = (
            (FFN, D), (FFN,))
        s[f"encoder.layer.{i}.output.dense.weight"], s[f"encoder.layer.{i}.output.dense.bias"] = (D, FFN), (D,)
        s[f"encoder.layer.{i}.output.LayerNorm.weight"], s[f"encoder.layer.{i}.output.LayerNorm.bias"] = (D,), (D,)
    return s


def mlm_head_shapes() -> dict[str, tuple[int, ...]]:
    return {"cls.predictions.bias": (VOCAB,), "cls.predictions.transform.dense.weight": (D, D),
            "cls.predictions.transform.dense.bias": (D,), "cls.predictions.transform.LayerNorm.weight": (D,),
            "cls.predictions.transform.LayerNorm.bias": (D,), "cls.predictions.decoder.weight": (VOCAB, D),
            "cls.predictions.decoder.bias": (VOCAB,)}


def albef_pretrain_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """All 844 entries of ALBEF.pth's ``model`` dict, random values, tiny widths."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {}
    for vit_prefix in ("visual_encoder.", "visual_encoder_m."):
        shapes |= {vit_prefix + k: v for k, v in vit_shapes().items()}
    for text_prefix in ("text_encoder.", "text_encoder_m."):
        shapes |= {f"{text_prefix}bert.{k}": v for k, v in bert_shapes().items()}
        shapes |= {text_prefix + k: v for k, v in mlm_head_shapes().items()}
    for proj in ("vision_proj", "text_proj", "vision_proj_m", "text_proj_m"):
        shapes[f"{proj}.weight"], shapes[f"{proj}.bias"] = (PROJ, D), (PROJ,)
    shapes |= {"itm_head.weight": (2, D), "itm_head.bias": (2,), "temp": (),
               "image_queue": (PROJ, QUEUE), "text_queue": (PROJ, QUEUE)}
    sd = {k: torch.randn(v, generator=g) for k, v in shapes.items()}
    for prefix in ("text_encoder.", "text_encoder_m."):
        sd[f"{prefix}bert.embeddings.position_ids"] = torch.arange(MAX_POS)[None, :]
    sd["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    assert len(sd) == 844, len(sd)
    return sd


def to_finetuned_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fine-tuned ALBEF checkpoints: plain BertModel text encoders (no ``bert.``), an extra ``idx_queue``."""
    out = {k.replace("text_encoder.bert.", "text_encoder.").replace("text_encoder_m.bert.", "text_encoder_m."): v
           for k, v in sd.items()}
    out["idx_queue"] = torch.zeros(1, QUEUE, dtype=torch.long)
    return out


def encoder_keys_only(sd: dict[str, torch.Tensor], encoder: str) -> dict[str, torch.Tensor]:
    """A partial ALBEF file: ``encoder`` (``"vision"``, ``"text"`` or ``"none"``) keeps its ``visual_encoder.*`` /
    ``text_encoder.*`` keys, the other encoder's are removed; momentum copies, queues and heads stay as in ALBEF."""
    drop = {"vision": ("text_encoder.",), "text": ("visual_encoder.",), "none": ("text_encoder.", "visual_encoder.")}
    return {k: v for k, v in sd.items() if not k.startswith(drop[encoder])}


def hf_bert_text_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text part of an ALBEF dict in HF BERT layout (``bert.*``), which has no ``crossattention.*``."""
    prefix = "text_encoder.bert."
    return {"bert." + k.removeprefix(prefix): v for k, v in sd.items()
            if k.startswith(prefix) and ".crossattention." not in k and not k.endswith("position_ids")}
