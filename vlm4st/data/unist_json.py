"""Reader for UniST JSON files (``<Name>_short.json``): stored windows plus timestamps, cached as ``.npz``.

Top-level keys ``X_train``, ``X_val``, ``X_test`` and ``timestamps``. ``X_<split>`` is either the windows
(N, T, H, W) or the pair ``[windows, period]`` with a 5-D period array; which one is decided by nesting depth.
The period array is skipped unless ``load_period`` is set. ``timestamps`` = ``{train, val, test}`` in the
encoding named by ``timestamp_format`` (see ``vlm4st.data.timestamps``). Values are parsed exactly and kept as
float32 (exact for counts below 2**24), the dtype the model consumes.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Collection
from pathlib import Path

import numpy as np

from vlm4st.data import cache
from vlm4st.data.errors import DataFormatError
from vlm4st.data.jsonscan import JsonIndex
from vlm4st.data.reader import FileReader
from vlm4st.data.records import GridData, check_splits, node_key
from vlm4st.data.timestamps import (
    check_format,
    decode_datetime,
    decode_halfhour_index,
    decode_pairs,
    steps_per_day_of,
)
from vlm4st.data.windows import from_stored

log = logging.getLogger(__name__)

_ST_LEVELS, _PAIR_LEVELS = 4, 6  # nesting of (N, T, H, W) and of [(N, T, H, W), (N, P, T, H, W)]


class UniSTJsonReader(FileReader):
    """Read a UniST JSON file; parsed splits are cached under ``cache_dir`` (or beside the file if asked).

    Args:
        path: the JSON file; relative paths are looked up under ``data_dir``.
        timestamp_format: ``pairs`` | ``datetime`` | ``halfhour_index``.
        interval_minutes: minutes per step (UniST files do not store it: 30 for the 48-slot sets, 60 for the 24-slot
            ones); the stamps are checked at this step length.
        load_period: also parse the period arrays (kept in ``GridData.extras['period_<split>']``).
        cache_dir: folder of the binary cache; None disables it unless ``cache_beside_file``.
        cache_beside_file: with no ``cache_dir``, cache in ``.vlm4st_cache/`` next to the file.

    The config keys' defaults are in ``conf/dataset/_base/reader/unist.yaml``; the builder passes ``name`` and
    ``config_key``.
    """

    def __init__(
        self,
        path: str,
        timestamp_format: str,
        *,
        interval_minutes: int,
        load_period: bool,
        cache_dir: str | None,
        cache_beside_file: bool,
        data_dir: str | None = None,
        name: str = "unist",
        config_key: str = "path",
    ) -> None:
        super().__init__(path, data_dir, name, config_key)
        fmt_key = node_key(config_key, "timestamp_format")
        self.timestamp_format = check_format(timestamp_format, str(self.path), fmt_key)
        self.steps_per_day = steps_per_day_of(interval_minutes, node_key(config_key, "interval_minutes"))
        self.load_period = bool(load_period)
        if cache_dir is not None:
            self.cache_dir: Path | None = Path(cache_dir).expanduser()
        else:
            self.cache_dir = self.path.parent / ".vlm4st_cache" if cache_beside_file else None

    def read(self, window_len: int, splits: Collection[str], allow_gaps: bool = False) -> GridData:
        """The requested splits as a frame store; only those splits' arrays are parsed or loaded.

        Every stored window must advance one step per frame; ``allow_gaps`` has nothing to relax (stored rows are
        separate samples, and no window may span a gap)."""
        splits = check_splits(splits, self.source)
        parts: dict[str, dict[str, np.ndarray]] = {}
        entries: dict[str, Path] = {}
        if self.cache_dir is not None:
            digest = cache.file_digest(self.path)
            options = {
                "reader": "unist_json",
                "timestamp_format": self.timestamp_format,
                "steps_per_day": self.steps_per_day,
                "load_period": self.load_period,
            }
            for s in splits:
                entries[s] = cache.entry_path(self.cache_dir, self.path, digest, options, s)
                hit = cache.load(entries[s])
                if hit is not None:
                    parts[s] = hit
        missing = [s for s in splits if s not in parts]
        if missing:
            parsed = self._parse(missing)
            for s in missing:
                parts[s] = parsed[s]
                if s in entries:
                    cache.save(entries[s], parsed[s])
            log.info("parsed %s splits %s%s", self.path.name, missing, " (cached)" if entries else "")
        stored = {s: (p["x"], p["ts"], np.zeros(len(p["x"]), dtype=np.int64)) for s, p in parts.items()}
        extras = {f"period_{s}": p["period"] for s, p in parts.items() if "period" in p}
        return from_stored(
            self.name, self.source, stored, window_len, self.steps_per_day, extras, stamps_key="timestamps.{split}"
        )

    def _parse(self, splits: list[str]) -> dict[str, dict[str, np.ndarray]]:
        if self.path.stat().st_size == 0:
            raise DataFormatError(self.source, "empty file; expected a UniST JSON object")
        with open(self.path, "rb") as f:  # the map outlives the descriptor; it is freed with the last view
            buf = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
        doc = JsonIndex(buf, self.source)
        top = doc.members(0)
        ts_members = doc.members(self._member(top, "timestamps", doc, "top level"))
        return {s: self._parse_split(doc, top, ts_members, s) for s in splits}

    def _member(self, members: dict[str, int | None], key: str, doc: JsonIndex, where: str) -> int:
        if key not in members:
            raise DataFormatError(self.source, f"missing key '{key}' at {where}; found {sorted(members)}")
        k = members[key]
        if k is None:
            raise DataFormatError(self.source, f"key '{key}' at {where} holds a scalar; expected a list")
        return k

    def _parse_split(self, doc: JsonIndex, top: dict, ts_members: dict, split: str) -> dict[str, np.ndarray]:
        key = f"X_{split}"
        k = self._member(top, key, doc, "top level")
        levels = doc.nesting(k)
        period = None
        if levels == _ST_LEVELS:
            x = doc.numbers(k, 4, key, np.float32)  # (N, T, H, W)
        elif levels == _PAIR_LEVELS and len(children := doc.children(k, key)) == 2:
            x = doc.numbers(children[0], 4, f"{key}[0]", np.float32)
            if self.load_period:
                period = doc.numbers(children[1], 5, f"{key}[1]", np.float32)  # (N, P, T, H, W)
        else:
            raise DataFormatError(
                self.source,
                f"{key}: expected (N, T, H, W) nested lists or a pair [windows (N, T, H, W), period (5-D)]; "
                f"found {levels} levels of nesting",
            )
        what = f"timestamps.{split}"
        j = self._member(ts_members, split, doc, "timestamps")
        if self.timestamp_format == "pairs":
            ts = decode_pairs(doc.numbers(j, 3, what), self.source, what)
        elif self.timestamp_format == "halfhour_index":
            ts = decode_halfhour_index(doc.numbers(j, 2, what), self.steps_per_day, self.source, what)
        else:
            ts = decode_datetime(doc.strings(j, 2, what), self.steps_per_day, self.source, what)
        if ts.shape[:2] != x.shape[:2]:
            raise DataFormatError(self.source, f"{what} has (N, T) = {ts.shape[:2]} but {key} has {x.shape[:2]}")
        out = {"x": x, "ts": ts}
        if period is not None:
            if len(period) != len(x):
                raise DataFormatError(self.source, f"{key}[1] has {len(period)} windows, {key}[0] has {len(x)}")
            out["period"] = period
        return out
