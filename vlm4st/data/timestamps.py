"""Timestamp encodings -> int64 ``[weekday 0..6 (Mon=0), slot 0..steps_per_day-1]`` per frame, and the time codes
the model sees.

Every dataset has its own step length, ``interval_minutes`` (a divisor of a day; ``steps_per_day`` = 1440 /
interval), so a slot means different clock times in a 30-minute and a 60-minute city. The data keeps ``[weekday,
slot]`` stamps (what files store and what the step checks read); batches hand the model interval-free time codes
``[weekday, minute of day, interval_minutes]`` (``time_codes``), so 08:00 is minute 480 in every city and the model
is told how far apart its frames are.

The encoding of a file is chosen by the config key ``timestamp_format``, never guessed from its name:

- ``pairs``: ``[weekday, slot]`` integer pairs (TaxiNYC/BikeNYC style), used as stored;
- ``datetime``: ``"YYYY-mm-dd HH:MM:SS"`` strings; weekday = Python ``weekday()``, slot = minutes since midnight
  divided by the step length (30 min: ``2*hour + (minute >= 30)``);
- ``halfhour_index``: an integer half-hour count i; weekday = ((i mod 336) div 48 + 2) mod 7 (index 0 is a
  Wednesday), slot = i mod 48.

Stamps are checked, not only ranged: consecutive frames of a series, and the steps of every stored window, must
advance by exactly one step (slot + 1, wrapping at ``steps_per_day`` to 0 with the weekday + 1 mod 7). A series
may skip steps only when the dataset allows gaps; a ``[weekday, slot]`` pair carries no date, so a jump is read
forward modulo one week: a repeated stamp is refused, but a backward step reads as a forward gap of almost a
week and a gap of whole weeks is invisible.
"""

from __future__ import annotations

import numpy as np

from vlm4st.data.errors import DataFormatError, DataValueError
from vlm4st.errors import ConfigError

TIMESTAMP_FORMATS: tuple[str, ...] = ("pairs", "datetime", "halfhour_index")
_DATETIME_LEN = 19
MINUTES_PER_DAY = 1440


def steps_per_day_of(interval_minutes: object, key: str) -> int:
    """Steps per day of a configured step length; a ``ConfigError`` naming ``key`` unless it divides a day."""
    ok = isinstance(interval_minutes, int) and not isinstance(interval_minutes, bool)
    if not ok or not 1 <= interval_minutes <= MINUTES_PER_DAY or MINUTES_PER_DAY % interval_minutes:
        raise ConfigError(
            f"{key}={interval_minutes!r}; expected minutes per step that divide a day (5, 10, 15, 20, 30, 60, ...)"
        )
    return MINUTES_PER_DAY // interval_minutes


def random_codes(batch: int, steps: int, interval_minutes: int = 30, seed: int = 0) -> np.ndarray:
    """(batch, steps, 3) time codes of random [weekday, slot] stamps (benchmarks and profiles need plausible ones)."""
    rng = np.random.default_rng(seed)
    steps_per_day = MINUTES_PER_DAY // interval_minutes
    stamps = np.stack([rng.integers(0, 7, (batch, steps)), rng.integers(0, steps_per_day, (batch, steps))], axis=-1)
    return time_codes(stamps, steps_per_day)


def slots_of(codes: np.ndarray) -> np.ndarray:
    """(..., 3) time codes -> (..., 2) int64 ``[weekday, slot]`` at each code's own interval (``time_codes``
    inverted)."""
    codes = np.asarray(codes).astype(np.int64)
    return np.stack([codes[..., 0], codes[..., 1] // codes[..., 2]], axis=-1)


def time_codes(stamps: np.ndarray, steps_per_day: int) -> np.ndarray:
    """(..., 2) ``[weekday, slot]`` stamps of a dataset -> (..., 3) int64 ``[weekday, minute of day, interval]``."""
    interval = MINUTES_PER_DAY // steps_per_day
    stamps = stamps.astype(np.int64)
    return np.stack([stamps[..., 0], stamps[..., 1] * interval, np.full_like(stamps[..., 0], interval)], axis=-1)


def check_format(timestamp_format: str, source: str, config_key: str) -> str:
    if timestamp_format not in TIMESTAMP_FORMATS:
        raise DataFormatError(
            source, f"{config_key}={timestamp_format!r} is not a timestamp format; expected one of {TIMESTAMP_FORMATS}"
        )
    return timestamp_format


def as_integers(values: np.ndarray, source: str, what: str) -> np.ndarray:
    """Whole numbers stored as integers or floats -> int64. Bool, complex, strings and dates raise, as do NaN/Inf,
    fractions and magnitudes from 2**53 (where a float no longer holds every integer)."""
    values = np.asarray(values)
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        raise DataValueError(source, f"{what}: value {values.max()} is out of the int64 range")
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise DataFormatError(source, f"{what}: expected integers, found dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise DataValueError(source, f"{what}: expected integers, found NaN or Inf")
    largest = float(np.abs(values).max()) if values.size else 0.0
    if largest >= 2**53:
        raise DataValueError(source, f"{what}: value {largest:g} is out of range (|value| < 2**53)")
    ints = np.rint(values)
    if not np.array_equal(ints, values):
        raise DataValueError(source, f"{what}: expected integers, found fractional values")
    return ints.astype(np.int64)


def decode_pairs(values: np.ndarray, source: str, what: str) -> np.ndarray:
    """(..., 2) numbers -> (..., 2) int64 [weekday, slot]."""
    if values.shape[-1] != 2:
        raise DataFormatError(source, f"{what}: expected [weekday, slot] pairs, found {values.shape[-1]} per entry")
    return as_integers(values, source, what)


def decode_halfhour_index(values: np.ndarray, steps_per_day: int, source: str, what: str) -> np.ndarray:
    """(...) half-hour indices -> (..., 2) int64; the encoding implies 48 steps per day."""
    if steps_per_day != 48:
        raise DataValueError(
            source, f"{what}: halfhour_index timestamps are 30 minutes apart; the source declares "
                    f"{MINUTES_PER_DAY // steps_per_day}-minute steps (set its interval_minutes to 30)"
        )
    i = as_integers(values, source, what)
    if (i < 0).any():
        raise DataValueError(source, f"{what}: negative half-hour index")
    weekday = ((i % 336) // 48 + 2) % 7
    return np.stack([weekday, i % 48], axis=-1)


def decode_datetime(chars: np.ndarray, steps_per_day: int, source: str, what: str) -> np.ndarray:
    """(..., 19) uint8 characters of ``YYYY-mm-dd HH:MM:SS`` -> (..., 2) int64."""
    lead = chars.shape[:-1]
    if chars.shape[-1] != _DATETIME_LEN:
        raise DataFormatError(source, f"{what}: expected 'YYYY-mm-dd HH:MM:SS' strings, found length {chars.shape[-1]}")
    flat = np.ascontiguousarray(chars.reshape(-1, _DATETIME_LEN))
    seps = {4: b"-", 7: b"-", 10: b" ", 13: b":", 16: b":"}
    digits = flat[:, [i for i in range(_DATETIME_LEN) if i not in seps]] - np.uint8(48)
    ok = (digits < 10).all() and all((flat[:, i] == ord(c)).all() for i, c in seps.items())
    if not ok:
        raise DataFormatError(source, f"{what}: expected 'YYYY-mm-dd HH:MM:SS' strings")
    try:
        days = flat[:, :10].copy().view("S10").ravel().astype("datetime64[D]").astype(np.int64)
    except ValueError as err:
        raise DataValueError(source, f"{what}: invalid calendar date ({err})") from err
    d = digits.astype(np.int64)  # columns: YYYY MM DD hh mm ss
    hour, minute, second = d[:, 8] * 10 + d[:, 9], d[:, 10] * 10 + d[:, 11], d[:, 12] * 10 + d[:, 13]
    if (hour > 23).any() or (minute > 59).any() or (second > 59).any():
        raise DataValueError(source, f"{what}: time of day out of range")
    slot = (hour * 60 + minute) // (MINUTES_PER_DAY // steps_per_day)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
    return np.stack([weekday, slot], axis=-1).reshape(*lead, 2)


def generate(n_steps: int, start_weekday: int, start_slot: int, steps_per_day: int) -> np.ndarray:
    """Consecutive timestamps (n_steps, 2) starting at (start_weekday, start_slot)."""
    t = start_slot + np.arange(n_steps, dtype=np.int64)
    return np.stack([(start_weekday + t // steps_per_day) % 7, t % steps_per_day], axis=-1)


def check_range(stamps: np.ndarray, steps_per_day: int, source: str, what: str) -> None:
    """Raise unless every weekday is in 0..6 and every slot in 0..steps_per_day-1."""
    if stamps.ndim < 1 or stamps.shape[-1] != 2:
        raise DataFormatError(source, f"{what}: expected (..., 2) [weekday, slot] timestamps, got {stamps.shape}")
    wd, slot = stamps[..., 0], stamps[..., 1]
    if wd.size and (wd.min() < 0 or wd.max() > 6):
        raise DataValueError(source, f"{what}: weekday out of range 0..6 (found {wd.min()}..{wd.max()})")
    if slot.size and (slot.min() < 0 or slot.max() >= steps_per_day):
        raise DataValueError(
            source,
            f"{what}: slot out of range 0..{steps_per_day - 1} (found {slot.min()}..{slot.max()}); the source declares "
            f"{MINUTES_PER_DAY // steps_per_day}-minute steps: check its interval_minutes",
        )


def week_step(stamps: np.ndarray, steps_per_day: int) -> np.ndarray:
    """(..., 2) stamps -> (...) int64 step within the week (Monday 00:00 = 0)."""
    return stamps[..., 0].astype(np.int64) * steps_per_day + stamps[..., 1].astype(np.int64)


def _advance(stamps: np.ndarray, steps_per_day: int) -> np.ndarray:
    """(..., L, 2) -> (..., L-1) int64: steps from each stamp to the next, modulo one week (1 = consecutive)."""
    t = week_step(stamps, steps_per_day)  # (..., L)
    return np.diff(t, axis=-1) % (7 * steps_per_day)


def _pair(stamp: np.ndarray) -> str:
    return f"[{int(stamp[0])}, {int(stamp[1])}]"


def check_steps(stamps: np.ndarray, steps_per_day: int, allow_gaps: bool, source: str, what: str) -> np.ndarray:
    """Check that the stamps (T, 2) of a series advance one step per frame; returns the gaps (T-1,) bool.

    ``gaps[i]`` is True where frame i+1 does not follow frame i. Without ``allow_gaps`` any such frame raises;
    with it a forward jump is a gap and a repeated stamp still raises. Ranges are checked first.
    """
    check_range(stamps, steps_per_day, source, what)
    if stamps.ndim != 2:
        raise DataFormatError(source, f"{what}: expected (T, 2) [weekday, slot] timestamps, got {stamps.shape}")
    step = _advance(stamps, steps_per_day)  # (T-1,)
    bad = step == 0 if allow_gaps else step != 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        expected, found = _pair(following(stamps[i], 1, steps_per_day)[0]), _pair(stamps[i + 1])
        if allow_gaps:
            problem = (f"{what}: frame {i + 1} repeats the stamp of frame {i} (expected {expected} or a later "
                       f"stamp, found {found}); a series may skip steps forward but never repeat one")
        else:
            problem = (f"{what}: frame {i + 1} does not follow frame {i} (expected {expected}, found {found}); "
                       "stamps must advance one step per frame (set dataset.allow_gaps=true for a series with "
                       "missing steps)")
        raise DataValueError(source, problem)
    return step != 1


def check_window_steps(stamps: np.ndarray, steps_per_day: int, source: str, what: str) -> None:
    """Raise unless every stored window (N, L, 2) advances one step per frame (a window never spans a gap)."""
    check_range(stamps, steps_per_day, source, what)
    if stamps.ndim != 3:
        raise DataFormatError(source, f"{what}: expected (N, L, 2) window timestamps, got {stamps.shape}")
    bad = _advance(stamps, steps_per_day) != 1  # (N, L-1)
    if bad.any():
        n, j = (int(v) for v in np.argwhere(bad)[0])
        expected, found = _pair(following(stamps[n, j], 1, steps_per_day)[0]), _pair(stamps[n, j + 1])
        raise DataValueError(
            source,
            f"{what}: window {n}, step {j + 1} does not follow step {j} (expected {expected}, found {found}); "
            "a stored window must advance one step per frame",
        )


def following(last: np.ndarray, n_steps: int, steps_per_day: int) -> np.ndarray:
    """The ``n_steps`` timestamps after each ``last`` stamp: (..., 2) -> (..., n_steps, 2).

    Forecast steps follow the last input step at the dataset's step length (``steps_per_day``).
    """
    t = last[..., 1:2].astype(np.int64) + np.arange(1, n_steps + 1, dtype=np.int64)  # (..., n_steps)
    weekday = (last[..., 0:1].astype(np.int64) + t // steps_per_day) % 7
    return np.stack([weekday, t % steps_per_day], axis=-1)
