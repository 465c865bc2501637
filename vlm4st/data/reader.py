"""What every dataset reader offers the data module: ``Reader``, and ``FileReader`` for readers of one data file.

A reader turns one ``dataset.sources.<name>`` node into a ``GridData``: frames, timestamps and the windows of the
requested splits. Its ``fingerprint`` is what a checkpoint stores to recognise the data later, and its ``source``
is the name every error about its data carries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from pathlib import Path

from vlm4st.data.fingerprint import file_fingerprint
from vlm4st.data.records import GridData, resolve_path


class Reader(ABC):
    """A source of grid frames, named by its key under ``dataset.sources``."""

    name: str

    @property
    @abstractmethod
    def source(self) -> str:
        """What errors about this data name: the file path, or ``synthetic:<name>``."""

    @abstractmethod
    def fingerprint(self) -> dict[str, str]:
        """A content hash a checkpoint stores, to refuse other data on resume, test or transfer."""

    @abstractmethod
    def read(self, window_len: int, splits: Collection[str], allow_gaps: bool = False) -> GridData:
        """The frames and the windows of ``window_len`` steps of the requested splits (and no other split's
        windows); ``allow_gaps``: series readers cut windows only inside gap-free runs instead of refusing gaps."""


class FileReader(Reader):
    """A reader of one file: ``path`` as given when absolute, else under ``data_dir``; the file must exist. Its
    source is the path and its fingerprint the sha256 of its bytes. ``config_key`` names the path's config key in
    errors (``dataset.sources.<name>.path``)."""

    def __init__(self, path: str, data_dir: str | None, name: str, config_key: str) -> None:
        self.name, self.config_key = name, config_key
        self.path: Path = resolve_path(path, data_dir, config_key, name)

    @property
    def source(self) -> str:
        return str(self.path)

    def fingerprint(self) -> dict[str, str]:
        """The sha256 of the file's bytes."""
        return file_fingerprint(self.path)
