"""UniST JSON reader: the three timestamp encodings, with/without period arrays, the binary cache, bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.data.readers import unist_reader
from vlm4st.data import DataFileError, DataFormatError, DataValueError
from vlm4st.data import unist_json as unist_module
from vlm4st.data.jsonscan import JsonIndex
from vlm4st.data.timestamps import decode_datetime, decode_halfhour_index

from .builders import N_SPLIT, T_WIN, stored_windows, write_unist_json

SPLITS = ("train", "val", "test")


def windows_of(data, split):
    """(N, L, H, W) and (N, L, 2) windows re-gathered from the frame store."""
    w = data.windows[split]
    idx = w.starts[:, None] + np.arange(data.window_capacity)
    return data.frames[idx], data.stamps[idx]


@pytest.mark.parametrize("fmt", ["pairs", "datetime", "halfhour_index"])
@pytest.mark.parametrize("period", [True, False])
def test_reads_every_encoding_with_and_without_period(tmp_path, fmt, period) -> None:
    parts = stored_windows()
    path = tmp_path / "City_short.json"
    write_unist_json(path, parts, fmt=fmt, period=period)
    data = unist_reader(str(path), fmt, interval_minutes=30).read(T_WIN, SPLITS)
    for split in SPLITS:
        x, ts = windows_of(data, split)
        np.testing.assert_array_equal(x, parts[split]["x"])
        np.testing.assert_array_equal(ts, parts[split]["ts"])
        assert len(data.windows[split]) == N_SPLIT[split]
    assert data.extras == {}


def test_load_period_returns_the_period_arrays(tmp_path) -> None:
    parts = stored_windows()
    path = tmp_path / "City_short.json"
    write_unist_json(path, parts, period=True, indent=1)  # pretty-printed JSON parses the same
    data = unist_reader(str(path), "pairs", interval_minutes=30, load_period=True).read(T_WIN, ["train"])
    period = data.extras["period_train"]
    assert period.shape == (N_SPLIT["train"], 3, T_WIN, 3, 4)
    np.testing.assert_array_equal(period[:, 1], parts["train"]["x"] * 0.5)


def _chars(strings: list[str]) -> np.ndarray:
    return np.frombuffer("".join(strings).encode(), dtype=np.uint8).reshape(len(strings), 19)


def test_datetime_slots_follow_the_step_length() -> None:
    chars = _chars(["2013-06-01 00:00:00", "2013-06-01 13:59:00", "2013-06-03 23:30:00"])  # Sat, Sat, Mon
    assert decode_datetime(chars, 48, "f", "t").tolist() == [[5, 0], [5, 27], [0, 47]]
    assert decode_datetime(chars, 24, "f", "t").tolist() == [[5, 0], [5, 13], [0, 23]]


def test_datetime_windows_are_checked_at_the_step_length(tmp_path) -> None:
    path = tmp_path / "Hourly_short.json"
    stamps = [["2013-06-01 22:00:00", "2013-06-01 23:00:00", "2013-06-02 00:00:00"]]  # Sat 22h .. Sun 0h
    doc = {f"X_{s}": np.ones((1, 3, 2, 2)).tolist() for s in SPLITS} | {"timestamps": {s: stamps for s in SPLITS}}
    path.write_text(json.dumps(doc))
    data = unist_reader(str(path), "datetime", interval_minutes=60).read(3, ["test"])
    assert data.stamps.tolist() == [[5, 22], [5, 23], [6, 0]]
    with pytest.raises(DataValueError, match=r"timestamps\.test: window 0, step 1 .*expected \[5, 45\], found \[5, 46"):
        unist_reader(str(path), "datetime", interval_minutes=30).read(3, ["test"])  # hourly stamps at 30 min


def test_halfhour_index_zero_is_a_wednesday(tmp_path) -> None:
    assert decode_halfhour_index(np.array([0, 49, 336 + 47]), 48, "f", "t").tolist() == [[2, 0], [3, 1], [2, 47]]
    path = tmp_path / "Crowd_short.json"
    doc = {f"X_{s}": np.ones((1, 3, 2, 2)).tolist() for s in SPLITS}
    doc["timestamps"] = {s: [[335, 336, 337]] for s in SPLITS}  # Tuesday 23:30 .. Wednesday 00:30
    path.write_text(json.dumps(doc))
    data = unist_reader(str(path), "halfhour_index", interval_minutes=30).read(3, ["val"])
    assert data.stamps.tolist() == [[1, 47], [2, 0], [2, 1]]


def test_cache_second_load_does_not_parse_and_changed_file_invalidates(tmp_path, monkeypatch) -> None:
    parts = stored_windows()
    path = tmp_path / "City_short.json"
    write_unist_json(path, parts)
    cache = tmp_path / "cache"
    first = unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache)).read(T_WIN, SPLITS)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 3 and all(e.endswith(".npz") for e in entries)  # one per split, no temp files

    def no_parse(*args, **kwargs):
        raise AssertionError("JSON parsed although the cache holds every split")

    monkeypatch.setattr(unist_module, "JsonIndex", no_parse)
    second = unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache)).read(T_WIN, SPLITS)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.stamps, second.stamps)

    parts["test"]["x"] = parts["test"]["x"] + 1000  # same size class, different content
    write_unist_json(path, parts)
    with pytest.raises(AssertionError, match="JSON parsed"):
        unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache)).read(T_WIN, ["test"])
    monkeypatch.setattr(unist_module, "JsonIndex", JsonIndex)
    third = unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache)).read(T_WIN, ["test"])
    x, _ = windows_of(third, "test")
    np.testing.assert_array_equal(x, parts["test"]["x"])


def test_cache_key_includes_reader_options(tmp_path) -> None:
    parts = stored_windows()
    path = tmp_path / "City_short.json"
    write_unist_json(path, parts)
    cache = tmp_path / "cache"
    unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache)).read(T_WIN, ["train"])
    with_period = unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache), load_period=True)
    with_period.read(T_WIN, ["train"])
    assert len(list(cache.iterdir())) == 2


def test_cache_beside_file_and_corrupt_entry_is_rebuilt(tmp_path) -> None:
    path = tmp_path / "City_short.json"
    write_unist_json(path, stored_windows())
    unist_reader(str(path), "pairs", interval_minutes=30, cache_beside_file=True).read(T_WIN, ["val"])
    (entry,) = (tmp_path / ".vlm4st_cache").iterdir()
    entry.write_bytes(b"not a zip file")
    data = unist_reader(str(path), "pairs", interval_minutes=30, cache_beside_file=True).read(T_WIN, ["val"])
    assert len(data.windows["val"]) == N_SPLIT["val"]
    assert entry.stat().st_size > 100


def test_only_requested_splits_are_parsed(tmp_path, monkeypatch) -> None:
    path = tmp_path / "City_short.json"
    write_unist_json(path, stored_windows())
    parsed = []
    original = JsonIndex.numbers

    def spy(self, k, rank, what, *args, **kwargs):
        parsed.append(what)
        return original(self, k, rank, what, *args, **kwargs)

    monkeypatch.setattr(JsonIndex, "numbers", spy)
    data = unist_reader(str(path), "pairs", interval_minutes=30).read(T_WIN, ["test"])
    assert set(data.windows) == {"test"}
    assert parsed == ["X_test[0]", "timestamps.test"]  # never X_train / X_val, never the period array


def _bad_doc(kind: str) -> str:
    x = np.ones((2, 4, 2, 3)).tolist()
    ts = [[[0, i] for i in range(4)]] * 2
    doc = {f"X_{s}": [x, np.ones((2, 3, 4, 2, 3)).tolist()] for s in SPLITS} | {"timestamps": {s: ts for s in SPLITS}}
    if kind == "ragged":
        doc["X_val"][0][1][2][1] = [1.0, 2.0]
    elif kind == "missing_key":
        del doc["X_test"]
    elif kind == "wrong_depth":
        doc["X_train"] = [[1.0, 2.0], [3.0, 4.0]]
    elif kind == "nan":
        return json.dumps(doc).replace("1.0", "NaN", 1)
    elif kind == "weekday":
        doc["timestamps"]["train"] = [[[7, i] for i in range(4)]] * 2
    elif kind == "slot":
        doc["timestamps"]["train"] = [[[0, 48 + i] for i in range(4)]] * 2
    elif kind == "n_mismatch":
        doc["timestamps"]["val"] = ts[:1]
    elif kind == "grid_mismatch":
        doc["X_test"] = np.ones((2, 4, 3, 3)).tolist()
    elif kind == "truncated":
        return json.dumps(doc)[:-40]
    elif kind == "not_numbers":
        return json.dumps(doc).replace("1.0", '"a"', 1)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("ragged", DataFormatError, "ragged"),
        ("missing_key", DataFormatError, "missing key 'X_test'"),
        ("wrong_depth", DataFormatError, "levels of nesting"),
        ("nan", DataValueError, "non-finite"),
        ("weekday", DataValueError, "weekday out of range"),
        ("slot", DataValueError, "slot out of range"),
        ("n_mismatch", DataFormatError, "timestamps.val"),
        ("grid_mismatch", DataFormatError, "splits disagree"),
        ("truncated", DataFormatError, "malformed JSON"),
        ("not_numbers", DataFormatError, "expected numbers"),
    ],
)
def test_bad_input_raises_with_the_file_name(tmp_path, kind, error, match) -> None:
    from vlm4st.data.prepared import validate

    path = tmp_path / f"Bad_{kind}_short.json"
    path.write_text(_bad_doc(kind))
    with pytest.raises(error, match=match) as info:
        data = unist_reader(str(path), "pairs", interval_minutes=30).read(4, SPLITS)
        validate(data, (1, 1), data.grid)
    assert str(path) in str(info.value)


def test_windows_longer_than_stored_raise(tmp_path) -> None:
    path = tmp_path / "City_short.json"
    write_unist_json(path, stored_windows())
    with pytest.raises(DataValueError, match="longer than the stored 12 steps") as info:
        unist_reader(str(path), "pairs", interval_minutes=30).read(T_WIN + 1, SPLITS)
    assert str(path) in str(info.value)


def test_missing_file_names_path_and_config_key(tmp_path) -> None:
    with pytest.raises(DataFileError, match=r"dataset\.sources\.city\.path") as info:
        key = "dataset.sources.city.path"
        unist_reader("Nope_short.json", "pairs", interval_minutes=30, data_dir=str(tmp_path), config_key=key)
    assert str(tmp_path / "Nope_short.json") in str(info.value)


def test_unknown_timestamp_format_names_the_key(tmp_path) -> None:
    path = tmp_path / "City_short.json"
    write_unist_json(path, stored_windows())
    with pytest.raises(DataFormatError, match=r"dataset\.sources\.city\.timestamp_format='TaxiBJ'"):
        unist_reader(str(path), "TaxiBJ", interval_minutes=30, config_key="dataset.sources.city.path")


def test_empty_file_raises(tmp_path) -> None:
    path = tmp_path / "Empty_short.json"
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty file"):
        unist_reader(str(path), "pairs", interval_minutes=30).read(4, SPLITS)


def test_cache_files_are_written_atomically(tmp_path, monkeypatch) -> None:
    """A crash half-way through writing leaves no partial entry behind, and the next read rebuilds the entry."""
    path = tmp_path / "City_short.json"
    write_unist_json(path, stored_windows())
    cache = tmp_path / "cache"
    real_savez = np.savez
    written: list[int] = []

    def crash_mid_write(file, *args, **kwargs):
        file.write(b"PK\x03\x04" + b"\0" * 4096)  # the first bytes of an archive reach the disk ...
        file.flush()
        written.append(4100)
        raise OSError("disk full")  # ... then the disk fills up

    monkeypatch.setattr(np, "savez", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache)).read(T_WIN, ["train"])
    assert written, "the crash must come after bytes were written"
    assert os.listdir(cache) == []
    monkeypatch.setattr(np, "savez", real_savez)
    again = unist_reader(str(path), "pairs", interval_minutes=30, cache_dir=str(cache)).read(T_WIN, ["train"])
    assert os.listdir(cache) and len(again.windows["train"]) > 0  # written whole this time
