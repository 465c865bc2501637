"""Bilinear grid resizing (``align_corners=False``), as the reference does before normalisation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vlm4st.data.errors import DataValueError

_BLOCK = 4096  # frames resized at once


def target_size(
    resize_to: int | list[int] | tuple[int, ...] | None, native: tuple[int, int], source: str
) -> tuple[int, int]:
    """The model grid: ``native`` when ``resize_to`` is null, else (s, s) for an int or (h, w) for a pair."""
    if resize_to is None:
        return native
    size = (resize_to, resize_to) if isinstance(resize_to, int) else tuple(int(v) for v in resize_to)
    if len(size) != 2 or min(size) < 1:
        raise DataValueError(source, f"dataset.resize_to={resize_to!r}; expected null, an int or [H, W] >= 1")
    return int(size[0]), int(size[1])


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(F, H, W) -> (F, h, w) float32, bilinear; a no-op when the size already matches."""
    if frames.shape[1:] == tuple(size):
        return frames
    out = np.empty((len(frames), *size), dtype=np.float32)
    for b in range(0, len(frames), _BLOCK):
        block = torch.from_numpy(np.ascontiguousarray(frames[b : b + _BLOCK], dtype=np.float32))
        out[b : b + _BLOCK] = resize_maps(block, size).numpy()
    return out


def resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) -> (..., h, w) bilinear, any leading dims; float dtypes only."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])  # (N, 1, H, W)
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)  # (N, 1, h, w)
    return out.reshape(*lead, *size)
