"""Build-time checks of config values, shared by the modules the config tree instantiates.

Each check returns the value (as the type the module stores) or raises ``ConfigError`` naming the config key as a
user types it (``model.head.hidden_dim``, ``lora_type.rank``), the value received and what was expected. YAML
booleans are refused where a number is expected (``true`` is not a width).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from vlm4st.errors import ConfigError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def positive_int(value: Any, key: str) -> int:
    """``value`` as an integer >= 1."""
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    return int(value)


def non_negative_int(value: Any, key: str) -> int:
    """``value`` as an integer >= 0."""
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{key}: expected an integer >= 0, got {value!r}")
    return int(value)


def optional_positive_int(value: Any, key: str, null_means: str) -> int | None:
    """``value`` as an integer >= 1, or None; ``null_means`` says what null does (for the message)."""
    if value is not None and (not _is_int(value) or value < 1):
        raise ConfigError(f"{key}: expected a positive integer or null ({null_means}), got {value!r}")
    return None if value is None else int(value)


def positive_number(value: Any, key: str) -> float:
    """``value`` as a finite number > 0."""
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"{key}: expected a number > 0, got {value!r}")
    return float(value)


def non_negative_number(value: Any, key: str) -> float:
    """``value`` as a finite number >= 0."""
    if not _is_number(value) or value < 0:
        raise ConfigError(f"{key}: expected a number >= 0, got {value!r}")
    return float(value)


def probability(value: Any, key: str) -> float:
    """A dropout-like rate: a number in [0, 1)."""
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}: expected a number in [0, 1), got {value!r}")
    return float(value)


def flag(value: Any, key: str) -> bool:
    """``value`` as a bool; strings and numbers are refused (``'false'`` would read as true)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def choice(value: Any, options: Sequence[str], key: str) -> str:
    """``value`` as one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{key}: expected one of {list(options)}, got {value!r}")
    return value


def num_heads(value: Any, width: int, key: str, width_key: str) -> int:
    """An attention head count: a positive integer that divides ``width`` (set by ``width_key``)."""
    heads = positive_int(value, key)
    if width % heads != 0:
        raise ConfigError(
            f"{key}: {heads} heads do not divide the attention width {width} ({width_key}); "
            f"expected a divisor of {width}"
        )
    return heads


def one_line(err: BaseException) -> str:
    """An exception's text on one line without terminal colour codes (the command line prints a user error as a
    single line)."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split()) or type(err).__name__
