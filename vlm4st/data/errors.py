"""The one error family of the data layer: every bad input stops the run with a message naming its source.

``DataError`` derives from ``ValueError`` so callers that only know "bad value" still catch it. The subclasses
say what kind of problem it is; every message starts with the file (or, for generated data, the dataset name).
"""

from __future__ import annotations


class DataError(ValueError):
    """A dataset cannot be used as given. ``source`` is the file path or dataset name the problem belongs to."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class DataFileError(DataError):
    """A data file is missing or unreadable; the message names the path and the config key that sets it."""


class DataFormatError(DataError):
    """Malformed content: missing keys, wrong rank or shape, ragged nesting, mismatched arrays or splits."""


class DataValueError(DataError):
    """Well-formed content with unusable values: NaN/Inf, a constant series, timestamps out of range,
    windows longer than the data, a grid smaller than the configured minimum."""


class DataMismatchError(DataError):
    """The data a run rebuilt differs from the data a checkpoint was made with (another file, other windows,
    another scaler); ``source`` is the checkpoint, the message names the differing key, stored and current."""
