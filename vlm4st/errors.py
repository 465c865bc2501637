"""The project's user-facing error classes: one class per kind of bad input, each message naming its source.

- ``ConfigError``: a config value is missing, malformed or not allowed (names the key and what was expected).
- ``CheckpointError``: a checkpoint file is missing, damaged, or does not fit the run (names the file).
- ``ReportError``: a run's report file (``metrics.json``) is missing, damaged or not in this version's layout.
- ``DataError`` and its subclasses (``vlm4st.data.errors``): a dataset cannot be used as given (names the file).

The command line prints any of them as one line and exits with status ``USER_ERROR_EXIT`` (``exit_on_user_error``).
"""

from __future__ import annotations

import sys
from typing import NoReturn

#: Exit status of a run stopped by bad input (a config value, a data file, a checkpoint).
USER_ERROR_EXIT = 2


class ConfigError(ValueError):
    """A config value is missing, malformed or not allowed; the message names the key and what was expected."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or does not fit the model or run; names the file."""


class ReportError(ValueError):
    """A run's report file is missing, not JSON, or does not hold the records this version writes; names the file
    and the key."""


def exit_on_user_error(err: Exception) -> NoReturn:
    """Print ``err`` as one line on stderr and exit with ``USER_ERROR_EXIT`` (no traceback: the input is wrong,
    not the program)."""
    sys.stderr.write(f"error: {err}\n")
    sys.exit(USER_ERROR_EXIT)
