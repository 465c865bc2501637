"""Zero-shot calibration prefix: the unseen target's scaler never sees a scored frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.data.readers import city_series
from vlm4st.config import ConfigError
from vlm4st.data import DataValueError, build_datamodule
from vlm4st.data.windows import split_counts

from .builders import (
    dataset_cfg,
    series,
    series_source,
    shots,
    source_cfg,
    stamps_for,
    synthetic_sources,
    write_window_npz,
)

T_IN, T_OUT, STEPS = 3, 2, 10


def zero_shot(**kwargs):
    cfg = dataset_cfg(synthetic_sources(), target="c1", **{"zero_shot_calibration_steps": STEPS, **kwargs})
    return build_datamodule(cfg, shots(0.0), 0)


def test_no_scored_target_frame_enters_the_fit_set() -> None:
    dm = zero_shot()
    ds = dm.by_name["c1"]  # 5x5 grid, 10 days, seed 1 (synthetic_sources)
    counts, _ = city_series(5, 5, 10, seed=1)  # the city's series (T, H, W)
    L = T_IN + T_OUT
    n = split_counts(len(counts) - L + 1, 0.6, 0.2)
    first_test = n["train"] + n["val"]  # series index of the first frame kept (test-only read)
    raw = ds.scaler.inverse(ds.frames, dtype=torch.float64).numpy()  # (F, H, W): frame i is series frame first_test + i
    np.testing.assert_allclose(raw, counts[first_test:], atol=1e-4)
    fit = set((ds.scaler_frames + first_test).tolist())  # series indices the scaler was fitted on
    assert fit == set(range(first_test, first_test + STEPS))
    starts = ds.windows["test"].starts + first_test  # series index of each served window's first frame
    scored = set((starts[:, None] + T_IN + np.arange(T_OUT)).ravel().tolist())
    assert not fit & scored
    assert min(scored) == first_test + STEPS  # the first scored frame comes right after the prefix
    assert ds.scaler.minimum == [float(counts[first_test : first_test + STEPS].min())]
    assert ds.scaler.maximum == [float(counts[first_test : first_test + STEPS].max())]
    batch = next(dm.eval_batches("c1", "test", 1))
    expected = counts[first_test + STEPS : first_test + STEPS + T_OUT]
    np.testing.assert_allclose(batch.y_real[0].numpy(), expected, atol=1e-4)


def test_test_windows_drop_by_the_prefix_less_one_input_window() -> None:
    full = build_datamodule(dataset_cfg(synthetic_sources()), shots(1.0), 0).by_name["c1"]
    calibrated = zero_shot().by_name["c1"]
    opt_in = zero_shot(zero_shot_scaler="train").by_name["c1"]
    n_test = len(full.windows["test"])
    assert calibrated.available["test"] == n_test
    assert len(calibrated.windows["test"]) == n_test - (STEPS - T_IN)
    assert len(opt_in.windows["test"]) == n_test and opt_in.scaler_fit == "training frames"
    assert opt_in.scaler.state_dict() == full.scaler.state_dict()
    assert "test" in calibrated.describe()["windows"] and str(n_test) in zero_shot().summary()


def test_two_channels_each_get_a_prefix(tmp_path) -> None:
    T = 80
    s = series(T=T, C=2)
    path = tmp_path / "two.npz"
    np.savez(path, data=s, timestamps=stamps_for(T))
    sources = {"two": series_source(path), **synthetic_sources(1)}
    cfg = dataset_cfg(sources, target="two", zero_shot_calibration_steps=STEPS,
                      scaler={"fit_on": "train", "per_channel": True})
    ds = build_datamodule(cfg, shots(0.0), 0).by_name["two"]
    n = split_counts(T - T_IN - T_OUT + 1, 0.6, 0.2)
    first_test = n["train"] + n["val"]
    assert len(ds.windows["test"]) == 2 * (n["test"] - (STEPS - T_IN))
    prefix = s[first_test : first_test + STEPS]  # (STEPS, 2, H, W)
    assert ds.scaler.maximum == [float(prefix[:, 0].max()), float(prefix[:, 1].max())]
    assert np.bincount(ds.frame_channel[ds.scaler_frames]).tolist() == [STEPS, STEPS]


def test_calibration_steps_below_t_in_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.zero_shot_calibration_steps=2; expected >= dataset\.t_in=3"):
        zero_shot(zero_shot_calibration_steps=2)
    with pytest.raises(ConfigError, match=r"dataset\.zero_shot_calibration_steps is missing"):
        cfg = dataset_cfg(synthetic_sources())
        del cfg["zero_shot_calibration_steps"]
        build_datamodule(cfg, shots(1.0), 0)


def test_a_prefix_longer_than_the_test_period_raises() -> None:
    with pytest.raises(DataValueError, match=r"synthetic:c1: .*zero_shot_calibration_steps=5000 is longer"):
        zero_shot(zero_shot_calibration_steps=5000)


def _stored(tmp_path, stride: int):
    """A windowed file cut from a series with rows ``stride`` steps apart; returns the config, the series and the
    series index of the first test frame."""
    T_WIN = 12
    s = series(T=stride * 60 + T_WIN)[:, 0]  # (T, H, W)
    st = stamps_for(len(s))
    parts, first = {}, 0
    for split, n in (("train", 30), ("val", 15), ("test", 15)):
        starts = (first + np.arange(n)) * stride
        idx = starts[:, None] + np.arange(T_WIN)
        parts[split] = {"x": s[idx], "ts": st[idx]}
        first += n
    path = tmp_path / f"stride{stride}.unist.npz"
    write_window_npz(path, parts)
    sources = {"w": source_cfg("WindowNpzReader", path=str(path)), **synthetic_sources(1)}
    return dataset_cfg(sources, target="w", zero_shot_calibration_steps=STEPS), s, 45 * stride


@pytest.mark.parametrize("stride", [1, 12])  # overlapping rows, or rows that follow each other back to back
def test_stored_continuous_windows_calibrate_like_a_series(tmp_path, stride) -> None:
    cfg, s, first_test = _stored(tmp_path, stride)
    ds = build_datamodule(cfg, shots(0.0), 0).by_name["w"]
    dropped = (STEPS - 1 - T_IN) // stride + 1  # rows whose first target step lies inside the prefix
    assert len(ds.windows["test"]) == 15 - dropped
    assert ds.scaler.maximum == [float(s[first_test : first_test + STEPS].max())]
    scored = ds.windows["test"].starts[:, None] + T_IN + np.arange(T_OUT)
    assert scored.min() > ds.scaler_frames.max() and len(ds.scaler_frames) == STEPS
    torch.testing.assert_close(ds.frames[ds.scaler_frames].max(), torch.tensor(1.0))


def test_stored_windows_that_overlap_by_more_than_one_step_cannot_be_calibrated(tmp_path) -> None:
    cfg, _, _ = _stored(tmp_path, 2)  # rows two steps apart: the same instant is stored in several rows
    match = r"stride2\.unist\.npz: zero-shot calibration needs .*frame 12 does not follow frame 11.*scaler=train"
    with pytest.raises(DataValueError, match=match):
        build_datamodule(cfg, shots(0.0), 0)
    cfg["zero_shot_scaler"] = "train"
    assert len(build_datamodule(cfg, shots(0.0), 0).by_name["w"].windows["test"]) == 15
