"""Seeded synthetic cities: grid count series with the structure real urban flows have.

A city is a (T, H, W) series of counts at ``1440 / steps_per_day``-minute steps built from
- zones: a smooth business share per cell (the rest residential) and a population density;
- daily cycles: residential cells peak in the morning (~08:00) and evening (~18:30), business cells at
  ~09:00, lunch and a stronger ~17:30 evening peak; weekends have one broad midday hump and less traffic;
- a weekly cycle (busier Fridays, quieter Sundays) and a slow trend;
- moving hotspots: events that travel in a straight line across the grid over a few hours;
- Poisson count noise, so every value is a non-negative integer.
Everything derives from ``seed``: the same seed gives the same city on any machine.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from vlm4st.data.errors import DataValueError
from vlm4st.data.fingerprint import config_fingerprint
from vlm4st.data.reader import Reader
from vlm4st.data.records import GridData, node_key
from vlm4st.data.timestamps import generate, steps_per_day_of
from vlm4st.data.windows import from_series

GENERATOR_VERSION = 1  # raise when generate_city changes its output for the same parameters
_WEEKDAY_FACTOR = np.array([0.95, 1.0, 1.0, 1.02, 1.1, 1.0, 0.85])  # Mon..Sun


def _bump(h: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((h - mu) / sd) ** 2)


def _profiles(hour: np.ndarray, weekend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residential and business activity (T,) for each step's hour of day."""
    res_wd = 0.12 + _bump(hour, 8.0, 1.2) + 0.35 * _bump(hour, 13.0, 2.5) + 0.75 * _bump(hour, 18.5, 1.6)
    bus_wd = 0.06 + 0.55 * _bump(hour, 8.8, 0.9) + 0.6 * _bump(hour, 12.5, 1.2) + _bump(hour, 17.5, 1.2)
    res_we = 0.12 + 0.75 * _bump(hour, 12.5, 3.5) + 0.3 * _bump(hour, 20.0, 2.0)
    bus_we = 0.05 + 0.35 * _bump(hour, 14.0, 3.0)
    return np.where(weekend, res_we, res_wd), np.where(weekend, bus_we, bus_wd)


def _blobs(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, n: int, scale: float) -> np.ndarray:
    """Sum of n random Gaussian blobs over the grid, normalised to max 1."""
    field = np.zeros(yy.shape)
    for _ in range(n):
        cy, cx = rng.uniform(0, yy.shape[0]), rng.uniform(0, yy.shape[1])
        sd = scale * rng.uniform(0.6, 1.4)
        field += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sd**2))
    return field / field.max()


def generate_city(
    height: int,
    width: int,
    days: int,
    seed: int,
    *,
    steps_per_day: int,
    start_weekday: int,
    events_per_week: float,
    peak_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One city: counts (T, H, W) float32 and timestamps (T, 2) int64, T = days * steps_per_day."""
    rng = np.random.default_rng(seed)
    T = days * steps_per_day
    stamps = generate(T, start_weekday, 0, steps_per_day)  # (T, 2)
    hour = (stamps[:, 1] + 0.5) * 24.0 / steps_per_day  # (T,) step centre in hours
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each
    scale = 0.2 * min(height, width)
    business = _blobs(rng, yy, xx, 2, scale)  # (H, W) in [0, 1]
    density = 0.15 + 0.85 * _blobs(rng, yy, xx, 4, 1.5 * scale)  # (H, W)
    res, bus = _profiles(hour, stamps[:, 0] >= 5)  # (T,) each
    trend = 1.0 + 0.05 * np.sin(2 * np.pi * np.arange(T) / max(T, 1) + rng.uniform(0, 2 * np.pi))
    weekly = _WEEKDAY_FACTOR[stamps[:, 0]] * trend  # (T,)
    rate = (
        peak_rate
        * density
        * ((1 - business) * res[:, None, None] + business * bus[:, None, None])
        * weekly[:, None, None]
    )  # (T, H, W)
    n_events = max(1, int(rng.poisson(events_per_week * days / 7)))
    for _ in range(n_events):  # moving hotspots
        dur = int(rng.integers(steps_per_day // 12, steps_per_day // 4 + 1))  # 2-6 hours
        t0 = int(rng.integers(0, max(T - dur, 1)))
        p0 = rng.uniform([0, 0], [height, width])
        p1 = rng.uniform([0, 0], [height, width])
        sd = rng.uniform(0.8, 1.8)
        amp = peak_rate * rng.uniform(0.5, 1.5)
        for k in range(dur):
            frac = (k + 0.5) / dur
            cy, cx = p0 + (p1 - p0) * frac
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sd**2))
            rate[t0 + k] += amp * np.sin(np.pi * frac) * blob
    counts = rng.poisson(rate).astype(np.float32)  # (T, H, W)
    return counts, stamps


class SyntheticCityReader(Reader):
    """A generated city served like a raw series file, split chronologically into train/val/test windows.

    Every argument but the two the dataset builder passes (``name``, ``config_key``) comes from the config: the
    defaults are in ``conf/dataset/_base/reader/synthetic_city.yaml``."""

    def __init__(
        self,
        *,
        height: int,
        width: int,
        seed: int,
        days: int,
        interval_minutes: int,
        start_weekday: int,
        events_per_week: float,
        peak_rate: float,
        train_ratio: float,
        val_ratio: float,
        name: str = "synthetic",
        config_key: str = "",
    ) -> None:
        self.name = name
        steps_per_day = steps_per_day_of(interval_minutes, node_key(config_key, "interval_minutes"))
        if height < 1 or width < 1 or days < 1 or steps_per_day < 12:
            raise DataValueError(
                self.source,
                f"height/width/days must be >= 1 and steps at most 2 hours apart (got {height}x{width}, "
                f"{days} days, {interval_minutes}-minute steps)",
            )
        self.kwargs = dict(
            height=int(height),
            width=int(width),
            days=int(days),
            seed=int(seed),
            steps_per_day=int(steps_per_day),
            start_weekday=int(start_weekday),
            events_per_week=float(events_per_week),
            peak_rate=float(peak_rate),
        )
        self.train_ratio, self.val_ratio = float(train_ratio), float(val_ratio)

    @property
    def source(self) -> str:
        return f"synthetic:{self.name}"

    def fingerprint(self) -> dict[str, str]:
        """The sha256 of the generating parameters (generator version, city, split ratios)."""
        params = {"generator": GENERATOR_VERSION, **self.kwargs, "train_ratio": self.train_ratio,
                  "val_ratio": self.val_ratio}
        return config_fingerprint(params)

    def read(self, window_len: int, splits: Collection[str], allow_gaps: bool = False) -> GridData:
        """Windows of the requested splits (generated stamps never have gaps, so ``allow_gaps`` changes nothing)."""
        counts, stamps = generate_city(**self.kwargs)
        return from_series(
            self.name,
            self.source,
            counts[:, None],
            stamps,
            window_len,
            splits,
            self.train_ratio,
            self.val_ratio,
            self.kwargs["steps_per_day"],
            allow_gaps,
            "generated timestamps",
        )
