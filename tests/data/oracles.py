"""What a reader must return when it accepts a file: the checks every ``GridData`` must pass, and what the file
holds read without project code (numpy's own reading of ``.npy``/``.npz`` bytes; UniST JSON through Python's
``json`` and ``datetime``), to compare the values with."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlm4st.data.errors import DataError
from vlm4st.data.prepared import validate
from vlm4st.data.records import GridData
from vlm4st.errors import ConfigError

from .damage import JsonCase, base_document, member_spans

_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}", re.ASCII)


def read_or_refuse(read: Callable[[], GridData], path: Path) -> GridData | None:
    """The reader's result after the checks every reader's output gets (``validate``), or None when it raised a
    ``DataError`` naming ``path`` (or a ``ConfigError`` naming it: a file that stores no step length when the config
    leaves ``interval_minutes`` null); any other exception propagates and fails the property."""
    try:
        data = read()
        validate(data, (1, 1), data.grid)
    except (DataError, ConfigError) as err:
        assert str(path) in str(err), f"the error does not name {path}: {err}"
        assert isinstance(err, DataError) or "interval_minutes" in str(err), f"not a data refusal: {err}"
        return None
    return data


def stored_arrays(raw: bytes) -> dict[str, np.ndarray | None] | None:
    """What numpy itself reads from file bytes: the arrays of an ``.npz`` by key (None for a member numpy cannot
    read: damaged, a pickled object array), an ``.npy`` array under ``""``; None when numpy cannot open them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            z = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception:  # any failure of numpy's own reader: the file holds no arrays to compare with
            return None
        if isinstance(z, np.ndarray):
            return {"": z}
        with z:
            return {k: _member(z, k) for k in z.files}


def _member(z: Any, key: str) -> np.ndarray | None:
    try:
        value = z[key]
    except Exception:  # a member numpy cannot read
        return None
    return value if isinstance(value, np.ndarray) else None


def check_grid(data: GridData, splits: tuple[str, ...], window_len: int) -> None:
    """Shapes, dtypes and ranges of an accepted read: finite float32 frames, in-range stamps that advance one step
    inside every window, windows inside the frame store, channels in range."""
    frames, stamps, spd = data.frames, data.stamps, data.steps_per_day
    n = len(frames)
    assert frames.dtype == np.float32 and frames.ndim == 3 and min(frames.shape) >= 1
    assert np.isfinite(frames).all()
    assert stamps.dtype == np.int64 and stamps.shape == (n, 2)
    assert ((stamps[:, 0] >= 0) & (stamps[:, 0] < 7) & (stamps[:, 1] >= 0) & (stamps[:, 1] < spd)).all()
    assert data.frame_channel.shape == (n,)
    assert set(data.windows) == set(splits) and window_len <= data.window_capacity
    for w in data.windows.values():
        assert len(w) > 0 and (w.starts >= 0).all() and (w.starts + data.window_capacity <= n).all()
        assert ((w.channel >= 0) & (w.channel < data.n_channels)).all()
        idx = w.starts[:, None] + np.arange(data.window_capacity)  # (N, L)
        assert (data.frame_channel[idx] == w.channel[:, None]).all()
        step = stamps[idx, 0] * spd + stamps[idx, 1]
        assert (np.diff(step, axis=1) % (7 * spd) == 1).all()


def windows(data: GridData, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, L, H, W) frames, (N, L, 2) stamps and (N,) channels of a split's windows, L the window capacity."""
    w = data.windows[split]
    idx = w.starts[:, None] + np.arange(data.window_capacity)
    return data.frames[idx], data.stamps[idx], w.channel


# -- UniST JSON ---------------------------------------------------------------------------------------------------
def _reject(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _regular(value: Any, rank: int, types: tuple[type, ...]) -> np.ndarray | None:
    """``value`` as an array if it is a non-empty regular nest of ``rank`` lists of ``types`` leaves, else None."""

    def ok(v: Any, r: int) -> bool:
        if r == 0:
            return type(v) in types
        return type(v) is list and len(v) > 0 and all(ok(u, r - 1) for u in v)

    if not ok(value, rank):
        return None
    try:
        a = np.array(value, dtype=object if str in types else np.float64)
    except (ValueError, OverflowError):
        return None
    return a if a.ndim == rank else None


def _values(value: Any, rank: int) -> np.ndarray | None:
    """Finite float32 values of a regular numeric nest (None if any value overflows float32)."""
    a = _regular(value, rank, (int, float))
    if a is None:
        return None
    with np.errstate(over="ignore"):
        a32 = a.astype(np.float32)
    return a32 if np.isfinite(a32).all() else None


def _whole(value: Any, rank: int) -> np.ndarray | None:
    a = _regular(value, rank, (int, float))
    if a is None or not (np.isfinite(a).all() and (a == np.rint(a)).all() and (np.abs(a) < 2**53).all()):
        return None
    return a.astype(np.int64)


def _stamps(value: Any, fmt: str, spd: int) -> np.ndarray | None:
    """(N, T, 2) [weekday, slot] of a split's timestamps in encoding ``fmt``."""
    if fmt == "pairs":
        a = _whole(value, 3)
        return a if a is not None and a.shape[-1] == 2 else None
    if fmt == "halfhour_index":
        a = _whole(value, 2)
        if a is None or (a < 0).any():
            return None
        return np.stack([((a % 336) // 48 + 2) % 7, a % 48], axis=-1)
    strings = _regular(value, 2, (str,))
    if strings is None:
        return None
    out = np.empty((*strings.shape, 2), dtype=np.int64)
    for i, s in np.ndenumerate(strings):
        if not _DATETIME.fullmatch(s):
            return None
        try:
            t = dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
        out[i] = (t.weekday(), (t.hour * 60 + t.minute) // (1440 // spd))
    return out


def _unread_member(path: tuple, splits: tuple[str, ...], load_period: bool, period: bool) -> int | None:
    """Length of the prefix of ``path`` that names a member a read of ``splits`` never parses (another split's
    windows or stamps, an unloaded period array, an unknown key), or None when ``path`` is in no such member."""
    if not path:
        return None
    if path[0] not in {f"X_{s}" for s in splits} | {"timestamps"}:
        return 1
    if len(path) >= 2 and path[0] == "timestamps" and path[1] not in splits:
        return 2
    if len(path) >= 2 and path[0] != "timestamps" and period and not load_period and path[1] == 1:
        return 2
    return None


def unread_edit(case: JsonCase, splits: tuple[str, ...], load_period: bool) -> bool | None:
    """True when every edit of ``case`` lies inside values the read never parses, False when none does, None
    when some do (then no reference is known for what the read returns)."""
    if case.path is not None:
        depth = _unread_member(case.path, splits, load_period, case.period)
        return depth is not None and (len(case.path) > depth or case.container)
    if case.edits is None:
        return False
    spans = member_spans(base_document(case.fmt, case.period))
    unread = [spans[p] for p in spans if _unread_member(p, splits, load_period, case.period) == len(p)]
    inside = [any(a + 1 <= lo and hi <= b - 1 for a, b in unread) for lo, hi in case.edits]
    return True if all(inside) else False if not any(inside) else None


def json_reference(raw: bytes, fmt: str, splits: tuple[str, ...], load_period: bool, spd: int = 48) -> dict | None:
    """Per requested split (windows float32, stamps (N, T, 2), period or None) as Python's json module reads the
    file; None when the file is not strict UTF-8 JSON of the UniST layout."""
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if type(doc) is not dict or type(doc.get("timestamps")) is not dict:
        return None
    out = {}
    for s in splits:
        value, period = doc.get(f"X_{s}"), None
        x = _values(value, 4)
        if x is None and type(value) is list and len(value) == 2:
            x = _values(value[0], 4)
            if load_period:
                period = _values(value[1], 5)
                if period is None or x is None or len(period) != len(x):
                    return None
        ts = _stamps(doc["timestamps"].get(s), fmt, spd)
        if x is None or ts is None or ts.shape[:2] != x.shape[:2]:
            return None
        out[s] = (x, ts, period)
    return out
