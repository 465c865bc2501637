"""Builders of small data files in every supported format, shared by the data-layer tests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.data.readers import reader_defaults
from vlm4st.data import SPLITS

T_WIN, H, W = 12, 3, 4  # stored window length and grid of the small files
N_SPLIT = {"train": 9, "val": 4, "test": 5}


def series(T: int = 60, C: int = 1, seed: int = 0) -> np.ndarray:
    """A (T, C, H, W) integer-valued series with a ramp so every frame differs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 50, size=(T, C, H, W)).astype(np.float32)
    return base + np.arange(T, dtype=np.float32)[:, None, None, None]


def stamps_for(T: int, start_weekday: int = 2, start_slot: int = 40, steps_per_day: int = 48) -> np.ndarray:
    t = start_slot + np.arange(T)
    return np.stack([(start_weekday + t // steps_per_day) % 7, t % steps_per_day], axis=-1)


def stored_windows(overlapping: bool = True, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Per split: windows x (N, 12, H, W), pair stamps (N, 12, 2), start indices; stride 1 or disjoint."""
    total = sum(N_SPLIT.values())
    step = 1 if overlapping else T_WIN
    s = series(T=step * total + T_WIN, seed=seed)[:, 0]  # (T, H, W)
    st = stamps_for(len(s))
    out, first = {}, 0
    for split in SPLITS:
        starts = (first + np.arange(N_SPLIT[split])) * step
        idx = starts[:, None] + np.arange(T_WIN)
        out[split] = {"x": s[idx], "ts": st[idx], "start": starts}
        first += N_SPLIT[split]
    return out


def encode_stamps(ts: np.ndarray, fmt: str, start: dt.datetime) -> Any:
    """(N, T, 2) pair stamps of ``stamps_for`` -> the JSON value of the given encoding (same instants)."""
    if fmt == "pairs":
        return ts.tolist()
    minutes = (ts[..., 0] * 1440 + ts[..., 1] * 30).astype(np.int64)  # minutes since a Monday 00:00
    monday = start - dt.timedelta(days=start.weekday(), hours=start.hour, minutes=start.minute)
    if fmt == "datetime":
        return [[(monday + dt.timedelta(minutes=int(m))).strftime("%Y-%m-%d %H:%M:%S") for m in row] for row in minutes]
    # halfhour_index: index 0 is a Wednesday 00:00; weekday of a stamp decides its week offset
    halfhours = minutes // 30  # since a Monday
    return ((halfhours - 2 * 48) % 336 + 336 * 10).tolist()


def write_unist_json(
    path: Path,
    parts: dict[str, dict[str, np.ndarray]],
    fmt: str = "pairs",
    period: bool = True,
    start: dt.datetime = dt.datetime(2015, 1, 5),
    indent: int | None = None,
) -> dict[str, Any]:
    """Write a UniST JSON like the released files (floats such as 12.0); returns the document."""
    doc: dict[str, Any] = {}
    for split, p in parts.items():
        x = p["x"].astype(np.float64).tolist()
        if period:
            per = np.stack([p["x"] * 0.5] * 3, axis=1)  # (N, 3, T, H, W)
            doc[f"X_{split}"] = [x, per.astype(np.float64).tolist()]
        else:
            doc[f"X_{split}"] = x
    doc["timestamps"] = {s: encode_stamps(p["ts"], fmt, start) for s, p in parts.items()}
    path.write_text(json.dumps(doc, indent=indent))
    return doc


def write_window_npz(path: Path, parts: dict[str, dict[str, np.ndarray]], channels: bool = True) -> None:
    arrays = {}
    for split, p in parts.items():
        arrays[f"X_{split}"] = p["x"].astype(np.int16)
        arrays[f"ts_{split}"] = p["ts"].astype(np.int16)
        if channels:
            arrays[f"chan_{split}"] = np.zeros(len(p["x"]), dtype=np.int8)
    np.savez(path, **arrays, steps_per_day=np.int32(48))


#: The file in conf/dataset/_base/reader/ that holds each reader's defaults.
READER_KIND = {"SeriesReader": "series", "WindowNpzReader": "windows", "UniSTJsonReader": "unist",
               "SyntheticCityReader": "synthetic_city"}


def source_cfg(target: str, **kwargs: Any) -> dict[str, Any]:
    """A ``dataset.sources`` node of reader ``target``: its config defaults, then ``kwargs``."""
    return {"_target_": f"vlm4st.data.{target}", **reader_defaults(READER_KIND[target]), **kwargs}


def series_source(path: Path, **kwargs: Any) -> dict[str, Any]:
    """A ``SeriesReader`` node for a test file of 30-minute frames (the test files store no interval)."""
    return source_cfg("SeriesReader", path=str(path), **{"interval_minutes": 30, **kwargs})


def shots(ratio: float) -> dict[str, Any]:
    """A ``shot_ratio`` node: ratio 1 trains every dataset, 0 is zero-shot, anything between few-shot."""
    return {"ratio": ratio, "protocol": "full" if ratio == 1.0 else "zero" if ratio == 0.0 else "few"}


def dataset_cfg(sources: dict[str, dict], **kwargs: Any) -> dict[str, Any]:
    cfg = {
        "name": "test",
        "t_in": 3,
        "t_out": 2,
        "resize_to": None,
        "scaler": {"fit_on": "train", "per_channel": False},
        "target": None,
        "few_shot_sampling": "head",
        "zero_shot_scaler": "inputs",
        "zero_shot_calibration_steps": 12,
        "allow_gaps": False,
        "min_grid": 1,
        "sources": sources,
    }
    cfg.update(kwargs)
    return cfg


def synthetic_sources(n: int = 3) -> dict[str, dict]:
    grids = [(6, 8, 14), (5, 5, 10), (7, 4, 12)]
    return {
        f"c{i}": source_cfg("SyntheticCityReader", height=h, width=w, days=d, seed=i)
        for i, (h, w, d) in enumerate(grids[:n])
    }
