"""Turn raw series and stored windows into the frame-store form (``GridData``).

Raw series are cut into stride-1 windows of length L = T_in + T_out with a chronological split on the window
index (n windows; train = first round(r_train * n), val = next round(r_val * n), test = the rest, Python
``round`` as in UniST/UniFlow). The stamps must advance one step per frame; with ``allow_gaps`` a series may
skip steps forward, and windows are then built only inside the gap-free runs (no window spans a gap), so n is
the number of windows those runs hold (T - L + 1 without gaps). Multi-channel series give one window per
channel, channel-major. Stored windows must each advance one step per frame; those whose consecutive rows
overlap with stride 1 (row i+1 = row i shifted by one step, same channel) are compacted back into a series, so a
12-step window costs one new frame instead of twelve.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from vlm4st.data.errors import DataFormatError, DataValueError
from vlm4st.data.records import GridData, Windows, check_splits
from vlm4st.data.timestamps import check_steps, check_window_steps

_COMPARE_BLOCK = 2048  # windows compared at once when looking for stride-1 overlap


def split_counts(n: int, train_ratio: float, val_ratio: float) -> dict[str, int]:
    """Windows per split for n windows in time order."""
    n_train = round(train_ratio * n)
    n_val = round(val_ratio * n)
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def gap_free_starts(gaps: np.ndarray, window_len: int) -> np.ndarray:
    """First frames (n,) of the windows of ``window_len`` frames that span no gap; ``gaps`` (T-1,) as from
    ``check_steps`` (True where frame t+1 does not follow frame t)."""
    T = len(gaps) + 1
    if window_len > T:
        return np.zeros(0, dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(gaps, dtype=np.int64)])  # (T,) gaps before each frame
    s = np.arange(T - window_len + 1, dtype=np.int64)  # (T - L + 1,) candidate starts
    return s[before[s + window_len - 1] == before[s]]


def from_series(
    name: str,
    source: str,
    series: np.ndarray,
    stamps: np.ndarray,
    window_len: int,
    splits: Collection[str],
    train_ratio: float,
    val_ratio: float,
    steps_per_day: int,
    allow_gaps: bool,
    stamps_key: str = "timestamps",
) -> GridData:
    """Window a (T, C, H, W) series; only the frames the requested splits touch are kept.

    ``stamps_key`` names the stamps in error messages (the file's key, or ``generated timestamps``).
    """
    splits = check_splits(splits, source)
    if series.ndim != 4:
        raise DataFormatError(source, f"expected a (T, C, H, W) series, got shape {series.shape}")
    T, C = series.shape[:2]
    if stamps.shape != (T, 2):
        raise DataFormatError(source, f"timestamps have shape {stamps.shape}; expected ({T}, 2)")
    if not (train_ratio > 0 and val_ratio >= 0 and train_ratio + val_ratio < 1):
        raise DataValueError(source, f"split ratios train={train_ratio}, val={val_ratio} must be > 0 and sum < 1")
    if window_len > T:
        raise DataValueError(source, f"series of {T} steps is shorter than one window of {window_len} steps")
    gaps = check_steps(stamps, steps_per_day, allow_gaps, source, stamps_key)  # (T-1,)
    all_starts = gap_free_starts(gaps, window_len)  # (n,) in time order
    n = len(all_starts)
    if n < 1:
        raise DataValueError(
            source, f"no gap-free run of {window_len} steps: the {int(gaps.sum())} gaps leave no whole window"
        )
    counts = split_counts(n, train_ratio, val_ratio)
    first = {"train": 0, "val": counts["train"], "test": counts["train"] + counts["val"]}
    for s in splits:
        if counts[s] < 1:
            raise DataValueError(source, f"split '{s}' gets no windows ({n} windows, ratios {train_ratio}/{val_ratio})")
    lo = int(all_starts[first[splits[0]]])  # first frame kept
    hi = int(all_starts[first[splits[-1]] + counts[splits[-1]] - 1]) + window_len  # one past the last frame kept
    kept = hi - lo
    frames = np.ascontiguousarray(series[lo:hi].transpose(1, 0, 2, 3), dtype=np.float32)  # (C, kept, H, W)
    windows = {}
    for s in splits:
        w = all_starts[first[s] : first[s] + counts[s]] - lo  # (n_s,) in-channel starts
        starts = (np.arange(C, dtype=np.int64)[:, None] * kept + w).ravel()  # (C * n_s,) channel-major
        channel = np.repeat(np.arange(C, dtype=np.int64), len(w))
        windows[s] = Windows(starts, channel, np.arange(len(starts), dtype=np.int64))
    layout = {
        "kind": "series",
        "stride": 1,
        "train_ratio": float(train_ratio),
        "val_ratio": float(val_ratio),
        "allow_gaps": bool(allow_gaps),
        "gaps": int(gaps.sum()),
        "frames": int(T),
    }
    return GridData(
        name=name,
        source=source,
        frames=frames.reshape(C * kept, *series.shape[2:]),
        stamps=np.tile(stamps[lo:hi].astype(np.int64), (C, 1)),
        frame_channel=np.repeat(np.arange(C, dtype=np.int64), kept),
        windows=windows,
        n_channels=int(C),
        steps_per_day=steps_per_day,
        window_capacity=window_len,
        layout=layout,
    )


def from_stored(
    name: str,
    source: str,
    parts: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    window_len: int,
    steps_per_day: int,
    extras: Mapping[str, np.ndarray] | None = None,
    stamps_key: str = "ts_{split}",
) -> GridData:
    """Build the frame store from stored windows: ``parts[split] = (X (N, L, H, W), ts (N, L, 2), chan (N,))``.

    Every window's stamps must advance one step per frame (``stamps_key`` names them in errors, ``{split}``
    filled in); rows may be far apart in time, each row is a sample of its own.
    """
    check_splits(parts.keys(), source)
    shapes = {}
    for split, (x, ts, chan) in parts.items():
        if x.ndim != 4:
            raise DataFormatError(source, f"X_{split}: expected (N, T, H, W) windows, got shape {x.shape}")
        if ts.shape != (*x.shape[:2], 2):
            raise DataFormatError(source, f"timestamps of {split}: shape {ts.shape}, expected {(*x.shape[:2], 2)}")
        if chan.shape != x.shape[:1]:
            raise DataFormatError(source, f"channels of {split}: shape {chan.shape}, expected {x.shape[:1]}")
        if len(x) == 0:
            raise DataValueError(source, f"X_{split} holds no windows")
        check_window_steps(ts, steps_per_day, source, stamps_key.format(split=split))
        shapes[split] = x.shape[1:]
    if len(set(shapes.values())) > 1:
        raise DataFormatError(source, f"splits disagree on window shape (T, H, W): {shapes}")
    stored_len = int(next(iter(shapes.values()))[0])
    if window_len > stored_len:
        raise DataValueError(
            source, f"windows of {window_len} steps (t_in + t_out) are longer than the stored {stored_len} steps"
        )
    frames, stamps, frame_channel, windows, offset = [], [], [], {}, 0
    for split, (x, ts, chan) in parts.items():
        chan = chan.astype(np.int64)
        keep, starts = _compact(x, ts, chan)  # (N, L) bool, (N,)
        frames.append(x[keep])
        stamps.append(ts[keep])
        frame_channel.append(np.broadcast_to(chan[:, None], keep.shape)[keep])
        windows[split] = Windows(starts + offset, chan, np.arange(len(x), dtype=np.int64))
        offset += int(keep.sum())
    n_channels = int(max(int(w.channel.max()) for w in windows.values()) + 1)
    if min(int(w.channel.min()) for w in windows.values()) < 0:
        raise DataFormatError(source, "negative channel index")
    return GridData(
        name=name,
        source=source,
        frames=np.concatenate(frames).astype(np.float32, copy=False),
        stamps=np.concatenate(stamps).astype(np.int64, copy=False),
        frame_channel=np.concatenate(frame_channel),
        windows=windows,
        n_channels=n_channels,
        steps_per_day=steps_per_day,
        window_capacity=stored_len,
        extras=dict(extras or {}),
        layout={"kind": "stored", "stored_len": stored_len, "rows": {s: len(p[0]) for s, p in parts.items()}},
    )


def _compact(x: np.ndarray, ts: np.ndarray, chan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which steps of each stored window are new frames, and each window's first frame in the kept order.

    Row i+1 reuses the frames of row i when it is row i shifted by one step (values, timestamps and channel).
    """
    N, L = x.shape[:2]
    overlap = np.zeros(N, dtype=bool)  # overlap[i]: row i continues row i-1
    for b in range(1, N, _COMPARE_BLOCK):
        e = min(b + _COMPARE_BLOCK, N)
        same_x = (x[b:e, :-1] == x[b - 1 : e - 1, 1:]).reshape(e - b, -1).all(axis=1)
        same_t = (ts[b:e, :-1] == ts[b - 1 : e - 1, 1:]).reshape(e - b, -1).all(axis=1)
        overlap[b:e] = same_x & same_t & (chan[b:e] == chan[b - 1 : e - 1])
    new = np.where(overlap, 1, L)  # frames each row adds
    keep = np.arange(L) >= (L - new)[:, None]  # (N, L)
    starts = np.cumsum(new) - L  # (N,)
    return keep, starts.astype(np.int64)
