"""Readers for numpy files: windowed ``.npz`` (the ``*.unist.npz`` layout) and raw series (``.npz``/``.npy``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
from numpy.lib.npyio import NpzFile

from vlm4st.data.errors import DataFormatError, DataValueError
from vlm4st.data.npyfile import load, member, real_values
from vlm4st.data.reader import FileReader
from vlm4st.data.records import GridData, check_splits, node_key
from vlm4st.data.timestamps import MINUTES_PER_DAY, as_integers, generate, steps_per_day_of
from vlm4st.data.windows import from_series, from_stored
from vlm4st.errors import ConfigError


def _stored_int(z: NpzFile, key: str, source: str) -> int:
    stored = member(z, key, source)
    if stored.shape != ():
        raise DataFormatError(source, f"'{key}' holds an array of shape {stored.shape}; expected one integer")
    return int(as_integers(stored, source, key))


def declared_interval(z: NpzFile | None, configured: int | None, source: str, key: str) -> int:
    """The source's minutes per step: what the file stores (``interval_minutes`` and/or ``steps_per_day``) and what
    the config's ``key`` sets must agree; null in the config takes the file's; neither is an error."""
    stored: dict[str, int] = {}
    if z is not None and "interval_minutes" in z.files:
        stored["interval_minutes"] = _stored_int(z, "interval_minutes", source)
    if z is not None and "steps_per_day" in z.files:
        spd = _stored_int(z, "steps_per_day", source)
        if not 1 <= spd <= MINUTES_PER_DAY or MINUTES_PER_DAY % spd:
            raise DataValueError(source, f"file stores steps_per_day={spd}; expected a divisor of {MINUTES_PER_DAY}")
        stored["steps_per_day"] = MINUTES_PER_DAY // spd
    said = ", ".join(f"{k}={v if k == 'interval_minutes' else MINUTES_PER_DAY // v}" for k, v in stored.items())
    if len(set(stored.values())) > 1:
        raise DataValueError(source, f"file stores {said}, which disagree about the step length")
    if configured is not None:
        steps_per_day_of(configured, key)
        if stored and configured not in stored.values():
            raise DataValueError(source, f"file stores {said} but the config sets {key}={configured}")
        return int(configured)
    if not stored:
        raise ConfigError(
            f"{key} is null and {source} stores no step length ('interval_minutes' or 'steps_per_day'); set {key} "
            "to the minutes between its frames"
        )
    interval = next(iter(stored.values()))
    if MINUTES_PER_DAY % interval or interval < 1:
        raise DataValueError(
            source, f"file stores interval_minutes={interval}; expected a divisor of {MINUTES_PER_DAY}"
        )
    return interval


class WindowNpzReader(FileReader):
    """Stored windows: ``X_<split>`` (N, T, H, W), ``ts_<split>`` (N, T, 2), optional ``chan_<split>`` (N,).

    Only the requested splits' arrays are loaded (``np.load`` of an ``.npz`` is lazy per key). The config keys'
    defaults are in ``conf/dataset/_base/reader/windows.yaml``; the builder passes ``name`` and ``config_key``.
    """

    def __init__(
        self,
        path: str,
        *,
        interval_minutes: int | None,
        data_dir: str | None = None,
        name: str = "windows",
        config_key: str = "path",
    ) -> None:
        super().__init__(path, data_dir, name, config_key)
        self.interval_minutes = interval_minutes

    def read(self, window_len: int, splits: Collection[str], allow_gaps: bool = False) -> GridData:
        """The requested splits; every stored window must advance one step per frame (``allow_gaps`` has nothing
        to relax: stored rows are separate samples, and no window may span a gap)."""
        splits = check_splits(splits, self.source)
        z = load(self.path, self.source)
        if not isinstance(z, NpzFile):
            raise DataFormatError(self.source, "expected an .npz archive with X_<split>/ts_<split> arrays")
        with z:
            interval = declared_interval(
                z, self.interval_minutes, self.source, node_key(self.config_key, "interval_minutes")
            )
            parts = {}
            for s in splits:
                for key in (f"X_{s}", f"ts_{s}"):
                    if key not in z.files:
                        raise DataFormatError(self.source, f"missing key '{key}'; found {sorted(z.files)}")
                x = real_values(member(z, f"X_{s}", self.source), self.source, f"X_{s}")
                ts = as_integers(member(z, f"ts_{s}", self.source), self.source, f"ts_{s}")
                if f"chan_{s}" in z.files:
                    chan = as_integers(member(z, f"chan_{s}", self.source), self.source, f"chan_{s}")
                else:
                    chan = np.zeros(x.shape[:1], dtype=np.int64)
                parts[s] = (x, ts, chan)
        return from_stored(self.name, self.source, parts, window_len, MINUTES_PER_DAY // interval)


class SeriesReader(FileReader):
    """A raw series (T, H, W) or (T, C, H, W) from ``.npy`` or ``.npz`` (array under ``key``), cut into windows.

    The step length is ``interval_minutes``, or with null the file's ``interval_minutes`` / ``steps_per_day``.
    Timestamps are the (T, 2) ``[weekday, slot]`` array under ``timestamps_key``; a file without it is refused
    unless ``generate_timestamps`` = ``{start_weekday, start_slot}`` asks for consecutive stamps from that start
    (the only way for ``.npy`` files, which hold one array). A file that holds stamps never gets generated ones.
    Split: chronological on the window index, ratios ``train_ratio``/``val_ratio``/rest. The config keys' defaults
    are in ``conf/dataset/_base/reader/series.yaml``; the builder passes ``name`` and ``config_key``.
    """

    def __init__(
        self,
        path: str,
        *,
        key: str,
        timestamps_key: str,
        generate_timestamps: Mapping[str, int] | None,
        interval_minutes: int | None,
        train_ratio: float,
        val_ratio: float,
        data_dir: str | None = None,
        name: str = "series",
        config_key: str = "path",
    ) -> None:
        super().__init__(path, data_dir, name, config_key)
        self.key, self.timestamps_key = key, timestamps_key
        self.interval_minutes = interval_minutes
        self.train_ratio, self.val_ratio = float(train_ratio), float(val_ratio)
        self.generated_start = self._generated_start(generate_timestamps)

    def _node(self, leaf: str) -> str:
        return node_key(self.config_key, leaf)

    def _generated_start(self, spec: Mapping[str, int] | None) -> tuple[int, int] | None:
        """``(start_weekday, start_slot)`` of generated stamps, or None when the file must hold its stamps."""
        if spec is None:
            return None
        key = self._node("generate_timestamps")
        if not isinstance(spec, Mapping) or set(spec) != {"start_weekday", "start_slot"}:
            raise ConfigError(f"{key}={spec!r}; expected null or {{start_weekday: 0..6, start_slot: 0..}}")
        weekday, slot = int(spec["start_weekday"]), int(spec["start_slot"])
        if not 0 <= weekday < 7:
            raise ConfigError(f"{key}.start_weekday={weekday}; expected 0..6 (Monday = 0)")
        if slot < 0:
            raise ConfigError(f"{key}.start_slot={slot}; expected a slot >= 0 (below the source's steps per day)")
        return weekday, slot

    def read(self, window_len: int, splits: Collection[str], allow_gaps: bool = False) -> GridData:
        """Windows of the requested splits; with ``allow_gaps`` only inside the series' gap-free runs."""
        series, stamps, stamps_key, steps_per_day = self._load()
        if series.ndim == 3:
            series = series[:, None]  # (T, 1, H, W)
        return from_series(
            self.name,
            self.source,
            series,
            stamps,
            window_len,
            splits,
            self.train_ratio,
            self.val_ratio,
            steps_per_day,
            allow_gaps,
            stamps_key,
        )

    def _load(self) -> tuple[np.ndarray, np.ndarray, str, int]:
        """The series, its (T, 2) stamps, the name of the stamps for error messages, and its steps per day."""
        z = load(self.path, self.source)
        files: list[str] = []
        interval_key = self._node("interval_minutes")
        if isinstance(z, NpzFile):
            with z:
                files = sorted(z.files)
                if self.key not in z.files:
                    raise DataFormatError(
                        self.source, f"missing key '{self.key}' (set {self._node('key')}); found {files}"
                    )
                interval = declared_interval(z, self.interval_minutes, self.source, interval_key)
                series = member(z, self.key, self.source)
                stamps = member(z, self.timestamps_key, self.source) if self.timestamps_key in z.files else None
        else:
            interval = declared_interval(None, self.interval_minutes, self.source, interval_key)
            series, stamps = z, None
        steps_per_day = MINUTES_PER_DAY // interval
        series = real_values(series, self.source, f"'{self.key}'" if files else "the series")
        if series.ndim not in (3, 4):
            raise DataFormatError(self.source, f"expected a (T, H, W) or (T, C, H, W) series, got shape {series.shape}")
        gen_key = self._node("generate_timestamps")
        if stamps is not None:
            if self.generated_start is not None:
                raise DataFormatError(
                    self.source,
                    f"the file holds timestamps under '{self.timestamps_key}' but {gen_key} asks for generated "
                    f"ones; set {gen_key}=null to use the file's stamps",
                )
            return series, as_integers(stamps, self.source, self.timestamps_key), self.timestamps_key, steps_per_day
        if self.generated_start is None:
            where = f"no key '{self.timestamps_key}' (found {files})" if files else "no timestamps (a .npy file)"
            raise DataFormatError(
                self.source,
                f"{where}; set {self._node('timestamps_key')} to the key of the (T, 2) [weekday, slot] stamps, "
                f"or {gen_key}={{start_weekday: .., start_slot: ..}} to generate consecutive stamps",
            )
        weekday, slot = self.generated_start
        if slot >= steps_per_day:
            raise ConfigError(f"{gen_key}.start_slot={slot}; expected 0..{steps_per_day - 1} ({interval}-minute steps)")
        return series, generate(len(series), weekday, slot, steps_per_day), "generated timestamps", steps_per_day
