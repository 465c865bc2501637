"""Per-dataset MinMax scaling to [-1, 1]: ``x' = 2 (x - min) / (max - min) - 1``, pooled or per channel.

The scaler is a plain-number object (``state_dict``/``from_state_dict``) so checkpoints can store it and a
later ``task=test``/``predict`` run normalises exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vlm4st.data.errors import DataValueError

ArrayLike = np.ndarray | torch.Tensor


class MinMaxScaler:
    """``minimum``/``maximum`` hold one value (pooled) or one per channel (``per_channel``)."""

    def __init__(self, minimum: Sequence[float], maximum: Sequence[float], per_channel: bool = False) -> None:
        self.minimum = [float(v) for v in minimum]
        self.maximum = [float(v) for v in maximum]
        self.per_channel = bool(per_channel)
        if len(self.minimum) != len(self.maximum) or not self.minimum:
            raise ValueError("scaler needs as many minima as maxima, at least one")
        if not self.per_channel and len(self.minimum) != 1:
            raise ValueError("a pooled scaler has exactly one minimum and one maximum")

    @classmethod
    def fit(
        cls,
        frames: np.ndarray,
        frame_channel: np.ndarray,
        n_channels: int,
        per_channel: bool,
        source: str,
        what: str = "training frames",
    ) -> MinMaxScaler:
        """Fit on ``frames`` (F, H, W) whose channels are ``frame_channel`` (F,); raises on a constant series."""
        if len(frames) == 0:
            raise DataValueError(source, f"no {what} to fit the scaler on")
        groups = range(n_channels) if per_channel else [None]
        lo, hi = [], []
        for c in groups:
            sel = frames if c is None else frames[frame_channel == c]
            if len(sel) == 0:
                raise DataValueError(source, f"channel {c} has no {what} to fit a per-channel scaler on")
            lo.append(float(sel.min()))
            hi.append(float(sel.max()))
            if hi[-1] <= lo[-1]:
                label = "" if c is None else f" (channel {c})"
                raise DataValueError(source, f"constant series{label}: min == max == {lo[-1]} over the {what}")
        return cls(lo, hi, per_channel)

    def _params(self, channel: ArrayLike | int | None, like: ArrayLike, ndim: int) -> tuple[Any, Any]:
        """min and (max - min) broadcastable against a (B, ...) array of ``ndim`` dims."""
        lo = np.asarray(self.minimum)
        span = np.asarray(self.maximum) - lo
        if self.per_channel:
            if channel is None:
                raise ValueError("a per-channel scaler needs the channel of every sample")
            idx = np.asarray(channel.cpu() if isinstance(channel, torch.Tensor) else channel, dtype=np.int64)
            lo, span = lo[idx], span[idx]
            shape = (-1,) + (1,) * (ndim - 1) if idx.ndim else ()
            lo, span = lo.reshape(shape), span.reshape(shape)
        else:
            lo, span = lo[0], span[0]
        if isinstance(like, torch.Tensor):
            return (
                torch.as_tensor(lo, dtype=torch.float64, device=like.device),
                torch.as_tensor(span, dtype=torch.float64, device=like.device),
            )
        return lo, span

    def transform(self, x: ArrayLike, channel: ArrayLike | int | None = None) -> ArrayLike:
        """Raw -> [-1, 1]. ``channel``: (B,) per sample of a (B, ...) batch, or an int for all of ``x``."""
        lo, span = self._params(channel, x, x.ndim)
        y = 2.0 * (x.double() if isinstance(x, torch.Tensor) else x.astype(np.float64)) - 2.0 * lo
        y = y / span - 1.0
        return y.to(x.dtype) if isinstance(x, torch.Tensor) else y.astype(x.dtype)

    def inverse(self, x: ArrayLike, channel: ArrayLike | int | None = None, dtype: Any = None) -> ArrayLike:
        """[-1, 1] -> raw scale, computed in float64; returned in ``dtype`` (default: the input's)."""
        lo, span = self._params(channel, x, x.ndim)
        y = (x.double() if isinstance(x, torch.Tensor) else x.astype(np.float64)) + 1.0
        y = y * span / 2.0 + lo
        dtype = dtype if dtype is not None else x.dtype
        return y.to(dtype) if isinstance(x, torch.Tensor) else y.astype(dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"minimum": list(self.minimum), "maximum": list(self.maximum), "per_channel": self.per_channel}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MinMaxScaler:
        return cls(state["minimum"], state["maximum"], state["per_channel"])

    def __repr__(self) -> str:
        return f"MinMaxScaler(min={self.minimum}, max={self.maximum}, per_channel={self.per_channel})"
