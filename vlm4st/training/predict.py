"""``task=predict``: forecast a file of raw frames with a trained checkpoint, on the real scale.

Input (``predict_input``): ``.npy`` holding frames (T, H, W) (the last T_in frames are the history) or windows
(N, T_in, H, W); or ``.npz`` with ``frames`` in either shape plus optional ``timestamps`` ((T, 2) or
(N, T_in, 2), [weekday, slot] at the dataset's own step length) and ``channel`` ((N,) integers, each one of the
dataset's channels, for per-channel scalers). A file that cannot be read or holds the wrong shapes, dtypes or
values stops the run with a ``DataError`` naming it. ``predict_dataset`` names the training dataset whose scaler,
task id and interval apply (default: the checkpoint's first dataset). Output in the run dir: ``forecast.npz``
(``forecast`` (N, T_out, H, W) real scale, ``history`` the inputs) and ``forecast.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.npyio import NpzFile
from torch import nn

from vlm4st.config import ConfigError
from vlm4st.data.codec import FrameCodec
from vlm4st.data.errors import DataFormatError, DataValueError
from vlm4st.data.npyfile import load, member, real_values
from vlm4st.data.timestamps import MINUTES_PER_DAY, as_integers, check_window_steps, following, time_codes
from vlm4st.logging.figures import frame_rows_image
from vlm4st.training import host
from vlm4st.training.runtime import Runtime
from vlm4st.training.weights import load_model_state

log = logging.getLogger(__name__)


def _read_input(
    path: Path, t_in: int, steps_per_day: int, n_channels: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Windows (N, T_in, H, W) float32, timestamps (N, T_in, 2) int64 or None (range- and step-checked), channel
    (N,) int64 in 0..n_channels-1 or None. A missing file or another suffix is a ``ConfigError`` (the setting is
    wrong); anything wrong with what the file holds is a ``DataError`` naming it."""
    if not path.is_file():
        raise ConfigError(f"predict_input: file '{path}' does not exist")
    if path.suffix not in (".npy", ".npz"):
        raise ConfigError(f"predict_input '{path}': expected a .npy or .npz file")
    source = str(path)
    frames, stamps, channel = _arrays(path, source)
    frames = real_values(frames, source, "frames")
    if frames.ndim == 3:  # (T, H, W): forecast after the last T_in frames
        if len(frames) < t_in:
            raise DataValueError(source, f"{len(frames)} frames; the model needs at least T_in={t_in}")
        if stamps is not None and stamps.shape != (len(frames), 2):
            raise DataFormatError(source, f"timestamps of shape {stamps.shape}; expected {(len(frames), 2)}, "
                                          "one [weekday, slot] per frame")
        frames = frames[None, -t_in:]
        stamps = None if stamps is None else stamps[None, -t_in:]
    if frames.ndim != 4 or frames.shape[1] != t_in:
        raise DataFormatError(source, f"frames of shape {frames.shape}; expected (T, H, W) or (N, T_in={t_in}, H, W)")
    if 0 in frames.shape:
        raise DataValueError(source, f"frames of shape {frames.shape} hold no values")
    if not np.isfinite(frames).all():
        raise DataValueError(source, "frames contain NaN or Inf")
    if stamps is not None:
        if stamps.shape != (*frames.shape[:2], 2):
            raise DataFormatError(source, f"timestamps of shape {stamps.shape}; expected {(*frames.shape[:2], 2)}")
        stamps = as_integers(stamps, source, "timestamps")
        check_window_steps(stamps, steps_per_day, source, "timestamps")
    if channel is not None:
        channel = _channels(channel, len(frames), n_channels, source)
    return frames.astype(np.float32), stamps, channel


def _arrays(path: Path, source: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``frames``, ``timestamps`` and ``channel`` as stored (an ``.npy`` holds the frames alone)."""
    z = load(path, source)
    if path.suffix == ".npy":
        if not isinstance(z, np.ndarray):
            z.close()
            raise DataFormatError(source, "expected one .npy array of frames, found an .npz archive")
        return z, None, None
    if not isinstance(z, NpzFile):
        raise DataFormatError(source, "expected an .npz archive holding 'frames', found one .npy array")
    with z:
        if "frames" not in z.files:
            raise DataFormatError(source, f"no 'frames' array (found {sorted(z.files)})")
        stamps, channel = (member(z, key, source) if key in z.files else None for key in ("timestamps", "channel"))
        return member(z, "frames", source), stamps, channel


def _channels(channel: np.ndarray, n: int, n_channels: int, source: str) -> np.ndarray:
    """The per-window channel (N,) int64, each in 0..n_channels-1 (the channels the checkpoint's dataset has)."""
    channel = as_integers(channel, source, "channel")
    if channel.shape != (n,):
        raise DataFormatError(source, f"channel of shape {channel.shape}; expected ({n},), one per window")
    outside = (channel < 0) | (channel >= n_channels)
    if outside.any():
        raise DataValueError(source, f"channel {int(channel[outside][0])} is out of range; the dataset has "
                                     f"{n_channels} channel(s), 0..{n_channels - 1}")
    return channel


def run_predict(checkpoint: str, predict_input: str | None, predict_dataset: str | None, payload: dict[str, Any],
                model: nn.Module, rt: Runtime) -> Path:
    """Load ``payload`` (read from ``checkpoint``) into ``model`` (on ``rt.device``), forecast the frames of
    ``predict_input`` as dataset ``predict_dataset`` (None: the checkpoint's first), write the outputs to the run
    dir; returns the npz path."""
    if not predict_input:
        raise ConfigError("task=predict needs predict_input=<.npy or .npz of raw frames>")
    load_model_state(model, payload["model"], checkpoint)
    model.eval()
    data = payload["data"]
    datasets = {d["name"]: d for d in data["datasets"]}
    name = predict_dataset or data["datasets"][0]["name"]
    if name not in datasets:
        raise ConfigError(f"predict_dataset={name!r}; the checkpoint knows {sorted(datasets)}")
    info = datasets[name]
    codec = FrameCodec.from_description(info)
    steps_per_day = MINUTES_PER_DAY // int(info["interval_minutes"])  # the stamps count steps of the dataset's own
    frames, stamps, channel = _read_input(
        Path(predict_input), int(data["t_in"]), steps_per_day, int(info["channels"])
    )
    n, t_in = frames.shape[:2]
    channel = channel if channel is not None else np.zeros(n, dtype=np.int64)  # (N,)
    native_hw = (int(frames.shape[2]), int(frames.shape[3]))
    # as the data module prepares frames: resize to the model grid, then scale
    x = codec.encode(frames.reshape(n * t_in, *native_hw), np.repeat(channel, t_in))  # (N * T_in, h, w)
    x = torch.from_numpy(x.reshape(n, t_in, *codec.model_hw))  # (N, T_in, h, w)
    ts = target_ts = None
    if stamps is not None:
        ts = torch.from_numpy(time_codes(stamps, steps_per_day))  # (N, T_in, 3)
        future = following(stamps[:, -1], int(data["t_out"]), steps_per_day)  # (N, T_out, 2)
        target_ts = torch.from_numpy(time_codes(future, steps_per_day))  # (N, T_out, 3)
    task = torch.full((n,), int(info["task_id"]), dtype=torch.int64)
    dev = rt.device
    with torch.no_grad(), rt.autocast():
        pred = model(x.to(dev), None if ts is None else ts.to(dev), task.to(dev),
                     target_timestamps=None if target_ts is None else target_ts.to(dev))[..., 0]  # (N, T_out, h, w)
    pred = host.to_host(pred.float())
    forecast = codec.decode(pred, torch.from_numpy(channel), native_hw).numpy()  # (N, T_out, H, W) real scale
    out_dir = rt.run_dir
    npz_path = out_dir / "forecast.npz"
    np.savez_compressed(npz_path, forecast=forecast.astype(np.float32), history=frames, dataset=np.array(name))
    png = frame_rows_image({"history": frames[0], "forecast": forecast[0]},
                           title=f"{name}: window 0, history and forecast (real scale)")
    import matplotlib.pyplot as plt

    plt.imsave(out_dir / "forecast.png", png)
    log.info("forecast of %d window(s) x %d steps written to %s and forecast.png", n, forecast.shape[1], npz_path)
    return npz_path
