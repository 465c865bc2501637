"""The project's user-facing error classes: one class per kind of bad input, each message naming its source.

- ``ConfigError``: a config value is missing, malformed or not allowed (names the key and what was expected).
- ``CheckpointError``: a checkpoint file is missing, damaged, or does not fit the run (names the file).
- ``DataError`` and its subclasses (``vlm4st.data.errors``): a dataset cannot be used as given (names the file).

The command line prints any of them as one line and exits with status 2 (``vlm4st.run``).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is missing, malformed or not allowed; the message names the key and what was expected."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or does not fit the model or run; names the file."""
