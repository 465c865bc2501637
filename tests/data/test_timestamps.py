"""Timestamps are checked: one step per frame in a series and inside every stored window; gaps only when allowed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.readers import series_reader, window_reader
from vlm4st.config import ConfigError
from vlm4st.data import DataFormatError, DataValueError, build_datamodule
from vlm4st.data.timestamps import check_steps
from vlm4st.data.windows import split_counts

from .builders import T_WIN, dataset_cfg, series, series_source, shots, stamps_for, stored_windows, write_window_npz

SPLITS = ("train", "val", "test")
L = 5  # window length of the reads below


def write_series(path, T=60, stamps=None, **extra):
    np.savez(path, data=series(T=T), timestamps=stamps_for(T) if stamps is None else stamps, **extra)
    return path


def with_gap(T=60, after=29, missing=1) -> np.ndarray:
    """Stamps of T frames with ``missing`` steps skipped after frame ``after``."""
    full = stamps_for(T + missing)
    return full[np.r_[0 : after + 1, after + 1 + missing : T + missing]]


def test_consecutive_stamps_wrap_the_day_and_the_week() -> None:
    st = stamps_for(48 * 8, start_weekday=6, start_slot=46)  # Sunday 23:00 onwards, over a week boundary
    assert not check_steps(st, 48, False, "f", "timestamps").any()
    assert st[2].tolist() == [0, 0]  # the wrap: slot 47 -> 0 with Sunday -> Monday
    st[2] = [6, 0]  # slot wrapped but the weekday did not advance
    with pytest.raises(DataValueError, match=r"f: timestamps: frame 2 does not follow frame 1 \(expected \[0, 0\]"):
        check_steps(st, 48, False, "f", "timestamps")


def test_shuffled_stamps_name_the_file_the_frame_and_the_stamps(tmp_path) -> None:
    st = stamps_for(60)  # starts Wednesday slot 40
    st[[20, 21]] = st[[21, 20]]
    path = write_series(tmp_path / "shuffled.npz", stamps=st)
    match = r"frame 20 does not follow frame 19 \(expected \[3, 12\], found \[3, 13\]\)"
    with pytest.raises(DataValueError, match=match) as info:
        series_reader(str(path), interval_minutes=30).read(L, SPLITS)
    assert str(path) in str(info.value) and "dataset.allow_gaps" in str(info.value)


def test_a_gap_is_refused_by_default(tmp_path) -> None:
    path = write_series(tmp_path / "gap.npz", stamps=with_gap())
    with pytest.raises(DataValueError, match=r"gap\.npz: timestamps: frame 30 .*expected \[3, 22\], found \[3, 23\]"):
        series_reader(str(path), interval_minutes=30).read(L, SPLITS)


def test_with_allow_gaps_no_window_spans_a_gap(tmp_path) -> None:
    T = 60
    path = write_series(tmp_path / "gap.npz", stamps=with_gap(T, after=29, missing=5))
    data = series_reader(str(path), interval_minutes=30).read(L, SPLITS, allow_gaps=True)
    n = (30 - L + 1) * 2  # two gap-free runs of 30 frames
    assert {s: len(w) for s, w in data.windows.items()} == split_counts(n, 0.6, 0.2)
    starts = np.concatenate([w.starts for w in data.windows.values()])  # store index = series index (one channel)
    assert sorted(starts.tolist()) == [*range(0, 26), *range(30, 56)]
    for w in data.windows.values():
        st = data.stamps[w.starts[:, None] + np.arange(L)]  # (N, L, 2)
        t = st[..., 0] * 48 + st[..., 1]
        assert (np.diff(t, axis=1) % 336 == 1).all()
    np.testing.assert_array_equal(data.frames, series(T=T)[data.windows["train"].starts[0] :, 0][: len(data.frames)])
    assert data.layout["gaps"] == 1 and data.layout["allow_gaps"] is True


def test_a_repeated_stamp_is_never_a_gap(tmp_path) -> None:
    st = stamps_for(60)
    st[30] = st[29]
    path = write_series(tmp_path / "repeat.npz", stamps=st)
    with pytest.raises(DataValueError, match=r"repeat\.npz: timestamps: frame 30 repeats the stamp of frame 29"):
        series_reader(str(path), interval_minutes=30).read(L, SPLITS, allow_gaps=True)


def test_gaps_that_leave_no_window_raise(tmp_path) -> None:
    st = stamps_for(120)[::2][:20]  # every other step: every frame is a gap
    path = write_series(tmp_path / "sparse.npz", T=20, stamps=st)
    with pytest.raises(DataValueError, match="no gap-free run of 5 steps"):
        series_reader(str(path), interval_minutes=30).read(L, SPLITS, allow_gaps=True)


def test_allow_gaps_is_a_dataset_key(tmp_path) -> None:
    path = write_series(tmp_path / "gap.npz", stamps=with_gap())
    sources = {"gap": series_source(path)}
    with pytest.raises(DataValueError, match=r"set dataset\.allow_gaps=true"):
        build_datamodule(dataset_cfg(sources), shots(1.0), 0)
    dm = build_datamodule(dataset_cfg(sources, allow_gaps=True), shots(1.0), 0)
    assert sum(dm.by_name["gap"].available.values()) == 2 * (30 - 5 + 1)
    cfg = dataset_cfg(sources)
    del cfg["allow_gaps"]
    with pytest.raises(ConfigError, match=r"dataset\.allow_gaps is missing"):
        build_datamodule(cfg, shots(1.0), 0)
    with pytest.raises(ConfigError, match=r"dataset\.allow_gaps: expected true or false, got 'yes'"):
        build_datamodule(dataset_cfg(sources, allow_gaps="yes"), shots(1.0), 0)


def test_a_stored_window_must_advance_one_step_per_frame(tmp_path) -> None:
    parts = stored_windows()
    parts["val"]["ts"] = parts["val"]["ts"].copy()
    parts["val"]["ts"][2, 7] = parts["val"]["ts"][2, 6]  # window 2 repeats a stamp at step 7
    path = tmp_path / "bad.unist.npz"
    write_window_npz(path, parts)
    with pytest.raises(DataValueError, match=r"bad\.unist\.npz: ts_val: window 2, step 7 does not follow step 6"):
        window_reader(str(path)).read(T_WIN, SPLITS)
    window_reader(str(path)).read(T_WIN, ["train", "test"])  # the other splits are fine


def test_missing_or_misspelt_timestamps_key_is_an_error(tmp_path) -> None:
    path = tmp_path / "nostamps.npz"
    np.savez(path, data=series(T=40), stamps=stamps_for(40))
    match = r"no key 'timestamps' \(found \['data', 'stamps'\]\); set dataset\.sources\.c\.timestamps_key"
    with pytest.raises(DataFormatError, match=match) as info:
        series_reader(str(path), interval_minutes=30, config_key="dataset.sources.c.path").read(L, SPLITS)
    assert "dataset.sources.c.generate_timestamps" in str(info.value)
    data = series_reader(str(path), interval_minutes=30, timestamps_key="stamps").read(L, SPLITS)
    np.testing.assert_array_equal(data.stamps, stamps_for(40))


def test_npy_series_need_explicitly_generated_stamps(tmp_path) -> None:
    path = tmp_path / "plain.npy"
    np.save(path, series(T=40)[:, 0])
    with pytest.raises(DataFormatError, match=r"no timestamps \(a \.npy file\); .*generate_timestamps"):
        series_reader(str(path), interval_minutes=30).read(L, SPLITS)
    start = {"start_weekday": 6, "start_slot": 47}
    data = series_reader(str(path), interval_minutes=30, generate_timestamps=start).read(L, SPLITS)
    assert data.stamps[:2].tolist() == [[6, 47], [0, 0]]


def test_generated_stamps_never_replace_stamps_in_the_file(tmp_path) -> None:
    path = write_series(tmp_path / "stamped.npz")
    reader = series_reader(str(path), interval_minutes=30, generate_timestamps={"start_weekday": 0, "start_slot": 0})
    with pytest.raises(DataFormatError, match=r"holds timestamps under 'timestamps' but generate_timestamps"):
        reader.read(L, SPLITS)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"start_weekday": 7, "start_slot": 0}, r"generate_timestamps\.start_weekday=7; expected 0\.\.6"),
        ({"start_weekday": 0, "start_slot": 48}, r"generate_timestamps\.start_slot=48; expected 0\.\.47"),
        ({"start_weekday": 0}, r"generate_timestamps=.*expected null or"),
    ],
)
def test_generated_stamps_need_a_valid_start(tmp_path, spec, match) -> None:
    """The start slot is checked against the source's interval when the series is read."""
    path = tmp_path / "plain.npy"
    np.save(path, series(T=40)[:, 0])
    with pytest.raises(ConfigError, match=match):
        series_reader(str(path), interval_minutes=30, generate_timestamps=spec).read(6, SPLITS)


def test_generated_stamps_from_the_config(tmp_path) -> None:
    path = tmp_path / "plain.npy"
    np.save(path, series(T=40)[:, 0])
    node = series_source(path, generate_timestamps={"start_weekday": 2, "start_slot": 5})
    dm = build_datamodule(dataset_cfg({"plain": node}), shots(1.0), 0)
    assert dm.by_name["plain"].stamps[0].tolist() == [2, 5]
    bad = series_source(path, generate_timestamps={"start_weekday": 9, "start_slot": 5})
    with pytest.raises(ConfigError, match=r"dataset\.sources\.plain\.generate_timestamps\.start_weekday=9"):
        build_datamodule(dataset_cfg({"plain": bad}), shots(1.0), 0)
