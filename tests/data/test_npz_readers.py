"""Windowed .npz and raw-series readers: shapes, windows/timestamps alignment, splits, compaction, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.readers import series_reader, window_reader
from vlm4st.data import DataFileError, DataFormatError, DataValueError
from vlm4st.data.windows import split_counts

from .builders import N_SPLIT, T_WIN, series, stamps_for, stored_windows, write_window_npz

SPLITS = ("train", "val", "test")
TS20 = stamps_for(20)


def gather(data, split, length):
    w = data.windows[split]
    idx = w.starts[:, None] + np.arange(length)  # (N, L)
    return data.frames[idx], data.stamps[idx], w.channel


@pytest.mark.parametrize("overlapping", [True, False])
@pytest.mark.parametrize("channels", [True, False])
def test_window_npz_round_trip_and_compaction(tmp_path, overlapping, channels) -> None:
    parts = stored_windows(overlapping=overlapping)
    path = tmp_path / "city.unist.npz"
    write_window_npz(path, parts, channels=channels)
    data = window_reader(str(path)).read(T_WIN, SPLITS)
    for split in SPLITS:
        x, ts, ch = gather(data, split, T_WIN)
        np.testing.assert_array_equal(x, parts[split]["x"])
        np.testing.assert_array_equal(ts, parts[split]["ts"])
        assert (ch == 0).all()
    n_windows = sum(N_SPLIT.values())
    expected_frames = sum(n + T_WIN - 1 for n in N_SPLIT.values()) if overlapping else n_windows * T_WIN
    assert len(data.frames) == expected_frames  # stride-1 windows share frames; disjoint ones cannot


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("C", [1, 2])
def test_series_windows_follow_the_series(tmp_path, suffix, C) -> None:
    T, t_in, t_out = 50, 4, 3
    L = t_in + t_out
    s = series(T=T, C=C)
    path = tmp_path / f"city{suffix}"
    if suffix == ".npy":
        np.save(path, s[:, 0] if C == 1 else s)  # (T, H, W) or (T, C, H, W)
        start = {"start_weekday": 2, "start_slot": 40}
        reader = series_reader(str(path), interval_minutes=30, generate_timestamps=start)
    else:
        np.savez(path, data=s, timestamps=stamps_for(T))
        reader = series_reader(str(path), interval_minutes=30)
    data = reader.read(L, SPLITS)
    counts = split_counts(T - L + 1, 0.6, 0.2)
    first = {"train": 0, "val": counts["train"], "test": counts["train"] + counts["val"]}
    for split in SPLITS:
        x, ts, ch = gather(data, split, L)
        assert len(x) == C * counts[split]
        assert (np.diff(ch) >= 0).all()  # channel-major
        for c in range(C):
            t0 = first[split] + np.arange(counts[split])
            expect = s[t0[:, None] + np.arange(L), c]  # (n, L, H, W)
            np.testing.assert_array_equal(x[ch == c], expect)
            np.testing.assert_array_equal(ts[ch == c], stamps_for(T)[t0[:, None] + np.arange(L)])
        # y of a window is exactly the frames that follow its x in the series
        x_in, y = x[:, :t_in], x[:, t_in:]
        nxt = data.frames[data.windows[split].starts[:, None] + t_in + np.arange(t_out)]
        np.testing.assert_array_equal(y, nxt)
        assert not np.array_equal(x_in[:, -1], y[:, 0])


def test_series_test_only_read_drops_earlier_frames(tmp_path) -> None:
    T, L = 50, 5
    s = series(T=T, C=2)
    path = tmp_path / "city.npz"
    np.savez(path, data=s, timestamps=stamps_for(T))
    data = series_reader(str(path), interval_minutes=30).read(L, ["test"])
    counts = split_counts(T - L + 1, 0.6, 0.2)
    assert set(data.windows) == {"test"}
    assert len(data.frames) == 2 * (counts["test"] + L - 1)  # only the frames test windows touch
    x, _, ch = gather(data, "test", L)
    t0 = counts["train"] + counts["val"]
    np.testing.assert_array_equal(x[ch == 1][0], s[t0 : t0 + L, 1])


def test_shared_series_split_matches_the_readme(shared_data) -> None:
    data = series_reader(str(shared_data / "nyc_taxi_stdn_10x20_30min.series.npz")).read(12, SPLITS)
    assert {s: len(w) for s, w in data.windows.items()} == {"train": 3442, "val": 1148, "test": 1148}
    stored = np.load(shared_data / "nyc_taxi_stdn_10x20_30min.unist.npz")
    for split in SPLITS:
        x, ts, ch = gather(data, split, 12)
        np.testing.assert_array_equal(x, stored[f"X_{split}"])
        np.testing.assert_array_equal(ts, stored[f"ts_{split}"])
        np.testing.assert_array_equal(ch, stored[f"chan_{split}"])


def test_shared_window_npz_reads(shared_data) -> None:
    data = window_reader(str(shared_data / "nyc_bike_stdn_10x20_30min.unist.npz")).read(12, ["test"])
    assert len(data.windows["test"]) == 1148 and data.n_channels == 2 and data.grid == (10, 20)
    assert len(data.frames) == 2 * (574 + 11)  # overlapping windows compacted per channel


def test_missing_file_names_path_and_key(tmp_path) -> None:
    with pytest.raises(DataFileError, match=r"set dataset\.sources\.taxinyc\.path") as info:
        series_reader(str(tmp_path / "absent.series.npz"), config_key="dataset.sources.taxinyc.path")
    assert "absent.series.npz" in str(info.value)


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        ({"other": np.zeros((20, 3, 4))}, DataFormatError, "missing key 'data'"),
        ({"data": np.zeros((20, 3)), "timestamps": TS20}, DataFormatError, r"expected a \(T, H, W\) or \(T, C, H, W\)"),
        ({"data": np.zeros((4, 3, 4)), "timestamps": TS20[:4]}, DataValueError, "shorter than one window"),
        ({"data": np.zeros((20, 3, 4))}, DataFormatError, r"no key 'timestamps' .*set timestamps_key"),
        ({"data": np.zeros((20, 3, 4)), "timestamps": np.zeros((19, 2))}, DataFormatError, "timestamps have shape"),
        ({"data": np.zeros((20, 3, 4)), "steps_per_day": np.int32(24)}, DataValueError, "steps_per_day=24"),
        ({"data": np.zeros((20, 3, 4)), "timestamps": np.full((20, 2), 0.5)}, DataValueError, "integers"),
    ],
)
def test_series_bad_input(tmp_path, arrays, error, match) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(error, match=match) as info:
        series_reader(str(path), interval_minutes=30).read(6, SPLITS)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda a: a.pop("ts_val"), DataFormatError, "missing key 'ts_val'"),
        (lambda a: a.update(X_val=a["X_val"][:, :, :2]), DataFormatError, "splits disagree"),
        (lambda a: a.update(X_train=a["X_train"][0]), DataFormatError, r"expected \(N, T, H, W\)"),
        (lambda a: a.update(ts_test=a["ts_test"][:-1]), DataFormatError, "timestamps of test"),
        (lambda a: a.update(chan_train=a["chan_train"][:-1]), DataFormatError, "channels of train"),
    ],
)
def test_window_npz_bad_input(tmp_path, edit, error, match) -> None:
    parts = stored_windows()
    good = tmp_path / "good.npz"
    write_window_npz(good, parts)
    arrays = dict(np.load(good))
    edit(arrays)
    path = tmp_path / "bad.unist.npz"
    np.savez(path, **arrays)
    with pytest.raises(error, match=match) as info:
        window_reader(str(path)).read(T_WIN, SPLITS)
    assert str(path) in str(info.value)


def test_window_npz_rejects_a_plain_npy(tmp_path) -> None:
    path = tmp_path / "windows.npy"
    np.save(path, np.zeros((3, 12, 2, 2)))
    with pytest.raises(DataFormatError, match=r"expected an \.npz archive"):
        window_reader(str(path)).read(12, SPLITS)
