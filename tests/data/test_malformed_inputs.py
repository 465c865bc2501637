"""Property: a damaged data file either reads as exactly what it holds or stops with one ``DataError`` naming it.

Each property writes a generated file (``damage``: a small valid file broken one way) into a tmp folder and reads
it. An accepted file must give well-formed output equal to what an independent decoder finds in it (``oracles``);
a refused one must raise the project's data error with the path in its message. Any other exception (IndexError,
zipfile.BadZipFile, numpy's TypeErrors...) or a numpy warning (a lossy cast) fails the property.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.data.readers import series_reader, unist_reader, window_reader
from vlm4st.data.errors import DataError
from vlm4st.errors import ConfigError
from vlm4st.training.predict import _read_input

from .builders import stamps_for
from .damage import (
    SPLITS,
    T_SMALL,
    JsonCase,
    base_document,
    damaged_arrays,
    damaged_bytes,
    damaged_json,
    dumps,
    npy_bytes,
    npz_bytes,
    small_windows,
)
from .oracles import check_grid, json_reference, read_or_refuse, stored_arrays, unread_edit, windows

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]

SPLIT_SETS = st.sampled_from([tuple(s for i, s in enumerate(SPLITS) if mask >> i & 1) for mask in range(1, 8)])
WINDOW_LENS = st.integers(1, T_SMALL + 1)


# -- UniST JSON -------------------------------------------------------------------------------------------------------
def _replaced(fmt: str, period: bool, old: bytes, new: bytes) -> JsonCase:
    """The valid document with the first ``old`` bytes replaced by ``new``."""
    raw = dumps(base_document(fmt, period))
    at = raw.index(old)
    return JsonCase(raw[:at] + new + raw[at + len(old) :], fmt, period, edits=((at, at + len(old)),))


def _second_99() -> JsonCase:
    """A datetime document whose first stamp reads second 99 (same slot, so the steps still follow)."""
    doc = base_document("datetime", False)
    doc["timestamps"]["train"][0][0] = doc["timestamps"]["train"][0][0][:17] + "99"
    return JsonCase(dumps(doc), "datetime", False, path=("timestamps", "train", 0, 0))


# Cases run on every run besides the generated ones (the derandomised search need not draw them): an empty file,
# a byte-order mark, and damage that passed or crashed the reader before it was fixed. (case, splits read)
JSON_EXAMPLES = [
    (JsonCase(b"", "pairs", False), SPLITS),
    (JsonCase(b"\xef\xbb\xbf{}", "pairs", False), SPLITS),
    (_replaced("pairs", False, b'{"X_train"', b'3{"X_train"'), SPLITS),  # content before the object
    (_replaced("pairs", False, b'{"X_train"', b'{,"X_train"'), SPLITS),  # a stray comma between members
    (_replaced("pairs", False, b'"X_val"', b'"X_v\xc3al"'), ("train",)),  # an unread key that is not UTF-8
    (_replaced("pairs", True, b'"X_val"', b'"n": 0x1F, "X_val"'), SPLITS),  # a member value that is not JSON
    (_replaced("pairs", True, b']]]]]], "X_val"', b']]]]], 7], "X_val"'), SPLITS),  # [windows, period, 7]
    (_replaced("pairs", False, b"[[[[0.0, 0.25", b"[[[[0.0, .25"), SPLITS),  # a number JSON does not allow
    (_replaced("pairs", False, b"[[[[0.0, 0.25", b"[[[[0.0, 0.25e00001"), SPLITS),  # a five-digit exponent
    (_replaced("pairs", False, b"[[[[0.0, 0.25", b"[[[[0.0 0.25,"), SPLITS),  # a comma moved
    (_replaced("halfhour_index", False, b"3604", b"1e39"), SPLITS),  # a stamp beyond float64's integers
    (_second_99(), SPLITS),
]


def _json_examples(test: Callable) -> Callable:
    for case, splits in JSON_EXAMPLES:
        test = example(case=case, splits=splits, window_len=2, load_period=False)(test)
    return test


@_json_examples
@given(case=damaged_json(), splits=SPLIT_SETS, window_len=WINDOW_LENS, load_period=st.booleans())
def test_unist_json(
    tmp_path: Path, case: JsonCase, splits: tuple[str, ...], window_len: int, load_period: bool
) -> None:
    path = tmp_path / "City_short.json"
    path.write_bytes(case.raw)
    reader = unist_reader(str(path), case.fmt, interval_minutes=30, load_period=load_period)
    data = read_or_refuse(lambda: reader.read(window_len, splits), path)
    if data is None:
        return
    check_grid(data, splits, window_len)
    unread = unread_edit(case, splits, load_period)
    if unread is None:
        return  # edits both inside and outside what the read parses: no reference for the values
    # Edits confined to values the read never parses leave it the valid document's values; any other accepted
    # file must be strict JSON of the UniST layout, read as Python's json module reads it.
    source = dumps(base_document(case.fmt, case.period)) if unread else case.raw
    reference = json_reference(source, case.fmt, splits, load_period)
    assert reference is not None, "accepted a file that is not strict JSON of the UniST layout"
    for s, (x, ts, period) in reference.items():
        got_x, got_ts, _ = windows(data, s)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_ts, ts)
        if period is not None:
            np.testing.assert_array_equal(data.extras[f"period_{s}"], period)


# -- windowed .npz ----------------------------------------------------------------------------------------------------
def window_arrays() -> dict[str, np.ndarray]:
    arrays = {}
    for s, p in small_windows().items():
        arrays[f"X_{s}"] = p["x"].astype(np.float32)
        arrays[f"ts_{s}"] = p["ts"].astype(np.int16)
        arrays[f"chan_{s}"] = np.zeros(len(p["x"]), dtype=np.int8)
    return arrays | {"steps_per_day": np.int32(48)}


@st.composite
def window_npz(draw: st.DrawFn) -> bytes:
    """A windowed .npz with damaged bytes or arrays, or a plain .npy in its place."""
    valid = window_arrays()
    kind = draw(st.sampled_from(["bytes", "arrays", "arrays", "npy"]))
    if kind == "bytes":
        return draw(damaged_bytes(npz_bytes(valid))).raw
    if kind == "npy":
        return npy_bytes(valid["X_train"])
    return npz_bytes(draw(damaged_arrays(valid, ["X_extra", "ts_", "chan_val2", "data", "timestamps"])))


def _window_file(**edits: np.ndarray) -> bytes:
    return npz_bytes(window_arrays() | edits)


WINDOW_EXAMPLES = [
    b"",
    npz_bytes(window_arrays())[:300],  # truncated
    _window_file(steps_per_day=np.array("48")),
    _window_file(steps_per_day=np.array([48, 48])),
    _window_file(steps_per_day=np.float64(np.inf)),
    _window_file(X_test=window_arrays()["X_test"].astype(np.complex128)),
    _window_file(X_val=window_arrays()["X_val"].astype(np.float64) * 1e300),
    _window_file(ts_val=window_arrays()["ts_val"].astype("m8[s]")),
    _window_file(chan_train=np.zeros(3, dtype=object)),
    _window_file(chan_test=np.zeros(2, dtype=bool)),
]


def _window_examples(test: Callable) -> Callable:
    for raw in WINDOW_EXAMPLES:
        test = example(raw=raw, splits=SPLITS, window_len=2)(test)
    return test


@_window_examples
@given(raw=window_npz(), splits=SPLIT_SETS, window_len=WINDOW_LENS)
def test_window_npz(tmp_path: Path, raw: bytes, splits: tuple[str, ...], window_len: int) -> None:
    path = tmp_path / "city.unist.npz"
    path.write_bytes(raw)
    data = read_or_refuse(lambda: window_reader(str(path)).read(window_len, splits), path)
    if data is None:
        return
    check_grid(data, splits, window_len)
    arrays = stored_arrays(raw)
    assert arrays is not None, "accepted a file numpy cannot read"
    keys = [f"{k}_{s}" for s in splits for k in ("X", "ts", "chan") if f"{k}_{s}" in arrays] + ["steps_per_day"]
    assert all(arrays.get(k, 0) is not None for k in keys), "accepted a member numpy cannot read"
    if "steps_per_day" in arrays:
        spd = arrays["steps_per_day"]
        assert spd.shape == () and spd.dtype.kind in "iuf" and spd == 48
    for s in splits:
        x, ts = arrays[f"X_{s}"], arrays[f"ts_{s}"]
        chan = arrays.get(f"chan_{s}", np.zeros(len(x), dtype=np.int64))
        assert x.dtype.kind in "iuf" and ts.dtype.kind in "iuf" and chan.dtype.kind in "iuf"
        got_x, got_ts, got_chan = windows(data, s)
        np.testing.assert_array_equal(got_x, x.astype(np.float32))
        np.testing.assert_array_equal(got_ts, ts)
        np.testing.assert_array_equal(got_chan, chan)


# -- raw series (.npz / .npy) -------------------------------------------------------------------------------------
T_SERIES, START = 17, (6, 46)  # frames of the small series; generated stamps start Sunday 23:00


@st.composite
def series_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, bytes) of a series: ``data`` (T, H, W) or (T, C, H, W) alone in an .npy, or in an .npz with its
    ``timestamps`` and ``steps_per_day``; bytes or arrays damaged."""
    shape = draw(st.sampled_from([(T_SERIES, 2, 3), (T_SERIES, 1, 2, 3), (T_SERIES, 2, 2, 3)]))
    data = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) / 8
    suffix = draw(st.sampled_from([".npz", ".npy"]))
    valid = {"data": data, "timestamps": stamps_for(T_SERIES, *START), "steps_per_day": np.int64(48)}
    if suffix == ".npy":
        valid = {"data": data}
    if draw(st.integers(0, 2)) == 0:
        return suffix, draw(damaged_bytes(npy_bytes(data) if suffix == ".npy" else npz_bytes(valid))).raw
    arrays = draw(damaged_arrays(valid, ["other", "X_train", "ts"]))
    if suffix == ".npy":
        return suffix, npy_bytes(np.asarray(arrays.get("data", np.zeros(0))))
    return suffix, npz_bytes(arrays)


def _series_file(data: np.ndarray, **arrays: np.ndarray) -> tuple[str, bytes]:
    return ".npz", npz_bytes({"data": data, "timestamps": stamps_for(len(data), *START)} | arrays)


SERIES = np.arange(T_SERIES * 6, dtype=np.float64).reshape(T_SERIES, 2, 3)
SERIES_EXAMPLES = [
    (".npz", b""),
    (".npy", npy_bytes(np.float64(14.125))),  # one number: no frames to count stamps for
    (".npy", npy_bytes(SERIES.astype(np.int64).astype("m8[s]"))),
    _series_file(SERIES.astype(np.complex128)),
    _series_file(SERIES, timestamps=stamps_for(T_SERIES, *START).astype(str)),
    _series_file(SERIES, steps_per_day=np.float64(48.5)),
    _series_file(SERIES, steps_per_day=np.array([[48]])),
]


def _series_examples(test: Callable) -> Callable:
    for case in SERIES_EXAMPLES:
        test = example(case=case, splits=SPLITS, window_len=2, allow_gaps=False)(test)
    return test


@_series_examples
@given(case=series_file(), splits=SPLIT_SETS, window_len=st.integers(1, 6), allow_gaps=st.booleans())
def test_series(
    tmp_path: Path, case: tuple[str, bytes], splits: tuple[str, ...], window_len: int, allow_gaps: bool
) -> None:
    suffix, raw = case
    path = tmp_path / f"city{suffix}"
    path.write_bytes(raw)
    generate = {"start_weekday": START[0], "start_slot": START[1]} if suffix == ".npy" else None
    reader = series_reader(str(path), interval_minutes=30, generate_timestamps=generate)
    data = read_or_refuse(lambda: reader.read(window_len, splits, allow_gaps=allow_gaps), path)
    if data is None:
        return
    check_grid(data, splits, window_len)
    arrays = stored_arrays(raw)
    assert arrays is not None, "accepted a file numpy cannot read"
    if "steps_per_day" in arrays:
        spd = arrays["steps_per_day"]
        assert spd is not None and spd.shape == () and spd.dtype.kind in "iuf" and spd == 48
    series = arrays["data" if suffix == ".npz" else ""]
    stamps = arrays["timestamps"] if suffix == ".npz" else stamps_for(len(series), *START)
    assert series is not None and stamps is not None, "accepted a member numpy cannot read"
    assert series.dtype.kind in "iuf" and stamps.dtype.kind in "iuf"
    series = series[:, None] if series.ndim == 3 else series  # (T, C, H, W)
    for s in splits:  # every window is a run of frames of one channel, with their stamps
        got_x, got_ts, got_chan = windows(data, s)
        for x, ts, c in zip(got_x, got_ts, got_chan):
            t0 = [t for t in range(len(series) - window_len + 1) if (stamps[t : t + window_len] == ts).all()]
            assert any((series[t : t + window_len, c].astype(np.float32) == x).all() for t in t0)


# -- task=predict inputs -------------------------------------------------------------------------------------------
T_IN, N_CHANNELS = 3, 2


@st.composite
def predict_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, bytes) of a predict input: frames (T, H, W) or windows (N, T_in, H, W), in an .npz with their
    timestamps and channel; bytes or arrays damaged."""
    windowed = draw(st.booleans())
    shape = (2, T_IN, 2, 3) if windowed else (5, 2, 3)
    frames = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 4
    stamps = stamps_for(T_IN, *START)[None].repeat(2, axis=0) if windowed else stamps_for(5, *START)
    suffix = draw(st.sampled_from([".npz", ".npz", ".npy"]))
    valid = {"frames": frames, "timestamps": stamps, "channel": np.array([1, 0] if windowed else [1])}
    if suffix == ".npy":
        valid = {"frames": frames}
    if draw(st.integers(0, 2)) == 0:
        return suffix, draw(damaged_bytes(npy_bytes(frames) if suffix == ".npy" else npz_bytes(valid))).raw
    arrays = draw(damaged_arrays(valid, ["other", "data", "stamps"]))
    arrays.pop("steps_per_day", None)
    if suffix == ".npy":
        return suffix, npy_bytes(np.asarray(arrays.get("frames", np.zeros(0))))
    return suffix, npz_bytes(arrays)


WINDOWS_IN = np.arange(2 * T_IN * 6, dtype=np.float32).reshape(2, T_IN, 2, 3)
PREDICT_EXAMPLES = [
    (".npz", b""),
    (".npy", npz_bytes({"frames": WINDOWS_IN})),  # an archive behind the .npy suffix
    (".npz", npy_bytes(WINDOWS_IN)),  # one array behind the .npz suffix
    (".npy", npy_bytes(WINDOWS_IN > 1)),
    (".npy", npy_bytes(WINDOWS_IN[:0])),
    (".npy", npy_bytes(WINDOWS_IN.astype(np.float64) * 1e300)),
    (".npz", npz_bytes({"frames": WINDOWS_IN.astype(str)})),
    (".npz", npz_bytes({"frames": WINDOWS_IN[0], "timestamps": np.array(4)})),
    (".npz", npz_bytes({"frames": WINDOWS_IN, "channel": np.array([1, 2**62])})),
    (".npz", npz_bytes({"frames": WINDOWS_IN, "channel": np.array([0.5, 1.0])})),
    (".npz", npz_bytes({"frames": WINDOWS_IN, "channel": np.array([[0, 1]])})),
]


def _predict_examples(test: Callable) -> Callable:
    for case in PREDICT_EXAMPLES:
        test = example(case=case)(test)
    return test


@_predict_examples
@given(case=predict_file())
def test_predict_input(tmp_path: Path, case: tuple[str, bytes]) -> None:
    suffix, raw = case
    path = tmp_path / f"frames{suffix}"
    path.write_bytes(raw)
    try:
        frames, stamps, channel = _read_input(path, T_IN, 48, N_CHANNELS)
    except DataError as err:
        assert str(path) in str(err), f"the error does not name {path}: {err}"
        return
    arrays = stored_arrays(raw)
    assert arrays is not None, "accepted a file numpy cannot read"
    source = arrays["frames" if suffix == ".npz" else ""]
    assert source is not None and source.dtype.kind in "iuf"
    expected = source[None, -T_IN:] if source.ndim == 3 else source
    assert frames.dtype == np.float32 and frames.shape[1] == T_IN and min(frames.shape) >= 1
    np.testing.assert_array_equal(frames, expected.astype(np.float32))
    assert np.isfinite(frames).all()
    if stamps is not None:
        given_stamps = arrays["timestamps"]
        np.testing.assert_array_equal(stamps, given_stamps[None, -T_IN:] if source.ndim == 3 else given_stamps)
        assert stamps.dtype == np.int64 and stamps.shape == (*frames.shape[:2], 2)
    if channel is not None:
        np.testing.assert_array_equal(channel, arrays["channel"])
        assert channel.dtype == np.int64 and channel.shape == (len(frames),)
        assert ((channel >= 0) & (channel < N_CHANNELS)).all()


@pytest.mark.parametrize(("name", "content"), [("absent.npz", None), ("frames.txt", b"1 2 3")])
def test_predict_input_path_problems_are_config_errors(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        _read_input(path, T_IN, 48, N_CHANNELS)
    assert str(path) in str(info.value)
