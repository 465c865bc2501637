"""Checkpoint files: atomic writes, ``weights_only`` loading, clear errors for damaged files.

A checkpoint is a plain dict of tensors and primitives (no pickled classes), so ``torch.load(path,
weights_only=True)`` reads it. It holds the model (or only its trainable parameters), optimiser, schedule,
step/epoch counters, RNG states, the resolved config, the scalers, the dataset list and the code version.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

import vlm4st
from vlm4st.checks import one_line
from vlm4st.errors import CheckpointError, ConfigError
from vlm4st.registry import check_targets
from vlm4st.training.checkpoint_layout import check_layout

log = logging.getLogger(__name__)

#: 2: every dataset records its own ``interval_minutes`` and the model reads time codes (weekday, minute of day,
#: interval) instead of a run-wide slot table; a version-1 checkpoint's weights and data record do not fit.
FORMAT_VERSION = 2
_UPGRADES = {1: "it was written before datasets carried their own step length (interval_minutes) and the model "
                "encoded minute of day; retrain it with this version"}


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    A crash mid-write leaves the previous file at ``path`` intact; the folder is fsynced after the rename, so the
    new file survives a crash right after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "format_version": FORMAT_VERSION, "code_version": vlm4st.__version__}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable: fsync the folder entry (a crash after ``os.replace`` could otherwise lose it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; any damage becomes a ``CheckpointError`` naming the file.

    ``weights_only`` keeps the tensors from running code; the stored config is data too: its layout is checked key
    by key and every ``_target_`` in it must be registered before any task rebuilds a model from it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist (check the `checkpoint`/`resume` setting)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the file is the only input: whatever the unpickler trips on is damage in it
        reason = f"{type(err).__name__}: {one_line(err)}"[:300]
        raise CheckpointError(f"checkpoint '{path}' is truncated or corrupted and cannot be read ({reason})") from err
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"checkpoint '{path}' is not a vlm4st checkpoint (no 'format_version' key)")
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        why = _UPGRADES.get(version, "") if isinstance(version, int) else ""
        expected = f"expected {FORMAT_VERSION}" + (f": {why}" if why else "")
        raise CheckpointError(f"checkpoint '{path}' has format_version {version!r}, {expected}")
    check_layout(payload, str(path))
    try:
        check_targets(payload["config"], source=f"checkpoint '{path}'")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    return payload


def rng_state() -> dict[str, Any]:
    """Capture the Python and torch (CPU and CUDA) random states as weights_only-safe values."""
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
