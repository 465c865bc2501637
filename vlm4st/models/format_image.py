"""Image path of the DualPathFormatTransformer: fused features -> a 3-channel image for the ViT.

Per cell, three learned channels are read out of each frame and mixed over time by a per-cell, per-channel
softmax attention (any T). The map is resized to S x S, then each channel is standardised per sample (GroupNorm
with one group per channel: zero mean and unit variance like an ImageNet-normalised image, learnable affine, no
batch statistics, so the samples of different datasets in one batch never shift each other's scale). S is not a
parameter of this module: the model passes the VLM's own image size at call time, so the size has a single
source (``model.vlm.vision.img_size``) and cannot disagree with the ViT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlm4st import checks

IMAGE_CHANNELS = 3  # the ViT's patch embedding takes RGB-like input
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
KEY = "model.format_transformer.image"


class ImageProjector(nn.Module):
    """(B, T, H, W, d) -> (B, 3, S, S), normalised per sample and channel."""

    def __init__(self, d_model: int, interpolation: str = "bilinear") -> None:
        super().__init__()
        d_model = checks.positive_int(d_model, f"{KEY}.d_model")
        self.interpolation = checks.choice(interpolation, INTERPOLATIONS, f"{KEY}.interpolation")
        self.score = nn.Linear(d_model, IMAGE_CHANNELS)
        self.value = nn.Linear(d_model, IMAGE_CHANNELS)
        self.norm = nn.GroupNorm(IMAGE_CHANNELS, IMAGE_CHANNELS)

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        H, W = x.shape[2:4]
        attn = torch.softmax(self.score(x), dim=1)  # (B, T, H, W, 3), over time
        img = (attn * self.value(x)).sum(dim=1)  # (B, H, W, 3)
        img = img.permute(0, 3, 1, 2)  # (B, 3, H, W)
        if tuple(img.shape[-2:]) != (size, size):
            extra = {} if self.interpolation == "nearest" else {"align_corners": False, "antialias": min(H, W) > size}
            img = F.interpolate(img, size=(size, size), mode=self.interpolation, **extra)  # (B, 3, S, S)
        return self.norm(img)  # (B, 3, S, S)
