"""Readers built in Python the way a config builds them: every key a test does not set takes its default from the
reader's file in ``conf/dataset/_base/reader/`` (the one place those defaults are written)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from vlm4st import REPO_ROOT
from vlm4st.data import SeriesReader, UniSTJsonReader, WindowNpzReader, generate_city
from vlm4st.data.timestamps import steps_per_day_of

READER_CONF = REPO_ROOT / "conf" / "dataset" / "_base" / "reader"


def reader_defaults(kind: str) -> dict[str, Any]:
    """The defaults of ``conf/dataset/_base/reader/<kind>.yaml``: every key but the target, the mandatory ones
    (``???``) and those that refer to other parts of the config (``${paths.*}``)."""
    node = OmegaConf.load(READER_CONF / f"{kind}.yaml")
    values = OmegaConf.to_container(node, resolve=False)
    return {
        key: values[key]
        for key in node
        if key != "_target_" and not OmegaConf.is_missing(node, key) and not OmegaConf.is_interpolation(node, key)
    }


def series_reader(path: str, **values: Any) -> SeriesReader:
    return SeriesReader(path, **{**reader_defaults("series"), **values})


def window_reader(path: str, **values: Any) -> WindowNpzReader:
    return WindowNpzReader(path, **{**reader_defaults("windows"), **values})


def unist_reader(path: str, timestamp_format: str, **values: Any) -> UniSTJsonReader:
    return UniSTJsonReader(path, timestamp_format, **{**reader_defaults("unist"), **values})


def city_series(height: int, width: int, days: int, seed: int) -> tuple[Any, Any]:
    """``generate_city`` with the rest of its parameters at the synthetic-city config defaults (the series a
    ``SyntheticCityReader`` of this size and seed serves): counts (T, H, W) and stamps (T, 2)."""
    d = reader_defaults("synthetic_city")
    steps_per_day = steps_per_day_of(d["interval_minutes"], "interval_minutes")
    return generate_city(height, width, days, seed, steps_per_day=steps_per_day,
                         start_weekday=d["start_weekday"], events_per_week=d["events_per_week"],
                         peak_rate=d["peak_rate"])
