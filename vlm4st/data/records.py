"""The in-memory form every reader returns: a frame store plus window start indices.

A dataset is ``frames`` (F, H, W) with a timestamp per frame and, per split, the first frame of each window.
A window is ``frames[start : start + L]``. Stored windows that overlap with stride 1 share their frames, a raw
series is stored once per channel (channel-major), so memory stays near the size of the series and a batch is
one fancy-index.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm4st.data.errors import DataFileError, DataFormatError
from vlm4st.data.timestamps import MINUTES_PER_DAY

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Windows:
    """The windows of one split: first frame, channel and window id (row in the split as read) of each."""

    starts: np.ndarray  # (N,) int64
    channel: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.starts)

    def subset(self, positions: np.ndarray) -> Windows:
        """The windows at ``positions`` (in that order)."""
        return Windows(self.starts[positions], self.channel[positions], self.ids[positions])

    def frame_indices(self, length: int, offset: int = 0) -> np.ndarray:
        """Sorted unique frame indices covered by ``frames[start + offset : start + offset + length]``."""
        idx = self.starts[:, None] + offset + np.arange(length)  # (N, length)
        return np.unique(idx)


@dataclass
class GridData:
    """One dataset as read: raw frames on the native grid, their timestamps, and the windows per split.

    Only the splits a caller asked for are present in ``windows`` (zero-shot targets are read test-only).
    ``window_capacity`` is the longest window the frames allow from every start (the stored window length of
    windowed files; the requested length for raw series). ``layout`` records how the windows were cut (kind
    ``series`` or ``stored``, stride, split ratios, gap policy), for checkpoints to compare.
    """

    name: str
    source: str
    frames: np.ndarray  # (F, H, W) float32, raw scale
    stamps: np.ndarray  # (F, 2) int64: [weekday 0..6, slot 0..steps_per_day-1]
    frame_channel: np.ndarray  # (F,) int64
    windows: dict[str, Windows]
    n_channels: int
    steps_per_day: int
    window_capacity: int
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    layout: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def interval_minutes(self) -> int:
        """Minutes between consecutive frames (readers only accept step lengths that divide a day)."""
        return MINUTES_PER_DAY // self.steps_per_day


def check_splits(splits: Collection[str], source: str) -> tuple[str, ...]:
    """Validate a requested split list; returns it in canonical order."""
    unknown = set(splits) - set(SPLITS)
    if unknown or not splits:
        raise DataFormatError(source, f"unknown or empty split request {sorted(splits)}; expected a subset of {SPLITS}")
    return tuple(s for s in SPLITS if s in splits)


def node_key(config_key: str, leaf: str) -> str:
    """The config key of ``leaf`` beside a reader's ``config_key`` (``dataset.sources.<name>.path`` ->
    ``dataset.sources.<name>.<leaf>``), for error messages."""
    return (config_key.rsplit(".", 1)[0] + "." if "." in config_key else "") + leaf


def resolve_path(path: str | Path | None, data_dir: str | Path | None, config_key: str, source: str) -> Path:
    """An existing data file: absolute paths as given, relative ones under ``data_dir`` (else the cwd)."""
    if path is None or str(path) in ("", "???"):
        raise DataFileError(source, f"no file configured; set {config_key}")
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None:
        p = Path(data_dir).expanduser() / p
    if not p.is_file():
        raise DataFileError(str(p), f"file not found; set {config_key} to an existing file")
    return p
